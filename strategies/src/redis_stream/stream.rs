//! `stream` — one Lua script checks and reserves every line of the order in Redis, records it as
//! pending and appends it to the strategy's stream, atomically; the client hears `202 pending`,
//! and a [`Worker`](super::Worker) commits the order and the same decrement of PostgreSQL's stock
//! later.
//!
//! Guarantee: never oversells — the reservation is `redis-lua`'s all-or-nothing check-and-take,
//! and the order enters the stream in the same script, so no accepted order lacks its units and
//! no reservation lacks its order. No accepted order is cancelled: its units are already taken, so
//! the worker only has to write it. Idempotency keys are claimed in PostgreSQL before the script
//! runs (`crate::idempotency`), so copies of a request sent at once yield one order, and a reply
//! lost after the script ran answers `InDoubt` and keeps the claim, so a retry replays the order. Durable as far as Redis is: an
//! accepted order survives a crash of the server or the worker; it does not survive a restart of
//! a Redis that keeps nothing on disk (the orders accepted but not yet persisted are gone, and the
//! stock mirror is rebuilt from PostgreSQL).
//!
//! Crash behaviour: the script runs whole or not at all. After it, the order waits in the stream
//! (or in the consumer group's pending list, if a worker died holding it, until another consumer
//! reclaims it with `XAUTOCLAIM`); its units count as in flight, so rebuilding a lost stock key
//! from PostgreSQL subtracts them. A worker that dies after its PostgreSQL commit and before the
//! settle script gets the entry redelivered; the insert is idempotent (`ON CONFLICT DO NOTHING`)
//! and only a newly inserted order moves PostgreSQL's stock, so nothing is written twice. An entry
//! that keeps failing goes to the dead-letter stream with its units back on the shelf — the one way
//! an accepted order is not persisted, and the audit counts it.
//!
//! Why this shape: the request path costs one Redis round trip whatever the contention — sold-out
//! buyers never reach PostgreSQL and winners wait for no commit — and the worker writes to
//! PostgreSQL in batches, one transaction for up to `--worker-batch` orders (500) instead of one
//! per order.

use async_trait::async_trait;
use uuid::Uuid;

use super::{Enqueued, Queue};
use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::gates::RedisGate;
use crate::kind::StrategyKind;
use crate::order::{OrderView, PurchaseOutcome, PurchaseRequest};
use crate::pg_driver::SqlPool;
use crate::plan::StockPlan;
use crate::reservation;
use crate::strategy::{Backlog, Strategy};

/// How often a purchase rebuilds a missing stock key before giving up with 503.
const RECOVERIES: usize = 2;

/// The reserve-then-queue strategy.
#[derive(Debug)]
pub struct Stream {
    queue: Queue,
    gate: RedisGate,
}

impl Stream {
    pub fn new(books: impl Into<SqlPool>, redis: RedisBackend) -> Self {
        Self { queue: Queue::new(StrategyKind::Stream, books.into(), redis), gate: RedisGate::default() }
    }
}

#[async_trait]
impl Strategy for Stream {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Stream
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        // PostgreSQL will not see these units before the client hears 202: no SQL strategy may
        // sell the same product meanwhile.
        if let Some(refusal) = self.gate.enter(&self.queue.books, &request.lines).await? {
            return Ok(refusal);
        }
        for _ in 0..=RECOVERIES {
            let line = match self.queue.enqueue(request, true).await? {
                Enqueued::Accepted => return Ok(self.queue.accepted(request)),
                Enqueued::Short(at) => return Ok(PurchaseOutcome::SoldOut(nth(request, at).product_id)),
                Enqueued::Missing(at) => nth(request, at),
            };
            if reservation::recover(&self.queue.books, &self.queue.redis, line.product_id).await?.is_none() {
                return Ok(PurchaseOutcome::UnknownProduct(line.product_id));
            }
        }
        Err(StrategyError::Unavailable("a stock key kept disappearing from Redis".into()))
    }

    async fn backlog(&self) -> Result<Option<Backlog>, StrategyError> {
        Ok(Some(self.queue.backlog().await?))
    }

    async fn prepare(&self, _plan: &StockPlan) -> Result<(), StrategyError> {
        self.gate.forget();
        Ok(())
    }

    async fn own_order(&self, id: Uuid) -> Result<Option<OrderView>, StrategyError> {
        self.queue.own_order(id).await
    }
}

/// Line `at` of the request; the script only names lines it was given.
fn nth(request: &PurchaseRequest, at: usize) -> crate::order::OrderLine {
    *request.lines.iter().nth(at).expect("enqueue checks the line index")
}
