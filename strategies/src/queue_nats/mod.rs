//! `queue-nats` — `stream`'s atomic reservation in Redis, then the order published to a NATS
//! JetStream stream; the client hears `202 pending` only after the broker's PubAck, and a durable
//! pull [`Consumer`] commits the order to PostgreSQL through the shared batch writer and
//! acknowledges the message after the commit.
//!
//! Guarantee: never oversells — one Lua script checks and takes every line and records the order
//! as pending, all or nothing, so no accepted order lacks its units and no reservation lacks its
//! order. Loses nothing the client was told 202 about: the PubAck comes after the broker stored
//! the message (file storage), the message leaves the stream only when the consumer acknowledges
//! it, and the consumer acknowledges only after PostgreSQL committed the order and Redis settled
//! its units. Writes nothing twice: `Nats-Msg-Id` is the order id, so the broker drops a repeated
//! publish within its two-minute window, and beyond it the batch insert is idempotent on the order
//! id (`ON CONFLICT DO NOTHING`; only a newly inserted order moves PostgreSQL's stock).
//!
//! Crash behaviour, step by step:
//! - After the reservation, before the publish (server crash): the order is pending in Redis and
//!   in no broker. The consumer publishes such orphans again once the broker's stream is empty and
//!   they are older than two publish timeouts ([`Consumer::republish_orphans`]), so the order is
//!   persisted; the client, who heard nothing, finds it under its id.
//! - Publish refused or never sent (broker down, connection closed, no stream): the reservation is
//!   returned at once and the client hears 503 `unavailable`; nothing was sold.
//! - Publish sent, no PubAck in time: the broker may hold the order. The client hears 503
//!   `outcome_unknown` with the order id and the reservation stays; either the message is in the
//!   stream and gets persisted, or it is not and the orphan recovery publishes it. Either way it is
//!   persisted once, and the idempotency key stays claimed so a retry replays it.
//! - Consumer dies before its commit, or after it and before the acknowledgement: the broker
//!   redelivers the message after `ack_wait`; the insert either writes the order or finds it there,
//!   and the settle script moves the units once (its guard is the pending record).
//! - A message that keeps failing: after `max_deliveries` deliveries PostgreSQL settles whether
//!   the order exists ([`crate::fence::settle`]: committed, or void for good). A committed one is
//!   settled; a void one goes to the dead-letter stream and its units back on the shelf. The audit
//!   counts the dead letters.
//! - Broker restart: stored messages survive (file storage); the client reconnects by itself, and
//!   purchases meanwhile answer 503 with their reservation returned.
//!
//! Not covered: a Redis that restarts empty while orders wait in the broker loses their pending
//! records, and its mirror is rebuilt from PostgreSQL without their units until the consumer writes
//! them (the audit shows it as `redis_drift`); a reset while the broker is unreachable cannot drop
//! the orders it still holds.
//!
//! Why this shape: the buyer waits for one Redis script and one broker round trip (the broker's
//! own disk write), never for PostgreSQL; the consumer writes a hundred orders per transaction.
//! Compared with `stream`, the accepted order survives a restart of a Redis that keeps nothing on
//! disk, at the price of a second system and a network round trip per purchase.

use std::sync::LazyLock;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::gates::RedisGate;
use crate::kind::StrategyKind;
use crate::order::{
    OrderLine, OrderLines, OrderStatus, OrderView, PurchaseOutcome, PurchaseRequest, Receipt,
};
use crate::pg_driver::SqlPool;
use crate::plan::StockPlan;
use crate::redis_stream::{Payload, QueuedOrder};
use crate::reservation::{self, End};
use crate::strategy::{Backlog, Strategy};

pub mod broker;
pub mod consumer;

use broker::PublishFailure;
pub use broker::{BrokerNames, NatsBackend, NatsSettings};
pub use consumer::{Consumer, drain};

static RESERVE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/broker_reserve.lua")));
static FINISH: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/broker_finish.lua")));

/// How often a purchase rebuilds a missing stock key before giving up with 503.
const RECOVERIES: usize = 2;

const KIND: StrategyKind = StrategyKind::QueueNats;

/// The reserve-then-publish strategy.
#[derive(Debug)]
pub struct QueueNats {
    books: SqlPool,
    redis: RedisBackend,
    nats: NatsBackend,
    /// Order id → payload of every reserved order not yet settled.
    pending: String,
    gate: RedisGate,
}

impl QueueNats {
    pub fn new(books: impl Into<SqlPool>, redis: RedisBackend, nats: NatsBackend) -> Self {
        let pending = redis.keys.pending(KIND.as_str());
        Self { books: books.into(), redis, nats, pending, gate: RedisGate::default() }
    }

    async fn reserve(&self, request: &PurchaseRequest, payload: &str) -> Result<Reserved, StrategyError> {
        let mut invocation = RESERVE.prepare_invoke();
        invocation.key(&self.pending);
        reservation::push_line_keys(&mut invocation, &self.redis, &request.lines);
        invocation.arg(request.order_id.to_string()).arg(payload);
        for line in &request.lines {
            invocation.arg(line.quantity.get());
        }
        let mut conn = self.redis.conn.clone();
        let (code, detail): (i64, String) = invocation.invoke_async(&mut conn).await.map_err(|err| {
            // The script may have run: the order may be pending with its units taken. Nobody
            // publishes it but the orphan recovery, so the outcome is unknown, not refused.
            let may_have_run = !err.is_connection_refusal()
                && (err.is_timeout() || err.is_io_error() || err.is_connection_dropped());
            if may_have_run {
                StrategyError::InDoubt(format!(
                    "order {}: the reservation got no answer ({err}); it may be queued",
                    request.order_id
                ))
            } else {
                err.into()
            }
        })?;
        let line = || {
            detail
                .parse::<usize>()
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| request.lines.iter().nth(i).copied())
                .ok_or_else(|| {
                    StrategyError::Internal(format!("broker_reserve.lua answered {{{code}, {detail:?}}}"))
                })
        };
        Ok(match code {
            0 => Reserved::Taken,
            1 => Reserved::Short(line()?),
            2 => Reserved::Missing(line()?),
            _ => return Err(StrategyError::Internal(format!("broker_reserve.lua answered {code}"))),
        })
    }

    /// Publishes a reserved order; on a publish that certainly stored nothing, returns the units.
    async fn publish(
        &self,
        request: &PurchaseRequest,
        payload: String,
    ) -> Result<PurchaseOutcome, StrategyError> {
        let id = request.order_id;
        let published = match self.nats.connected().await {
            Ok(js) => {
                self.nats
                    .publish(&js, &self.nats.names.subject, &id.to_string(), &[], Bytes::from(payload))
                    .await
            }
            Err(err) => Err(PublishFailure::NotStored(err.to_string())),
        };
        match published {
            Ok(_) => Ok(PurchaseOutcome::Placed(Receipt {
                order_id: id,
                status: OrderStatus::Pending,
                strategy: KIND,
            })),
            Err(PublishFailure::NotStored(why)) => {
                match finish(&self.books, &self.redis, &[(id, &request.lines, End::Release)]).await {
                    Ok(_) => Err(StrategyError::Unavailable(why)),
                    // Still pending: the orphan recovery will publish it, so it may yet be sold.
                    Err(err) => Err(StrategyError::InDoubt(format!(
                        "order {id}: {why}; returning its reservation failed too ({err}), it may be queued later"
                    ))),
                }
            }
            Err(PublishFailure::Unknown(why)) => {
                Err(StrategyError::InDoubt(format!("order {id}: {why}; it may be queued")))
            }
        }
    }

    async fn pending_orders(&self) -> Result<Vec<QueuedOrder>, StrategyError> {
        let mut conn = self.redis.conn.clone();
        let payloads: Vec<Vec<u8>> = redis::cmd("HVALS").arg(&self.pending).query_async(&mut conn).await?;
        Ok(payloads.iter().filter_map(|payload| QueuedOrder::decode(payload).ok()).collect())
    }
}

enum Reserved {
    Taken,
    Short(OrderLine),
    Missing(OrderLine),
}

#[async_trait]
impl Strategy for QueueNats {
    fn kind(&self) -> StrategyKind {
        KIND
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        // PostgreSQL will not see these units before the client hears 202: no SQL strategy may
        // sell the same product meanwhile.
        if let Some(refusal) = self.gate.enter(&self.books, &request.lines).await? {
            return Ok(refusal);
        }
        let payload = Payload::of(KIND, request).encode();
        for _ in 0..=RECOVERIES {
            let line = match self.reserve(request, &payload).await? {
                Reserved::Taken => return self.publish(request, payload).await,
                Reserved::Short(line) => return Ok(PurchaseOutcome::SoldOut(line.product_id)),
                Reserved::Missing(line) => line,
            };
            if reservation::recover(&self.books, &self.redis, line.product_id).await?.is_none() {
                return Ok(PurchaseOutcome::UnknownProduct(line.product_id));
            }
        }
        Err(StrategyError::Unavailable("a stock key kept disappearing from Redis".into()))
    }

    async fn backlog(&self) -> Result<Option<Backlog>, StrategyError> {
        let pending = self.pending_orders().await?;
        let pending_units = pending
            .iter()
            .flat_map(|order| order.lines.iter().map(|line| i64::from(line.quantity.get())))
            .sum();
        let pending = i64::try_from(pending.len()).unwrap_or(i64::MAX);
        let broker = async {
            Ok::<_, StrategyError>((self.nats.queued_messages().await?, self.nats.dead_lettered().await?))
        };
        let (in_queue, dead_lettered) = match broker.await {
            Ok(counts) => counts,
            // A broker this process never reached holds nothing it sold: the other strategies'
            // audit must not fail with it.
            Err(err) if pending == 0 && !self.nats.is_connected() => {
                tracing::debug!(%err, "queue-nats: broker unreachable and nothing pending");
                (0, 0)
            }
            Err(err) => return Err(err),
        };
        Ok(Some(Backlog {
            pending,
            pending_units,
            in_queue: i64::try_from(in_queue).unwrap_or(i64::MAX),
            dead_lettered: i64::try_from(dead_lettered).unwrap_or(i64::MAX),
        }))
    }

    async fn prepare(&self, _plan: &StockPlan) -> Result<(), StrategyError> {
        self.gate.forget();
        Ok(())
    }

    async fn discard_queue(&self) -> Result<(), StrategyError> {
        match self.nats.purge().await {
            // A broker this process never reached holds nothing it queued; a reset of the other
            // strategies must not fail with it.
            Err(err) if !self.nats.is_connected() => {
                tracing::warn!(%err, "queue-nats: broker unreachable at the reset; its streams were not purged");
                Ok(())
            }
            other => other,
        }
    }

    async fn own_order(&self, id: Uuid) -> Result<Option<OrderView>, StrategyError> {
        let mut conn = self.redis.conn.clone();
        let payload: Option<Vec<u8>> =
            redis::cmd("HGET").arg(&self.pending).arg(id.to_string()).query_async(&mut conn).await?;
        let Some(payload) = payload else { return Ok(None) };
        let order = QueuedOrder::decode(&payload).map_err(StrategyError::Internal)?;
        Ok(Some(order.view(OrderStatus::Pending)))
    }
}

/// Ends pending orders in Redis, each atomically; an order that is no longer pending is left
/// alone. A stock key that went missing is recovered first. Returns how many still held units.
///
/// # Errors
/// When a backend does not answer; ending the same orders again is harmless.
pub(crate) async fn finish(
    books: &SqlPool,
    redis: &RedisBackend,
    orders: &[(Uuid, &OrderLines, End)],
) -> Result<i64, StrategyError> {
    if orders.is_empty() {
        return Ok(0);
    }
    let products: Vec<i64> = orders
        .iter()
        .flat_map(|(_, lines, _)| lines.iter().map(|line| line.product_id.get()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: std::collections::HashMap<i64, usize> =
        products.iter().enumerate().map(|(j, &id)| (id, j + 1)).collect();
    let pending = redis.keys.pending(KIND.as_str());
    for _ in 0..=products.len() {
        let mut invocation = FINISH.prepare_invoke();
        invocation.key(&pending);
        for &id in &products {
            invocation.key(redis.keys.stock(id));
        }
        for &id in &products {
            invocation.key(redis.keys.inflight(id));
        }
        invocation.arg(products.len());
        for (id, lines, end) in orders {
            invocation.arg(id.to_string()).arg(match end {
                End::Settle => "settle",
                End::Release => "release",
            });
            invocation.arg(lines.len());
            for line in lines.iter() {
                invocation.arg(index[&line.product_id.get()]).arg(line.quantity.get());
            }
        }
        let mut conn = redis.conn.clone();
        let held: i64 = invocation.invoke_async(&mut conn).await?;
        if held >= 0 {
            return Ok(held);
        }
        let product = usize::try_from(-held - 1)
            .ok()
            .and_then(|j| products.get(j))
            .and_then(|&id| crate::order::ProductId::parse(id).ok())
            .ok_or_else(|| StrategyError::Internal(format!("broker_finish.lua answered {held}")))?;
        reservation::recover(books, redis, product).await?;
    }
    Err(StrategyError::Unavailable("stock keys kept disappearing from Redis".into()))
}
