//! `redis-decr` — the seed's `redis` mode, with its missing half added: check the stock in Redis,
//! `DECRBY` every line (one script that also records the reservation under the order's id), and if
//! any went negative give them all back and answer sold out. Unlike the seed, which never wrote an
//! order, the confirmed order (and the same, conditional, decrement of PostgreSQL's stock) is
//! committed to PostgreSQL before the client hears 201; if that write fails, the units go back to
//! Redis and the client gets 503.
//!
//! Guarantee: never oversells. A buyer keeps units only when its own `DECRBY` left the counter at
//! zero or above, Redis applies decrements one at a time, and PostgreSQL's decrement is conditional.
//! It can *undersell* transiently: a buyer whose decrement overshot holds units until its
//! compensation lands, and a buyer arriving in between is told sold out although the units come
//! back. Durable: 201 only after COMMIT.
//!
//! Crash behaviour: as `redis-lua` — every reservation is a record tied to the order id with a
//! deadline, and the sweeper settles or releases what a crash or a lost reply left behind, after
//! asking PostgreSQL whether the order committed.
//!
//! Why this shape: it is what teams write first when PostgreSQL's row lock becomes the bottleneck,
//! and sold-out buyers — most of a flash sale — never reach PostgreSQL at all.

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
use crate::redis_stock;
use crate::reservation::{self, End, Reserved, Take};
use crate::strategy::Strategy;

/// How often a purchase rebuilds a missing stock key before giving up with 503.
const RECOVERIES: usize = 2;

/// The decrement-and-compensate strategy.
#[derive(Debug)]
pub struct RedisDecr {
    books: SqlPool,
    redis: RedisBackend,
    ttl: Duration,
    gate: RedisGate,
}

impl RedisDecr {
    pub fn new(books: impl Into<SqlPool>, redis: RedisBackend, reservation_ttl: Duration) -> Self {
        Self { books: books.into(), redis, ttl: reservation_ttl, gate: RedisGate::default() }
    }

    /// The seed's check: refuses early when the shelf already looks short, recovering missing keys.
    async fn precheck(&self, request: &PurchaseRequest) -> Result<Option<PurchaseOutcome>, StrategyError> {
        let keys = request.lines.iter().map(|line| self.redis.keys.stock(line.product_id.get()));
        let seen = redis_stock::read_counts(&self.redis, keys).await?;
        for (line, stock) in request.lines.iter().zip(seen) {
            let stock = match stock {
                Some(stock) => stock,
                None => match reservation::recover(&self.books, &self.redis, line.product_id).await? {
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
        if let Some(refusal) = self.gate.enter(&self.books, &request.lines).await? {
            return Ok(refusal);
        }
        let lines: Vec<_> = request.lines.iter().copied().collect();
        for _ in 0..=RECOVERIES {
            if let Some(refusal) = self.precheck(request).await? {
                return Ok(refusal);
            }
            let reserved = reservation::reserve(
                &self.redis,
                self.kind(),
                request.order_id,
                &request.lines,
                Take::Decrement,
                self.ttl,
            )
            .await;
            match reserved {
                Ok(Reserved::Taken(left)) => {
                    if let Some(at) = left.iter().position(|left| *left < 0) {
                        end(&self.books, &self.redis, request, End::Release).await;
                        return Ok(PurchaseOutcome::SoldOut(lines[at].product_id));
                    }
                    return persist_reserved(&self.books, &self.redis, self.kind(), request).await;
                }
                // The key vanished between the check and the decrement: check (and recover) again.
                Ok(Reserved::Missing(_)) => {}
                Ok(Reserved::Short(at)) => return Ok(PurchaseOutcome::SoldOut(lines[at].product_id)),
                Err(err) => {
                    end(&self.books, &self.redis, request, End::Release).await;
                    return Err(err);
                }
            }
        }
        Err(StrategyError::Unavailable("a stock key kept disappearing from Redis".into()))
    }

    async fn prepare(&self, _plan: &StockPlan) -> Result<(), StrategyError> {
        self.gate.forget();
        Ok(())
    }
}
