//! `redis-lua` — one Lua script checks and reserves every line of the order atomically
//! (all-or-nothing) and records the reservation under the order's id; then the order is committed
//! to PostgreSQL with the same, conditional, decrement of its stock, before the client hears 201.
//!
//! Guarantee: never oversells and, unlike `redis-decr`, never undersells through a transient
//! overshoot: the script checks every line before it takes any, and Redis runs it without
//! interleaving. PostgreSQL stays the authority: its decrement is conditional, so a mirror above
//! PostgreSQL costs a refusal, never an oversell. Durable: 201 only after COMMIT. A stock key that
//! went missing is rebuilt from PostgreSQL and the script runs again.
//!
//! Crash behaviour: a reservation is a record tied to the order id with a deadline. A crash (or a
//! lost reply) between the script and the commit leaves the record; the sweeper settles it after
//! the deadline (the order is in PostgreSQL) or voids the order id and gives the units back (it is
//! not). A commit whose reply was lost is settled the same way before anything is released.
//!
//! Why this shape: the script is loaded once and called by SHA (`redis::Script` reloads it on
//! NOSCRIPT); every key goes through `KEYS`, so per-test prefixes work.

use std::time::Duration;

use async_trait::async_trait;

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::gates::RedisGate;
use crate::kind::StrategyKind;
use crate::order::{PurchaseOutcome, PurchaseRequest};
use crate::pg_driver::SqlPool;
use crate::plan::StockPlan;
use crate::redis_persist::{end, persist_reserved};
use crate::reservation::{self, End, Reserved, Take};
use crate::strategy::Strategy;

/// How often a purchase rebuilds a missing stock key before giving up with 503.
const RECOVERIES: usize = 2;

/// The atomic-script strategy.
#[derive(Debug)]
pub struct RedisLua {
    books: SqlPool,
    redis: RedisBackend,
    ttl: Duration,
    gate: RedisGate,
    kind: StrategyKind,
}

impl RedisLua {
    pub fn new(books: impl Into<SqlPool>, redis: RedisBackend, reservation_ttl: Duration) -> Self {
        Self::reserving_for(books.into(), redis, reservation_ttl, StrategyKind::RedisLua)
    }

    /// The same reservation, recorded as `kind`'s (the sweeper ends it as that strategy's).
    pub(crate) fn reserving_for(
        books: SqlPool,
        redis: RedisBackend,
        reservation_ttl: Duration,
        kind: StrategyKind,
    ) -> Self {
        Self { books, redis, ttl: reservation_ttl, gate: RedisGate::default(), kind }
    }

    /// Takes every line of `request` in Redis, all or none, under its order id. `None` when the
    /// units are reserved and the order may be committed; the refusal to answer otherwise.
    ///
    /// # Errors
    /// When Redis does not answer (the reservation, if it was made, is given back or left to the
    /// sweeper), or a stock key keeps disappearing.
    pub(crate) async fn reserve(
        &self,
        request: &PurchaseRequest,
    ) -> Result<Option<PurchaseOutcome>, StrategyError> {
        if let Some(refusal) = self.gate.enter(&self.books, &request.lines).await? {
            return Ok(Some(refusal));
        }
        let lines: Vec<_> = request.lines.iter().copied().collect();
        for _ in 0..=RECOVERIES {
            let reserved = reservation::reserve(
                &self.redis,
                self.kind,
                request.order_id,
                &request.lines,
                Take::Check,
                self.ttl,
            )
            .await;
            match reserved {
                Ok(Reserved::Taken(_)) => return Ok(None),
                Ok(Reserved::Short(at)) => return Ok(Some(PurchaseOutcome::SoldOut(lines[at].product_id))),
                Ok(Reserved::Missing(at)) => {
                    if reservation::recover(&self.books, &self.redis, lines[at].product_id).await?.is_none() {
                        return Ok(Some(PurchaseOutcome::UnknownProduct(lines[at].product_id)));
                    }
                }
                Err(err) => {
                    // The reply is lost: the reservation may exist. This order will not be
                    // committed, so it can go back now (or, if Redis is still away, by the sweeper).
                    end(&self.books, &self.redis, request, End::Release).await;
                    return Err(err);
                }
            }
        }
        Err(StrategyError::Unavailable("a stock key kept disappearing from Redis".into()))
    }
}

#[async_trait]
impl Strategy for RedisLua {
    fn kind(&self) -> StrategyKind {
        self.kind
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        match self.reserve(request).await? {
            Some(refusal) => Ok(refusal),
            None => persist_reserved(&self.books, &self.redis, self.kind, request).await,
        }
    }

    async fn prepare(&self, _plan: &StockPlan) -> Result<(), StrategyError> {
        self.gate.forget();
        Ok(())
    }
}
