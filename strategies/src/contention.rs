//! Buyers refused with 409 `contention` ([`crate::order::PurchaseOutcome::Contention`]), counted
//! per product in PostgreSQL for the audit.
//!
//! The count lives in the database rather than in the process that answered, because several
//! server replicas share one database: whichever replica is asked, the audit must report every
//! refusal of the run. Rows are keyed by the plan in force (`stock_plans.id`), so a reset, a
//! populate or a reset through another replica starts the count over without anyone clearing it
//! in step; [`forget_earlier_plans`] only keeps the table small.
//!
//! A refusal costs one upsert on the connection that just lost its swap. Refusals are what is left
//! after the retries ran out, so the statement runs far less often than a sale.

use std::collections::BTreeMap;

use crate::dialect::DialectSql;
use crate::error::StrategyError;
use crate::order::ProductId;
use crate::pg_driver::{DbError, SqlPool, Statements};

/// The latest plan is the one in force: its id is the largest, read through the primary key.
pub(crate) const RECORD: &str = r#"
INSERT INTO contention_refusals (plan_id, product_id, refusals)
SELECT COALESCE(MAX(id), 0), $1, 1 FROM stock_plans
ON CONFLICT (plan_id, product_id) DO UPDATE SET refusals = contention_refusals.refusals + 1
"#;

pub(crate) const OF_CURRENT_PLAN: &str = r#"
SELECT product_id, refusals FROM contention_refusals
WHERE plan_id = (SELECT COALESCE(MAX(id), 0) FROM stock_plans)
"#;

pub(crate) const FORGET_EARLIER: &str =
    "DELETE FROM contention_refusals WHERE plan_id < (SELECT COALESCE(MAX(id), 0) FROM stock_plans)";

/// Counts one buyer of `product` refused for contention under the plan in force, on the caller's
/// connection (outside any transaction: the refusal stands whatever the caller does next).
///
/// # Errors
/// The raw database error; the caller must then not tell the buyer 409, since the audit would
/// not count that answer.
pub(crate) async fn record(
    conn: &mut (impl Statements + ?Sized),
    sql: &DialectSql,
    product: ProductId,
) -> Result<(), DbError> {
    conn.execute(sql.contention.record, &[&product.get()]).await?;
    Ok(())
}

/// Refusals per product under the plan in force, whichever process answered them.
///
/// # Errors
/// When the database does not answer.
pub async fn refusals(books: &SqlPool) -> Result<BTreeMap<i64, u64>, StrategyError> {
    let mut conn = books.acquire().await?;
    let rows = conn.fetch_all(books.backend().sql().contention.of_current_plan, &[]).await?;
    rows.iter()
        .map(|row| {
            let (product, refusals): (i64, i64) = (row.get(0)?, row.get(1)?);
            Ok((product, refusals.unsigned_abs()))
        })
        .collect::<Result<_, DbError>>()
        .map_err(StrategyError::from)
}

/// Drops the counts of plans no longer in force. They are never read again; this only bounds the
/// table.
///
/// # Errors
/// When the database does not answer.
pub async fn forget_earlier_plans(books: &SqlPool) -> Result<u64, StrategyError> {
    let mut conn = books.acquire().await?;
    Ok(conn.execute(books.backend().sql().contention.forget_earlier, &[]).await?)
}
