//! Persisting an order whose units Redis already reserved: the order, its lines and the same
//! decrement on PostgreSQL's stock, in one transaction, so the two stocks stay equal.

use sqlx::PgPool;

use crate::backends::RedisBackend;
use crate::error::{StrategyError, is_duplicate_key};
use crate::kind::StrategyKind;
use crate::order::{OrderLines, OrderStatus, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::{insert_order, replay_after_conflict};
use crate::redis_stock::read_counts;
use crate::sql_stock::take_lines;

/// Writes `request` to PostgreSQL as confirmed, moving PostgreSQL's stock by the units Redis took.
/// Redis was the gate; PostgreSQL only follows, so its decrement is unconditional.
///
/// # Errors
/// The raw database error; the caller gives the reservation back.
async fn write_order(pg: &PgPool, kind: StrategyKind, request: &PurchaseRequest) -> Result<(), sqlx::Error> {
    let mut tx = pg.begin().await?;
    take_lines(&mut tx, &request.lines).await?;
    insert_order(&mut tx, kind, OrderStatus::Confirmed, request).await?;
    tx.commit().await
}

/// Persists a reserved order and settles Redis: on success the units stop being in flight; on
/// failure they go back on the shelf. A taken idempotency key answers with the first order.
///
/// # Errors
/// [`StrategyError::Unavailable`] when PostgreSQL fails (the reservation is then given back, and
/// the client may retry).
pub(crate) async fn persist_reserved(
    pg: &PgPool,
    redis: &RedisBackend,
    kind: StrategyKind,
    request: &PurchaseRequest,
) -> Result<PurchaseOutcome, StrategyError> {
    match write_order(pg, kind, request).await {
        Ok(()) => {
            settle(redis, &request.lines).await;
            Ok(PurchaseOutcome::Placed(Receipt::confirmed(request.order_id, kind)))
        }
        Err(err) => {
            release(redis, &request.lines).await?;
            if is_duplicate_key(&err) {
                Ok(PurchaseOutcome::Replayed(replay_after_conflict(pg, request).await?))
            } else {
                Err(err.into())
            }
        }
    }
}

/// The units are in PostgreSQL now: they no longer count as in flight. A failure here leaves the
/// in-flight count too high, which can only make a later key recovery undersell; it is logged and
/// repaired by a reconcile.
async fn settle(redis: &RedisBackend, lines: &OrderLines) {
    let mut conn = redis.conn.clone();
    let mut pipe = redis::pipe();
    for line in lines {
        pipe.decr(redis.keys.inflight(line.product_id.get()), line.quantity.get()).ignore();
    }
    if let Err(err) = pipe.query_async::<()>(&mut conn).await {
        tracing::warn!(%err, "could not settle in-flight units after persisting an order");
    }
}

/// Puts reserved units back on the shelf, atomically across lines.
///
/// # Errors
/// When Redis does not answer: the units then stay reserved (an undersell the audit shows as
/// `redis_drift` and a reconcile repairs).
pub(crate) async fn release(redis: &RedisBackend, lines: &OrderLines) -> Result<(), StrategyError> {
    static RELEASE: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(include_str!("../lua/release.lua")));
    let mut invocation = RELEASE.prepare_invoke();
    push_lines(&mut invocation, redis, lines);
    let mut conn = redis.conn.clone();
    invocation.invoke_async::<i64>(&mut conn).await?;
    Ok(())
}

/// Adds stock keys, in-flight keys and quantities for `lines` to a script call, in the layout
/// `reserve.lua` and `release.lua` expect.
pub(crate) fn push_lines(
    invocation: &mut redis::ScriptInvocation<'_>,
    redis: &RedisBackend,
    lines: &OrderLines,
) {
    for line in lines {
        invocation.key(redis.keys.stock(line.product_id.get()));
    }
    for line in lines {
        invocation.key(redis.keys.inflight(line.product_id.get()));
    }
    for line in lines {
        invocation.arg(line.quantity.get());
    }
}

/// Units of each line currently on Redis's shelf, `None` where the key is missing.
///
/// # Errors
/// When Redis does not answer.
pub(crate) async fn shelf(
    redis: &RedisBackend,
    lines: &OrderLines,
) -> Result<Vec<Option<i64>>, StrategyError> {
    read_counts(redis, lines.iter().map(|line| redis.keys.stock(line.product_id.get()))).await
}
