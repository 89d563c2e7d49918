//! Stock in Redis, mirrored from PostgreSQL: loading it at a reset, reading it for the audit, and
//! recovering a key that went missing.
//!
//! All Redis strategies share these counters, and every one of them also moves PostgreSQL's
//! stock when it persists an order, so after queues drain both hold the same numbers; the audit
//! reports any gap as `redis_drift`.

use futures_util::TryStreamExt;
use redis::AsyncCommands;
use sqlx::PgPool;

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::order::ProductId;

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
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(CLEAR_BATCH)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            removed += redis::cmd("UNLINK").arg(&keys).query_async::<u64>(&mut conn).await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Copies every product's PostgreSQL stock into Redis, pipelined, in bounded memory. Returns how
/// many products were loaded.
///
/// # Errors
/// When either backend does not answer.
pub async fn load_from_sql(pg: &PgPool, redis: &RedisBackend) -> Result<u64, StrategyError> {
    let mut conn = redis.conn.clone();
    let mut tx = pg.begin().await?;
    // Streaming millions of rows outlives the timeout meant for purchases.
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    let mut rows = sqlx::query_as::<_, (i64, i64)>("SELECT id, stock FROM products").fetch(&mut *tx);
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
    }
    pipe.query_async::<()>(&mut conn).await?;
    drop(rows);
    tx.commit().await?;
    Ok(loaded)
}

/// Redis stock of each product, `None` where the key is missing.
///
/// # Errors
/// When Redis does not answer.
pub async fn stocks(redis: &RedisBackend, products: &[i64]) -> Result<Vec<Option<i64>>, StrategyError> {
    if products.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = redis.conn.clone();
    let keys: Vec<String> = products.iter().map(|&id| redis.keys.stock(id)).collect();
    let mut values = Vec::with_capacity(products.len());
    for chunk in keys.chunks(LOAD_BATCH) {
        // Always MGET: redis-rs's `mget` sends GET for one key, whose reply does not read as a list.
        let part: Vec<Option<i64>> = redis::cmd("MGET").arg(chunk).query_async(&mut conn).await?;
        values.extend(part);
    }
    Ok(values)
}

/// Units of a product taken in Redis and not yet in PostgreSQL's stock.
///
/// # Errors
/// When Redis does not answer.
pub async fn inflight(redis: &RedisBackend, product: i64) -> Result<i64, StrategyError> {
    let mut conn = redis.conn.clone();
    Ok(conn.get::<_, Option<i64>>(redis.keys.inflight(product)).await?.unwrap_or(0))
}

/// Puts a missing stock key back from PostgreSQL: its stock minus the units in flight (taken in
/// Redis, not yet persisted). `SET NX` makes concurrent recoveries agree on one value, and the
/// in-flight count is read *before* PostgreSQL's stock: an order persisted in between is then
/// subtracted twice (an undersell of its units until the next reconcile), never zero times (an
/// oversell). Returns the stock now in Redis, or `None` for a product PostgreSQL does not know.
///
/// # Errors
/// When either backend does not answer.
pub async fn recover(
    pg: &PgPool,
    redis: &RedisBackend,
    product: ProductId,
) -> Result<Option<i64>, StrategyError> {
    let in_flight = inflight(redis, product.get()).await?;
    let Some(sql_stock) = crate::catalog::stock_of(pg, product).await? else { return Ok(None) };
    let mut conn = redis.conn.clone();
    let key = redis.keys.stock(product.get());
    let value = (sql_stock - in_flight).max(0);
    let _: bool = conn.set_nx(&key, value).await?;
    let now: Option<i64> = conn.get(&key).await?;
    tracing::info!(product = product.get(), sql_stock, in_flight, now, "recovered a missing Redis stock key");
    Ok(now)
}
