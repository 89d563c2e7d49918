//! Reads a results folder into a [`Run`], naming the file and line of anything missing or
//! malformed, because a half-written folder is the usual reason a report fails.

use std::fs;
use std::path::Path;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

use super::locust;
use super::model::{Gate, Origin, Run, RunMeta};

/// Loads a bench results folder, or Locust output when the folder holds no `summary.csv`.
///
/// # Errors
///
/// The folder does not exist, holds neither layout, or a file is missing or malformed; the
/// message names the file (and the line, for a CSV).
pub fn run(dir: &Path) -> anyhow::Result<Run> {
    if !dir.is_dir() {
        bail!("results folder {} does not exist (or is not a folder)", dir.display());
    }
    if dir.join("summary.csv").exists() || dir.join("capacity.csv").exists() {
        bench(dir)
    } else if locust::detect(dir)? {
        locust::load(dir)
    } else {
        bail!(
            "{} is not a results folder: it holds neither summary.csv (bench) nor Locust's \
             *_stats.csv / JSON output",
            dir.display()
        )
    }
}

/// A bench folder: `bench compare` writes every file, `bench capacity` only `run.json` and the
/// capacity files, and runs older than the capacity step have none of those.
fn bench(dir: &Path) -> anyhow::Result<Run> {
    let meta: RunMeta = json(&dir.join("run.json"))?;
    let optional = |name: &str| dir.join(name).exists().then(|| dir.join(name));
    let capacity = optional("capacity.csv").map(|path| csv_rows(&path)).transpose()?.unwrap_or_default();
    let capacity_steps =
        optional("capacity_steps.csv").map(|path| csv_rows(&path)).transpose()?.unwrap_or_default();
    let saturation = optional("saturation.csv").map(|path| csv_rows(&path)).transpose()?;
    let has_summary = dir.join("summary.csv").exists();
    let summary = if has_summary { csv_rows(&dir.join("summary.csv"))? } else { Vec::new() };
    if summary.is_empty() && capacity.is_empty() {
        bail!(
            "{} has a header but no rows",
            dir.join(if has_summary { "summary.csv" } else { "capacity.csv" }).display()
        );
    }

    let gate_path = dir.join("gate.json");
    let gate: Option<Gate> = if gate_path.exists() { Some(json(&gate_path)?) } else { None };
    Ok(Run {
        id: meta.run_id.clone(),
        origin: Origin::Bench,
        meta: Some(meta),
        summary,
        timeseries: flash_sale(dir, "timeseries.csv", has_summary)?,
        latency: flash_sale(dir, "latency.csv", has_summary)?,
        errors: flash_sale(dir, "errors.csv", has_summary)?,
        capacity,
        capacity_steps,
        saturation,
        gate,
    })
}

/// A flash-sale file: required beside `summary.csv`, absent from a capacity-only folder.
fn flash_sale<T: DeserializeOwned>(dir: &Path, name: &str, has_summary: bool) -> anyhow::Result<Vec<T>> {
    if has_summary { csv_rows(&dir.join(name)) } else { Ok(Vec::new()) }
}

/// Reads a JSON file into `T`.
///
/// # Errors
///
/// Missing file, or JSON that does not match `T` (with line and column).
pub fn json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
}

/// Reads every row of a CSV with a header row into `T`.
///
/// # Errors
///
/// Missing file, or a row that does not fit `T`; the message names the file and line.
pub fn csv_rows<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for record in reader.deserialize() {
        let row = record.map_err(|err| {
            let line = err.position().map_or_else(String::new, |pos| format!(" line {}", pos.line()));
            anyhow::anyhow!("{}{line} is malformed: {err}", path.display())
        })?;
        rows.push(row);
    }
    Ok(rows)
}
