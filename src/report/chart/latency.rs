//! Success-path latency from p50 to p99.99 per strategy on a "nines" x axis (p90, p99, p99.9 equally
//! spaced), log-scale milliseconds: the tail is where strategies differ, so it gets the room.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{AXIS_SIZE, Chart, DrawResult, LABEL_SIZE, TITLE_SIZE, Ticked, font, legend, strategy_colour};

/// The percentiles the x axis spans and labels.
const TICKS: [(f64, &str); 5] =
    [(50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99.9"), (99.99, "p99.99")];

/// Percentile to "nines": p90 → 1, p99 → 2, p99.9 → 3.
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

/// One strategy's curve: (percentile, milliseconds).
#[derive(Debug)]
pub(crate) struct Curve {
    pub(crate) strategy: String,
    pub(crate) colour_index: usize,
    pub(crate) points: Vec<(f64, f64)>,
}

#[derive(Debug)]
pub(crate) struct LatencySpectrum {
    pub(crate) curves: Vec<Curve>,
    /// How the repetitions were combined, for the title.
    pub(crate) combined: String,
}

impl LatencySpectrum {
    fn in_range(&self) -> impl Iterator<Item = (&Curve, Vec<(f64, f64)>)> {
        let (low, high) = (TICKS[0].0, TICKS[TICKS.len() - 1].0);
        self.curves.iter().map(move |curve| {
            let points = curve
                .points
                .iter()
                .filter(|(p, ms)| (low..=high).contains(p) && *ms > 0.0)
                .map(|&(p, ms)| (nines(p), ms))
                .collect();
            (curve, points)
        })
    }
}

impl Chart for LatencySpectrum {
    fn name(&self) -> String {
        "latency".to_owned()
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let values: Vec<f64> = self.in_range().flat_map(|(_, points)| points).map(|(_, ms)| ms).collect();
        // A decade of margin either side keeps the extreme curves off the frame.
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(0.0, f64::max);
        let (low, high) = if values.is_empty() { (0.1, 10.0) } else { (low / 1.5, high * 1.5) };
        // The top 40 % of the (log) axis stays empty for the legend, so it never hides a curve.
        let high = high * (high / low).powf(0.4 / 0.6);
        let ticks: Vec<f64> = TICKS.iter().map(|(p, _)| nines(*p)).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(format!("Success-path latency by percentile ({})", self.combined), font(TITLE_SIZE))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(
                Ticked { range: ticks[0] - 0.1..ticks[ticks.len() - 1] + 0.1, ticks: ticks.clone() },
                (low..high).log_scale(),
            )?;
        let label = |x: &f64| {
            TICKS
                .iter()
                .find(|(p, _)| (nines(*p) - x).abs() < 1e-6)
                .map_or_else(String::new, |(_, name)| (*name).to_owned())
        };
        chart
            .configure_mesh()
            .x_label_formatter(&label)
            .y_label_formatter(&|ms| if *ms >= 1.0 { format!("{ms:.0}") } else { format!("{ms:.2}") })
            .x_desc("percentile of successful purchases (201 + 202)")
            .y_desc("latency (ms, log scale)")
            .axis_desc_style(font(AXIS_SIZE))
            .label_style(font(LABEL_SIZE))
            .draw()?;
        for (curve, points) in self.in_range() {
            let colour = strategy_colour(curve.colour_index);
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(3)))?
                .label(curve.strategy.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));
            chart.draw_series(points.into_iter().map(|point| Circle::new(point, 5, colour.filled())))?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    }
}

#[cfg(test)]
mod tests {
    use super::nines;

    #[test]
    fn nines_space_the_tail_evenly() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(99.99) - 4.0).abs() < 1e-6);
    }
}
