//! Sustainable capacity per strategy (`bench capacity`, and the first step of `bench compare`):
//! the highest open-model rate a strategy sustains with p99 from the intended send time within
//! `--slo-ms`, every due request sent, and every answer a sale.
//!
//! - [`search`]: ramp up, then bisect, on any pass/fail function.
//! - [`probe`]: one probe against the real server (reset, load, drain, judge).
//! - [`generator`]: the load generator's own ceiling, which caps every search.
//! - [`hints`]: an earlier run's capacities, where each search starts when there is one.
//! - `command`: `bench capacity`, the searches on their own with a run folder of their own.
//!
//! Capacity probes buy one product reset before each probe with twice the stock the probe can
//! ask for, so each measures sales, never sold-out answers. They are not audited: the flash sale
//! that follows is.

mod command;
pub mod generator;
pub mod hints;
pub mod probe;
pub mod search;

use std::time::Duration;

use clap::Args;

pub use command::{CapacityFlags, CapacityReport, Catalogue, run};

use super::server::Server;
use crate::run_folder::{CapacityRow, CapacityStepRow, RunFolder, StrategyInfo};
use hints::Hints;
use probe::ProbeShape;
use search::{Found, SearchPlan};

/// The search's flags, shared by `bench capacity` and `bench compare`.
#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// The latency objective: a probe passes when its p99, from each request's intended send
    /// time, is at most this many milliseconds (and nothing is unsent, failed or sold out).
    #[arg(long, default_value_t = 100)]
    pub slo_ms: u64,
    /// Seconds each capacity probe offers load for [default: 2; compare --preset ci: 1].
    #[arg(long)]
    pub probe_secs: Option<f64>,
    /// The first rate probed, requests per second; doubled while probes pass, halved while they
    /// fail [default: 1000; compare --preset ci: 500].
    #[arg(long)]
    pub start_rate: Option<f64>,
    /// Never probe above this rate, requests per second (the measured load generator ceiling
    /// lowers it further).
    #[arg(long, default_value_t = 64_000.0)]
    pub max_rate: f64,
    /// Bisection stops once the first failing rate is within this fraction above the last
    /// passing one [default: 0.1; compare --preset ci: 0.25].
    #[arg(long)]
    pub resolution: Option<f64>,
    /// Bisection stops after this many probes whatever the resolution [default: 3; compare
    /// --preset ci: 2].
    #[arg(long)]
    pub max_bisections: Option<u32>,
    /// The load generator's ceiling, requests per second, instead of measuring it against a null
    /// server first.
    #[arg(long)]
    pub generator_cap: Option<f64>,
    /// Seconds of unjudged load at the start rate before each strategy's search (connections,
    /// caches, scripts).
    #[arg(long, default_value_t = 0.5)]
    pub warmup_secs: f64,
    /// Ramp every search up from the start rate instead of starting near the capacities of the
    /// last run (`<out>/latest`, when it searched with the same build profile, objective, probe
    /// length and connections).
    #[arg(long)]
    pub fresh_search: bool,
}

/// How fine a search is by default: the full one, or the short one CI can afford.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Full,
    Short,
}

/// Everything a capacity search needs, defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub search: SearchPlan,
    pub shape: ProbeShape,
    pub warmup: Duration,
    /// `None`: measure the generator's ceiling first.
    pub generator_cap: Option<f64>,
    /// Where searches start; empty: from `search.start`.
    pub hints: Hints,
}

impl Settings {
    /// The settings as `run.json` records them.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "slo_ms": self.shape.slo.as_millis(),
            "probe_secs": self.shape.probe.as_secs_f64(),
            "start_rate": self.search.start,
            "max_rate": self.search.cap,
            "resolution": self.search.resolution,
            "max_bisections": self.search.max_bisections,
            "generator_cap": self.generator_cap,
            "warmup_secs": self.warmup.as_secs_f64(),
            "connections": self.shape.connections,
            "product": self.shape.product,
            "regular_weight": self.shape.regulars.weight,
            "products": self.shape.regulars.products,
            "catalogue": if self.shape.keep_catalogue { "existing" } else { "fresh" },
            "started_near": self.hints.from,
        })
    }
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{flag} must be a positive number, got {value}"))
}

impl CapacityArgs {
    /// The settings for probes of `product` over `connections` connections.
    ///
    /// # Errors
    /// When a number makes no search.
    pub fn settings(
        &self,
        depth: Depth,
        product: i64,
        connections: usize,
        drain_limit: Duration,
    ) -> anyhow::Result<Settings> {
        // Full: about 7 probes of 2 s per strategy, so twelve strategies take about 3.5 minutes.
        let (probe_secs, start, resolution, max_bisections) = match depth {
            Depth::Full => (2.0, 1_000.0, 0.1, 3),
            Depth::Short => (1.0, 500.0, 0.25, 2),
        };
        let start = self.start_rate.unwrap_or(start);
        let probe = seconds(self.probe_secs.unwrap_or(probe_secs), "--probe-secs")?;
        anyhow::ensure!(!probe.is_zero(), "--probe-secs must be above 0");
        anyhow::ensure!(self.slo_ms > 0, "--slo-ms must be above 0");
        anyhow::ensure!(connections >= 1, "--connections must be at least 1");
        let search = SearchPlan {
            start,
            cap: self.generator_cap.map_or(self.max_rate, |cap| cap.min(self.max_rate)),
            floor: (start / 32.0).max(1.0),
            resolution: self.resolution.unwrap_or(resolution),
            max_bisections: self.max_bisections.unwrap_or(max_bisections),
            hint: None,
        };
        search.validate()?;
        Ok(Settings {
            search,
            shape: ProbeShape {
                product,
                connections,
                probe,
                slo: Duration::from_millis(self.slo_ms),
                drain_limit,
                regulars: probe::Regulars::default(),
                keep_catalogue: false,
            },
            warmup: seconds(self.warmup_secs, "--warmup-secs")?,
            generator_cap: self.generator_cap,
            hints: Hints::default(),
        })
    }

    /// [`CapacityArgs::settings`], starting near the capacities of `<out>/latest` unless
    /// `--fresh-search`.
    ///
    /// # Errors
    /// When a number makes no search.
    pub fn settings_near_last(
        &self,
        depth: Depth,
        product: i64,
        connections: usize,
        drain_limit: Duration,
        out: &std::path::Path,
    ) -> anyhow::Result<Settings> {
        let mut settings = self.settings(depth, product, connections, drain_limit)?;
        settings.hints = Hints::latest(out, self.fresh_search, &settings);
        Ok(settings)
    }
}

/// What the capacity step of a run produced.
#[derive(Debug, Default)]
pub struct Collected {
    pub rows: Vec<CapacityRow>,
    pub steps: Vec<CapacityStepRow>,
}

impl Collected {
    /// Writes `capacity.csv` and `capacity_steps.csv`.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn write(&self, folder: &RunFolder) -> anyhow::Result<()> {
        crate::run_folder::write_csv(&folder.file("capacity.csv"), &self.rows)?;
        crate::run_folder::write_csv(&folder.file("capacity_steps.csv"), &self.steps)
    }
}

/// The search's cap: the generator's measured ceiling (or `--generator-cap`), never above
/// `--max-rate`.
///
/// # Errors
/// When the null server cannot start.
pub async fn generator_cap(settings: &Settings) -> anyhow::Result<f64> {
    if let Some(cap) = settings.generator_cap {
        return Ok(settings.search.cap.min(cap));
    }
    // A coarser, shorter search: the cap only needs to be safe, not exact.
    let plan = SearchPlan {
        resolution: 0.2,
        max_bisections: 3,
        hint: settings.hints.generator.map(|cap| cap.min(settings.search.cap)),
        ..settings.search
    };
    let shape =
        ProbeShape { probe: Duration::from_secs(1).min(settings.shape.probe), ..settings.shape.clone() };
    let found = generator::ceiling(&plan, &shape).await?;
    let cap = found.capacity.unwrap_or(settings.search.start);
    eprintln!(
        "[capacity · load generator] sustains {}{cap:.0}/s against a null server: searches stop there",
        if found.at_least { "at least " } else { "" }
    );
    Ok(cap)
}

/// Searches the capacity of each strategy of `order` in turn (repetition `repetition`), adding
/// rows to `collected` as each search ends.
///
/// # Errors
/// When an admin call or a probe fails; the searches done so far are in `collected`.
pub async fn measure(
    server: &Server,
    order: &[StrategyInfo],
    settings: &Settings,
    cap: f64,
    run_id: &str,
    repetition: u32,
    collected: &mut Collected,
) -> anyhow::Result<()> {
    for strategy in order {
        let name = strategy.name.as_str();
        let shown = strategy.label();
        let plan = SearchPlan { cap, hint: settings.hints.for_strategy(&shown), ..settings.search };
        let label = format!("[capacity · {shown}]");
        if !settings.warmup.is_zero() {
            let warmup = ProbeShape { probe: settings.warmup, ..settings.shape.clone() };
            let rate = plan.start.min(cap);
            probe::probe(Some(server), &server.target, name, &warmup, rate, &format!("{label} warm-up"))
                .await?;
        }
        let mut measured = Vec::new();
        let found = search::search(&plan, async |rate, _phase| {
            let step_label = format!("{label} {rate:.0}/s");
            let probe =
                probe::probe(Some(server), &server.target, name, &settings.shape, rate, &step_label).await?;
            eprintln!("{step_label}: {}", probe.summary());
            let passed = probe.failure.is_none();
            measured.push(probe);
            Ok((passed, measured.len() - 1))
        })
        .await?;
        eprintln!("{label} capacity {}", headline(&found, &measured));
        for (step, tried) in (1u32..).zip(&found.steps) {
            collected.steps.push(measured[tried.probe].row(
                run_id,
                &shown,
                repetition,
                step,
                tried.phase,
                tried.rate,
                tried.passed,
            ));
        }
        collected.rows.push(row(&found, &measured, settings, cap, run_id, strategy, repetition));
    }
    Ok(())
}

fn headline(found: &Found<usize>, measured: &[probe::Measured]) -> String {
    match found.at_capacity() {
        Some(step) => {
            let probe = &measured[step.probe];
            format!(
                "{}{:.0}/s ({:.0} sales/s, p50 {:.1} ms, p99 {:.1} ms){}",
                if found.at_least { "≥ " } else { "" },
                step.rate,
                probe.record.sales_per_sec(),
                probe.p50_ms().unwrap_or_default(),
                probe.p99_ms().unwrap_or_default(),
                if found.at_least { ": the load generator's ceiling, not the strategy's" } else { "" },
            )
        }
        None => format!("below {:.0}/s: no probe passed", found.lowest_tried().unwrap_or_default()),
    }
}

fn row(
    found: &Found<usize>,
    measured: &[probe::Measured],
    settings: &Settings,
    cap: f64,
    run_id: &str,
    strategy: &StrategyInfo,
    repetition: u32,
) -> CapacityRow {
    let at = found.at_capacity().map(|step| &measured[step.probe]);
    CapacityRow {
        run_id: run_id.to_owned(),
        strategy: strategy.label(),
        repetition,
        safe: strategy.safe,
        slo_ms: settings.shape.slo.as_secs_f64() * 1e3,
        probe_secs: settings.shape.probe.as_secs_f64(),
        cap_rps: cap,
        capacity_rps: found.capacity.unwrap_or(0.0),
        at_least: found.at_least,
        first_fail_rps: found.first_fail,
        sales_per_sec: at.map_or(0.0, |probe| probe.record.sales_per_sec()),
        achieved_rps: at.map_or(0.0, |probe| probe.record.achieved_rps()),
        p50_ms: at.and_then(probe::Measured::p50_ms),
        p99_ms: at.and_then(probe::Measured::p99_ms),
        steps: u32::try_from(found.steps.len()).unwrap_or(u32::MAX),
    }
}
