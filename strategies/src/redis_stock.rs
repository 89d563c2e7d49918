//! Stock in Redis, mirrored from PostgreSQL: loading it at a reset, reading it for the audit, and
//! recovering a key that went missing.
//!
//! All Redis strategies share these counters, and every one of them also moves PostgreSQL's
//! stock when it persists an order (`redis-orderlog` through the stock sync, so its units awaiting
//! sync count as gone), so once nothing is held both hold the same numbers; the audit reports any
//! gap as `redis_drift`. Missing keys are rebuilt by [`crate::reservation::recover`].

use futures_util::TryStreamExt;
use serde::Serialize;

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::pg_driver::SqlPool;
use crate::reservation::HeldUnits;

/// Every product's stock left to sell: the stock row less the units awaiting the stock sync
/// ([`crate::stock_sync`]), which the mirror must not offer again.
macro_rules! left_to_sell_all {
    () => {
        "SELECT p.id, p.stock - COALESCE(u.units, 0)::bigint FROM products p \
         LEFT JOIN (SELECT product_id, SUM(quantity) AS units FROM stock_unapplied GROUP BY product_id) u \
         ON u.product_id = p.id"
    };
}
const LEFT_TO_SELL_ALL: &str = left_to_sell_all!();
const LEFT_TO_SELL_ALL_BY_ID: &str = concat!(left_to_sell_all!(), " ORDER BY p.id");

/// Keys per `MSET` while loading.
const LOAD_BATCH: usize = 1_000;
/// `MSET`s per pipeline while loading.
const LOAD_PIPELINE: usize = 10;
/// Keys asked per `SCAN` step (and removed per `UNLINK`) while clearing.
const CLEAR_BATCH: usize = 10_000;

/// Removes every key under the backend's prefix: stock, in-flight counters, streams, idempotency
/// keys. Returns how many keys were removed.
///
/// # Errors
/// When Redis does not answer.
pub async fn clear(redis: &RedisBackend) -> Result<u64, StrategyError> {
    let mut conn = redis.conn.clone();
    let pattern = redis.keys.pattern();
    let mut cursor: u64 = 0;
    let mut removed = 0;
    loop {
        let scan =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(CLEAR_BATCH).clone();
        // On a cluster every key under the prefix lives on the master of its hash tag.
        let (next, keys): (u64, Vec<String>) = conn.query_on_master_of(&scan, redis.keys.prefix()).await?;
        if !keys.is_empty() {
            removed += redis::cmd("UNLINK").arg(&keys).query_async::<u64>(&mut conn).await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Copies every product's PostgreSQL stock (left to sell) into Redis, pipelined, in bounded memory. Returns how
/// many products were loaded.
///
/// # Errors
/// When either backend does not answer.
pub async fn load_from_sql(books: &SqlPool, redis: &RedisBackend) -> Result<u64, StrategyError> {
    let pg = match books {
        SqlPool::Postgres(pg) => pg,
        SqlPool::MySql(pool) => {
            return crate::dialect::mysql_mirror::for_each_left_to_sell(
                pool,
                LOAD_BATCH * LOAD_PIPELINE,
                |rows| mirror_stock(redis, rows),
            )
            .await;
        }
    };
    let mut conn = redis.conn.clone();
    let mut tx = pg.begin().await?;
    // Streaming millions of rows outlives the timeout meant for purchases.
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    let mut rows = sqlx::query_as::<_, (i64, i64)>(LEFT_TO_SELL_ALL).fetch(&mut *tx);
    let mut pipe = redis::pipe();
    let mut batch: Vec<(String, i64)> = Vec::with_capacity(LOAD_BATCH);
    let (mut batches_in_pipe, mut loaded) = (0, 0_u64);
    while let Some((id, stock)) = rows.try_next().await? {
        batch.push((redis.keys.stock(id), stock));
        loaded += 1;
        if batch.len() == LOAD_BATCH {
            pipe.mset(&batch).ignore();
            batch.clear();
            batches_in_pipe += 1;
            if batches_in_pipe == LOAD_PIPELINE {
                pipe.query_async::<()>(&mut conn).await?;
                pipe = redis::pipe();
                batches_in_pipe = 0;
            }
        }
    }
    if !batch.is_empty() {
        pipe.mset(&batch).ignore();
        batches_in_pipe += 1;
    }
    // An empty pipeline is an error in redis-rs: it happens whenever the product count is a
    // multiple of a full pipeline.
    if batches_in_pipe > 0 {
        pipe.query_async::<()>(&mut conn).await?;
    }
    drop(rows);
    tx.commit().await?;
    Ok(loaded)
}

/// Copies the stock left to sell of `products` only into Redis; the rest of the catalogue loads on
/// first use ([`crate::reservation::recover`]). Returns how many products were loaded.
///
/// # Errors
/// When either backend does not answer.
pub async fn load_products(
    books: &SqlPool,
    redis: &RedisBackend,
    products: &[i64],
) -> Result<u64, StrategyError> {
    let rows: Vec<(i64, i64)> = match books {
        SqlPool::Postgres(pg) => {
            sqlx::query_as(concat!(left_to_sell_all!(), " WHERE p.id = ANY($1)"))
                .bind(products)
                .fetch_all(pg)
                .await?
        }
        SqlPool::MySql(pool) => crate::dialect::mysql_mirror::left_to_sell_of(pool, products).await?,
    };
    let loaded = rows.len() as u64;
    mirror_stock(redis, rows).await?;
    Ok(loaded)
}

/// Writes `rows` (`id, stock`) into Redis's stock keys, `MSET`s of [`LOAD_BATCH`] in one pipeline.
async fn mirror_stock(redis: &RedisBackend, rows: Vec<(i64, i64)>) -> Result<(), StrategyError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut conn = redis.conn.clone();
    let mut pipe = redis::pipe();
    for chunk in rows.chunks(LOAD_BATCH) {
        let batch: Vec<(String, i64)> =
            chunk.iter().map(|&(id, stock)| (redis.keys.stock(id), stock)).collect();
        pipe.mset(&batch).ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// Redis stock and in-flight units of each product, for the audit.
///
/// # Errors
/// When Redis does not answer.
pub async fn mirror(
    redis: &RedisBackend,
    products: &[i64],
) -> Result<(Vec<Option<i64>>, Vec<Option<i64>>), StrategyError> {
    let stock = read_counts(redis, products.iter().map(|&id| redis.keys.stock(id))).await?;
    let inflight = read_counts(redis, products.iter().map(|&id| redis.keys.inflight(id))).await?;
    Ok((stock, inflight))
}

/// Integer values of `keys`, `None` where a key is missing, in chunks of [`LOAD_BATCH`].
///
/// # Errors
/// When Redis does not answer.
pub(crate) async fn read_counts(
    redis: &RedisBackend,
    keys: impl Iterator<Item = String>,
) -> Result<Vec<Option<i64>>, StrategyError> {
    let keys: Vec<String> = keys.collect();
    let mut conn = redis.conn.clone();
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(LOAD_BATCH) {
        // Always MGET: redis-rs's `mget` sends GET for one key, whose reply does not read as a list.
        let part: Vec<Option<i64>> = redis::cmd("MGET").arg(chunk).query_async(&mut conn).await?;
        values.extend(part);
    }
    Ok(values)
}

/// One product whose Redis mirror a repair changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Repair {
    pub product_id: i64,
    pub redis_stock_before: Option<i64>,
    pub redis_inflight_before: Option<i64>,
    pub redis_stock_after: i64,
    pub redis_inflight_after: i64,
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    pub products_checked: u64,
    pub products_repaired: u64,
    /// The first repairs, up to [`REPAIRS_LISTED`].
    pub repairs: Vec<Repair>,
}

/// Most repairs a report lists one by one.
pub const REPAIRS_LISTED: usize = 1_000;

/// Rewrites the Redis mirror from PostgreSQL: for every product, stock = PostgreSQL's stock minus
/// the units of holds PostgreSQL does not hold yet, in flight = the units of every hold (see
/// [`crate::reservation`]). Only products whose mirror differs are written. Run it with no purchase
/// in progress: a purchase between its Redis reservation and its commit would be counted twice.
///
/// # Errors
/// When either backend does not answer.
pub async fn repair(
    books: &SqlPool,
    redis: &RedisBackend,
    holds: &std::collections::BTreeMap<i64, HeldUnits>,
) -> Result<RepairReport, StrategyError> {
    let mut report = RepairReport { products_checked: 0, products_repaired: 0, repairs: Vec::new() };
    let pg = match books {
        SqlPool::Postgres(pg) => pg,
        SqlPool::MySql(pool) => {
            let report = std::sync::Mutex::new(report);
            crate::dialect::mysql_mirror::for_each_left_to_sell(pool, LOAD_BATCH, |rows| {
                let report = &report;
                async move {
                    let mut part =
                        RepairReport { products_checked: 0, products_repaired: 0, repairs: Vec::new() };
                    repair_batch(redis, holds, &rows, &mut part).await?;
                    let mut report = report.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    report.products_checked += part.products_checked;
                    report.products_repaired += part.products_repaired;
                    let room = REPAIRS_LISTED.saturating_sub(report.repairs.len());
                    report.repairs.extend(part.repairs.into_iter().take(room));
                    Ok(())
                }
            })
            .await?;
            forget_resyncs(redis).await?;
            return Ok(report.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
        }
    };
    let mut tx = pg.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    let mut rows = sqlx::query_as::<_, (i64, i64)>(LEFT_TO_SELL_ALL_BY_ID).fetch(&mut *tx);
    let mut batch: Vec<(i64, i64)> = Vec::with_capacity(LOAD_BATCH);
    loop {
        let row = rows.try_next().await?;
        if let Some(row) = row {
            batch.push(row);
        }
        if batch.len() == LOAD_BATCH || (row.is_none() && !batch.is_empty()) {
            repair_batch(redis, holds, &batch, &mut report).await?;
            batch.clear();
        }
        if row.is_none() {
            break;
        }
    }
    drop(rows);
    tx.commit().await?;
    forget_resyncs(redis).await?;
    Ok(report)
}

/// Empties the resync set: a repair rewrote every product.
async fn forget_resyncs(redis: &RedisBackend) -> Result<(), StrategyError> {
    let mut conn = redis.conn.clone();
    redis::cmd("DEL").arg(redis.keys.resync()).query_async::<i64>(&mut conn).await?;
    Ok(())
}

async fn repair_batch(
    redis: &RedisBackend,
    holds: &std::collections::BTreeMap<i64, HeldUnits>,
    batch: &[(i64, i64)],
    report: &mut RepairReport,
) -> Result<(), StrategyError> {
    let ids: Vec<i64> = batch.iter().map(|&(id, _)| id).collect();
    let (stocks, inflight) = mirror(redis, &ids).await?;
    let mut pipe = redis::pipe();
    let mut writes = 0;
    for ((&(id, sql_stock), stock), inflight) in batch.iter().zip(stocks).zip(inflight) {
        report.products_checked += 1;
        let units = holds.get(&id).copied().unwrap_or_default();
        let (want, in_flight) = (sql_stock - units.uncommitted, units.held);
        if stock == Some(want) && inflight.unwrap_or(0) == in_flight {
            continue;
        }
        pipe.set(redis.keys.stock(id), want).ignore();
        pipe.set(redis.keys.inflight(id), in_flight).ignore();
        writes += 1;
        report.products_repaired += 1;
        if report.repairs.len() < REPAIRS_LISTED {
            report.repairs.push(Repair {
                product_id: id,
                redis_stock_before: stock,
                redis_inflight_before: inflight,
                redis_stock_after: want,
                redis_inflight_after: in_flight,
            });
        }
    }
    if writes > 0 {
        let mut conn = redis.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}
