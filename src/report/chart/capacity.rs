//! Sustainable capacity by strategy, highest first, each bar annotated with its p99 at that rate.
//! A bar at the load generator's ceiling is grey and labelled "≥": it is a lower bound.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    AXIS_SIZE, Chart, DrawResult, LABEL_SIZE, TITLE_SIZE, Ticked, above, font, short, strategy_colour,
    whisker,
};
use crate::report::capacity::CapacityFigures;

const BAR_WIDTH: f64 = 0.6;
const BOUND_GREY: RGBColor = RGBColor(170, 170, 170);

#[derive(Debug)]
pub(crate) struct Capacity<'a> {
    pub(crate) figures: &'a [CapacityFigures],
}

impl Chart for Capacity<'_> {
    fn name(&self) -> String {
        "capacity".to_owned()
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let top = self.figures.iter().map(|f| f.capacity_rps.max).fold(0.0, f64::max).max(1.0);
        #[expect(clippy::cast_precision_loss, reason = "a handful of strategies")]
        let count = self.figures.len() as f64;
        #[expect(clippy::cast_precision_loss, reason = "a handful of strategies")]
        let centres: Vec<f64> = (0..self.figures.len()).map(|i| i as f64).collect();
        let slo = self.figures.first().map_or(100.0, |f| f.slo_ms);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("Sustainable capacity: p99 ≤ {slo:.0} ms, nothing unsent, no error"),
                font(TITLE_SIZE),
            )
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(90)
            // Headroom above the tallest bar for its two label lines.
            .build_cartesian_2d(Ticked { range: -0.5..count - 0.5, ticks: centres }, 0.0..top * 1.25)?;
        let label = |x: &f64| {
            let index = x.round();
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "x is a bar index")]
            self.figures
                .get(index as usize)
                .map_or_else(String::new, |f| if f.safe { f.name.clone() } else { format!("{}*", f.name) })
        };
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .disable_x_mesh()
            .x_label_formatter(&label)
            .y_label_formatter(&|y| short(*y))
            .y_desc("offered requests per second sustained")
            .x_desc("strategy (* unsafe by design; grey: at the load generator's ceiling, a lower bound)")
            .axis_desc_style(font(AXIS_SIZE))
            .label_style(font(LABEL_SIZE))
            .draw()?;
        for (i, f) in self.figures.iter().enumerate() {
            #[expect(clippy::cast_precision_loss, reason = "a handful of strategies")]
            let x = i as f64;
            let colour = if f.at_least { BOUND_GREY } else { strategy_colour(i) };
            let height = f.capacity_rps.median;
            chart.draw_series([Rectangle::new(
                [(x - BAR_WIDTH / 2.0, 0.0), (x + BAR_WIDTH / 2.0, height)],
                colour.filled(),
            )])?;
            if f.capacity_rps.max > f.capacity_rps.min {
                whisker(&mut chart, x, BAR_WIDTH / 6.0, (f.capacity_rps.min, f.capacity_rps.max))?;
            }
            let p99 =
                f.p99_ms.map_or_else(|| "no pass".to_owned(), |p99| format!("p99 {:.1} ms", p99.median));
            let base = f.capacity_rps.max.max(height) + top * 0.01;
            chart.draw_series([
                Text::new(p99, (x, base), above(LABEL_SIZE)),
                Text::new(format!("{}/s", f.shown()), (x, base + top * 0.06), above(LABEL_SIZE)),
            ])?;
        }
        Ok(())
    }
}
