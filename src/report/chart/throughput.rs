//! Confirmed sales per second by strategy, with sold-out and error answers per second beside them:
//! a fast strategy that mostly answers "sold out" or fails should not read as a fast seller.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    AXIS_SIZE, Chart, DrawResult, LABEL_SIZE, TITLE_SIZE, Ticked, above, font, legend, short, whisker,
};
use crate::report::figures::{Spread, StrategyFigures};

/// Bars per strategy: one per kind of answer.
const KINDS: [(&str, RGBColor); 3] = [
    ("confirmed sales (201 + 202)", RGBColor(0, 114, 178)),
    ("sold-out answers (409)", RGBColor(170, 170, 170)),
    ("error answers", RGBColor(230, 159, 0)),
];
const BAR_WIDTH: f64 = 0.26;

#[derive(Debug)]
pub(crate) struct Throughput<'a> {
    pub(crate) figures: &'a [StrategyFigures],
}

impl Throughput<'_> {
    fn spreads(figures: &StrategyFigures) -> [Spread; 3] {
        [figures.sales_per_sec, figures.sold_out_per_sec, figures.errors_per_sec]
    }
}

impl Chart for Throughput<'_> {
    fn name(&self) -> String {
        "throughput".to_owned()
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let top =
            self.figures.iter().flat_map(|f| Self::spreads(f).map(|s| s.max)).fold(0.0, f64::max).max(1.0);
        #[expect(clippy::cast_precision_loss, reason = "a handful of strategies")]
        let count = self.figures.len() as f64;
        #[expect(clippy::cast_precision_loss, reason = "a handful of strategies")]
        let centres: Vec<f64> = (0..self.figures.len()).map(|i| i as f64).collect();
        let repetitions = self.figures.iter().map(|f| f.repetitions).max().unwrap_or(0);
        let mut chart = ChartBuilder::on(area)
            .caption(
                match repetitions {
                    1 => "Confirmed sales and other answers per second".to_owned(),
                    n => format!(
                        "Confirmed sales and other answers per second (median of {n} runs, min–max whiskers)"
                    ),
                },
                font(TITLE_SIZE),
            )
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(90)
            // Headroom above the tallest bar for its value label and the legend.
            .build_cartesian_2d(Ticked { range: -0.5..count - 0.5, ticks: centres }, 0.0..top * 1.3)?;
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
            .y_desc("answers per second")
            .x_desc("strategy (* unsafe by design)")
            .axis_desc_style(font(AXIS_SIZE))
            .label_style(font(LABEL_SIZE))
            .draw()?;
        for (kind, (label, colour)) in KINDS.iter().enumerate() {
            #[expect(clippy::cast_precision_loss, reason = "three kinds")]
            let offset = (kind as f64 - 1.0) * BAR_WIDTH;
            let bars = self.figures.iter().enumerate().map(|(i, f)| {
                #[expect(clippy::cast_precision_loss, reason = "a handful of strategies")]
                let x = i as f64 + offset;
                let spread = Self::spreads(f)[kind];
                Rectangle::new(
                    [(x - BAR_WIDTH / 2.0 + 0.01, 0.0), (x + BAR_WIDTH / 2.0 - 0.01, spread.median)],
                    colour.filled(),
                )
            });
            let colour = *colour;
            chart
                .draw_series(bars)?
                .label(*label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 8), (x + 16, y + 8)], colour.filled()));
            for (i, f) in self.figures.iter().enumerate() {
                #[expect(clippy::cast_precision_loss, reason = "a handful of strategies")]
                let x = i as f64 + offset;
                let spread = Self::spreads(f)[kind];
                if spread.max > spread.min {
                    whisker(&mut chart, x, BAR_WIDTH / 6.0, (spread.min, spread.max))?;
                }
                chart.draw_series([Text::new(
                    short(spread.median),
                    (x, spread.max + top * 0.01),
                    above(LABEL_SIZE),
                )])?;
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    }
}
