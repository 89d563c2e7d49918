//! `redis-lua` — one Lua script checks and reserves every line of the order atomically
//! (all-or-nothing), then the order is committed to PostgreSQL with the same decrement of its
//! stock, before the client hears 201.
//!
//! Guarantee: never oversells and, unlike `redis-decr`, never undersells through a transient
//! overshoot: the script checks every line before it takes any, and Redis runs it without
//! interleaving. Durable: 201 only after COMMIT. A stock key that went missing is rebuilt from
//! PostgreSQL (its stock minus units in flight) and the script runs again.
//!
//! Crash behaviour: a crash between the script and the commit leaves the reservation in Redis with
//! no order (Redis below PostgreSQL: `redis_drift` in the audit, repaired by a reconcile). A failed
//! commit gives the reservation back through a second script, atomically.
//!
//! Why this shape: the script is loaded once and called by SHA (`redis::Script` reloads it on
//! NOSCRIPT); every key goes through `KEYS`, so per-test prefixes work and the script stays
//! cluster-friendly.

use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::order::{PurchaseOutcome, PurchaseRequest};
use crate::redis_idempotency::guarded;
use crate::redis_persist::{persist_reserved, push_lines};
use crate::redis_stock;
use crate::strategy::Strategy;

static RESERVE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/reserve.lua")));

/// How often a purchase rebuilds a missing stock key before giving up with 503.
const RECOVERIES: usize = 2;

/// The atomic-script strategy.
#[derive(Debug, Clone)]
pub struct RedisLua {
    pg: PgPool,
    redis: RedisBackend,
}

impl RedisLua {
    pub const fn new(pg: PgPool, redis: RedisBackend) -> Self {
        Self { pg, redis }
    }
}

#[async_trait]
impl Strategy for RedisLua {
    fn kind(&self) -> StrategyKind {
        StrategyKind::RedisLua
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        guarded(&self.pg, &self.redis, request, self.reserve_and_persist(request)).await
    }
}

impl RedisLua {
    async fn reserve_and_persist(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        let lines: Vec<_> = request.lines.iter().collect();
        for _ in 0..=RECOVERIES {
            let mut invocation = RESERVE.prepare_invoke();
            push_lines(&mut invocation, &self.redis, &request.lines);
            let mut conn = self.redis.conn.clone();
            let reply: Vec<i64> = invocation.invoke_async(&mut conn).await?;
            let line = |at: i64| usize::try_from(at - 1).ok().and_then(|i| lines.get(i)).copied();
            match reply.as_slice() {
                [0] => return persist_reserved(&self.pg, &self.redis, self.kind(), request).await,
                [1, at] => {
                    let line = line(*at).ok_or_else(|| bad_reply(&reply))?;
                    return Ok(PurchaseOutcome::SoldOut(line.product_id));
                }
                [2, at] => {
                    let line = line(*at).ok_or_else(|| bad_reply(&reply))?;
                    if redis_stock::recover(&self.pg, &self.redis, line.product_id).await?.is_none() {
                        return Ok(PurchaseOutcome::UnknownProduct(line.product_id));
                    }
                }
                _ => return Err(bad_reply(&reply)),
            }
        }
        Err(StrategyError::Unavailable("a stock key kept disappearing from Redis".into()))
    }
}

fn bad_reply(reply: &[i64]) -> StrategyError {
    StrategyError::Internal(format!("reserve.lua answered {reply:?}"))
}
