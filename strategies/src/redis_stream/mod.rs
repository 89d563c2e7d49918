//! Queued checkout over Redis streams: a purchase appends the order to a stream and answers
//! `202 pending`; a [`Worker`] persists it to PostgreSQL later.
//!
//! - [`stream`]: reserves the stock in the same script that appends the order (safe).
//! - [`stream_deferred`]: the seed's `stream` mode, which only checks the stock and lets the worker
//!   take it or cancel the order (unsafe by design).
//! - [`worker`]: the consumer that persists, retries, reclaims and dead-letters entries, and
//!   [`drain`] for tests and the load generator.
//!
//! Both strategies keep, under the Redis prefix of [`crate::RedisKeys`]: the stream itself (one
//! entry per accepted order: `order_id` and the JSON `payload`), the pending hash (order id →
//! payload, until the order is settled: what `GET /orders/{id}` shows as pending and what the
//! audit counts as backlog), the dead-letter stream, and, for `stream-deferred`, the worker's take
//! decisions (order id → `taken` | `short`). Every key reaches Lua through `KEYS`.
//!
//! What Redis holds is as durable as Redis: an accepted order survives a crash of the server or of
//! a worker (the entry waits in the stream, or in the consumer group's pending list until another
//! consumer reclaims it), but a Redis that keeps nothing on disk loses every accepted order not yet
//! persisted when it restarts.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::order::{
    Delivery, IdempotencyKey, OrderLine, OrderLines, OrderStatus, OrderView, PurchaseOutcome,
    PurchaseRequest, Receipt,
};
use crate::pg_driver::SqlPool;
use crate::redis_keys::RedisKeys;
use crate::reservation::Hold;
use crate::strategy::Backlog;

pub(crate) mod persist;
pub mod stream;
pub mod stream_deferred;
pub mod worker;

pub use stream::Stream;
pub use stream_deferred::StreamDeferred;
pub use tokio_util::sync::CancellationToken;
pub use worker::{Batch, DrainReport, Persisted, Step, Worker, WorkerSettings, drain, run_workers};

/// The consumer group every worker of a stream joins.
pub const GROUP: &str = "persisters";

/// Why the worker cancelled a `stream-deferred` order that no longer fit the stock.
pub const SOLD_OUT_AFTER_ACCEPTANCE: &str = "sold_out_after_acceptance";

static ENQUEUE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/stream_enqueue.lua")));

/// The keys of one queueing strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeys {
    /// The stream of accepted orders.
    pub stream: String,
    /// Order id → payload of every accepted order not yet settled.
    pub pending: String,
    /// Order id → the worker's take decision (`stream-deferred` only).
    pub taken: String,
    /// Entries given up on.
    pub dead_letter: String,
}

impl StreamKeys {
    pub fn new(keys: &RedisKeys, kind: StrategyKind) -> Self {
        let pending = keys.pending(kind.as_str());
        Self {
            stream: keys.stream(kind.as_str()),
            taken: format!("{pending}:taken"),
            pending,
            dead_letter: keys.dead_letter(kind.as_str()),
        }
    }
}

/// An accepted order as the stream and the pending hash carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueuedOrder {
    pub(crate) order_id: Uuid,
    pub(crate) strategy: StrategyKind,
    #[serde(rename = "items", deserialize_with = "lines_from_items")]
    pub(crate) lines: OrderLines,
    pub(crate) delivery: Delivery,
    pub(crate) user: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
}

/// Payloads are checked like requests: an entry written by hand cannot smuggle in a zero quantity
/// or a product listed twice.
fn lines_from_items<'de, D: Deserializer<'de>>(deserializer: D) -> Result<OrderLines, D::Error> {
    OrderLines::new(Vec::<OrderLine>::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

/// What [`QueuedOrder`] decodes, written from the request it borrows: accepting an order copies
/// its fields once, into the payload, instead of into an owned order first.
#[derive(Debug, Serialize)]
pub(crate) struct Payload<'a> {
    order_id: Uuid,
    strategy: StrategyKind,
    items: &'a OrderLines,
    delivery: &'a Delivery,
    user: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    created_at: DateTime<Utc>,
}

impl<'a> Payload<'a> {
    pub(crate) fn of(kind: StrategyKind, request: &'a PurchaseRequest) -> Self {
        Self {
            order_id: request.order_id,
            strategy: kind,
            items: &request.lines,
            delivery: &request.delivery,
            user: request.user.as_deref(),
            idempotency_key: request.idempotency_key.as_ref().map(IdempotencyKey::as_str),
            // PostgreSQL keeps microseconds: the pending and the persisted order read the same.
            created_at: Utc::now().trunc_subsecs(6),
        }
    }

    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).expect("an order always serialises")
    }
}

impl QueuedOrder {
    /// # Errors
    /// When the payload is not an order this crate wrote.
    pub(crate) fn decode(payload: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(payload).map_err(|err| format!("undecodable payload: {err}"))
    }

    pub(crate) fn view(self, status: OrderStatus) -> OrderView {
        OrderView {
            order_id: self.order_id,
            strategy: self.strategy,
            status,
            items: self.lines.iter().copied().collect(),
            delivery: self.delivery,
            user: self.user,
            idempotency_key: self.idempotency_key,
            reason: None,
            created_at: self.created_at,
        }
    }
}

/// What the enqueue script did.
enum Enqueued {
    Accepted,
    /// Line `i` (0-based) does not fit.
    Short(usize),
    /// Line `i`'s stock key is missing.
    Missing(usize),
}

/// What both stream strategies share: the backends, their keys, and the Redis side of a purchase.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    kind: StrategyKind,
    books: SqlPool,
    redis: RedisBackend,
    keys: StreamKeys,
}

impl Queue {
    pub(crate) fn new(kind: StrategyKind, books: SqlPool, redis: RedisBackend) -> Self {
        let keys = StreamKeys::new(&redis.keys, kind);
        Self { kind, books, redis, keys }
    }

    fn accepted(&self, request: &PurchaseRequest) -> PurchaseOutcome {
        PurchaseOutcome::Placed(Receipt {
            order_id: request.order_id,
            status: OrderStatus::Pending,
            strategy: self.kind,
        })
    }

    /// Runs the enqueue script, reserving every line when `reserve` is set.
    async fn enqueue(&self, request: &PurchaseRequest, reserve: bool) -> Result<Enqueued, StrategyError> {
        let payload = Payload::of(self.kind, request).encode();
        let lines = if reserve { request.lines.len() } else { 0 };
        // `EVALSHA` written straight into one command: `redis::ScriptInvocation` copies every key
        // and argument into a vector of its own first, then again into the command it sends.
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(ENQUEUE.get_hash()).arg(2 + 2 * lines).arg(&self.keys.pending).arg(&self.keys.stream);
        if reserve {
            for line in &request.lines {
                eval.arg(self.redis.keys.stock(line.product_id.get()));
            }
            for line in &request.lines {
                eval.arg(self.redis.keys.inflight(line.product_id.get()));
            }
        }
        let mut id = Uuid::encode_buffer();
        eval.arg(&*request.order_id.as_hyphenated().encode_lower(&mut id)).arg(payload);
        if reserve {
            for line in &request.lines {
                eval.arg(line.quantity.get());
            }
        }
        let mut conn = self.redis.conn.clone();
        let (code, detail): (i64, String) =
            evalsha(&ENQUEUE, &eval, &mut conn).await.map_err(|err| unanswered(request.order_id, err))?;
        let line = || {
            detail
                .parse::<usize>()
                .ok()
                .and_then(|i| i.checked_sub(1))
                .filter(|&i| i < request.lines.len())
                .ok_or_else(|| bad_reply(code, &detail))
        };
        Ok(match code {
            0 => Enqueued::Accepted,
            1 => Enqueued::Short(line()?),
            2 => Enqueued::Missing(line()?),
            _ => return Err(bad_reply(code, &detail)),
        })
    }

    async fn backlog(&self) -> Result<Backlog, StrategyError> {
        let mut conn = self.redis.conn.clone();
        let (payloads, in_queue, dead_lettered): (Vec<Vec<u8>>, i64, i64) = redis::pipe()
            .hvals(&self.keys.pending)
            .xlen(&self.keys.stream)
            .xlen(&self.keys.dead_letter)
            .query_async(&mut conn)
            .await?;
        let pending_units = payloads
            .iter()
            .filter_map(|payload| QueuedOrder::decode(payload).ok())
            .flat_map(|order| {
                order.lines.iter().map(|line| i64::from(line.quantity.get())).collect::<Vec<_>>()
            })
            .sum();
        let pending = i64::try_from(payloads.len()).unwrap_or(i64::MAX);
        Ok(Backlog { pending, pending_units, in_queue, dead_lettered })
    }

    /// The order while it waits for the worker; `None` once settled (PostgreSQL has it then).
    /// Between the worker's commit and its settle the order is in both and still reads pending.
    async fn own_order(&self, id: Uuid) -> Result<Option<OrderView>, StrategyError> {
        let mut conn = self.redis.conn.clone();
        let payload: Option<Vec<u8>> =
            redis::cmd("HGET").arg(&self.keys.pending).arg(id.to_string()).query_async(&mut conn).await?;
        let Some(payload) = payload else { return Ok(None) };
        let order = QueuedOrder::decode(&payload).map_err(StrategyError::Internal)?;
        Ok(Some(order.view(OrderStatus::Pending)))
    }
}

/// Sends a prepared `EVALSHA` of `script`; on `NOSCRIPT` (a Redis that restarted or flushed its
/// scripts) loads the script and sends it again, as `redis::Script` does.
async fn evalsha<T: redis::FromRedisValue>(
    script: &redis::Script,
    eval: &redis::Cmd,
    conn: &mut crate::backends::RedisConn,
) -> redis::RedisResult<T> {
    match eval.query_async(conn).await {
        Err(err) if err.code() == Some("NOSCRIPT") => {
            script.load_async(conn).await?;
            eval.query_async(conn).await
        }
        answer => answer,
    }
}

/// Orders of queueing strategy `kind` that hold units: every pending order when the strategy
/// reserves at purchase (`stream`), else only the ones whose take decision says `taken`
/// (`stream-deferred`). The hash named in each hold is the one whose field keeps it alive: the
/// settle script removes that field in the call that moves the units.
async fn holds_of(redis: &RedisBackend, kind: StrategyKind) -> Result<Vec<Hold>, StrategyError> {
    let keys = StreamKeys::new(&redis.keys, kind);
    let mut conn = redis.conn.clone();
    let (hash, payloads): (&String, Vec<Vec<u8>>) = if kind.spec().reserves_before_accepting {
        let all: HashMap<String, Vec<u8>> =
            redis::cmd("HGETALL").arg(&keys.pending).query_async(&mut conn).await?;
        (&keys.pending, all.into_values().collect())
    } else {
        let decisions: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&keys.taken).query_async(&mut conn).await?;
        let taken: Vec<&String> =
            decisions.iter().filter(|(_, decision)| *decision == "taken").map(|(id, _)| id).collect();
        let mut payloads = Vec::with_capacity(taken.len());
        for chunk in taken.chunks(1_000) {
            let part: Vec<Option<Vec<u8>>> =
                redis::cmd("HMGET").arg(&keys.pending).arg(chunk).query_async(&mut conn).await?;
            payloads.extend(part.into_iter().flatten());
        }
        (&keys.taken, payloads)
    };
    Ok(payloads
        .iter()
        .filter_map(|payload| QueuedOrder::decode(payload).ok())
        .map(|order| Hold {
            order_id: order.order_id,
            strategy: kind,
            hash: hash.clone(),
            lines: order.lines,
            deadline_ms: None,
        })
        .collect())
}

/// Holds of every queueing strategy, for [`crate::reservation::holds`].
///
/// # Errors
/// When Redis does not answer.
pub(crate) async fn queued_holds(redis: &RedisBackend) -> Result<Vec<Hold>, StrategyError> {
    let mut out = Vec::new();
    for kind in StrategyKind::ALL.into_iter().filter(|kind| kind.spec().queued) {
        out.extend(holds_of(redis, kind).await?);
    }
    Ok(out)
}

/// The enqueue script was sent and no answer came back: it may have run, and then the order is in
/// the stream and a worker will persist it. The buyer must hear that the outcome is unknown (with
/// the order id), and the idempotency key must stay claimed, or a retry with the key would queue a
/// second order that the worker then drops. Only a refused connection certainly sent nothing.
fn unanswered(order: Uuid, err: redis::RedisError) -> StrategyError {
    let may_have_run = !err.is_connection_refusal()
        && (err.is_timeout() || err.is_io_error() || err.is_connection_dropped());
    if may_have_run {
        StrategyError::InDoubt(format!("order {order}: the enqueue got no answer ({err}); it may be queued"))
    } else {
        err.into()
    }
}

fn bad_reply(code: i64, detail: &str) -> StrategyError {
    StrategyError::Internal(format!("stream_enqueue.lua answered {{{code}, {detail:?}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{ProductId, Quantity};

    fn request() -> PurchaseRequest {
        let line = |id, q| OrderLine {
            product_id: ProductId::parse(id).unwrap(),
            quantity: Quantity::parse(q).unwrap(),
        };
        PurchaseRequest {
            order_id: Uuid::new_v4(),
            lines: OrderLines::new(vec![line(7, 2), line(3, 1)]).unwrap(),
            delivery: Delivery::new("Kyiv".into(), "+380".into(), "a@b.c".into()).unwrap(),
            user: Some("buyer".into()),
            idempotency_key: Some(IdempotencyKey::parse("k-1").unwrap()),
        }
    }

    #[test]
    fn payload_round_trips() {
        let request = request();
        let payload = Payload::of(StrategyKind::Stream, &request);
        let order = QueuedOrder::decode(payload.encode().as_bytes()).unwrap();
        assert_eq!(
            (order.order_id, order.strategy, &order.lines, &order.delivery),
            (request.order_id, StrategyKind::Stream, &request.lines, &request.delivery)
        );
        assert_eq!((order.user.as_deref(), order.idempotency_key.as_deref()), (Some("buyer"), Some("k-1")));
        assert_eq!(order.created_at, payload.created_at, "to the microsecond PostgreSQL keeps");
    }

    #[test]
    fn payload_lines_are_validated() {
        let request = request();
        let mut json: serde_json::Value =
            serde_json::from_str(&Payload::of(StrategyKind::Stream, &request).encode()).unwrap();
        json["items"] =
            serde_json::json!([{ "product_id": 3, "quantity": 1 }, { "product_id": 3, "quantity": 1 }]);
        let err = QueuedOrder::decode(json.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("appears twice"), "{err}");
        json["items"] = serde_json::json!([{ "product_id": 3, "quantity": 0 }]);
        assert!(QueuedOrder::decode(json.to_string().as_bytes()).is_err());
        assert!(QueuedOrder::decode(b"not json").is_err());
    }

    #[test]
    fn keys_stay_under_the_prefix() {
        let keys = StreamKeys::new(&RedisKeys::new("t:"), StrategyKind::StreamDeferred);
        assert_eq!(keys.stream, "t:stream:stream-deferred");
        assert_eq!(keys.pending, "t:pending:stream-deferred");
        assert_eq!(keys.taken, "t:pending:stream-deferred:taken");
        assert_eq!(keys.dead_letter, "t:dead:stream-deferred");
    }
}
