//! `sql-atomic` — a conditional `UPDATE … WHERE stock >= quantity` per line and the order insert,
//! in one transaction.
//!
//! Guarantee: never oversells. The condition and the decrement are one statement, so PostgreSQL
//! re-checks `stock >= quantity` on the latest row version after waiting for the row lock; no
//! read can go stale between check and write. Durable: the client hears 201 only after COMMIT.
//!
//! Crash behaviour: before COMMIT, PostgreSQL rolls everything back (stock and order); after it,
//! both are there. The server holds nothing of its own. A reply lost with the connection is
//! settled by voiding the order id ([`crate::fence`]): the buyer hears 201 if it had committed,
//! 503 (nothing sold) if not.
//!
//! Why this shape: the hot row's lock is held from the UPDATE to the end of COMMIT, and on these
//! machines that window is what caps throughput. A single-line order (the flash-sale case) is
//! therefore one statement in autocommit — decrement, order and lines in one round trip — so the
//! lock spans no network hop. Multi-line orders need all-or-nothing across statements: they run
//! an explicit transaction that locks rows in product-id order (no deadlocks) and rolls back at the
//! first line that does not fit.

use async_trait::async_trait;

use crate::dialect::DialectSql;
use crate::error::StrategyError;
use crate::kind::{Gate, StrategyKind};
use crate::one_transaction::{self, SellsOnOneConnection};
use crate::order::{OrderStatus, ProductId, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::insert_order_as;
use crate::pg_driver::{Conn, DbError, PurchasePool, SqlPool, Statements};
use crate::strategy::Strategy;

/// Decrement, order and line in one statement, claiming the product for the PostgreSQL gate
/// (`crate::gates`). `gate` tells a missing product (NULL row) or one the Redis gate sells from a
/// sold-out one without a second round trip: the sub-select sees the snapshot taken before the
/// UPDATE.
pub(crate) const BUY_ONE_LINE: &str = r#"
WITH taken AS (
    UPDATE products SET stock = stock - $2::bigint, gate = 'postgres'
    WHERE id = $1 AND stock >= $2::bigint AND COALESCE(gate, 'postgres') = 'postgres'
    RETURNING id
), placed AS (
    INSERT INTO orders (id, strategy, status, idempotency_key, user_name, address, phone, email)
    SELECT $3, $4, 'confirmed', $5, $6, $7, $8, $9 FROM taken
    RETURNING id
), lines AS (
    INSERT INTO order_items (order_id, product_id, quantity)
    SELECT placed.id, $1, $2::int FROM placed
    RETURNING order_id
)
SELECT EXISTS (SELECT 1 FROM lines) AS placed,
       EXISTS (SELECT 1 FROM products WHERE id = $1) AS known,
       (SELECT gate FROM products WHERE id = $1) AS gate
"#;

/// The single-line purchase statement, for tools that measure it raw (`bench ceilings` runs it
/// under pgbench). Parameters: product, quantity, order id, strategy, idempotency key, user,
/// address, phone, email.
pub const ONE_LINE_STATEMENT: &str = BUY_ONE_LINE;

pub(crate) const TAKE_LINE: &str = "UPDATE products SET stock = stock - $2::bigint, gate = 'postgres' \
                         WHERE id = $1 AND stock >= $2::bigint AND COALESCE(gate, 'postgres') = 'postgres'";

pub(crate) const WHY_NOT: &str = "SELECT gate FROM products WHERE id = $1";

/// Why a line was not taken: no such product, another gate, or not enough stock.
fn refusal(product: ProductId, known: bool, gate: Option<&str>) -> PurchaseOutcome {
    match (known, gate) {
        (false, _) => PurchaseOutcome::UnknownProduct(product),
        (true, gate) => match crate::gates::parse_gate(gate) {
            Some(other @ (Gate::Redis | Gate::Units)) => {
                PurchaseOutcome::GateConflict { product, gate: other }
            }
            _ => PurchaseOutcome::SoldOut(product),
        },
    }
}

/// The conditional-UPDATE strategy.
#[derive(Debug, Clone)]
pub struct SqlAtomic {
    books: SqlPool,
    purchases: PurchasePool,
    sql: &'static DialectSql,
}

impl SqlAtomic {
    /// Sells on `purchases`, in their dialect; replays and fences go to `books`.
    pub const fn new(books: SqlPool, purchases: PurchasePool) -> Self {
        let sql = purchases.backend().sql();
        Self { books, purchases, sql }
    }

    async fn buy_one_line(
        &self,
        conn: &mut Conn,
        request: &PurchaseRequest,
    ) -> Result<PurchaseOutcome, DbError> {
        let line = request.lines.iter().next().expect("OrderLines is never empty");
        let Some(buy_one_line) = self.sql.atomic.buy_one_line else {
            return self.buy_many_lines(conn, request).await;
        };
        let row = conn
            .fetch_one(
                buy_one_line,
                &[
                    &line.product_id.get(),
                    &i64::from(line.quantity.get()),
                    &request.order_id,
                    &self.kind().as_str(),
                    &request.idempotency_key.as_ref().map(|key| key.as_str()),
                    &request.user.as_deref(),
                    &request.delivery.address,
                    &request.delivery.phone,
                    &request.delivery.email,
                ],
            )
            .await?;
        let (placed, known, gate): (bool, bool, Option<String>) = (row.get(0)?, row.get(1)?, row.get(2)?);
        Ok(if placed {
            PurchaseOutcome::Placed(self.receipt(request))
        } else {
            refusal(line.product_id, known, gate.as_deref())
        })
    }

    async fn buy_many_lines(
        &self,
        conn: &mut Conn,
        request: &PurchaseRequest,
    ) -> Result<PurchaseOutcome, DbError> {
        let mut tx = conn.begin().await?;
        for line in &request.lines {
            let taken = tx
                .execute(
                    self.sql.atomic.take_line,
                    &[&line.product_id.get(), &i64::from(line.quantity.get())],
                )
                .await?;
            if taken == 0 {
                let row = tx.fetch_optional(self.sql.atomic.why_not, &[&line.product_id.get()]).await?;
                let gate: Option<Option<String>> = row.map(|row| row.get(0)).transpose()?;
                tx.rollback().await?;
                return Ok(refusal(line.product_id, gate.is_some(), gate.flatten().as_deref()));
            }
        }
        insert_order_as(&mut tx, &self.sql.orders, self.kind(), OrderStatus::Confirmed, request).await?;
        tx.commit().await?;
        Ok(PurchaseOutcome::Placed(self.receipt(request)))
    }

    fn receipt(&self, request: &PurchaseRequest) -> Receipt {
        Receipt::confirmed(request.order_id, self.kind())
    }
}

#[async_trait]
impl SellsOnOneConnection for SqlAtomic {
    async fn sell_on(&self, conn: &mut Conn, request: &PurchaseRequest) -> Result<PurchaseOutcome, DbError> {
        if request.lines.len() == 1 {
            self.buy_one_line(conn, request).await
        } else {
            self.buy_many_lines(conn, request).await
        }
    }
}

#[async_trait]
impl Strategy for SqlAtomic {
    fn kind(&self) -> StrategyKind {
        StrategyKind::SqlAtomic
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        one_transaction::purchase(self, &self.purchases, &self.books, self.kind(), request).await
    }
}
