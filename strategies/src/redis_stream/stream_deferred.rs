//! `stream-deferred` — the seed's `stream` mode, kept faithfully: read the stock with `MGET`,
//! and if it looks sufficient append the order to a stream and answer `202 pending`, taking
//! nothing. The [`Worker`](super::Worker) decides later: one script takes every line of the order
//! atomically and the order is persisted as confirmed, or, when the stock no longer covers it, the
//! order is persisted as `cancelled` with the reason `sold_out_after_acceptance`.
//!
//! Guarantee: unsafe by design. It never oversells — the worker's take is an atomic
//! check-and-decrement — but under contention far more buyers pass the check than there are units,
//! and every one of them hears 202: the excess are told "accepted" and cancelled afterwards (the
//! audit's `accepted_then_cancelled`). Durable as far as Redis is, like `stream`: accepted orders
//! survive a server or worker crash, not a restart of a Redis that keeps nothing on disk.
//!
//! Crash behaviour: a crash before the append leaves nothing. Once appended, the order waits in
//! the stream, or in the consumer group's pending list until another consumer reclaims it. The
//! worker records its take decision per order id in the same script that takes the stock, so a
//! worker that dies between the take and the PostgreSQL commit leaves the units in flight and the
//! redelivered entry reuses the decision instead of taking twice; one that dies after the commit
//! gets the entry back, finds the order already inserted and only settles it. An entry that keeps
//! failing goes to the dead-letter stream, giving back the units its take held.
//!
//! Why this shape: it is what the seed shipped, and it shows what an unreserved queue costs — the
//! check is stale the moment it is read. Idempotency keys are claimed in PostgreSQL before the
//! append, like every strategy's (`crate::idempotency`), so a retried request never queues a
//! second order.

use async_trait::async_trait;
use uuid::Uuid;

use super::{Enqueued, Queue};
use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::order::{OrderView, PurchaseOutcome, PurchaseRequest};
use crate::pg_driver::SqlPool;
use crate::redis_stock;
use crate::reservation;
use crate::strategy::{Backlog, Strategy};

/// The check-then-queue strategy.
#[derive(Debug, Clone)]
pub struct StreamDeferred {
    queue: Queue,
}

impl StreamDeferred {
    pub fn new(books: impl Into<SqlPool>, redis: RedisBackend) -> Self {
        Self { queue: Queue::new(StrategyKind::StreamDeferred, books.into(), redis) }
    }

    /// The seed's check: every line's stock as Redis shows it now.
    async fn look(&self, request: &PurchaseRequest) -> Result<Vec<Option<i64>>, StrategyError> {
        let redis = &self.queue.redis;
        redis_stock::read_counts(
            redis,
            request.lines.iter().map(|line| redis.keys.stock(line.product_id.get())),
        )
        .await
    }
}

#[async_trait]
impl Strategy for StreamDeferred {
    fn kind(&self) -> StrategyKind {
        StrategyKind::StreamDeferred
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        let stocks = self.look(request).await?;
        for (line, stock) in request.lines.iter().zip(stocks) {
            let stock = match stock {
                Some(stock) => stock,
                None => {
                    match reservation::recover(&self.queue.books, &self.queue.redis, line.product_id).await? {
                        Some(stock) => stock,
                        None => return Ok(PurchaseOutcome::UnknownProduct(line.product_id)),
                    }
                }
            };
            if stock < i64::from(line.quantity.get()) {
                return Ok(PurchaseOutcome::SoldOut(line.product_id));
            }
        }
        match self.queue.enqueue(request, false).await? {
            Enqueued::Accepted => Ok(self.queue.accepted(request)),
            Enqueued::Short(_) | Enqueued::Missing(_) => {
                Err(StrategyError::Internal("an enqueue without reservation looked at the stock".into()))
            }
        }
    }

    async fn backlog(&self) -> Result<Option<Backlog>, StrategyError> {
        Ok(Some(self.queue.backlog().await?))
    }

    async fn own_order(&self, id: Uuid) -> Result<Option<OrderView>, StrategyError> {
        self.queue.own_order(id).await
    }
}
