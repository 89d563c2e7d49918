//! Two runs side by side: each headline figure of each strategy as new ÷ old, so a change shows as
//! a ratio rather than as two numbers to subtract by eye.

use std::fmt::Write as _;

use super::figures::{self, StrategyFigures};
use super::model::Run;

/// One compared figure: how to read it off a strategy, and which way is better.
#[derive(Debug)]
pub struct FigureSpec {
    pub key: &'static str,
    pub label: &'static str,
    pub higher_is_better: bool,
    value: fn(&StrategyFigures) -> Option<f64>,
}

/// The figures `compare` reports, in table order.
pub const FIGURES: [FigureSpec; 7] = [
    FigureSpec {
        key: "capacity_rps",
        label: "capacity req/s",
        higher_is_better: true,
        value: |f| f.capacity_rps,
    },
    FigureSpec {
        key: "sales_per_sec",
        label: "sales/s",
        higher_is_better: true,
        value: |f| Some(f.sales_per_sec.median),
    },
    FigureSpec {
        key: "achieved_rps",
        label: "achieved req/s",
        higher_is_better: true,
        value: |f| Some(f.achieved_rps.median),
    },
    FigureSpec { key: "p50_ms", label: "p50 ms", higher_is_better: false, value: |f| Some(f.p50_ms.median) },
    FigureSpec { key: "p99_ms", label: "p99 ms", higher_is_better: false, value: |f| Some(f.p99_ms.median) },
    FigureSpec {
        key: "time_to_sell_out_ms",
        label: "time to sell out ms",
        higher_is_better: false,
        value: |f| f.time_to_sell_out_ms.map(|s| s.median),
    },
    FigureSpec {
        key: "anomalies",
        label: "anomalies",
        higher_is_better: false,
        #[expect(clippy::cast_precision_loss, reason = "anomaly counts stay far below 2^52")]
        value: |f| Some(f.anomaly_total() as f64),
    },
];

/// One figure of one strategy in both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureRatio {
    pub key: &'static str,
    pub old: Option<f64>,
    pub new: Option<f64>,
    /// new ÷ old; 1 when both are zero; `None` when either is missing or only old is zero.
    pub ratio: Option<f64>,
}

/// Every compared figure of a strategy both runs measured, in [`FIGURES`] order.
#[derive(Debug, Clone)]
pub struct StrategyComparison {
    pub strategy: String,
    pub figures: Vec<FigureRatio>,
}

impl StrategyComparison {
    /// The ratio of the figure named `key`.
    #[must_use]
    pub fn ratio(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key)?.ratio
    }
}

fn ratio(old: Option<f64>, new: Option<f64>) -> Option<f64> {
    let (old, new) = (old?, new?);
    if old != 0.0 {
        Some(new / old)
    } else if new == 0.0 {
        Some(1.0)
    } else {
        None
    }
}

/// Ratios for every strategy in both runs, in the new run's order; strategies in one run only
/// are returned apart.
#[must_use]
pub fn strategies(old: &Run, new: &Run) -> (Vec<StrategyComparison>, Vec<String>, Vec<String>) {
    let old_figures = figures::by_strategy(old);
    let new_figures = figures::by_strategy(new);
    let mut compared = Vec::new();
    let mut only_new = Vec::new();
    for new_f in &new_figures {
        let Some(old_f) = old_figures.iter().find(|f| f.name == new_f.name) else {
            only_new.push(new_f.name.clone());
            continue;
        };
        let figures = FIGURES
            .iter()
            .map(|spec| {
                let (old, new) = ((spec.value)(old_f), (spec.value)(new_f));
                FigureRatio { key: spec.key, old, new, ratio: ratio(old, new) }
            })
            .collect();
        compared.push(StrategyComparison { strategy: new_f.name.clone(), figures });
    }
    let only_old = old_figures
        .iter()
        .filter(|f| !new_figures.iter().any(|n| n.name == f.name))
        .map(|f| f.name.clone())
        .collect();
    (compared, only_old, only_new)
}

/// What the two runs did differently (build profile, preset, load options), one `name: old → new`
/// line each: ratios between runs that offered different loads compare the loads, not the code.
#[must_use]
pub fn differences(old: &Run, new: &Run) -> Vec<String> {
    let (Some(old), Some(new)) = (&old.meta, &new.meta) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (name, a, b) in [("profile", &old.profile, &new.profile), ("preset", &old.preset, &new.preset)] {
        if a != b {
            found.push(format!("{name}: {a} → {b}"));
        }
    }
    let mut flat_old = Vec::new();
    let mut flat_new = Vec::new();
    flatten("", &old.options["load"], &mut flat_old);
    flatten("", &new.options["load"], &mut flat_new);
    for (key, value) in &flat_new {
        let before = flat_old.iter().find(|(k, _)| k == key).map_or("–", |(_, v)| v.as_str());
        if before != value {
            found.push(format!("{key}: {before} → {value}"));
        }
    }
    found
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&name, value, out);
            }
        }
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(
        || "–".to_owned(),
        |v| if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") },
    )
}

fn cell(figure: &FigureRatio) -> String {
    if figure.key == "anomalies" {
        let count = |value: Option<f64>| value.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
        let ratio = figure.ratio.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"));
        return format!("{} → {} ({ratio})", count(figure.old), count(figure.new));
    }
    let ratio = figure.ratio.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"));
    format!("{} → {} ({ratio})", number(figure.old), number(figure.new))
}

/// The comparison as rows of cells: a header row, then one row per strategy.
fn rows(strategies: &[StrategyComparison]) -> Vec<Vec<String>> {
    let mut rows = vec![
        std::iter::once("strategy".to_owned()).chain(FIGURES.iter().map(|f| f.label.to_owned())).collect(),
    ];
    for s in strategies {
        rows.push(std::iter::once(s.strategy.clone()).chain(s.figures.iter().map(cell)).collect());
    }
    rows
}

/// A plain-text table for the terminal, columns padded to line up.
#[must_use]
pub fn text_table(old_id: &str, new_id: &str, strategies: &[StrategyComparison]) -> String {
    format!(
        "{new_id} against {old_id} (old → new (new ÷ old), medians over repetitions)\n{}",
        super::table::aligned(&rows(strategies))
    )
}

/// The comparison as Markdown, for a pull request.
#[must_use]
pub fn markdown(
    old_id: &str,
    new_id: &str,
    compared: &[StrategyComparison],
    only_old: &[String],
    only_new: &[String],
    differences: &[String],
) -> String {
    let mut out = format!(
        "# {new_id} against {old_id}\n\nEach cell is old → new (new ÷ old), medians over repetitions. \
         Higher is better for capacity, sales/s and achieved req/s; lower for latency, time to sell out and \
         anomalies. Capacity is `–` where a run has none or only a lower bound (the load generator's ceiling).\n\n"
    );
    if !differences.is_empty() {
        let _ = writeln!(out, "**The runs differ in more than the code**: {}.\n", differences.join("; "));
    }
    let rows = rows(compared);
    for (index, row) in rows.iter().enumerate() {
        let _ = writeln!(out, "| {} |", row.join(" | "));
        if index == 0 {
            let _ = writeln!(out, "|{}", "---|".repeat(row.len()));
        }
    }
    if !only_old.is_empty() {
        let _ = writeln!(out, "\nOnly in {old_id}: {}.", only_old.join(", "));
    }
    if !only_new.is_empty() {
        let _ = writeln!(out, "\nOnly in {new_id}: {}.", only_new.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{flatten, ratio};

    #[test]
    fn options_flatten_to_dotted_names() {
        let mut out = Vec::new();
        flatten("", &serde_json::json!({"rate": 10, "scenario": {"hot_stock": 5}}), &mut out);
        assert_eq!(
            out,
            [("rate".to_owned(), "10".to_owned()), ("scenario.hot_stock".to_owned(), "5".to_owned())]
        );
    }

    #[test]
    fn ratio_handles_zero_and_missing() {
        assert_eq!(ratio(Some(2.0), Some(3.0)), Some(1.5));
        assert_eq!(ratio(Some(0.0), Some(0.0)), Some(1.0));
        assert_eq!(ratio(Some(0.0), Some(4.0)), None);
        assert_eq!(ratio(None, Some(4.0)), None);
    }
}
