//! Which gate sells a product: PostgreSQL's stock row, the Redis mirror or PostgreSQL's unit pool
//! (`sql-skip-locked`), fixed per product by the first safe strategy that sells it after a reset
//! (`products.gate`).
//!
//! Neither gate sees the other's sales before they commit: a SQL sale takes PostgreSQL's stock
//! and leaves Redis's shelf as it was; a queued Redis sale takes Redis's shelf and answers 202
//! before PostgreSQL's stock moves. Two safe strategies of different gates selling one product
//! would each sell the same units. So the first safe sale claims the product for its gate, and a
//! safe strategy of the other gate is refused (`PurchaseOutcome::GateConflict`) until the next
//! reset. Strategies that are unsafe by design neither claim nor check: mixing them in is unsafe,
//! and the audit shows what they did.
//!
//! The SQL strategies claim inside the statement that takes the stock (no extra round trip). The
//! Redis strategies claim before their first reservation of a product, once per process and
//! reset: [`RedisGate`] remembers the products PostgreSQL confirmed, and a reset forgets them.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use crate::error::StrategyError;
use crate::kind::Gate;
use crate::order::{OrderLines, ProductId, PurchaseOutcome};
use crate::pg_driver::SqlPool;

const CLAIM_FOR_REDIS: &str = "UPDATE products SET gate = 'redis' WHERE id = ANY($1) AND COALESCE(gate, 'redis') = 'redis' RETURNING id";
const KNOWN: &str = "SELECT id, gate FROM products WHERE id = ANY($1)";

/// Products this process knows the books have given to the Redis gate.
#[derive(Debug, Default)]
pub(crate) struct RedisGate {
    known: Mutex<HashSet<i64>>,
}

impl RedisGate {
    /// Makes sure every product of `lines` is sold through Redis, claiming it in the books
    /// (PostgreSQL's or MariaDB's `products.gate`) on first use. Returns the refusal for the first
    /// line that cannot be: a product the books do not have, or one another gate already sells.
    ///
    /// # Errors
    /// When the database does not answer.
    pub(crate) async fn enter(
        &self,
        books: &SqlPool,
        lines: &OrderLines,
    ) -> Result<Option<PurchaseOutcome>, StrategyError> {
        let missing: Vec<i64> = {
            let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            lines.iter().map(|line| line.product_id.get()).filter(|id| !known.contains(id)).collect()
        };
        if missing.is_empty() {
            return Ok(None);
        }
        let claimed = claim_for_redis(books, &missing).await?;
        self.known.lock().unwrap_or_else(PoisonError::into_inner).extend(claimed.iter().copied());
        if claimed.len() == missing.len() {
            return Ok(None);
        }
        let exists = gates_of(books, &missing).await?;
        let Some(id) = missing.into_iter().find(|id| !claimed.contains(id)) else { return Ok(None) };
        let product = ProductId::parse(id).map_err(|err| StrategyError::Internal(err.0))?;
        Ok(Some(match exists.get(&id) {
            Some(gate) => PurchaseOutcome::GateConflict {
                product,
                gate: parse_gate(gate.as_deref()).unwrap_or(Gate::Postgres),
            },
            None => PurchaseOutcome::UnknownProduct(product),
        }))
    }

    /// Forgets every claim: a reset cleared them in the books.
    pub(crate) fn forget(&self) {
        self.known.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

/// Gives each of `ids` that no other gate sells to the Redis gate; returns those Redis sells now.
async fn claim_for_redis(books: &SqlPool, ids: &[i64]) -> Result<HashSet<i64>, StrategyError> {
    match books {
        SqlPool::Postgres(pg) => {
            Ok(sqlx::query_scalar(CLAIM_FOR_REDIS).bind(ids).fetch_all(pg).await?.into_iter().collect())
        }
        SqlPool::MySql(pool) => crate::dialect::mysql_mirror::claim_for_redis(pool, ids).await,
    }
}

/// The gate of each of `ids` the books have.
async fn gates_of(books: &SqlPool, ids: &[i64]) -> Result<HashMap<i64, Option<String>>, StrategyError> {
    match books {
        SqlPool::Postgres(pg) => {
            Ok(sqlx::query_as(KNOWN).bind(ids).fetch_all(pg).await?.into_iter().collect())
        }
        SqlPool::MySql(pool) => crate::dialect::mysql_mirror::gates_of(pool, ids).await,
    }
}

/// Reads `products.gate`.
pub(crate) fn parse_gate(gate: Option<&str>) -> Option<Gate> {
    match gate {
        Some("postgres") => Some(Gate::Postgres),
        Some("redis") => Some(Gate::Redis),
        Some("units") => Some(Gate::Units),
        _ => None,
    }
}
