//! Command-line and environment configuration shared by the binaries. Every flag has an env var
//! and a localhost default, so `cargo run` works on a machine with the services of
//! `docker-compose.yml` and nothing else.

use std::net::SocketAddr;
use std::time::Duration;

use checkout_strategies::{
    NatsBackend, NatsSettings, PgDriver, PgSettings, RedisBackend, RedisKeys, RedisSettings, Tuning,
    WorkerSettings,
};
use clap::Args;
use clap::builder::BoolishValueParser;

use crate::admission::{self, InflightLimits};
use crate::sessions::SessionConfig;

/// Where the backends are and how connections to them behave.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Where the books live: a PostgreSQL URL, or a `mysql://` or `mariadb://` URL for MariaDB
    /// (README, "MariaDB": which strategies run there). The database is created, and migrations
    /// applied, when missing.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/checkout")]
    pub database_url: String,

    /// Redis URL, for the Redis-backed strategies.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Redis Cluster nodes (`host:port,host:port,…`, any of its masters). When set, the Redis
    /// strategies use the cluster instead of `REDIS_URL`, with the prefix made a hash tag
    /// (`{checkout}:`) so every key of a script shares a slot. Sessions stay on `REDIS_URL`.
    #[arg(long, env = "REDIS_CLUSTER_NODES", value_delimiter = ',', num_args = 1..)]
    pub redis_cluster_nodes: Vec<String>,

    /// Prefix of every Redis key the strategies write; a reset clears keys under it. Give each
    /// independent setup sharing one Redis its own.
    #[arg(long, env = "REDIS_PREFIX", default_value = "checkout:")]
    pub redis_prefix: String,

    /// Longest wait for one Redis reply, in milliseconds, before the call fails (503).
    #[arg(long, env = "REDIS_RESPONSE_TIMEOUT_MS", default_value_t = 2_000)]
    pub redis_response_timeout_ms: u64,

    /// NATS URL, for `queue-nats` (JetStream must be enabled: `nats-server -js`). Its streams are
    /// named after `REDIS_PREFIX`.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Longest wait for the broker's PubAck, in milliseconds: past it the buyer hears 503
    /// `outcome_unknown` and the order is published again later if the broker lacks it.
    #[arg(long, env = "NATS_PUBLISH_TIMEOUT_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub nats_publish_timeout_ms: u64,

    /// PostgreSQL connections in the pool. Small on purpose: a hot row serialises writers, and
    /// more connections only queue on its lock.
    #[arg(long, env = "PG_CONNECTIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pg_connections: u32,

    /// Longest wait for a free PostgreSQL connection, in milliseconds, before answering 503.
    #[arg(long, env = "PG_ACQUIRE_TIMEOUT_MS", default_value_t = 3_000)]
    pub pg_acquire_timeout_ms: u64,

    /// Longest a PostgreSQL statement may run, in milliseconds, before it is cancelled (503).
    #[arg(long, env = "PG_STATEMENT_TIMEOUT_MS", default_value_t = 5_000)]
    pub pg_statement_timeout_ms: u64,
}

impl BackendArgs {
    /// The Redis backend these flags describe: the cluster of `REDIS_CLUSTER_NODES` when given,
    /// else the Redis of `REDIS_URL`. It connects on first use.
    ///
    /// # Errors
    /// When `REDIS_URL` or a cluster node is not a Redis address.
    pub fn redis_backend(&self) -> Result<RedisBackend, redis::RedisError> {
        let keys = RedisKeys::new(self.redis_prefix.clone());
        let nodes: Vec<String> = self
            .redis_cluster_nodes
            .iter()
            .map(|node| node.trim())
            .filter(|node| !node.is_empty())
            .map(str::to_owned)
            .collect();
        if nodes.is_empty() {
            RedisBackend::lazy(&self.redis_url, keys, self.redis_settings())
        } else {
            RedisBackend::lazy_cluster(&nodes, &keys, self.redis_settings())
        }
    }

    /// The NATS backend these flags describe; it connects on first use.
    pub fn nats_backend(&self) -> NatsBackend {
        let settings = NatsSettings {
            publish_timeout: Duration::from_millis(self.nats_publish_timeout_ms),
            ..NatsSettings::default()
        };
        NatsBackend::lazy(&self.nats_url, &self.redis_prefix, settings)
    }

    fn redis_settings(&self) -> RedisSettings {
        RedisSettings {
            response_timeout: Duration::from_millis(self.redis_response_timeout_ms),
            ..RedisSettings::default()
        }
    }

    /// The pool settings these flags describe.
    pub const fn pg_settings(&self) -> PgSettings {
        PgSettings {
            connections: self.pg_connections,
            acquire_timeout: Duration::from_millis(self.pg_acquire_timeout_ms),
            statement_timeout: Duration::from_millis(self.pg_statement_timeout_ms),
        }
    }
}

/// How the HTTP server behaves.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Bearer token required by /admin routes. When unset, /admin accepts loopback clients only.
    /// Letters, digits and `-._~+/=` only (RFC 6750), so it can be sent as it is; use a long random
    /// one (`openssl rand -hex 32`).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, value_parser = admin_token)]
    pub admin_token: Option<String>,

    /// Longest a purchase may take, in milliseconds, before the client gets 503. The purchase
    /// itself is not abandoned: it finishes, and the audit can see it.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Pause of `sql-naive` between reading and writing the stock, in milliseconds. Zero keeps the
    /// seed's behaviour; a few milliseconds make its oversell certain in short tests.
    #[arg(long, env = "NAIVE_RACE_WINDOW_MS", default_value_t = 0)]
    pub naive_race_window_ms: u64,

    /// Times `sql-for-update` reruns a transaction after a deadlock or serialization failure.
    #[arg(long, env = "CONFLICT_RETRIES", default_value_t = 3)]
    pub conflict_retries: u32,

    /// How long a Redis reservation may wait for its order's commit, in milliseconds. Past it, the
    /// sweeper asks PostgreSQL: a committed order is settled, any other is voided (it can never
    /// commit afterwards) and its units go back on the shelf.
    #[arg(long, env = "RESERVATION_TTL_MS", default_value_t = 30_000)]
    pub reservation_ttl_ms: u64,

    /// Most purchases one commit of `sql-coalesce` or `redis-orderlog` carries. Batches form on
    /// their own while the previous one commits; this only caps them.
    #[arg(long, env = "COALESCE_MAX_BATCH", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub coalesce_max_batch: u32,
    /// Times `sql-optimistic` retries its version compare-and-swap (after a random pause that
    /// doubles each time) when another buyer changed the row first; past it the buyer gets 409
    /// `contention`.
    #[arg(long, env = "OPTIMISTIC_RETRIES", default_value_t = 8)]
    pub optimistic_retries: u32,

    /// PostgreSQL client of the per-sale SQL strategies (`sql-naive`, `sql-for-update`, `sql-atomic`,
    /// `sql-skip-locked`, `sql-optimistic`): `sqlx` (sqlx's pool, as the rest of the server) or
    /// `tokio-postgres` (a deadpool-postgres pool of its own, `PG_CONNECTIONS` strong, statements
    /// prepared once per connection).
    #[arg(long, env = "PG_DRIVER", default_value = "sqlx")]
    pub pg_driver: PgDriver,

    /// Random products (ids 1..=N) a fresh, empty database is given at first start, next to the hot
    /// product 100 with 10,000 units.
    #[arg(long, env = "DEFAULT_PRODUCTS", default_value_t = 1_000)]
    pub default_products: u64,

    /// Refuse purchases beyond the in-flight limits below with 503 `overloaded`, instead of letting
    /// them queue. Off by default: a benchmark server must not shed the load it is asked to
    /// measure, and Locust runs (the ancestor's included) expect every purchase answered.
    #[arg(long, env = "SHED_LOAD", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub shed_load: bool,

    /// Most purchases in flight at once among strategies that commit to PostgreSQL before
    /// answering (`sql-*`, `redis-decr`, `redis-lua`); beyond it a purchase is refused at once with
    /// 503 `overloaded`. Default: 4 × `PG_CONNECTIONS`. 0 means no limit.
    #[arg(long, env = "MAX_INFLIGHT_POSTGRES")]
    pub max_inflight_postgres: Option<usize>,

    /// Most purchases in flight at once among strategies that answer once Redis holds the order
    /// (`stream`, `stream-deferred`, `queue-nats`). 0 means no limit.
    #[arg(long, env = "MAX_INFLIGHT_REDIS", default_value_t = admission::DEFAULT_REDIS)]
    pub max_inflight_redis: usize,

    /// Most purchases in flight at once of the in-process baseline (`memory`). 0 means no limit.
    #[arg(long, env = "MAX_INFLIGHT_MEMORY", default_value_t = admission::DEFAULT_IN_PROCESS)]
    pub max_inflight_memory: usize,
}

impl ServeArgs {
    /// Strategy knobs these flags describe.
    pub const fn tuning(&self) -> Tuning {
        Tuning {
            naive_race_window: Duration::from_millis(self.naive_race_window_ms),
            conflict_retries: self.conflict_retries,
            reservation_ttl: Duration::from_millis(self.reservation_ttl_ms),
            coalesce_max_batch: self.coalesce_max_batch as usize,
            optimistic_retries: self.optimistic_retries,
        }
    }

    /// The in-flight limits these flags describe (none without `--shed-load`), the PostgreSQL one
    /// sized from a pool of `pg_connections` unless given.
    pub fn inflight_limits(&self, pg_connections: u32) -> InflightLimits {
        if !self.shed_load {
            return InflightLimits::unlimited();
        }
        let limit = |value: usize| (value > 0).then_some(value);
        InflightLimits {
            postgres: self
                .max_inflight_postgres
                .map_or(InflightLimits::for_pool(pg_connections).postgres, limit),
            redis: limit(self.max_inflight_redis),
            in_process: limit(self.max_inflight_memory),
        }
    }
}

/// Parses an admin token: one a client can send in `Authorization: Bearer <token>`. An empty one
/// would lock /admin for everybody, loopback included, and pass unnoticed.
///
/// # Errors
/// An empty token, or one with a character outside RFC 6750's `b64token`.
pub fn admin_token(token: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if token.is_empty() {
        return Err("the admin token is empty: set a long random one, or unset ADMIN_TOKEN".into());
    }
    if !token.chars().all(allowed) {
        return Err("the admin token may hold letters, digits and -._~+/= only".into());
    }
    Ok(token.to_owned())
}

/// Buyer sessions: where they live and whether purchases need one.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Redis database number holding sessions, on the server of `REDIS_URL`: apart from the
    /// stock keys, so neither a reset nor a stock scan touches them.
    #[arg(
        long,
        env = "SESSION_REDIS_DB",
        default_value_t = 1,
        value_parser = clap::value_parser!(i64).range(0..),
    )]
    pub session_redis_db: i64,

    /// Seconds a session lives without use; each purchase that uses it starts the count again.
    #[arg(
        long,
        env = "SESSION_TTL_SECS",
        default_value_t = 1_800,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    pub session_ttl_secs: u64,

    /// Whether a purchase needs a session (cookie or `X-Session-Token`) unless it names its buyer
    /// in `user` or says `skip_auth`. `false` lets every purchase through without one.
    #[arg(
        long,
        env = "REQUIRE_SESSION",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = BoolishValueParser::new(),
    )]
    pub require_session: bool,
}

impl SessionArgs {
    /// The session settings these flags describe, on the Redis server and under the prefix of
    /// `backends`, with its response timeout.
    ///
    /// # Errors
    /// When `REDIS_URL` is not a Redis URL.
    pub fn session_config(&self, backends: &BackendArgs) -> Result<SessionConfig, redis::RedisError> {
        Ok(SessionConfig {
            prefix: backends.redis_prefix.clone(),
            ttl: Duration::from_secs(self.session_ttl_secs),
            required: self.require_session,
            redis: backends.redis_settings(),
            ..SessionConfig::new(&backends.redis_url, self.session_redis_db)?
        })
    }
}

/// The worker's default batch, the library's: one place decides it.
const DEFAULT_WORKER_BATCH: u64 = checkout_strategies::redis_stream::worker::DEFAULT_BATCH as u64;

/// The stream worker: how it reads, takes over and gives up on entries.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Stream entries read, and persisted in one PostgreSQL transaction, at a time.
    #[arg(long, env = "WORKER_BATCH", default_value_t = DEFAULT_WORKER_BATCH, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub worker_batch: u64,

    /// Longest a worker's read waits for new entries, in milliseconds (`XREADGROUP … BLOCK`). Its
    /// connection waits 3 s longer for a reply; stopping waits for the read.
    #[arg(long, env = "WORKER_BLOCK_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub worker_block_ms: u64,

    /// An entry delivered to a worker and not settled for this long, in milliseconds, is taken
    /// over by another worker (`XAUTOCLAIM`): how long a crashed worker's batch waits.
    #[arg(long, env = "CLAIM_IDLE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub claim_idle_ms: u64,

    /// Deliveries after which an entry that keeps failing goes to the dead-letter stream, its
    /// stock released.
    #[arg(long, env = "MAX_DELIVERIES", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub max_deliveries: u64,
}

impl WorkerArgs {
    /// The worker settings these flags describe.
    pub fn settings(&self) -> WorkerSettings {
        WorkerSettings {
            batch: usize::try_from(self.worker_batch).unwrap_or(usize::MAX),
            block: Duration::from_millis(self.worker_block_ms),
            claim_idle: Duration::from_millis(self.claim_idle_ms),
            max_deliveries: self.max_deliveries,
        }
    }
}

/// Whether `server` runs the stream worker beside the API.
#[derive(Debug, Clone, Args)]
pub struct WorkerSwitch {
    /// Run the stream worker inside the server. Turn it off to serve the API alone and run
    /// workers apart with `server worker`.
    #[arg(
        long,
        env = "WORKER",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = BoolishValueParser::new(),
        num_args = 0..=1,
        default_missing_value = "true",
        overrides_with = "no_worker",
    )]
    pub worker: bool,

    /// Same as `--worker false`.
    #[arg(long, overrides_with = "worker")]
    pub no_worker: bool,
}

impl WorkerSwitch {
    pub const fn enabled(&self) -> bool {
        self.worker && !self.no_worker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Backends {
        #[command(flatten)]
        backends: BackendArgs,
    }

    fn backend_args(args: &[&str]) -> BackendArgs {
        <Backends as clap::Parser>::try_parse_from(std::iter::once("server").chain(args.iter().copied()))
            .expect("flags parse")
            .backends
    }

    #[tokio::test]
    async fn cluster_nodes_choose_the_cluster_and_tag_the_prefix() {
        let single = backend_args(&["--redis-prefix", "shop:"]).redis_backend().expect("single Redis");
        assert!(!single.is_cluster(), "REDIS_URL stays the default");
        assert_eq!(single.keys.prefix(), "shop:", "a single Redis keeps the prefix as given");

        let args = backend_args(&[
            "--redis-prefix",
            "shop:",
            "--redis-cluster-nodes",
            "127.0.0.1:7000, redis://127.0.0.1:7001",
        ]);
        assert_eq!(args.redis_cluster_nodes.len(), 2, "one node per comma: {:?}", args.redis_cluster_nodes);
        let cluster = args.redis_backend().expect("cluster backend");
        assert!(cluster.is_cluster(), "the nodes choose the cluster");
        assert_eq!(cluster.keys.prefix(), "{shop}:", "every key in one slot");

        let bad = backend_args(&["--redis-cluster-nodes", "127.0.0.1:7000,ftp://x"]).redis_backend();
        assert!(bad.is_err(), "a node that is no Redis address is refused at startup");
    }

    #[test]
    fn an_admin_token_is_one_a_client_can_send() {
        for good in ["s3cret", "0123456789abcdef0123456789abcdef", "dGVzdA==", "a-b.c_d~e+f/g"] {
            assert_eq!(admin_token(good).as_deref(), Ok(good));
        }
        for bad in ["", " ", "two words", "tab\there", "ключ", "new\nline", "quote\""] {
            assert!(admin_token(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
