//! `sql-naive` — the seed's `simple` mode, kept faithfully wrong: read the stock, check it in the
//! application, then decrement unconditionally and insert the order.
//!
//! Guarantee: none under contention, by design. Between the read and the write other buyers read
//! the same stock, all pass the check, and every one of them decrements: the stock goes negative
//! and more units are confirmed than existed. The harness exists to show this, so the strategy is
//! never fixed. `Tuning::naive_race_window` (off by default) widens the gap so a test can make the
//! race certain rather than likely.
//!
//! Crash behaviour: the decrement and the order commit together, so a crash loses neither alone;
//! what is wrong is only what was sold.
//!
//! Why this shape: it is what a first implementation usually looks like, and the numbers next to it
//! are the argument for everything else.

use std::time::Duration;

use async_trait::async_trait;

use crate::dialect::DialectSql;
use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::order::{OrderStatus, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::{insert_order_as, receipt_on, replay_on};
use crate::pg_driver::{DbError, PurchasePool, SqlPool, fetch_by_ids};
use crate::sql_stock::{check_lines, take_lines};
use crate::strategy::Strategy;

pub(crate) const READ_STOCK: &str = "SELECT id, stock FROM products WHERE id = ANY($1) ORDER BY id";

/// The read-check-write strategy that oversells.
#[derive(Debug, Clone)]
pub struct SqlNaive {
    books: SqlPool,
    purchases: PurchasePool,
    sql: &'static DialectSql,
    race_window: Duration,
}

impl SqlNaive {
    /// Sells on `purchases`, in their dialect; replays go to `books`.
    pub const fn new(books: SqlPool, purchases: PurchasePool, race_window: Duration) -> Self {
        let sql = purchases.backend().sql();
        Self { books, purchases, sql, race_window }
    }

    async fn attempt(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, DbError> {
        let (ids, _) = request.lines.columns();
        // The read and the write take a connection each, as the seed's two round trips did.
        let seen: Vec<(i64, i64)> =
            fetch_by_ids(&mut self.purchases.acquire().await?, self.sql.naive.read_stock, &ids)
                .await?
                .iter()
                .map(|row| Ok((row.get(0)?, row.get(1)?)))
                .collect::<Result<_, DbError>>()?;
        if let Some(refusal) = check_lines(&request.lines, &seen) {
            return Ok(refusal);
        }
        if !self.race_window.is_zero() {
            tokio::time::sleep(self.race_window).await;
        }
        let mut conn = self.purchases.acquire().await?;
        let mut tx = conn.begin().await?;
        take_lines(&mut tx, self.sql.naive.take_unconditionally, &request.lines).await?;
        insert_order_as(&mut tx, &self.sql.orders, self.kind(), OrderStatus::Confirmed, request).await?;
        tx.commit().await?;
        Ok(PurchaseOutcome::Placed(Receipt::confirmed(request.order_id, self.kind())))
    }
}

#[async_trait]
impl Strategy for SqlNaive {
    fn kind(&self) -> StrategyKind {
        StrategyKind::SqlNaive
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        if let Some(first) = receipt_on(&self.books, request).await? {
            return Ok(PurchaseOutcome::Replayed(first));
        }
        match self.attempt(request).await {
            Ok(outcome) => Ok(outcome),
            Err(err) if err.is_duplicate_key() => {
                Ok(PurchaseOutcome::Replayed(replay_on(&self.books, request).await?))
            }
            Err(err) => Err(err.into()),
        }
    }
}
