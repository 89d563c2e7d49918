//! One probe: reset the hot product with more stock than the probe can sell, offer a fixed
//! open-model rate for a few seconds, wait for queueing strategies to persist what they accepted,
//! and judge the run against the objective.

use std::time::{Duration, Instant};

use crate::bench::server::Server;
use crate::loadgen::{self, GiveUp, LoadPlan, Model, RunRecord, Scenario, Target};
use crate::run_folder::{CapacityStepRow, Phase};

/// How often the drain asks whether a queueing strategy has persisted everything.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// What every probe of a search shares.
#[derive(Debug, Clone)]
pub struct ProbeShape {
    /// The product probes buy; reset before each probe.
    pub product: i64,
    /// Keep-alive connections (one open-model worker each).
    pub connections: usize,
    pub probe: Duration,
    pub slo: Duration,
    /// Longest wait for a queueing strategy to persist a probe's orders.
    pub drain_limit: Duration,
    /// Regular customers beside the hunters, buying random products of the catalogue.
    pub regulars: Regulars,
    /// Resets keep the catalogue and its history (`keep_catalogue`): only the hot product's stock
    /// is set, and what the last probe sold is undone.
    pub keep_catalogue: bool,
}

/// The seed scenario's other customers: `weight` of them for every 100 hunters, each buying one
/// random product of `1..=products`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Regulars {
    pub weight: u32,
    pub products: i64,
}

/// Hunters' weight against [`Regulars::weight`], as in the seed (100 : 3).
const HUNTERS: u32 = 100;

impl ProbeShape {
    /// The load of one probe at `rate`: hunters (and regulars, when they weigh anything), exactly
    /// `rate × probe` requests, each due within the probe. The run may last one second longer, so a
    /// request due at the very end is still sent (late, and charged for it) rather than counted
    /// unsent by a timer's rounding.
    pub fn plan(&self, rate: f64) -> LoadPlan {
        let requests = requests(rate, self.probe);
        LoadPlan {
            model: Model::Open,
            rate,
            connections: self.connections,
            users: 1,
            user_rate: 0.0,
            ramp: Duration::ZERO,
            scenario: Scenario {
                hot_product: self.product,
                // Twice what the probe can ask for: a sold-out answer would fail it.
                hot_stock: i64::try_from(requests.saturating_mul(2)).unwrap_or(i64::MAX),
                hot_weight: HUNTERS,
                regular_weight: self.regulars.weight,
                products: self.regulars.products.max(1),
                quantity: 1,
                seed: 7,
            },
            duration: self.probe + Duration::from_secs(1),
            max_requests: Some(requests),
            grace: Duration::from_secs(1),
            // An answer this late fails the probe anyway; waiting longer only slows the search.
            timeout: (self.slo * 10).max(Duration::from_secs(1)),
            // One miss more than the p99 allows, plus one against rounding: the verdict is certain.
            give_up: Some(GiveUp { slo: self.slo, misses: requests / 100 + 1 }),
        }
    }
}

impl ProbeShape {
    /// The reset before a probe of `plan`: the scenario's catalogue, or, keeping the catalogue,
    /// the hot product's stock alone.
    pub fn reset_plan(&self, plan: &LoadPlan) -> serde_json::Value {
        if self.keep_catalogue {
            let hot = &plan.scenario;
            serde_json::json!({
                "products": [{ "id": hot.hot_product, "stock": hot.hot_stock }],
                "keep_catalogue": true,
            })
        } else {
            plan.scenario.reset_plan()
        }
    }
}

/// Requests a probe of `probe` at `rate` sends.
fn requests(rate: f64, probe: Duration) -> u64 {
    let requests = (rate * probe.as_secs_f64()).round();
    if requests.is_finite() && requests >= 1.0 { requests as u64 } else { 1 }
}

/// Why a run does not sustain its rate, or `None` when it does: p99 from the intended send time
/// within the objective, every due request sent, every answer a sale.
pub fn failure(record: &RunRecord, slo: Duration) -> Option<String> {
    let mut why = Vec::new();
    if record.unsent > 0 {
        why.push(format!("{} unsent", record.unsent));
    }
    if record.counts.errors > 0 {
        let kinds: Vec<String> =
            record.errors.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
        why.push(format!("{} errors ({})", record.counts.errors, kinds.join(", ")));
    }
    if record.counts.sold_out > 0 {
        why.push(format!("{} sold out", record.counts.sold_out));
    }
    let answered_ok = record.counts.confirmed + record.counts.pending;
    if answered_ok < record.counts.sent && record.counts.errors == 0 && record.counts.sold_out == 0 {
        why.push(format!("{} of {} sent unanswered", record.counts.sent - answered_ok, record.counts.sent));
    }
    if let Some(at) = record.gave_up {
        why.push(format!("gave up after {:.2} s, the objective already missed", at.as_secs_f64()));
    }
    if record.success.is_empty() {
        why.push("no sale".to_owned());
    } else {
        let p99 = Duration::from_micros(record.success.value_at_percentile(99.0));
        if p99 > slo {
            why.push(format!("p99 {} > {} ms", ms_text(p99), slo.as_millis()));
        }
    }
    (!why.is_empty()).then(|| why.join("; "))
}

fn ms_text(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if ms >= 10.0 { format!("{ms:.0} ms") } else { format!("{ms:.1} ms") }
}

/// What one probe measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub record: RunRecord,
    pub drain: Duration,
    pub failure: Option<String>,
}

impl Measured {
    fn percentile(&self, p: f64) -> Option<f64> {
        (!self.record.success.is_empty()).then(|| self.record.success.value_at_percentile(p) as f64 / 1e3)
    }

    pub fn p50_ms(&self) -> Option<f64> {
        self.percentile(50.0)
    }

    pub fn p99_ms(&self) -> Option<f64> {
        self.percentile(99.0)
    }

    /// The probe in a few words for the progress line: `pass p99 38 ms`.
    pub fn summary(&self) -> String {
        let p99 =
            self.p99_ms().map_or_else(|| "–".to_owned(), |ms| ms_text(Duration::from_secs_f64(ms / 1e3)));
        match &self.failure {
            None => format!("pass p99 {p99}"),
            Some(why) => format!("FAIL p99 {p99}: {why}"),
        }
    }

    /// The probe as a `capacity_steps.csv` row.
    #[expect(clippy::too_many_arguments, reason = "a row's key is its identity")]
    pub fn row(
        &self,
        run_id: &str,
        strategy: &str,
        repetition: u32,
        step: u32,
        phase: Phase,
        offered_rps: f64,
        passed: bool,
    ) -> CapacityStepRow {
        let counts = &self.record.counts;
        CapacityStepRow {
            run_id: run_id.to_owned(),
            strategy: strategy.to_owned(),
            repetition,
            step,
            phase,
            offered_rps,
            passed,
            sent: counts.sent,
            answered: counts.answered,
            confirmed: counts.confirmed,
            pending: counts.pending,
            sold_out: counts.sold_out,
            errors: counts.errors,
            unsent: self.record.unsent,
            late: counts.late,
            achieved_rps: self.record.achieved_rps(),
            sales_per_sec: self.record.sales_per_sec(),
            p50_ms: self.p50_ms(),
            p99_ms: self.p99_ms(),
            max_ms: self.percentile(100.0),
            drain_ms: self.drain.as_secs_f64() * 1e3,
            failure: self.failure.clone().unwrap_or_default(),
        }
    }
}

/// Offers `rate` to `strategy` on `target` (reset first when a server is given) and judges it.
///
/// # Errors
/// When the reset, the run or the drain's admin calls fail.
pub async fn probe(
    server: Option<&Server>,
    target: &Target,
    strategy: &str,
    shape: &ProbeShape,
    rate: f64,
    label: &str,
) -> anyhow::Result<Measured> {
    let plan = shape.plan(rate);
    if let Some(server) = server {
        server.reset(&shape.reset_plan(&plan)).await?;
    }
    // A server bench drives spreads the load over its replicas; a bare target takes it all.
    let targets = server.map_or_else(|| vec![target.clone()], Server::load_targets);
    let record = loadgen::run_spread(&plan, &targets, strategy, label).await?;
    let drain = match server {
        Some(server) => drain(server, shape.drain_limit, label).await?,
        None => Duration::ZERO,
    };
    let failure = failure(&record, shape.slo);
    Ok(Measured { record, drain, failure })
}

/// Waits until the server says nothing accepted is left to persist, at most `limit`; the next
/// probe's reset must not race a worker still writing this one's orders.
async fn drain(server: &Server, limit: Duration, label: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let audit = server.audit().await?;
        if audit.get("settled").and_then(serde_json::Value::as_bool).unwrap_or(false) {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= limit {
            eprintln!(
                "{label} warning: not drained after {}s; the next probe starts anyway",
                limit.as_secs()
            );
            return Ok(started.elapsed());
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn shape() -> ProbeShape {
        ProbeShape {
            product: 100,
            connections: 8,
            probe: Duration::from_secs(3),
            slo: Duration::from_millis(100),
            drain_limit: Duration::from_secs(5),
            regulars: Regulars::default(),
            keep_catalogue: false,
        }
    }

    #[test]
    fn a_probe_over_a_kept_catalogue_sends_regulars_over_all_of_it_and_resets_only_the_hot_product() {
        let shape = ProbeShape {
            regulars: Regulars { weight: 3, products: 5_000_000 },
            keep_catalogue: true,
            ..shape()
        };
        let plan = shape.plan(1_000.0);
        assert_eq!((plan.scenario.hot_weight, plan.scenario.regular_weight), (100, 3));
        assert_eq!(plan.scenario.products, 5_000_000, "regulars pick from the whole catalogue");
        assert!(plan.scenario.hot_stock >= 6_000, "the hot product cannot run out");
        let reset = shape.reset_plan(&plan);
        assert_eq!(reset["keep_catalogue"], true);
        assert!(reset.get("random_products").is_none(), "the catalogue is not laid out again: {reset}");
        assert_eq!(reset["products"][0]["stock"], plan.scenario.hot_stock);
        let fresh = ProbeShape { keep_catalogue: false, ..shape };
        assert_eq!(fresh.reset_plan(&plan)["random_products"]["count"], 5_000_000);
    }

    #[test]
    fn a_probe_cannot_run_out_of_stock_and_sends_exactly_its_share() {
        let plan = shape().plan(4_000.0);
        assert_eq!(plan.max_requests, Some(12_000));
        assert!(plan.scenario.hot_stock >= 24_000, "stock for twice the requests");
        assert_eq!(plan.scenario.regular_weight, 0, "every request buys the reset product");
        assert_eq!(plan.scenario.products, 1, "and the reset lays out no catalogue");
        assert!(plan.duration > Duration::from_secs(3), "room for the last due request");
        assert_eq!(
            plan.give_up,
            Some(GiveUp { slo: Duration::from_millis(100), misses: 121 }),
            "stops once more than 1 % of 12,000 (and one for rounding) missed: the p99 cannot pass then"
        );
        plan.validate().unwrap();
    }

    #[tokio::test]
    async fn a_run_fails_on_latency_unsent_errors_or_sold_out_and_passes_otherwise() {
        use crate::loadgen::record::{Answer, Live, Recorder};
        let start = Instant::now();
        let live = Live::new(start, Duration::from_secs(1), 100, 1_000, Duration::ZERO);
        let record = |latency_ms: u64, unsent: usize, answer: fn() -> Answer| {
            let mut recorder = Recorder::default();
            for _ in 0..100 {
                recorder.sent(&live, start, Duration::ZERO);
                recorder.answered(&live, start, Duration::from_millis(latency_ms), 100, 1, answer());
            }
            RunRecord::merge(
                vec![recorder],
                &live,
                &vec![Duration::from_millis(500); unsent],
                Duration::from_secs(1),
            )
        };
        let sale = || Answer::Acked(crate::loadgen::AckStatus::Confirmed, uuid::Uuid::new_v4());
        let slo = Duration::from_millis(100);
        assert_eq!(failure(&record(40, 0, sale), slo), None);
        assert!(failure(&record(140, 0, sale), slo).unwrap().contains("p99 140 ms > 100 ms"));
        assert!(failure(&record(40, 3, sale), slo).unwrap().contains("3 unsent"));
        assert!(failure(&record(40, 0, Answer::timeout), slo).unwrap().contains("errors (timeout 100)"));
        assert!(failure(&record(40, 0, || Answer::SoldOut), slo).unwrap().contains("100 sold out"));
    }
}
