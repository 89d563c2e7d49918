//! One idempotency namespace for every strategy.
//!
//! `Idempotency-Key` means "this purchase, once", whatever strategy the request names. Each
//! strategy guarding keys its own way (the in-process baseline in its books, the SQL strategies
//! through the orders table's unique index, the queued ones in Redis) let one key make an order
//! in each, and let a later synchronous order push a queued one out after its client had heard 202.
//! So every keyed purchase first claims its key in PostgreSQL (`idempotency_claims`, one row per
//! key naming the order id), before any stock moves; this layer wraps every strategy in the
//! registry, so none can skip it.
//!
//! - The claimant runs the purchase. If it ends with no order (sold out, refused, a failure that
//!   certainly wrote nothing), the claim is deleted so a retry can buy; otherwise it stays.
//! - Every other request with the key replays the claimed order, wherever it lives (PostgreSQL,
//!   a queue's pending orders, the baseline's books), and waits for it while the claimant is still
//!   working. A body that differs from the first one is refused (`KeyReused`, 422).
//! - A claim whose order appears nowhere long after it was made belongs to a purchase that died:
//!   its order id is voided ([`crate::fence`]), so it can never commit, and the key is taken over.
//!
//! Unkeyed purchases pass straight through, at no cost.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::FromRow;
use uuid::Uuid;

use crate::coalescer::BatchSizeSummary;
use crate::dialect::ClaimStep;
use crate::error::StrategyError;
use crate::fence::{self, Doubt};
use crate::kind::StrategyKind;
use crate::order::{OrderStatus, OrderView, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::pg_driver::{DbError, SqlPool, Statements};
use crate::plan::StockPlan;
use crate::strategy::{Backlog, OrderEntry, OwnLedger, Strategy};

/// How long a copy waits for the claimant's order before answering 503.
const WAIT_FOR_OWNER: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);
/// A claim older than this whose order is nowhere belongs to a purchase that died.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

pub(crate) const CLAIM: &str = r#"
WITH mine AS (
    INSERT INTO idempotency_claims (idempotency_key, order_id, strategy, fingerprint)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING order_id, strategy, fingerprint, 0::float8 AS age_secs, true AS mine
)
SELECT * FROM mine
UNION ALL
SELECT order_id, strategy, fingerprint, EXTRACT(EPOCH FROM now() - claimed_at)::float8, false
FROM idempotency_claims WHERE idempotency_key = $1 AND NOT EXISTS (SELECT 1 FROM mine)
"#;

pub(crate) const UNCLAIM: &str =
    "DELETE FROM idempotency_claims WHERE idempotency_key = $1 AND order_id = $2";

pub(crate) const RECEIPT: &str = "SELECT status, strategy FROM orders WHERE id = $1 AND status <> 'void'";

#[derive(FromRow)]
struct ClaimRow {
    order_id: Uuid,
    strategy: String,
    fingerprint: String,
    age_secs: f64,
    mine: bool,
}

/// Every strategy's raw instance, for finding a claimed order wherever it lives.
pub(crate) type Peers = Arc<Vec<(StrategyKind, Arc<dyn Strategy>)>>;

/// A strategy behind the shared idempotency claim.
pub(crate) struct Keyed {
    inner: Arc<dyn Strategy>,
    books: SqlPool,
    peers: Peers,
}

impl fmt::Debug for Keyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl Keyed {
    pub(crate) fn wrap(inner: Arc<dyn Strategy>, books: SqlPool, peers: Peers) -> Arc<dyn Strategy> {
        Arc::new(Self { inner, books, peers })
    }

    /// Claims `key` for `request`: the claim row, ours (`mine`) or the one holding the key; none
    /// when the holder was deleted in between.
    async fn claim_row(
        &self,
        key: &str,
        request: &PurchaseRequest,
        fingerprint: &str,
    ) -> Result<Option<ClaimRow>, StrategyError> {
        let claim = self.books.backend().sql().claims.claim;
        if let (SqlPool::Postgres(pg), ClaimStep::Returning(statement)) = (&self.books, claim) {
            return Ok(sqlx::query_as(statement)
                .bind(key)
                .bind(request.order_id)
                .bind(self.kind().as_str())
                .bind(fingerprint)
                .fetch_optional(pg)
                .await?);
        }
        let mut conn = self.books.acquire().await?;
        let params: [&dyn crate::pg_driver::Param; 4] =
            [&key, &request.order_id, &self.kind().as_str(), &fingerprint];
        let (insert, holder) = match claim {
            ClaimStep::InsertThenRead { insert, holder } => (insert, holder),
            ClaimStep::Returning(statement) => {
                let Some(row) = conn.fetch_optional(statement, &params).await? else { return Ok(None) };
                return Ok(Some(ClaimRow {
                    order_id: row.get(0)?,
                    strategy: row.get(1)?,
                    fingerprint: row.get(2)?,
                    age_secs: row.get(3)?,
                    mine: row.get(4)?,
                }));
            }
        };
        if conn.execute(insert, &params).await? == 1 {
            let (order_id, strategy) = (request.order_id, self.kind().as_str().to_owned());
            return Ok(Some(ClaimRow {
                order_id,
                strategy,
                fingerprint: fingerprint.to_owned(),
                age_secs: 0.0,
                mine: true,
            }));
        }
        let Some(row) = conn.fetch_optional(holder, &[&key]).await? else { return Ok(None) };
        Ok(Some(ClaimRow {
            order_id: row.get(0)?,
            strategy: row.get(1)?,
            fingerprint: row.get(2)?,
            age_secs: row.get(3)?,
            mine: false,
        }))
    }

    /// Frees `key` if order `id` still holds it.
    async fn unclaim(&self, key: &str, id: Uuid) -> Result<(), StrategyError> {
        match &self.books {
            SqlPool::Postgres(pg) => {
                sqlx::query(UNCLAIM).bind(key).bind(id).execute(pg).await?;
            }
            books => {
                let unclaim = books.backend().sql().claims.unclaim;
                books.acquire().await?.execute(unclaim, &[&key, &id]).await?;
            }
        }
        Ok(())
    }

    /// `status, strategy` of the live order `id`.
    async fn receipt_row(&self, id: Uuid) -> Result<Option<(String, String)>, StrategyError> {
        match &self.books {
            SqlPool::Postgres(pg) => Ok(sqlx::query_as(RECEIPT).bind(id).fetch_optional(pg).await?),
            books => {
                let receipt = books.backend().sql().claims.receipt;
                let row = books.acquire().await?.fetch_optional(receipt, &[&id]).await?;
                Ok(row.map(|row| Ok::<_, DbError>((row.get(0)?, row.get(1)?))).transpose()?)
            }
        }
    }

    /// The order `id` as its client should hear of it again, if it exists anywhere yet.
    async fn find(&self, id: Uuid, strategy: StrategyKind) -> Result<Option<Receipt>, StrategyError> {
        let row = self.receipt_row(id).await?;
        if let Some((status, strategy)) = row {
            let status = OrderStatus::from_db(&status)
                .ok_or_else(|| StrategyError::Internal(format!("order {id} has status {status:?}")))?;
            let strategy = strategy
                .parse()
                .map_err(|_| StrategyError::Internal(format!("order {id} names strategy {strategy:?}")))?;
            return Ok(Some(Receipt { order_id: id, status, strategy }));
        }
        let Some((_, owner)) = self.peers.iter().find(|(kind, _)| *kind == strategy) else { return Ok(None) };
        Ok(owner.own_order(id).await?.map(|order| Receipt {
            order_id: order.order_id,
            status: order.status,
            strategy: order.strategy,
        }))
    }

    /// Claims the key for this request, or says what the request holding it did.
    async fn claim(
        &self,
        key: &str,
        request: &PurchaseRequest,
        fingerprint: &str,
    ) -> Result<Claim, StrategyError> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OWNER;
        loop {
            let row = self.claim_row(key, request, fingerprint).await?;
            if let Some(row) = row {
                if row.mine {
                    return Ok(Claim::Mine);
                }
                if row.fingerprint != fingerprint {
                    return Ok(Claim::Reused(row.order_id));
                }
                let owner: StrategyKind = row.strategy.parse().map_err(|_| {
                    StrategyError::Internal(format!("idempotency claim names strategy {:?}", row.strategy))
                })?;
                if let Some(first) = self.find(row.order_id, owner).await? {
                    return Ok(Claim::Replay(first));
                }
                if row.age_secs >= ABANDONED_AFTER.as_secs_f64() {
                    if fence::settle_on(&self.books, owner, row.order_id, "idempotency_claim_abandoned")
                        .await?
                        == Doubt::Void
                    {
                        tracing::warn!(key, order = %row.order_id, "took over an idempotency key whose purchase died");
                        self.unclaim(key, row.order_id).await?;
                    }
                    continue;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(StrategyError::Unavailable(format!(
                        "another request with this Idempotency-Key (order {}) is still in progress",
                        row.order_id
                    )));
                }
            }
            // No row: the claim was deleted between our insert and our read. Claim again.
            tokio::time::sleep(POLL).await;
        }
    }
}

enum Claim {
    Mine,
    Replay(Receipt),
    Reused(Uuid),
}

/// What makes two requests with one key the same purchase: the lines, the delivery and the buyer.
/// The strategy is not part of it: a retry through another strategy replays the first order.
fn fingerprint(request: &PurchaseRequest) -> String {
    let mut text = String::new();
    for line in &request.lines {
        text.push_str(&format!("{}x{},", line.product_id, line.quantity.get()));
    }
    let delivery = &request.delivery;
    for field in [&delivery.address, &delivery.phone, &delivery.email] {
        text.push('|');
        text.push_str(field);
    }
    text.push('|');
    text.push_str(request.user.as_deref().unwrap_or(""));
    // FNV-1a: stable across builds and platforms, unlike the standard hasher.
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[async_trait]
impl Strategy for Keyed {
    fn kind(&self) -> StrategyKind {
        self.inner.kind()
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        let Some(key) = &request.idempotency_key else { return self.inner.purchase(request).await };
        match self.claim(key.as_str(), request, &fingerprint(request)).await? {
            Claim::Mine => {}
            Claim::Replay(first) => return Ok(PurchaseOutcome::Replayed(first)),
            Claim::Reused(first) => return Ok(PurchaseOutcome::KeyReused(first)),
        }
        let outcome = self.inner.purchase(request).await;
        let keep = match &outcome {
            Ok(PurchaseOutcome::Placed(_) | PurchaseOutcome::Replayed(_)) => true,
            Ok(_) => false,
            Err(err) => err.may_have_taken_effect(),
        };
        if !keep && let Err(err) = self.unclaim(key.as_str(), request.order_id).await {
            // The claim then outlives the purchase; a retry takes it over once it is abandoned.
            tracing::warn!(%err, "could not free an idempotency key after a purchase that placed nothing");
        }
        outcome
    }

    async fn prepare(&self, plan: &StockPlan) -> Result<(), StrategyError> {
        self.inner.prepare(plan).await
    }

    async fn own_ledger(&self) -> Result<Option<OwnLedger>, StrategyError> {
        self.inner.own_ledger().await
    }

    async fn backlog(&self) -> Result<Option<Backlog>, StrategyError> {
        self.inner.backlog().await
    }

    async fn discard_queue(&self) -> Result<(), StrategyError> {
        self.inner.discard_queue().await
    }

    async fn own_order(&self, id: Uuid) -> Result<Option<OrderView>, StrategyError> {
        self.inner.own_order(id).await
    }

    async fn own_orders(&self) -> Result<Vec<OrderEntry>, StrategyError> {
        self.inner.own_orders().await
    }

    fn batch_sizes(&self) -> Option<BatchSizeSummary> {
        self.inner.batch_sizes()
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{Delivery, OrderLine, OrderLines, ProductId, Quantity};

    fn request(quantity: i64, address: &str) -> PurchaseRequest {
        PurchaseRequest {
            order_id: Uuid::new_v4(),
            lines: OrderLines::new(vec![OrderLine {
                product_id: ProductId::parse(100).unwrap(),
                quantity: Quantity::parse(quantity).unwrap(),
            }])
            .unwrap(),
            delivery: Delivery::new(address.into(), "+380".into(), "a@b.c".into()).unwrap(),
            user: None,
            idempotency_key: None,
        }
    }

    #[test]
    fn fingerprints_tell_bodies_apart_and_ignore_the_order_id() {
        assert_eq!(fingerprint(&request(1, "Kyiv")), fingerprint(&request(1, "Kyiv")));
        assert_ne!(fingerprint(&request(1, "Kyiv")), fingerprint(&request(2, "Kyiv")));
        assert_ne!(fingerprint(&request(1, "Kyiv")), fingerprint(&request(1, "Lviv")));
    }
}
