//! MariaDB's statements for many orders at once: `sql-coalesce`'s batch (the receipts of its keys,
//! its orders and lines, the checked decrement) and the fence of a batch in doubt
//! ([`crate::fence::settle_all_on`]).
//!
//! PostgreSQL takes each list as one array parameter; here a list of keys is one placeholder per
//! item (`IN (?, ?, …)`, multi-row `VALUES`), so InnoDB reads and locks exactly those entries of
//! the primary or unique index, and every value keeps its type (an order id is its 16 bytes, a key
//! compares with the column's collation). The lines, which only add rows, go in through
//! `JSON_TABLE`, one statement text whatever the batch's size.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::SubsecRound;
use sqlx::{MySqlConnection, MySqlPool};
use uuid::Uuid;

use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::order::OrderStatus;
use crate::order_store::{BatchError, BatchOrder, Written};
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

/// An order's lines as `JSON_TABLE` rows: the order id in hex, the product, the quantity.
const INSERT_LINES: &str = r#"
INSERT INTO order_items (order_id, product_id, quantity)
SELECT UNHEX(l.order_id), l.product_id, l.quantity
FROM JSON_TABLE(?, '$[*]' COLUMNS (order_id CHAR(32) PATH '$[0]', product_id BIGINT PATH '$[1]',
                                   quantity INT PATH '$[2]')) AS l
"#;

/// [`crate::order_store::write_batch`] with [`crate::order_store::StockTake::Checked`] on
/// MariaDB, for confirmed orders: the orders in one `INSERT IGNORE` (idempotent on the id and on
/// the idempotency key), their lines, and the batch's units taken per product in id order by a
/// decrement that checks the stock and the gate again; what became of each order, in order.
///
/// Without `RETURNING`, the insert's affected rows say how many went in; only when some did not
/// are the batch's ids read back (a locking read, so it sees rows committed since this
/// transaction's snapshot): an order of ours carries this batch's strategy, status, key and
/// `created_at` to the microsecond.
///
/// # Errors
/// The batch's error; the caller's transaction must then roll back. A product whose stock no
/// longer covers the batch's units fails the batch.
pub(crate) async fn write_batch(
    conn: &mut MySqlConnection,
    orders: &[BatchOrder<'_>],
) -> Result<Vec<Written>, BatchError> {
    if orders.iter().any(|order| order.status != OrderStatus::Confirmed) {
        // Every line written here takes its units: a pending or cancelled order has none to take.
        return Err(BatchError {
            transient: false,
            message: "only confirmed orders can be written with checked stock".into(),
        });
    }
    let insert = format!(
        "INSERT IGNORE INTO orders (id, strategy, status, idempotency_key, user_name, address, phone, email, \
         reason, created_at) VALUES {}",
        rows(orders.len(), "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    );
    let inserted = orders
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
    let fates = if usize::try_from(inserted).is_ok_and(|inserted| inserted == orders.len()) {
        vec![Written::Inserted; orders.len()]
    } else {
        read_back(conn, orders).await?
    };

    let mut lines: Vec<(String, i64, u32)> = Vec::new();
    let mut taken: BTreeMap<i64, i64> = BTreeMap::new();
    for (order, _) in orders.iter().zip(&fates).filter(|(_, fate)| **fate == Written::Inserted) {
        for line in order.lines {
            lines.push((order.order_id.simple().to_string(), line.product_id.get(), line.quantity.get()));
            *taken.entry(line.product_id.get()).or_default() += i64::from(line.quantity.get());
        }
    }
    if !lines.is_empty() {
        sqlx::query(INSERT_LINES).bind(sqlx::types::Json(&lines)).execute(&mut *conn).await?;
    }
    let take = super::SqlBackend::MySql.sql().atomic.take_line;
    // BTreeMap iterates in product-id order: rows are locked in the order every writer uses.
    for (product, units) in taken {
        if conn.execute(take, &[&product, &units]).await? == 0 {
            return Err(BatchError {
                transient: false,
                message: format!(
                    "product {product}: its stock no longer covers {units} units checked under lock"
                ),
            });
        }
    }
    Ok(fates)
}

/// What became of each of `orders` after an insert that skipped some of them.
async fn read_back(
    conn: &mut MySqlConnection,
    orders: &[BatchOrder<'_>],
) -> Result<Vec<Written>, BatchError> {
    let sql = format!(
        "SELECT id, strategy, status, idempotency_key, created_at FROM orders WHERE id IN ({}) LOCK IN SHARE MODE",
        placeholders(orders.len())
    );
    type Found = (Uuid, String, String, Option<String>, chrono::DateTime<chrono::Utc>);
    let found: HashMap<Uuid, Found> = orders
        .iter()
        .fold(sqlx::query_as::<_, Found>(sqlx::AssertSqlSafe(sql)), |query, order| query.bind(order.order_id))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|row| (row.0, row))
        .collect();
    Ok(orders
        .iter()
        .map(|order| match found.get(&order.order_id) {
            // A void row is a fence, not the order: an id voided while in doubt was never written.
            None => Written::KeyTaken,
            Some((_, _, status, _, _)) if status == "void" => Written::KeyTaken,
            Some((_, strategy, status, key, created_at))
                if strategy == order.strategy.as_str()
                    && status == order.status.as_str()
                    && key.as_deref() == order.idempotency_key
                    && *created_at == order.created_at.trunc_subsecs(6) =>
            {
                Written::Inserted
            }
            Some(_) => Written::AlreadyThere,
        })
        .collect())
}
