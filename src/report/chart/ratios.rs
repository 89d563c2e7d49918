//! New over old for each compared figure per strategy, bars around a line at 1: a glance says
//! which figures moved and which way.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    AXIS_SIZE, Chart, DrawResult, LABEL_SIZE, TITLE_SIZE, Ticked, above, font, legend, strategy_colour,
};
use crate::report::compare::{FIGURES, StrategyComparison};

#[derive(Debug)]
pub(crate) struct Ratios<'a> {
    pub(crate) old_id: &'a str,
    pub(crate) new_id: &'a str,
    pub(crate) strategies: &'a [StrategyComparison],
}

impl Chart for Ratios<'_> {
    fn name(&self) -> String {
        format!("compare-{}", self.old_id)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let ratios = || self.strategies.iter().flat_map(|s| s.figures.iter().filter_map(|f| f.ratio));
        // Headroom above the tallest bar for the legend's six rows.
        let top = ratios().fold(1.0, f64::max) * 1.5;
        #[expect(clippy::cast_precision_loss, reason = "a handful of strategies and figures")]
        let (count, bars) = (self.strategies.len() as f64, FIGURES.len() as f64);
        let width = 0.8 / bars;
        #[expect(clippy::cast_precision_loss, reason = "a handful of strategies")]
        let centres: Vec<f64> = (0..self.strategies.len()).map(|i| i as f64).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("New ÷ old per strategy: {} against {}", self.new_id, self.old_id),
                // Two run ids make a long title.
                font(TITLE_SIZE - 6),
            )
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(Ticked { range: -0.5..count - 0.5, ticks: centres }, 0.0..top)?;
        let label = |x: &f64| {
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "x is a group index")]
            self.strategies.get(x.round() as usize).map_or_else(String::new, |s| s.strategy.clone())
        };
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .disable_x_mesh()
            .x_label_formatter(&label)
            .y_label_formatter(&|y| format!("{y:.1}×"))
            .x_desc("strategy")
            .y_desc("new ÷ old (1 = unchanged)")
            .axis_desc_style(font(AXIS_SIZE))
            .label_style(font(LABEL_SIZE))
            .draw()?;
        chart
            .draw_series([PathElement::new(vec![(-0.5, 1.0), (count - 0.5, 1.0)], BLACK.stroke_width(2))])?;
        for (index, figure) in FIGURES.iter().enumerate() {
            let colour = strategy_colour(index);
            #[expect(clippy::cast_precision_loss, reason = "a handful of figures")]
            let offset = (index as f64 - (bars - 1.0) / 2.0) * width;
            let placed: Vec<(f64, f64)> = (0..)
                .zip(self.strategies)
                .filter_map(|(group, s): (u32, _)| Some((f64::from(group) + offset, s.figures[index].ratio?)))
                .collect();
            chart
                .draw_series(placed.iter().map(|&(x, ratio)| {
                    Rectangle::new(
                        [(x - width / 2.0 + 0.005, 0.0), (x + width / 2.0 - 0.005, ratio)],
                        colour.filled(),
                    )
                }))?
                .label(figure.label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 8), (x + 16, y + 8)], colour.filled()));
            chart.draw_series(
                placed
                    .iter()
                    .map(|&(x, ratio)| Text::new(format!("{ratio:.2}"), (x, ratio), above(LABEL_SIZE - 4))),
            )?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    }
}
