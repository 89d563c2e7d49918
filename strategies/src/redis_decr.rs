//! `redis-decr` — the seed's `redis` mode, with its missing half added: check the stock in Redis,
//! `DECRBY` every line (pipelined), and if any went negative `INCRBY` them all back and answer
//! sold out. Unlike the seed, which never wrote an order, the confirmed order (and the same
//! decrement of PostgreSQL's stock) is committed to PostgreSQL before the client hears 201; if
//! that write fails, the units go back to Redis and the client gets 503.
//!
//! Guarantee: never oversells. A buyer keeps units only when its own `DECRBY` left the counter
//! at zero or above, and Redis applies decrements one at a time. It can *undersell*: a buyer whose
//! decrement overshot holds units until its compensation lands, and a buyer arriving in between
//! is told sold out although the units come back. Durable: 201 only after COMMIT.
//!
//! Crash behaviour: a crash between `DECRBY` and the commit (or the compensation) leaves units
//! taken in Redis that no order holds: Redis shows less stock than PostgreSQL (`redis_drift` in
//! the audit; a reconcile repairs it). A lost reply to the pipeline has an unknown outcome and is
//! never retried blindly: the client gets 503 and the audit counts the units.
//!
//! Why this shape: it is what teams write first when PostgreSQL's row lock becomes the bottleneck,
//! and sold-out buyers — most of a flash sale — never reach PostgreSQL at all.

use async_trait::async_trait;
use sqlx::PgPool;

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::order::{PurchaseOutcome, PurchaseRequest};
use crate::redis_idempotency::guarded;
use crate::redis_persist::{persist_reserved, release, shelf};
use crate::redis_stock;
use crate::strategy::Strategy;

/// The decrement-and-compensate strategy.
#[derive(Debug, Clone)]
pub struct RedisDecr {
    pg: PgPool,
    redis: RedisBackend,
}

impl RedisDecr {
    pub const fn new(pg: PgPool, redis: RedisBackend) -> Self {
        Self { pg, redis }
    }

    /// The seed's check: refuses early when the shelf already looks short, recovering missing keys.
    async fn precheck(&self, request: &PurchaseRequest) -> Result<Option<PurchaseOutcome>, StrategyError> {
        let seen = shelf(&self.redis, &request.lines).await?;
        for (line, stock) in request.lines.iter().zip(seen) {
            let stock = match stock {
                Some(stock) => stock,
                None => match redis_stock::recover(&self.pg, &self.redis, line.product_id).await? {
                    Some(stock) => stock,
                    None => return Ok(Some(PurchaseOutcome::UnknownProduct(line.product_id))),
                },
            };
            if stock < i64::from(line.quantity.get()) {
                return Ok(Some(PurchaseOutcome::SoldOut(line.product_id)));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl Strategy for RedisDecr {
    fn kind(&self) -> StrategyKind {
        StrategyKind::RedisDecr
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        guarded(&self.pg, &self.redis, request, self.reserve_and_persist(request)).await
    }
}

impl RedisDecr {
    async fn reserve_and_persist(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        if let Some(refusal) = self.precheck(request).await? {
            return Ok(refusal);
        }
        let mut pipe = redis::pipe();
        for line in &request.lines {
            pipe.decr(self.redis.keys.stock(line.product_id.get()), line.quantity.get());
            pipe.incr(self.redis.keys.inflight(line.product_id.get()), line.quantity.get()).ignore();
        }
        let mut conn = self.redis.conn.clone();
        let left: Vec<i64> = pipe.query_async(&mut conn).await?;
        if let Some((line, _)) = request.lines.iter().zip(&left).find(|(_, left)| **left < 0) {
            release(&self.redis, &request.lines).await?;
            return Ok(PurchaseOutcome::SoldOut(line.product_id));
        }
        persist_reserved(&self.pg, &self.redis, self.kind(), request).await
    }
}
