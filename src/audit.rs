//! The audit: reconciles each product's books (initial stock, stock left, units in live orders)
//! and names every way they can disagree.
//!
//! For one product, `initial = final + units_in_orders` must hold. When it does not, the gap is
//! `stock_drift` (a lost update or a unit that vanished). Independently, `oversold` counts units
//! confirmed beyond what existed and `negative_stock` the units below zero on the shelf. PostgreSQL
//! is the system of record; strategies that keep stock elsewhere (the in-memory baseline) are
//! audited the same way in `ledgers`.
//!
//! Redis strategies keep a mirror of the stock: for each product, Redis stock plus the units still
//! in flight (taken in Redis, not yet in PostgreSQL) must equal PostgreSQL's stock; the gap is
//! `redis_drift`. It only counts against `clean` when Redis strategies alone sold since the reset:
//! strategies that move only PostgreSQL's stock leave Redis behind by design. Queueing strategies
//! add `pending` (accepted, not yet persisted), `dead_lettered` and `accepted_then_cancelled`.

use std::collections::BTreeMap;

use checkout_strategies::catalog::{self, OrderTotals};
use checkout_strategies::{ProductLedger, StrategyError, StrategyKind, redis_stock};
use serde::Serialize;

use crate::app::App;

/// One product's books and the anomalies derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProductAudit {
    pub product_id: i64,
    pub initial_stock: i64,
    pub final_stock: i64,
    pub units_in_orders: i64,
    /// Units in live orders beyond the initial stock.
    pub oversold: i64,
    /// Units below zero on the shelf.
    pub negative_stock: i64,
    /// `initial − final − units_in_orders`: positive when units vanished, negative when units were
    /// sold without the stock moving.
    pub stock_drift: i64,
    /// Orders beyond the first for their idempotency key.
    pub duplicated: i64,
    /// Live (pending or confirmed) orders holding this product.
    pub orders: i64,
    /// Redis's stock, when the Redis mirror was read and holds the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_stock: Option<i64>,
    /// Units taken in Redis whose orders PostgreSQL does not hold yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_inflight: Option<i64>,
    /// `redis_stock + redis_inflight − final_stock`: non-zero when the mirror disagrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_drift: Option<i64>,
}

impl ProductAudit {
    /// Derives the anomalies from raw books.
    pub const fn of(ledger: &ProductLedger) -> Self {
        let oversold = ledger.units_in_orders - ledger.initial_stock;
        Self {
            product_id: ledger.product_id,
            initial_stock: ledger.initial_stock,
            final_stock: ledger.final_stock,
            units_in_orders: ledger.units_in_orders,
            oversold: if oversold > 0 { oversold } else { 0 },
            negative_stock: if ledger.final_stock < 0 { -ledger.final_stock } else { 0 },
            stock_drift: ledger.initial_stock - ledger.final_stock - ledger.units_in_orders,
            duplicated: ledger.duplicated,
            orders: ledger.orders,
            redis_stock: None,
            redis_inflight: None,
            redis_drift: None,
        }
    }

    /// Adds what Redis holds for this product.
    fn with_redis(mut self, stock: Option<i64>, inflight: Option<i64>) -> Self {
        let inflight = inflight.unwrap_or(0);
        self.redis_stock = stock;
        self.redis_inflight = Some(inflight);
        self.redis_drift = Some(stock.unwrap_or(0) + inflight - self.final_stock);
        self
    }

    const fn is_clean(&self) -> bool {
        self.oversold == 0 && self.negative_stock == 0 && self.stock_drift == 0 && self.duplicated == 0
    }
}

/// Sums over the reported products. `orders` and `duplicated` count distinct orders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuditTotal {
    pub products: u64,
    pub initial_stock: i64,
    pub final_stock: i64,
    pub units_in_orders: i64,
    pub oversold: i64,
    pub negative_stock: i64,
    /// Sum of absolute per-product drifts, so opposite drifts cannot cancel out.
    pub stock_drift: i64,
    pub duplicated: i64,
    pub orders: i64,
    /// Sum of absolute per-product Redis drifts (PostgreSQL only).
    pub redis_drift: i64,
}

/// The books of one place that holds stock.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerAudit {
    /// No anomaly anywhere in this ledger.
    pub clean: bool,
    pub total: AuditTotal,
    pub products: Vec<ProductAudit>,
}

impl LedgerAudit {
    fn from_rows(rows: &[ProductLedger], orders: i64, duplicated: i64) -> Self {
        let products: Vec<ProductAudit> = rows.iter().map(ProductAudit::of).collect();
        let mut total = AuditTotal { orders, duplicated, ..AuditTotal::default() };
        for p in &products {
            total.products += 1;
            total.initial_stock += p.initial_stock;
            total.final_stock += p.final_stock;
            total.units_in_orders += p.units_in_orders;
            total.oversold += p.oversold;
            total.negative_stock += p.negative_stock;
            total.stock_drift += p.stock_drift.abs();
            total.redis_drift += p.redis_drift.unwrap_or(0).abs();
        }
        let clean = duplicated == 0 && products.iter().all(ProductAudit::is_clean);
        Self { clean, total, products }
    }
}

/// What queueing strategies still owe, and what they took back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueAudit {
    /// Accepted (202) orders not yet persisted: zero once workers drained.
    pub pending: i64,
    /// Accepted orders given up on after failing too often; their stock was released.
    pub dead_lettered: i64,
    /// Orders whose client was told 202 and that were cancelled later.
    pub accepted_then_cancelled: i64,
}

/// Whether the Redis mirror was held to account, and why (not).
#[derive(Debug, Clone, Serialize)]
pub struct RedisAudit {
    /// `redis_drift` counts against `clean`.
    pub checked: bool,
    pub note: &'static str,
}

/// `GET /admin/audit`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// No anomaly in PostgreSQL, in the Redis mirror (when checked), in the queues, or in any
    /// ledger below.
    pub clean: bool,
    /// No accepted order is waiting for a worker: the books are final.
    pub settled: bool,
    /// Strategies that placed orders since the reset (this server process).
    pub sold_by: Vec<StrategyKind>,
    /// PostgreSQL, summed over `products`.
    pub total: AuditTotal,
    /// PostgreSQL: every product it has something to say about.
    pub products: Vec<ProductAudit>,
    /// PostgreSQL orders by status.
    pub order_status: OrderTotals,
    pub queues: QueueAudit,
    pub redis: RedisAudit,
    /// Stock kept outside PostgreSQL, by strategy.
    pub ledgers: BTreeMap<StrategyKind, LedgerAudit>,
}

/// Reads every ledger and reconciles it.
///
/// # Errors
/// When a backend does not answer.
pub async fn reconcile(app: &App) -> Result<AuditReport, StrategyError> {
    // The queues are read first: a worker commits to PostgreSQL before it settles an order in
    // Redis, so when nothing is pending here, every accepted order is already in the books read
    // next. Read the other way round, an order committed between the two reads would be missing
    // from the books of an audit that calls itself settled (and show as Redis drift).
    let mut ledgers = BTreeMap::new();
    let mut queues = QueueAudit::default();
    for strategy in app.registry.iter() {
        if let Some(backlog) = strategy.backlog().await? {
            queues.pending += backlog.pending;
            queues.dead_lettered += backlog.dead_lettered;
        }
        if let Some(own) = strategy.own_ledger().await? {
            ledgers
                .insert(strategy.kind(), LedgerAudit::from_rows(&own.products, own.orders, own.duplicated));
        }
    }
    let (rows, totals) = catalog::sql_books(&app.pg, &app.tracked_products()).await?;
    queues.accepted_then_cancelled = totals.cancelled;
    let ids: Vec<i64> = rows.iter().map(|row| row.product_id).collect();
    let (stocks, inflight) = redis_stock::mirror(&app.redis, &ids).await?;
    let mut postgres = LedgerAudit::from_rows(&rows, totals.pending + totals.confirmed, totals.duplicated);
    postgres.products = postgres
        .products
        .into_iter()
        .zip(stocks.into_iter().zip(inflight))
        .map(|(p, (s, i))| p.with_redis(s, i))
        .collect();
    postgres.total.redis_drift = postgres.products.iter().map(|p| p.redis_drift.unwrap_or(0).abs()).sum();

    let sold_by = app.stats.sold_by();
    let redis = redis_policy(&sold_by);
    let clean = postgres.clean
        && (!redis.checked || postgres.total.redis_drift == 0)
        && queues.dead_lettered == 0
        && queues.accepted_then_cancelled == 0
        && ledgers.values().all(|ledger| ledger.clean);
    Ok(AuditReport {
        clean,
        settled: queues.pending == 0,
        sold_by,
        total: postgres.total,
        products: postgres.products,
        order_status: totals,
        queues,
        redis,
        ledgers,
    })
}

/// Holds Redis to account only when Redis strategies alone sold since the reset.
fn redis_policy(sold_by: &[StrategyKind]) -> RedisAudit {
    let uses_redis = |kind: &StrategyKind| kind.spec().backend.contains("redis");
    let postgres_only = |kind: &StrategyKind| kind.spec().backend == "postgres";
    match (sold_by.iter().any(uses_redis), sold_by.iter().any(postgres_only)) {
        (true, false) => RedisAudit { checked: true, note: "Redis strategies alone sold since the reset" },
        (true, true) => RedisAudit {
            checked: false,
            note: "strategies that move only PostgreSQL's stock also sold since the reset, so Redis is \
                   behind by their sales by design; run one family of strategies per reset",
        },
        (false, _) => RedisAudit { checked: false, note: "no Redis strategy sold since the reset" },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn books(initial: i64, final_stock: i64, units: i64) -> ProductLedger {
        ProductLedger {
            product_id: 100,
            initial_stock: initial,
            final_stock,
            units_in_orders: units,
            orders: units,
            duplicated: 0,
        }
    }

    #[test]
    fn balanced_books_are_clean() {
        let audit = ProductAudit::of(&books(10, 0, 10));
        assert!(audit.is_clean(), "{audit:?}");
    }

    #[test]
    fn naive_oversell_shows_as_oversold_and_negative_stock_without_drift() {
        let audit = ProductAudit::of(&books(10, -3, 13));
        assert_eq!((audit.oversold, audit.negative_stock, audit.stock_drift), (3, 3, 0));
    }

    #[test]
    fn lost_update_shows_as_drift() {
        // Two buyers read 10 and both wrote 9: two orders, one unit gone from the shelf.
        let audit = ProductAudit::of(&books(10, 9, 2));
        assert_eq!((audit.oversold, audit.negative_stock, audit.stock_drift), (0, 0, -1));
    }

    #[test]
    fn opposite_drifts_do_not_cancel_in_the_total() {
        let mut a = books(10, 9, 2);
        let mut b = books(10, 9, 0);
        a.product_id = 1;
        b.product_id = 2;
        let ledger = LedgerAudit::from_rows(&[a, b], 2, 0);
        assert_eq!(ledger.total.stock_drift, 2);
        assert!(!ledger.clean);
    }
}
