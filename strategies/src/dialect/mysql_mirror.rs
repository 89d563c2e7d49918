//! MariaDB's side of the Redis strategies' books: the Redis gate's claim ([`crate::gates`]), the
//! stock a mirror loads or rebuilds ([`crate::redis_stock`], [`crate::reservation::recover`]) and
//! which reserved orders the books hold ([`crate::reservation::committed`]).
//!
//! Lists are one placeholder per item (`IN (?, ?, …)`), in chunks, so InnoDB looks up exactly
//! those keys; reads that must agree with each other run in one transaction, whose REPEATABLE
//! READ snapshot (taken at its first read) serves as PostgreSQL's statement snapshot does.

use std::collections::{HashMap, HashSet};

use sqlx::{MySqlConnection, MySqlPool};
use uuid::Uuid;

use super::mysql::LEFT_TO_SELL;
use super::mysql_batch::placeholders;
use crate::error::StrategyError;

/// Keys per `IN (…)` list: far below the server's placeholder limit (65,535).
const CHUNK: usize = 1_000;

/// Every product's stock left to sell, less the units awaiting the stock sync, after id `?`, in
/// id order, at most `?` of them.
const LEFT_TO_SELL_PAGE: &str = "SELECT p.id, CAST(p.stock - COALESCE(u.units, 0) AS SIGNED) FROM products p \
     LEFT JOIN (SELECT product_id, SUM(quantity) AS units FROM stock_unapplied GROUP BY product_id) u \
     ON u.product_id = p.id WHERE p.id > ? ORDER BY p.id LIMIT ?";

/// Gives each of `ids` that no other gate sells to the Redis gate; returns those the Redis gate
/// sells now. One autocommitted statement per product: the found-rows count says whether the
/// product is (now, or already) Redis's.
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn claim_for_redis(pool: &MySqlPool, ids: &[i64]) -> Result<HashSet<i64>, StrategyError> {
    let mut conn = pool.acquire().await?;
    let mut claimed = HashSet::with_capacity(ids.len());
    for &id in ids {
        let found = sqlx::query(
            "UPDATE products SET gate = 'redis' WHERE id = ? AND COALESCE(gate, 'redis') = 'redis'",
        )
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if found == 1 {
            claimed.insert(id);
        }
    }
    Ok(claimed)
}

/// The gate of each of `ids` the books have (`None`: no gate yet).
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn gates_of(
    pool: &MySqlPool,
    ids: &[i64],
) -> Result<HashMap<i64, Option<String>>, StrategyError> {
    let mut gates = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let sql = format!("SELECT id, gate FROM products WHERE id IN ({})", placeholders(chunk.len()));
        let rows: Vec<(i64, Option<String>)> = chunk
            .iter()
            .fold(sqlx::query_as(sqlx::AssertSqlSafe(sql)), |query, id| query.bind(id))
            .fetch_all(pool)
            .await?;
        gates.extend(rows);
    }
    Ok(gates)
}

/// `id, left to sell` of each of `ids` the books have.
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn left_to_sell_of(pool: &MySqlPool, ids: &[i64]) -> Result<Vec<(i64, i64)>, StrategyError> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT p.id, CAST(p.stock - COALESCE(u.units, 0) AS SIGNED) FROM products p \
             LEFT JOIN (SELECT product_id, SUM(quantity) AS units FROM stock_unapplied GROUP BY product_id) u \
             ON u.product_id = p.id WHERE p.id IN ({})",
            placeholders(chunk.len())
        );
        let rows: Vec<(i64, i64)> = chunk
            .iter()
            .fold(sqlx::query_as(sqlx::AssertSqlSafe(sql)), |query, id| query.bind(id))
            .fetch_all(pool)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

/// Every product's `id, left to sell`, handed to `each` a page at a time in id order, all pages
/// read in one snapshot; memory stays at one page.
///
/// # Errors
/// When the server does not answer, or `each` fails.
pub(crate) async fn for_each_left_to_sell<F, Fut>(
    pool: &MySqlPool,
    page: usize,
    mut each: F,
) -> Result<u64, StrategyError>
where
    F: FnMut(Vec<(i64, i64)>) -> Fut,
    Fut: std::future::Future<Output = Result<(), StrategyError>>,
{
    let mut tx = pool.begin().await?;
    let (mut after, mut seen) = (0_i64, 0_u64);
    loop {
        let rows: Vec<(i64, i64)> = sqlx::query_as(LEFT_TO_SELL_PAGE)
            .bind(after)
            .bind(i64::try_from(page).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        let Some(&(last, _)) = rows.last() else { break };
        let full = rows.len() == page;
        after = last;
        seen += rows.len() as u64;
        each(rows).await?;
        if !full {
            break;
        }
    }
    tx.commit().await?;
    Ok(seen)
}

/// Of `ids`, the orders the books hold (pending or confirmed).
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn committed(pool: &MySqlPool, ids: &[Uuid]) -> Result<HashSet<Uuid>, StrategyError> {
    let mut conn = pool.acquire().await?;
    committed_on(&mut conn, ids).await
}

async fn committed_on(conn: &mut MySqlConnection, ids: &[Uuid]) -> Result<HashSet<Uuid>, StrategyError> {
    let mut found = HashSet::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT id FROM orders WHERE id IN ({}) AND status IN ('pending', 'confirmed')",
            placeholders(chunk.len())
        );
        let rows: Vec<Uuid> = chunk
            .iter()
            .fold(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), |query, id| query.bind(id))
            .fetch_all(&mut *conn)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

/// What is left to sell of `product` (`None`: the books do not have it) and which of `ids` the
/// books hold, in one snapshot: an order committed in between is counted exactly once.
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn stock_and_committed(
    pool: &MySqlPool,
    product: i64,
    ids: &[Uuid],
) -> Result<(Option<i64>, HashSet<Uuid>), StrategyError> {
    let mut tx = pool.begin().await?;
    let stock: Option<Option<i64>> =
        sqlx::query_scalar(LEFT_TO_SELL).bind(product).fetch_optional(&mut *tx).await?;
    let committed = committed_on(&mut tx, ids).await?;
    tx.commit().await?;
    Ok((stock.flatten(), committed))
}
