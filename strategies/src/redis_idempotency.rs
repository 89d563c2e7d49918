//! Idempotency keys for strategies that reserve in Redis before PostgreSQL sees the order.
//!
//! PostgreSQL's unique index alone is not enough there: twenty copies of one request would each
//! reserve units in Redis before nineteen of them lose at the index, and the reservations they
//! hold meanwhile turn other buyers away. So the key is claimed in Redis first (`SET NX`), and
//! copies that lose the claim wait for the winner's order instead of reserving.

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::PgPool;

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::order::{PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::receipt_for_key;

static RELEASE_KEY: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/release_key.lua")));

/// How long a claim outlives a crashed owner.
const CLAIM_TTL_SECS: u64 = 3_600;
/// How long a copy waits for the first request's order before answering 503.
const WAIT_FOR_OWNER: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(5);

/// Where a request stands with its idempotency key.
#[derive(Debug)]
pub(crate) enum Claim {
    /// No key: nothing to guard.
    None,
    /// This request owns the key and must release it unless its order is placed.
    Owned,
    /// Another request with this key placed its order.
    Replay(Receipt),
}

/// Claims `request`'s idempotency key, or waits for the request that holds it.
///
/// # Errors
/// When a backend does not answer, or the owner neither placed an order nor let go in time.
pub(crate) async fn claim(
    pg: &PgPool,
    redis: &RedisBackend,
    request: &PurchaseRequest,
) -> Result<Claim, StrategyError> {
    let Some(key) = &request.idempotency_key else { return Ok(Claim::None) };
    if let Some(first) = receipt_for_key(pg, request).await? {
        return Ok(Claim::Replay(first));
    }
    let redis_key = redis.keys.idempotency(key.as_str());
    let order_id = request.order_id.to_string();
    let mut conn = redis.conn.clone();
    let deadline = tokio::time::Instant::now() + WAIT_FOR_OWNER;
    loop {
        let claimed: bool = redis::cmd("SET")
            .arg(&redis_key)
            .arg(&order_id)
            .arg("NX")
            .arg("EX")
            .arg(CLAIM_TTL_SECS)
            .query_async::<Option<String>>(&mut conn)
            .await?
            .is_some();
        if claimed {
            return Ok(Claim::Owned);
        }
        if let Some(first) = receipt_for_key(pg, request).await? {
            return Ok(Claim::Replay(first));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StrategyError::Unavailable(
                "another request with this Idempotency-Key is still in progress".into(),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Lets go of an owned key after the request ended without an order, so a retry can try again.
///
/// # Errors
/// When Redis does not answer; the key then expires on its own.
pub(crate) async fn release(
    redis: &RedisBackend,
    request: &PurchaseRequest,
    claim: &Claim,
    outcome: &Result<PurchaseOutcome, StrategyError>,
) -> Result<(), StrategyError> {
    let placed = matches!(outcome, Ok(PurchaseOutcome::Placed(_) | PurchaseOutcome::Replayed(_)));
    let (Claim::Owned, Some(key), false) = (claim, &request.idempotency_key, placed) else { return Ok(()) };
    let mut conn = redis.conn.clone();
    RELEASE_KEY
        .key(redis.keys.idempotency(key.as_str()))
        .arg(request.order_id.to_string())
        .invoke_async::<i64>(&mut conn)
        .await?;
    Ok(())
}

/// Runs `purchase` under `request`'s idempotency key: copies of a request get the first one's
/// order, and a request that ends without an order frees the key.
///
/// # Errors
/// Whatever `purchase` or the claim returns.
pub(crate) async fn guarded<F>(
    pg: &PgPool,
    redis: &RedisBackend,
    request: &PurchaseRequest,
    purchase: F,
) -> Result<PurchaseOutcome, StrategyError>
where
    F: Future<Output = Result<PurchaseOutcome, StrategyError>>,
{
    let claim = claim(pg, redis, request).await?;
    if let Claim::Replay(first) = claim {
        return Ok(PurchaseOutcome::Replayed(first));
    }
    let outcome = purchase.await;
    release(redis, request, &claim, &outcome).await?;
    outcome
}
