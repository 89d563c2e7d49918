//! MySQL's and MariaDB's statements (InnoDB, REPEATABLE READ), and what their error numbers mean.
//!
//! What differs from PostgreSQL, and why the statements look the way they do:
//! - No `UPDATE … RETURNING` and no data-modifying CTE: a conditional decrement reports success by
//!   its affected-row count (the driver asks for found rows, which for a decrement that changes
//!   the stock are the changed rows), and an order and its lines are two statements in one
//!   transaction.
//! - A plain `SELECT` inside a REPEATABLE READ transaction reads the snapshot of its first read,
//!   not the latest row: whatever decides a sale reads the row with the locking read itself
//!   (`FOR UPDATE`) or is the conditional `UPDATE` (which always sees the latest version).
//! - No arrays: a list of ids is read one locking read per id in id order, so InnoDB locks exactly
//!   those rows (a join against a list would let the optimizer pick a scan that locks every row it
//!   passes). Order lines are inserted from two JSON arrays (`JSON_TABLE`), which locks nothing
//!   but the new rows.
//! - `INSERT IGNORE` stands for `ON CONFLICT DO NOTHING`: `ON DUPLICATE KEY UPDATE` reports one
//!   affected row for a duplicate once found rows are on, which would hide the conflict.

use super::{
    AtomicSql, ByIds, ClaimSql, ClaimStep, ClaimUnits, ContentionSql, DialectSql, FenceSql, ForUpdateSql,
    LayOutPool, NaiveSql, OptimisticSql, OrderSql, RedisSql, SkipLockedSql,
};
use crate::error::StrategyError;

const TAKE_LINE: &str = "UPDATE products SET stock = stock - $2, gate = 'postgres' \
                         WHERE id = $1 AND stock >= $2 AND COALESCE(gate, 'postgres') = 'postgres'";

const INSERT_ORDER_ROW: &str = "INSERT INTO orders (id, strategy, status, idempotency_key, user_name, \
                                address, phone, email) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

const INSERT_ORDER_LINES: &str = r#"
INSERT INTO order_items (order_id, product_id, quantity)
SELECT $1, p.product_id, q.quantity
FROM JSON_TABLE($9, '$[*]' COLUMNS (n FOR ORDINALITY, product_id BIGINT PATH '$')) AS p
JOIN JSON_TABLE($10, '$[*]' COLUMNS (n FOR ORDINALITY, quantity INT PATH '$')) AS q ON q.n = p.n
"#;

pub(crate) static SQL: DialectSql = DialectSql {
    atomic: AtomicSql {
        buy_one_line: None,
        take_line: TAKE_LINE,
        why_not: "SELECT gate FROM products WHERE id = $1",
    },
    for_update: ForUpdateSql {
        lock_products: ByIds::EachId("SELECT id, stock, gate FROM products WHERE id = $1 FOR UPDATE"),
        take: "UPDATE products SET stock = stock - $2, gate = 'postgres' WHERE id = $1",
    },
    naive: NaiveSql {
        read_stock: ByIds::EachId("SELECT id, stock FROM products WHERE id = $1"),
        take_unconditionally: "UPDATE products SET stock = stock - $2, gate = COALESCE(gate, 'postgres') \
                               WHERE id = $1",
    },
    optimistic: OptimisticSql {
        // Autocommit: each read sees the latest committed row, as in PostgreSQL.
        read: ByIds::EachId("SELECT id, stock, version, gate FROM products WHERE id = $1"),
        swap: "UPDATE products SET stock = stock - $2, version = version + 1, gate = 'postgres' \
               WHERE id = $1 AND version = $3 AND stock >= $2 AND COALESCE(gate, 'postgres') = 'postgres'",
    },
    skip_locked: SkipLockedSql {
        lay_out: LayOutPool::Steps {
            lock: "SELECT stock, gate FROM products WHERE id = $1 FOR UPDATE",
            claim: "UPDATE products SET gate = 'units' WHERE id = $1 AND gate IS NULL",
            // One recursion step per unit: lift `max_recursive_iterations` (1,000 by default on
            // these servers) for this statement only.
            fill: "SET STATEMENT max_recursive_iterations = 4294967295 FOR \
                   INSERT INTO inventory_units (product_id, unit_no) \
                   WITH RECURSIVE unit (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM unit WHERE n < $2) \
                   SELECT $1, n FROM unit",
        },
        gate_of: "SELECT gate FROM products WHERE id = $1",
        // InnoDB skips locked rows in locking reads only, not in an UPDATE.
        claim_units: ClaimUnits::PickThenMark {
            pick: "SELECT unit_no FROM inventory_units WHERE product_id = $1 AND order_id IS NULL \
                   LIMIT $2 FOR UPDATE SKIP LOCKED",
            mark: "UPDATE inventory_units u \
                   JOIN JSON_TABLE($2, '$[*]' COLUMNS (unit_no BIGINT PATH '$')) AS picked \
                   ON u.unit_no = picked.unit_no \
                   SET u.order_id = $3 WHERE u.product_id = $1",
        },
    },
    contention: ContentionSql {
        record: "INSERT INTO contention_refusals (plan_id, product_id, refusals) \
                 SELECT COALESCE(MAX(id), 0), $1, 1 FROM stock_plans \
                 ON DUPLICATE KEY UPDATE refusals = refusals + 1",
        of_current_plan: "SELECT product_id, refusals FROM contention_refusals \
                          WHERE plan_id = (SELECT COALESCE(MAX(id), 0) FROM stock_plans)",
        forget_earlier: "DELETE FROM contention_refusals \
                         WHERE plan_id < (SELECT COALESCE(MAX(id), 0) FROM stock_plans)",
    },
    orders: OrderSql {
        insert: &[INSERT_ORDER_ROW, INSERT_ORDER_LINES],
        receipt_by_key: "SELECT id, status, strategy FROM orders \
                         WHERE idempotency_key = $1 AND status <> 'void'",
    },
    fence: FenceSql {
        void: "INSERT IGNORE INTO orders (id, strategy, status, address, phone, email, reason) \
               VALUES ($1, $2, 'void', '', '', '', $3)",
        status: "SELECT status FROM orders WHERE id = $1",
    },
    claims: ClaimSql {
        claim: ClaimStep::InsertThenRead {
            // A key another transaction is inserting makes this wait for it, as in PostgreSQL.
            insert: "INSERT IGNORE INTO idempotency_claims (idempotency_key, order_id, strategy, fingerprint) \
                     VALUES ($1, $2, $3, $4)",
            holder: "SELECT order_id, strategy, fingerprint, \
                     CAST(TIMESTAMPDIFF(MICROSECOND, claimed_at, NOW(6)) / 1e6 AS DOUBLE) \
                     FROM idempotency_claims WHERE idempotency_key = $1",
        },
        unclaim: "DELETE FROM idempotency_claims WHERE idempotency_key = $1 AND order_id = $2",
        receipt: "SELECT status, strategy FROM orders WHERE id = $1 AND status <> 'void'",
    },
    redis: RedisSql { take_reserved: "UPDATE products SET stock = stock - $2 WHERE id = $1 AND stock >= $2" },
};

/// Products per statement of a reset's random catalogue: two JSON arrays of this many numbers
/// stay far below `max_allowed_packet` (16 MiB), and memory stays at one chunk.
const RESET_CHUNK: u64 = 10_000;

/// A reset's statements run past the purchases' statement limit (a big catalogue takes longer),
/// but wait at most 5 s for a row a purchase holds, as PostgreSQL's reset does.
macro_rules! reset_statement {
    ($sql:literal) => {
        concat!("SET STATEMENT max_statement_time = 0, innodb_lock_wait_timeout = 5 FOR ", $sql)
    };
}

/// A plan's explicit products from two JSON arrays (ids, then stocks), as `i.id` and `s.stock`. A
/// macro, so statements embed it with `concat!`.
macro_rules! planned {
    () => {
        "JSON_TABLE(?, '$[*]' COLUMNS (n FOR ORDINALITY, id BIGINT PATH '$')) AS i \
         JOIN JSON_TABLE(?, '$[*]' COLUMNS (n FOR ORDINALITY, stock BIGINT PATH '$')) AS s ON s.n = i.n"
    };
}

const PLANNED: &str = planned!();

/// [`crate::catalog::reset`] on MySQL: every order deleted and `plan` laid out in one
/// transaction. InnoDB's `TRUNCATE` commits on its own, so the tables are emptied with `DELETE`.
///
/// # Errors
/// When the server does not answer, or a purchase holds a row longer than 5 s.
pub(crate) async fn reset(
    pool: &sqlx::MySqlPool,
    plan: &crate::plan::StockPlan,
) -> Result<crate::catalog::ResetSummary, StrategyError> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    for table in [
        reset_statement!("DELETE FROM inventory_units"),
        reset_statement!("DELETE FROM stock_unapplied"),
        reset_statement!("DELETE FROM order_items"),
        reset_statement!("DELETE FROM orders"),
        reset_statement!("DELETE FROM idempotency_claims"),
    ] {
        sqlx::query(table).execute(&mut *tx).await?;
    }
    let mut written = 0;
    if let Some(random) = plan.random_products {
        sqlx::query(reset_statement!("DELETE FROM products")).execute(&mut *tx).await?;
        let explicit: std::collections::HashMap<i64, i64> =
            plan.products.iter().map(|p| (p.id.get(), p.stock)).collect();
        for first in (1..=random.count).step_by(usize::try_from(RESET_CHUNK).unwrap_or(usize::MAX)) {
            let ids: Vec<i64> =
                (first..=random.count.min(first + RESET_CHUNK - 1)).map(u64::cast_signed).collect();
            let stocks: Vec<i64> = ids
                .iter()
                .map(|id| explicit.get(id).copied().unwrap_or_else(|| random.stock_of(*id)))
                .collect();
            written += sqlx::query(sqlx::AssertSqlSafe(format!(
                "{} INSERT INTO products (id, stock, initial_stock) SELECT i.id, s.stock, s.stock FROM {PLANNED}",
                reset_statement!("")
            )))
            .bind(sqlx::types::Json(&ids))
            .bind(sqlx::types::Json(&stocks))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
    }
    let (ids, stocks): (Vec<i64>, Vec<i64>) = plan.products.iter().map(|p| (p.id.get(), p.stock)).unzip();
    // Found rows count a row the update matched: the condition keeps that to the rows it changes.
    written += sqlx::query(sqlx::AssertSqlSafe(format!(
        "{} UPDATE products p JOIN (SELECT i.id, s.stock FROM {PLANNED}) AS planned ON planned.id = p.id \
         SET p.stock = planned.stock, p.initial_stock = planned.stock \
         WHERE p.stock <> planned.stock OR p.initial_stock <> planned.stock",
        reset_statement!("")
    )))
    .bind(sqlx::types::Json(&ids))
    .bind(sqlx::types::Json(&stocks))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    written += sqlx::query(sqlx::AssertSqlSafe(format!(
        "{} INSERT IGNORE INTO products (id, stock, initial_stock) SELECT i.id, s.stock, s.stock FROM {PLANNED}",
        reset_statement!("")
    )))
    .bind(sqlx::types::Json(&ids))
    .bind(sqlx::types::Json(&stocks))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let rebaselined = sqlx::query(reset_statement!(
        "UPDATE products SET initial_stock = stock, gate = NULL WHERE initial_stock <> stock OR gate IS NOT NULL"
    ))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("INSERT INTO stock_plans (plan) VALUES (?)")
        .bind(sqlx::types::Json(plan))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(crate::catalog::ResetSummary {
        products_written: written,
        products_rebaselined: rebaselined,
        run_orders_deleted: None,
        products_restored: None,
        redis_keys_loaded: 0,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// [`crate::catalog::latest_plan_with_id`] on MySQL.
///
/// # Errors
/// When the server does not answer or the plan does not read back.
pub(crate) async fn latest_plan_with_id(
    pool: &sqlx::MySqlPool,
) -> Result<Option<(i64, crate::plan::StockPlan)>, StrategyError> {
    let row: Option<(i64, sqlx::types::Json<crate::plan::StockPlan>)> =
        sqlx::query_as("SELECT id, plan FROM stock_plans ORDER BY id DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(id, sqlx::types::Json(plan))| (id, plan)))
}

/// [`crate::catalog::record_plan_keeping_history`] on MySQL. `NOW(6)` is the statement's start in
/// MariaDB, not the transaction's: every order the transaction wrote before it is older.
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn record_plan_keeping_history(
    conn: &mut sqlx::MySqlConnection,
    plan: &crate::plan::StockPlan,
) -> Result<(), StrategyError> {
    sqlx::query("INSERT INTO stock_plans (plan, orders_since) VALUES (?, NOW(6))")
        .bind(sqlx::types::Json(plan))
        .execute(conn)
        .await?;
    Ok(())
}

/// The run's orders (`?` the plan's `orders_since`, NULL after a truncating reset).
macro_rules! run_orders {
    ($table:literal) => {
        concat!("(? IS NULL OR ", $table, "created_at >= ?)")
    };
}

/// [`crate::catalog::sql_books`]'s ledger on MySQL: the same columns, arrays as JSON and
/// `FILTER` as sums of conditions. Parameters: tracked ids (JSON), then `orders_since` as often as
/// the statement names it (MySQL's `?` cannot be reused).
const SQL_LEDGER: &str = concat!(
    "SET STATEMENT max_statement_time = 300 FOR ",
    "WITH run AS (SELECT id, idempotency_key, status FROM orders WHERE ",
    run_orders!(""),
    r#"), sold AS (
    SELECT i.product_id,
           CAST(SUM(i.quantity) AS SIGNED) AS units,
           COUNT(*) AS orders,
           COUNT(r.idempotency_key) - COUNT(DISTINCT r.idempotency_key) AS duplicated
    FROM run r JOIN order_items i ON i.order_id = r.id
    WHERE r.status IN ('pending', 'confirmed')
    GROUP BY i.product_id
), touched AS (
    SELECT product_id FROM sold
    UNION SELECT i.product_id FROM run r JOIN order_items i ON i.order_id = r.id WHERE ? IS NOT NULL
    UNION SELECT id FROM products WHERE gate IS NOT NULL
    UNION SELECT product_id FROM stock_unapplied
    UNION SELECT t.id FROM JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$')) AS t
    UNION SELECT id FROM products WHERE ? IS NULL AND stock <> initial_stock
), history AS (
    SELECT i.product_id, CAST(SUM(i.quantity) AS SIGNED) AS units
    FROM touched t JOIN order_items i ON i.product_id = t.product_id JOIN orders o ON o.id = i.order_id
    WHERE o.created_at < ? AND o.status IN ('pending', 'confirmed')
    GROUP BY i.product_id
), unapplied AS (
    SELECT product_id, CAST(SUM(quantity) AS SIGNED) AS units FROM stock_unapplied GROUP BY product_id
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

const ORDER_TOTALS: &str = concat!(
    "SELECT CAST(COALESCE(SUM(status = 'pending'), 0) AS SIGNED) AS pending, \
            CAST(COALESCE(SUM(status = 'confirmed'), 0) AS SIGNED) AS confirmed, \
            CAST(COALESCE(SUM(status = 'cancelled'), 0) AS SIGNED) AS cancelled, \
            CAST(COALESCE(SUM(status = 'void'), 0) AS SIGNED) AS voided, \
            COUNT(idempotency_key) - COUNT(DISTINCT idempotency_key) AS duplicated, \
            CAST(0 AS SIGNED) AS orphan_units, \
            (SELECT COUNT(DISTINCT order_id) FROM stock_unapplied) AS awaiting_sync \
     FROM orders WHERE ",
    run_orders!("")
);

const ORPHAN_UNITS: &str = concat!(
    "SELECT CAST(COALESCE(SUM(i.quantity), 0) AS SIGNED) \
     FROM orders o JOIN order_items i ON i.order_id = o.id WHERE ",
    run_orders!("o."),
    " AND o.status IN ('pending', 'confirmed') \
      AND NOT EXISTS (SELECT 1 FROM products p WHERE p.id = i.product_id)"
);

/// [`crate::catalog::sql_books`] on MySQL, every figure read from one snapshot (the
/// transaction's REPEATABLE READ view, taken at its first read).
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn sql_books(
    pool: &sqlx::MySqlPool,
    tracked: &[i64],
) -> Result<(Vec<crate::catalog::SqlProduct>, crate::catalog::OrderTotals), StrategyError> {
    let mut tx = pool.begin().await?;
    let since = orders_since(&mut tx).await?;
    let rows: Vec<crate::catalog::LedgerRow> = sqlx::query_as(SQL_LEDGER)
        .bind(since)
        .bind(since)
        .bind(since)
        .bind(sqlx::types::Json(tracked))
        .bind(since)
        .bind(since)
        .fetch_all(&mut *tx)
        .await?;
    let mut totals: crate::catalog::OrderTotals =
        sqlx::query_as(ORDER_TOTALS).bind(since).bind(since).fetch_one(&mut *tx).await?;
    totals.orphan_units =
        sqlx::query_scalar(ORPHAN_UNITS).bind(since).bind(since).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok((crate::catalog::ledger_of(rows), totals))
}

/// [`crate::catalog::is_empty`] on MySQL.
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn is_empty(pool: &sqlx::MySqlPool) -> Result<bool, StrategyError> {
    let any: i64 = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products)").fetch_one(pool).await?;
    Ok(any == 0)
}

/// [`crate::catalog::latest_plan_id`] on MySQL.
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn latest_plan_id(pool: &sqlx::MySqlPool) -> Result<Option<i64>, StrategyError> {
    Ok(sqlx::query_scalar("SELECT id FROM stock_plans ORDER BY id DESC LIMIT 1").fetch_optional(pool).await?)
}

/// What is left to sell of product `?`, as `left_to_sell!` reads it; no row for a product the
/// books do not have.
pub(crate) const LEFT_TO_SELL: &str = "SELECT CASE WHEN p.gate = 'units' \
         THEN (SELECT COUNT(*) FROM inventory_units WHERE product_id = p.id AND order_id IS NULL) \
         ELSE p.stock - CAST((SELECT COALESCE(SUM(quantity), 0) FROM stock_unapplied \
                              WHERE product_id = p.id) AS SIGNED) \
         END \
     FROM products p WHERE p.id = ?";

/// [`crate::catalog::stock_of`] on MySQL: what is left to sell, as `left_to_sell!` reads it.
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn stock_of(
    pool: &sqlx::MySqlPool,
    id: crate::order::ProductId,
) -> Result<Option<i64>, StrategyError> {
    Ok(sqlx::query_scalar(LEFT_TO_SELL).bind(id.get()).fetch_optional(pool).await?)
}

/// `id, strategy, status` of at most `limit` of the run's live orders
/// ([`crate::catalog::order_entries`]).
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn order_entries(
    pool: &sqlx::MySqlPool,
    limit: i64,
) -> Result<Vec<(uuid::Uuid, String, String)>, StrategyError> {
    let mut tx = pool.begin().await?;
    let since = orders_since(&mut tx).await?;
    let rows = sqlx::query_as(concat!(
        "SELECT id, strategy, status FROM orders WHERE ",
        run_orders!(""),
        " AND status <> 'void' LIMIT ?"
    ))
    .bind(since)
    .bind(since)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// [`crate::catalog::strategies_with_orders`] on MySQL.
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn strategies_with_orders(pool: &sqlx::MySqlPool) -> Result<Vec<String>, StrategyError> {
    let mut tx = pool.begin().await?;
    let since = orders_since(&mut tx).await?;
    let names = sqlx::query_scalar(concat!(
        "SELECT DISTINCT strategy FROM orders WHERE ",
        run_orders!(""),
        " AND status IN ('pending', 'confirmed')"
    ))
    .bind(since)
    .bind(since)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(names)
}

/// The plan in force's `orders_since` (NULL after a truncating reset, or with no plan).
async fn orders_since(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StrategyError> {
    Ok(sqlx::query_scalar("SELECT orders_since FROM stock_plans ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?
        .flatten())
}

/// The products in the run's lines (`?` twice: the plan's `orders_since`), read with locks: a
/// plain read would serve REPEATABLE READ's snapshot, and an order committed since would be
/// deleted below without its products being restored. The next-key locks on `orders_created_at`
/// also hold off new orders until the reset commits.
const RUN_PRODUCTS: &str = concat!(
    reset_statement!(""),
    "SELECT i.product_id FROM orders o JOIN order_items i ON i.order_id = o.id WHERE ",
    run_orders!("o."),
    " FOR UPDATE"
);

/// Products a gate claimed or the stock sync has not caught up with. A plain read: without an
/// index on `gate` it scans the catalogue, and a locking read would lock every row it passes.
const GATED_OR_UNAPPLIED: &str = "SELECT id FROM products WHERE gate IS NOT NULL \
                                  UNION SELECT product_id FROM stock_unapplied";

/// The units the live orders hold of the product whose id the expression `$id` gives: once the
/// run's orders are deleted, its history's. Found through `order_items_product`.
macro_rules! history_units {
    ($id:literal) => {
        concat!(
            "(SELECT CAST(COALESCE(SUM(h.quantity), 0) AS SIGNED) \
              FROM order_items h JOIN orders ho ON ho.id = h.order_id \
              WHERE h.product_id = ",
            $id,
            " AND ho.status IN ('pending', 'confirmed'))"
        )
    };
}

/// [`crate::catalog::reset_keeping`]'s restore: each product of the JSON list back to its initial
/// stock less what its history orders hold, and no gate. The list drives the join (InnoDB
/// updates, and locks, those rows by primary key alone); found rows count only the rows the
/// condition lets through, the ones that change.
const RESTORE: &str = concat!(
    reset_statement!(""),
    "UPDATE products p JOIN (SELECT t.id, ",
    history_units!("t.id"),
    " AS units FROM JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$')) AS t) AS r ON r.id = p.id \
     SET p.stock = p.initial_stock - r.units, p.gate = NULL \
     WHERE p.stock <> p.initial_stock - r.units OR p.gate IS NOT NULL"
);

/// The plan's explicit products that exist, laid out over their history: `stock` as planned,
/// `initial_stock` adding the units their history orders hold. Every one counts as written.
const SET_EXPLICIT: &str = concat!(
    reset_statement!(""),
    "UPDATE products p JOIN (SELECT i.id, s.stock, ",
    history_units!("i.id"),
    " AS units FROM ",
    planned!(),
    ") AS planned ON planned.id = p.id \
     SET p.stock = planned.stock, p.initial_stock = planned.stock + planned.units, p.gate = NULL"
);

/// The plan's explicit products that do not exist yet, as [`SET_EXPLICIT`] lays them out.
const ADD_EXPLICIT: &str = concat!(
    reset_statement!(""),
    "INSERT IGNORE INTO products (id, stock, initial_stock) SELECT i.id, s.stock, s.stock + ",
    history_units!("i.id"),
    " FROM ",
    planned!()
);

/// [`crate::catalog::reset_keeping`] on MySQL, with the same steps in one transaction: the run's
/// orders deleted (history stays), the products it touched restored, unit pools, unapplied sales
/// and idempotency claims emptied (with `DELETE`: `TRUNCATE` would commit), the plan's products
/// set over their history and the plan in force recorded. Returns what it did and that plan.
///
/// # Errors
/// When the server does not answer, or a purchase holds a row longer than 5 s.
pub(crate) async fn reset_keeping(
    pool: &sqlx::MySqlPool,
    plan: &crate::plan::StockPlan,
) -> Result<(crate::catalog::ResetSummary, crate::plan::StockPlan), StrategyError> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    let since = orders_since(&mut tx).await?;
    let mut touched: Vec<i64> =
        sqlx::query_scalar(RUN_PRODUCTS).bind(since).bind(since).fetch_all(&mut *tx).await?;
    touched.extend(sqlx::query_scalar::<_, i64>(GATED_OR_UNAPPLIED).fetch_all(&mut *tx).await?);
    // RESTORE sums history per list entry: a product listed twice would be summed twice.
    touched.sort_unstable();
    touched.dedup();
    let deleted = sqlx::query(concat!(reset_statement!(""), "DELETE FROM orders WHERE ", run_orders!("")))
        .bind(since)
        .bind(since)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    for table in [
        reset_statement!("DELETE FROM inventory_units"),
        reset_statement!("DELETE FROM stock_unapplied"),
        reset_statement!("DELETE FROM idempotency_claims"),
    ] {
        sqlx::query(table).execute(&mut *tx).await?;
    }
    let restored =
        sqlx::query(RESTORE).bind(sqlx::types::Json(&touched)).execute(&mut *tx).await?.rows_affected();
    let (ids, stocks): (Vec<i64>, Vec<i64>) = plan.products.iter().map(|p| (p.id.get(), p.stock)).unzip();
    let mut written = 0;
    for statement in [SET_EXPLICIT, ADD_EXPLICIT] {
        written += sqlx::query(statement)
            .bind(sqlx::types::Json(&ids))
            .bind(sqlx::types::Json(&stocks))
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    let last: Option<sqlx::types::Json<crate::plan::StockPlan>> =
        sqlx::query_scalar("SELECT plan FROM stock_plans ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let in_force = last.map(|sqlx::types::Json(last)| last).unwrap_or_default().kept_with(plan);
    record_plan_keeping_history(&mut tx, &in_force).await?;
    tx.commit().await?;
    let summary = crate::catalog::ResetSummary {
        products_written: written,
        products_rebaselined: 0,
        run_orders_deleted: Some(deleted),
        products_restored: Some(restored),
        redis_keys_loaded: 0,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    Ok((summary, in_force))
}

/// One live order and its lines in product order, the lines as two JSON arrays
/// ([`crate::order_store::fetch_order`]).
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn fetch_order(
    pool: &sqlx::MySqlPool,
    id: uuid::Uuid,
) -> Result<Option<crate::order_store::OrderRow>, StrategyError> {
    use sqlx::Row;
    const ORDER_BY_ID: &str = "SELECT id, strategy, status, idempotency_key, user_name, address, phone, email, \
            reason, created_at, \
            (SELECT JSON_ARRAYAGG(product_id ORDER BY product_id) FROM order_items WHERE order_id = orders.id), \
            (SELECT JSON_ARRAYAGG(quantity ORDER BY product_id) FROM order_items WHERE order_id = orders.id) \
        FROM orders WHERE id = ? AND status <> 'void'";
    let Some(row) = sqlx::query(ORDER_BY_ID).bind(id).fetch_optional(pool).await? else { return Ok(None) };
    let list = |index: usize| -> Result<Option<String>, sqlx::Error> { row.try_get(index) };
    let (product_ids, quantities) = (list(10)?, list(11)?);
    let parse = |json: Option<String>| -> Result<Vec<i64>, StrategyError> {
        json.map_or(Ok(Vec::new()), |json| {
            serde_json::from_str(&json)
                .map_err(|err| StrategyError::Internal(format!("order {id}'s lines: {err}")))
        })
    };
    let quantities = parse(quantities)?
        .into_iter()
        .map(|quantity| i32::try_from(quantity).map_err(|err| StrategyError::Internal(err.to_string())))
        .collect::<Result<_, _>>()?;
    Ok(Some(crate::order_store::OrderRow {
        id: row.try_get(0)?,
        strategy: row.try_get(1)?,
        status: row.try_get(2)?,
        idempotency_key: row.try_get(3)?,
        user_name: row.try_get(4)?,
        address: row.try_get(5)?,
        phone: row.try_get(6)?,
        email: row.try_get(7)?,
        reason: row.try_get(8)?,
        created_at: row.try_get(9)?,
        product_ids: parse(product_ids)?,
        quantities,
    }))
}

/// ER_DUP_ENTRY: a unique key is taken; the message names the key.
pub(crate) const DUPLICATE_ENTRY: u16 = 1062;
/// ER_LOCK_DEADLOCK: InnoDB rolled the transaction back to break a cycle.
const DEADLOCK: u16 = 1213;
/// ER_CHECKREAD: the row changed since the transaction's snapshot (MariaDB with
/// `innodb_snapshot_isolation`); the transaction rolled back and may succeed if run again.
const SNAPSHOT_CHANGED: u16 = 1020;
/// ER_LOCK_WAIT_TIMEOUT: a row lock was not granted within `innodb_lock_wait_timeout`.
const LOCK_WAIT_TIMEOUT: u16 = 1205;
/// ER_STATEMENT_TIMEOUT: `max_statement_time` fired (MariaDB).
const STATEMENT_TIMEOUT: u16 = 1969;
/// ER_QUERY_TIMEOUT: `max_execution_time` fired (MySQL).
const QUERY_TIMEOUT: u16 = 3024;
/// ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, ER_CONNECTION_KILLED, ER_QUERY_INTERRUPTED.
const SERVER_AWAY: [u16; 4] = [1040, 1053, 1927, 1317];

/// The transaction rolled back for a conflict and may succeed if run again.
pub(crate) const fn is_retryable(number: u16) -> bool {
    matches!(number, DEADLOCK | SNAPSHOT_CHANGED)
}

/// The server stopped while the statement ran: it may have committed, as after a lost reply.
pub(crate) fn may_have_committed(number: u16) -> bool {
    matches!(number, 1053 | 1927)
}

/// The unique key a duplicate-entry error names (`orders_idempotency_key`, `PRIMARY`), without
/// the table MySQL 8 puts in front of it.
pub(crate) fn duplicate_key(number: u16, message: &str) -> Option<&str> {
    if number != DUPLICATE_ENTRY {
        return None;
    }
    let quoted = message.rsplit_once(" for key '")?.1.strip_suffix('\'')?;
    Some(quoted.rsplit_once('.').map_or(quoted, |(_, key)| key))
}

/// The error a failure the server answered with error `number` is.
pub(crate) fn strategy_error(number: u16, message: String) -> StrategyError {
    if is_retryable(number) {
        StrategyError::Conflict(message)
    } else if matches!(number, LOCK_WAIT_TIMEOUT | STATEMENT_TIMEOUT | QUERY_TIMEOUT)
        || SERVER_AWAY.contains(&number)
    {
        StrategyError::Unavailable(message)
    } else {
        StrategyError::Internal(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_read_from_either_servers_message() {
        let mariadb = "Duplicate entry 'k-1' for key 'orders_idempotency_key'";
        let mysql8 = "Duplicate entry 'k-1' for key 'orders.orders_idempotency_key'";
        for message in [mariadb, mysql8] {
            assert_eq!(duplicate_key(DUPLICATE_ENTRY, message), Some("orders_idempotency_key"));
        }
        assert_eq!(duplicate_key(DUPLICATE_ENTRY, "Duplicate entry 'x' for key 'PRIMARY'"), Some("PRIMARY"));
        assert_eq!(duplicate_key(DEADLOCK, mariadb), None, "only a duplicate entry names a key");
    }

    #[test]
    fn conflicts_retry_and_timeouts_answer_503() {
        for number in [DEADLOCK, SNAPSHOT_CHANGED] {
            assert!(is_retryable(number));
            assert!(matches!(strategy_error(number, String::new()), StrategyError::Conflict(_)));
        }
        for number in [LOCK_WAIT_TIMEOUT, STATEMENT_TIMEOUT, QUERY_TIMEOUT] {
            assert!(!is_retryable(number));
            assert!(matches!(strategy_error(number, String::new()), StrategyError::Unavailable(_)));
        }
        assert!(matches!(strategy_error(DUPLICATE_ENTRY, String::new()), StrategyError::Internal(_)));
    }
}
