//! checkout-bench: a flash-sale checkout server hosting pluggable purchase strategies, and the
//! tools around it.
//!
//! - [`config`]: flags and env vars shared by the binaries.
//! - [`app`]: the application state handlers share.
//! - [`http`]: the router and the HTTP contract.
//! - [`stats`]: per-strategy counters and latency histograms.
//! - [`audit`]: reconciles stock with orders after a run.
//! - [`populate`]: bulk-loads a catalogue at the seed's scale.
//! - [`server`]: serving with graceful shutdown.
//! - [`sessions`]: buyer sessions in their own Redis database.
//! - [`report`]: charts, a page and a Markdown table from a results folder; run comparisons.
//!
//! The strategies themselves live in the `checkout-strategies` crate.

pub mod app;
pub mod audit;
pub mod config;
pub mod http;
pub mod populate;
pub mod report;
pub mod server;
pub mod sessions;
pub mod stats;
