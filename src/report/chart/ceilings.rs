//! Each figure over the raw ceiling that bounds it (`ceiling_ratios.csv`), with the target where
//! the project has one: how much of the machine a strategy leaves on the table.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{AXIS_SIZE, Chart, DrawResult, LABEL_SIZE, TITLE_SIZE, Ticked, above, font};
use crate::run_folder::ceilings::CeilingRatioRow;

const MET: RGBColor = RGBColor(0, 114, 178);
const MISSED: RGBColor = RGBColor(230, 159, 0);
const NO_TARGET: RGBColor = RGBColor(150, 150, 150);

#[derive(Debug)]
pub(crate) struct CeilingRatios<'a> {
    pub(crate) ratios: &'a [CeilingRatioRow],
}

impl Chart for CeilingRatios<'_> {
    fn name(&self) -> String {
        "ceilings".to_owned()
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let top =
            self.ratios.iter().flat_map(|r| [r.ratio, r.target.unwrap_or(0.0)]).fold(1.0, f64::max) * 1.2;
        #[expect(clippy::cast_precision_loss, reason = "a handful of ratios")]
        let count = self.ratios.len() as f64;
        #[expect(clippy::cast_precision_loss, reason = "a handful of ratios")]
        let centres: Vec<f64> = (0..self.ratios.len()).map(|i| i as f64).collect();
        let mut chart = ChartBuilder::on(area)
            .caption("Each figure over the raw ceiling that bounds it (same run)", font(TITLE_SIZE))
            .margin(20)
            .x_label_area_size(80)
            .y_label_area_size(80)
            .build_cartesian_2d(Ticked { range: -0.5..count - 0.5, ticks: centres }, 0.0..top)?;
        let label = |x: &f64| {
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "x is a bar index")]
            self.ratios
                .get(x.round() as usize)
                .map_or_else(String::new, |r| format!("{} / {}", r.subject, r.ceiling))
        };
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .disable_x_mesh()
            .x_label_formatter(&label)
            .y_label_formatter(&|y| format!("{y:.1}×"))
            .x_desc("figure / ceiling")
            .y_desc("ratio (1 = the raw tool's ceiling)")
            .axis_desc_style(font(AXIS_SIZE))
            .label_style(font(LABEL_SIZE - 4))
            .draw()?;
        for (index, ratio) in (0u32..).zip(self.ratios) {
            let x = f64::from(index);
            let colour = match ratio.status.as_str() {
                "met" => MET,
                "missed" => MISSED,
                _ => NO_TARGET,
            };
            chart
                .draw_series([Rectangle::new([(x - 0.35, 0.0), (x + 0.35, ratio.ratio)], colour.filled())])?;
            let text = match ratio.target {
                Some(target) => format!("{:.2} (target ≥{target:.2})", ratio.ratio),
                None => format!("{:.2}", ratio.ratio),
            };
            chart.draw_series([Text::new(text, (x, ratio.ratio), above(LABEL_SIZE - 4))])?;
            if let Some(target) = ratio.target {
                chart.draw_series([PathElement::new(
                    vec![(x - 0.45, target), (x + 0.45, target)],
                    BLACK.stroke_width(3),
                )])?;
            }
        }
        Ok(())
    }
}
