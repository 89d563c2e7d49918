//! Orders in PostgreSQL: the statements every SQL-backed strategy shares.

use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::order::{
    Delivery, OrderLine, OrderStatus, OrderView, ProductId, PurchaseRequest, Quantity, Receipt,
};

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

/// Writes `request` as an order of `kind` in `status`, on the caller's transaction.
///
/// # Errors
/// The raw database error, so callers can spot a taken idempotency key with
/// [`crate::error::is_duplicate_key`].
pub(crate) async fn insert_order(
    conn: &mut PgConnection,
    kind: StrategyKind,
    status: OrderStatus,
    request: &PurchaseRequest,
) -> Result<(), sqlx::Error> {
    let (product_ids, quantities) = request.lines.columns();
    sqlx::query(INSERT_ORDER)
        .bind(request.order_id)
        .bind(kind.as_str())
        .bind(status.as_str())
        .bind(request.idempotency_key.as_ref().map(|key| key.as_str()))
        .bind(request.user.as_deref())
        .bind(&request.delivery.address)
        .bind(&request.delivery.phone)
        .bind(&request.delivery.email)
        .bind(product_ids)
        .bind(quantities)
        .execute(conn)
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
