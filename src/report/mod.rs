//! Turns a results folder (see `results/README.md`) into charts, a page and a Markdown table, and
//! compares two runs. Bench output and Locust output load into the same [`model::Run`], so every
//! output below works on both.
//!
//! One module per output, as goose's `src/report/`: [`load`] and [`locust`] read, [`figures`]
//! combines repetitions, `chart` draws, [`html`] and [`markdown`] write pages, [`compare`] puts
//! two runs side by side.

pub mod by_database;
pub mod capacity;
mod chart;
pub mod compare;
pub mod figures;
pub mod html;
pub mod load;
pub mod locust;
pub mod markdown;
pub mod model;
pub mod saturation;
pub mod table;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use chart::ChartFiles;
use chart::{Anomalies, Capacity, LatencySpectrum, Ratios, Throughput, UnitsLeft};
pub use compare::{FigureRatio, StrategyComparison};
use figures::StrategyFigures;
use model::{Outcome, Run, StrategyInfo};

/// Everything [`render`] wrote.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The run as loaded.
    pub run_id: String,
    /// `charts/<name>.png` and `.svg`, in page order.
    pub charts: Vec<ChartFiles>,
    pub index_html: PathBuf,
    pub summary_md: PathBuf,
}

/// Draws the charts into `<dir>/charts/` and writes `<dir>/index.html` and `<dir>/summary.md`.
///
/// `dir` is a bench results folder or a folder of Locust output.
///
/// # Errors
///
/// The folder is missing or malformed (the message names the file and line), or a file cannot be
/// written.
pub fn render(dir: &Path) -> anyhow::Result<Rendered> {
    let run = load::run(dir)?;
    let figures = figures::by_strategy(&run);
    let capacity = capacity_figures(&run);
    if figures.is_empty() && capacity.is_empty() {
        anyhow::bail!("{}: no strategy has a summary to chart", dir.display());
    }
    let charts_dir = dir.join("charts");
    let mut charts = Vec::new();
    if !capacity.is_empty() {
        charts.push((
            chart::write(&Capacity { figures: &capacity }, &charts_dir)?,
            "Sustainable capacity: the highest offered rate each strategy sustained within the latency \
             objective, highest first, with its p99 at that rate; grey bars reached the load generator's \
             ceiling (at least that fast).",
        ));
    }
    if !figures.is_empty() {
        charts.extend(flash_sale_charts(&run, &figures, &charts_dir)?);
    }
    // `bench ceilings` writes its ratios into the folder it measured beside (`--into`).
    let ceiling_ratios = dir.join("ceiling_ratios.csv");
    if ceiling_ratios.exists() {
        let ratios: Vec<crate::run_folder::ceilings::CeilingRatioRow> = load::csv_rows(&ceiling_ratios)?;
        if !ratios.is_empty() {
            charts.push((
                chart::write(&chart::CeilingRatios { ratios: &ratios }, &charts_dir)?,
                "Each figure over the raw ceiling that bounds it, measured by `bench ceilings` in the \
                 same folder; black marks are targets (orange: missed).",
            ));
        }
    }
    let svgs: Vec<String> = charts
        .iter()
        .map(|(files, _)| {
            fs::read_to_string(&files.svg).with_context(|| format!("cannot read {}", files.svg.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let inlined: Vec<html::Figure<'_>> =
        charts.iter().zip(&svgs).map(|((_, caption), svg)| html::Figure { caption, svg }).collect();
    let index_html = dir.join("index.html");
    write(&index_html, &html::page(&run, &capacity, &figures, &inlined))?;
    let summary_md = dir.join("summary.md");
    write(&summary_md, &markdown::summary(&run, &capacity, &figures))?;
    Ok(Rendered {
        run_id: run.id,
        charts: charts.into_iter().map(|(files, _)| files).collect(),
        index_html,
        summary_md,
    })
}

/// The run's capacity figures, highest first; empty without a capacity step.
#[must_use]
pub fn capacity_figures(run: &Run) -> Vec<capacity::CapacityFigures> {
    let order: Vec<String> =
        run.meta.iter().flat_map(|meta| meta.strategies.iter().map(StrategyInfo::label)).collect();
    capacity::figures(&order, &run.capacity, &run.capacity_steps)
}

/// The flash sale's charts, in page order.
fn flash_sale_charts(
    run: &Run,
    figures: &[StrategyFigures],
    charts_dir: &Path,
) -> anyhow::Result<Vec<(ChartFiles, &'static str)>> {
    Ok(vec![
        (
            chart::write(&Throughput { figures }, charts_dir)?,
            "Confirmed sales, sold-out and error answers per second by strategy.",
        ),
        (
            chart::write(&latency_chart(run, figures), charts_dir)?,
            "Latency of successful purchases by percentile.",
        ),
        (
            chart::write(&units_left_chart(run, figures), charts_dir)?,
            "Hot product stock as clients saw it, with the moment each strategy sold out.",
        ),
        (
            chart::write(&Anomalies { figures, audited: run.origin.audited() }, charts_dir)?,
            "Anomalies found by the audit after each run; red cells are non-zero.",
        ),
    ])
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn repetitions_label(figures: &[StrategyFigures]) -> String {
    match figures.iter().map(|f| f.repetitions).max().unwrap_or(0) {
        0 | 1 => "one repetition".to_owned(),
        n => format!("median of {n} repetitions"),
    }
}

fn latency_chart(run: &Run, figures: &[StrategyFigures]) -> LatencySpectrum {
    let curves = figures
        .iter()
        .enumerate()
        .map(|(colour_index, f)| chart::Curve {
            strategy: f.name.clone(),
            colour_index,
            points: figures::latency_spectrum(run, &f.name, Outcome::Success),
        })
        .collect();
    LatencySpectrum { curves, combined: repetitions_label(figures) }
}

fn units_left_chart(run: &Run, figures: &[StrategyFigures]) -> UnitsLeft {
    let known = figures.iter().all(|f| figures::units_left_over_time(run, &f.name).is_some());
    let measure = if known { chart::Measure::UnitsLeft } else { chart::Measure::Acknowledged };
    let lines = figures
        .iter()
        .enumerate()
        .map(|(colour_index, f)| chart::Line {
            strategy: f.name.clone(),
            colour_index,
            points: if known {
                figures::units_left_over_time(run, &f.name).unwrap_or_default()
            } else {
                figures::acknowledged_over_time(run, &f.name)
            },
            sold_out_at: figures::charted_sell_out_secs(run, &f.name),
        })
        .collect();
    let repetition = if figures.iter().any(|f| f.repetitions > 1) { ", first repetition" } else { "" };
    UnitsLeft { measure, lines, repetition: repetition.to_owned() }
}

/// What [`compare`] found and wrote.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub old_id: String,
    pub new_id: String,
    /// Strategies both runs measured, in the new run's order.
    pub strategies: Vec<StrategyComparison>,
    pub only_in_old: Vec<String>,
    pub only_in_new: Vec<String>,
    /// What else the runs did differently (profile, preset, load options), as `name: old → new`.
    pub differences: Vec<String>,
    /// `compare-<old id>.md`.
    pub markdown: PathBuf,
    pub chart: ChartFiles,
}

impl Comparison {
    /// The comparison as a plain-text table for a terminal.
    #[must_use]
    pub fn text_table(&self) -> String {
        compare::text_table(&self.old_id, &self.new_id, &self.strategies)
    }
}

/// Compares the run in `old` with the run in `new` and writes `compare-<old id>.md` and
/// `charts/compare-<old id>.{png,svg}` into `out` (usually `new`).
///
/// # Errors
///
/// Either folder is missing or malformed, the runs share no strategy, or a file cannot be written.
pub fn compare(old: &Path, new: &Path, out: &Path) -> anyhow::Result<Comparison> {
    let old_run = load::run(old).with_context(|| format!("loading the old run {}", old.display()))?;
    let new_run = load::run(new).with_context(|| format!("loading the new run {}", new.display()))?;
    let (strategies, only_in_old, only_in_new) = compare::strategies(&old_run, &new_run);
    if strategies.is_empty() {
        anyhow::bail!("{} and {} have no strategy in common", old_run.id, new_run.id);
    }
    let chart = chart::write(
        &Ratios { old_id: &old_run.id, new_id: &new_run.id, strategies: &strategies },
        &out.join("charts"),
    )?;
    let differences = compare::differences(&old_run, &new_run);
    let markdown = out.join(format!("compare-{}.md", old_run.id));
    write(
        &markdown,
        &compare::markdown(&old_run.id, &new_run.id, &strategies, &only_in_old, &only_in_new, &differences),
    )?;
    Ok(Comparison {
        differences,
        old_id: old_run.id,
        new_id: new_run.id,
        strategies,
        only_in_old,
        only_in_new,
        markdown,
        chart,
    })
}

#[cfg(test)]
mod tests;
