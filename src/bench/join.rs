//! The audit's join: what clients were told (the load generator's acknowledgements and sold-out
//! answers) against what the server holds after the drain (its audit and its orders).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use uuid::Uuid;

use super::server::HeldOrder;
use crate::loadgen::{AckStatus, RunRecord};
pub use crate::run_folder::Anomalies;

/// The parts of `GET /admin/audit` the join reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditView {
    /// No anomaly anywhere in the server's books.
    #[serde(default)]
    pub clean: bool,
    pub settled: bool,
    pub total: AuditTotals,
    #[serde(default)]
    pub products: Vec<AuditProduct>,
    #[serde(default)]
    pub queues: AuditQueues,
    #[serde(default)]
    pub redis: AuditRedis,
    #[serde(default)]
    pub ledgers: BTreeMap<String, AuditLedger>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct AuditTotals {
    pub oversold: i64,
    pub duplicated: i64,
    #[serde(default)]
    pub redis_drift: i64,
    /// Units taken in Redis that no order holds and no sweep gave back; 0 from a server whose
    /// audit does not report it.
    #[serde(default)]
    pub stranded: i64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct AuditProduct {
    pub product_id: i64,
    pub final_stock: i64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct AuditQueues {
    pub pending: i64,
    pub dead_lettered: i64,
    pub accepted_then_cancelled: i64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct AuditRedis {
    pub checked: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditLedger {
    pub total: AuditTotals,
    #[serde(default)]
    pub products: Vec<AuditProduct>,
}

impl AuditView {
    /// Final stock by product as `strategy` sees it: its own ledger when it keeps one, PostgreSQL
    /// otherwise.
    pub fn final_stock(&self, strategy: &str) -> HashMap<i64, i64> {
        let products = self.ledgers.get(strategy).map_or(&self.products, |ledger| &ledger.products);
        products.iter().map(|p| (p.product_id, p.final_stock)).collect()
    }
}

/// Joins a run's record with the audit and the held orders of `strategy`. `stock` gives the final
/// stock of every product a sold-out answer named.
pub fn join(
    record: &RunRecord,
    audit: &AuditView,
    held: &[HeldOrder],
    strategy: &str,
    stock: &HashMap<i64, i64>,
) -> Anomalies {
    let held: HashMap<Uuid, &str> = held
        .iter()
        .filter(|order| order.strategy == strategy)
        .map(|order| (order.order_id, order.status.as_str()))
        .collect();
    let mut acked: HashSet<Uuid> = HashSet::with_capacity(record.acks.len());
    let mut twice = 0;
    let mut lost = 0;
    for ack in &record.acks {
        if !acked.insert(ack.order_id) {
            twice += 1;
            continue;
        }
        match (held.get(&ack.order_id).copied(), ack.status) {
            (None, _) | (Some("cancelled"), AckStatus::Confirmed) => lost += 1,
            // A cancelled 202 is `accepted_then_cancelled`, which the audit counts.
            _ => {}
        }
    }
    // A 503 that named its order said it may still complete: landing later is no phantom.
    let in_doubt: HashSet<Uuid> = record.in_doubt.iter().copied().collect();
    let phantom = held
        .iter()
        .filter(|(id, status)| **status != "cancelled" && !acked.contains(id) && !in_doubt.contains(id))
        .count();
    // Units left on the shelf while buyers were refused, per product a sold-out answer named.
    let undersold: i64 = record
        .sold_out_by_product
        .iter()
        .filter_map(|(product, refused)| stock.get(product).map(|left| refused.undersold(*left)))
        .sum();
    let own = audit.ledgers.get(strategy).map(|ledger| ledger.total).unwrap_or_default();
    Anomalies {
        oversold: audit.total.oversold + own.oversold,
        undersold,
        lost,
        phantom: i64::try_from(phantom).unwrap_or(i64::MAX),
        duplicated: audit.total.duplicated + own.duplicated + twice,
        accepted_then_cancelled: audit.queues.accepted_then_cancelled,
        redis_drift: if audit.redis.checked { audit.total.redis_drift } else { 0 },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::loadgen::{Ack, Counts, Refused};

    fn record(acks: Vec<Ack>, sold_out: &[(i64, u64)]) -> RunRecord {
        let sold_out = sold_out.iter().map(|&(product, answers)| {
            let mut refused = Refused::default();
            refused.add(answers, 1);
            (product, refused)
        });
        RunRecord {
            started: std::time::Instant::now(),
            counts: Counts::default(),
            unsent: 0,
            duration: Duration::from_secs(1),
            success: crate::loadgen::record::latency_histogram(),
            sold_out_latency: crate::loadgen::record::latency_histogram(),
            failed_latency: crate::loadgen::record::latency_histogram(),
            censored_latency: crate::loadgen::record::latency_histogram(),
            dispatch: crate::loadgen::record::latency_histogram(),
            service_latency: crate::loadgen::record::latency_histogram(),
            errors: BTreeMap::new(),
            acks,
            in_doubt: Vec::new(),
            sold_out_by_product: sold_out.collect(),
            windows: Vec::new(),
            hot_stock: 10,
            time_to_sell_out: None,
            first_hot_sold_out: None,
            max_lag: Duration::ZERO,
            gave_up: None,
        }
    }

    fn ack(status: AckStatus) -> Ack {
        Ack { order_id: Uuid::new_v4(), product_id: 100, units: 1, status }
    }

    fn held(ack: &Ack, status: &str) -> HeldOrder {
        HeldOrder { order_id: ack.order_id, strategy: "s".into(), status: status.into() }
    }

    #[test]
    fn a_run_whose_books_match_is_clean() {
        let acks = vec![ack(AckStatus::Confirmed), ack(AckStatus::Pending)];
        let orders = vec![held(&acks[0], "confirmed"), held(&acks[1], "confirmed")];
        let found =
            join(&record(acks, &[(100, 5)]), &AuditView::default(), &orders, "s", &HashMap::from([(100, 0)]));
        assert_eq!(found, Anomalies::default());
        assert!(found.is_clean());
    }

    #[test]
    fn each_client_side_anomaly_is_found() {
        let kept = ack(AckStatus::Confirmed);
        let vanished = ack(AckStatus::Confirmed);
        let cancelled_after_201 = ack(AckStatus::Confirmed);
        let cancelled_after_202 = ack(AckStatus::Pending);
        let unknown =
            HeldOrder { order_id: Uuid::new_v4(), strategy: "s".into(), status: "confirmed".into() };
        let other_strategy =
            HeldOrder { order_id: Uuid::new_v4(), strategy: "t".into(), status: "confirmed".into() };
        let orders = vec![
            held(&kept, "confirmed"),
            held(&cancelled_after_201, "cancelled"),
            held(&cancelled_after_202, "cancelled"),
            unknown,
            other_strategy,
        ];
        let acks = vec![kept, kept, vanished, cancelled_after_201, cancelled_after_202];
        let found = join(
            &record(acks, &[(100, 4), (7, 2)]),
            &AuditView::default(),
            &orders,
            "s",
            &HashMap::from([(100, 3), (7, 0)]),
        );
        assert_eq!(found.lost, 2, "one never held, one cancelled after a 201");
        assert_eq!(found.phantom, 1, "held, never acknowledged; other strategies' orders are not this run's");
        assert_eq!(found.duplicated, 1, "one order id acknowledged twice");
        assert_eq!(found.undersold, 3, "3 units left on the shelf while 4 buyers were refused");
    }

    #[test]
    fn undersold_counts_units_a_refused_buyer_could_have_taken() {
        let refused = |answers, units| {
            let mut refused = Refused::default();
            refused.add(answers, units);
            refused
        };
        assert_eq!(refused(10, 1).undersold(2), 2, "two units on the shelf, ten buyers refused");
        assert_eq!(refused(1, 1).undersold(5), 1, "no more than the refused buyers asked for");
        assert_eq!(refused(4, 3).undersold(2), 0, "2 left cannot serve a buyer of 3: refusing was right");
        assert_eq!(refused(4, 3).undersold(7), 6, "two whole purchases of 3 were left");
        assert_eq!(refused(0, 1).undersold(9), 0, "nobody refused, nothing undersold");
        assert_eq!(refused(3, 1).undersold(-2), 0, "an oversold shelf is not undersold");
        let mut mixed = refused(2, 5);
        mixed.add(1, 2);
        assert_eq!(mixed.smallest, 2);
        assert_eq!(mixed.undersold(3), 2, "a buyer of 2 could have had 2 of the 3 left");
    }

    #[test]
    fn an_order_a_503_named_is_no_phantom_when_it_lands() {
        let landed = HeldOrder { order_id: Uuid::new_v4(), strategy: "s".into(), status: "confirmed".into() };
        let stranger =
            HeldOrder { order_id: Uuid::new_v4(), strategy: "s".into(), status: "confirmed".into() };
        let mut run = record(Vec::new(), &[]);
        run.in_doubt.push(landed.order_id);
        let found = join(&run, &AuditView::default(), &[landed, stranger], "s", &HashMap::new());
        assert_eq!(found.phantom, 1, "only the order nobody named is a phantom");
    }

    #[test]
    fn server_side_anomalies_come_from_the_audit() {
        let audit: AuditView = serde_json::from_value(serde_json::json!({
            "settled": true,
            "total": {"oversold": 3, "duplicated": 1, "redis_drift": 2},
            "products": [{"product_id": 100, "final_stock": -3}],
            "queues": {"pending": 0, "dead_lettered": 0, "accepted_then_cancelled": 5},
            "redis": {"checked": true},
            "ledgers": {"memory": {"total": {"oversold": 1, "duplicated": 0}, "products": [{"product_id": 7, "final_stock": 4}]}}
        }))
        .unwrap();
        let found = join(&record(Vec::new(), &[]), &audit, &[], "s", &audit.final_stock("s"));
        assert_eq!(
            (found.oversold, found.duplicated, found.accepted_then_cancelled, found.redis_drift),
            (3, 1, 5, 2)
        );
        let found = join(&record(Vec::new(), &[]), &audit, &[], "memory", &audit.final_stock("memory"));
        assert_eq!(found.oversold, 4, "a strategy's own ledger counts for it");
        assert_eq!(audit.final_stock("s"), HashMap::from([(100, -3)]));
        assert_eq!(
            audit.final_stock("memory"),
            HashMap::from([(7, 4)]),
            "memory's stock lives in its ledger"
        );
        let unchecked = AuditView { redis: AuditRedis { checked: false }, ..audit };
        assert_eq!(join(&record(Vec::new(), &[]), &unchecked, &[], "s", &HashMap::new()).redis_drift, 0);
    }
}
