//! The in-memory run every output is drawn from, field for field the schema in
//! `results/README.md`, so a bench results folder and Locust output render the same way.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Where a run's figures came from; Locust output carries no server audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A `bench compare` results folder.
    Bench,
    /// Locust's `--csv` and/or `--json-file` output.
    Locust,
}

impl Origin {
    /// Whether the anomaly columns come from a server audit (Locust's output has none).
    #[must_use]
    pub const fn audited(self) -> bool {
        matches!(self, Self::Bench)
    }
}

/// One results folder, loaded.
#[derive(Debug, Clone)]
pub struct Run {
    /// The folder name (`run_id` in `run.json`).
    pub id: String,
    pub origin: Origin,
    /// `run.json`; absent for Locust output.
    pub meta: Option<RunMeta>,
    pub summary: Vec<SummaryRow>,
    pub timeseries: Vec<TimeseriesRow>,
    pub latency: Vec<LatencyRow>,
    pub errors: Vec<ErrorRow>,
    /// `gate.json`, when the gate ran.
    pub gate: Option<Gate>,
}

impl Run {
    /// Strategy names in the order the run declared them (`run.json`), else first appearance.
    #[must_use]
    pub fn strategies(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.meta.iter().flat_map(|meta| meta.strategies.iter().map(|s| s.name.clone())).collect();
        for row in &self.summary {
            if !names.contains(&row.strategy) {
                names.push(row.strategy.clone());
            }
        }
        names.retain(|name| self.summary.iter().any(|row| &row.strategy == name));
        names
    }
}

/// `run.json`: what was run, where, with which versions.
#[derive(Debug, Clone, Deserialize)]
pub struct RunMeta {
    pub run_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub git: GitInfo,
    pub versions: BTreeMap<String, String>,
    pub host: HostInfo,
    pub profile: String,
    pub preset: String,
    pub command: String,
    pub options: serde_json::Value,
    pub strategies: Vec<StrategyInfo>,
    pub repetition_order: Vec<Vec<String>>,
    pub server: ServerInfo,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GitInfo {
    pub sha: String,
    pub short_sha: String,
    pub dirty: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub cpus: u32,
    pub os: String,
    pub arch: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StrategyInfo {
    pub name: String,
    pub backend: String,
    pub safe: bool,
    pub durable: bool,
    #[serde(rename = "async")]
    pub is_async: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerInfo {
    pub url: String,
    pub spawned: bool,
}

/// `gate.json`: only the parts the page shows.
#[derive(Debug, Clone, Deserialize)]
pub struct Gate {
    pub passed: bool,
    #[serde(default)]
    pub skipped: Option<String>,
}

/// Outcome of a strategy's run as `summary.csv` states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Clean,
    Flagged,
    Invalid,
}

impl Verdict {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Flagged => "flagged",
            Self::Invalid => "invalid",
        }
    }
}

/// One row of `summary.csv`: one strategy × repetition.
#[derive(Debug, Clone, Deserialize)]
pub struct SummaryRow {
    pub run_id: String,
    pub strategy: String,
    pub repetition: u32,
    pub position: u32,
    pub safe: bool,
    pub model: String,
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub sent: u64,
    pub answered: u64,
    pub confirmed: u64,
    pub pending: u64,
    pub sold_out: u64,
    pub errors: u64,
    pub late: u64,
    pub unsent: u64,
    pub duration_ms: f64,
    pub sales_per_sec: f64,
    pub time_to_sell_out_ms: Option<f64>,
    pub first_sold_out_ms: Option<f64>,
    pub hot_stock: i64,
    pub final_stock: i64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub sold_out_p50_ms: Option<f64>,
    pub sold_out_p99_ms: Option<f64>,
    pub oversold: u64,
    pub undersold: u64,
    pub lost: u64,
    pub phantom: u64,
    pub duplicated: u64,
    pub accepted_then_cancelled: u64,
    pub redis_drift: u64,
    pub drain_ms: f64,
    pub settled: bool,
    pub verdict: Verdict,
}

/// The anomaly columns of `summary.csv`, in the order the charts and tables show them.
pub const ANOMALIES: [&str; 7] =
    ["oversold", "undersold", "lost", "phantom", "duplicated", "accepted_then_cancelled", "redis_drift"];

impl SummaryRow {
    /// The anomaly counts, in [`ANOMALIES`] order.
    #[must_use]
    pub const fn anomalies(&self) -> [u64; 7] {
        [
            self.oversold,
            self.undersold,
            self.lost,
            self.phantom,
            self.duplicated,
            self.accepted_then_cancelled,
            self.redis_drift,
        ]
    }

    /// Seconds the run lasted; rates per second divide by this.
    #[must_use]
    pub fn duration_secs(&self) -> f64 {
        self.duration_ms / 1000.0
    }
}

/// One row of `timeseries.csv`: one 100 ms window of one strategy × repetition.
#[derive(Debug, Clone, Deserialize)]
pub struct TimeseriesRow {
    pub strategy: String,
    pub repetition: u32,
    pub t_ms: f64,
    pub sent: u64,
    pub confirmed: u64,
    pub pending: u64,
    pub sold_out: u64,
    pub errors: u64,
    /// Always present in a bench folder; Locust output does not know the stock.
    pub units_left: Option<i64>,
}

/// `latency.csv`'s `outcome` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    SoldOut,
}

/// One row of `latency.csv`.
#[derive(Debug, Clone, Deserialize)]
pub struct LatencyRow {
    pub strategy: String,
    pub repetition: u32,
    pub outcome: Outcome,
    pub percentile: f64,
    pub latency_ms: f64,
    pub count: u64,
}

/// One row of `errors.csv`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorRow {
    pub strategy: String,
    pub repetition: u32,
    pub kind: String,
    pub count: u64,
}
