//! Orders in the SQL books: the statements every SQL-backed strategy shares, and the one batch
//! writer every strategy that persists many orders per transaction uses, on either dialect
//! ([`BatchTx::write`], [`write_batch_on`]; PostgreSQL's is [`write_batch`]).

mod batch_tx;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::dialect::OrderSql;
use crate::error::StrategyError;
use crate::fence::{self, Doubt};
use crate::kind::StrategyKind;
use crate::order::{
    Delivery, OrderLine, OrderLines, OrderStatus, OrderView, ProductId, PurchaseRequest, Quantity, Receipt,
};
use crate::pg_driver::{DbError, SqlPool, Statements};

pub(crate) use self::batch_tx::{BatchConn, BatchTx};

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

pub(crate) const RECEIPT_BY_KEY: &str =
    "SELECT id, status, strategy FROM orders WHERE idempotency_key = $1 AND status <> 'void'";

const ORDER_BY_ID: &str = r#"
SELECT id, strategy, status, idempotency_key, user_name, address, phone, email, reason, created_at,
       ARRAY(SELECT product_id FROM order_items WHERE order_id = orders.id ORDER BY product_id) AS product_ids,
       ARRAY(SELECT quantity FROM order_items WHERE order_id = orders.id ORDER BY product_id) AS quantities
FROM orders WHERE id = $1 AND status <> 'void'
"#;

/// Writes `request` as an order of `kind` in `status`, on the caller's transaction, in the
/// dialect of `sql`, whichever driver runs it ([`crate::pg_driver`]).
///
/// # Errors
/// The raw database error, so callers can spot a taken idempotency key with
/// [`DbError::is_duplicate_key`].
pub(crate) async fn insert_order_as(
    conn: &mut (impl Statements + ?Sized),
    sql: &OrderSql,
    kind: StrategyKind,
    status: OrderStatus,
    request: &PurchaseRequest,
) -> Result<(), DbError> {
    let (product_ids, quantities) = request.lines.columns();
    let params: [&dyn crate::pg_driver::Param; 10] = [
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
    ];
    for statement in sql.insert {
        conn.execute(statement, &params).await?;
    }
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

/// [`receipt_for_key`] on the books of either dialect.
///
/// # Errors
/// When the database does not answer.
pub(crate) async fn receipt_on(
    books: &SqlPool,
    request: &PurchaseRequest,
) -> Result<Option<Receipt>, StrategyError> {
    if let SqlPool::Postgres(pg) = books {
        return receipt_for_key(pg, request).await;
    }
    let Some(key) = &request.idempotency_key else { return Ok(None) };
    let mut conn = books.acquire().await?;
    let sql = books.backend().sql().orders.receipt_by_key;
    let Some(row) = conn.fetch_optional(sql, &[&key.as_str()]).await? else { return Ok(None) };
    let (id, status, strategy): (Uuid, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
    ReceiptRow { id, status, strategy }.into_receipt().map(Some)
}

/// The first order of a request that lost the race for its idempotency key, on the books of
/// either dialect.
///
/// # Errors
/// When the database does not answer, or the winning order vanished in between (a reset).
pub(crate) async fn replay_on(books: &SqlPool, request: &PurchaseRequest) -> Result<Receipt, StrategyError> {
    receipt_on(books, request)
        .await?
        .ok_or_else(|| StrategyError::Conflict("the order holding this idempotency key disappeared".into()))
}

#[derive(FromRow)]
pub(crate) struct OrderRow {
    pub(crate) id: Uuid,
    pub(crate) strategy: String,
    pub(crate) status: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) user_name: Option<String>,
    pub(crate) address: String,
    pub(crate) phone: String,
    pub(crate) email: String,
    pub(crate) reason: Option<String>,
    pub(crate) created_at: chrono::DateTime<chrono::Utc>,
    pub(crate) product_ids: Vec<i64>,
    pub(crate) quantities: Vec<i32>,
}

/// One order from PostgreSQL with its lines.
///
/// # Errors
/// When the database does not answer or holds a row this code cannot read.
pub async fn fetch_order<'e>(
    executor: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<OrderView>, StrategyError> {
    let row: Option<OrderRow> = sqlx::query_as(ORDER_BY_ID).bind(id).fetch_optional(executor).await?;
    row.map(view_of).transpose()
}

/// [`fetch_order`] on the books of either dialect.
///
/// # Errors
/// As [`fetch_order`].
pub async fn fetch_order_on(books: &SqlPool, id: Uuid) -> Result<Option<OrderView>, StrategyError> {
    match books {
        SqlPool::Postgres(pg) => fetch_order(pg, id).await,
        SqlPool::MySql(pool) => crate::dialect::mysql::fetch_order(pool, id).await?.map(view_of).transpose(),
    }
}

pub(crate) fn view_of(row: OrderRow) -> Result<OrderView, StrategyError> {
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
    Ok(OrderView {
        order_id: row.id,
        strategy: parse_kind(&row.strategy)?,
        status: parse_status(&row.status)?,
        items,
        delivery: Delivery { address: row.address, phone: row.phone, email: row.email },
        user: row.user_name,
        idempotency_key: row.idempotency_key,
        reason: row.reason,
        created_at: row.created_at,
    })
}

fn parse_status(status: &str) -> Result<OrderStatus, StrategyError> {
    OrderStatus::from_db(status)
        .ok_or_else(|| StrategyError::Internal(format!("unknown order status {status:?}")))
}

fn parse_kind(name: &str) -> Result<StrategyKind, StrategyError> {
    name.parse().map_err(|e: crate::kind::UnknownStrategy| StrategyError::Internal(e.to_string()))
}

const INSERT_BATCH: &str = r#"
INSERT INTO orders (id, strategy, status, idempotency_key, user_name, address, phone, email, reason, created_at)
SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING id
"#;

const INSERT_BATCH_ITEMS: &str = r#"
INSERT INTO order_items (order_id, product_id, quantity)
SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::int[])
"#;

/// The lines, and the same lines as units awaiting the stock sync, in one statement.
const INSERT_BATCH_ITEMS_LOGGED: &str = r#"
WITH lines AS (
    INSERT INTO order_items (order_id, product_id, quantity)
    SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::int[])
    RETURNING order_id, product_id, quantity
)
INSERT INTO stock_unapplied (order_id, product_id, quantity)
SELECT order_id, product_id, quantity FROM lines
"#;

/// A void row is a fence, not the order: an id voided while in doubt was never written.
const ALREADY_THERE: &str = "SELECT id FROM orders WHERE id = ANY($1) AND status <> 'void'";

/// Takes a confirmed batch's units from PostgreSQL's stock after the Redis gate decided: the
/// decrement is unconditional; the claim of the gate rides on it for strategies that do not claim
/// before accepting (`stream-deferred`).
const TAKE_DECIDED: &str =
    "UPDATE products SET stock = stock - $2::bigint, gate = COALESCE(gate, 'redis') WHERE id = $1";

/// Takes a batch's units when PostgreSQL's row is the gate: the caller checked the stock under
/// the row lock, and the statement checks it again (and the gate) so a caller's mistake fails the
/// batch instead of overselling. Claims the product for the PostgreSQL gate, as `sql-atomic` does.
const TAKE_CHECKED: &str = "UPDATE products SET stock = stock - $2::bigint, gate = 'postgres' \
                            WHERE id = $1 AND stock >= $2::bigint AND COALESCE(gate, 'postgres') = 'postgres'";

/// How a batch's confirmed units leave the books' stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockTake {
    /// The Redis gate already decided: decrement unconditionally (the stream worker).
    Decided,
    /// The SQL row is the gate and the caller holds its lock (`SELECT … FOR UPDATE`) and
    /// checked the stock: decrement only where it still fits, else fail the whole batch.
    Checked,
    /// The Redis gate already decided, and no product row is touched: the units wait in
    /// `stock_unapplied` for the stock sync (`redis-orderlog`). Insert-only, so concurrent
    /// batches never wait for each other's row locks.
    Logged,
}

/// One order of a batch, and how to write it.
#[derive(Debug, Clone, Copy)]
pub struct BatchOrder<'a> {
    pub order_id: Uuid,
    pub strategy: StrategyKind,
    pub lines: &'a OrderLines,
    pub delivery: &'a Delivery,
    pub user: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub status: OrderStatus,
    pub reason: Option<&'static str>,
}

/// What became of one order of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
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
pub struct BatchError {
    /// No order's fault (the database is away, or writers conflicted): the same batch can be
    /// written again later.
    pub transient: bool,
    pub message: String,
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

impl From<DbError> for BatchError {
    fn from(err: DbError) -> Self {
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

/// Runs a batch's `work` within [`BATCH_DEADLINE`], on the books of either dialect. When it
/// outlives it, the transaction was abandoned at an unknown step, so every order id of the batch
/// is settled ([`settle_batch_on`]) and `answer` turns each id's fate into its reply.
pub(crate) async fn within_deadline_on<R>(
    books: &SqlPool,
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
    match settle_batch_on(books, kind, &ids, "batch_timed_out").await {
        Some(doubts) => ids
            .iter()
            .map(|&id| match doubts.get(&id) {
                Some(Doubt::Committed) => answer(id, Abandoned::Committed),
                _ => answer(id, Abandoned::NotCommitted(detail.clone())),
            })
            .collect(),
        None => ids
            .iter()
            .map(|&id| answer(id, Abandoned::Unknown(format!("{detail}; the database cannot be asked"))))
            .collect(),
    }
}

/// Voids `ids` to settle, for good, whether each committed ([`fence::settle_all_on`]), on the
/// books of either dialect, within [`BATCH_DEADLINE`]; `None` when the database cannot be asked
/// (the doubt stays).
pub(crate) async fn settle_batch_on(
    books: &SqlPool,
    kind: StrategyKind,
    ids: &[Uuid],
    why: &str,
) -> Option<HashMap<Uuid, Doubt>> {
    match tokio::time::timeout(BATCH_DEADLINE, fence::settle_all_on(books, kind, ids, why)).await {
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
pub(crate) async fn commit_or_doubt<T, DB: sqlx::Database>(
    tx: sqlx::Transaction<'_, DB>,
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

/// Writes `orders` in one transaction of its own on the books of either dialect and commits it;
/// what became of each, in order ([`write_batch`] says how). A redelivered batch — its first
/// commit landed, its acknowledgement did not — writes nothing twice.
///
/// # Errors
/// The batch's error; nothing is committed then, unless the reply to `COMMIT` was lost (the
/// error is transient then, and writing the same batch again is safe).
pub async fn write_batch_on(
    books: &SqlPool,
    orders: &[BatchOrder<'_>],
    take: StockTake,
) -> Result<Vec<Written>, BatchError> {
    let mut conn = BatchConn::acquire(books).await?;
    let mut tx = conn.begin().await?;
    let written = tx.write(orders, take).await?;
    match tx.commit_or_doubt(written).await {
        Ok(written) => Ok(written),
        Err(BatchFailure::NotCommitted(err)) => Err(err),
        Err(BatchFailure::CommitInDoubt(_, err)) => Err(BatchError { transient: true, ..err }),
    }
}

/// Writes `orders` on the caller's PostgreSQL transaction, idempotently (`ON CONFLICT DO
/// NOTHING` on the id and on the idempotency key), takes the confirmed ones' units from
/// PostgreSQL's stock as `take` says (summed per product, in product-id order: the order every
/// writer locks rows in), and says what became of each order, in order. Only orders this call
/// inserted move the stock, so a redelivered batch writes nothing twice. MariaDB's is
/// [`crate::dialect::mysql_batch::write_batch`]; [`BatchTx::write`] runs either.
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
    let mut columns = Columns::default();
    for order in orders {
        columns.push(order);
    }
    let inserted: std::collections::HashSet<Uuid> = sqlx::query_scalar(INSERT_BATCH)
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
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let skipped: Vec<Uuid> = columns.ids.iter().copied().filter(|id| !inserted.contains(id)).collect();
    let already: std::collections::HashSet<Uuid> = if skipped.is_empty() {
        std::collections::HashSet::new()
    } else {
        sqlx::query_scalar(ALREADY_THERE).bind(&skipped).fetch_all(&mut *conn).await?.into_iter().collect()
    };

    let (mut item_orders, mut item_products, mut item_quantities) = (Vec::new(), Vec::new(), Vec::new());
    let mut taken: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    for order in orders.iter().filter(|order| inserted.contains(&order.order_id)) {
        for line in order.lines {
            item_orders.push(order.order_id);
            item_products.push(line.product_id.get());
            item_quantities.push(line.quantity.get().cast_signed());
            if order.status == OrderStatus::Confirmed {
                *taken.entry(line.product_id.get()).or_default() += i64::from(line.quantity.get());
            }
        }
    }
    if !item_orders.is_empty() {
        let statement =
            if take == StockTake::Logged { INSERT_BATCH_ITEMS_LOGGED } else { INSERT_BATCH_ITEMS };
        sqlx::query(statement)
            .bind(&item_orders)
            .bind(&item_products)
            .bind(&item_quantities)
            .execute(&mut *conn)
            .await?;
    }
    let statement = match take {
        StockTake::Decided => TAKE_DECIDED,
        StockTake::Checked => TAKE_CHECKED,
        // The stock rows move later, in the stock sync.
        StockTake::Logged => return Ok(fates(&columns.ids, &inserted, &already)),
    };
    // BTreeMap iterates in product-id order: rows are locked in the order every writer uses.
    for (product, units) in taken {
        let moved =
            sqlx::query(statement).bind(product).bind(units).execute(&mut *conn).await?.rows_affected();
        if moved == 0 && take == StockTake::Checked {
            return Err(BatchError {
                transient: false,
                message: format!(
                    "product {product}: its stock no longer covers {units} units checked under lock"
                ),
            });
        }
    }
    Ok(fates(&columns.ids, &inserted, &already))
}

/// What became of each of `ids`, in order.
fn fates(
    ids: &[Uuid],
    inserted: &std::collections::HashSet<Uuid>,
    already: &std::collections::HashSet<Uuid>,
) -> Vec<Written> {
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

/// Orders as the parallel arrays `UNNEST` takes.
#[derive(Default)]
struct Columns {
    ids: Vec<Uuid>,
    strategies: Vec<&'static str>,
    statuses: Vec<&'static str>,
    keys: Vec<Option<String>>,
    users: Vec<Option<String>>,
    addresses: Vec<String>,
    phones: Vec<String>,
    emails: Vec<String>,
    reasons: Vec<Option<&'static str>>,
    created: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Columns {
    fn push(&mut self, order: &BatchOrder<'_>) {
        self.ids.push(order.order_id);
        self.strategies.push(order.strategy.as_str());
        self.statuses.push(order.status.as_str());
        self.keys.push(order.idempotency_key.map(str::to_owned));
        self.users.push(order.user.map(str::to_owned));
        self.addresses.push(order.delivery.address.clone());
        self.phones.push(order.delivery.phone.clone());
        self.emails.push(order.delivery.email.clone());
        self.reasons.push(order.reason);
        self.created.push(order.created_at);
    }
}
