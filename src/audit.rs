//! The audit: reconciles each product's books (initial stock, stock left, units in live orders)
//! and names every way they can disagree.
//!
//! For one product, `initial = final + units_in_orders` must hold. When it does not, the gap is
//! `stock_drift` (a lost update or a unit that vanished). Independently, `oversold` counts units
//! confirmed beyond what existed and `negative_stock` the units below zero on the shelf. PostgreSQL
//! is the system of record; strategies that keep stock elsewhere (the in-memory baseline) are
//! audited the same way in `ledgers`.

use std::collections::BTreeMap;

use checkout_strategies::catalog::{self, OrderTotals};
use checkout_strategies::{ProductLedger, StrategyError, StrategyKind};
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
        }
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
        }
        let clean = duplicated == 0 && products.iter().all(ProductAudit::is_clean);
        Self { clean, total, products }
    }
}

/// `GET /admin/audit`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// PostgreSQL and every ledger below are clean.
    pub clean: bool,
    /// PostgreSQL, summed over `products`.
    pub total: AuditTotal,
    /// PostgreSQL: every product it has something to say about.
    pub products: Vec<ProductAudit>,
    /// PostgreSQL orders by status.
    pub order_status: OrderTotals,
    /// Stock kept outside PostgreSQL, by strategy.
    pub ledgers: BTreeMap<StrategyKind, LedgerAudit>,
}

/// Reads every ledger and reconciles it.
///
/// # Errors
/// When a backend does not answer.
pub async fn reconcile(app: &App) -> Result<AuditReport, StrategyError> {
    let (rows, totals) = catalog::sql_books(&app.pg, &app.tracked_products()).await?;
    let postgres = LedgerAudit::from_rows(&rows, totals.pending + totals.confirmed, totals.duplicated);
    let mut ledgers = BTreeMap::new();
    for strategy in app.registry.iter() {
        if let Some(own) = strategy.own_ledger().await? {
            ledgers
                .insert(strategy.kind(), LedgerAudit::from_rows(&own.products, own.orders, own.duplicated));
        }
    }
    let clean = postgres.clean && ledgers.values().all(|ledger| ledger.clean);
    Ok(AuditReport {
        clean,
        total: postgres.total,
        products: postgres.products,
        order_status: totals,
        ledgers,
    })
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
