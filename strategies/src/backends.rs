//! Connections the strategies share, and how they are opened.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres};

use crate::MIGRATOR;

/// Everything a strategy may talk to, built once and cloned into each strategy.
#[derive(Debug, Clone)]
pub struct Backends {
    pub pg: PgPool,
    pub tuning: Tuning,
}

/// Knobs that change how strategies behave, not where they connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Pause of `sql-naive` between reading the stock and writing it. Zero in production; tests
    /// widen it to make the race it loses certain rather than likely.
    pub naive_race_window: Duration,
    /// How often `sql-for-update` runs a transaction again after a deadlock or serialization failure.
    pub conflict_retries: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self { naive_race_window: Duration::ZERO, conflict_retries: 3 }
    }
}

/// A pooled connection idle longer than this is pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_millis(100);

/// How the PostgreSQL pool behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgSettings {
    /// Connections, opened up front. Small on purpose: the hot row serialises writers anyway, and
    /// more connections queue on its lock instead of in the pool.
    pub connections: u32,
    /// Longest wait for a free connection before answering 503.
    pub acquire_timeout: Duration,
    /// Longest a single statement may run before PostgreSQL cancels it (and the client gets 503).
    pub statement_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            connections: 8,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// Builds a pool that connects on first use, so a server whose database is down still starts
/// and answers 503 instead of refusing connections.
///
/// # Errors
/// When `url` is not a PostgreSQL URL.
pub fn pg_pool(url: &str, settings: PgSettings) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(pg_pool_with(options, settings))
}

/// [`pg_pool`] from parsed options (tests hand these over).
pub fn pg_pool_with(options: PgConnectOptions, settings: PgSettings) -> PgPool {
    let statement_timeout = format!("{}ms", settings.statement_timeout.as_millis());
    let options = options.options([("statement_timeout", statement_timeout.as_str())]);
    PgPoolOptions::new()
        .max_connections(settings.connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        // A ping per checkout costs a round trip on every purchase. Under load connections are
        // never idle long, so only one that sat unused (and may have died with a network blip)
        // is pinged before it is handed out.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options)
}

/// Creates the database when it is missing and applies every migration.
///
/// # Errors
/// When PostgreSQL cannot be reached or a migration fails.
pub async fn prepare_database(url: &str) -> Result<(), sqlx::Error> {
    if !Postgres::database_exists(url).await? {
        Postgres::create_database(url).await?;
    }
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}
