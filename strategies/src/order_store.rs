//! Orders in PostgreSQL: the statements every SQL-backed strategy shares, and the one batch
//! writer every strategy that persists many orders per transaction uses ([`write_batch`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use sqlx::{FromRow, PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::error::StrategyError;
use crate::fence::{self, Doubt};
use crate::kind::StrategyKind;
use crate::order::{
    Delivery, OrderLine, OrderLines, OrderStatus, OrderView, ProductId, PurchaseRequest, Quantity, Receipt,
};
use crate::pg_driver::{DbError, Statements};

/// Inserts the order and its lines in one statement.
pub(crate) const INSERT_ORDER: &str = r#"
WITH placed AS (
    INSERT INTO orders (id, strategy, status, idempotency_key, user_name, address, phone, email)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING id
)
INSERT INTO order_items (order_id, product_id, quantity)
SELECT placed.id, line.product_id, line.quantity
FROM placed, UNNEST($9::bigint[], $10::int[]) AS line (product_id, quantity)
"#;

const RECEIPT_BY_KEY: &str =
    "SELECT id, status, strategy FROM orders WHERE idempotency_key = $1 AND status <> 'void'";

const ORDER_BY_ID: &str = r#"
SELECT id, strategy, status, idempotency_key, user_name, address, phone, email, reason, created_at,
       ARRAY(SELECT product_id FROM order_items WHERE order_id = orders.id ORDER BY product_id) AS product_ids,
       ARRAY(SELECT quantity FROM order_items WHERE order_id = orders.id ORDER BY product_id) AS quantities
FROM orders WHERE id = $1 AND status <> 'void'
"#;

/// Writes `request` as an order of `kind` in `status`, on the caller's transaction, whichever
/// driver runs it ([`crate::pg_driver`]).
///
/// # Errors
/// The raw database error, so callers can spot a taken idempotency key with
/// [`DbError::is_duplicate_key`].
pub(crate) async fn insert_order(
    conn: &mut (impl Statements + ?Sized),
    kind: StrategyKind,
    status: OrderStatus,
    request: &PurchaseRequest,
) -> Result<(), DbError> {
    let (product_ids, quantities) = request.lines.columns();
    conn.execute(
        INSERT_ORDER,
        &[
            &request.order_id,
            &kind.as_str(),
            &status.as_str(),
            &request.idempotency_key.as_ref().map(|key| key.as_str()),
            &request.user.as_deref(),
            &request.delivery.address,
            &request.delivery.phone,
            &request.delivery.email,
            &product_ids,
            &quantities,
        ],
    )
    .await?;
    Ok(())
}

#[derive(FromRow)]
struct ReceiptRow {
    id: Uuid,
    status: String,
    strategy: String,
}

impl ReceiptRow {
    fn into_receipt(self) -> Result<Receipt, StrategyError> {
        Ok(Receipt {
            order_id: self.id,
            status: parse_status(&self.status)?,
            strategy: parse_kind(&self.strategy)?,
        })
    }
}

/// The order an idempotency key already names, if any.
///
/// # Errors
/// When the database does not answer.
pub(crate) async fn receipt_for_key<'e>(
    executor: impl PgExecutor<'e>,
    request: &PurchaseRequest,
) -> Result<Option<Receipt>, StrategyError> {
    let Some(key) = &request.idempotency_key else { return Ok(None) };
    let row: Option<ReceiptRow> =
        sqlx::query_as(RECEIPT_BY_KEY).bind(key.as_str()).fetch_optional(executor).await?;
    row.map(ReceiptRow::into_receipt).transpose()
}

/// The first order of a request that lost the race for its idempotency key.
///
/// # Errors
/// When the database does not answer, or the winning order vanished in between (a reset).
pub(crate) async fn replay_after_conflict<'e>(
    executor: impl PgExecutor<'e>,
    request: &PurchaseRequest,
) -> Result<Receipt, StrategyError> {
    receipt_for_key(executor, request)
        .await?
        .ok_or_else(|| StrategyError::Conflict("the order holding this idempotency key disappeared".into()))
}

#[derive(FromRow)]
struct OrderRow {
    id: Uuid,
    strategy: String,
    status: String,
    idempotency_key: Option<String>,
    user_name: Option<String>,
    address: String,
    phone: String,
    email: String,
    reason: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    product_ids: Vec<i64>,
    quantities: Vec<i32>,
}

/// One order from PostgreSQL with its lines.
///
/// # Errors
/// When the database does not answer or holds a row this code cannot read.
pub async fn fetch_order<'e>(
    executor: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<OrderView>, StrategyError> {
    let Some(row): Option<OrderRow> = sqlx::query_as(ORDER_BY_ID).bind(id).fetch_optional(executor).await?
    else {
        return Ok(None);
    };
    let items = row
        .product_ids
        .iter()
        .zip(&row.quantities)
        .map(|(&product_id, &quantity)| {
            Ok(OrderLine {
                product_id: ProductId::parse(product_id).map_err(|e| StrategyError::Internal(e.0))?,
                quantity: Quantity::parse(quantity.into()).map_err(|e| StrategyError::Internal(e.0))?,
            })
        })
        .collect::<Result<_, StrategyError>>()?;
    Ok(Some(OrderView {
        order_id: row.id,
        strategy: parse_kind(&row.strategy)?,
        status: parse_status(&row.status)?,
        items,
        delivery: Delivery { address: row.address, phone: row.phone, email: row.email },
        user: row.user_name,
        idempotency_key: row.idempotency_key,
        reason: row.reason,
        created_at: row.created_at,
    }))
}

fn parse_status(status: &str) -> Result<OrderStatus, StrategyError> {
    OrderStatus::from_db(status)
        .ok_or_else(|| StrategyError::Internal(format!("unknown order status {status:?}")))
}

fn parse_kind(name: &str) -> Result<StrategyKind, StrategyError> {
    name.parse().map_err(|e: crate::kind::UnknownStrategy| StrategyError::Internal(e.to_string()))
}

/// The batch's orders and, for the orders this statement inserted (`ON CONFLICT DO NOTHING` skips
/// a taken id or idempotency key), their lines, in one statement: one round trip however many
/// orders. Every writing statement of a batch starts with these two CTEs; what follows them says
/// where the units go ([`StockTake`]). The lines' own arrays are joined to `placed`, so a skipped
/// order writes no line.
macro_rules! write_orders_and_lines {
    ($tail:literal) => {
        concat!(
            r#"
WITH placed AS (
    INSERT INTO orders (id, strategy, status, idempotency_key, user_name, address, phone, email, reason, created_at)
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::timestamptz[])
    ON CONFLICT DO NOTHING
    RETURNING id, status
),
lines AS (
    INSERT INTO order_items (order_id, product_id, quantity)
    SELECT line.order_id, line.product_id, line.quantity
    FROM UNNEST($11::uuid[], $12::bigint[], $13::int[]) AS line (order_id, product_id, quantity)
    JOIN placed ON placed.id = line.order_id
    RETURNING order_id, product_id, quantity
)"#,
            $tail
        )
    };
}

/// Orders and lines only; the stock moves in per-product statements after it ([`TAKE_DECIDED`]).
const WRITE_ORDERS: &str = write_orders_and_lines!(
    r#"
SELECT ARRAY(SELECT id FROM placed) AS inserted, 0::bigint AS products, 0::bigint AS taken
"#
);

/// Orders, lines, and the same lines as units awaiting the stock sync.
const WRITE_ORDERS_LOGGED: &str = write_orders_and_lines!(
    r#",
unapplied AS (
    INSERT INTO stock_unapplied (order_id, product_id, quantity)
    SELECT order_id, product_id, quantity FROM lines
)
SELECT ARRAY(SELECT id FROM placed) AS inserted, 0::bigint AS products, 0::bigint AS taken
"#
);

/// Orders, lines, and the confirmed units off PostgreSQL's stock, when PostgreSQL's row is the
/// gate: the caller decided under the rows' locks (`SELECT … FOR UPDATE`, so this `UPDATE … FROM`
/// takes no new lock and its row order does not matter), and the decrement checks the stock again
/// (and the gate), so a caller's mistake shows as `taken < products` and fails the batch instead
/// of overselling. Claims the product for the PostgreSQL gate, as `sql-atomic` does.
const WRITE_ORDERS_CHECKED: &str = write_orders_and_lines!(
    r#",
sold AS (
    SELECT lines.product_id, sum(lines.quantity)::bigint AS units
    FROM lines JOIN placed ON placed.id = lines.order_id
    WHERE placed.status = 'confirmed'
    GROUP BY lines.product_id
),
taken AS (
    UPDATE products SET stock = products.stock - sold.units, gate = 'postgres'
    FROM sold
    WHERE products.id = sold.product_id AND products.stock >= sold.units
      AND COALESCE(products.gate, 'postgres') = 'postgres'
    RETURNING products.id
)
SELECT ARRAY(SELECT id FROM placed) AS inserted, (SELECT count(*) FROM sold) AS products,
       (SELECT count(*) FROM taken) AS taken
"#
);

/// A void row is a fence, not the order: an id voided while in doubt was never written.
const ALREADY_THERE: &str = "SELECT id FROM orders WHERE id = ANY($1) AND status <> 'void'";

/// Takes a confirmed batch's units from PostgreSQL's stock after the Redis gate decided: the
/// decrement is unconditional; the claim of the gate rides on it for strategies that do not claim
/// before accepting (`stream-deferred`).
const TAKE_DECIDED: &str =
    "UPDATE products SET stock = stock - $2::bigint, gate = COALESCE(gate, 'redis') WHERE id = $1";

/// How a batch's confirmed units leave PostgreSQL's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StockTake {
    /// The Redis gate already decided: decrement unconditionally (the stream worker).
    Decided,
    /// PostgreSQL's row is the gate and the caller holds its lock (`SELECT … FOR UPDATE`) and
    /// checked the stock: decrement only where it still fits, else fail the whole batch.
    Checked,
    /// The Redis gate already decided, and no product row is touched: the units wait in
    /// `stock_unapplied` for the stock sync (`redis-orderlog`). Insert-only, so concurrent
    /// batches never wait for each other's row locks.
    Logged,
}

/// One order of a batch, and how to write it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchOrder<'a> {
    pub(crate) order_id: Uuid,
    pub(crate) strategy: StrategyKind,
    pub(crate) lines: &'a OrderLines,
    pub(crate) delivery: &'a Delivery,
    pub(crate) user: Option<&'a str>,
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) created_at: chrono::DateTime<chrono::Utc>,
    pub(crate) status: OrderStatus,
    pub(crate) reason: Option<&'static str>,
}

/// What became of one order of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Inserted by this transaction (confirmed ones moved the stock when asked to).
    Inserted,
    /// The same order was committed before: a redelivery.
    AlreadyThere,
    /// Not written: another order holds its idempotency key, or its id was voided while in doubt.
    KeyTaken,
}

/// Why a batch failed: one error, cloned to every order (and every waiting buyer) of the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct BatchError {
    /// No order's fault (the database is away, or writers conflicted): the same batch can be
    /// written again later.
    pub(crate) transient: bool,
    pub(crate) message: String,
}

impl From<sqlx::Error> for BatchError {
    fn from(err: sqlx::Error) -> Self {
        let classified = StrategyError::from(err);
        Self {
            transient: matches!(classified, StrategyError::Unavailable(_) | StrategyError::Conflict(_)),
            message: classified.to_string(),
        }
    }
}

impl From<BatchError> for StrategyError {
    fn from(err: BatchError) -> Self {
        if err.transient { Self::Unavailable(err.message) } else { Self::Internal(err.message) }
    }
}

/// Why a batch's transaction did not end in a known `COMMIT`.
pub(crate) enum BatchFailure<T> {
    /// Rolled back, or never committed: nothing was written.
    NotCommitted(BatchError),
    /// `COMMIT` was sent and its reply lost: the batch may have committed, with `T` as written.
    CommitInDoubt(T, BatchError),
}

impl<T> From<sqlx::Error> for BatchFailure<T> {
    fn from(err: sqlx::Error) -> Self {
        Self::NotCommitted(err.into())
    }
}

impl<T> From<BatchError> for BatchFailure<T> {
    fn from(err: BatchError) -> Self {
        Self::NotCommitted(err)
    }
}

/// Longest one batch may take, COMMIT and settling a lost reply included. Far above a healthy
/// batch (milliseconds); it only bounds a network that stops answering without closing anything,
/// which would otherwise hold every later purchase behind the batch.
pub(crate) const BATCH_DEADLINE: Duration = Duration::from_secs(10);

/// What became of one order of a batch whose transaction was abandoned at an unknown step.
pub(crate) enum Abandoned {
    /// The order committed before the batch was given up on.
    Committed,
    /// It did not, and now never will (its id is void): the detail says why the batch failed.
    NotCommitted(String),
    /// PostgreSQL could not be asked: the doubt stays.
    Unknown(String),
}

/// Runs a batch's `work` within [`BATCH_DEADLINE`]. When it outlives it, the transaction was
/// abandoned at an unknown step, so every order id of the batch is settled ([`settle_batch`]) and
/// `answer` turns each id's fate into its reply.
pub(crate) async fn within_deadline<R>(
    pg: &PgPool,
    kind: StrategyKind,
    ids: impl Iterator<Item = Uuid>,
    work: impl Future<Output = Vec<R>>,
    answer: impl Fn(Uuid, Abandoned) -> R,
) -> Vec<R> {
    if let Ok(replies) = tokio::time::timeout(BATCH_DEADLINE, work).await {
        return replies;
    }
    let ids: Vec<Uuid> = ids.collect();
    let detail = format!("the batch outlived {BATCH_DEADLINE:?}");
    match settle_batch(pg, kind, &ids, "batch_timed_out").await {
        Some(doubts) => ids
            .iter()
            .map(|&id| match doubts.get(&id) {
                Some(Doubt::Committed) => answer(id, Abandoned::Committed),
                _ => answer(id, Abandoned::NotCommitted(detail.clone())),
            })
            .collect(),
        None => ids
            .iter()
            .map(|&id| answer(id, Abandoned::Unknown(format!("{detail}; PostgreSQL cannot be asked"))))
            .collect(),
    }
}

/// Voids `ids` to settle, for good, whether each committed ([`fence::settle_all`]), within
/// [`BATCH_DEADLINE`]; `None` when PostgreSQL cannot be asked (the doubt stays).
pub(crate) async fn settle_batch(
    pg: &PgPool,
    kind: StrategyKind,
    ids: &[Uuid],
    why: &str,
) -> Option<HashMap<Uuid, Doubt>> {
    match tokio::time::timeout(BATCH_DEADLINE, fence::settle_all(pg, kind, ids, why)).await {
        Ok(Ok(doubts)) => Some(doubts),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Commits a batch's transaction, keeping what it wrote (`written`) for the caller to settle when
/// the reply to `COMMIT` is lost.
///
/// # Errors
/// [`BatchFailure::NotCommitted`] when PostgreSQL refused the `COMMIT`,
/// [`BatchFailure::CommitInDoubt`] when its reply was lost.
pub(crate) async fn commit_or_doubt<T>(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    written: T,
) -> Result<T, BatchFailure<T>> {
    match tx.commit().await {
        Ok(()) => Ok(written),
        Err(err) if crate::fence::may_have_committed(&err) => {
            Err(BatchFailure::CommitInDoubt(written, err.into()))
        }
        Err(err) => Err(err.into()),
    }
}

/// Writes `orders` on the caller's transaction, idempotently (`ON CONFLICT DO NOTHING` on the id
/// and on the idempotency key), takes the confirmed ones' units from PostgreSQL's stock as `take`
/// says, and says what became of each order, in order. Only orders this call inserted move the
/// stock, so a redelivered batch writes nothing twice. Orders, lines and (with
/// [`StockTake::Checked`] or [`StockTake::Logged`]) the units go in one statement, so the batch's
/// row locks wait for one round trip instead of one per table.
///
/// # Errors
/// The batch's error; the caller's transaction must then roll back. With [`StockTake::Checked`],
/// a product whose stock no longer covers the batch's units fails the batch.
pub(crate) async fn write_batch(
    conn: &mut PgConnection,
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
    let columns = Columns::of(orders);
    let statement = match take {
        StockTake::Decided => WRITE_ORDERS,
        StockTake::Checked => WRITE_ORDERS_CHECKED,
        StockTake::Logged => WRITE_ORDERS_LOGGED,
    };
    let (inserted, products, taken): (Vec<Uuid>, i64, i64) = sqlx::query_as(statement)
        .bind(&columns.ids)
        .bind(&columns.strategies)
        .bind(&columns.statuses)
        .bind(&columns.keys)
        .bind(&columns.users)
        .bind(&columns.addresses)
        .bind(&columns.phones)
        .bind(&columns.emails)
        .bind(&columns.reasons)
        .bind(&columns.created)
        .bind(&columns.item_orders)
        .bind(&columns.item_products)
        .bind(&columns.item_quantities)
        .fetch_one(&mut *conn)
        .await?;
    if taken != products {
        return Err(BatchError {
            transient: false,
            message: format!(
                "the stock of {} of the batch's {products} products no longer covers the units checked under lock",
                products - taken
            ),
        });
    }
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();
    if take == StockTake::Decided {
        take_decided(conn, orders, &inserted).await?;
    }
    let skipped: Vec<Uuid> = columns.ids.iter().copied().filter(|id| !inserted.contains(id)).collect();
    let already: HashSet<Uuid> = if skipped.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar(ALREADY_THERE).bind(&skipped).fetch_all(&mut *conn).await?.into_iter().collect()
    };
    Ok(fates(&columns.ids, &inserted, &already))
}

/// Takes the units of the confirmed orders this batch inserted, one product at a time in
/// product-id order (the order every writer locks rows in: the stream worker holds no row lock
/// before this, so one `UPDATE … FROM` could lock them in any order and deadlock another writer).
async fn take_decided(
    conn: &mut PgConnection,
    orders: &[BatchOrder<'_>],
    inserted: &HashSet<Uuid>,
) -> Result<(), BatchError> {
    let mut taken: BTreeMap<i64, i64> = BTreeMap::new();
    for order in orders {
        if order.status == OrderStatus::Confirmed && inserted.contains(&order.order_id) {
            for line in order.lines {
                *taken.entry(line.product_id.get()).or_default() += i64::from(line.quantity.get());
            }
        }
    }
    for (product, units) in taken {
        sqlx::query(TAKE_DECIDED).bind(product).bind(units).execute(&mut *conn).await?;
    }
    Ok(())
}

/// What became of each of `ids`, in order.
fn fates(ids: &[Uuid], inserted: &HashSet<Uuid>, already: &HashSet<Uuid>) -> Vec<Written> {
    ids.iter()
        .map(|id| {
            if inserted.contains(id) {
                Written::Inserted
            } else if already.contains(id) {
                Written::AlreadyThere
            } else {
                Written::KeyTaken
            }
        })
        .collect()
}

/// Orders and their lines as the parallel arrays `UNNEST` takes, borrowed from the batch: nothing
/// of an order is copied before it is encoded.
struct Columns<'a> {
    ids: Vec<Uuid>,
    strategies: Vec<&'static str>,
    statuses: Vec<&'static str>,
    keys: Vec<Option<&'a str>>,
    users: Vec<Option<&'a str>>,
    addresses: Vec<&'a str>,
    phones: Vec<&'a str>,
    emails: Vec<&'a str>,
    reasons: Vec<Option<&'static str>>,
    created: Vec<chrono::DateTime<chrono::Utc>>,
    item_orders: Vec<Uuid>,
    item_products: Vec<i64>,
    item_quantities: Vec<i32>,
}

impl<'a> Columns<'a> {
    fn of(orders: &[BatchOrder<'a>]) -> Self {
        let lines = orders.iter().map(|order| order.lines.len()).sum();
        let mut columns = Self {
            ids: Vec::with_capacity(orders.len()),
            strategies: Vec::with_capacity(orders.len()),
            statuses: Vec::with_capacity(orders.len()),
            keys: Vec::with_capacity(orders.len()),
            users: Vec::with_capacity(orders.len()),
            addresses: Vec::with_capacity(orders.len()),
            phones: Vec::with_capacity(orders.len()),
            emails: Vec::with_capacity(orders.len()),
            reasons: Vec::with_capacity(orders.len()),
            created: Vec::with_capacity(orders.len()),
            item_orders: Vec::with_capacity(lines),
            item_products: Vec::with_capacity(lines),
            item_quantities: Vec::with_capacity(lines),
        };
        for order in orders {
            columns.ids.push(order.order_id);
            columns.strategies.push(order.strategy.as_str());
            columns.statuses.push(order.status.as_str());
            columns.keys.push(order.idempotency_key);
            columns.users.push(order.user);
            columns.addresses.push(&order.delivery.address);
            columns.phones.push(&order.delivery.phone);
            columns.emails.push(&order.delivery.email);
            columns.reasons.push(order.reason);
            columns.created.push(order.created_at);
            for line in order.lines {
                columns.item_orders.push(order.order_id);
                columns.item_products.push(line.product_id.get());
                columns.item_quantities.push(line.quantity.get().cast_signed());
            }
        }
        columns
    }
}
