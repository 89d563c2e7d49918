//! Connections the strategies share, and how they are opened.

use std::str::FromStr;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ConnectionInfo, FromRedisValue, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use sqlx::migrate::MigrateDatabase;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, MySql, MySqlPool, PgPool, Postgres};

use crate::MIGRATOR;
use crate::dialect::SqlBackend;
use crate::error::StrategyError;
use crate::pg_driver::{PurchasePool, SqlPool};
use crate::queue_nats::{NatsBackend, NatsSettings};
use crate::redis_keys::RedisKeys;

/// Everything a strategy may talk to, built once and cloned into each strategy.
#[derive(Debug, Clone)]
pub struct Backends {
    /// PostgreSQL, when it holds the books: the strategies that run on PostgreSQL alone (and their
    /// background work) are built only then. `None` on another server ([`Backends::on_mysql`]).
    pub pg: Option<PgPool>,
    pub redis: RedisBackend,
    /// The NATS JetStream broker of `queue-nats`.
    pub nats: NatsBackend,
    pub tuning: Tuning,
    /// Where the per-sale SQL strategies run their purchase (`PG_DRIVER`); `pg` unless another
    /// driver was chosen.
    pub purchases: PurchasePool,
    /// Where the strategies ported to every dialect keep their books (replays, fences): `pg`
    /// on PostgreSQL.
    pub books: SqlPool,
}

/// Where `queue-nats` finds its broker unless told otherwise (`NATS_URL`).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

impl Backends {
    /// Backends whose purchases run on `pg` itself (the sqlx driver), with the local NATS broker
    /// under Redis's key prefix (it connects on first use only).
    pub fn new(pg: PgPool, redis: RedisBackend, tuning: Tuning) -> Self {
        let purchases = PurchasePool::Sqlx(pg.clone());
        let books = SqlPool::Postgres(pg.clone());
        let nats = NatsBackend::lazy(DEFAULT_NATS_URL, redis.keys.prefix(), NatsSettings::default());
        Self { pg: Some(pg), redis, nats, tuning, purchases, books }
    }

    /// Backends whose books live in MySQL or MariaDB: the strategies ported to that dialect sell
    /// there ([`SqlBackend::runs`]); the others are not built.
    pub fn on_mysql(pool: MySqlPool, redis: RedisBackend, tuning: Tuning) -> Self {
        let nats = NatsBackend::lazy(DEFAULT_NATS_URL, redis.keys.prefix(), NatsSettings::default());
        Self {
            pg: None,
            redis,
            nats,
            tuning,
            purchases: PurchasePool::MySql(pool.clone()),
            books: SqlPool::MySql(pool),
        }
    }

    /// The SQL server that holds the books.
    pub const fn database(&self) -> SqlBackend {
        self.books.backend()
    }

    /// PostgreSQL, for work that only exists there.
    ///
    /// # Errors
    /// [`StrategyError::NotOnDatabase`] naming `what`, when the books live elsewhere.
    pub fn postgres(&self, what: &str) -> Result<&PgPool, StrategyError> {
        self.pg.as_ref().ok_or_else(|| {
            StrategyError::NotOnDatabase(format!(
                "{what} runs on PostgreSQL only, not on {}",
                self.database()
            ))
        })
    }

    /// The same backends with `queue-nats` on `nats`.
    #[must_use]
    pub fn with_nats(self, nats: NatsBackend) -> Self {
        Self { nats, ..self }
    }

    /// The same backends with purchases on `purchases`.
    #[must_use]
    pub fn with_purchases(self, purchases: PurchasePool) -> Self {
        Self { purchases, ..self }
    }
}

/// Redis, as request traffic reaches it: one multiplexed, self-reconnecting connection cloned into
/// every handler (a per-call pool measured 3–15× slower on a hot key), every call bounded by a
/// response timeout. The server is a single Redis or a Redis Cluster ([`RedisBackend::lazy_cluster`]).
#[derive(Debug, Clone)]
pub struct RedisBackend {
    /// Shared by all request traffic. Never use it for blocking commands or MULTI.
    pub conn: RedisConn,
    /// Opens dedicated connections (stream consumers, which block).
    client: RedisClient,
    pub keys: RedisKeys,
    pub settings: RedisSettings,
}

/// Where dedicated connections are opened.
#[derive(Debug, Clone)]
enum RedisClient {
    Single(redis::Client),
    /// The seed nodes: a cluster client's reply timeout is fixed when it is built, so each
    /// dedicated connection builds its own.
    Cluster(Vec<ConnectionInfo>),
}

/// A connection to Redis or to a Redis Cluster. It implements [`ConnectionLike`] by delegation, so
/// commands, pipelines and scripts run on either; clone it per call as a `ConnectionManager`.
#[derive(Clone)]
pub enum RedisConn {
    /// Request traffic on a single Redis: reconnects by itself.
    Manager(ConnectionManager),
    /// A dedicated connection to a single Redis; its owner replaces it after an I/O error.
    Multiplexed(MultiplexedConnection),
    /// A Redis Cluster: routes each command by its keys' slot and follows MOVED/ASK.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Manager(_) => f.write_str("RedisConn::Manager"),
            Self::Multiplexed(_) => f.write_str("RedisConn::Multiplexed"),
            Self::Cluster(_) => f.write_str("RedisConn::Cluster"),
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Manager(conn) => conn.req_packed_command(cmd),
            Self::Multiplexed(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Manager(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Multiplexed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Manager(conn) => conn.get_db(),
            Self::Multiplexed(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl RedisConn {
    /// Runs a keyless command (`SCAN`, `TIME`) on the master that holds `key`. A cluster sends
    /// keyless commands to a random node, where a scan misses the keys and a clock differs from
    /// the one the scripts read.
    ///
    /// # Errors
    /// When Redis does not answer, or the reply does not read as `T`.
    pub async fn query_on_master_of<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        key: &str,
    ) -> redis::RedisResult<T> {
        match self {
            Self::Cluster(conn) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                let value = conn.route_command(cmd.clone(), RoutingInfo::SingleNode(route)).await?;
                Ok(T::from_redis_value(value)?)
            }
            Self::Manager(_) | Self::Multiplexed(_) => cmd.query_async(self).await,
        }
    }
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
        Ok(Self { conn: RedisConn::Manager(conn), client: RedisClient::Single(client), keys, settings })
    }

    /// A backend on the Redis Cluster that `nodes` (`host:port` or `redis://host:port`, any of its
    /// masters) belong to, connecting on first use. Every key goes under `keys`' prefix made a hash
    /// tag ([`RedisKeys::in_one_slot`]): the scripts touch several keys at once, and a cluster runs a
    /// script only when all its keys share a slot.
    ///
    /// # Errors
    /// When `nodes` is empty or a node is not a Redis address.
    pub fn lazy_cluster(
        nodes: &[String],
        keys: &RedisKeys,
        settings: RedisSettings,
    ) -> Result<Self, redis::RedisError> {
        if nodes.is_empty() {
            return Err(
                (redis::ErrorKind::InvalidClientConfig, "a Redis Cluster needs at least one node").into()
            );
        }
        let nodes = nodes.iter().map(|node| cluster_node(node)).collect::<Result<Vec<_>, _>>()?;
        let conn = cluster_client(&nodes, settings.response_timeout, settings.connect_timeout)?
            .get_pending_async_connection_with_config(cluster_config(
                settings.response_timeout,
                settings.connect_timeout,
            ));
        Ok(Self {
            conn: RedisConn::Cluster(conn),
            client: RedisClient::Cluster(nodes),
            keys: keys.in_one_slot(),
            settings,
        })
    }

    /// Whether this backend talks to a Redis Cluster.
    pub const fn is_cluster(&self) -> bool {
        matches!(self.client, RedisClient::Cluster(_))
    }

    /// A dedicated connection whose replies may take up to `response_timeout` (blocking reads
    /// set it above their BLOCK time).
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub async fn dedicated(&self, response_timeout: Duration) -> Result<RedisConn, redis::RedisError> {
        match &self.client {
            RedisClient::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(response_timeout))
                    .set_connection_timeout(Some(self.settings.connect_timeout));
                Ok(RedisConn::Multiplexed(
                    client.get_multiplexed_async_connection_with_config(&config).await?,
                ))
            }
            RedisClient::Cluster(nodes) => {
                let connect = self.settings.connect_timeout;
                let client = cluster_client(nodes, response_timeout, connect)?;
                let config = cluster_config(response_timeout, connect);
                Ok(RedisConn::Cluster(client.get_async_connection_with_config(config).await?))
            }
        }
    }
}

/// A cluster seed node from `host:port` or a `redis://` URL.
fn cluster_node(node: &str) -> Result<ConnectionInfo, redis::RedisError> {
    let node = node.trim();
    if node.contains("://") {
        node.into_connection_info()
    } else {
        format!("redis://{node}").into_connection_info()
    }
}

fn cluster_client(
    nodes: &[ConnectionInfo],
    response_timeout: Duration,
    connect_timeout: Duration,
) -> Result<ClusterClient, redis::RedisError> {
    ClusterClient::builder(nodes.to_vec())
        .response_timeout(response_timeout)
        .connection_timeout(connect_timeout)
        // No command is sent twice: a script whose reply was lost may have run, and the client
        // retries after a dropped connection too. The call that meets a dead master or a moved
        // slot fails (503) as on a single Redis, and the slot map is refreshed for the next one.
        .retries(0)
        .build()
}

/// The client's timeouts again: a config handed to a connection replaces them.
fn cluster_config(response_timeout: Duration, connect_timeout: Duration) -> ClusterConfig {
    ClusterConfig::new().set_response_timeout(response_timeout).set_connection_timeout(connect_timeout)
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
    pool_options::<Postgres>(settings).connect_lazy_with(options)
}

/// A pool of `settings`' size and acquire bound, on either server.
fn pool_options<DB: sqlx::Database>(settings: PgSettings) -> PoolOptions<DB> {
    PoolOptions::<DB>::new()
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
}

/// Prepared statements each MariaDB connection keeps. When its cache is full, the driver closes
/// the least recently used statement with `COM_STMT_CLOSE`, which the server never answers, on a
/// socket without `TCP_NODELAY`: the next command then waits for the server's delayed ACK, about
/// 180 ms here. The batch writers' texts depend on the batch size, so at the driver's default of
/// 100 a connection evicts on almost every batch once it has seen a few hundred sizes, and
/// `sql-coalesce` searched right after `stream` on one server found 173–1,500 req/s against
/// 16,000–18,000 with room for them all. A broad comparison holds about 3,000 statements across
/// all connections at this size, well under MariaDB's `max_prepared_stmt_count` (16,382 by
/// default), which a statement past it would fail against.
pub const MYSQL_STATEMENT_CACHE: usize = 1024;

/// Builds a MySQL/MariaDB pool that connects on first use, with the PostgreSQL pool's limits:
/// `statement_timeout` becomes MariaDB's `max_statement_time` and, rounded up to whole seconds,
/// InnoDB's row-lock wait (`innodb_lock_wait_timeout`), so neither a slow statement nor a lock
/// held by a stuck buyer keeps a purchase waiting past it (the client gets 503).
///
/// # Errors
/// When `url` is not a MySQL URL.
pub fn mysql_pool(url: &str, settings: PgSettings) -> Result<MySqlPool, sqlx::Error> {
    let options = MySqlConnectOptions::from_str(url)?.statement_cache_capacity(MYSQL_STATEMENT_CACHE);
    let statement_secs = settings.statement_timeout.as_secs_f64();
    let lock_wait_secs = settings.statement_timeout.as_secs().max(1)
        + u64::from(settings.statement_timeout.subsec_nanos() > 0);
    let limits = format!(
        "SET SESSION max_statement_time = {statement_secs}, innodb_lock_wait_timeout = {lock_wait_secs}"
    );
    Ok(pool_options::<MySql>(settings)
        .after_connect(move |conn, _| {
            let limits = limits.clone();
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(limits)).await?;
                Ok(())
            })
        })
        .connect_lazy_with(options))
}

/// Creates the database `url` names when it is missing and applies every migration of its
/// dialect ([`SqlBackend::from_url`]).
///
/// # Errors
/// When the URL names no supported server, the server cannot be reached or a migration fails.
pub async fn prepare_database(url: &str) -> Result<(), sqlx::Error> {
    let backend = SqlBackend::from_url(url).map_err(|err| sqlx::Error::Configuration(err.into()))?;
    if backend == SqlBackend::MySql {
        if !MySql::database_exists(url).await? {
            MySql::create_database(url).await?;
        }
        let pool = MySqlPoolOptions::new().max_connections(1).connect(url).await?;
        backend.migrator().run(&pool).await?;
        pool.close().await;
        return Ok(());
    }
    if !Postgres::database_exists(url).await? {
        Postgres::create_database(url).await?;
    }
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}
