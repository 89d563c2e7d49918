//! `server`: the checkout HTTP server, and `server populate` to bulk-load a catalogue.

use anyhow::Context;
use checkout_bench::app::{App, AppConfig, AppState};
use checkout_bench::config::{BackendArgs, ServeArgs};
use checkout_bench::populate::{self, PopulateArgs};
use checkout_strategies::{Backends, StockPlan, backends};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Flash-sale checkout server: every purchase strategy behind one HTTP contract.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    backends: BackendArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bulk-load products (and optionally orders) through COPY, then exit.
    Populate {
        #[command(flatten)]
        backends: BackendArgs,
        #[command(flatten)]
        args: PopulateArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let backend_args = match &cli.command {
        Some(Command::Populate { backends, .. }) => backends,
        None => &cli.backends,
    };
    backends::prepare_database(&backend_args.database_url)
        .await
        .with_context(|| format!("cannot prepare the database at {}", backend_args.database_url))?;
    let pg = backends::pg_pool(&backend_args.database_url, backend_args.pg_settings())
        .context("invalid DATABASE_URL")?;
    if let Some(Command::Populate { args, .. }) = &cli.command {
        populate::run(&pg, args).await?;
        return Ok(());
    }
    let redis = backend_args.redis_backend().context("invalid REDIS_URL")?;
    let backends = Backends { pg, redis, tuning: cli.serve.tuning() };
    let config = AppConfig {
        admin_token: cli.serve.admin_token.clone(),
        request_timeout: std::time::Duration::from_millis(cli.serve.request_timeout_ms),
    };
    checkout_bench::http::prometheus();
    let app = App::load(&backends, config, StockPlan::flash_sale(cli.serve.default_products)).await?;
    let listener = tokio::net::TcpListener::bind(cli.serve.bind)
        .await
        .with_context(|| format!("cannot listen on {}", cli.serve.bind))?;
    tracing::info!(addr = %listener.local_addr()?, "checkout server listening");
    checkout_bench::server::run(
        listener,
        AppState(std::sync::Arc::new(app)),
        checkout_bench::server::shutdown_signal(),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}
