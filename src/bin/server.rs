//! `server`: the checkout HTTP server with the stream worker beside it, `server worker` to run
//! stream workers alone, and `server populate` to bulk-load a catalogue.

use checkout_bench::server_cli::{self, ServerCli};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    server_cli::run(ServerCli::parse()).await
}
