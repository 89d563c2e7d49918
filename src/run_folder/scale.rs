//! `scale.csv`: each strategy's capacity on catalogues of different sizes, and its ratio to the
//! first (`results/README.md`).

use serde::{Deserialize, Serialize};

use super::files::CsvRow;

/// One row of `scale.csv`: a strategy's capacity (median over repetitions) on one catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRow {
    pub run_id: String,
    pub strategy: String,
    /// Products in the catalogue (`server populate --products`).
    pub products: u64,
    /// Historical orders in the database (`server populate --orders`).
    pub orders: u64,
    /// Median `capacity_rps` of the capacity run on this catalogue; 0 when no probe passed.
    pub capacity_rps: f64,
    /// The capacity is the load generator's ceiling, not the strategy's.
    pub at_least: bool,
    /// `capacity_rps` over the same strategy's on the first catalogue; empty when that was 0.
    pub ratio: Option<f64>,
    /// The `bench capacity` run folder this row comes from.
    pub capacity_run: String,
}

impl CsvRow for ScaleRow {
    const COLUMNS: &'static [&'static str] =
        &["run_id", "strategy", "products", "orders", "capacity_rps", "at_least", "ratio", "capacity_run"];
}
