//! The catalogue in PostgreSQL: resetting it for a run, bulk-loading it through `COPY`, and reading
//! the books the audit reconciles.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::error::StrategyError;
use crate::kind::{Gate, StrategyKind};
use crate::order::{OrderStatus, ProductId};
use crate::pg_driver::SqlPool;
use crate::plan::StockPlan;
use crate::strategy::{OrderEntry, ProductLedger};

/// Rows are buffered up to this many bytes before each `COPY` write.
const COPY_CHUNK: usize = 1 << 20;

/// What a reset did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResetSummary {
    /// Products written by this reset (random plus explicit).
    pub products_written: u64,
    /// Products kept from before whose stock became their new initial stock.
    pub products_rebaselined: u64,
    /// A reset keeping the catalogue: orders the run since the last reset placed, deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_orders_deleted: Option<u64>,
    /// A reset keeping the catalogue: products the run touched, put back to their stock before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub products_restored: Option<u64>,
    /// Stock keys written to Redis (every product).
    pub redis_keys_loaded: u64,
    pub elapsed_ms: u64,
}

/// Deletes every order and lays out `plan` in one transaction, so purchases see the old catalogue
/// or the new one, never half of each.
///
/// With `random_products`, the catalogue is replaced by products `1..=count`. Without it, products
/// the plan does not name keep their stock, which becomes their initial stock for the next audit.
///
/// # Errors
/// When the database does not answer.
pub async fn reset(pool: &PgPool, plan: &StockPlan) -> Result<ResetSummary, StrategyError> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    // A big COPY outlives the per-statement timeout meant for purchases; a purchase holding a row
    // lock must not hold the reset forever, though: past the lock timeout it answers 503.
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
    sqlx::query("TRUNCATE inventory_units, stock_unapplied, order_items, orders, idempotency_claims")
        .execute(&mut *tx)
        .await?;
    let mut written = 0;
    if let Some(random) = plan.random_products {
        sqlx::query("TRUNCATE products").execute(&mut *tx).await?;
        let explicit: HashMap<i64, i64> = plan.products.iter().map(|p| (p.id.get(), p.stock)).collect();
        written += copy_in(
            &mut tx,
            "COPY products (id, stock, initial_stock) FROM STDIN",
            random.count,
            |i, out| {
                let id = (i + 1).cast_signed();
                let stock = explicit.get(&id).copied().unwrap_or_else(|| random.stock_of(id));
                write_row(out, &[&id, &stock, &stock]);
            },
            |_| {},
        )
        .await?;
    }
    let (ids, stocks): (Vec<i64>, Vec<i64>) = plan.products.iter().map(|p| (p.id.get(), p.stock)).unzip();
    written += sqlx::query(
        "INSERT INTO products (id, stock, initial_stock) SELECT id, stock, stock FROM UNNEST($1::bigint[], $2::bigint[]) AS p (id, stock)
         ON CONFLICT (id) DO UPDATE SET stock = EXCLUDED.stock, initial_stock = EXCLUDED.initial_stock
         WHERE (products.stock, products.initial_stock) IS DISTINCT FROM (EXCLUDED.stock, EXCLUDED.initial_stock)",
    )
    .bind(ids)
    .bind(stocks)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let rebaselined = sqlx::query(
        "UPDATE products SET initial_stock = stock, gate = NULL WHERE initial_stock <> stock OR gate IS NOT NULL",
    )
        .execute(&mut *tx)
        .await?
        .rows_affected();
    record_plan(&mut tx, plan).await?;
    tx.commit().await?;
    Ok(ResetSummary {
        products_written: written,
        products_rebaselined: rebaselined,
        run_orders_deleted: None,
        products_restored: None,
        redis_keys_loaded: 0,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// [`reset`], or [`reset_keeping`] for a plan keeping the catalogue (`keep_catalogue`), on the
/// books of either dialect. Returns what it did and the plan now in force: `plan` itself, or,
/// keeping the catalogue, the last plan's catalogue with `plan`'s products.
///
/// # Errors
/// As [`reset`] and [`reset_keeping`].
pub async fn reset_on(books: &SqlPool, plan: &StockPlan) -> Result<(ResetSummary, StockPlan), StrategyError> {
    match books {
        SqlPool::Postgres(pg) if plan.keep_catalogue => reset_keeping(pg, plan).await,
        SqlPool::Postgres(pg) => Ok((reset(pg, plan).await?, plan.clone())),
        SqlPool::MySql(pool) if plan.keep_catalogue => crate::dialect::mysql::reset_keeping(pool, plan).await,
        SqlPool::MySql(pool) => Ok((crate::dialect::mysql::reset(pool, plan).await?, plan.clone())),
    }
}

/// [`latest_plan_with_id`] on the books of either dialect.
///
/// # Errors
/// When the database does not answer.
pub async fn latest_plan_with_id_on(books: &SqlPool) -> Result<Option<(i64, StockPlan)>, StrategyError> {
    match books {
        SqlPool::Postgres(pg) => latest_plan_with_id(pg).await,
        SqlPool::MySql(pool) => crate::dialect::mysql::latest_plan_with_id(pool).await,
    }
}

/// Remembers `plan` as the catalogue strategies with their own stock should rebuild; every order
/// in the database belongs to the run that follows.
///
/// # Errors
/// When the database does not answer.
pub async fn record_plan(conn: &mut PgConnection, plan: &StockPlan) -> Result<(), StrategyError> {
    sqlx::query("INSERT INTO stock_plans (plan) VALUES ($1)").bind(Json(plan)).execute(conn).await?;
    Ok(())
}

/// Like [`record_plan`], and makes every order already in the database history: the audit and
/// the next reset keeping the catalogue look only at orders created from now on.
///
/// # Errors
/// When the database does not answer.
pub async fn record_plan_keeping_history(
    conn: &mut PgConnection,
    plan: &StockPlan,
) -> Result<(), StrategyError> {
    // The wall clock, not the transaction's start: every order of this transaction is older.
    sqlx::query("INSERT INTO stock_plans (plan, orders_since) VALUES ($1, clock_timestamp())")
        .bind(Json(plan))
        .execute(conn)
        .await?;
    Ok(())
}

/// [`record_plan_keeping_history`] on MySQL, in the caller's transaction.
///
/// # Errors
/// When the database does not answer.
pub async fn record_plan_keeping_history_mysql(
    conn: &mut sqlx::MySqlConnection,
    plan: &StockPlan,
) -> Result<(), StrategyError> {
    crate::dialect::mysql::record_plan_keeping_history(conn, plan).await
}

/// Orders created before this instant are history; `None` when every order is the run's.
///
/// # Errors
/// When the database does not answer.
pub async fn orders_since(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, StrategyError> {
    let since: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT orders_since FROM stock_plans ORDER BY id DESC LIMIT 1")
            .fetch_optional(conn)
            .await?;
    Ok(since.flatten())
}

/// The run's orders, as a condition on `orders` (its columns prefixed by the optional second
/// literal): every order when the bound (the first literal, a `timestamptz` parameter, from
/// [`orders_since`]) is NULL, else those created at or after it. Statements with it run with custom
/// plans, where the bound is a constant: the NULL test folds away and the block-range index on
/// `created_at` finds the run among ten million history orders. A macro, so statements embed it
/// with `concat!` and stay `&'static str`.
macro_rules! run_orders {
    ($bound:literal) => {
        run_orders!($bound, "")
    };
    ($bound:literal, $table:literal) => {
        concat!("(", $bound, "::timestamptz IS NULL OR ", $table, "created_at >= ", $bound, ")")
    };
}

/// Strategies that placed the run's orders (live ones, pending or confirmed), whichever process
/// sold them: the run's orders are those since the plan's `orders_since`, or every order after a
/// truncating reset.
///
/// # Errors
/// When the database does not answer.
pub async fn strategies_with_orders(pool: &PgPool) -> Result<Vec<String>, StrategyError> {
    let mut tx = pool.begin().await?;
    // A generic plan keeps the bound's NULL test, and with it reads every order.
    sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan").execute(&mut *tx).await?;
    let since = orders_since(&mut tx).await?;
    let names: Vec<String> = sqlx::query_scalar(concat!(
        "SELECT DISTINCT strategy FROM orders WHERE ",
        run_orders!("$1"),
        " AND status IN ('pending', 'confirmed')"
    ))
    .bind(since)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(names)
}

/// Products the run (see `run_orders!`, bound by `$1`) touched: in its orders, claimed by a gate,
/// or awaiting the stock sync.
const TOUCHED: &str = concat!(
    "SELECT i.product_id FROM orders o JOIN order_items i ON i.order_id = o.id WHERE ",
    run_orders!("$1", "o."),
    " UNION SELECT id FROM products WHERE gate IS NOT NULL \
     UNION SELECT product_id FROM stock_unapplied"
);

/// Puts each product of `$1` back to what its row says it had before the run: its initial stock
/// less the units its remaining (history) orders hold, and no gate.
const RESTORE: &str = r#"
WITH history AS (
    SELECT i.product_id, SUM(i.quantity)::bigint AS units
    FROM order_items i JOIN orders o ON o.id = i.order_id
    WHERE i.product_id = ANY($1) AND o.status IN ('pending', 'confirmed')
    GROUP BY i.product_id
), restored AS (
    SELECT p.id, p.initial_stock - COALESCE(h.units, 0) AS stock
    FROM products p LEFT JOIN history h ON h.product_id = p.id
    WHERE p.id = ANY($1)
)
UPDATE products p SET stock = r.stock, gate = NULL
FROM restored r
WHERE p.id = r.id AND (p.stock <> r.stock OR p.gate IS NOT NULL)
"#;

/// Lays out the plan's products over their history: `stock` as planned, `initial_stock` adding
/// the units their history orders hold, as populate writes it.
const SET_EXPLICIT: &str = r#"
WITH planned AS (
    SELECT id, stock FROM UNNEST($1::bigint[], $2::bigint[]) AS p (id, stock)
), history AS (
    SELECT i.product_id, SUM(i.quantity)::bigint AS units
    FROM order_items i JOIN orders o ON o.id = i.order_id
    WHERE i.product_id = ANY($1) AND o.status IN ('pending', 'confirmed')
    GROUP BY i.product_id
)
INSERT INTO products (id, stock, initial_stock)
SELECT p.id, p.stock, p.stock + COALESCE(h.units, 0) FROM planned p LEFT JOIN history h ON h.product_id = p.id
ON CONFLICT (id) DO UPDATE SET stock = EXCLUDED.stock, initial_stock = EXCLUDED.initial_stock, gate = NULL
"#;

/// Resets for another run on the catalogue as it is (`keep_catalogue`), without rewriting it: a
/// catalogue of millions loaded by `server populate`, with its history, stays. In one transaction:
/// deletes the orders placed since the last reset (the run's; older ones are history), puts every
/// product the run touched back to its stock before it (its initial stock less what its history
/// orders hold, so even a strategy that lost updates leaves nothing behind), sets the plan's
/// explicit products over their history, clears gates, unit pools and idempotency claims, and
/// records the plan in force — the last one's catalogue with `plan`'s products — which it returns.
///
/// Its cost follows the run, not the catalogue: the touched products and the run's orders are
/// found through indexes.
///
/// # Errors
/// When the database does not answer, or a purchase holds a row lock longer than 5 s.
pub async fn reset_keeping(
    pool: &PgPool,
    plan: &StockPlan,
) -> Result<(ResetSummary, StockPlan), StrategyError> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
    // A generic plan cannot know that `created_at >= $1` picks a few thousand rows of millions.
    sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan").execute(&mut *tx).await?;
    let since = orders_since(&mut tx).await?;
    let touched: Vec<i64> = sqlx::query_scalar(TOUCHED).bind(since).fetch_all(&mut *tx).await?;
    let deleted = sqlx::query(concat!("DELETE FROM orders WHERE ", run_orders!("$1")))
        .bind(since)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("TRUNCATE inventory_units, stock_unapplied, idempotency_claims").execute(&mut *tx).await?;
    let restored = sqlx::query(RESTORE).bind(&touched).execute(&mut *tx).await?.rows_affected();
    let (ids, stocks): (Vec<i64>, Vec<i64>) = plan.products.iter().map(|p| (p.id.get(), p.stock)).unzip();
    let written = sqlx::query(SET_EXPLICIT).bind(&ids).bind(&stocks).execute(&mut *tx).await?.rows_affected();
    let in_force = latest_plan_in(&mut tx).await?.unwrap_or_default().kept_with(plan);
    record_plan_keeping_history(&mut tx, &in_force).await?;
    tx.commit().await?;
    let summary = ResetSummary {
        products_written: written,
        products_rebaselined: 0,
        run_orders_deleted: Some(deleted),
        products_restored: Some(restored),
        redis_keys_loaded: 0,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    Ok((summary, in_force))
}

/// The id of the last recorded plan: it changes with every reset or populate, whichever process
/// made it, so every replica can tell its strategies hold an older plan.
///
/// # Errors
/// When the database does not answer.
pub async fn latest_plan_id(pool: &PgPool) -> Result<Option<i64>, StrategyError> {
    Ok(sqlx::query_scalar("SELECT id FROM stock_plans ORDER BY id DESC LIMIT 1").fetch_optional(pool).await?)
}

/// The last recorded plan and its id.
///
/// # Errors
/// When the database does not answer.
pub async fn latest_plan_with_id(pool: &PgPool) -> Result<Option<(i64, StockPlan)>, StrategyError> {
    let row: Option<(i64, Json<StockPlan>)> =
        sqlx::query_as("SELECT id, plan FROM stock_plans ORDER BY id DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(id, Json(plan))| (id, plan)))
}

/// The plan of the last reset or populate, if there was one.
///
/// # Errors
/// When the database does not answer.
pub async fn latest_plan(pool: &PgPool) -> Result<Option<StockPlan>, StrategyError> {
    let mut conn = pool.acquire().await?;
    latest_plan_in(&mut conn).await
}

async fn latest_plan_in(conn: &mut PgConnection) -> Result<Option<StockPlan>, StrategyError> {
    let row: Option<(Json<StockPlan>,)> =
        sqlx::query_as("SELECT plan FROM stock_plans ORDER BY id DESC LIMIT 1").fetch_optional(conn).await?;
    Ok(row.map(|(Json(plan),)| plan))
}

/// Streams `rows` rows into `statement` (a `COPY … FROM STDIN` in text format); `write(i, buf)`
/// appends row `i`. Memory stays at one chunk whatever the row count. `progress` hears the number
/// of rows sent after each chunk.
///
/// # Errors
/// When the database rejects a row or stops answering.
pub async fn copy_in(
    conn: &mut PgConnection,
    statement: &str,
    rows: u64,
    mut write: impl FnMut(u64, &mut Vec<u8>),
    mut progress: impl FnMut(u64),
) -> Result<u64, StrategyError> {
    let mut copy = conn.copy_in_raw(statement).await?;
    let mut buf = Vec::with_capacity(COPY_CHUNK + 4096);
    let mut sent_since_report = 0;
    for i in 0..rows {
        write(i, &mut buf);
        sent_since_report += 1;
        if buf.len() >= COPY_CHUNK {
            copy.send(std::mem::take(&mut buf)).await?;
            buf.reserve(COPY_CHUNK + 4096);
            progress(sent_since_report);
            sent_since_report = 0;
        }
    }
    if !buf.is_empty() {
        copy.send(buf).await?;
    }
    progress(sent_since_report);
    Ok(copy.finish().await?)
}

/// Appends one tab-separated text-format `COPY` row. Values must not contain tabs, newlines or
/// backslashes; numbers and the generated strings this crate writes never do.
pub fn write_row(out: &mut Vec<u8>, fields: &[&dyn std::fmt::Display]) {
    use std::io::Write;
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        write!(out, "{field}").expect("writing to a Vec cannot fail");
    }
    out.push(b'\n');
}

/// What is left to sell of product `$1`: its free unit rows when `sql-skip-locked`'s pool sells it,
/// else its stock row less the units sold insert-only that the stock sync has not applied yet.
/// `NULL` for a product PostgreSQL does not have. A macro, so
/// statements embed it with `concat!` and stay `&'static str`.
macro_rules! left_to_sell {
    () => {
        "(SELECT CASE WHEN p.gate = 'units' \
                 THEN (SELECT COUNT(*) FROM inventory_units WHERE product_id = $1 AND order_id IS NULL) \
                 ELSE p.stock - (SELECT COALESCE(SUM(quantity), 0) FROM stock_unapplied WHERE product_id = $1)::bigint \
                 END \
          FROM products p WHERE p.id = $1)"
    };
}
pub(crate) use left_to_sell;

/// What is left to sell of one product (see `left_to_sell!`), if it exists.
///
/// # Errors
/// When the database does not answer.
pub async fn stock_of(pool: &PgPool, id: ProductId) -> Result<Option<i64>, StrategyError> {
    let row: Option<(Option<i64>,)> =
        sqlx::query_as(concat!("SELECT ", left_to_sell!())).bind(id.get()).fetch_optional(pool).await?;
    Ok(row.and_then(|(stock,)| stock))
}

/// PostgreSQL's books per product for the run (see `run_orders!`, bound by `$2`): the products
/// the run touched, plus `$1`, with the units of their history orders taken out of the initial
/// stock, so each row reads as the run saw it (`initial_stock` = the stock at the reset). Only the
/// run's orders and the touched products' order lines are read, never the history as a whole.
///
/// Without a bound every order is the run's and there is no history: a product whose stock moved
/// with no order counts as touched too (units that vanished). Over history it is not seen, which
/// keeps the audit off the catalogue: every sale in this crate claims a gate or writes an order.
/// The statement runs with custom plans, where each `$2 IS [NOT] NULL` folds away.
const SQL_LEDGER: &str = concat!(
    "WITH run AS (SELECT id, idempotency_key, status FROM orders WHERE ",
    run_orders!("$2"),
    r#"), sold AS (
    SELECT i.product_id,
           SUM(i.quantity)::bigint AS units,
           COUNT(*)::bigint AS orders,
           (COUNT(r.idempotency_key) - COUNT(DISTINCT r.idempotency_key))::bigint AS duplicated
    FROM run r JOIN order_items i ON i.order_id = r.id
    WHERE r.status IN ('pending', 'confirmed')
    GROUP BY i.product_id
), touched AS (
    SELECT product_id FROM sold
    UNION SELECT i.product_id FROM run r JOIN order_items i ON i.order_id = r.id WHERE $2::timestamptz IS NOT NULL
    UNION SELECT id FROM products WHERE gate IS NOT NULL
    UNION SELECT product_id FROM stock_unapplied
    UNION SELECT unnest($1::bigint[])
    UNION SELECT id FROM products WHERE $2::timestamptz IS NULL AND stock <> initial_stock
), history AS (
    SELECT i.product_id, SUM(i.quantity)::bigint AS units
    FROM touched t JOIN order_items i ON i.product_id = t.product_id JOIN orders o ON o.id = i.order_id
    WHERE o.created_at < $2 AND o.status IN ('pending', 'confirmed')
    GROUP BY i.product_id
), unapplied AS (
    SELECT product_id, SUM(quantity)::bigint AS units FROM stock_unapplied GROUP BY product_id
)
SELECT p.id AS product_id, p.initial_stock - COALESCE(h.units, 0) AS initial_stock,
       CASE WHEN p.gate = 'units'
            THEN (SELECT COUNT(*) FROM inventory_units f WHERE f.product_id = p.id AND f.order_id IS NULL)
            ELSE p.stock
       END AS final_stock,
       COALESCE(s.units, 0) AS units_in_orders, COALESCE(s.orders, 0) AS orders,
       COALESCE(s.duplicated, 0) AS duplicated, p.gate, COALESCE(u.units, 0) AS awaiting_sync
FROM touched t JOIN products p ON p.id = t.product_id
LEFT JOIN sold s ON s.product_id = p.id LEFT JOIN history h ON h.product_id = p.id
LEFT JOIN unapplied u ON u.product_id = p.id
ORDER BY p.id
"#
);

/// Units in the run's live orders (see `run_orders!`, bound by `$1`) for products PostgreSQL has
/// no row for: sold out of nothing.
const ORPHAN_UNITS: &str = concat!(
    "SELECT COALESCE(SUM(i.quantity), 0)::bigint \
     FROM orders o JOIN order_items i ON i.order_id = o.id WHERE ",
    run_orders!("$1", "o."),
    " AND o.status IN ('pending', 'confirmed') \
      AND NOT EXISTS (SELECT 1 FROM products p WHERE p.id = i.product_id)"
);

#[derive(FromRow)]
pub(crate) struct LedgerRow {
    product_id: i64,
    initial_stock: i64,
    final_stock: i64,
    units_in_orders: i64,
    orders: i64,
    duplicated: i64,
    gate: Option<String>,
    awaiting_sync: i64,
}

/// One product's row in PostgreSQL's books, with the gate that sells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlProduct {
    pub ledger: ProductLedger,
    pub gate: Option<Gate>,
    /// Units in committed orders the stock sync has not taken from the stock row yet
    /// ([`crate::stock_sync`]).
    pub awaiting_sync: i64,
}

/// PostgreSQL's books, read from one snapshot: per-product rows for every product it has something
/// to say about (the ones in `tracked`, the ones with live orders, the ones whose stock moved; every
/// other product is untouched since the reset, hence clean), and order totals.
///
/// Over history (after `server populate`, or a reset that kept the catalogue), only the run's
/// orders count: the products they hold, the ones a gate claimed and `tracked`, each with its
/// history taken out of its initial stock (see [`SQL_LEDGER`]). A product whose stock moved
/// with no order and no gate is not seen then: every sale in this crate claims a gate or writes
/// an order.
///
/// # Errors
/// When the database does not answer.
pub async fn sql_books(
    pool: &PgPool,
    tracked: &[i64],
) -> Result<(Vec<SqlProduct>, OrderTotals), StrategyError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
    // Scanning millions of products outlives the timeout meant for purchases.
    sqlx::query("SET LOCAL statement_timeout = '300s'").execute(&mut *tx).await?;
    sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan").execute(&mut *tx).await?;
    let since = orders_since(&mut tx).await?;
    let rows: Vec<LedgerRow> =
        sqlx::query_as(SQL_LEDGER).bind(tracked).bind(since).fetch_all(&mut *tx).await?;
    let mut totals: OrderTotals = sqlx::query_as(ORDER_TOTALS).bind(since).fetch_one(&mut *tx).await?;
    totals.orphan_units = sqlx::query_scalar(ORPHAN_UNITS).bind(since).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok((ledger_of(rows), totals))
}

/// [`sql_books`] on the books of either dialect.
///
/// # Errors
/// When the database does not answer.
pub async fn sql_books_on(
    books: &SqlPool,
    tracked: &[i64],
) -> Result<(Vec<SqlProduct>, OrderTotals), StrategyError> {
    match books {
        SqlPool::Postgres(pg) => sql_books(pg, tracked).await,
        SqlPool::MySql(pool) => crate::dialect::mysql::sql_books(pool, tracked).await,
    }
}

pub(crate) fn ledger_of(rows: Vec<LedgerRow>) -> Vec<SqlProduct> {
    rows.into_iter()
        .map(|r| SqlProduct {
            ledger: ProductLedger {
                product_id: r.product_id,
                initial_stock: r.initial_stock,
                final_stock: r.final_stock,
                units_in_orders: r.units_in_orders,
                orders: r.orders,
                duplicated: r.duplicated,
            },
            gate: crate::gates::parse_gate(r.gate.as_deref()),
            awaiting_sync: r.awaiting_sync,
        })
        .collect()
}

/// Counts of the run's orders (see `run_orders!`, bound by `$1`).
const ORDER_TOTALS: &str = concat!(
    "SELECT COUNT(*) FILTER (WHERE status = 'pending') AS pending, \
            COUNT(*) FILTER (WHERE status = 'confirmed') AS confirmed, \
            COUNT(*) FILTER (WHERE status = 'cancelled') AS cancelled, \
            COUNT(*) FILTER (WHERE status = 'void') AS voided, \
            COUNT(idempotency_key) - COUNT(DISTINCT idempotency_key) AS duplicated, \
            0::bigint AS orphan_units, \
            (SELECT COUNT(DISTINCT order_id) FROM stock_unapplied) AS awaiting_sync \
     FROM orders WHERE ",
    run_orders!("$1")
);

/// Order counts over the whole table, which per-product rows cannot give (a multi-item order
/// shows in several rows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, FromRow)]
pub struct OrderTotals {
    pub pending: i64,
    pub confirmed: i64,
    pub cancelled: i64,
    /// Order ids voided while in doubt ([`crate::fence`]): never orders, listed for the record.
    pub voided: i64,
    /// Orders beyond the first for their idempotency key.
    pub duplicated: i64,
    /// Units in live orders for products PostgreSQL has no row for.
    pub orphan_units: i64,
    /// Committed orders whose units the stock sync has not applied to the stock rows yet.
    pub awaiting_sync: i64,
}

/// True when no product exists yet (a database nobody has reset or populated).
///
/// # Errors
/// When the database does not answer.
pub async fn is_empty(pool: &PgPool) -> Result<bool, StrategyError> {
    Ok(!sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM products)").fetch_one(pool).await?)
}

/// [`is_empty`], [`latest_plan_id`], [`latest_plan`], [`stock_of`], [`order_entries`] and
/// [`strategies_with_orders`] on the books of either dialect.
#[derive(Debug, Clone, Copy)]
pub struct BooksOn<'a>(pub &'a SqlPool);

impl BooksOn<'_> {
    /// # Errors
    /// When the database does not answer.
    pub async fn is_empty(self) -> Result<bool, StrategyError> {
        match self.0 {
            SqlPool::Postgres(pg) => is_empty(pg).await,
            SqlPool::MySql(pool) => crate::dialect::mysql::is_empty(pool).await,
        }
    }

    /// # Errors
    /// When the database does not answer.
    pub async fn latest_plan_id(self) -> Result<Option<i64>, StrategyError> {
        match self.0 {
            SqlPool::Postgres(pg) => latest_plan_id(pg).await,
            SqlPool::MySql(pool) => crate::dialect::mysql::latest_plan_id(pool).await,
        }
    }

    /// # Errors
    /// When the database does not answer, or the plan does not read back.
    pub async fn latest_plan(self) -> Result<Option<StockPlan>, StrategyError> {
        Ok(latest_plan_with_id_on(self.0).await?.map(|(_, plan)| plan))
    }

    /// # Errors
    /// When the database does not answer.
    pub async fn strategies_with_orders(self) -> Result<Vec<String>, StrategyError> {
        match self.0 {
            SqlPool::Postgres(pg) => strategies_with_orders(pg).await,
            SqlPool::MySql(pool) => crate::dialect::mysql::strategies_with_orders(pool).await,
        }
    }

    /// # Errors
    /// When the database does not answer.
    pub async fn stock_of(self, id: ProductId) -> Result<Option<i64>, StrategyError> {
        match self.0 {
            SqlPool::Postgres(pg) => stock_of(pg, id).await,
            SqlPool::MySql(pool) => crate::dialect::mysql::stock_of(pool, id).await,
        }
    }

    /// # Errors
    /// When the database does not answer, or holds a status or strategy this build does not know.
    pub async fn order_entries(self, limit: i64) -> Result<Vec<OrderEntry>, StrategyError> {
        match self.0 {
            SqlPool::Postgres(pg) => order_entries(pg, limit).await,
            SqlPool::MySql(pool) => entries_of(crate::dialect::mysql::order_entries(pool, limit).await?),
        }
    }
}

/// Orders of the run PostgreSQL holds (history excluded, see [`orders_since`]), at most `limit` of
/// them, in no particular order.
///
/// # Errors
/// When the database does not answer, or holds a status or strategy this build does not know.
pub async fn order_entries(pool: &PgPool, limit: i64) -> Result<Vec<OrderEntry>, StrategyError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan").execute(&mut *tx).await?;
    let since = orders_since(&mut tx).await?;
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(concat!(
        "SELECT id, strategy, status FROM orders WHERE ",
        run_orders!("$2"),
        " AND status <> 'void' LIMIT $1"
    ))
    .bind(limit)
    .bind(since)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    entries_of(rows)
}

fn entries_of(rows: Vec<(Uuid, String, String)>) -> Result<Vec<OrderEntry>, StrategyError> {
    rows.into_iter()
        .map(|(order_id, strategy, status)| {
            let strategy = strategy.parse::<StrategyKind>().map_err(|_| {
                StrategyError::Internal(format!("order {order_id} names strategy {strategy:?}"))
            })?;
            let status = OrderStatus::from_db(&status)
                .ok_or_else(|| StrategyError::Internal(format!("order {order_id} has status {status:?}")))?;
            Ok(OrderEntry { order_id, strategy, status })
        })
        .collect()
}
