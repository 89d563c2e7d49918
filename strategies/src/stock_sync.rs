//! The stock sync: applies orders `redis-orderlog` committed insert-only to the SQL books'
//! `products.stock`, on PostgreSQL or MariaDB ([`crate::dialect::mysql_stock_sync`]).
//!
//! `redis-orderlog` writes one `stock_unapplied` row per order line instead of updating the hot
//! product row. Each sync is one transaction: it deletes a batch of those rows and takes their
//! units, summed per product, from `products.stock`. A unit is therefore either awaiting sync or
//! off the stock row, never both and never neither, whatever crashes when: a crash between an
//! order and its sync leaves the rows, and the next sync (of any process) applies them.
//!
//! One statement per sync, hundreds of orders per product row update: the hot row is locked once
//! per interval rather than once per sale. Several processes may run the sync side by side: a lock
//! per database lets one at a time through (on PostgreSQL a transaction-scoped advisory lock), so
//! two syncs never update the same product rows in different orders.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::dialect::mysql_stock_sync;
use crate::error::StrategyError;
use crate::pg_driver::SqlPool;

/// Only one sync at a time per database; the others skip their turn.
const TRY_LOCK: &str = "SELECT pg_try_advisory_xact_lock(hashtext('checkout-bench:stock-sync'))";

/// Deletes up to `$1` unapplied lines and takes their units from the stock rows, in one statement.
/// Returns the units applied and the rows deleted.
const APPLY: &str = r#"
WITH batch AS (
    SELECT order_id, product_id FROM stock_unapplied LIMIT $1
), applied AS (
    DELETE FROM stock_unapplied u USING batch b
    WHERE u.order_id = b.order_id AND u.product_id = b.product_id
    RETURNING u.product_id, u.quantity
), sums AS (
    SELECT product_id, SUM(quantity)::bigint AS units, COUNT(*)::bigint AS rows FROM applied GROUP BY product_id
), moved AS (
    UPDATE products p SET stock = p.stock - s.units FROM sums s WHERE p.id = s.product_id RETURNING p.id
)
SELECT COALESCE(SUM(units), 0)::bigint, COALESCE(SUM(rows), 0)::bigint, (SELECT COUNT(*) FROM moved)::bigint
FROM sums
"#;

/// How the stock sync behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockSyncSettings {
    /// Pause between syncs when the last one emptied the backlog.
    pub every: Duration,
    /// Unapplied lines taken per transaction.
    pub batch: i64,
}

impl Default for StockSyncSettings {
    fn default() -> Self {
        Self { every: Duration::from_millis(50), batch: 10_000 }
    }
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Order lines applied (and deleted from `stock_unapplied`).
    pub lines: i64,
    /// Units taken from stock rows.
    pub units: i64,
    /// Stock rows updated.
    pub products: i64,
    /// Another process held the sync: nothing was tried.
    pub skipped: bool,
}

/// Applies `redis-orderlog`'s committed orders to the books' stock.
#[derive(Debug, Clone)]
pub struct StockSync {
    books: SqlPool,
    settings: StockSyncSettings,
}

impl StockSync {
    pub const fn new(books: SqlPool, settings: StockSyncSettings) -> Self {
        Self { books, settings }
    }

    /// One transaction: up to `batch` unapplied lines leave `stock_unapplied` and their units leave
    /// the stock rows, or nothing happens.
    ///
    /// # Errors
    /// When the database does not answer; the transaction then rolls back and the lines stay.
    pub async fn sync_once(&self) -> Result<SyncReport, StrategyError> {
        match &self.books {
            SqlPool::Postgres(pg) => sync_once_on_postgres(pg, self.settings.batch).await,
            SqlPool::MySql(pool) => mysql_stock_sync::sync_once(pool, self.settings.batch).await,
        }
    }

    /// Syncs until nothing is left to apply. Returns the lines applied.
    ///
    /// # Errors
    /// As [`Self::sync_once`].
    pub async fn drain(&self) -> Result<i64, StrategyError> {
        let mut total = 0;
        loop {
            let report = self.sync_once().await?;
            total += report.lines;
            if report.skipped {
                tokio::time::sleep(Duration::from_millis(5)).await;
            } else if report.lines < self.settings.batch {
                return Ok(total);
            }
        }
    }

    /// Syncs until `cancel` fires, then once more so a clean stop leaves nothing behind. Errors are
    /// logged and retried at the next interval.
    pub async fn run(self, cancel: CancellationToken) {
        tracing::info!(settings = ?self.settings, "stock sync started");
        while !cancel.is_cancelled() {
            let full = match self.sync_once().await {
                Ok(report) => {
                    if report.lines > 0 {
                        tracing::debug!(?report, "applied orders to stock");
                    }
                    !report.skipped && report.lines >= self.settings.batch
                }
                Err(err) => {
                    tracing::warn!(%err, "stock sync failed; trying again");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(self.settings.every) => {}
            }
        }
        if let Err(err) = self.drain().await {
            tracing::warn!(%err, "last stock sync failed; the next process to start applies the rest");
        }
        tracing::info!("stock sync stopped");
    }
}

async fn sync_once_on_postgres(pg: &PgPool, batch: i64) -> Result<SyncReport, StrategyError> {
    let mut tx = pg.begin().await?;
    let locked: bool = sqlx::query_scalar(TRY_LOCK).fetch_one(&mut *tx).await?;
    if !locked {
        tx.rollback().await?;
        return Ok(SyncReport { skipped: true, ..SyncReport::default() });
    }
    let (units, lines, products): (i64, i64, i64) =
        sqlx::query_as(APPLY).bind(batch).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(SyncReport { lines, units, products, skipped: false })
}
