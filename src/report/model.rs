//! The in-memory run every output is drawn from, field for field the schema in
//! `results/README.md`, so a bench results folder and Locust output render the same way.

use serde::Deserialize;

/// Where a run's figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A `bench compare` results folder.
    Bench,
    /// Locust's `--csv` and/or `--json-file` output; `audited` when the server's audit was saved
    /// beside it (`<prefix>_audit.json`).
    Locust { audited: bool },
}

impl Origin {
    /// Whether the anomaly columns come from a server audit.
    #[must_use]
    pub const fn audited(self) -> bool {
        matches!(self, Self::Bench | Self::Locust { audited: true })
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
    /// `capacity.csv` and `capacity_steps.csv`; empty when the run had no capacity step.
    pub capacity: Vec<CapacityRow>,
    pub capacity_steps: Vec<CapacityStepRow>,
    /// `saturation.csv`: the flash sale once more for each strategy faster than it; `None` when
    /// the run had no saturation step.
    pub saturation: Option<Vec<SummaryRow>>,
    /// `gate.json`, when the gate ran.
    pub gate: Option<Gate>,
}

impl Run {
    /// Strategy names in the order the run declared them (`run.json`), else first appearance;
    /// only those with a flash-sale summary.
    #[must_use]
    pub fn strategies(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.meta.iter().flat_map(|meta| meta.strategies.iter().map(StrategyInfo::label)).collect();
        for row in &self.summary {
            if !names.contains(&row.strategy) {
                names.push(row.strategy.clone());
            }
        }
        names.retain(|name| self.summary.iter().any(|row| &row.strategy == name));
        names
    }
}

/// `gate.json`: only the parts the page shows.
#[derive(Debug, Clone, Deserialize)]
pub struct Gate {
    pub passed: bool,
    #[serde(default)]
    pub skipped: Option<String>,
    /// What the ratios divide (`capacity` or `sales_per_sec`); absent from older runs.
    #[serde(default)]
    pub metric: Option<String>,
    /// What a reader must know about the ratios (the sales/s fallback, a lower-bound denominator).
    #[serde(default)]
    pub note: Option<String>,
}

pub use crate::run_folder::{
    ANOMALIES, CapacityRow, CapacityStepRow, ErrorRow, LatencyRow, Outcome, RunMeta, StrategyInfo,
    SummaryRow, TimeseriesRow, Verdict,
};
