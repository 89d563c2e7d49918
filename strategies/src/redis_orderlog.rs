//! `redis-orderlog` — the atomic Lua reservation of `redis-lua`, then an insert-only commit: the
//! order, its lines and one `stock_unapplied` row per line in one statement, before 201.
//! PostgreSQL's `products.stock` follows through the stock sync ([`crate::stock_sync`]), which
//! applies a batch of committed orders per product in one transaction per interval.
//!
//! Guarantee: never oversells while Redis keeps its data. The script checks and takes every line
//! atomically against the mirror, and the mirror never stands above what is left to sell:
//! it is loaded from PostgreSQL at reset, and rebuilt ([`crate::reservation::recover`]) or
//! rewritten (the sweeper's resync) from PostgreSQL's stock *minus the units awaiting sync* minus
//! the holds PostgreSQL does not have yet. Durable: 201 only after the order's statement
//! committed. The products it sells belong to the Redis gate (`crate::gates`), so no SQL
//! strategy takes the same units from the stock row.
//!
//! Unlike `redis-lua`, the commit does not re-check PostgreSQL's stock (there is no row update to
//! hang the condition on). If Redis loses its data while purchases are between their reservation
//! and their commit, the rebuilt mirror cannot know them, and those purchases can sell units twice;
//! the stock sync then drives the stock row below zero and the audit reports `negative_stock` and
//! `oversold`. `redis-lua` refuses such a sale at commit time instead.
//!
//! Crash behaviour: as `redis-lua` for the reservation (tied to the order id, settled or voided by
//! the sweeper after its deadline). A crash after the commit and before the sync leaves
//! `stock_unapplied` rows; the next sync of any process applies them, and until then the audit
//! counts them as awaiting sync.
//!
//! Why this shape: the hot product row is what caps every strategy that updates it per sale (its
//! lock is held across the commit's fsync). Here a sale waits for one Lua script and one
//! insert-only commit; concurrent commits share fsyncs through PostgreSQL's group commit and never
//! wait for each other's row locks. The row is updated once per sync, for hundreds of sales.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::order::{PurchaseOutcome, PurchaseRequest};
use crate::plan::StockPlan;
use crate::redis_lua::RedisLua;
use crate::redis_persist::Commit;
use crate::strategy::Strategy;

/// The Redis-gated, insert-only strategy.
#[derive(Debug)]
pub struct RedisOrderlog {
    reserve_then_log: RedisLua,
}

impl RedisOrderlog {
    pub fn new(pg: PgPool, redis: RedisBackend, reservation_ttl: Duration) -> Self {
        Self {
            reserve_then_log: RedisLua::committing(
                pg,
                redis,
                reservation_ttl,
                StrategyKind::RedisOrderlog,
                Commit::InsertOnly,
            ),
        }
    }
}

#[async_trait]
impl Strategy for RedisOrderlog {
    fn kind(&self) -> StrategyKind {
        StrategyKind::RedisOrderlog
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        self.reserve_then_log.purchase(request).await
    }

    async fn prepare(&self, plan: &StockPlan) -> Result<(), StrategyError> {
        self.reserve_then_log.prepare(plan).await
    }
}
