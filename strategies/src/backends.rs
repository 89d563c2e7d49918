//! Connections the strategies share, and how they are opened.

use std::str::FromStr;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres};

use crate::MIGRATOR;
use crate::pg_driver::PurchasePool;
use crate::redis_keys::RedisKeys;

/// Everything a strategy may talk to, built once and cloned into each strategy.
#[derive(Debug, Clone)]
pub struct Backends {
    pub pg: PgPool,
    pub redis: RedisBackend,
    pub tuning: Tuning,
    /// Where the per-sale SQL strategies run their purchase (`PG_DRIVER`); `pg` unless another
    /// driver was chosen.
    pub purchases: PurchasePool,
}

impl Backends {
    /// Backends whose purchases run on `pg` itself (the sqlx driver).
    pub fn new(pg: PgPool, redis: RedisBackend, tuning: Tuning) -> Self {
        let purchases = PurchasePool::Sqlx(pg.clone());
        Self { pg, redis, tuning, purchases }
    }

    /// The same backends with purchases on `purchases`.
    #[must_use]
    pub fn with_purchases(self, purchases: PurchasePool) -> Self {
        Self { purchases, ..self }
    }
}

/// Redis, as request traffic reaches it: one multiplexed, self-reconnecting connection cloned into
/// every handler (a per-call pool measured 3–15× slower on a hot key), every call bounded by a
/// response timeout.
#[derive(Debug, Clone)]
pub struct RedisBackend {
    /// Shared by all request traffic. Never use it for blocking commands or MULTI.
    pub conn: ConnectionManager,
    /// Opens dedicated connections (stream consumers, which block).
    pub client: redis::Client,
    pub keys: RedisKeys,
    pub settings: RedisSettings,
}

/// How Redis connections behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisSettings {
    /// Longest wait for one reply before the call fails (503).
    pub response_timeout: Duration,
    /// Longest wait for a connection to open.
    pub connect_timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self { response_timeout: Duration::from_secs(2), connect_timeout: Duration::from_secs(1) }
    }
}

impl RedisBackend {
    /// A backend that connects on first use, so a server whose Redis is down still starts and
    /// answers 503 for the Redis strategies.
    ///
    /// # Errors
    /// When `url` is not a Redis URL.
    pub fn lazy(url: &str, keys: RedisKeys, settings: RedisSettings) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.response_timeout))
            .set_connection_timeout(Some(settings.connect_timeout))
            // Fail fast while Redis is down instead of retrying inside a request.
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self { conn, client, keys, settings })
    }

    /// A dedicated connection whose replies may take up to `response_timeout` (blocking reads
    /// set it above their BLOCK time).
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub async fn dedicated(
        &self,
        response_timeout: Duration,
    ) -> Result<redis::aio::MultiplexedConnection, redis::RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(self.settings.connect_timeout));
        self.client.get_multiplexed_async_connection_with_config(&config).await
    }
}

/// Knobs that change how strategies behave, not where they connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Pause of `sql-naive` between reading the stock and writing it. Zero in production; tests
    /// widen it to make the race it loses certain rather than likely.
    pub naive_race_window: Duration,
    /// How often `sql-for-update` runs a transaction again after a deadlock or serialization failure.
    pub conflict_retries: u32,
    /// How long a Redis reservation may wait for its order's commit before the sweeper settles it.
    pub reservation_ttl: Duration,
    /// Most purchases one commit of `sql-coalesce` or `redis-orderlog` carries.
    pub coalesce_max_batch: usize,
    /// How often `sql-optimistic` tries its compare-and-swap again after another buyer changed the
    /// row, before answering 409 `contention`.
    pub optimistic_retries: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            naive_race_window: Duration::ZERO,
            conflict_retries: 3,
            reservation_ttl: Duration::from_secs(30),
            coalesce_max_batch: 256,
            optimistic_retries: 8,
        }
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
