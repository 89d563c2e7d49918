//! MariaDB's statements for many orders at once: the shared batch writer (orders, lines, the
//! units they take in each [`StockTake`] mode), the receipts of `sql-coalesce`'s keys, and the
//! fence of a batch in doubt ([`crate::fence::settle_all_on`]).
//!
//! PostgreSQL takes each list as one array parameter; here a list of keys is one placeholder per
//! item (`IN (?, ?, …)`, multi-row `VALUES`), so InnoDB reads and locks exactly those entries of
//! the primary or unique index, and every value keeps its type (an order id is its 16 bytes, a key
//! compares with the column's collation). The lines, which only add rows, go in through
//! `JSON_TABLE`, one statement text whatever the batch's size.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{MySqlConnection, MySqlPool};
use uuid::Uuid;

use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::order::OrderStatus;
use crate::order_store::{BatchError, BatchOrder, StockTake, Written};
use crate::pg_driver::Statements;

/// `?, ?, …`: one placeholder per item.
pub(super) fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// `row, row, …`: a multi-row `VALUES` list.
fn rows(count: usize, row: &str) -> String {
    vec![row; count].join(", ")
}

/// Voids every id of `ids` that no order holds yet, and returns the ids a live order holds. The
/// insert waits for any transaction still writing one of these ids (InnoDB's duplicate check
/// waits for the row's lock), so afterwards every id is void or a committed order, for good.
///
/// # Errors
/// When the server does not answer: the doubt stays for every id.
pub(crate) async fn void_all(
    pool: &MySqlPool,
    kind: StrategyKind,
    ids: &[Uuid],
    why: &str,
) -> Result<HashSet<Uuid>, StrategyError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let void = format!(
        "INSERT IGNORE INTO orders (id, strategy, status, address, phone, email, reason) VALUES {}",
        rows(ids.len(), "(?, ?, 'void', '', '', '', ?)")
    );
    let mut conn = pool.acquire().await?;
    ids.iter()
        .fold(sqlx::query(sqlx::AssertSqlSafe(void)), |query, id| {
            query.bind(id).bind(kind.as_str()).bind(why)
        })
        .execute(&mut *conn)
        .await?;
    let live =
        format!("SELECT id FROM orders WHERE id IN ({}) AND status <> 'void'", placeholders(ids.len()));
    let found: Vec<Uuid> = ids
        .iter()
        .fold(sqlx::query_scalar(sqlx::AssertSqlSafe(live)), |query, id| query.bind(id))
        .fetch_all(&mut *conn)
        .await?;
    Ok(found.into_iter().collect())
}

/// `idempotency_key, id, status, strategy` of the live orders holding any of `keys`.
///
/// # Errors
/// When the server does not answer.
pub(crate) async fn receipts_by_key(
    conn: &mut MySqlConnection,
    keys: &[&str],
) -> Result<Vec<(String, Uuid, String, String)>, sqlx::Error> {
    let sql = format!(
        "SELECT idempotency_key, id, status, strategy FROM orders \
         WHERE idempotency_key IN ({}) AND status <> 'void'",
        placeholders(keys.len())
    );
    keys.iter()
        .fold(sqlx::query_as(sqlx::AssertSqlSafe(sql)), |query, key| query.bind(*key))
        .fetch_all(conn)
        .await
}

/// Inserts into `$table` a batch's lines, sent as one JSON array of `JSON_TABLE` rows: the order
/// id in hex, the product, the quantity.
macro_rules! insert_lines_into {
    ($table:literal) => {
        concat!(
            "INSERT INTO ",
            $table,
            " (order_id, product_id, quantity) SELECT UNHEX(l.order_id), l.product_id, l.quantity \
             FROM JSON_TABLE(?, '$[*]' COLUMNS (order_id CHAR(32) PATH '$[0]', product_id BIGINT PATH '$[1]', \
             quantity INT PATH '$[2]')) AS l"
        )
    };
}

/// The orders' lines.
const INSERT_LINES: &str = insert_lines_into!("order_items");

/// The same lines, as units awaiting the stock sync (`redis-orderlog`, [`StockTake::Logged`]).
const LOG_LINES: &str = insert_lines_into!("stock_unapplied");

/// `$1` product, `$2` units: [`StockTake::Decided`]'s unconditional decrement, the Redis gate's
/// claim riding on it, as on PostgreSQL.
const TAKE_DECIDED: &str =
    "UPDATE products SET stock = stock - $2, gate = COALESCE(gate, 'redis') WHERE id = $1";

/// [`crate::order_store::write_batch`] on MariaDB: the orders in one `INSERT IGNORE` (idempotent
/// on the id and on the idempotency key), the lines of those this transaction inserted (and, with
/// [`StockTake::Logged`], the same lines in `stock_unapplied`), and their confirmed units taken
/// per product in id order as `take` says; what became of each order, in order.
///
/// Without `RETURNING`, which orders this transaction inserted is told by the transaction's own
/// snapshot: a plain read of the batch's ids before the insert finds those already written
/// (live: [`Written::AlreadyThere`], void: [`Written::KeyTaken`]); only the others are inserted.
/// When the insert skips some of them (another delivery of the same order committed since the
/// snapshot, or another order holds the key), the same plain read after it sees this
/// transaction's own rows and nothing committed since, so it names exactly the inserted ones; a
/// locking read of the rest (which sees the latest rows) tells a redelivery from a taken key or
/// a void. Equal columns cannot tell a redelivery from this transaction's insert: a redelivered
/// order carries the same strategy, status, key and `created_at`.
///
/// The caller's transaction runs in REPEATABLE READ (the server's default), so both plain reads
/// see one snapshot.
///
/// Why not lock-read the ids first: in REPEATABLE READ a locking read of an absent id locks the
/// gap it would go in, and two batches whose ids fall in one gap (every pair, in an empty table)
/// deadlock on their inserts. Plain reads lock nothing.
///
/// # Errors
/// The batch's error; the caller's transaction must then roll back. With
/// [`StockTake::Checked`], a product whose stock no longer covers the batch's units fails the
/// batch; with [`StockTake::Logged`], an order that is not confirmed does.
pub(crate) async fn write_batch(
    conn: &mut MySqlConnection,
    orders: &[BatchOrder<'_>],
    take: StockTake,
) -> Result<Vec<Written>, BatchError> {
    if take == StockTake::Logged && orders.iter().any(|order| order.status != OrderStatus::Confirmed) {
        // Every logged line is a unit sold: a pending or cancelled order has none to log.
        return Err(BatchError {
            transient: false,
            message: "only confirmed orders can be written with logged stock".into(),
        });
    }
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = orders.iter().map(|order| order.order_id).collect();
    let before = statuses(conn, &ids, Read::Snapshot).await?;
    let new: Vec<&BatchOrder<'_>> =
        orders.iter().filter(|order| !before.contains_key(&order.order_id)).collect();
    let inserted = insert_new(conn, &new).await?;

    let mut lines: Vec<(String, i64, u32)> = Vec::new();
    let mut taken: BTreeMap<i64, i64> = BTreeMap::new();
    for order in orders.iter().filter(|order| inserted.contains(&order.order_id)) {
        for line in order.lines {
            lines.push((order.order_id.simple().to_string(), line.product_id.get(), line.quantity.get()));
            if order.status == OrderStatus::Confirmed {
                *taken.entry(line.product_id.get()).or_default() += i64::from(line.quantity.get());
            }
        }
    }
    if !lines.is_empty() {
        let lines = sqlx::types::Json(&lines);
        sqlx::query(INSERT_LINES).bind(lines).execute(&mut *conn).await?;
        if take == StockTake::Logged {
            sqlx::query(LOG_LINES).bind(lines).execute(&mut *conn).await?;
        }
    }
    let statement = match take {
        StockTake::Decided => Some(TAKE_DECIDED),
        StockTake::Checked => Some(super::SqlBackend::MySql.sql().atomic.take_line),
        // The stock rows move later, in the stock sync.
        StockTake::Logged => None,
    };
    if let Some(statement) = statement {
        // BTreeMap iterates in product-id order: rows are locked in the order every writer uses.
        for (product, units) in taken {
            if conn.execute(statement, &[&product, &units]).await? == 0 && take == StockTake::Checked {
                return Err(BatchError {
                    transient: false,
                    message: format!(
                        "product {product}: its stock no longer covers {units} units checked under lock"
                    ),
                });
            }
        }
    }

    let skipped: Vec<Uuid> =
        new.iter().map(|order| order.order_id).filter(|id| !inserted.contains(id)).collect();
    let after =
        if skipped.is_empty() { HashMap::new() } else { statuses(conn, &skipped, Read::Latest).await? };
    Ok(ids
        .iter()
        .map(|id| {
            if inserted.contains(id) {
                return Written::Inserted;
            }
            // A void row is a fence, not the order: an id voided while in doubt was never written.
            match before.get(id).or_else(|| after.get(id)) {
                Some(status) if status != "void" => Written::AlreadyThere,
                _ => Written::KeyTaken,
            }
        })
        .collect())
}

/// How [`statuses`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// A plain read: the transaction's snapshot and its own writes; locks nothing.
    Snapshot,
    /// A locking read: the latest committed rows (it waits for rows being written).
    Latest,
}

/// `id → status` of the rows of `ids` (not empty) that exist, void ones included.
async fn statuses(
    conn: &mut MySqlConnection,
    ids: &[Uuid],
    read: Read,
) -> Result<HashMap<Uuid, String>, sqlx::Error> {
    let lock = if read == Read::Latest { " LOCK IN SHARE MODE" } else { "" };
    let sql = format!("SELECT id, status FROM orders WHERE id IN ({}){lock}", placeholders(ids.len()));
    let rows: Vec<(Uuid, String)> = ids
        .iter()
        .fold(sqlx::query_as(sqlx::AssertSqlSafe(sql)), |query, id| query.bind(id))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Inserts `orders` in one `INSERT IGNORE` and returns the ids it inserted.
async fn insert_new(
    conn: &mut MySqlConnection,
    orders: &[&BatchOrder<'_>],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if orders.is_empty() {
        return Ok(HashSet::new());
    }
    let insert = format!(
        "INSERT IGNORE INTO orders (id, strategy, status, idempotency_key, user_name, address, phone, email, \
         reason, created_at) VALUES {}",
        rows(orders.len(), "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    );
    let affected = orders
        .iter()
        .fold(sqlx::query(sqlx::AssertSqlSafe(insert)), |query, order| {
            query
                .bind(order.order_id)
                .bind(order.strategy.as_str())
                .bind(order.status.as_str())
                .bind(order.idempotency_key)
                .bind(order.user)
                .bind(order.delivery.address.as_str())
                .bind(order.delivery.phone.as_str())
                .bind(order.delivery.email.as_str())
                .bind(order.reason)
                .bind(order.created_at)
        })
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let ids: Vec<Uuid> = orders.iter().map(|order| order.order_id).collect();
    if usize::try_from(affected).is_ok_and(|affected| affected == ids.len()) {
        return Ok(ids.into_iter().collect());
    }
    // The ids the insert skipped are absent from the snapshot (it was read before the insert),
    // so what the snapshot shows of them now is this transaction's own rows.
    Ok(statuses(conn, &ids, Read::Snapshot).await?.into_keys().collect())
}
