//! Per-strategy counters and latency histograms, recorded by a layer around each strategy so
//! strategy files hold only their mechanism. Feeds `GET /stats` (HdrHistogram percentiles) and
//! `GET /metrics` (Prometheus).
//!
//! Both are views of this process: with several server replicas each counts the purchases it
//! answered. Nothing the audit needs to agree on across replicas may live here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkout_strategies::coalescer::BatchSizeSummary;
use checkout_strategies::{
    Backlog, OrderEntry, OrderStatus, OrderView, OwnLedger, PurchaseOutcome, PurchaseRequest, StockPlan,
    Strategy, StrategyError, StrategyKind,
};
use hdrhistogram::Histogram;
use serde::Serialize;
use uuid::Uuid;

/// Slowest latency the histograms resolve; anything slower is clamped to it.
const MAX_TRACKED: Duration = Duration::from_secs(120);

/// Counters of one strategy since the last reset.
#[derive(Debug)]
struct Counters {
    attempts: AtomicU64,
    confirmed: AtomicU64,
    pending: AtomicU64,
    replayed: AtomicU64,
    sold_out: AtomicU64,
    unknown_product: AtomicU64,
    shed: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    latency_us: Mutex<Histogram<u64>>,
}

impl Counters {
    fn new() -> Self {
        Self {
            attempts: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            sold_out: AtomicU64::new(0),
            unknown_product: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            latency_us: Mutex::new(new_histogram()),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    let max = u64::try_from(MAX_TRACKED.as_micros()).expect("fits");
    Histogram::new_with_bounds(1, max, 3).expect("static bounds are valid")
}

/// Counts one answer under `code` in the errors map, and returns the code.
fn count_error(counters: &Counters, code: &'static str) -> &'static str {
    *counters.errors.lock().unwrap_or_else(PoisonError::into_inner).entry(code).or_default() += 1;
    code
}

/// Statistics of every strategy.
#[derive(Debug)]
pub struct Stats {
    by_kind: BTreeMap<StrategyKind, Counters>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// One strategy's line in `GET /stats`.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyStats {
    pub strategy: StrategyKind,
    pub attempts: u64,
    pub confirmed: u64,
    pub pending: u64,
    pub replayed: u64,
    pub sold_out: u64,
    pub unknown_product: u64,
    /// Purchases refused with 503 `overloaded` before reaching the strategy (not in `attempts`).
    pub shed: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub latency: LatencySummary,
    /// Purchases per commit, for strategies that commit many at once (`sql-coalesce`); absent
    /// for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batches: Option<BatchSizeSummary>,
}

impl Stats {
    pub fn new() -> Self {
        Self { by_kind: StrategyKind::ALL.into_iter().map(|kind| (kind, Counters::new())).collect() }
    }

    fn counters(&self, kind: StrategyKind) -> &Counters {
        self.by_kind.get(&kind).expect("every kind has counters")
    }

    /// Counts one purchase attempt and how it ended.
    pub fn record(
        &self,
        kind: StrategyKind,
        elapsed: Duration,
        result: &Result<PurchaseOutcome, StrategyError>,
    ) {
        let counters = self.counters(kind);
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        let outcome = match result {
            Ok(PurchaseOutcome::Placed(receipt)) if receipt.status == OrderStatus::Pending => {
                counters.pending.fetch_add(1, Ordering::Relaxed);
                "pending"
            }
            Ok(PurchaseOutcome::Placed(_)) => {
                counters.confirmed.fetch_add(1, Ordering::Relaxed);
                "confirmed"
            }
            Ok(PurchaseOutcome::Replayed(_)) => {
                counters.replayed.fetch_add(1, Ordering::Relaxed);
                "replayed"
            }
            Ok(PurchaseOutcome::SoldOut(_)) => {
                counters.sold_out.fetch_add(1, Ordering::Relaxed);
                "sold_out"
            }
            Ok(PurchaseOutcome::UnknownProduct(_)) => {
                counters.unknown_product.fetch_add(1, Ordering::Relaxed);
                "unknown_product"
            }
            // Refusals that are the client's to fix: counted with the errors, under their codes.
            Ok(PurchaseOutcome::GateConflict { .. }) => count_error(counters, "inventory_gate_conflict"),
            Ok(PurchaseOutcome::KeyReused(_)) => count_error(counters, "idempotency_key_reused"),
            Ok(PurchaseOutcome::Contention(_)) => count_error(counters, "contention"),
            Err(err) => count_error(counters, err.code()),
        };
        let micros =
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_TRACKED.as_micros() as u64);
        counters.latency_us.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(micros);
        metrics::counter!("checkout_purchases_total", "strategy" => kind.as_str(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("checkout_purchase_duration_seconds", "strategy" => kind.as_str())
            .record(elapsed.as_secs_f64());
    }

    /// Counts a purchase refused before it reached the strategy because its backend was full.
    pub fn record_shed(&self, kind: StrategyKind) {
        self.counters(kind).shed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("checkout_purchases_total", "strategy" => kind.as_str(), "outcome" => "overloaded")
            .increment(1);
    }

    /// Strategies that placed orders (confirmed or pending) since the last reset.
    pub fn sold_by(&self) -> Vec<StrategyKind> {
        self.by_kind
            .iter()
            .filter(|(_, c)| c.confirmed.load(Ordering::Relaxed) + c.pending.load(Ordering::Relaxed) > 0)
            .map(|(&kind, _)| kind)
            .collect()
    }

    /// Zeroes every counter and histogram.
    pub fn reset(&self) {
        for counters in self.by_kind.values() {
            for counter in [
                &counters.attempts,
                &counters.confirmed,
                &counters.pending,
                &counters.replayed,
                &counters.sold_out,
                &counters.unknown_product,
                &counters.shed,
            ] {
                counter.store(0, Ordering::Relaxed);
            }
            counters.errors.lock().unwrap_or_else(PoisonError::into_inner).clear();
            counters.latency_us.lock().unwrap_or_else(PoisonError::into_inner).reset();
        }
    }

    /// A copy of every strategy's figures.
    pub fn snapshot(&self) -> Vec<StrategyStats> {
        self.by_kind
            .iter()
            .map(|(&kind, c)| {
                let histogram = c.latency_us.lock().unwrap_or_else(PoisonError::into_inner).clone();
                #[expect(clippy::cast_precision_loss, reason = "microsecond latencies are far below 2^52")]
                let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
                StrategyStats {
                    strategy: kind,
                    attempts: c.attempts.load(Ordering::Relaxed),
                    confirmed: c.confirmed.load(Ordering::Relaxed),
                    pending: c.pending.load(Ordering::Relaxed),
                    replayed: c.replayed.load(Ordering::Relaxed),
                    sold_out: c.sold_out.load(Ordering::Relaxed),
                    unknown_product: c.unknown_product.load(Ordering::Relaxed),
                    shed: c.shed.load(Ordering::Relaxed),
                    errors: c.errors.lock().unwrap_or_else(PoisonError::into_inner).clone(),
                    latency: LatencySummary {
                        count: histogram.len(),
                        p50_ms: ms(0.5),
                        p90_ms: ms(0.9),
                        p99_ms: ms(0.99),
                        p999_ms: ms(0.999),
                        max_ms: ms(1.0),
                    },
                    batches: None,
                }
            })
            .collect()
    }
}

/// A strategy with its purchases timed and counted.
#[derive(Debug)]
pub struct Measured {
    inner: Arc<dyn Strategy>,
    stats: Arc<Stats>,
}

impl Measured {
    /// Wraps `inner` so every purchase lands in `stats`.
    pub fn wrap(inner: Arc<dyn Strategy>, stats: Arc<Stats>) -> Arc<dyn Strategy> {
        Arc::new(Self { inner, stats })
    }
}

#[async_trait]
impl Strategy for Measured {
    fn kind(&self) -> StrategyKind {
        self.inner.kind()
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        let started = Instant::now();
        let result = self.inner.purchase(request).await;
        self.stats.record(self.kind(), started.elapsed(), &result);
        result
    }

    async fn prepare(&self, plan: &StockPlan) -> Result<(), StrategyError> {
        self.inner.prepare(plan).await
    }

    async fn own_ledger(&self) -> Result<Option<OwnLedger>, StrategyError> {
        self.inner.own_ledger().await
    }

    async fn backlog(&self) -> Result<Option<Backlog>, StrategyError> {
        self.inner.backlog().await
    }

    async fn discard_queue(&self) -> Result<(), StrategyError> {
        self.inner.discard_queue().await
    }

    async fn own_order(&self, id: Uuid) -> Result<Option<OrderView>, StrategyError> {
        self.inner.own_order(id).await
    }

    async fn own_orders(&self) -> Result<Vec<OrderEntry>, StrategyError> {
        self.inner.own_orders().await
    }

    fn batch_sizes(&self) -> Option<BatchSizeSummary> {
        self.inner.batch_sizes()
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}
