//! `index.html`: one self-contained page (charts inlined as SVG, no scripts, no external files),
//! so it can be attached to a CI run or mailed and still open.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::by_database;
use super::capacity::{self, CapacityFigures};
use super::figures::StrategyFigures;
use super::model::{Run, Verdict};
use super::{saturation, table};

/// A chart to inline: its SVG text and a caption.
#[derive(Debug)]
pub struct Figure<'a> {
    pub caption: &'a str,
    pub svg: &'a str,
}

const STYLE: &str = "body{font-family:'DejaVu Sans',sans-serif;margin:2em auto;max-width:1240px;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 8px;text-align:left}\
th{background:#eee}tr.clean td{background:#e6f4e7}tr.flagged td{background:#fdebc8}tr.degraded td{background:#fdebc8}\
tr.invalid td{background:#f7c6c6}figure{margin:2em 0}figure svg{max-width:100%;height:auto}\
p.headline{font-size:1.2em;margin:.3em 0}dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em}dt{font-weight:bold}";

/// Escapes text for HTML content and attribute values.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const fn verdict_class(verdict: Option<Verdict>) -> &'static str {
    match verdict {
        Some(verdict) => verdict.as_str(),
        None => "unknown",
    }
}

/// The page: capacity first (headline, table), then the flash sale's, the run, the charts.
#[must_use]
pub fn page(
    run: &Run,
    capacity: &[CapacityFigures],
    figures: &[StrategyFigures],
    charts: &[Figure<'_>],
) -> String {
    let title = format!("checkout-bench results {}", run.id);
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    for line in capacity::headline(capacity).into_iter().chain(table::headline(figures, run.origin.audited()))
    {
        let _ = writeln!(out, "<p class=\"headline\">{}</p>", escape(&line));
    }
    capacity_table(&mut out, capacity);
    capacity_steps(&mut out, run);
    by_database_table(&mut out, capacity, figures);
    if !figures.is_empty() {
        summary(&mut out, run, figures);
        saturation_table(&mut out, run, figures);
    }
    metadata(&mut out, run);
    for chart in charts {
        // The SVG's own XML declaration is not allowed inside HTML.
        let svg = chart.svg.trim_start_matches(|c| c != '<').trim_start();
        let svg =
            if svg.starts_with("<?xml") { svg.split_once("?>").map_or(svg, |(_, rest)| rest) } else { svg };
        let _ = writeln!(
            out,
            "<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>",
            svg.trim(),
            escape(chart.caption)
        );
    }
    errors(&mut out, run);
    out.push_str("</body>\n</html>\n");
    out
}

fn metadata(out: &mut String, run: &Run) {
    let mut items: Vec<(&str, String)> = Vec::new();
    match &run.meta {
        Some(meta) => {
            let dirty = if meta.git.dirty { " (uncommitted changes)" } else { "" };
            items.push(("command", meta.command.clone()));
            items.push(("started", meta.started_at.clone()));
            items.push(("finished", meta.finished_at.clone()));
            items.push(("git", format!("{}{dirty}", meta.git.sha)));
            items.push(("build", format!("{}, preset {}", meta.profile, meta.preset)));
            let host = &meta.host;
            items
                .push(("host", format!("{} ({} CPUs, {} {})", host.hostname, host.cpus, host.os, host.arch)));
            let versions: Vec<String> = meta.versions.iter().map(|(name, v)| format!("{name} {v}")).collect();
            items.push(("versions", versions.join("; ")));
            let spawned = if meta.server.spawned { "spawned by bench" } else { "already running" };
            items.push(("server", format!("{} ({spawned})", meta.server.url)));
            if meta.server.replicas > 1 {
                items.push((
                    "replicas",
                    format!("{} server processes, the load spread over all", meta.server.replicas),
                ));
            }
            let orders: Vec<String> = meta.repetition_order.iter().map(|order| order.join(" → ")).collect();
            items.push(("repetition order", orders.join(" | ")));
        }
        None => items.push(("source", "Locust output (no run.json, no server audit)".to_owned())),
    }
    if let Some(gate) = &run.gate {
        let mut verdict = if gate.passed { "passed".to_owned() } else { "FAILED".to_owned() };
        if let Some(skipped) = &gate.skipped {
            let _ = write!(verdict, " (ratio gate skipped: {skipped})");
        } else if let Some(metric) = &gate.metric {
            let _ = write!(verdict, " (ratios of {metric} over memory)");
        }
        if let Some(note) = &gate.note {
            let _ = write!(verdict, "; {note}");
        }
        items.push(("gate", verdict));
    }
    out.push_str("<h2>Run</h2>\n<dl>\n");
    for (name, value) in items {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(name), escape(&value));
    }
    out.push_str("</dl>\n");
}

fn summary(out: &mut String, run: &Run, figures: &[StrategyFigures]) {
    out.push_str("<h2>Summary</h2>\n<table class=\"summary\">\n<tr>");
    for header in table::HEADER {
        let _ = write!(out, "<th>{}</th>", escape(header));
    }
    out.push_str("</tr>\n");
    for row in table::rows(figures, run.origin.audited()) {
        let _ = write!(out, "<tr class=\"{}\">", verdict_class(row.verdict));
        for cell in &row.cells {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str(
        "</table>\n<p>Medians over repetitions, (min–max) where they differ. Rows are green when clean, amber \
         when an unsafe-by-design strategy showed its known anomaly (flagged) or the books were clean but \
         requests got server errors (degraded), red when a safe strategy showed one (invalid: the run does \
         not count).</p>\n",
    );
}

fn capacity_table(out: &mut String, figures: &[CapacityFigures]) {
    if figures.is_empty() {
        return;
    }
    let rows = capacity::rows(figures);
    plain_table(
        out,
        "Sustainable capacity",
        "capacity",
        &capacity::HEADER,
        &rows,
        &capacity::legend(figures),
    );
}

/// The sell-out at saturation, when the run had the step.
fn saturation_table(out: &mut String, run: &Run, figures: &[StrategyFigures]) {
    let rows = saturation::rows(run, figures);
    if !rows.is_empty() {
        plain_table(
            out,
            "Sold out at saturation",
            "saturation",
            &saturation::HEADER,
            &rows,
            saturation::LEGEND,
        );
    }
}

/// PostgreSQL and MariaDB side by side, when the run measured strategies on both.
fn by_database_table(out: &mut String, capacity: &[CapacityFigures], figures: &[StrategyFigures]) {
    let rows = by_database::rows(capacity, figures);
    if !rows.is_empty() {
        plain_table(out, "By database", "by-database", &by_database::header(), &rows, by_database::LEGEND);
    }
}

/// A titled table of text cells with its legend under it.
fn plain_table<H: AsRef<str>>(
    out: &mut String,
    title: &str,
    class: &str,
    header: &[H],
    rows: &[Vec<String>],
    legend: &str,
) {
    let _ = write!(out, "<h2>{}</h2>\n<table class=\"{class}\">\n<tr>", escape(title));
    for cell in header {
        let _ = write!(out, "<th>{}</th>", escape(cell.as_ref()));
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    let _ = writeln!(out, "</table>\n<p>{}</p>", escape(legend));
}

fn capacity_steps(out: &mut String, run: &Run) {
    if run.capacity_steps.is_empty() {
        return;
    }
    out.push_str(
        "<details>\n<summary>Search steps (every capacity probe)</summary>\n<table class=\"steps\">\n<tr><th>strategy</th>\
         <th>repetition</th><th>step</th><th>phase</th><th>offered req/s</th><th>result</th><th>p99 ms</th>\
         <th>unsent</th><th>errors</th><th>drain ms</th><th>why it failed</th></tr>\n",
    );
    for step in &run.capacity_steps {
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td></tr>",
            if step.passed { "clean" } else { "flagged" },
            escape(&step.strategy),
            step.repetition,
            step.step,
            step.phase.as_str(),
            step.offered_rps,
            if step.passed { "pass" } else { "fail" },
            step.p99_ms.map_or_else(|| "–".to_owned(), |ms| format!("{ms:.1}")),
            step.unsent,
            step.errors,
            step.drain_ms,
            escape(&step.failure),
        );
    }
    out.push_str("</table>\n</details>\n");
}

fn errors(out: &mut String, run: &Run) {
    let mut totals: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for row in &run.errors {
        *totals.entry((row.strategy.as_str(), row.kind.as_str())).or_default() += row.count;
    }
    out.push_str("<h2>Errors</h2>\n");
    if totals.is_empty() {
        out.push_str("<p>No errors.</p>\n");
        return;
    }
    out.push_str(
        "<table class=\"errors\">\n<tr><th>strategy</th><th>kind</th><th>count (all repetitions)</th></tr>\n",
    );
    for ((strategy, kind), count) in totals {
        let _ =
            writeln!(out, "<tr><td>{}</td><td>{}</td><td>{count}</td></tr>", escape(strategy), escape(kind));
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
