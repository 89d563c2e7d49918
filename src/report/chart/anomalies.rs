//! Anomalies per strategy as a grid of counts, red where non-zero: whether a strategy is unsafe
//! should be visible before any number is read.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    ANOMALY_RED, CLEAN_GREEN, Chart, DrawResult, LABEL_SIZE, TITLE_SIZE, UNKNOWN_GREY, WIDTH, centred, font,
};
use crate::report::figures::StrategyFigures;
use crate::report::model::{ANOMALIES, Verdict};

const TITLE_HEIGHT: u32 = 60;
const HEADER_HEIGHT: u32 = 90;
const ROW_HEIGHT: u32 = 56;
const FOOTER_HEIGHT: u32 = 70;
const NAME_WIDTH: i32 = 250;
const MARGIN: i32 = 20;
const AMBER: RGBColor = RGBColor(245, 190, 80);

#[derive(Debug)]
pub(crate) struct Anomalies<'a> {
    pub(crate) figures: &'a [StrategyFigures],
    /// False for Locust output: no server audit, so every cell is unknown rather than zero.
    pub(crate) audited: bool,
}

impl Anomalies<'_> {
    fn verdict_fill(verdict: Verdict) -> RGBColor {
        match verdict {
            Verdict::Clean => CLEAN_GREEN,
            Verdict::Flagged | Verdict::Degraded => AMBER,
            Verdict::Invalid => ANOMALY_RED,
            Verdict::Unknown => UNKNOWN_GREY,
        }
    }
}

impl Chart for Anomalies<'_> {
    fn name(&self) -> String {
        "anomalies".to_owned()
    }

    fn height(&self) -> u32 {
        let rows = u32::try_from(self.figures.len()).unwrap_or(u32::MAX);
        TITLE_HEIGHT + HEADER_HEIGHT + rows.saturating_mul(ROW_HEIGHT) + FOOTER_HEIGHT
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let repetitions = self.figures.iter().map(|f| f.repetitions).max().unwrap_or(0);
        let title = match repetitions {
            1 => "Anomalies per strategy".to_owned(),
            n => format!("Anomalies per strategy (summed over {n} repetitions)"),
        };
        area.draw(&Text::new(title, (i32::try_from(WIDTH).unwrap_or(0) / 2, 30), centred(TITLE_SIZE)))?;
        let columns = i32::try_from(ANOMALIES.len() + 1).unwrap_or(1);
        let cell_width = (i32::try_from(WIDTH).unwrap_or(0) - NAME_WIDTH - 2 * MARGIN) / columns;
        let top = TITLE_HEIGHT.cast_signed();
        let row_height = ROW_HEIGHT.cast_signed();
        let header = HEADER_HEIGHT.cast_signed();
        let column_x = |column: i32| MARGIN + NAME_WIDTH + column * cell_width;

        // Headers break at underscores so the long names fit a narrow column.
        let headers = ANOMALIES.iter().copied().chain(["verdict"]);
        for (column, name) in (0..).zip(headers) {
            let words: Vec<&str> = name.split('_').collect();
            let lines = i32::try_from(words.len()).unwrap_or(1);
            let line_height = i32::try_from(LABEL_SIZE).unwrap_or(0) + 4;
            for (line, word) in (0..).zip(&words) {
                let y = top + header - 12 - (lines - line) * line_height + line_height / 2;
                area.draw(&Text::new(*word, (column_x(column) + cell_width / 2, y), centred(LABEL_SIZE)))?;
            }
        }

        for (row, figures) in (0..).zip(self.figures) {
            let y0 = top + header + row * row_height;
            let name = if figures.safe { figures.name.clone() } else { format!("{} (unsafe)", figures.name) };
            area.draw(&Text::new(
                name,
                (MARGIN, y0 + row_height / 2),
                font(LABEL_SIZE + 2).pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Left,
                    plotters::style::text_anchor::VPos::Center,
                )),
            ))?;
            let cells = figures.anomalies.iter().map(Some).chain([None]);
            for (column, count) in (0..).zip(cells) {
                let (fill, text, text_colour) = match (count, self.audited) {
                    (_, false) => (UNKNOWN_GREY, "n/a".to_owned(), BLACK),
                    (Some(&0), true) => (CLEAN_GREEN, "0".to_owned(), BLACK),
                    (Some(count), true) => (ANOMALY_RED, count.to_string(), WHITE),
                    (None, true) => {
                        (Self::verdict_fill(figures.verdict), figures.verdict.as_str().to_owned(), BLACK)
                    }
                };
                let x0 = column_x(column);
                let cell = [(x0 + 2, y0 + 2), (x0 + cell_width - 2, y0 + row_height - 2)];
                area.draw(&Rectangle::new(cell, fill.filled()))?;
                area.draw(&Text::new(
                    text,
                    (x0 + cell_width / 2, y0 + row_height / 2),
                    centred(LABEL_SIZE + 2).color(&text_colour),
                ))?;
            }
        }

        let rows = i32::try_from(self.figures.len()).unwrap_or(0);
        let footer_y = top + header + rows * row_height + 20;
        let note = if self.audited {
            "red: non-zero.  verdict: clean = no anomaly; flagged = an unsafe-by-design strategy showed \
             its known anomaly; invalid = a safe strategy showed one"
        } else {
            "n/a: Locust output carries no server audit; run bench compare for anomaly counts"
        };
        area.draw(&Text::new(
            note,
            (MARGIN, footer_y),
            font(LABEL_SIZE - 2).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Left,
                plotters::style::text_anchor::VPos::Top,
            )),
        ))?;
        Ok(())
    }
}
