//! What a run saw: every answer classified, latency in HdrHistograms, a timeline in 100 ms
//! windows, and the order ids clients were given, for the join with what the database holds.
//!
//! Every due request lands in exactly one latency histogram, measured from its intended send time:
//! `success`, `sold_out`, `failed` (an error answer), or `censored` (no answer: a client timeout or
//! a request never sent before the run ended, recorded at the lower bound of its latency). Two more
//! histograms explain the first four: `dispatch` (intended → actual send) and `service` (actual
//! send → answer, what a load generator without the correction would report).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::client::Transport;

/// Width of one timeline window.
pub const WINDOW: Duration = Duration::from_millis(100);

/// Latency is recorded in microseconds, up to ten minutes, to three significant digits.
const LATENCY_MAX_US: u64 = 600_000_000;

/// The error kind of a request without an answer within `--timeout-ms`.
const TIMEOUT: &str = "timeout";

/// A latency in whole microseconds, at least 1 (HdrHistogram's lowest value).
fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// A fresh latency histogram.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// What the server promised for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// 201 (or a 200 replay): placed.
    Confirmed,
    /// 202: accepted, a worker confirms later.
    Pending,
}

/// An order a client was told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub order_id: Uuid,
    pub product_id: i64,
    pub units: u32,
    pub status: AckStatus,
}

/// One answer, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Acked(AckStatus, Uuid),
    SoldOut,
    Failed(String),
    /// A 503 that names its order: the purchase may still complete (a request timeout, an outcome
    /// the server could not settle). Not an acknowledgement, and not a phantom if it lands.
    InDoubt(String, Uuid),
}

#[derive(Debug, Deserialize)]
struct Body {
    order_id: Option<Uuid>,
    error: Option<String>,
}

impl Answer {
    /// Reads an HTTP answer as the contract defines it.
    pub(crate) fn of(status: StatusCode, body: &Bytes) -> Self {
        let parsed: Option<Body> = serde_json::from_slice(body).ok();
        let order_id = parsed.as_ref().and_then(|body| body.order_id);
        match (status.as_u16(), order_id) {
            (200 | 201, Some(id)) => Self::Acked(AckStatus::Confirmed, id),
            (202, Some(id)) => Self::Acked(AckStatus::Pending, id),
            // Refused while stock may be left (`sql-optimistic` out of retries): not sold out, so
            // it cannot count as an undersell; it is counted with the errors, under its code.
            (409, _) if parsed.as_ref().and_then(|body| body.error.as_deref()) == Some("contention") => {
                Self::Failed("http_409_contention".to_owned())
            }
            (409, _) => Self::SoldOut,
            (503, Some(id)) => {
                let error = parsed.and_then(|body| body.error).unwrap_or_else(|| "unknown".to_owned());
                Self::InDoubt(format!("http_503_{error}"), id)
            }
            (code, _) => {
                let error = parsed.and_then(|body| body.error).unwrap_or_else(|| "unknown".to_owned());
                Self::Failed(format!("http_{code}_{error}"))
            }
        }
    }

    pub(crate) fn transport(failure: Transport) -> Self {
        Self::Failed(failure.kind().to_owned())
    }

    pub(crate) fn timeout() -> Self {
        Self::Failed(TIMEOUT.to_owned())
    }
}

/// Answer counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub answered: u64,
    pub confirmed: u64,
    pub pending: u64,
    pub sold_out: u64,
    pub errors: u64,
    pub late: u64,
    /// Requests whose latency is only a lower bound: client timeouts and, once the run is merged,
    /// requests due but never sent.
    pub censored: u64,
}

impl Counts {
    fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.confirmed += other.confirmed;
        self.pending += other.pending;
        self.sold_out += other.sold_out;
        self.errors += other.errors;
        self.late += other.late;
        self.censored += other.censored;
    }
}

/// The sold-out answers for one product.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    pub answers: u64,
    /// The fewest units a refused buyer asked for: with fewer left, the refusal was right.
    pub smallest: u32,
}

impl Refused {
    /// `answers` more refusals, each asking for at least `units`.
    pub fn add(&mut self, answers: u64, units: u32) {
        if answers == 0 {
            return;
        }
        self.smallest = if self.answers == 0 { units } else { self.smallest.min(units) };
        self.answers += answers;
    }

    /// Units that were `left` on the shelf while a refused buyer could have taken them: whole
    /// purchases of the smallest refused size, no more than the refused buyers asked for.
    pub fn undersold(self, left: i64) -> i64 {
        let size = i64::from(self.smallest.max(1));
        if self.answers == 0 || left < size {
            return 0;
        }
        let asked = i64::try_from(self.answers).unwrap_or(i64::MAX).saturating_mul(size);
        (left - left % size).min(asked)
    }
}

/// One 100 ms window of the timeline: what was sent in it and what came back in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub sent: u64,
    pub confirmed: u64,
    pub pending: u64,
    pub sold_out: u64,
    pub errors: u64,
    /// Units of the hot product acknowledged in this window.
    pub hot_units: i64,
}

impl Window {
    fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.confirmed += other.confirmed;
        self.pending += other.pending;
        self.sold_out += other.sold_out;
        self.errors += other.errors;
        self.hot_units += other.hot_units;
    }
}

/// What the run shares between its workers while it goes: live counters for the progress line,
/// and the moment the hot product sold out, which decides when the run stops.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) start: Instant,
    hot_product: i64,
    hot_stock: i64,
    grace: Duration,
    end: Instant,
    pub(crate) sent: AtomicU64,
    pub(crate) confirmed: AtomicU64,
    pub(crate) pending: AtomicU64,
    pub(crate) sold_out: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) hot_units: AtomicI64,
    /// Microseconds from the start; `u64::MAX` until it happens.
    sold_out_at: AtomicU64,
    first_hot_sold_out_at: AtomicU64,
    stop_at: AtomicU64,
    /// Answers that missed the run's objective ([`super::GiveUp`]), and when the run gave up.
    missed: AtomicU64,
    gave_up_at: AtomicU64,
    /// Wakes whoever waits for the deadline when it moves earlier.
    deadline_moved: tokio::sync::Notify,
}

const NEVER: u64 = u64::MAX;

impl Live {
    pub(crate) fn new(
        start: Instant,
        duration: Duration,
        hot_product: i64,
        hot_stock: i64,
        grace: Duration,
    ) -> Self {
        Self {
            start,
            hot_product,
            hot_stock,
            grace,
            end: start + duration,
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            sold_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            hot_units: AtomicI64::new(0),
            sold_out_at: AtomicU64::new(NEVER),
            first_hot_sold_out_at: AtomicU64::new(NEVER),
            stop_at: AtomicU64::new(NEVER),
            missed: AtomicU64::new(0),
            gave_up_at: AtomicU64::new(NEVER),
            deadline_moved: tokio::sync::Notify::new(),
        }
    }

    fn micros_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_micros()).unwrap_or(NEVER - 1)
    }

    /// When no request may be sent any more: the end of the run, or the grace after the sell-out.
    pub(crate) fn deadline(&self) -> Instant {
        match self.stop_at.load(Ordering::Relaxed) {
            NEVER => self.end,
            micros => self.end.min(self.start + Duration::from_micros(micros)),
        }
    }

    /// The hot product is gone (its stock acknowledged, or a sold-out answer for it): stop after
    /// the grace period.
    fn sold_out(&self, at: Instant) {
        let stop = self.micros_since_start(at + self.grace);
        if self.stop_at.fetch_min(stop, Ordering::Relaxed) > stop {
            self.deadline_moved.notify_waiters();
        }
    }

    /// One more answer missed the objective; past `limit` the run has failed and stops sending now.
    pub(crate) fn missed(&self, at: Instant, limit: u64) {
        if self.missed.fetch_add(1, Ordering::Relaxed) + 1 > limit {
            let now = self.micros_since_start(at);
            self.gave_up_at.fetch_min(now, Ordering::Relaxed);
            if self.stop_at.fetch_min(now, Ordering::Relaxed) > now {
                self.deadline_moved.notify_waiters();
            }
        }
    }

    pub(crate) fn gave_up(&self) -> Option<Duration> {
        Some(self.gave_up_at.load(Ordering::Relaxed)).filter(|at| *at != NEVER).map(Duration::from_micros)
    }

    /// Resolves once the deadline has passed, following it when the sell-out moves it earlier, so
    /// a user thinking or waiting to start never outlives the run.
    pub(crate) async fn stopped(&self) {
        loop {
            // Registered before the deadline is read, so a move in between is not missed.
            let moved = self.deadline_moved.notified();
            tokio::select! {
                () = tokio::time::sleep_until(self.deadline().into()) => return,
                () = moved => {}
            }
        }
    }

    pub(crate) fn time_to_sell_out(&self) -> Option<Duration> {
        Some(self.sold_out_at.load(Ordering::Relaxed)).filter(|at| *at != NEVER).map(Duration::from_micros)
    }

    pub(crate) fn first_hot_sold_out(&self) -> Option<Duration> {
        Some(self.first_hot_sold_out_at.load(Ordering::Relaxed))
            .filter(|at| *at != NEVER)
            .map(Duration::from_micros)
    }

    pub(crate) fn hot_stock(&self) -> i64 {
        self.hot_stock
    }
}

/// A worker's share of the recording. Workers share a few of these behind mutexes: recording takes
/// well under a microsecond, and one per worker would cost megabytes of histograms.
#[derive(Debug)]
pub(crate) struct Recorder {
    counts: Counts,
    success: Histogram<u64>,
    sold_out: Histogram<u64>,
    failed: Histogram<u64>,
    censored: Histogram<u64>,
    dispatch: Histogram<u64>,
    service: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    acks: Vec<Ack>,
    in_doubt: Vec<Uuid>,
    sold_out_by_product: HashMap<i64, Refused>,
    windows: Vec<Window>,
    max_lag: Duration,
    last_answer: Option<Instant>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            counts: Counts::default(),
            success: latency_histogram(),
            sold_out: latency_histogram(),
            failed: latency_histogram(),
            censored: latency_histogram(),
            dispatch: latency_histogram(),
            service: latency_histogram(),
            errors: BTreeMap::new(),
            acks: Vec::new(),
            in_doubt: Vec::new(),
            sold_out_by_product: HashMap::new(),
            windows: Vec::new(),
            max_lag: Duration::ZERO,
            last_answer: None,
        }
    }
}

impl Recorder {
    fn window(&mut self, live: &Live, at: Instant) -> &mut Window {
        let index =
            usize::try_from(at.saturating_duration_since(live.start).as_millis() / WINDOW.as_millis())
                .unwrap_or(usize::MAX - 1);
        if self.windows.len() <= index {
            self.windows.resize(index + 1, Window::default());
        }
        &mut self.windows[index]
    }

    /// A request went out `lag` after its intended time.
    pub(crate) fn sent(&mut self, live: &Live, at: Instant, lag: Duration) {
        self.counts.sent += 1;
        if lag > super::schedule::LATE_AFTER {
            self.counts.late += 1;
        }
        self.max_lag = self.max_lag.max(lag);
        self.dispatch.saturating_record(micros(lag));
        self.window(live, at).sent += 1;
        live.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// An answer (or its absence) to a purchase of `units` of `product`, `latency` after it was due.
    pub(crate) fn answered(
        &mut self,
        live: &Live,
        at: Instant,
        latency: Duration,
        product: i64,
        units: u32,
        answer: Answer,
    ) {
        let micros = micros(latency);
        let hot = product == live.hot_product;
        self.last_answer = self.last_answer.max(Some(at));
        match answer {
            Answer::Acked(status, order_id) => {
                self.counts.answered += 1;
                self.success.saturating_record(micros);
                self.acks.push(Ack { order_id, product_id: product, units, status });
                let window = self.window(live, at);
                match status {
                    AckStatus::Confirmed => window.confirmed += 1,
                    AckStatus::Pending => window.pending += 1,
                }
                if hot {
                    window.hot_units += i64::from(units);
                }
                match status {
                    AckStatus::Confirmed => {
                        self.counts.confirmed += 1;
                        live.confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                    AckStatus::Pending => {
                        self.counts.pending += 1;
                        live.pending.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if hot {
                    let before = live.hot_units.fetch_add(i64::from(units), Ordering::Relaxed);
                    if before < live.hot_stock && before + i64::from(units) >= live.hot_stock {
                        live.sold_out_at.fetch_min(live.micros_since_start(at), Ordering::Relaxed);
                        live.sold_out(at);
                    }
                }
            }
            Answer::SoldOut => {
                self.counts.answered += 1;
                self.counts.sold_out += 1;
                self.sold_out.saturating_record(micros);
                self.sold_out_by_product.entry(product).or_default().add(1, units);
                self.window(live, at).sold_out += 1;
                live.sold_out.fetch_add(1, Ordering::Relaxed);
                if hot {
                    live.first_hot_sold_out_at.fetch_min(live.micros_since_start(at), Ordering::Relaxed);
                    live.sold_out(at);
                }
            }
            Answer::InDoubt(kind, order_id) => {
                self.in_doubt.push(order_id);
                self.failed(live, at, micros, kind);
            }
            Answer::Failed(kind) => self.failed(live, at, micros, kind),
        }
    }

    /// A request went out and its answer (or the client's giving up) came `took` later.
    pub(crate) fn served(&mut self, took: Duration) {
        self.service.saturating_record(micros(took));
    }

    fn failed(&mut self, live: &Live, at: Instant, micros: u64, kind: String) {
        if kind == TIMEOUT {
            // The answer would have come later still: the latency is a lower bound.
            self.counts.censored += 1;
            self.censored.saturating_record(micros);
        } else {
            self.failed.saturating_record(micros);
        }
        if kind.starts_with("http_") {
            self.counts.answered += 1;
        }
        self.counts.errors += 1;
        *self.errors.entry(kind).or_default() += 1;
        self.window(live, at).errors += 1;
        live.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything one run of one strategy recorded.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// When the run started: request 0's intended send time.
    pub started: Instant,
    pub counts: Counts,
    /// Open model: requests whose time had come when the run stopped and that never went out.
    pub unsent: u64,
    /// From the start to the last answer (or the end of the run, without one).
    pub duration: Duration,
    /// Success-path (201/202) latency, microseconds.
    pub success: Histogram<u64>,
    /// Sold-out (409) latency, microseconds.
    pub sold_out_latency: Histogram<u64>,
    /// Latency of error answers and broken connections (client timeouts excluded), microseconds.
    pub failed_latency: Histogram<u64>,
    /// Lower bounds, microseconds: client timeouts at the time the client gave up, requests never
    /// sent at the end of the run, both from their intended send time.
    pub censored_latency: Histogram<u64>,
    /// From the intended to the actual send time, microseconds, one per request sent.
    pub dispatch: Histogram<u64>,
    /// From the actual send time to the answer (or the client's giving up), microseconds: the
    /// latency a load generator without the correction for coordinated omission reports.
    pub service_latency: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    pub acks: Vec<Ack>,
    /// Order ids named by 503 answers that may still complete.
    pub in_doubt: Vec<Uuid>,
    /// Sold-out answers by product.
    pub sold_out_by_product: HashMap<i64, Refused>,
    pub windows: Vec<Window>,
    pub hot_stock: i64,
    pub time_to_sell_out: Option<Duration>,
    pub first_hot_sold_out: Option<Duration>,
    /// The latest a request went out after its intended time.
    pub max_lag: Duration,
    /// When the run stopped sending because it had certainly missed its objective
    /// ([`super::GiveUp`]); the requests due after that count as unsent.
    pub gave_up: Option<Duration>,
}

impl RunRecord {
    /// Sums the recorders' shares; `ended` is when the run ended, the duration without answers.
    /// `never_sent` holds, for each request due but never sent, how long it had waited when the
    /// run ended: each is a censored latency.
    pub(crate) fn merge(
        recorders: Vec<Recorder>,
        live: &Live,
        never_sent: &[Duration],
        ended: Duration,
    ) -> Self {
        let last_answer = recorders.iter().filter_map(|recorder| recorder.last_answer).max();
        let duration = last_answer.map_or(ended, |at| at.saturating_duration_since(live.start));
        let mut record = Self {
            started: live.start,
            counts: Counts::default(),
            unsent: never_sent.len() as u64,
            duration,
            success: latency_histogram(),
            sold_out_latency: latency_histogram(),
            failed_latency: latency_histogram(),
            censored_latency: latency_histogram(),
            dispatch: latency_histogram(),
            service_latency: latency_histogram(),
            errors: BTreeMap::new(),
            acks: Vec::new(),
            in_doubt: Vec::new(),
            sold_out_by_product: HashMap::new(),
            windows: Vec::new(),
            hot_stock: live.hot_stock(),
            time_to_sell_out: live.time_to_sell_out(),
            first_hot_sold_out: live.first_hot_sold_out(),
            max_lag: Duration::ZERO,
            gave_up: live.gave_up(),
        };
        for recorder in recorders {
            record.counts.add(&recorder.counts);
            // Same bounds on both sides: adding cannot fail.
            let _ = record.success.add(&recorder.success);
            let _ = record.sold_out_latency.add(&recorder.sold_out);
            let _ = record.failed_latency.add(&recorder.failed);
            let _ = record.censored_latency.add(&recorder.censored);
            let _ = record.dispatch.add(&recorder.dispatch);
            let _ = record.service_latency.add(&recorder.service);
            for (kind, count) in recorder.errors {
                *record.errors.entry(kind).or_default() += count;
            }
            record.acks.extend(recorder.acks);
            record.in_doubt.extend(recorder.in_doubt);
            for (product, refused) in recorder.sold_out_by_product {
                let total = record.sold_out_by_product.entry(product).or_default();
                total.add(refused.answers, refused.smallest);
            }
            if record.windows.len() < recorder.windows.len() {
                record.windows.resize(recorder.windows.len(), Window::default());
            }
            for (total, window) in record.windows.iter_mut().zip(&recorder.windows) {
                total.add(window);
            }
            record.max_lag = record.max_lag.max(recorder.max_lag);
        }
        for waited in never_sent {
            record.censored_latency.saturating_record(micros(*waited));
        }
        record.counts.censored += record.unsent;
        record
    }

    /// Every due request's latency from its intended send time: answered, failed, timed out and
    /// never sent alike (the last two at their lower bound), so nothing due is left out.
    pub fn due_latency(&self) -> Histogram<u64> {
        let mut all = self.success.clone();
        for part in [&self.sold_out_latency, &self.failed_latency, &self.censored_latency] {
            // Same bounds on both sides: adding cannot fail.
            let _ = all.add(part);
        }
        all
    }

    /// Answers per second over the run.
    pub fn achieved_rps(&self) -> f64 {
        per_second(self.counts.answered, self.duration)
    }

    /// Units of the hot product acknowledged.
    pub fn hot_units(&self) -> i64 {
        self.windows.iter().map(|window| window.hot_units).sum()
    }

    /// Acknowledged hot units per second until the sell-out, or over the whole run without one.
    pub fn sales_per_sec(&self) -> f64 {
        let span = self.time_to_sell_out.unwrap_or(self.duration);
        let units = if self.time_to_sell_out.is_some() { self.hot_stock } else { self.hot_units() };
        per_second(u64::try_from(units).unwrap_or(0), span)
    }

    /// The hot product's stock minus what was acknowledged by the end of each window.
    pub fn units_left(&self) -> Vec<i64> {
        let mut left = self.hot_stock;
        self.windows
            .iter()
            .map(|window| {
                left -= window.hot_units;
                left
            })
            .collect()
    }
}

fn per_second(count: u64, span: Duration) -> f64 {
    if span.is_zero() { 0.0 } else { count as f64 / span.as_secs_f64() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer::of(StatusCode::from_u16(status).unwrap(), &Bytes::from(body.to_owned()))
    }

    #[test]
    fn answers_are_read_as_the_contract_defines_them() {
        let id = Uuid::new_v4();
        assert_eq!(
            answer(201, &format!(r#"{{"order_id":"{id}"}}"#)),
            Answer::Acked(AckStatus::Confirmed, id)
        );
        assert_eq!(answer(202, &format!(r#"{{"order_id":"{id}"}}"#)), Answer::Acked(AckStatus::Pending, id));
        assert_eq!(answer(409, r#"{"error":"sold_out","product_id":100}"#), Answer::SoldOut);
        assert_eq!(
            answer(409, r#"{"error":"contention","product_id":100}"#),
            Answer::Failed("http_409_contention".into()),
            "a buyer refused for contention was not told the product is sold out"
        );
        assert_eq!(
            answer(503, r#"{"error":"backend_unavailable"}"#),
            Answer::Failed("http_503_backend_unavailable".into())
        );
        assert_eq!(
            answer(503, &format!(r#"{{"error":"outcome_unknown","order_id":"{id}"}}"#)),
            Answer::InDoubt("http_503_outcome_unknown".into(), id),
            "a 503 naming its order may still complete"
        );
        assert_eq!(answer(502, "<html>"), Answer::Failed("http_502_unknown".into()));
        assert_eq!(answer(201, "{}"), Answer::Failed("http_201_unknown".into()), "a 201 without an order id");
    }

    #[test]
    fn the_sell_out_stops_the_run_after_the_grace_and_is_timed() {
        let start = Instant::now();
        let live = Live::new(start, Duration::from_secs(60), 100, 3, Duration::from_millis(500));
        let mut recorder = Recorder::default();
        assert_eq!(live.deadline(), start + Duration::from_secs(60));
        for i in 0..3u64 {
            let at = start + Duration::from_millis(100 * (i + 1));
            recorder.sent(&live, at, Duration::ZERO);
            recorder.answered(
                &live,
                at,
                Duration::from_millis(5),
                100,
                1,
                Answer::Acked(AckStatus::Confirmed, Uuid::new_v4()),
            );
        }
        assert_eq!(live.time_to_sell_out(), Some(Duration::from_millis(300)));
        assert_eq!(live.deadline(), start + Duration::from_millis(800));
        recorder.answered(
            &live,
            start + Duration::from_millis(350),
            Duration::from_millis(2),
            100,
            1,
            Answer::SoldOut,
        );
        assert_eq!(live.first_hot_sold_out(), Some(Duration::from_millis(350)));
        assert_eq!(live.deadline(), start + Duration::from_millis(800), "the earliest stop wins");
        let record = RunRecord::merge(vec![recorder], &live, &[], Duration::from_millis(400));
        assert_eq!(record.units_left(), vec![3, 2, 1, 0]);
        assert_eq!(record.counts.confirmed, 3);
        assert_eq!(record.counts.sold_out, 1);
        assert!((record.sales_per_sec() - 10.0).abs() < 1e-9, "3 units in 300 ms");
    }

    #[test]
    fn regular_products_never_stop_the_run() {
        let start = Instant::now();
        let live = Live::new(start, Duration::from_secs(5), 100, 1, Duration::ZERO);
        let mut recorder = Recorder::default();
        recorder.answered(&live, start, Duration::from_millis(1), 7, 1, Answer::SoldOut);
        recorder.answered(
            &live,
            start,
            Duration::from_millis(1),
            7,
            1,
            Answer::Acked(AckStatus::Confirmed, Uuid::new_v4()),
        );
        assert_eq!(live.deadline(), start + Duration::from_secs(5));
        assert_eq!(live.time_to_sell_out(), None);
    }

    #[test]
    fn merging_sums_every_share() {
        let start = Instant::now();
        let live = Live::new(start, Duration::from_secs(5), 100, 10, Duration::ZERO);
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        a.sent(&live, start, Duration::from_millis(20));
        b.sent(&live, start + Duration::from_millis(150), Duration::ZERO);
        a.answered(
            &live,
            start,
            Duration::from_millis(3),
            100,
            2,
            Answer::Acked(AckStatus::Pending, Uuid::new_v4()),
        );
        b.answered(
            &live,
            start + Duration::from_millis(150),
            Duration::from_millis(9),
            5,
            1,
            Answer::timeout(),
        );
        let never_sent = [Duration::from_millis(700); 4];
        let record = RunRecord::merge(vec![a, b], &live, &never_sent, Duration::from_secs(1));
        assert_eq!(record.counts.sent, 2);
        assert_eq!(record.counts.late, 1, "20 ms behind the timetable is late");
        assert_eq!(record.counts.answered, 1, "a timeout is not an answer");
        assert_eq!(record.counts.errors, 1);
        assert_eq!(record.errors.get("timeout"), Some(&1));
        assert_eq!(record.windows.len(), 2);
        assert_eq!(record.units_left(), vec![8, 8]);
        assert_eq!(record.unsent, 4);
        assert_eq!(record.max_lag, Duration::from_millis(20));
        assert_eq!(record.counts.censored, 5, "the timeout and the four requests never sent");
        assert_eq!(record.censored_latency.len(), 5);
        assert_eq!(record.dispatch.len(), 2, "one dispatch delay per request sent");
        let due = record.due_latency();
        assert_eq!(due.len(), 6, "every due request has a latency: one answer, one timeout, four unsent");
        assert!(
            due.value_at_percentile(50.0) >= 690_000,
            "the unsent requests' 700 ms wait counts: p50 {} µs",
            due.value_at_percentile(50.0)
        );
    }
}
