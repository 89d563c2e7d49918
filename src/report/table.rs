//! The summary table, one row per strategy, shared by the Markdown and HTML outputs so both say
//! the same thing.

use super::figures::{Spread, StrategyFigures};
use super::model::{ANOMALIES, Verdict};

/// Column headers of [`rows`].
pub const HEADER: [&str; 14] = [
    "strategy",
    "safe",
    "verdict",
    "sales/s",
    "durable sales/s",
    "achieved req/s",
    "p50 ms",
    "p99 ms",
    "p99 ms, all due",
    "censored",
    "time to sell out ms",
    "sold out and durable ms",
    "errors/s",
    "anomalies",
];

/// One table row and the verdict that colours it; `None` when nothing was audited.
#[derive(Debug, Clone)]
pub struct Row {
    pub verdict: Option<Verdict>,
    pub cells: Vec<String>,
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 { format!("{value:.0}") } else { format!("{value:.2}") }
}

/// The median, with the range when repetitions disagree.
fn spread(spread: Spread, repetitions: usize) -> String {
    if repetitions > 1 && spread.max > spread.min {
        format!("{} ({}–{})", number(spread.median), number(spread.min), number(spread.max))
    } else {
        number(spread.median)
    }
}

/// A figure only some strategies have (queued ones, open-model runs); a dash elsewhere.
fn optional(figure: Option<Spread>, repetitions: usize) -> String {
    figure.map_or_else(|| "–".to_owned(), |figure| spread(figure, repetitions))
}

fn anomalies(figures: &StrategyFigures) -> String {
    let named: Vec<String> = ANOMALIES
        .iter()
        .zip(figures.anomalies)
        .filter(|(_, count)| *count > 0)
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    if named.is_empty() { "none".to_owned() } else { named.join(", ") }
}

/// One row per strategy; `audited` is false for Locust output, whose anomaly columns are unknown.
#[must_use]
pub fn rows(figures: &[StrategyFigures], audited: bool) -> Vec<Row> {
    figures
        .iter()
        .map(|f| {
            let sell_out = f.time_to_sell_out_ms.map_or_else(
                || "did not sell out".to_owned(),
                |s| {
                    let partial = if f.sold_out_runs < f.repetitions {
                        format!(" in {} of {} runs", f.sold_out_runs, f.repetitions)
                    } else {
                        String::new()
                    };
                    format!("{}{partial}", spread(s, f.sold_out_runs))
                },
            );
            let (verdict, verdict_text, anomaly_text) = if audited {
                (Some(f.verdict), f.verdict.as_str().to_owned(), anomalies(f))
            } else {
                (None, "unknown (no audit saved)".to_owned(), "unknown (no audit saved)".to_owned())
            };
            Row {
                verdict,
                cells: vec![
                    f.name.clone(),
                    if f.safe { "yes" } else { "no (by design)" }.to_owned(),
                    verdict_text,
                    spread(f.sales_per_sec, f.repetitions),
                    optional(f.durable_sales_per_sec, f.repetitions),
                    spread(f.achieved_rps, f.repetitions),
                    spread(f.p50_ms, f.repetitions),
                    spread(f.p99_ms, f.repetitions),
                    optional(f.due_p99_ms, f.repetitions),
                    f.censored.to_string(),
                    sell_out,
                    optional(f.sold_out_durable_ms, f.repetitions),
                    spread(f.errors_per_sec, f.repetitions),
                    anomaly_text,
                ],
            }
        })
        .collect()
}

/// The strategy every ratio is taken against: in-process, not durable, so never the answer to
/// "which strategy should we use".
const BASELINE: &str = crate::run_folder::DENOMINATOR;

/// The run in a few sentences, for the top of the page and of `summary.md`: the fastest safe
/// strategy that stayed clean, and every strategy that showed an anomaly.
#[must_use]
pub fn headline(figures: &[StrategyFigures], audited: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let fastest = figures
        .iter()
        .filter(|f| f.safe && f.name != BASELINE && (!audited || f.verdict == Verdict::Clean))
        .max_by(|a, b| a.sales_per_sec.median.total_cmp(&b.sales_per_sec.median));
    if let Some(best) = fastest {
        let sold_out = best
            .time_to_sell_out_ms
            .map_or_else(String::new, |t| format!(", sold out after {:.2} s", t.median / 1000.0));
        let clean = if audited { "clean " } else { "" };
        lines.push(format!(
            "Fastest {clean}safe strategy: {} — {} sales/s, p99 {} ms{sold_out}.",
            best.name,
            number(best.sales_per_sec.median),
            number(best.p99_ms.median)
        ));
    }
    if !audited {
        lines.push("No server audit with this output: oversold and lost orders are unknown.".to_owned());
        return lines;
    }
    let anomalous: Vec<&StrategyFigures> =
        figures.iter().filter(|f| !matches!(f.verdict, Verdict::Clean | Verdict::Degraded)).collect();
    if anomalous.is_empty() {
        lines.push("Every strategy sold exactly the stock: no anomaly anywhere.".to_owned());
    }
    for f in figures.iter().filter(|f| f.verdict == Verdict::Degraded) {
        lines.push(format!(
            "{}: DEGRADED: books clean, but {} requests got a server error (5xx, timeout, broken connection).",
            f.name, f.server_errors
        ));
    }
    for f in anomalous {
        let what = match f.verdict {
            Verdict::Invalid => "INVALID: it claims to be safe",
            Verdict::Unknown => "not audited",
            _ => "unsafe by design, as expected",
        };
        lines.push(format!("{}: {} ({what}).", f.name, anomalies(f)));
    }
    lines
}

/// Rows of cells as plain text, each column padded to its widest cell.
#[must_use]
pub fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter().filter_map(|row| row.get(column)).map(|cell| cell.chars().count()).max().unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The summary table as plain text, for the terminal.
#[must_use]
pub fn text(figures: &[StrategyFigures], audited: bool) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(HEADER.iter().map(|h| (*h).to_owned()).collect())
        .chain(rows(figures, audited).into_iter().map(|row| row.cells))
        .collect();
    aligned(&rows)
}
