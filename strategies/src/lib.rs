//! Purchase strategies for checkout-bench, free of HTTP so benches and the behaviour suite call
//! them directly.
//!
//! - [`kind`]: the closed list of strategy names and what each promises.
//! - [`strategy`]: the [`Strategy`] trait and the ledger it hands the audit.
//! - [`order`]: validated purchase input and outcomes.
//! - [`plan`]: what a reset puts on the shelves.
//! - [`registry`]: kind → running strategy.
//! - [`catalog`]: reset, bulk `COPY`, and the SQL books the audit reads.
//! - [`redis_stock`]: stock mirrored into Redis, and its recovery.
//! - One file per mechanism: [`in_memory`], [`sql_naive`], [`sql_for_update`], [`sql_atomic`],
//!   [`sql_coalesce`], [`sql_skip_locked`], [`sql_optimistic`],
//!   [`redis_decr`], [`redis_lua`], [`redis_orderlog`].
//! - [`coalescer`]: group commit for any batch step (the mechanism under `sql-coalesce`).
//! - [`stock_sync`]: applies `redis-orderlog`'s insert-only orders to PostgreSQL's stock.
//! - [`redis_stream`]: the queueing strategies (`stream`, `stream-deferred`) and their worker.
//! - [`queue_nats`]: `queue-nats`, queueing through a NATS JetStream broker, and its consumer.
//! - [`reservation`]: Redis reservations tied to order ids, their sweeper, and key recovery.
//! - [`pg_driver`]: which PostgreSQL client (sqlx or tokio-postgres) runs the per-sale SQL
//!   strategies' purchase, and the seam they run their statements through.
//! - [`dialect`]: which SQL server the database URL names, and each one's statements.
//! - [`one_transaction`]: the purchase every one-transaction SQL strategy shares, failures settled.
//! - [`contention`]: buyers refused for contention, counted in PostgreSQL for every replica's audit.
//! - [`fence`]: settling a purchase whose outcome is in doubt, for good.
//! - [`background`]: which background work each strategy needs, and running it.
//! - `idempotency`: one claim per `Idempotency-Key`, in front of every strategy.
//! - `gates`: which gate (PostgreSQL or Redis) sells a product since the reset.

pub mod backends;
pub mod background;
pub mod catalog;
pub mod coalescer;
pub mod contention;
pub mod dialect;
pub mod error;
pub mod fence;
mod gates;
mod idempotency;
pub mod in_memory;
pub mod kind;
pub mod lua_sources;
pub mod one_transaction;
pub mod order;
pub mod order_store;
pub mod pg_driver;
pub mod plan;
pub mod queue_nats;
pub mod redis_decr;
pub mod redis_keys;
pub mod redis_lua;
pub mod redis_orderlog;
mod redis_persist;
pub mod redis_stock;
pub mod redis_stream;
pub mod registry;
pub mod reservation;
pub mod sql_atomic;
pub mod sql_coalesce;
pub mod sql_for_update;
pub mod sql_naive;
pub mod sql_optimistic;
pub mod sql_skip_locked;
mod sql_stock;
pub mod stock_sync;
pub mod strategy;

pub use backends::{Backends, PgSettings, RedisBackend, RedisConn, RedisSettings, Tuning};
pub use dialect::{SqlBackend, UnsupportedDatabase};
pub use error::StrategyError;
pub use kind::{Gate, Guarantees, Queue, StrategyKind, UnknownStrategy};
pub use order::{
    Delivery, IdempotencyKey, InvalidInput, OrderLine, OrderLines, OrderStatus, OrderView, ProductId,
    PurchaseOutcome, PurchaseRequest, Quantity, Receipt,
};
pub use pg_driver::{PgDriver, PurchasePool, SqlPool};
pub use plan::{ProductStock, RandomProducts, StockPlan};
pub use queue_nats::{NatsBackend, NatsSettings};
pub use redis_keys::RedisKeys;
pub use redis_stream::{CancellationToken, DrainReport, Worker, WorkerSettings};
pub use registry::Registry;
pub use strategy::{Backlog, OrderEntry, OwnLedger, ProductLedger, Strategy};

/// Every PostgreSQL schema migration, applied at server start and by each database-backed test.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The MySQL/MariaDB schema ([`dialect::mysql`]), applied at start by a server on MariaDB.
pub static MYSQL_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");
