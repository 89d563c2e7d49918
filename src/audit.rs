//! The audit: reconciles each product's books (initial stock, stock left, units in live orders)
//! and names every way they can disagree.
//!
//! For one product, `initial = final + units_in_orders` must hold. When it does not, the gap is
//! `stock_drift` (a lost update or a unit that vanished). Independently, `oversold` counts units
//! confirmed beyond what existed and `negative_stock` the units below zero on the shelf. PostgreSQL
//! is the system of record; strategies that keep stock elsewhere (the in-memory baseline) are
//! audited the same way in `ledgers`.
//!
//! Redis strategies keep a mirror of the stock, and every unit they take is held for one order
//! (a reservation or a queued order, see `checkout_strategies::reservation`). For each product the
//! Redis gate sells, Redis's shelf must equal PostgreSQL's stock minus the units of holds whose
//! order PostgreSQL does not have yet; the gap is `redis_drift` (positive: Redis offers units
//! PostgreSQL lacks; negative: units gone from the shelf that no hold accounts for). The in-flight
//! counter must equal the units held. `stranded` counts units nobody will give back on their own:
//! a negative drift, and reservations past their deadline whose order PostgreSQL lacks (the
//! sweeper returns those). Products the PostgreSQL gate sells are not held to Redis: the mirror
//! is not theirs. Queueing strategies add `pending` (accepted, not yet persisted),
//! `dead_lettered` and `accepted_then_cancelled`; orders for products PostgreSQL has no row for
//! are `orphan_units`. Any of these makes the audit not clean, whatever mix of strategies sold.
//!
//! `redis-orderlog` commits orders without touching the stock row; the stock sync takes their
//! units later. Until it has, those units are `awaiting_sync`: the books are judged on what is
//! left to sell (`final_stock − awaiting_sync`), and the audit is not `settled` while any remain.
//!
//! Every figure is read from the stores all server replicas share (PostgreSQL, Redis, the broker),
//! never from what this process happened to answer, so any replica gives the same verdict. The
//! one exception is `memory`'s ledger, which exists in one process only (`single_process`).

use std::collections::BTreeMap;

use checkout_strategies::catalog::{self, BooksOn, OrderTotals};
use checkout_strategies::reservation::{self, HeldUnits};
use checkout_strategies::{Gate, ProductLedger, StrategyError, StrategyKind, contention, redis_stock};
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
    /// Units in committed orders the stock sync has not taken from `final_stock` yet; the
    /// anomalies above are computed on `final_stock − awaiting_sync`.
    pub awaiting_sync: i64,
    /// Purchases of this product refused with 409 `contention` (`sql-optimistic` lost its
    /// compare-and-swap every time) since the reset, by any replica (counted in PostgreSQL):
    /// buyers turned away while stock may be left. An undersell, not an anomaly: it does not make
    /// the audit unclean.
    pub contention_refusals: u64,
    /// Redis's stock, when the Redis mirror was read and holds the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_stock: Option<i64>,
    /// Redis's in-flight counter: units taken in Redis and held for an order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_inflight: Option<i64>,
    /// Units held for orders, summed from the holds themselves (the counter must agree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_held: Option<i64>,
    /// Of those, units whose order PostgreSQL does not hold yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_uncommitted: Option<i64>,
    /// `redis_stock − (final_stock − awaiting_sync − redis_uncommitted)`, plus any gap between the in-flight
    /// counter and the holds: non-zero when the mirror disagrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_drift: Option<i64>,
    /// Units off Redis's shelf that nobody gives back on their own: a negative drift, and
    /// reservations past their deadline whose order PostgreSQL lacks.
    pub stranded: i64,
    /// The gate that sells this product since the reset, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
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
            awaiting_sync: 0,
            contention_refusals: 0,
            redis_stock: None,
            redis_inflight: None,
            redis_held: None,
            redis_uncommitted: None,
            redis_drift: None,
            stranded: 0,
            gate: None,
        }
    }

    /// Judges the books on what is left to sell: `final_stock` less the units awaiting the stock
    /// sync, which are in orders already.
    const fn with_awaiting_sync(mut self, units: i64) -> Self {
        let left = self.final_stock - units;
        self.awaiting_sync = units;
        self.negative_stock = if left < 0 { -left } else { 0 };
        self.stock_drift = self.initial_stock - left - self.units_in_orders;
        self
    }

    /// What is left to sell once the stock sync has caught up.
    const fn left_to_sell(&self) -> i64 {
        self.final_stock - self.awaiting_sync
    }

    /// Adds what Redis holds for this product. A missing stock key is a mirror not built yet (it
    /// is rebuilt exactly on first use), so only held units can disagree then.
    fn with_redis(mut self, stock: Option<i64>, inflight: Option<i64>, held: HeldUnits) -> Self {
        let inflight = inflight.unwrap_or(0);
        let counter_gap = inflight - held.held;
        let shelf_gap = stock.map_or(0, |stock| stock - (self.left_to_sell() - held.uncommitted));
        self.redis_stock = stock;
        self.redis_inflight = Some(inflight);
        self.redis_held = Some(held.held);
        self.redis_uncommitted = Some(held.uncommitted);
        self.redis_drift = Some(shelf_gap + counter_gap);
        self.stranded = held.expired_uncommitted + (-shelf_gap).max(0);
        self
    }

    const fn is_clean(&self) -> bool {
        self.oversold == 0
            && self.negative_stock == 0
            && self.stock_drift == 0
            && self.duplicated == 0
            && self.stranded == 0
            && matches!(self.redis_drift, None | Some(0))
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
    /// Units off Redis's shelf that nobody gives back on their own.
    pub stranded: i64,
    /// Units in live orders for products PostgreSQL has no row for.
    pub orphan_units: i64,
    /// Units in committed orders the stock sync has not applied yet.
    pub awaiting_sync: i64,
    /// Purchases refused with 409 `contention`.
    pub contention_refusals: u64,
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
            total.stranded += p.stranded;
            total.awaiting_sync += p.awaiting_sync;
            total.contention_refusals += p.contention_refusals;
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
    /// Units those orders hold.
    pub pending_units: i64,
    /// Messages the queues (Redis streams, the NATS broker) still hold: zero once drained.
    pub in_queue: i64,
    /// Accepted orders given up on after failing too often; their stock was released.
    pub dead_lettered: i64,
    /// Orders whose client was told 202 and that were cancelled later.
    pub accepted_then_cancelled: i64,
}

/// Whether the Redis mirror was held to account, and why (not).
#[derive(Debug, Clone, Serialize)]
pub struct RedisAudit {
    /// `redis_drift` counts against `clean` (for the products the Redis gate sells).
    pub checked: bool,
    pub note: &'static str,
}

/// Units taken in Redis for orders: reservations of the synchronous strategies and queued orders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReservationAudit {
    /// Orders holding units (reservations and queued orders).
    pub holds: i64,
    /// Units they hold.
    pub units: i64,
    /// Units held for orders PostgreSQL does not have yet.
    pub uncommitted_units: i64,
    /// Synchronous reservations open: purchases between their reservation and its end. After a
    /// run none should be; one left belongs to a purchase that died, and the sweeper ends it at
    /// its deadline.
    pub open: i64,
    /// Synchronous reservations past their deadline, not yet swept.
    pub expired: i64,
    /// Products whose mirror waits for a quiet moment to be rewritten from PostgreSQL.
    pub awaiting_resync: i64,
}

/// `GET /admin/audit`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// No anomaly in PostgreSQL, in the Redis mirror (when checked), in the queues, or in any
    /// ledger below.
    pub clean: bool,
    /// No accepted order is waiting for a worker, no queue holds a message, no reservation is open, no mirror waits for a
    /// resync and no committed order waits for the stock sync: the books are final.
    pub settled: bool,
    /// Strategies that placed orders since the reset, whichever replica sold them (`memory`'s
    /// sales only when this process made them: its books live here).
    pub sold_by: Vec<StrategyKind>,
    /// PostgreSQL, summed over `products`.
    pub total: AuditTotal,
    /// PostgreSQL: every product it has something to say about.
    pub products: Vec<ProductAudit>,
    /// PostgreSQL orders by status.
    pub order_status: OrderTotals,
    pub queues: QueueAudit,
    pub reservations: ReservationAudit,
    pub redis: RedisAudit,
    /// Stock kept outside PostgreSQL, by strategy.
    pub ledgers: BTreeMap<StrategyKind, LedgerAudit>,
}

/// Products the plan in force names, which the audit always reports. Read from PostgreSQL rather
/// than from the plan this process holds: a replica that has not taken up a reset made through
/// another one yet must still audit the same products.
async fn planned_products(app: &App) -> Result<Vec<i64>, StrategyError> {
    Ok(match BooksOn(&app.books).latest_plan().await? {
        Some(plan) => plan.products.iter().map(|p| p.id.get()).collect(),
        None => app.tracked_products(),
    })
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
            queues.pending_units += backlog.pending_units;
            queues.in_queue += backlog.in_queue;
            queues.dead_lettered += backlog.dead_lettered;
        }
        if let Some(own) = strategy.own_ledger().await? {
            ledgers
                .insert(strategy.kind(), LedgerAudit::from_rows(&own.products, own.orders, own.duplicated));
        }
    }
    // Redis reservations and the mirror belong to the strategies gated by Redis: where none runs
    // on the books' database, nothing keeps them, and Redis is not held to account.
    let redis_checked = app.keeps_redis_mirror();
    let (holds, awaiting_resync, now_ms) = if redis_checked {
        (
            reservation::holds(&app.redis).await?,
            reservation::awaiting_resync(&app.redis).await?,
            reservation::redis_now_ms(&app.redis).await?,
        )
    } else {
        (Vec::new(), Vec::new(), 0)
    };
    let contention = contention::refusals(&app.books).await?;
    // A product buyers were turned away from is listed even if nobody bought it.
    let mut tracked = planned_products(app).await?;
    tracked.extend(contention.keys());
    let (rows, totals) = catalog::sql_books_on(&app.books, &tracked).await?;
    let ids: Vec<uuid::Uuid> = holds.iter().map(|hold| hold.order_id).collect();
    let committed = reservation::committed(&app.books, &ids).await?;
    let held = reservation::units_by_product(&holds, &committed, now_ms);
    queues.accepted_then_cancelled = totals.cancelled;
    let ledgers_rows: Vec<ProductLedger> = rows.iter().map(|row| row.ledger).collect();
    let product_ids: Vec<i64> = rows.iter().map(|row| row.ledger.product_id).collect();
    let (stocks, inflight) = if redis_checked {
        redis_stock::mirror(&app.redis, &product_ids).await?
    } else {
        (vec![None; product_ids.len()], vec![None; product_ids.len()])
    };
    let mut postgres =
        LedgerAudit::from_rows(&ledgers_rows, totals.pending + totals.confirmed, totals.duplicated);
    postgres.products = postgres
        .products
        .into_iter()
        .zip(&rows)
        .zip(stocks.into_iter().zip(inflight))
        .map(|((mut p, row), (stock, inflight))| {
            p = p.with_awaiting_sync(row.awaiting_sync);
            p.contention_refusals = contention.get(&p.product_id).copied().unwrap_or(0);
            p.gate = row.gate;
            // The mirror belongs to the products the Redis gate sells, or may sell: not to the
            // ones the PostgreSQL gate or the unit pool claimed.
            if redis_checked && matches!(row.gate, None | Some(Gate::Redis)) {
                p = p.with_redis(stock, inflight, held.get(&p.product_id).copied().unwrap_or_default());
            }
            p
        })
        .collect();
    postgres.total.redis_drift = postgres.products.iter().map(|p| p.redis_drift.unwrap_or(0).abs()).sum();
    postgres.total.stranded = postgres.products.iter().map(|p| p.stranded).sum();
    postgres.total.orphan_units = totals.orphan_units;
    postgres.total.stock_drift = postgres.products.iter().map(|p| p.stock_drift.abs()).sum();
    postgres.total.negative_stock = postgres.products.iter().map(|p| p.negative_stock).sum();
    postgres.total.awaiting_sync = postgres.products.iter().map(|p| p.awaiting_sync).sum();
    postgres.total.contention_refusals = postgres.products.iter().map(|p| p.contention_refusals).sum();
    // Judged again on the adjusted rows: `from_rows` saw units awaiting sync as drift.
    postgres.clean = totals.duplicated == 0 && postgres.products.iter().all(ProductAudit::is_clean);
    let reservations = ReservationAudit {
        holds: i64::try_from(holds.len()).unwrap_or(i64::MAX),
        units: held.values().map(|units| units.held).sum(),
        uncommitted_units: held.values().map(|units| units.uncommitted).sum(),
        open: i64::try_from(holds.iter().filter(|hold| hold.deadline_ms.is_some()).count())
            .unwrap_or(i64::MAX),
        expired: i64::try_from(
            holds.iter().filter(|hold| hold.deadline_ms.is_some_and(|d| d <= now_ms)).count(),
        )
        .unwrap_or(i64::MAX),
        awaiting_resync: i64::try_from(awaiting_resync.len()).unwrap_or(i64::MAX),
    };

    let clean = postgres.clean
        && postgres.total.redis_drift == 0
        && postgres.total.stranded == 0
        && postgres.total.orphan_units == 0
        && queues.dead_lettered == 0
        && queues.accepted_then_cancelled == 0
        && ledgers.values().all(|ledger| ledger.clean);
    // From PostgreSQL, so every replica names the same strategies; `memory`'s sales live in this
    // process only.
    let mut sold_by: Vec<StrategyKind> = BooksOn(&app.books)
        .strategies_with_orders()
        .await?
        .iter()
        .filter_map(|name| name.parse().ok())
        .chain(app.stats.sold_by().into_iter().filter(|kind| kind.spec().single_process))
        .collect();
    sold_by.sort_unstable();
    sold_by.dedup();
    Ok(AuditReport {
        clean,
        settled: queues.pending == 0
            && queues.in_queue == 0
            && reservations.open == 0
            && reservations.awaiting_resync == 0
            && totals.awaiting_sync == 0,
        sold_by,
        total: postgres.total,
        products: postgres.products,
        order_status: totals,
        queues,
        reservations,
        redis: if redis_checked {
            RedisAudit {
                checked: true,
                note: "the mirror of every product not claimed by the PostgreSQL gate is held to account",
            }
        } else {
            RedisAudit { checked: false, note: "no strategy on this database keeps stock in Redis" }
        },
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
    fn units_awaiting_sync_are_neither_drift_nor_hidden() {
        // Ten sold insert-only, four of them applied to the stock row so far.
        let audit = ProductAudit::of(&books(10, 6, 10)).with_awaiting_sync(6);
        assert!(audit.is_clean(), "sold out exactly, sync pending: {audit:?}");
        assert_eq!((audit.awaiting_sync, audit.left_to_sell()), (6, 0));
        let unsynced = ProductAudit::of(&books(10, 6, 10));
        assert_eq!(unsynced.stock_drift, -6, "without the sync's backlog the books would not balance");
        let oversold = ProductAudit::of(&books(10, 10, 11)).with_awaiting_sync(11);
        assert_eq!((oversold.oversold, oversold.negative_stock, oversold.stock_drift), (1, 1, 0));
        assert!(!oversold.is_clean());
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
