//! The `server` command line: serve the API with the stream worker beside it (the default),
//! `worker` to run stream workers (and the broker consumer) alone, `populate` to bulk-load a catalogue. The `server` binary
//! is this and nothing else; `bench` runs the same command as a child process when it starts its
//! own server.

use anyhow::Context;
use checkout_strategies::background::{self, BackgroundSettings};
use checkout_strategies::reservation::SweeperSettings;
use checkout_strategies::stock_sync::StockSyncSettings;
use checkout_strategies::{
    Backends, CancellationToken, PgDriver, PurchasePool, RedisBackend, SqlBackend, SqlPool, StockPlan,
    StrategyKind, Tuning, backends,
};
use clap::{Parser, Subcommand};

use crate::app::{App, AppConfig, AppState};
use crate::config::{BackendArgs, ServeArgs, SessionArgs, WorkerArgs, WorkerSwitch};
use crate::populate::{self, PopulateArgs};

/// Flash-sale checkout server: every purchase strategy behind one HTTP contract.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
pub struct ServerCli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    backends: BackendArgs,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    sessions: SessionArgs,
    #[command(flatten)]
    worker_switch: WorkerSwitch,
    #[command(flatten)]
    worker: WorkerArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bulk-load products (and optionally orders) through COPY, then exit.
    Populate {
        #[command(flatten)]
        backends: BackendArgs,
        #[command(flatten)]
        args: PopulateArgs,
    },
    /// Run the stream workers and the broker consumer alone until Ctrl-C or SIGTERM; several may run
    /// side by side.
    Worker {
        #[command(flatten)]
        backends: BackendArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    },
}

/// Runs what the command line asks for: serve (the default), `populate` or `worker`.
///
/// # Errors
/// When a backend cannot be prepared or reached, or serving fails.
pub async fn run(cli: ServerCli) -> anyhow::Result<()> {
    let backend_args = match &cli.command {
        Some(Command::Populate { backends, .. } | Command::Worker { backends, .. }) => backends,
        None => &cli.backends,
    };
    let sql_backend = SqlBackend::from_url(&backend_args.database_url).context("invalid DATABASE_URL")?;
    backends::prepare_database(&backend_args.database_url)
        .await
        .with_context(|| format!("cannot prepare the database at {}", backend_args.database_url))?;
    let books = SqlPool::open(&backend_args.database_url, backend_args.pg_settings())
        .context("invalid DATABASE_URL")?;
    if let Some(Command::Populate { args, .. }) = &cli.command {
        match &books {
            SqlPool::Postgres(pg) => populate::run(pg, args).await?,
            SqlPool::MySql(pool) => populate::run_mysql(pool, args).await?,
        };
        return Ok(());
    }
    let redis = backend_args.redis_backend().context("invalid REDIS_URL or REDIS_CLUSTER_NODES")?;
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    if let Some(Command::Worker { worker, .. }) = &cli.command {
        anyhow::ensure!(
            !background::jobs_on(sql_backend).is_empty(),
            "no strategy that runs on {sql_backend} has background work: a worker would do nothing"
        );
        let backends = backends_on(books, redis, Tuning::default()).with_nats(backend_args.nats_backend());
        let settings = BackgroundSettings {
            workers: Some(worker.settings()),
            sweeper: SweeperSettings::default(),
            stock_sync: StockSyncSettings::default(),
        };
        background::run(&backends, settings, stop).await.context("background work failed")?;
        return Ok(());
    }
    let backends = match books {
        SqlPool::Postgres(pg) => {
            let purchases = PurchasePool::open(
                cli.serve.pg_driver,
                &pg,
                &cli.backends.database_url,
                cli.backends.pg_settings(),
            )
            .context("DATABASE_URL is not a URL tokio-postgres reads")?;
            tracing::info!(driver = %purchases.driver(), "PostgreSQL client of the per-sale SQL strategies");
            Backends::new(pg, redis, cli.serve.tuning()).with_purchases(purchases)
        }
        SqlPool::MySql(pool) => {
            anyhow::ensure!(
                cli.serve.pg_driver == PgDriver::Sqlx,
                "--pg-driver {} chooses a PostgreSQL client; the database is {sql_backend}",
                cli.serve.pg_driver
            );
            let available: Vec<&str> =
                StrategyKind::ALL.into_iter().filter(|kind| sql_backend.runs(*kind)).map(|k| k.as_str()).collect();
            tracing::info!(database = %sql_backend, strategies = %available.join(", "), "strategies on this database; the others answer 501");
            Backends::on_mysql(pool, redis, cli.serve.tuning())
        }
    }
    .with_nats(backend_args.nats_backend());
    let config = AppConfig {
        admin_token: cli.serve.admin_token.clone(),
        request_timeout: std::time::Duration::from_millis(cli.serve.request_timeout_ms),
        sessions: cli.sessions.session_config(&cli.backends).context("invalid REDIS_URL")?,
        inflight: cli.serve.inflight_limits(cli.backends.pg_connections),
    };
    // `None` is no limit: the operator sees what overload will do before it happens.
    tracing::info!(limits = ?config.inflight, "most purchases in flight per backend");
    crate::http::prometheus();
    let app = App::load(&backends, config, StockPlan::flash_sale(cli.serve.default_products)).await?;
    let listener = tokio::net::TcpListener::bind(cli.serve.bind)
        .await
        .with_context(|| format!("cannot listen on {}", cli.serve.bind))?;
    tracing::info!(addr = %listener.local_addr()?, "checkout server listening");
    let state = AppState(std::sync::Arc::new(app));
    let worker = cli.worker_switch.enabled().then(|| cli.worker.settings());
    crate::server::serve_with_worker(listener, state, backends, worker, stop).await
}

/// Backends on `books` with default purchases (the sqlx pool of the books' own database).
fn backends_on(books: SqlPool, redis: RedisBackend, tuning: Tuning) -> Backends {
    match books {
        SqlPool::Postgres(pg) => Backends::new(pg, redis, tuning),
        SqlPool::MySql(pool) => Backends::on_mysql(pool, redis, tuning),
    }
}

async fn cancel_on_signal(stop: CancellationToken) {
    crate::server::shutdown_signal().await;
    stop.cancel();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        super::ServerCli::command().debug_assert();
    }

    #[test]
    fn a_worker_has_background_work_on_every_database() {
        use checkout_strategies::background::{Job, jobs_on};

        for database in checkout_strategies::SqlBackend::ALL {
            assert!(
                jobs_on(database).contains(&Job::ReservationSweeper),
                "{database}: the Redis strategies' reservations need their sweeper"
            );
        }
    }

    #[tokio::test]
    async fn an_unknown_database_scheme_names_the_accepted_ones() {
        use clap::Parser;

        let cli = super::ServerCli::try_parse_from(["server", "--database-url", "sqlite://shop.db"])
            .expect("valid flags");
        let err = format!("{:#}", super::run(cli).await.expect_err("not a supported database"));
        assert!(err.contains("postgres://") && err.contains("mariadb://"), "{err}");
    }

    #[test]
    fn inflight_limits_default_from_the_pool_and_zero_lifts_them() {
        use clap::Parser;

        use crate::admission::InflightLimits;
        let limits = |args: &[&str]| {
            let cli = super::ServerCli::try_parse_from(
                ["server", "--shed-load"].into_iter().chain(args.iter().copied()),
            )
            .expect("valid flags");
            cli.serve.inflight_limits(cli.backends.pg_connections)
        };
        let unshed = super::ServerCli::try_parse_from(["server", "--max-inflight-postgres", "3"])
            .expect("valid flags");
        if std::env::var_os("SHED_LOAD").is_none() {
            assert_eq!(
                unshed.serve.inflight_limits(8),
                InflightLimits::unlimited(),
                "no shedding unless asked for"
            );
        }
        let set = ["PG_CONNECTIONS", "MAX_INFLIGHT_POSTGRES", "MAX_INFLIGHT_REDIS", "MAX_INFLIGHT_MEMORY"];
        if set.iter().all(|name| std::env::var_os(name).is_none()) {
            assert_eq!(limits(&[]), InflightLimits::for_pool(8), "documented defaults");
            assert_eq!(limits(&["--pg-connections", "20"]).postgres, Some(80), "4 per pooled connection");
        }
        let explicit = limits(&[
            "--max-inflight-postgres",
            "3",
            "--max-inflight-redis",
            "0",
            "--max-inflight-memory",
            "7",
        ]);
        assert_eq!(explicit, InflightLimits { postgres: Some(3), redis: None, in_process: Some(7) });
        assert_eq!(limits(&["--max-inflight-postgres", "0"]).postgres, None, "0 is no limit");
        assert!(
            super::ServerCli::try_parse_from(["server", "--max-inflight-redis", "-1"]).is_err(),
            "a negative limit is refused"
        );
    }

    #[test]
    fn an_admin_token_that_cannot_be_sent_is_refused_at_start() {
        use clap::Parser;
        for bad in ["", "two words"] {
            assert!(super::ServerCli::try_parse_from(["server", "--admin-token", bad]).is_err(), "{bad:?}");
        }
        let cli = super::ServerCli::try_parse_from(["server", "--admin-token", "s3cret"]).expect("valid");
        assert_eq!(cli.serve.admin_token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn the_worker_runs_in_the_server_unless_switched_off() {
        use clap::Parser;
        let enabled = |args: &[&str]| {
            let args = std::iter::once("server").chain(args.iter().copied());
            super::ServerCli::try_parse_from(args).expect("valid flags").worker_switch.enabled()
        };
        if std::env::var_os("WORKER").is_none() {
            assert!(enabled(&[]), "on by default");
        }
        assert!(enabled(&["--worker"]));
        assert!(!enabled(&["--no-worker"]));
        assert!(!enabled(&["--worker", "false"]));
        assert!(enabled(&["--no-worker", "--worker"]), "the last flag wins");
        assert!(!enabled(&["--worker", "--no-worker"]), "the last flag wins");
    }
}
