//! `sql-skip-locked` — one row per unit (`inventory_units`): a buyer claims `quantity` free rows
//! with `FOR UPDATE SKIP LOCKED`, marks them with its order id and inserts the order, in one
//! transaction. Sold out is "fewer free rows than asked".
//!
//! Guarantee: never oversells. A unit row is claimed by one transaction at a time (its row lock),
//! and a claimed row is never free again; the order and its units commit or roll back together.
//! Durable: 201 only after COMMIT. It may undersell transiently: a buyer refused while another
//! buyer holds the last free rows of a claim that then rolls back (a multi-item order refused on
//! another line, a failure) was told sold out for units that came back.
//!
//! The pool is the product's books: the first `sql-skip-locked` sale of a product after a reset
//! claims it for the `units` gate and lays out one row per unit of its stock row in the same
//! statement (`INSERT … SELECT generate_series`). From then on what is left is its free rows (the
//! audit and `GET /products` read them) and the stock row stays as it was; the other safe
//! strategies are refused on it with 409 `inventory_gate_conflict`, as between the PostgreSQL and
//! Redis gates. Pools are laid out on first sale rather than at reset because a reset may lay out
//! millions of products with tens of thousands of units each. The pool is not capped: every unit
//! is a row from the first sale on (no refiller).
//!
//! Crash behaviour: before COMMIT, PostgreSQL rolls everything back, units included; after it,
//! both are there. A reply lost with the connection is settled by voiding the order id
//! ([`crate::fence`]).
//!
//! Why this shape: buyers of one product lock different rows, so nobody waits for another
//! buyer's commit the way every buyer of a hot stock row does; what each sale waits for is its own
//! round trips (claim, insert, commit) and its own fsync, shared with concurrent commits.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use sqlx::PgPool;

use crate::error::StrategyError;
use crate::gates::parse_gate;
use crate::kind::{Gate, StrategyKind};
use crate::one_transaction::{self, SellsOnOneConnection};
use crate::order::{OrderStatus, ProductId, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::insert_order;
use crate::pg_driver::{Conn, DbError, PurchasePool, SqlPool, Statements};
use crate::plan::StockPlan;
use crate::strategy::Strategy;

/// Claims the product for the unit pool and lays the pool out from its stock row, when no gate
/// sells it yet; says what the product was before either way.
const LAY_OUT_POOL: &str = r#"
WITH claimed AS (
    UPDATE products SET gate = 'units' WHERE id = $1 AND gate IS NULL RETURNING stock
), laid AS (
    INSERT INTO inventory_units (product_id, unit_no)
    SELECT $1, unit FROM claimed, generate_series(1::bigint, claimed.stock) AS unit
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM claimed) AS claimed, (SELECT COUNT(*) FROM laid) AS units
"#;

const GATE_OF: &str = "SELECT gate FROM products WHERE id = $1";

/// Marks up to `$2` free units of product `$1` with order `$3`, skipping units other buyers hold.
const CLAIM_UNITS: &str = r#"
WITH free AS (
    SELECT unit_no FROM inventory_units
    WHERE product_id = $1 AND order_id IS NULL
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE inventory_units u SET order_id = $3
FROM free WHERE u.product_id = $1 AND u.unit_no = free.unit_no
"#;

/// The unit-pool strategy.
#[derive(Debug)]
pub struct SqlSkipLocked {
    books: SqlPool,
    purchases: PurchasePool,
    /// Products this process knows the unit pool sells; a reset forgets them.
    pooled: Mutex<HashSet<i64>>,
}

impl SqlSkipLocked {
    /// Sells on `purchases`; replays and fences go to `pg`.
    pub fn new(pg: PgPool, purchases: PurchasePool) -> Self {
        Self { books: SqlPool::Postgres(pg), purchases, pooled: Mutex::new(HashSet::new()) }
    }

    fn is_pooled(&self, product: ProductId) -> bool {
        self.pooled.lock().unwrap_or_else(PoisonError::into_inner).contains(&product.get())
    }

    /// Makes sure the unit pool sells `product`, laying its pool out on first use. Returns the
    /// refusal when it cannot: no such product, or another gate sells it.
    async fn enter(&self, conn: &mut Conn, product: ProductId) -> Result<Option<PurchaseOutcome>, DbError> {
        let laid = conn.fetch_one(LAY_OUT_POOL, &[&product.get()]).await?;
        let (claimed, units): (bool, i64) = (laid.get(0)?, laid.get(1)?);
        if claimed {
            tracing::info!(%product, units, "laid out a unit pool");
        } else {
            // Read in a statement of its own: a pool laid out while we waited is visible now.
            let row = conn.fetch_optional(GATE_OF, &[&product.get()]).await?;
            let gate: Option<Option<String>> = row.map(|row| row.get(0)).transpose()?;
            match gate.map(|gate| parse_gate(gate.as_deref())) {
                None => return Ok(Some(PurchaseOutcome::UnknownProduct(product))),
                Some(Some(Gate::Units)) => {}
                Some(other) => {
                    return Ok(Some(PurchaseOutcome::GateConflict {
                        product,
                        gate: other.unwrap_or(Gate::Postgres),
                    }));
                }
            }
        }
        self.pooled.lock().unwrap_or_else(PoisonError::into_inner).insert(product.get());
        Ok(None)
    }

    async fn buy(&self, conn: &mut Conn, request: &PurchaseRequest) -> Result<PurchaseOutcome, DbError> {
        for line in &request.lines {
            if !self.is_pooled(line.product_id)
                && let Some(refusal) = self.enter(conn, line.product_id).await?
            {
                return Ok(refusal);
            }
        }
        let mut tx = conn.begin().await?;
        // Lines come in product-id order: two multi-item buyers never wait for each other in a cycle.
        for line in &request.lines {
            let wanted = i64::from(line.quantity.get());
            let taken =
                tx.execute(CLAIM_UNITS, &[&line.product_id.get(), &wanted, &request.order_id]).await?;
            if i64::try_from(taken).unwrap_or(i64::MAX) < wanted {
                tx.rollback().await?;
                return Ok(PurchaseOutcome::SoldOut(line.product_id));
            }
        }
        insert_order(&mut tx, self.kind(), OrderStatus::Confirmed, request).await?;
        tx.commit().await?;
        Ok(PurchaseOutcome::Placed(self.receipt(request)))
    }

    fn receipt(&self, request: &PurchaseRequest) -> Receipt {
        Receipt::confirmed(request.order_id, self.kind())
    }
}

#[async_trait]
impl SellsOnOneConnection for SqlSkipLocked {
    async fn sell_on(&self, conn: &mut Conn, request: &PurchaseRequest) -> Result<PurchaseOutcome, DbError> {
        self.buy(conn, request).await
    }
}

#[async_trait]
impl Strategy for SqlSkipLocked {
    fn kind(&self) -> StrategyKind {
        StrategyKind::SqlSkipLocked
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        one_transaction::purchase(self, &self.purchases, &self.books, self.kind(), request).await
    }

    async fn prepare(&self, _plan: &StockPlan) -> Result<(), StrategyError> {
        self.pooled.lock().unwrap_or_else(PoisonError::into_inner).clear();
        Ok(())
    }
}
