//! `capacity.csv` and `capacity_steps.csv`: the highest offered rate each strategy sustained, and
//! every probe of the search that found it (`results/README.md`).

use serde::{Deserialize, Serialize};

use super::files::CsvRow;

/// One row of `capacity.csv`: a strategy's sustainable capacity in one repetition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityRow {
    pub run_id: String,
    pub strategy: String,
    pub repetition: u32,
    pub safe: bool,
    /// The latency objective a probe's p99 had to meet.
    pub slo_ms: f64,
    /// Seconds each probe offered load for.
    pub probe_secs: f64,
    /// The highest offered rate the load generator sustains; the search never goes above it.
    pub cap_rps: f64,
    /// The highest offered rate that passed; 0 when none did.
    pub capacity_rps: f64,
    /// `true` when the probe at `cap_rps` passed: the capacity is at least `capacity_rps`, and the
    /// figure says more about the load generator than the strategy.
    pub at_least: bool,
    /// The lowest offered rate that failed; empty when none did.
    pub first_fail_rps: Option<f64>,
    /// Acknowledged units per second in the passing probe at `capacity_rps`.
    pub sales_per_sec: f64,
    /// Answers per second in that probe.
    pub achieved_rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Probes in the search, warm-up excluded.
    pub steps: u32,
}

/// Why a search probed a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Doubling from the start rate until a probe fails.
    Ramp,
    /// Halving below the start rate because it failed.
    Descend,
    /// Between the last pass and the first fail.
    Bisect,
    /// Stepping from the last known capacity (an earlier run's) up while probes pass or down while
    /// they fail, by a step that doubles each time.
    Near,
}

impl Phase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ramp => "ramp",
            Self::Descend => "descend",
            Self::Bisect => "bisect",
            Self::Near => "near",
        }
    }
}

/// One row of `capacity_steps.csv`: one probe of one search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityStepRow {
    pub run_id: String,
    pub strategy: String,
    pub repetition: u32,
    /// 1-based, in the order the probes ran.
    pub step: u32,
    pub phase: Phase,
    pub offered_rps: f64,
    pub passed: bool,
    pub sent: u64,
    pub answered: u64,
    pub confirmed: u64,
    pub pending: u64,
    pub sold_out: u64,
    pub errors: u64,
    pub unsent: u64,
    pub late: u64,
    pub achieved_rps: f64,
    pub sales_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Time waited after the probe for a queueing strategy to persist what it accepted.
    pub drain_ms: f64,
    /// Why the probe failed (`p99 140 ms > 100 ms; 12 unsent`); empty when it passed.
    pub failure: String,
}

impl CsvRow for CapacityRow {
    const COLUMNS: &'static [&'static str] = &[
        "run_id",
        "strategy",
        "repetition",
        "safe",
        "slo_ms",
        "probe_secs",
        "cap_rps",
        "capacity_rps",
        "at_least",
        "first_fail_rps",
        "sales_per_sec",
        "achieved_rps",
        "p50_ms",
        "p99_ms",
        "steps",
    ];
}

impl CsvRow for CapacityStepRow {
    const COLUMNS: &'static [&'static str] = &[
        "run_id",
        "strategy",
        "repetition",
        "step",
        "phase",
        "offered_rps",
        "passed",
        "sent",
        "answered",
        "confirmed",
        "pending",
        "sold_out",
        "errors",
        "unsent",
        "late",
        "achieved_rps",
        "sales_per_sec",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "drain_ms",
        "failure",
    ];
}
