//! A run folder's schema (`results/README.md`): the types `bench` writes and `report` reads. Both
//! depend on this module and neither on the other's internals, so every arrow points one way:
//! `bench` → `report` → `run_folder` ← `bench`.
//!
//! - [`files`]: the folder, its CSV rows and histograms.
//! - [`meta`](mod@meta): `run.json`.
//! - [`anomalies`]: what a run's join found.
//! - [`ceilings`]: raw backend ceilings measured beside the strategies, and the ratios to them.
//! - [`capacity`]: the sustainable capacity per strategy and the search behind it.
//! - [`scale`]: capacity on catalogues of different sizes (`bench scale`).
//! - [`spread`]: median and range over repetitions.
//! - [`strategy_info`]: a strategy as the folder records it.

pub mod anomalies;
pub mod capacity;
pub mod ceilings;
pub mod files;
pub mod meta;
pub mod scale;
pub mod spread;
pub mod strategy_info;

pub use anomalies::Anomalies;
pub use capacity::{CapacityRow, CapacityStepRow, Phase};
pub use files::{
    ANOMALIES, CsvRow, ErrorRow, LatencyRow, Outcome, PERCENTILES, RunFolder, RunKey, Settlement, SummaryRow,
    TimeseriesRow, Verdict, read_csv, server_errors, write_csv, write_hgrm,
};
pub use meta::RunMeta;
pub use scale::ScaleRow;
pub use spread::{Spread, medians_by_strategy};
pub use strategy_info::StrategyInfo;

/// The strategy every same-run ratio is taken over: the in-process baseline.
pub const DENOMINATOR: &str = "memory";
