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

use crate::dialect::{ClaimUnits, DialectSql, LayOutPool};
use crate::error::StrategyError;
use crate::gates::parse_gate;
use crate::kind::{Gate, StrategyKind};
use crate::one_transaction::{self, SellsOnOneConnection};
use crate::order::{OrderStatus, ProductId, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::insert_order_as;
use crate::pg_driver::{Conn, DbError, PurchasePool, SqlPool, Statements};
use crate::plan::StockPlan;
use crate::strategy::Strategy;

/// Claims the product for the unit pool and lays the pool out from its stock row, when no gate
/// sells it yet; says what the product was before either way.
pub(crate) const LAY_OUT_POOL: &str = r#"
WITH claimed AS (
    UPDATE products SET gate = 'units' WHERE id = $1 AND gate IS NULL RETURNING stock
), laid AS (
    INSERT INTO inventory_units (product_id, unit_no)
    SELECT $1, unit FROM claimed, generate_series(1::bigint, claimed.stock) AS unit
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM claimed) AS claimed, (SELECT COUNT(*) FROM laid) AS units
"#;

pub(crate) const GATE_OF: &str = "SELECT gate FROM products WHERE id = $1";

/// Marks up to `$2` free units of product `$1` with order `$3`, skipping units other buyers hold.
pub(crate) const CLAIM_UNITS: &str = r#"
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
    sql: &'static DialectSql,
    /// Products this process knows the unit pool sells; a reset forgets them.
    pooled: Mutex<HashSet<i64>>,
}

impl SqlSkipLocked {
    /// Sells on `purchases`, in their dialect; replays and fences go to `books`.
    pub fn new(books: SqlPool, purchases: PurchasePool) -> Self {
        let sql = purchases.backend().sql();
        Self { books, purchases, sql, pooled: Mutex::new(HashSet::new()) }
    }

    fn is_pooled(&self, product: ProductId) -> bool {
        self.pooled.lock().unwrap_or_else(PoisonError::into_inner).contains(&product.get())
    }

    /// Makes sure the unit pool sells `product`, laying its pool out on first use. Returns the
    /// refusal when it cannot: no such product, or another gate sells it.
    async fn enter(&self, conn: &mut Conn, product: ProductId) -> Result<Option<PurchaseOutcome>, DbError> {
        let (claimed, units) = self.lay_out(conn, product).await?;
        if claimed {
            tracing::info!(%product, units, "laid out a unit pool");
        } else {
            // Read in a statement of its own: a pool laid out while we waited is visible now.
            let row = conn.fetch_optional(self.sql.skip_locked.gate_of, &[&product.get()]).await?;
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

    /// Lays `product`'s pool out when no gate sells it yet: whether it did, and the units laid.
    async fn lay_out(&self, conn: &mut Conn, product: ProductId) -> Result<(bool, i64), DbError> {
        match self.sql.skip_locked.lay_out {
            LayOutPool::OneStatement(sql) => {
                let laid = conn.fetch_one(sql, &[&product.get()]).await?;
                Ok((laid.get(0)?, laid.get(1)?))
            }
            LayOutPool::Steps { lock, claim, fill } => {
                let mut tx = conn.begin().await?;
                let Some(row) = tx.fetch_optional(lock, &[&product.get()]).await? else {
                    tx.rollback().await?;
                    return Ok((false, 0));
                };
                let (stock, gate): (i64, Option<String>) = (row.get(0)?, row.get(1)?);
                if gate.is_some() {
                    tx.rollback().await?;
                    return Ok((false, 0));
                }
                tx.execute(claim, &[&product.get()]).await?;
                let units = if stock > 0 {
                    i64::try_from(tx.execute(fill, &[&product.get(), &stock]).await?).unwrap_or(i64::MAX)
                } else {
                    0
                };
                tx.commit().await?;
                Ok((true, units))
            }
        }
    }

    /// Marks up to `wanted` free units of `product` with the order, skipping units other buyers
    /// hold: how many it marked.
    async fn claim_units(
        &self,
        tx: &mut (impl Statements + ?Sized),
        product: ProductId,
        wanted: i64,
        order: &uuid::Uuid,
    ) -> Result<u64, DbError> {
        match self.sql.skip_locked.claim_units {
            ClaimUnits::OneStatement(sql) => tx.execute(sql, &[&product.get(), &wanted, order]).await,
            ClaimUnits::PickThenMark { pick, mark } => {
                let picked: Vec<i64> = tx
                    .fetch_all(pick, &[&product.get(), &wanted])
                    .await?
                    .iter()
                    .map(|row| row.get(0))
                    .collect::<Result<_, DbError>>()?;
                if picked.is_empty() {
                    return Ok(0);
                }
                tx.execute(mark, &[&product.get(), &picked, order]).await
            }
        }
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
            let taken = self.claim_units(&mut tx, line.product_id, wanted, &request.order_id).await?;
            if i64::try_from(taken).unwrap_or(i64::MAX) < wanted {
                tx.rollback().await?;
                return Ok(PurchaseOutcome::SoldOut(line.product_id));
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
