//! checkout-bench: a flash-sale checkout server hosting pluggable purchase strategies, and the
//! tools around it.
//!
//! - [`bench`]: the comparison `bench` runs: reset, load, drain, audit, results folder, gate.
//! - [`config`]: flags and env vars shared by the binaries.
//! - [`app`]: the application state handlers share.
//! - [`admission`]: how many purchases may be in flight per backend; the rest are refused at once.
//! - [`http`]: the router and the HTTP contract.
//! - [`stats`]: per-strategy counters and latency histograms.
//! - [`audit`]: reconciles stock with orders after a run.
//! - [`loadgen`]: the load generator behind `bench`: schedule, client, what clients were told.
//! - [`populate`]: bulk-loads a catalogue at the seed's scale.
//! - [`server`]: serving with graceful shutdown.
//! - [`server_cli`]: the `server` command line, which `bench` also runs as its child.
//! - [`sessions`]: buyer sessions in their own Redis database.
//! - [`run_folder`]: a run folder's schema, written by `bench` and read by `report`.
//! - [`report`]: charts, a page and a Markdown table from a results folder; run comparisons.
//!
//! The strategies themselves live in the `checkout-strategies` crate.

pub mod admission;
pub mod app;
pub mod audit;
pub mod bench;
pub mod config;
pub mod http;
pub mod loadgen;
pub mod populate;
pub mod report;
pub mod run_folder;
pub mod server;
pub mod server_cli;
pub mod sessions;
pub mod stats;
