//! The load generator: drives one strategy through the flash sale over real HTTP and records what
//! every client was told.
//!
//! - [`schedule`]: when requests are due (open model: a timetable; closed model: users who think).
//! - [`scenario`]: who buys what (hunters and regular customers).
//! - [`client`]: one hyper connection per worker, keep-alive, nothing in between.
//! - [`record`]: answers, latency histograms, the timeline and the acknowledged orders.
//!
//! Latency in the open model counts from each request's *intended* send time, so a server that
//! stalls is charged for every request it held back (coordinated omission, as wrk2 and oha correct
//! it). Every due request gets a latency: requests sent late count their wait, and requests never
//! sent before the run ended count as *censored* at (end − intended send), a lower bound, beside
//! client timeouts (see [`record`]).

pub mod client;
pub mod record;
pub mod scenario;
pub mod schedule;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

pub use client::{Connection, Target, Transport};

pub use record::{Ack, AckStatus, Counts, Refused, RunRecord, Window};
use record::{Answer, Live, Recorder};
pub use scenario::Scenario;
use schedule::{Pace, Timetable};

/// How arrivals are modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// A constant arrival rate, whatever the server does.
    Open,
    /// A fixed number of users, each waiting for its answer, then thinking.
    Closed,
}

impl Model {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// Everything one run needs, defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadPlan {
    pub model: Model,
    /// Open model: requests per second.
    pub rate: f64,
    /// Keep-alive connections (open model: one worker each; closed model: shared by the users).
    pub connections: usize,
    /// Closed model: users.
    pub users: usize,
    /// Closed model: requests per second per user (Locust's `constant_throughput`); 0 = no wait.
    pub user_rate: f64,
    /// Closed model: users start spread over this long.
    #[serde(rename = "ramp_ms", serialize_with = "millis")]
    pub ramp: Duration,
    pub scenario: Scenario,
    /// The run stops after this long at the latest.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// The run stops after this many requests at the latest.
    pub max_requests: Option<u64>,
    /// After the hot product sold out, the run goes on this long (sold-out answers are part of the
    /// picture), then stops.
    #[serde(rename = "grace_ms", serialize_with = "millis")]
    pub grace: Duration,
    /// A request without an answer after this long counts as a `timeout` error.
    #[serde(rename = "timeout_ms", serialize_with = "millis")]
    pub timeout: Duration,
    /// Stop sending once the run has certainly missed this objective (capacity probes); `None`:
    /// run to the end whatever the answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub give_up: Option<GiveUp>,
}

/// When a run has failed whatever its remaining requests do: more answers slower than `slo` (or
/// not a sale) than `misses`. A probe of N requests judged on its p99 fails once more than N/100
/// of them missed, so sending the rest only costs time (and, for a queueing strategy, a longer
/// drain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GiveUp {
    #[serde(rename = "slo_ms", serialize_with = "millis")]
    pub slo: Duration,
    pub misses: u64,
}

/// Durations in `run.json` are milliseconds, as the flags that set them.
fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u128(duration.as_millis())
}

impl LoadPlan {
    /// Requests per second the model asks for.
    pub fn offered_rps(&self) -> f64 {
        match self.model {
            Model::Open => self.rate,
            Model::Closed if self.user_rate > 0.0 => self.users as f64 * self.user_rate,
            // Without think time, the closed model offers whatever the server answers.
            Model::Closed => 0.0,
        }
    }

    /// # Errors
    /// When a number makes no run: no rate, no connection, no user, no time.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.scenario.validate()?;
        anyhow::ensure!(self.connections >= 1, "--connections must be at least 1");
        anyhow::ensure!(!self.duration.is_zero(), "--duration-secs must be above 0");
        anyhow::ensure!(!self.timeout.is_zero(), "--timeout-ms must be above 0");
        anyhow::ensure!(self.max_requests != Some(0), "--requests must be at least 1");
        match self.model {
            Model::Open => anyhow::ensure!(
                self.rate.is_finite() && self.rate > 0.0,
                "--rate must be a positive number of requests per second"
            ),
            Model::Closed => {
                anyhow::ensure!(self.users >= 1, "--users must be at least 1");
                anyhow::ensure!(
                    self.user_rate.is_finite() && self.user_rate >= 0.0,
                    "--user-rate must be 0 or more requests per second per user"
                );
            }
        }
        Ok(())
    }
}

/// Recorders shared by the workers (see [`Recorder`]).
const RECORDER_SHARDS: usize = 16;

struct Shared {
    /// Every replica of the server: connection `i` goes to `targets[i % len]`.
    targets: Vec<Target>,
    path: String,
    plan: LoadPlan,
    live: Live,
    next_ticket: AtomicU64,
    /// Open model: tickets a worker took but gave up on because the run stopped while it waited.
    abandoned: Mutex<Vec<u64>>,
    recorders: Vec<Mutex<Recorder>>,
}

impl Shared {
    fn recorder(&self, worker: usize) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorders[worker % self.recorders.len()].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one purchase on `connection` (opening it first when needed) and records the answer.
    async fn purchase(
        &self,
        worker: usize,
        connection: &mut Option<Connection>,
        buyer: scenario::Purchase,
        due: Instant,
    ) {
        let sent_at = Instant::now();
        self.recorder(worker).sent(&self.live, sent_at, sent_at.saturating_duration_since(due));
        let exchange = async {
            let target = &self.targets[worker % self.targets.len()];
            if connection.is_none() {
                *connection = Some(Connection::open(target).await?);
            }
            match connection.as_mut() {
                Some(open) => open.send(target.post(&self.path, buyer.body)).await,
                None => Err(client::Transport::Connect),
            }
        };
        let answer = match tokio::time::timeout(self.plan.timeout, exchange).await {
            Ok(Ok((status, body))) => Answer::of(status, &body),
            Ok(Err(failure)) => {
                // A broken connection is not reused; the next request opens a new one.
                *connection = None;
                Answer::transport(failure)
            }
            Err(_) => {
                *connection = None;
                Answer::timeout()
            }
        };
        let done = Instant::now();
        let latency = done.saturating_duration_since(due);
        if let Some(rule) = self.plan.give_up
            && (latency.as_micros() > rule.slo.as_micros() || !matches!(answer, Answer::Acked(..)))
        {
            self.live.missed(done, rule.misses);
        }
        let mut recorder = self.recorder(worker);
        recorder.served(done.saturating_duration_since(sent_at));
        recorder.answered(&self.live, done, latency, buyer.product, self.plan.scenario.quantity, answer);
    }
}

/// Runs `plan` against `strategy` on `target` and returns what it recorded. `label` starts the
/// progress line.
///
/// # Errors
/// When the plan is invalid.
pub async fn run(plan: &LoadPlan, target: &Target, strategy: &str, label: &str) -> anyhow::Result<RunRecord> {
    run_spread(plan, std::slice::from_ref(target), strategy, label).await
}

/// [`run`] against several replicas of the server at once: connection `i` (open model: worker
/// `i`; closed model: the connection user `i` opens) goes to `targets[i % len]`, so the load
/// splits evenly.
///
/// # Errors
/// When the plan is invalid or no target is given.
pub async fn run_spread(
    plan: &LoadPlan,
    targets: &[Target],
    strategy: &str,
    label: &str,
) -> anyhow::Result<RunRecord> {
    plan.validate()?;
    anyhow::ensure!(!targets.is_empty(), "no server to send the load to");
    let mut warm = warm_connections(targets, plan.connections, plan.timeout).await.into_iter();
    let start = Instant::now();
    let live =
        Live::new(start, plan.duration, plan.scenario.hot_product, plan.scenario.hot_stock, plan.grace);
    let shared = Arc::new(Shared {
        targets: targets.to_vec(),
        path: format!("/strategies/{strategy}/purchase"),
        plan: plan.clone(),
        live,
        next_ticket: AtomicU64::new(0),
        abandoned: Mutex::default(),
        recorders: (0..RECORDER_SHARDS.min(plan.connections.max(plan.users)))
            .map(|_| Mutex::default())
            .collect(),
    });
    let progress = tokio::spawn(progress(Arc::clone(&shared), label.to_owned()));
    let workers: Vec<_> = match plan.model {
        Model::Open => (0..plan.connections)
            .map(|worker| tokio::spawn(open_worker(Arc::clone(&shared), worker, warm.next().flatten())))
            .collect(),
        Model::Closed => {
            let pool = Arc::new(Pool::new(plan.connections));
            pool.idle.lock().unwrap_or_else(PoisonError::into_inner).extend(warm.flatten());
            (0..plan.users)
                .map(|user| tokio::spawn(closed_user(Arc::clone(&shared), Arc::clone(&pool), user)))
                .collect()
        }
    };
    for worker in workers {
        // A worker that panicked recorded what it had; the others' records still count.
        if let Err(err) = worker.await {
            tracing::error!(%err, "load worker failed");
        }
    }
    progress.abort();
    // The progress task holds the shared state until it has really stopped.
    let _ = progress.await;
    let finished = Instant::now();
    let never_sent = match plan.model {
        Model::Open => never_sent(&shared, start, finished),
        Model::Closed => Vec::new(),
    };
    let shared = Arc::into_inner(shared).ok_or_else(|| anyhow::anyhow!("a load worker outlived the run"))?;
    let recorders = shared
        .recorders
        .into_iter()
        .map(|r| r.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect();
    let record =
        RunRecord::merge(recorders, &shared.live, &never_sent, finished.saturating_duration_since(start));
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    Ok(record)
}

/// Open model: how long each request due before the run stopped sending, but never sent, had
/// waited when the run `finished`. Tickets are taken in order, so the unsent ones are those never
/// taken and those a worker took and gave up on.
fn never_sent(shared: &Shared, start: Instant, finished: Instant) -> Vec<Duration> {
    let plan = &shared.plan;
    let table = Timetable::new(plan.rate);
    let stopped = shared.live.deadline().min(finished);
    let mut due = table.due_within(stopped.saturating_duration_since(start));
    if let Some(max) = plan.max_requests {
        due = due.min(max);
    }
    let taken = shared.next_ticket.load(Ordering::Relaxed);
    let abandoned = shared.abandoned.lock().unwrap_or_else(PoisonError::into_inner);
    let waited = |ticket: u64| finished.saturating_duration_since(start + table.due(ticket));
    abandoned.iter().copied().filter(|ticket| *ticket < due).chain(taken.min(due)..due).map(waited).collect()
}

/// Connects opened before the clock starts, in bounded waves. A connect is not a purchase, and
/// hundreds of them at the first due instant overflow the server's accept queue: a dropped SYN is
/// retried after a second, which would charge connection setup to the first requests as timeouts.
/// A connection that cannot be opened here (within the request timeout) is `None`, opened again at
/// its first request. Connection `i` goes to `targets[i % len]`.
async fn warm_connections(targets: &[Target], count: usize, limit: Duration) -> Vec<Option<Connection>> {
    const WAVE: usize = 32;
    let mut warm = Vec::with_capacity(count);
    while warm.len() < count {
        let first = warm.len();
        let wave: Vec<_> = (first..first + WAVE.min(count - first))
            .map(|i| {
                let target = targets[i % targets.len()].clone();
                tokio::spawn(async move {
                    tokio::time::timeout(limit, Connection::open(&target)).await.ok()?.ok()
                })
            })
            .collect();
        for open in wave {
            warm.push(open.await.ok().flatten());
        }
    }
    warm
}

/// Open model: takes the next ticket off the shared timetable, waits for its time, sends.
async fn open_worker(shared: Arc<Shared>, worker: usize, connection: Option<Connection>) {
    let table = Timetable::new(shared.plan.rate);
    let mut buyers = scenario::Buyers::new(&shared.plan.scenario, worker as u64);
    let mut connection = connection;
    loop {
        let ticket = shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        if shared.plan.max_requests.is_some_and(|max| ticket >= max) {
            break;
        }
        let due = shared.live.start + table.due(ticket);
        if due >= shared.live.deadline() {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        // The sell-out may have moved the deadline while this worker slept.
        if Instant::now() >= shared.live.deadline() {
            shared.abandoned.lock().unwrap_or_else(PoisonError::into_inner).push(ticket);
            break;
        }
        shared.purchase(worker, &mut connection, buyers.next(), due).await;
    }
}

/// Connections shared by closed-model users: a user takes one, sends, gives it back.
#[derive(Debug)]
struct Pool {
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    fn new(size: usize) -> Self {
        Self { permits: Semaphore::new(size), idle: Mutex::new(Vec::with_capacity(size)) }
    }

    fn take(&self) -> Option<Connection> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    fn give_back(&self, connection: Option<Connection>) {
        if let Some(connection) = connection {
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(connection);
        }
    }
}

/// Closed model: one user: buy, wait for the answer, think, again, until the run stops.
async fn closed_user(shared: Arc<Shared>, pool: Arc<Pool>, user: usize) {
    let pace = Pace::new(shared.plan.user_rate);
    let mut buyers = scenario::Buyers::new(&shared.plan.scenario, user as u64);
    let offset = schedule::ramp_offset(user, shared.plan.users, shared.plan.ramp);
    tokio::select! {
        () = tokio::time::sleep_until((shared.live.start + offset).into()) => {},
        () = shared.live.stopped() => return,
    }
    loop {
        if Instant::now() >= shared.live.deadline() {
            break;
        }
        // A ticket per request, so `--requests` is exact however many users race for the last one.
        let ticket = shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        if shared.plan.max_requests.is_some_and(|max| ticket >= max) {
            break;
        }
        let began = Instant::now();
        let permit = tokio::select! {
            permit = pool.permits.acquire() => permit,
            () = shared.live.stopped() => break,
        };
        let Ok(_permit) = permit else { break };
        let mut connection = pool.take();
        // Closed-model latency counts from the moment the request goes out: a user who waits does
        // not send.
        shared.purchase(user, &mut connection, buyers.next(), Instant::now()).await;
        pool.give_back(connection);
        drop(_permit);
        let wait = pace.wait_after(began.elapsed());
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {},
                () = shared.live.stopped() => break,
            }
        }
    }
}

/// Prints one progress line a second (rewritten in place on a terminal).
async fn progress(shared: Arc<Shared>, label: String) {
    let terminal = std::io::stderr().is_terminal();
    let mut last_sent = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let live = &shared.live;
        let sent = live.sent.load(Ordering::Relaxed);
        let line = format!(
            "{label} {:>5.1}s  sent {sent}  confirmed {}  pending {}  sold out {}  errors {}  {} req/s  units left {}",
            live.start.elapsed().as_secs_f64(),
            live.confirmed.load(Ordering::Relaxed),
            live.pending.load(Ordering::Relaxed),
            live.sold_out.load(Ordering::Relaxed),
            live.errors.load(Ordering::Relaxed),
            sent - last_sent,
            live.hot_stock() - live.hot_units.load(Ordering::Relaxed),
        );
        last_sent = sent;
        if terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::post;

    use super::*;

    /// A server that takes `delay` per request and answers 201 with a fresh order.
    async fn slow_server(delay: Duration) -> Target {
        let app = Router::new().route(
            "/strategies/{name}/purchase",
            post(move || async move {
                tokio::time::sleep(delay).await;
                (
                    axum::http::StatusCode::CREATED,
                    axum::Json(
                        serde_json::json!({ "order_id": uuid::Uuid::new_v4(), "status": "confirmed" }),
                    ),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Target::resolve(&format!("http://{addr}")).await.unwrap()
    }

    /// A server that answers at once, except that it stalls: every request arriving from
    /// `stall_from` after its first request until `stall` later waits for the stall to end.
    async fn stalling_server(stall_from: Duration, stall: Duration) -> Target {
        let first = Arc::new(std::sync::OnceLock::<Instant>::new());
        let app = Router::new().route(
            "/strategies/{name}/purchase",
            post(move || {
                let first = Arc::clone(&first);
                async move {
                    let first = *first.get_or_init(Instant::now);
                    let since = first.elapsed();
                    if since >= stall_from && since < stall_from + stall {
                        tokio::time::sleep_until((first + stall_from + stall).into()).await;
                    }
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(serde_json::json!({ "order_id": uuid::Uuid::new_v4() })),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Target::resolve(&format!("http://{addr}")).await.unwrap()
    }

    /// A server that counts the purchases it answers.
    async fn counting_server() -> (Target, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&count);
        let app = Router::new().route(
            "/strategies/{name}/purchase",
            post(move || {
                let counted = Arc::clone(&counted);
                async move {
                    counted.fetch_add(1, Ordering::Relaxed);
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(serde_json::json!({ "order_id": uuid::Uuid::new_v4() })),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (Target::resolve(&format!("http://{addr}")).await.unwrap(), count)
    }

    /// A server that counts the purchases it answers by product, answering regular customers
    /// (any product but `hot`) after `regular_delay` and hunters at once.
    async fn product_counting_server(hot: i64, regular_delay: Duration) -> (Target, Arc<Mutex<(u64, u64)>>) {
        let counts = Arc::new(Mutex::new((0_u64, 0_u64)));
        let counted = Arc::clone(&counts);
        let app = Router::new().route(
            "/strategies/{name}/purchase",
            post(move |body: axum::body::Bytes| {
                let counted = Arc::clone(&counted);
                async move {
                    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let product = body["items"][0]["product_id"].as_i64().unwrap();
                    if product == hot {
                        counted.lock().unwrap().0 += 1;
                    } else {
                        counted.lock().unwrap().1 += 1;
                        tokio::time::sleep(regular_delay).await;
                    }
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(serde_json::json!({ "order_id": uuid::Uuid::new_v4() })),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (Target::resolve(&format!("http://{addr}")).await.unwrap(), counts)
    }

    /// `--regular-weight 30` beside hunters' 100 sends about 30 regular customers in 130, however
    /// the requests spread over the workers of an open plan and however long each answer takes.
    #[tokio::test]
    async fn an_open_plan_mixes_buyers_by_their_weights() {
        let (target, counts) = product_counting_server(100, Duration::from_millis(20)).await;
        let plan = LoadPlan {
            rate: 2_000.0,
            connections: 64,
            max_requests: Some(4_000),
            scenario: Scenario {
                hot_weight: 100,
                regular_weight: 30,
                products: 1_000,
                ..plan(Model::Open, Duration::ZERO).scenario
            },
            ..plan(Model::Open, Duration::from_secs(10))
        };
        let record = run(&plan, &target, "x", "[test]").await.unwrap();
        let (hunters, regulars) = *counts.lock().unwrap();
        assert_eq!(hunters + regulars, record.counts.sent, "every request reached the server");
        let share = regulars as f64 / (hunters + regulars) as f64;
        // Regulars pick the hot product too, 1 time in 1,000.
        let expected = 30.0 / 130.0 * 0.999;
        assert!(
            (share - expected).abs() < 0.03,
            "{regulars} regular customers in {} purchases: {:.1}%, expected {:.1}%",
            hunters + regulars,
            share * 100.0,
            expected * 100.0
        );
    }

    #[tokio::test]
    async fn load_spread_over_replicas_splits_evenly() {
        let (first, on_first) = counting_server().await;
        let (second, on_second) = counting_server().await;
        let plan = LoadPlan {
            rate: 400.0,
            connections: 8,
            max_requests: Some(400),
            ..plan(Model::Open, Duration::from_secs(5))
        };
        let record = run_spread(&plan, &[first, second], "x", "[test]").await.unwrap();
        let (a, b) = (on_first.load(Ordering::Relaxed), on_second.load(Ordering::Relaxed));
        assert_eq!(a + b, 400, "every request reached one replica");
        assert_eq!(record.counts.sent, 400);
        // Four connections each, taking tickets from one timetable: close to half each.
        assert!(a.abs_diff(b) <= 40, "the load split {a} / {b}");
    }

    #[tokio::test]
    async fn a_spread_without_a_target_is_refused() {
        let plan = plan(Model::Open, Duration::from_millis(100));
        assert!(run_spread(&plan, &[], "x", "[test]").await.is_err());
    }

    fn ms(histogram: &hdrhistogram::Histogram<u64>, percentile: f64) -> f64 {
        histogram.value_at_percentile(percentile) as f64 / 1e3
    }

    /// The wrk2 demonstration: a server that answers at once but stalls for 1 s in the middle of
    /// a 3 s run. Timed from the actual send, only the two requests caught in the stall are slow
    /// and p99 stays low; timed from the intended send, every request the stall held back counts
    /// its wait, and p99 is close to the stall.
    #[tokio::test]
    async fn a_stall_is_charged_to_every_request_it_held_back() {
        let target = stalling_server(Duration::from_secs(1), Duration::from_secs(1)).await;
        let plan = LoadPlan { rate: 200.0, connections: 2, ..plan(Model::Open, Duration::from_secs(3)) };
        let record = run(&plan, &target, "x", "[test]").await.unwrap();
        let due = Timetable::new(200.0).due_within(Duration::from_secs(3));
        assert_eq!(record.counts.sent + record.unsent, due, "every due request is sent or counted unsent");
        assert_eq!(record.due_latency().len(), due, "every due request has a latency");
        let corrected = ms(&record.due_latency(), 99.0);
        let uncorrected = ms(&record.service_latency, 99.0);
        assert!(corrected >= 500.0, "the stall shows in the corrected p99: {corrected} ms");
        assert!(
            corrected >= 10.0 * uncorrected,
            "corrected p99 {corrected} ms against uncorrected {uncorrected} ms"
        );
        assert!(ms(&record.dispatch, 99.0) >= 500.0, "the held-back requests went out late");
        assert_eq!(record.counts.censored, 0, "every request was answered before the end");
    }

    /// A run that gives up once its objective is certainly missed stops sending there: only the
    /// requests due by then are sent or counted unsent; the same run without the rule accounts
    /// for all of them. The stall starts at once and outlasts the run, so only the rule can end it
    /// early.
    #[tokio::test]
    async fn a_run_that_certainly_missed_its_objective_stops_sending() {
        let target = stalling_server(Duration::ZERO, Duration::from_secs(30)).await;
        let rule = GiveUp { slo: Duration::from_millis(20), misses: 3 };
        let base = LoadPlan {
            rate: 100.0,
            connections: 4,
            timeout: Duration::from_millis(300),
            max_requests: Some(150),
            ..plan(Model::Open, Duration::from_secs(2))
        };
        let gave_up =
            run(&LoadPlan { give_up: Some(rule), ..base.clone() }, &target, "x", "[test]").await.unwrap();
        let at = gave_up.gave_up.expect("the fourth miss ends the run");
        assert!(at < Duration::from_secs(1), "gave up at {at:?}");
        let due_by_then = Timetable::new(100.0).due_within(at + Duration::from_millis(50));
        assert!(
            gave_up.counts.sent + gave_up.unsent <= due_by_then,
            "nothing due after the stop was sent or counted: {} sent, {} unsent, {due_by_then} due by {at:?}",
            gave_up.counts.sent,
            gave_up.unsent
        );
        let full = run(&base, &target, "x", "[test]").await.unwrap();
        assert_eq!(full.gave_up, None);
        assert_eq!(full.counts.sent + full.unsent, 150, "without the rule every request is accounted for");
    }

    /// A stall that outlasts the run: the requests due after it began are never sent, and each
    /// counts as censored at (end − intended send) instead of leaving the distribution.
    #[tokio::test]
    async fn requests_never_sent_before_the_end_are_censored_not_dropped() {
        let target = stalling_server(Duration::from_secs(1), Duration::from_secs(30)).await;
        let plan = LoadPlan {
            rate: 200.0,
            connections: 2,
            timeout: Duration::from_millis(1_500),
            ..plan(Model::Open, Duration::from_secs(2))
        };
        let started = Instant::now();
        let record = run(&plan, &target, "x", "[test]").await.unwrap();
        let ended = started.elapsed();
        let due = Timetable::new(200.0).due_within(Duration::from_secs(2));
        assert_eq!(record.counts.sent + record.unsent, due, "{:?}", record.counts);
        assert!(record.unsent >= 100, "about a second of requests never went out: {}", record.unsent);
        let timeouts = record.errors.get("timeout").copied().unwrap_or(0);
        assert!(timeouts >= 1, "the requests caught in the stall timed out: {:?}", record.errors);
        assert_eq!(record.counts.censored, record.unsent + timeouts, "unsent and timed out are censored");
        assert_eq!(record.censored_latency.len(), record.counts.censored);
        let all = record.due_latency();
        assert_eq!(all.len(), due, "nothing due left the distribution");
        assert!(
            ms(&all, 99.0) >= 1_000.0,
            "censored at end − intended send, ≥ 1 s for the first unsent: p99 {} ms",
            ms(&all, 99.0)
        );
        assert!(ms(&record.censored_latency, 100.0) <= ended.as_secs_f64() * 1e3, "bounded by the run");
    }

    fn plan(model: Model, duration: Duration) -> LoadPlan {
        LoadPlan {
            model,
            rate: 100.0,
            connections: 1,
            users: 1,
            user_rate: 0.0,
            ramp: Duration::ZERO,
            scenario: Scenario {
                hot_product: 100,
                hot_stock: 1_000_000,
                hot_weight: 1,
                regular_weight: 0,
                products: 10,
                quantity: 1,
                seed: 1,
            },
            duration,
            max_requests: None,
            grace: Duration::ZERO,
            timeout: Duration::from_secs(5),
            give_up: None,
        }
    }

    /// One connection, 100 requests a second offered, 50 ms per answer: the server keeps up with
    /// 20 a second, so requests queue behind each other. Measured from the intended send time, the
    /// queueing shows in the latency; the late and unsent requests are counted.
    #[tokio::test]
    async fn open_model_latency_counts_from_the_intended_send_time() {
        let target = slow_server(Duration::from_millis(50)).await;
        let record = run(&plan(Model::Open, Duration::from_secs(1)), &target, "x", "[test]").await.unwrap();
        let served = record.counts.confirmed;
        // About 20; fewer when the machine is busy, which only lengthens the queue measured below.
        assert!((5..=22).contains(&served), "at most 20 answers in a second, got {served}");
        assert_eq!(record.counts.sent, served, "every request sent was answered");
        assert!(
            record.counts.late >= served - 2,
            "all but the first requests went out late: {:?}",
            record.counts
        );
        let due = Timetable::new(100.0).due_within(Duration::from_secs(1));
        assert_eq!(
            record.counts.sent + record.unsent,
            due,
            "every due request is either sent or counted unsent"
        );
        let p50 = Duration::from_micros(record.success.value_at_percentile(50.0));
        let max = Duration::from_micros(record.success.max());
        assert!(p50 >= Duration::from_millis(200), "queueing counted from the intended time: p50 {p50:?}");
        assert!(max >= Duration::from_millis(400), "the last answered request waited most: max {max:?}");
        assert!(record.max_lag >= Duration::from_millis(500), "send lag recorded: {:?}", record.max_lag);
    }

    /// The same slow server in the closed model: a user waits for each answer before the next, so
    /// latency is the service time and nothing is late.
    #[tokio::test]
    async fn closed_model_latency_is_the_service_time() {
        let target = slow_server(Duration::from_millis(50)).await;
        let record = run(&plan(Model::Closed, Duration::from_secs(1)), &target, "x", "[test]").await.unwrap();
        let p50 = Duration::from_micros(record.success.value_at_percentile(50.0));
        assert!(record.counts.confirmed >= 5, "{:?}", record.counts);
        assert!(p50 < Duration::from_millis(150), "closed-model latency is the answer time: {p50:?}");
        assert_eq!(record.counts.late, 0);
        assert_eq!(record.unsent, 0);
    }

    /// A server that never answers in time: each request is a `timeout`, bounded, and the run
    /// still ends.
    #[tokio::test]
    async fn a_hung_server_gives_timeouts_not_a_hung_run() {
        let target = slow_server(Duration::from_secs(30)).await;
        let plan = LoadPlan {
            timeout: Duration::from_millis(200),
            max_requests: Some(3),
            ..plan(Model::Closed, Duration::from_secs(5))
        };
        let started = Instant::now();
        let record = run(&plan, &target, "x", "[test]").await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "bounded by the timeout, not the server");
        assert_eq!(record.errors.get("timeout"), Some(&3), "{:?}", record.errors);
        assert_eq!(record.counts.answered, 0);
    }

    /// Users still ramping up or thinking when the hot product sells out stop with the run: they
    /// do not hold it open until their next turn.
    #[tokio::test]
    async fn the_sell_out_stops_sleeping_users_too() {
        let target = slow_server(Duration::from_millis(5)).await;
        let plan = LoadPlan {
            users: 20,
            user_rate: 0.1,
            ramp: Duration::from_secs(5),
            scenario: Scenario { hot_stock: 3, ..plan(Model::Closed, Duration::ZERO).scenario },
            ..plan(Model::Closed, Duration::from_secs(30))
        };
        let started = Instant::now();
        let record = run(&plan, &target, "x", "[test]").await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "stopped at the sell-out: {:?}",
            started.elapsed()
        );
        assert!(record.time_to_sell_out.is_some());
        assert!(
            record.duration < Duration::from_secs(3),
            "duration ends at the last answer: {:?}",
            record.duration
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target = Target::resolve(&format!("http://127.0.0.1:{port}")).await.unwrap();
        let plan = LoadPlan { max_requests: Some(2), ..plan(Model::Closed, Duration::from_secs(2)) };
        let record = run(&plan, &target, "x", "[test]").await.unwrap();
        assert_eq!(record.errors.get("connect"), Some(&2), "{:?}", record.errors);
    }

    #[tokio::test]
    async fn urls_other_than_plain_http_are_refused() {
        for url in ["https://localhost:1", "http://localhost:1/path", "not a url"] {
            assert!(Target::resolve(url).await.is_err(), "{url}");
        }
    }
}
