//! `sql-optimistic` — version-column compare-and-swap: read each product's stock and version,
//! then `UPDATE … SET stock = stock - q, version = version + 1 WHERE id = $1 AND version = $v AND
//! stock >= q` and insert the order, in one transaction; when another buyer moved the version
//! first, pause a random, doubling while and try again, at most `OPTIMISTIC_RETRIES` times.
//!
//! Guarantee: never oversells (the condition and the decrement are one statement, on the latest
//! row version). It may undersell: a buyer who lost the swap every time is refused with 409
//! `contention` while units are left. That is the point of showing it: the strategy counts those
//! refusals per product in PostgreSQL ([`crate::contention`]), so the audit of any server replica
//! reports them beside the stock left. Durable: 201 only after COMMIT. Multi-item orders take
//! every line in one transaction (product-id order) or none.
//!
//! Crash behaviour: as `sql-atomic`: before COMMIT nothing is there, after it everything; a lost
//! reply is settled by voiding the order id ([`crate::fence`]). A refusal whose count cannot be
//! written is answered 503 instead of 409, so every 409 is counted.
//!
//! Why this shape: it is the textbook answer to lost updates without holding locks while the
//! application thinks, and the comparison shows what it costs on a hot row. PostgreSQL still takes
//! the row lock for the `UPDATE`, so a buyer whose version went stale waits for the winner's
//! commit and then fails its condition: per sale it waits for a read, a write, the winner's commit
//! and its own, and under contention most of that work is thrown away and done again.

use std::time::Duration;

use async_trait::async_trait;
use rand::{Rng, SeedableRng};

use crate::contention;
use crate::dialect::DialectSql;
use crate::error::StrategyError;
use crate::gates::parse_gate;
use crate::kind::{Gate, StrategyKind};
use crate::one_transaction::{self, SellsOnOneConnection};
use crate::order::{OrderStatus, ProductId, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::insert_order_as;
use crate::pg_driver::{Conn, DbError, PurchasePool, SqlPool, Statements, fetch_by_ids};
use crate::strategy::Strategy;

pub(crate) const READ: &str = "SELECT id, stock, version, gate FROM products WHERE id = ANY($1) ORDER BY id";

/// The swap, claiming the product for the PostgreSQL gate (`crate::gates`) on the way.
pub(crate) const SWAP: &str = r#"
UPDATE products SET stock = stock - $2::bigint, version = version + 1, gate = 'postgres'
WHERE id = $1 AND version = $3 AND stock >= $2::bigint AND COALESCE(gate, 'postgres') = 'postgres'
"#;

/// First pause before a retry; it doubles each time, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_micros(500);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// What one attempt found.
enum Attempt {
    Done(PurchaseOutcome),
    /// This product's version moved between the read and the swap.
    Lost(ProductId),
}

/// The compare-and-swap strategy.
#[derive(Debug)]
pub struct SqlOptimistic {
    books: SqlPool,
    purchases: PurchasePool,
    sql: &'static DialectSql,
    retries: u32,
}

impl SqlOptimistic {
    /// Sells on `purchases`, in their dialect; replays, fences and refusal counts go to `books`.
    pub const fn new(books: SqlPool, purchases: PurchasePool, retries: u32) -> Self {
        let sql = purchases.backend().sql();
        Self { books, purchases, sql, retries }
    }

    async fn attempt(&self, conn: &mut Conn, request: &PurchaseRequest) -> Result<Attempt, DbError> {
        let (ids, _) = request.lines.columns();
        let rows: Vec<(i64, i64, i64, Option<String>)> = fetch_by_ids(conn, self.sql.optimistic.read, &ids)
            .await?
            .iter()
            .map(|row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
            .collect::<Result<_, DbError>>()?;
        let mut versions = Vec::with_capacity(rows.len());
        for line in &request.lines {
            let product = line.product_id;
            let Some((_, stock, version, gate)) = rows.iter().find(|row| row.0 == product.get()) else {
                return Ok(Attempt::Done(PurchaseOutcome::UnknownProduct(product)));
            };
            if let Some(gate @ (Gate::Redis | Gate::Units)) = parse_gate(gate.as_deref()) {
                return Ok(Attempt::Done(PurchaseOutcome::GateConflict { product, gate }));
            }
            // Stock only goes down between resets: short now is short for good.
            if *stock < i64::from(line.quantity.get()) {
                return Ok(Attempt::Done(PurchaseOutcome::SoldOut(product)));
            }
            versions.push(*version);
        }
        let mut tx = conn.begin().await?;
        for (line, version) in request.lines.iter().zip(versions) {
            let swapped = tx
                .execute(
                    self.sql.optimistic.swap,
                    &[&line.product_id.get(), &i64::from(line.quantity.get()), &version],
                )
                .await?;
            if swapped == 0 {
                tx.rollback().await?;
                return Ok(Attempt::Lost(line.product_id));
            }
        }
        insert_order_as(&mut tx, &self.sql.orders, self.kind(), OrderStatus::Confirmed, request).await?;
        tx.commit().await?;
        Ok(Attempt::Done(PurchaseOutcome::Placed(Receipt::confirmed(request.order_id, self.kind()))))
    }

    /// Tries until the swap holds, the order is refused, or the retries run out.
    async fn buy(&self, conn: &mut Conn, request: &PurchaseRequest) -> Result<PurchaseOutcome, DbError> {
        // Seeded from the order id (random per request): buyers that collided pause differently.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(request.order_id.as_u64_pair().0);
        let (mut pause, mut retries) = (FIRST_PAUSE, 0);
        loop {
            match self.attempt(conn, request).await? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Lost(product) if retries == self.retries => {
                    contention::record(conn, self.sql, product).await?;
                    return Ok(PurchaseOutcome::Contention(product));
                }
                Attempt::Lost(_) => {
                    retries += 1;
                    tokio::time::sleep(rng.random_range(Duration::ZERO..=pause)).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }
}

#[async_trait]
impl SellsOnOneConnection for SqlOptimistic {
    async fn sell_on(&self, conn: &mut Conn, request: &PurchaseRequest) -> Result<PurchaseOutcome, DbError> {
        self.buy(conn, request).await
    }
}

#[async_trait]
impl Strategy for SqlOptimistic {
    fn kind(&self) -> StrategyKind {
        StrategyKind::SqlOptimistic
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        one_transaction::purchase(self, &self.purchases, &self.books, self.kind(), request).await
    }
}
