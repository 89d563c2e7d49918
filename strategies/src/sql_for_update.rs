//! `sql-for-update` — pessimistic locking: `SELECT … FOR UPDATE` on the order's products, check,
//! decrement and insert the order, in one transaction.
//!
//! Guarantee: never oversells. The row locks are taken before the stock is read, so no other buyer
//! can change it between check and write. Rows are locked in product-id order (the `ORDER BY`
//! sits below the lock step), so two multi-line orders never wait on each other in a cycle; a
//! deadlock or serialization failure that happens anyway (for instance against a manual session)
//! runs the whole transaction again, a bounded number of times, and then answers 503. Durable: 201
//! only after COMMIT.
//!
//! Crash behaviour: before COMMIT, PostgreSQL rolls everything back; after it, stock and order are
//! both there.
//!
//! Why this shape: it is the textbook answer and the one most shops run, so it is the reference
//! the faster strategies are measured against. Its cost is the lock held across four round trips
//! and the commit, which is why it trails `sql-atomic` on a hot row.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::error::{StrategyError, is_duplicate_key, is_retryable};
use crate::kind::StrategyKind;
use crate::order::{OrderStatus, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::{insert_order, receipt_for_key, replay_after_conflict};
use crate::sql_stock::{check_lines, take_lines};
use crate::strategy::Strategy;

const LOCK_PRODUCTS: &str = "SELECT id, stock FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE";

/// The `SELECT … FOR UPDATE` strategy.
#[derive(Debug, Clone)]
pub struct SqlForUpdate {
    pg: PgPool,
    conflict_retries: u32,
}

impl SqlForUpdate {
    pub const fn new(pg: PgPool, conflict_retries: u32) -> Self {
        Self { pg, conflict_retries }
    }

    async fn attempt(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, sqlx::Error> {
        let (ids, _) = request.lines.columns();
        let mut tx = self.pg.begin().await?;
        let locked: Vec<(i64, i64)> = sqlx::query_as(LOCK_PRODUCTS).bind(&ids).fetch_all(&mut *tx).await?;
        if let Some(refusal) = check_lines(&request.lines, &locked) {
            tx.rollback().await?;
            return Ok(refusal);
        }
        take_lines(&mut tx, &request.lines).await?;
        insert_order(&mut tx, self.kind(), OrderStatus::Confirmed, request).await?;
        tx.commit().await?;
        Ok(PurchaseOutcome::Placed(Receipt::confirmed(request.order_id, self.kind())))
    }
}

#[async_trait]
impl Strategy for SqlForUpdate {
    fn kind(&self) -> StrategyKind {
        StrategyKind::SqlForUpdate
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        if let Some(first) = receipt_for_key(&self.pg, request).await? {
            return Ok(PurchaseOutcome::Replayed(first));
        }
        let mut retries_left = self.conflict_retries;
        loop {
            match self.attempt(request).await {
                Ok(outcome) => return Ok(outcome),
                Err(err) if is_duplicate_key(&err) => {
                    return Ok(PurchaseOutcome::Replayed(replay_after_conflict(&self.pg, request).await?));
                }
                Err(err) if is_retryable(&err) && retries_left > 0 => {
                    retries_left -= 1;
                    tracing::debug!(order_id = %request.order_id, error = %err, retries_left, "retrying after a write conflict");
                    tokio::time::sleep(Duration::from_millis(
                        u64::from(self.conflict_retries - retries_left) * 5,
                    ))
                    .await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
}
