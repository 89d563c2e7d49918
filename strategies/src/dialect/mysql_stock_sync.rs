//! The stock sync on MariaDB ([`crate::stock_sync`]): the same transaction as on PostgreSQL, in
//! the statements MariaDB has.
//!
//! One sync at a time per database: a named lock (`GET_LOCK`, not waited for) stands for
//! PostgreSQL's transaction-scoped advisory lock. It needs no table of its own (no migration, and
//! nothing a reset could delete), and it is per database because its name carries the
//! database's. Unlike PostgreSQL's it belongs to the session, not the transaction, so it is
//! released on the same connection once the transaction ends, and a connection that may still
//! hold it (a sync that failed or was abandoned half way, a release that failed) is closed
//! instead of returned to the pool: closing the session releases the lock.
//!
//! MariaDB has no data-modifying CTE, so the transaction is a few statements: a locking read of a
//! batch of `stock_unapplied` rows, their delete, and one decrement per product in id order. The
//! transaction runs in READ COMMITTED, so that locking read locks the rows it returns and no gap
//! between them: `redis-orderlog`'s writers keep inserting while a sync runs. It skips rows still
//! being inserted (`SKIP LOCKED`); the next sync takes them.

use std::collections::BTreeMap;

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, MySql, MySqlPool};

use crate::error::StrategyError;
use crate::stock_sync::SyncReport;

/// MySQL caps a lock name at 64 characters; a database's name may have as many: it is hashed.
const TRY_LOCK: &str = "SELECT GET_LOCK(CONCAT('checkout-bench:stock-sync:', MD5(DATABASE())), 0)";
const RELEASE: &str = "SELECT RELEASE_LOCK(CONCAT('checkout-bench:stock-sync:', MD5(DATABASE())))";

/// Applies to the next transaction of the session only.
const READ_COMMITTED: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// `$1` rows at most: the unapplied lines this sync takes, locked.
const TAKE_LINES: &str = "SELECT order_id, product_id, quantity FROM stock_unapplied \
                          ORDER BY order_id, product_id LIMIT ? FOR UPDATE SKIP LOCKED";

/// The lines taken, as `JSON_TABLE` rows (the order id in hex, the product): one statement text
/// whatever the batch's size, each row found through the primary key.
const DELETE_LINES: &str = r#"
DELETE u FROM JSON_TABLE(?, '$[*]' COLUMNS (order_id CHAR(32) PATH '$[0]', product_id BIGINT PATH '$[1]')) AS b
JOIN stock_unapplied u ON u.order_id = UNHEX(b.order_id) AND u.product_id = b.product_id
"#;

const TAKE_UNITS: &str = "UPDATE products SET stock = stock - ? WHERE id = ?";

/// The connection holding the sync's lock: closed on drop unless the lock was released.
struct Locked {
    conn: PoolConnection<MySql>,
    held: bool,
}

impl Drop for Locked {
    fn drop(&mut self) {
        if self.held {
            self.conn.close_on_drop();
        }
    }
}

/// One sync: up to `batch` unapplied lines leave `stock_unapplied` and their units leave the
/// stock rows, in one transaction, or nothing happens.
///
/// # Errors
/// When the server does not answer; the transaction then rolls back and the lines stay.
pub(crate) async fn sync_once(pool: &MySqlPool, batch: i64) -> Result<SyncReport, StrategyError> {
    // Held until known otherwise: a lock granted whose reply was lost is held too.
    let mut locked = Locked { conn: pool.acquire().await?, held: true };
    let granted: Option<i64> = sqlx::query_scalar(TRY_LOCK).fetch_one(&mut *locked.conn).await?;
    if granted != Some(1) {
        locked.held = false;
        return Ok(SyncReport { skipped: true, ..SyncReport::default() });
    }
    let applied = apply(&mut locked.conn, batch).await;
    // A failed sync's connection is closed rather than cleaned up: that releases the lock and
    // forgets the isolation level it may have left set for its next transaction.
    if applied.is_ok() {
        let released = sqlx::query_scalar(RELEASE).fetch_one(&mut *locked.conn).await;
        locked.held = !matches!(released, Ok(Some(1_i64)));
    }
    applied
}

async fn apply(conn: &mut PoolConnection<MySql>, batch: i64) -> Result<SyncReport, StrategyError> {
    sqlx::query(READ_COMMITTED).execute(&mut **conn).await?;
    let mut tx = conn.begin().await?;
    let taken: Vec<(uuid::Uuid, i64, i32)> =
        sqlx::query_as(TAKE_LINES).bind(batch).fetch_all(&mut *tx).await?;
    if taken.is_empty() {
        tx.rollback().await?;
        return Ok(SyncReport::default());
    }
    let keys: Vec<(String, i64)> =
        taken.iter().map(|(order, product, _)| (order.simple().to_string(), *product)).collect();
    let deleted = sqlx::query(DELETE_LINES).bind(sqlx::types::Json(&keys)).execute(&mut *tx).await?;
    if usize::try_from(deleted.rows_affected()).ok() != Some(taken.len()) {
        // The rows are locked by this transaction: nothing else can have deleted them.
        return Err(StrategyError::Internal(format!(
            "the stock sync locked {} unapplied lines and deleted {}",
            taken.len(),
            deleted.rows_affected()
        )));
    }
    let mut units: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, product, quantity) in &taken {
        *units.entry(*product).or_default() += i64::from(*quantity);
    }
    let mut report =
        SyncReport { lines: i64::try_from(taken.len()).unwrap_or(i64::MAX), ..SyncReport::default() };
    // BTreeMap iterates in product-id order: rows are locked in the order every writer uses.
    for (product, units) in units {
        let moved = sqlx::query(TAKE_UNITS).bind(units).bind(product).execute(&mut *tx).await?;
        report.units += units;
        report.products += i64::try_from(moved.rows_affected()).unwrap_or(0);
    }
    tx.commit().await?;
    Ok(report)
}
