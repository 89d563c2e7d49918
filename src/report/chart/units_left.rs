//! Units of the hot product left over time per strategy, with the moment each sold out marked: the
//! slope is the sales rate, and a line that dips below zero is an oversell.
//!
//! Locust output does not know the stock, so for it the chart shows units acknowledged so far.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{AXIS_SIZE, Chart, DrawResult, LABEL_SIZE, TITLE_SIZE, font, legend, strategy_colour};
use crate::report::figures::Point;

/// What the y axis counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    UnitsLeft,
    /// The stock is unknown (Locust): units acknowledged so far.
    Acknowledged,
}

#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) strategy: String,
    pub(crate) colour_index: usize,
    pub(crate) points: Vec<Point>,
    /// Seconds from the start to sell-out, when it sold out.
    pub(crate) sold_out_at: Option<f64>,
}

#[derive(Debug)]
pub(crate) struct UnitsLeft {
    pub(crate) measure: Measure,
    pub(crate) lines: Vec<Line>,
    /// Which repetition is drawn, appended to the title (", first repetition"), or empty.
    pub(crate) repetition: String,
}

impl Chart for UnitsLeft {
    fn name(&self) -> String {
        "units_left".to_owned()
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let points = || self.lines.iter().flat_map(|line| line.points.iter().copied());
        let end = points().map(|(t, _)| t).fold(0.1, f64::max);
        let low = points().map(|(_, v)| v).fold(0.0, f64::min);
        let high = points().map(|(_, v)| v).fold(1.0, f64::max);
        let pad = (high - low) * 0.05;
        let (title, y_desc) = match self.measure {
            Measure::UnitsLeft => ("Hot product units left over time", "units left (stock − acknowledged)"),
            Measure::Acknowledged => {
                ("Hot product units acknowledged over time (stock unknown)", "units acknowledged so far")
            }
        };
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title}{}", self.repetition), font(TITLE_SIZE))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..end * 1.02, (low - pad)..(high + pad))?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("time since the start of the run (s)")
            .y_desc(y_desc)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .axis_desc_style(font(AXIS_SIZE))
            .label_style(font(LABEL_SIZE))
            .draw()?;
        if low < 0.0 {
            // Below this line a strategy acknowledged more units than there were.
            chart
                .draw_series([PathElement::new(vec![(0.0, 0.0), (end * 1.02, 0.0)], RED.stroke_width(2))])?;
        }
        for line in &self.lines {
            let colour = strategy_colour(line.colour_index);
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), colour.stroke_width(3)))?
                // The sell-out time goes in the legend: labels beside the markers would overlap
                // when strategies sell out close together.
                .label(line.sold_out_at.map_or_else(
                    || format!("{} (did not sell out)", line.strategy),
                    |at| format!("{} (● sold out at {at:.2} s)", line.strategy),
                ))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));
        }
        for line in &self.lines {
            let Some(at) = line.sold_out_at else { continue };
            let colour = strategy_colour(line.colour_index);
            let value = match self.measure {
                Measure::UnitsLeft => 0.0,
                Measure::Acknowledged => {
                    line.points.iter().find(|(t, _)| *t >= at).or(line.points.last()).map_or(0.0, |p| p.1)
                }
            };
            chart.draw_series([
                Circle::new((at, value), 8, colour.filled()),
                Circle::new((at, value), 8, BLACK.stroke_width(2)),
            ])?;
        }
        // Keep the legend where the lines are not: they end low when counting down, high when up.
        let position = match self.measure {
            Measure::UnitsLeft => SeriesLabelPosition::UpperRight,
            Measure::Acknowledged => SeriesLabelPosition::LowerRight,
        };
        legend(&mut chart, position)
    }
}
