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

use crate::dialect::DialectSql;
use crate::error::StrategyError;
use crate::fence::{self, Failed};
use crate::kind::{Gate, StrategyKind};
use crate::order::{OrderStatus, ProductId, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::{insert_order_as, receipt_on, replay_on};
use crate::pg_driver::{DbError, PurchasePool, SqlPool, Statements, fetch_by_ids};
use crate::sql_stock::check_lines;
use crate::strategy::Strategy;

/// A failed attempt: a database error (maybe retried) or a refusal to answer as is.
#[derive(Debug)]
enum AttemptError {
    Sql(DbError),
    Strategy(StrategyError),
}

impl From<DbError> for AttemptError {
    fn from(err: DbError) -> Self {
        Self::Sql(err)
    }
}

pub(crate) const LOCK_PRODUCTS: &str =
    "SELECT id, stock, gate FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE";
/// The PostgreSQL gate's claim rides on the decrement (`crate::gates`).
pub(crate) const TAKE: &str =
    "UPDATE products SET stock = stock - $2::bigint, gate = 'postgres' WHERE id = $1";

/// The `SELECT … FOR UPDATE` strategy.
#[derive(Debug, Clone)]
pub struct SqlForUpdate {
    books: SqlPool,
    purchases: PurchasePool,
    sql: &'static DialectSql,
    conflict_retries: u32,
}

impl SqlForUpdate {
    /// Sells on `purchases`, in their dialect; replays and fences go to `books`.
    pub const fn new(books: SqlPool, purchases: PurchasePool, conflict_retries: u32) -> Self {
        let sql = purchases.backend().sql();
        Self { books, purchases, sql, conflict_retries }
    }

    async fn attempt(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, AttemptError> {
        let (ids, _) = request.lines.columns();
        // A connection that cannot be had sent nothing: that failure is certain, unlike one after.
        let mut conn = self.purchases.acquire().await.map_err(|err| AttemptError::Strategy(err.into()))?;
        let mut tx = conn.begin().await?;
        // The locking read itself gives the stock: in MySQL's REPEATABLE READ a plain read after
        // it would see the transaction's snapshot, not the row just locked.
        let locked: Vec<(i64, i64, Option<String>)> =
            fetch_by_ids(&mut tx, self.sql.for_update.lock_products, &ids)
                .await?
                .iter()
                .map(|row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .collect::<Result<_, DbError>>()?;
        let other_gate = |gate: &Option<String>| {
            crate::gates::parse_gate(gate.as_deref()).filter(|gate| *gate != Gate::Postgres)
        };
        if let Some((id, gate)) = locked.iter().find_map(|(id, _, gate)| Some((id, other_gate(gate)?))) {
            tx.rollback().await?;
            let product = ProductId::parse(*id)
                .map_err(|err| AttemptError::Strategy(StrategyError::Internal(err.0)))?;
            return Ok(PurchaseOutcome::GateConflict { product, gate });
        }
        let stocks: Vec<(i64, i64)> = locked.iter().map(|(id, stock, _)| (*id, *stock)).collect();
        if let Some(refusal) = check_lines(&request.lines, &stocks) {
            tx.rollback().await?;
            return Ok(refusal);
        }
        for line in &request.lines {
            tx.execute(self.sql.for_update.take, &[&line.product_id.get(), &i64::from(line.quantity.get())])
                .await?;
        }
        insert_order_as(&mut tx, &self.sql.orders, self.kind(), OrderStatus::Confirmed, request).await?;
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
        if let Some(first) = receipt_on(&self.books, request).await? {
            return Ok(PurchaseOutcome::Replayed(first));
        }
        let mut retries_left = self.conflict_retries;
        loop {
            match self.attempt(request).await {
                Ok(outcome) => return Ok(outcome),
                Err(AttemptError::Strategy(err)) => return Err(err),
                Err(AttemptError::Sql(err)) if err.is_duplicate_key() => {
                    return Ok(PurchaseOutcome::Replayed(replay_on(&self.books, request).await?));
                }
                Err(AttemptError::Sql(err)) if err.is_retryable() && retries_left > 0 => {
                    retries_left -= 1;
                    tracing::debug!(order_id = %request.order_id, error = %err, retries_left, "retrying after a write conflict");
                    tokio::time::sleep(Duration::from_millis(
                        u64::from(self.conflict_retries - retries_left) * 5,
                    ))
                    .await;
                }
                Err(AttemptError::Sql(err)) => {
                    return match fence::after_failed_write(&self.books, self.kind(), request.order_id, err)
                        .await?
                    {
                        Failed::Committed => {
                            Ok(PurchaseOutcome::Placed(Receipt::confirmed(request.order_id, self.kind())))
                        }
                        Failed::NotCommitted(err) => Err(err),
                    };
                }
            }
        }
    }
}
