//! The summary table, one row per strategy, shared by the Markdown and HTML outputs so both say
//! the same thing.

use super::figures::{Spread, StrategyFigures};
use super::model::{ANOMALIES, Verdict};

/// Column headers of [`rows`].
pub const HEADER: [&str; 10] = [
    "strategy",
    "safe",
    "verdict",
    "sales/s",
    "achieved req/s",
    "p50 ms",
    "p99 ms",
    "time to sell out ms",
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
                (None, "not audited".to_owned(), "not audited".to_owned())
            };
            Row {
                verdict,
                cells: vec![
                    f.name.clone(),
                    if f.safe { "yes" } else { "no (by design)" }.to_owned(),
                    verdict_text,
                    spread(f.sales_per_sec, f.repetitions),
                    spread(f.achieved_rps, f.repetitions),
                    spread(f.p50_ms, f.repetitions),
                    spread(f.p99_ms, f.repetitions),
                    sell_out,
                    spread(f.errors_per_sec, f.repetitions),
                    anomaly_text,
                ],
            }
        })
        .collect()
}
