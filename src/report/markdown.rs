//! `summary.md`: the summary table in Markdown, to paste into a pull request.

use std::fmt::Write as _;

use super::by_database;
use super::capacity::{self, CapacityFigures};
use super::figures::StrategyFigures;
use super::model::Run;
use super::{saturation, table};

/// Markdown escapes for a table cell: a `|` would end the cell.
fn escape(cell: &str) -> String {
    cell.replace('|', "\\|")
}

/// The Markdown page: a heading naming the run, the capacity table, the flash sale's table.
#[must_use]
pub fn summary(run: &Run, capacity: &[CapacityFigures], figures: &[StrategyFigures]) -> String {
    let mut out = format!("## Results: {}\n\n", run.id);
    for line in capacity::headline(capacity).into_iter().chain(table::headline(figures, run.origin.audited()))
    {
        let _ = writeln!(out, "{line}  ");
    }
    out.push('\n');
    if let Some(meta) = &run.meta {
        let dirty = if meta.git.dirty { " (uncommitted changes)" } else { "" };
        let _ = writeln!(
            out,
            "`{}` at {}{dirty}, {} build, preset `{}`, {} CPUs ({} {}).\n",
            meta.command,
            meta.git.short_sha,
            meta.profile,
            meta.preset,
            meta.host.cpus,
            meta.host.os,
            meta.host.arch
        );
    }
    if !capacity.is_empty() {
        out.push_str("### Sustainable capacity\n\n");
        let _ = writeln!(out, "| {} |", capacity::HEADER.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(capacity::HEADER.len()));
        for row in capacity::rows(capacity) {
            let cells: Vec<String> = row.iter().map(|cell| escape(cell)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(out, "\n{}\n", capacity::legend(capacity));
    }
    let side_by_side = by_database::rows(capacity, figures);
    if !side_by_side.is_empty() {
        out.push_str("### By database\n\n");
        let header = by_database::header();
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
        for row in side_by_side {
            let cells: Vec<String> = row.iter().map(|cell| escape(cell)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(out, "\n{}\n", by_database::LEGEND);
    }
    if figures.is_empty() {
        return out;
    }
    out.push_str("### Flash sale\n\n");
    let _ = writeln!(out, "| {} |", table::HEADER.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(table::HEADER.len()));
    for row in table::rows(figures, run.origin.audited()) {
        let cells: Vec<String> = row.cells.iter().map(|cell| escape(cell)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push_str(
        "\nMedians over repetitions, (min–max) where they differ. Verdict: `clean` no anomaly, `flagged` an \
         unsafe-by-design strategy showed its known anomaly, `invalid` a safe strategy showed one.\n",
    );
    let saturated = saturation::rows(run, figures);
    if !saturated.is_empty() {
        out.push_str("\n### Sold out at saturation\n\n");
        let _ = writeln!(out, "| {} |", saturation::HEADER.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(saturation::HEADER.len()));
        for row in saturated {
            let cells: Vec<String> = row.iter().map(|cell| escape(cell)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(out, "\n{}", saturation::LEGEND);
    }
    if let Some(gate) = &run.gate {
        let _ = writeln!(out, "\nGate: {}.", if gate.passed { "passed" } else { "**failed**" });
    }
    out
}
