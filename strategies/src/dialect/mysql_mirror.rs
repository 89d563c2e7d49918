//! MariaDB's side of the Redis strategies' books: the Redis gate's claim ([`crate::gates`]), the
//! stock a mirror loads or rebuilds ([`crate::redis_stock`], [`crate::reservation::recover`]) and
//! which reserved orders the books hold ([`crate::reservation::committed`]).
//!
//! Lists are one placeholder per item (`IN (?, ?, …)`), in chunks, so InnoDB looks up exactly
//! those keys; reads that must agree with each other run in one transaction, whose REPEATABLE
//! READ snapshot (taken at its first read) serves as PostgreSQL's statement snapshot does.

use std::collections::{HashMap, HashSet};

use sqlx::mysql::MySqlRow;
use sqlx::{MySql, MySqlConnection, MySqlPool};
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

/// The rows `select` finds for every key of `keys`: `select` renders the statement around an
/// `IN (…)` list of the placeholders it is given, run once per chunk of keys.
async fn rows_in<K, T>(
    conn: &mut MySqlConnection,
    keys: &[K],
    select: impl Fn(&str) -> String,
) -> Result<Vec<T>, StrategyError>
where
    K: for<'q> sqlx::Encode<'q, MySql> + sqlx::Type<MySql> + Clone + Send + Sync,
    T: for<'r> sqlx::FromRow<'r, MySqlRow> + Send + Unpin,
{
    let mut found = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(CHUNK) {
        let sql = select(&placeholders(chunk.len()));
        let rows: Vec<T> = chunk
            .iter()
            .fold(sqlx::query_as(sqlx::AssertSqlSafe(sql)), |query, key| query.bind(key.clone()))
            .fetch_all(&mut *conn)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

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
    let mut conn = pool.acquire().await?;
    let rows: Vec<(i64, Option<String>)> =
        rows_in(&mut conn, ids, |list| format!("SELECT id, gate FROM products WHERE id IN ({list})")).await?;
    Ok(rows.into_iter().collect())
}

/// `id, left to sell` of each of `ids` the books have.
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn left_to_sell_of(pool: &MySqlPool, ids: &[i64]) -> Result<Vec<(i64, i64)>, StrategyError> {
    let mut conn = pool.acquire().await?;
    rows_in(&mut conn, ids, |list| {
        format!(
            "SELECT p.id, CAST(p.stock - COALESCE(u.units, 0) AS SIGNED) FROM products p \
             LEFT JOIN (SELECT product_id, SUM(quantity) AS units FROM stock_unapplied GROUP BY product_id) u \
             ON u.product_id = p.id WHERE p.id IN ({list})"
        )
    })
    .await
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
    let rows: Vec<(Uuid,)> = rows_in(conn, ids, |list| {
        format!("SELECT id FROM orders WHERE id IN ({list}) AND status IN ('pending', 'confirmed')")
    })
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
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
