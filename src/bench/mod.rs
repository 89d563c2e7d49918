//! `bench`: the comparison. For each strategy, in a shuffled order per repetition: reset → load →
//! drain → audit → join, then the run folder (`results/README.md`), the gate and the report.
//!
//! - [`capacity`]: the highest rate each strategy sustains within a latency objective.
//! - [`options`]: flags and presets.
//! - [`drivers`]: `--pg-driver`, a pass (a server) per PostgreSQL client of the SQL strategies.
//! - `passes`: the passes of `compare` and `capacity`, one server after the other.
//! - `run_file`: their run folder's `run.json`, rows, `latest` link and report.
//! - [`server`]: the server under test, spawned or reached, and its admin calls.
//! - [`join`]: what clients were told against what the server holds.
//! - [`gate`]: invariants and same-run ratios against `results/baseline.json`.
//! - [`ceilings`]: `bench ceilings`, the raw tools' ceilings beside the strategies.
//! - [`chaos`]: `bench chaos`, fault scenarios against a server and a Redis of its own.
//! - [`saturation`]: the flash sale again, offered more than each fast strategy's capacity.

pub mod capacity;
pub mod ceilings;
pub mod chaos;
pub mod drivers;
pub mod gate;
pub mod join;
pub mod options;
mod passes;
mod run_file;
pub mod saturation;
pub mod scale;
pub mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize as _;
use serde_json::json;

use crate::loadgen::{self, LoadPlan, RunRecord};
use crate::run_folder::{
    self as results, ErrorRow, LatencyRow, Outcome, RunFolder, RunKey, Settlement, SummaryRow, TimeseriesRow,
    meta,
};
use gate::{Baseline, GateReport};
use join::{Anomalies, AuditView};
use options::CompareFlags;
use passes::Ran;
use run_file::{Described, RunStart};
use server::{Server, StrategyInfo};

/// How often the drain asks whether queueing strategies have persisted everything.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// What a comparison produced.
#[derive(Debug)]
pub struct Comparison {
    pub folder: RunFolder,
    /// The strategies compared, in the server's order.
    pub strategies: Vec<StrategyInfo>,
    pub rows: Vec<SummaryRow>,
    /// The capacity step's rows; empty when it did not run.
    pub capacity: Vec<results::CapacityRow>,
    /// The saturation step's rows; empty when it did not run or no strategy needed it.
    pub saturation: Vec<SummaryRow>,
    pub gate: Option<GateReport>,
}

/// Everything collected so far; written out even when a run fails half-way.
#[derive(Debug, Default)]
struct Collected {
    summary: Vec<SummaryRow>,
    timeseries: Vec<TimeseriesRow>,
    latency: Vec<LatencyRow>,
    errors: Vec<ErrorRow>,
    /// Per strategy and outcome, merged over repetitions.
    histograms: BTreeMap<(String, Outcome), hdrhistogram::Histogram<u64>>,
    /// `None` when the run has no capacity step.
    capacity: Option<capacity::Collected>,
    /// What the load generator sustains, once measured.
    generator_cap: Option<f64>,
    /// The flash sale at saturation (`saturation.csv`); `None` when the step did not run.
    saturation: Option<Vec<SummaryRow>>,
}

impl Collected {
    fn add(&mut self, key: &RunKey, row: SummaryRow, record: &RunRecord) {
        self.summary.push(row);
        self.timeseries.extend(TimeseriesRow::of(key, record));
        self.latency.extend(LatencyRow::of(key, record));
        self.errors.extend(ErrorRow::of(key, record));
        for (outcome, histogram) in Outcome::histograms(record) {
            let total = self
                .histograms
                .entry((key.strategy.clone(), outcome))
                .or_insert_with(loadgen::record::latency_histogram);
            // Same bounds on both sides: adding cannot fail.
            let _ = total.add(&histogram);
        }
    }

    fn write(&self, folder: &RunFolder) -> anyhow::Result<()> {
        results::write_csv(&folder.file("summary.csv"), &self.summary)?;
        results::write_csv(&folder.file("timeseries.csv"), &self.timeseries)?;
        results::write_csv(&folder.file("latency.csv"), &self.latency)?;
        results::write_csv(&folder.file("errors.csv"), &self.errors)?;
        if let Some(capacity) = &self.capacity {
            capacity.write(folder)?;
        }
        if let Some(saturation) = &self.saturation {
            results::write_csv(&folder.file("saturation.csv"), saturation)?;
        }
        for ((strategy, outcome), histogram) in &self.histograms {
            // The success path keeps the plain name it always had.
            let name = match outcome {
                Outcome::Success => format!("{strategy}.hgrm"),
                _ => format!("{strategy}.{}.hgrm", outcome.as_str()),
            };
            if !histogram.is_empty() || matches!(outcome, Outcome::Success | Outcome::SoldOut) {
                results::write_hgrm(&folder.path.join("histograms").join(name), histogram)?;
            }
        }
        Ok(())
    }
}

/// Picks the strategies to compare, in the server's order; unknown names are an error that lists
/// the known ones.
fn select(listed: &[StrategyInfo], wanted: &[String], replicas: u16) -> anyhow::Result<Vec<StrategyInfo>> {
    let available: Vec<StrategyInfo> = listed.iter().filter(|s| s.available).cloned().collect();
    if wanted.is_empty() {
        let elsewhere: Vec<&str> = listed.iter().filter(|s| !s.available).map(|s| s.name.as_str()).collect();
        if let (false, Some(first)) = (elsewhere.is_empty(), listed.first()) {
            eprintln!(
                "bench: {} left out: not ported to {} (README, \"MariaDB\")",
                elsewhere.join(", "),
                first.database()
            );
        }
        // Across replicas, a strategy whose books live in one process would sell each replica's
        // stock once per replica: it is left out rather than shown overselling.
        let shareable: Vec<StrategyInfo> =
            available.iter().filter(|s| replicas <= 1 || !s.single_process).cloned().collect();
        if shareable.len() < available.len() {
            let left_out: Vec<&str> =
                available.iter().filter(|s| s.single_process).map(|s| s.name.as_str()).collect();
            eprintln!(
                "bench: {} left out: its books live in one process, and --replicas {replicas} runs several",
                left_out.join(", ")
            );
        }
        return Ok(shareable);
    }
    let known = || available.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
    let mut selected = Vec::new();
    for name in wanted {
        let strategy = listed
            .iter()
            .find(|s| s.name == name.trim())
            .with_context(|| format!("unknown strategy {name:?}; the server has: {}", known()))?;
        anyhow::ensure!(
            strategy.available,
            "{} does not run on {} yet; it runs: {}",
            strategy.name,
            strategy.database(),
            known()
        );
        anyhow::ensure!(
            replicas <= 1 || !strategy.single_process,
            "{} keeps its books in one server process: it cannot run across --replicas {replicas}",
            strategy.name
        );
        if !selected.contains(strategy) {
            selected.push(strategy.clone());
        }
    }
    Ok(selected)
}

/// Runs the comparison `flags` describe. `command` is the command line, for `run.json`.
///
/// # Errors
/// When the server cannot be started or reached, an admin call fails, or a file cannot be written.
/// Files of the runs done so far are written before the error is returned.
pub async fn compare(flags: &CompareFlags, command: String) -> anyhow::Result<Comparison> {
    let (plan, preset_repeat) = flags.load.resolve()?;
    let repeat = flags.repeat.unwrap_or(preset_repeat);
    anyhow::ensure!(repeat >= 1, "--repeat must be at least 1");
    let capacity = flags.capacity_settings(&plan)?;
    let run = RunStart::begin(&flags.out)?;
    eprintln!(
        "bench: run {} ({} build, preset {})",
        run.folder.path.display(),
        meta::profile(),
        flags.load.preset().as_str()
    );
    let saturate = flags.saturation_step(capacity.is_some())?;
    let mut collected = Collected {
        capacity: capacity.as_ref().map(|_| capacity::Collected::default()),
        saturation: saturate.then(Vec::new),
        ..Collected::default()
    };
    let mut ran = Ran::new(flags.drivers.passes(&flags.server)?, &flags.strategies, repeat, run.order_seed());
    let folder = &run.folder;
    let outcome = ran
        .each_pass(folder, "the runs finished before Ctrl-C are written", async |server, ran| {
            let orders = ran.draw_orders();
            run_all(server, &plan, flags, capacity.as_ref(), folder, &orders, &mut collected).await
        })
        // Nothing ran yet: nothing to write.
        .await?;
    let described = Described {
        preset: flags.load.preset().as_str().to_owned(),
        command,
        options: json!({
            "load": plan,
            "gate": flags.gate,
            "baseline": flags.baseline,
            "capacity": capacity.as_ref().map(capacity::Settings::describe),
            "saturation": saturate.then_some(json!({ "overload": saturation::OVERLOAD })),
        }),
        server: &flags.server,
        drivers: &flags.drivers,
        drain_timeout_secs: flags.drain_timeout_secs,
        out: &flags.out,
    };
    let meta = run.finish(described, ran, outcome, |folder| collected.write(folder)).await?;
    let capacity_rows = collected.capacity.map(|capacity| capacity.rows).unwrap_or_default();
    let saturation_rows = collected.saturation.unwrap_or_default();
    let gate = if flags.gate || flags.write_baseline {
        let measured =
            Measured { flash: &collected.summary, capacity: &capacity_rows, saturation: &saturation_rows };
        Some(judge(
            measured,
            &run.folder,
            &flags.baseline,
            &meta.profile,
            &meta.preset,
            flags.write_baseline,
        )?)
    } else {
        None
    };
    run.report(flags.no_report)?;
    Ok(Comparison {
        folder: run.folder,
        strategies: meta.strategies,
        rows: collected.summary,
        capacity: capacity_rows,
        saturation: saturation_rows,
        gate,
    })
}

async fn run_all(
    server: &Server,
    plan: &LoadPlan,
    flags: &CompareFlags,
    capacity: Option<&capacity::Settings>,
    folder: &RunFolder,
    orders: &[Vec<StrategyInfo>],
    collected: &mut Collected,
) -> anyhow::Result<()> {
    if let (Some(settings), Some(into), Some(order)) = (capacity, collected.capacity.as_mut(), orders.first())
    {
        // Measured once per comparison: every pass's searches stop at the same ceiling.
        let cap = match collected.generator_cap {
            Some(cap) => cap,
            None => *collected.generator_cap.insert(capacity::generator_cap(settings).await?),
        };
        capacity::measure(server, order, settings, cap, &folder.id, 1, into).await?;
    }
    let repeat = orders.len();
    for (rep, order) in (1u32..).zip(orders) {
        for (position, strategy) in (1u32..).zip(order) {
            let key = RunKey {
                run_id: folder.id.clone(),
                strategy: strategy.label(),
                repetition: rep,
                position,
                safe: strategy.safe,
                queued: strategy.queued,
            };
            let label = format!("[rep {rep}/{repeat} · {position}/{} · {}]", order.len(), key.strategy);
            let audit = format!("{}-{rep}", key.strategy);
            let (record, settlement) = one_run(server, plan, flags, folder, &strategy.name, &audit, &label)
                .await
                .with_context(|| format!("{} (repetition {rep})", key.strategy))?;
            let row = SummaryRow::new(&key, plan.model.as_str(), plan.offered_rps(), &record, &settlement);
            eprintln!("{label} {}", one_line(&row));
            collected.add(&key, row, &record);
        }
    }
    if let Some(order) = orders.first() {
        saturate_each(server, plan, flags, folder, order, collected).await?;
    }
    Ok(())
}

/// The saturation step ([`saturation`]) for this pass's strategies whose capacity the flash sale
/// did not reach.
async fn saturate_each(
    server: &Server,
    plan: &LoadPlan,
    flags: &CompareFlags,
    folder: &RunFolder,
    order: &[StrategyInfo],
    collected: &mut Collected,
) -> anyhow::Result<()> {
    let (Some(found), Some(generator_cap)) = (collected.capacity.as_ref(), collected.generator_cap) else {
        return Ok(());
    };
    let mut due = Vec::new();
    for (position, strategy) in (1u32..).zip(order) {
        let label = strategy.label();
        let Some(capacity) = found.rows.iter().rev().find(|row| row.strategy == label) else { continue };
        if let Some(rate) = saturation::rate(plan, capacity, generator_cap) {
            due.push((position, strategy, saturation::plan(plan, rate, capacity.capacity_rps)));
        }
    }
    for (done, (position, strategy, saturating)) in (1usize..).zip(&due) {
        let key = RunKey {
            run_id: folder.id.clone(),
            strategy: strategy.label(),
            repetition: 1,
            position: *position,
            safe: strategy.safe,
            queued: strategy.queued,
        };
        let label =
            format!("[saturation {done}/{} · {} at {:.0}/s]", due.len(), key.strategy, saturating.rate);
        let audit = format!("{}-saturation", key.strategy);
        let (record, settlement) = one_run(server, saturating, flags, folder, &strategy.name, &audit, &label)
            .await
            .with_context(|| format!("{} at saturation", key.strategy))?;
        let row =
            SummaryRow::new(&key, saturating.model.as_str(), saturating.offered_rps(), &record, &settlement);
        eprintln!("{label} {}", one_line(&row));
        if let Some(rows) = collected.saturation.as_mut() {
            rows.push(row);
        }
    }
    Ok(())
}

/// Reset, load, drain, audit, join, for strategy `name`; the audit goes to `audit/<audit>.json`.
async fn one_run(
    server: &Server,
    plan: &LoadPlan,
    flags: &CompareFlags,
    folder: &RunFolder,
    name: &str,
    audit: &str,
    label: &str,
) -> anyhow::Result<(RunRecord, Settlement)> {
    server.reset(&plan.scenario.reset_plan()).await?;
    let record = loadgen::run_spread(plan, &server.load_targets(), name, label).await?;
    let drain_limit = Duration::from_secs(flags.drain_timeout_secs);
    let (settlement, audit_json) =
        settle(server, &record, name, plan.scenario.hot_product, drain_limit).await?;
    if !settlement.settled {
        eprintln!(
            "{label} warning: not settled after {}s: orders not yet persisted count as lost",
            drain_limit.as_secs()
        );
    }
    let audit_path = folder.path.join("audit").join(format!("{audit}.json"));
    std::fs::write(&audit_path, serde_json::to_string_pretty(&audit_json)?)
        .with_context(|| format!("cannot write {}", audit_path.display()))?;
    Ok((record, settlement))
}

/// After a run of `strategy`: waits (at most `drain_limit`) until queueing strategies have
/// persisted what they accepted, audits, and joins what clients were told with what the server
/// holds. Returns the settlement and the raw audit.
///
/// # Errors
/// When an admin call fails, or the server holds more orders than it lists.
pub async fn settle(
    server: &Server,
    record: &RunRecord,
    strategy: &str,
    hot_product: i64,
    drain_limit: Duration,
) -> anyhow::Result<(Settlement, serde_json::Value)> {
    let drain_started = Instant::now();
    let mut last_said = drain_started;
    let mut durable_at = None;
    let audit = loop {
        let asked = Instant::now();
        let audit = server.audit().await?;
        let settled = audit.get("settled").and_then(serde_json::Value::as_bool).unwrap_or(false);
        if settled {
            // Nothing waited for a worker when the audit began reading: an upper bound, to
            // `DRAIN_POLL`, of when the last accepted order became durable.
            durable_at = Some(asked.saturating_duration_since(record.started));
        }
        if settled || drain_started.elapsed() >= drain_limit {
            break audit;
        }
        if last_said.elapsed() >= Duration::from_secs(1) {
            let pending = audit.pointer("/queues/pending").and_then(serde_json::Value::as_i64).unwrap_or(0);
            eprintln!("[{strategy}] draining: {pending} accepted orders not persisted yet");
            last_said = Instant::now();
        }
        tokio::time::sleep(DRAIN_POLL).await;
    };
    let drain = drain_started.elapsed();
    let view = AuditView::deserialize(&audit).context("GET /admin/audit answered an unexpected shape")?;
    let held = server.orders().await?;
    anyhow::ensure!(!held.truncated, "GET /admin/orders was truncated: too many orders to join");
    let mut stock = view.final_stock(strategy);
    for product in record.sold_out_by_product.keys().chain([&hot_product]) {
        if !stock.contains_key(product)
            && let Some(left) = server.stock(*product).await?
        {
            stock.insert(*product, left);
        }
    }
    let anomalies: Anomalies = join::join(record, &view, &held.orders, strategy, &stock);
    let settlement = Settlement {
        anomalies,
        final_stock: stock.get(&hot_product).copied(),
        drain,
        settled: view.settled,
        durable_at,
    };
    Ok((settlement, audit))
}

/// One run in a line, for the log.
fn one_line(row: &SummaryRow) -> String {
    let sold_out = row
        .time_to_sell_out_ms
        .map_or_else(|| "not sold out".to_owned(), |ms| format!("sold out in {:.2} s", ms / 1e3));
    let anomalies: Vec<String> =
        row.named_anomalies().into_iter().map(|(name, count)| format!("{name} {count}")).collect();
    let durable = row
        .sold_out_durable_ms
        .or(row.durable_ms)
        .map_or_else(String::new, |ms| format!(", durable at {:.2} s", ms / 1e3));
    format!(
        "{:.0} sales/s, {:.0} answers/s, p99 {} (all due {}), {sold_out}{durable}, {} errors, {}{}",
        row.sales_per_sec,
        row.achieved_rps,
        row.p99_ms.map_or_else(|| "–".to_owned(), |ms| format!("{ms:.1} ms")),
        row.due_p99_ms.map_or_else(|| "–".to_owned(), |ms| format!("{ms:.1} ms")),
        row.errors,
        serde_json::to_value(row.verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        if anomalies.is_empty() { String::new() } else { format!(" ({})", anomalies.join(", ")) },
    )
}

/// What a finished run measured, as the gate reads it.
#[derive(Debug, Clone, Copy)]
pub struct Measured<'a> {
    /// The flash sale's rows (`summary.csv`).
    pub flash: &'a [SummaryRow],
    pub capacity: &'a [results::CapacityRow],
    /// The saturation step's rows: overload by design, so only an anomaly counts against them.
    pub saturation: &'a [SummaryRow],
}

/// Runs the gate on a finished run and writes `gate.json`; with `write_baseline`, records the
/// run's ratios as the baseline first.
///
/// # Errors
/// When the baseline cannot be read or written.
pub fn judge(
    measured: Measured<'_>,
    folder: &RunFolder,
    baseline_path: &Path,
    profile: &str,
    preset: &str,
    write_baseline: bool,
) -> anyhow::Result<GateReport> {
    if write_baseline {
        let existing = baseline_path.exists().then(|| Baseline::load(baseline_path)).transpose()?;
        let updated =
            gate::rebaseline(existing, measured.flash, measured.capacity, profile, preset, &folder.id)?;
        std::fs::write(baseline_path, serde_json::to_string_pretty(&updated)? + "\n")
            .with_context(|| format!("cannot write {}", baseline_path.display()))?;
        eprintln!("bench: wrote the `{profile}` baseline to {}", baseline_path.display());
    }
    let baseline = Baseline::load(baseline_path)?;
    let mut report =
        gate::check(measured.flash, measured.capacity, &baseline, baseline_path, profile, preset);
    report.fail_invalid_at_saturation(measured.saturation);
    std::fs::write(folder.file("gate.json"), serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", folder.file("gate.json").display()))?;
    Ok(report)
}

/// `bench check`: the gate on an existing run folder.
///
/// # Errors
/// When the folder or the baseline cannot be read.
pub fn check_folder(dir: &Path, baseline: &Path) -> anyhow::Result<GateReport> {
    let dir = dir.canonicalize().with_context(|| format!("no results folder at {}", dir.display()))?;
    let run: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run.json"))
            .with_context(|| format!("{} has no run.json", dir.display()))?,
    )
    .with_context(|| format!("{}/run.json is malformed", dir.display()))?;
    let field = |name: &str| run.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
    let profile = field("profile").with_context(|| format!("{}/run.json has no profile", dir.display()))?;
    let preset = field("preset").with_context(|| format!("{}/run.json has no preset", dir.display()))?;
    let id = field("run_id")
        .unwrap_or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let rows: Vec<SummaryRow> = results::read_csv(&dir.join("summary.csv"))?;
    let capacity_path = dir.join("capacity.csv");
    let capacity: Vec<results::CapacityRow> =
        if capacity_path.exists() { results::read_csv(&capacity_path)? } else { Vec::new() };
    let saturation_path = dir.join("saturation.csv");
    let saturation: Vec<SummaryRow> =
        if saturation_path.exists() { results::read_csv(&saturation_path)? } else { Vec::new() };
    let measured = Measured { flash: &rows, capacity: &capacity, saturation: &saturation };
    judge(measured, &RunFolder { id, path: PathBuf::from(&dir) }, baseline, &profile, &preset, false)
}

/// The gate's verdict for people.
pub fn describe_gate(report: &GateReport) -> String {
    let mut lines = vec![format!("gate: {}", if report.passed { "passed" } else { "FAILED" })];
    for run in &report.invalid {
        lines.push(format!("  invalid: {} repetition {}: {:?}", run.strategy, run.repetition, run.anomalies));
    }
    if let Some(metric) = report.metric {
        lines.push(format!("  ratios of {} over {}", metric.as_str(), gate::DENOMINATOR));
    }
    if let Some(note) = &report.note {
        lines.push(format!("  note: {note}"));
    }
    for run in &report.degraded {
        lines.push(format!(
            "  degraded: {} repetition {}: {} server errors ({:.2} % of its requests)",
            run.strategy,
            run.repetition,
            run.server_errors,
            run.share * 100.0
        ));
    }
    for ratio in &report.ratios {
        let against = match (ratio.baseline, ratio.floor) {
            (Some(baseline), Some(floor)) => format!("baseline {baseline:.3}, floor {floor:.3}"),
            _ => "not gated, no baseline".to_owned(),
        };
        lines.push(format!(
            "  {:<16} {:.3}× memory ({against}){}",
            ratio.strategy,
            ratio.measured,
            if ratio.passed { "" } else { "  ← below the floor" }
        ));
    }
    if let Some(skipped) = &report.skipped {
        lines.push(format!("  ratios skipped: {skipped}"));
    }
    lines.join("\n")
}
