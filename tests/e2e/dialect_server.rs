//! The server over HTTP on either SQL backend: the routes a user of `DATABASE_URL=mysql://…` reaches
//! (purchases, `GET /strategies`, orders, products, the audit, `/admin/orders`, `/healthz`, resets)
//! answer alike on PostgreSQL and MariaDB, and a strategy that does not run on the server's
//! database answers 501 and touches nothing. Every scenario runs on both backends (`on_both!`).

use std::sync::Arc;
use std::time::Duration;

use checkout_bench::admission::InflightLimits;
use checkout_bench::app::{App, AppConfig};
use checkout_bench::sessions::SessionConfig;
use checkout_strategies::backends::{PgSettings, mysql_pool, pg_pool};
use checkout_strategies::reservation::{self, Sweeper, SweeperSettings};
use checkout_strategies::{
    Backends, Backlog, DrainReport, NatsBackend, NatsSettings, Queue, RedisBackend, RedisKeys, RedisSettings,
    SqlBackend, SqlPool, StockPlan, StrategyError, StrategyKind, Tuning, Worker, WorkerSettings, queue_nats,
    redis_stock,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::dialects::Scratch;
use crate::helpers::{Answer, ChaosProxy, order_body, plan_of, read_answer};

const HOT: i64 = 100;
const STOCK: i64 = 20;
const BUYERS: usize = 60;

/// A server on a scratch database of `backend`.
struct Served {
    url: String,
    client: reqwest::Client,
    app: Arc<App>,
    /// What the server runs on, for the test's own worker and broker consumer.
    backends: Backends,
    scratch: Scratch,
    _shutdown: oneshot::Sender<()>,
}

fn redis(keys: &RedisKeys) -> RedisBackend {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    RedisBackend::lazy(&url, keys.clone(), RedisSettings::default()).expect("valid REDIS_URL")
}

fn backends_on(books: &SqlPool, keys: &RedisKeys, tuning: Tuning) -> Backends {
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let nats = NatsBackend::lazy(&nats_url, keys.prefix(), NatsSettings::default());
    match books {
        SqlPool::Postgres(pg) => Backends::new(pg.clone(), redis(keys), tuning),
        SqlPool::MySql(pool) => Backends::on_mysql(pool.clone(), redis(keys), tuning),
    }
    .with_nats(nats)
}

/// Serves `backends` on a free port, the catalogue reset to `plan` unless `plan` is `None`.
async fn serve(
    backends: &Backends,
    keys: &RedisKeys,
    plan: Option<StockPlan>,
) -> (String, Arc<App>, oneshot::Sender<()>) {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = AppConfig {
        admin_token: None,
        request_timeout: Duration::from_secs(10),
        sessions: SessionConfig {
            prefix: keys.prefix().to_owned(),
            required: false,
            ..SessionConfig::new(&redis_url, 1).expect("valid session Redis URL")
        },
        inflight: InflightLimits::unlimited(),
    };
    let app = Arc::new(
        App::new(backends, config, plan.clone().unwrap_or_default()).await.expect("strategies take the plan"),
    );
    if let Some(plan) = plan {
        app.reset(plan).await.expect("the catalogue is reset");
    }
    let (addr, shutdown) = crate::helpers::serve(&app).await;
    (format!("http://{addr}"), app, shutdown)
}

impl Served {
    async fn start(backend: SqlBackend, tuning: Tuning) -> Self {
        let scratch = Scratch::new(backend).await;
        let books = scratch.books().clone();
        Self::on(scratch, &books, tuning).await
    }

    /// A server whose books (pooled with `settings`) are reached through a proxy that can cut them
    /// off; the scratch database's own pool still reaches them, to count what is there meanwhile.
    async fn behind_proxy(backend: SqlBackend, settings: PgSettings) -> (Self, ChaosProxy) {
        let scratch = Scratch::new(backend).await;
        let proxy = ChaosProxy::in_front_of(scratch.url()).await;
        let books = scratch.through(&proxy, settings);
        (Self::on(scratch, &books, Tuning::default()).await, proxy)
    }

    /// A server on `books`, a pool on `scratch`'s database.
    async fn on(scratch: Scratch, books: &SqlPool, tuning: Tuning) -> Self {
        let keys = RedisKeys::new(format!("test-{}:", uuid::Uuid::new_v4().simple()));
        let backends = backends_on(books, &keys, tuning);
        let (url, app, shutdown) = serve(&backends, &keys, Some(plan_of(&[(HOT, STOCK), (7, 3)]))).await;
        let client =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        Self { url, client, app, backends, scratch, _shutdown: shutdown }
    }

    async fn buy(&self, kind: StrategyKind, items: &[(i64, i64)], key: Option<&str>) -> Answer {
        let mut request =
            self.client.post(format!("{}/strategies/{kind}/purchase", self.url)).json(&order_body(items));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        read_answer(request.send().await.expect("server answers")).await
    }

    async fn get(&self, path: &str) -> Answer {
        read_answer(self.client.get(format!("{}{path}", self.url)).send().await.expect("server answers"))
            .await
    }

    async fn reset(&self, plan: &Value) -> Answer {
        let response = self
            .client
            .post(format!("{}/admin/reset", self.url))
            .json(plan)
            .send()
            .await
            .expect("server answers");
        read_answer(response).await
    }

    /// `GET path` until it answers other than 503: after sessions were ended, each pooled
    /// connection they held fails once (503, `Retry-After: 1`) before the pool replaces it.
    async fn get_retrying(&self, path: &str) -> Answer {
        for _ in 0..20 {
            let answer = self.get(path).await;
            if answer.status != 503 {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.get(path).await
    }

    async fn finish(self) {
        self.app.registry.shutdown().await;
        drop(self._shutdown);
        // The shared broker would otherwise keep the test's streams.
        if self.backends.nats.is_connected() {
            self.backends.nats.delete_streams().await.expect("the test's broker streams are deleted");
        }
        self.scratch.drop_database().await;
    }
}

/// The SQL strategies ported to every dialect: each scenario runs them on both backends (the
/// others are covered on PostgreSQL by the rest of the suite).
fn ported_sql_strategies() -> Vec<StrategyKind> {
    StrategyKind::ALL
        .into_iter()
        .filter(|kind| {
            SqlBackend::ALL.iter().all(|backend| backend.runs(*kind))
                && kind.spec().persists_to_postgres()
                && !kind.spec().queued
        })
        .collect()
}

/// The queued strategies that run on every dialect: their orders reach the books after the 202.
fn ported_queued_strategies() -> Vec<StrategyKind> {
    StrategyKind::ALL
        .into_iter()
        .filter(|kind| SqlBackend::ALL.iter().all(|backend| backend.runs(*kind)) && kind.spec().queued)
        .collect()
}

/// A queued strategy's worker (Redis stream) or broker consumer (NATS), as the server runs it.
enum Drainer {
    Stream(Box<Worker>),
    Broker(Box<queue_nats::Consumer>),
}

impl Drainer {
    fn new(backends: &Backends, kind: StrategyKind, settings: WorkerSettings) -> Self {
        match kind.spec().queue {
            Some(Queue::RedisStream) => {
                Self::Stream(Box::new(Worker::new(backends, kind, settings).expect("a stream worker")))
            }
            Some(Queue::NatsJetstream) => Self::Broker(Box::new(
                queue_nats::Consumer::new(backends, settings).expect("a broker consumer"),
            )),
            None => panic!("{kind} queues nothing"),
        }
    }

    async fn run_until_idle(&mut self, timeout: Duration) -> Result<DrainReport, StrategyError> {
        match self {
            Self::Stream(worker) => worker.run_until_idle(timeout).await,
            Self::Broker(consumer) => consumer.run_until_idle(timeout).await,
        }
    }

    /// Everything it did so far.
    const fn report(&self) -> DrainReport {
        match self {
            Self::Stream(worker) => worker.report(),
            Self::Broker(consumer) => consumer.report(),
        }
    }
}

impl Served {
    /// Writes every order `kind` accepted to the books, as its worker or broker consumer does.
    async fn drain(&self, kind: StrategyKind) {
        Drainer::new(&self.backends, kind, WorkerSettings::draining())
            .run_until_idle(Duration::from_secs(20))
            .await
            .unwrap_or_else(|err| panic!("{kind}: the queue drains: {err}"));
    }

    /// `count` buyers of one unit of `HOT` each, at once, through HTTP; their answers.
    async fn buyers_at_once(self: &Arc<Self>, kind: StrategyKind, count: usize) -> Vec<Answer> {
        let buyers: Vec<_> = (0..count)
            .map(|_| {
                let served = Arc::clone(self);
                tokio::spawn(async move { served.buy(kind, &[(HOT, 1)], None).await })
            })
            .collect();
        let mut answers = Vec::with_capacity(count);
        for buyer in buyers {
            answers.push(buyer.await.expect("no buyer panics"));
        }
        answers
    }

    /// Places `count` unkeyed orders of one unit of `HOT`, one after the other, each accepted (202).
    async fn accept(&self, kind: StrategyKind, count: usize) {
        for _ in 0..count {
            let accepted = self.buy(kind, &[(HOT, 1)], None).await;
            assert_eq!(accepted.status, 202, "{kind}: {}", accepted.body);
        }
    }

    /// What `kind` accepted and has not written yet, as Redis and the broker hold it.
    async fn backlog(&self, kind: StrategyKind) -> Backlog {
        let backlog = self.app.registry.get(kind).backlog().await;
        backlog.expect("Redis and the broker answer").expect("a queued strategy has a backlog")
    }

    /// The Redis mirror of `HOT`: units on the shelf and in flight.
    async fn hot_mirror(&self) -> (Option<i64>, Option<i64>) {
        let (shelf, inflight) = redis_stock::mirror(&self.app.redis, &[HOT]).await.expect("Redis answers");
        (shelf[0], inflight[0])
    }
}

/// Buyers of one unit each at once, through HTTP, for every queued strategy: those that reserve
/// before accepting accept exactly the stock (202) and refuse the rest; after the worker or
/// consumer drained the queue, the books hold exactly the stock sold, every accepted order is
/// confirmed or (deferred) cancelled, the mirror agrees, and the audit is clean, or names the
/// orders accepted and then cancelled.
async fn queued_flash_sale(backend: SqlBackend) {
    let served = Arc::new(Served::start(backend, Tuning::default()).await);
    for kind in ported_queued_strategies() {
        assert_eq!(served.reset(&json!({ "products": [{ "id": HOT, "stock": STOCK }] })).await.status, 200);
        let mut accepted = Vec::new();
        for answer in served.buyers_at_once(kind, BUYERS).await {
            match answer.status {
                202 => accepted.push(answer.body["order_id"].as_str().expect("an order id").to_owned()),
                409 => assert_eq!(answer.body["error"], "sold_out", "{kind} on {backend}: {}", answer.body),
                other => panic!("{kind} on {backend}: unexpected {other} {}", answer.body),
            }
        }
        let accepted_count = i64::try_from(accepted.len()).expect("a count");
        if kind.spec().reserves_before_accepting {
            assert_eq!(accepted_count, STOCK, "{kind} on {backend}: exactly the stock is accepted");
        } else {
            assert!(accepted_count >= STOCK, "{kind} on {backend}: {accepted_count} accepted");
        }
        served.drain(kind).await;
        assert_eq!(served.scratch.sold().await, (STOCK, STOCK), "{kind} on {backend}: the stock, no more");
        assert_eq!(served.scratch.stock(HOT).await, 0, "{kind} on {backend}");
        let written = served
            .scratch
            .number("SELECT COUNT(*) FROM orders WHERE status IN ('confirmed', 'cancelled')")
            .await;
        assert_eq!(written, accepted_count, "{kind} on {backend}: every accepted order reached the books");
        let order = served.get(&format!("/orders/{}", accepted[0])).await;
        assert_eq!(order.status, 200, "{kind} on {backend}: {}", order.body);
        assert_eq!(served.hot_mirror().await, (Some(0), Some(0)), "{kind} on {backend}: the mirror agrees");
        let audit = served.get("/admin/audit").await;
        let cancelled = accepted_count - STOCK;
        assert_eq!(audit.body["queues"]["accepted_then_cancelled"], cancelled, "{kind} on {backend}");
        // Accepting more than the stock and cancelling later is what makes a strategy unsafe:
        // the audit names it.
        assert_eq!(audit.body["clean"], cancelled == 0, "{kind} on {backend}: {}", audit.body);
        assert_eq!(kind.spec().safe, cancelled == 0, "{kind} on {backend}");
        assert_eq!(audit.body["sold_by"], json!([kind]), "{kind} on {backend}");
    }
    Arc::into_inner(served).expect("every buyer is done").finish().await;
}

/// Buyers of one unit each at once, through HTTP, for every SQL strategy of the backend in turn:
/// the safe ones sell exactly the stock, the books (counted here with SQL of our own) agree with
/// every 201, and the audit says clean; `sql-naive` oversells and the audit says so.
async fn flash_sale(backend: SqlBackend) {
    let served = Arc::new(
        Served::start(backend, Tuning { naive_race_window: Duration::from_millis(50), ..Tuning::default() })
            .await,
    );
    for kind in ported_sql_strategies() {
        assert_eq!(served.reset(&json!({ "products": [{ "id": HOT, "stock": STOCK }] })).await.status, 200);
        let (mut placed, mut contention) = (Vec::new(), 0_i64);
        for answer in served.buyers_at_once(kind, BUYERS).await {
            match answer.status {
                201 => placed.push(answer.body["order_id"].as_str().expect("an order id").to_owned()),
                // `sql-optimistic` refuses a buyer who lost every swap; the audit counts each one.
                409 if answer.body["error"] == "contention" => contention += 1,
                409 => assert_eq!(answer.body["error"], "sold_out", "{kind} on {backend}: {}", answer.body),
                503 if !kind.spec().safe => {}
                other => panic!("{kind} on {backend}: unexpected {other} {}", answer.body),
            }
        }
        let sold = i64::try_from(placed.len()).expect("a count");
        let stock = served.scratch.stock(HOT).await;
        let (orders, units) = served.scratch.sold().await;
        assert_eq!(orders, sold, "{kind} on {backend}: every 201 is an order in the books");
        assert_eq!(units, STOCK - stock, "{kind} on {backend}: the stock moved by the units sold");
        let audit = served.get("/admin/audit").await;
        assert_eq!(audit.status, 200, "{}", audit.body);
        assert_eq!(
            audit.body["total"]["contention_refusals"], contention,
            "{kind} on {backend}: {}",
            audit.body
        );
        if kind.spec().safe {
            let expected = if contention > 0 { (sold, STOCK - sold) } else { (STOCK, 0) };
            assert_eq!((sold, stock), expected, "{kind} on {backend}: the stock is sold, never oversold");
            assert_eq!(audit.body["clean"], true, "{kind} on {backend}: {}", audit.body);
        } else {
            assert!(sold > STOCK, "{kind} on {backend}: the unsafe strategy oversold ({sold} of {STOCK})");
            assert_eq!(audit.body["clean"], false, "{kind} on {backend}: the audit sees it: {}", audit.body);
            assert_eq!(audit.body["total"]["oversold"], sold - STOCK, "{kind} on {backend}: {}", audit.body);
        }
        assert_eq!(audit.body["sold_by"], json!([kind]), "{kind} on {backend}");
        let listed = served.get("/admin/orders").await;
        assert_eq!(listed.body["count"], json!(sold), "{kind} on {backend}: {}", listed.body);
        let order = served.get(&format!("/orders/{}", placed[0])).await;
        assert_eq!(order.status, 200, "{kind} on {backend}: {}", order.body);
        assert_eq!(order.body["status"], "confirmed", "{kind} on {backend}: {}", order.body);
        let product = served.get(&format!("/products/{HOT}")).await;
        assert_eq!(product.body["stock"], json!(stock), "{kind} on {backend}: {}", product.body);
    }
    Arc::into_inner(served).expect("every buyer is done").finish().await;
}

/// The key [`Served::replay_and_refuse`] places `kind`'s first order under.
fn replay_key(kind: StrategyKind) -> String {
    format!("key-{kind}")
}

impl Served {
    /// The steps every strategy's contract shares, on a fresh catalogue (strategies of different
    /// gates never share a product): two units of `HOT` under a key answer `created`, the same
    /// key and body again 200 with the same order, the key with another body 422, a malformed
    /// order 400. Returns the first answer, and the answer to a multi-item order that does not
    /// fit (product 7 holds 3 units), which the caller judges.
    async fn replay_and_refuse(&self, kind: StrategyKind, created: u16) -> (Answer, Answer) {
        let plan = json!({ "products": [{ "id": HOT, "stock": STOCK }, { "id": 7, "stock": 3 }] });
        assert_eq!(self.reset(&plan).await.status, 200, "{kind}");
        let key = replay_key(kind);
        let first = self.buy(kind, &[(HOT, 2)], Some(&key)).await;
        assert_eq!(first.status, created, "{kind}: {}", first.body);
        let again = self.buy(kind, &[(HOT, 2)], Some(&key)).await;
        assert_eq!(again.status, 200, "{kind}: {}", again.body);
        assert_eq!(again.body["order_id"], first.body["order_id"], "{kind}");
        self.buy(kind, &[(HOT, 1)], Some(&key)).await.assert_error(422, "idempotency_key_reused");
        self.buy(kind, &[(HOT, 0)], None).await.assert_error(400, "invalid_request");
        let too_much = self.buy(kind, &[(HOT, 1), (7, 4)], None).await;
        (first, too_much)
    }
}

/// A repeated Idempotency-Key replays the first order; a malformed order is refused with 400; a
/// multi-item order that does not fit takes nothing.
async fn replays_and_refusals(backend: SqlBackend) {
    let served = Served::start(backend, Tuning::default()).await;
    for kind in ported_sql_strategies() {
        let (_, too_much) = served.replay_and_refuse(kind, 201).await;
        assert_eq!(too_much.status, 409, "{kind} on {backend}: {}", too_much.body);
        assert_eq!(
            served.scratch.stock(HOT).await,
            STOCK - 2,
            "{kind} on {backend}: only the first order took stock"
        );
        assert_eq!(served.scratch.stock(7).await, 3, "{kind} on {backend}: the refused line took nothing");
        assert_eq!(served.scratch.sold().await, (1, 2), "{kind} on {backend}");
        let audit = served.get("/admin/audit").await;
        assert_eq!(audit.body["clean"], true, "{kind} on {backend}: {}", audit.body);
    }
    served.finish().await;
}

/// `GET /strategies` lists every strategy, each saying whether it runs on the server's database;
/// the ones that do not answer 501 and leave stock and orders alone; `/healthz` names the database.
async fn what_runs_where(backend: SqlBackend) {
    let served = Served::start(backend, Tuning::default()).await;
    let listed = served.get("/strategies").await;
    let entries = listed.body.as_array().expect("a list");
    assert_eq!(
        entries.len(),
        StrategyKind::ALL.len(),
        "{backend}: every strategy is listed: {}",
        listed.body
    );
    for entry in entries {
        let kind: StrategyKind = entry["name"].as_str().expect("a name").parse().expect("a strategy");
        assert_eq!(entry["database"], backend.as_str(), "{kind}: {entry}");
        assert_eq!(entry["available"], backend.runs(kind), "{kind} on {backend}: {entry}");
        if backend.runs(kind) {
            continue;
        }
        let refused = served.buy(kind, &[(HOT, 1)], Some("not-here")).await;
        refused.assert_error(501, "not_on_this_database");
        assert_eq!((&refused.body["strategy"], &refused.body["database"]), (&json!(kind), &json!(backend)));
    }
    assert_eq!(served.scratch.stock(HOT).await, STOCK, "{backend}: a 501 takes nothing");
    assert_eq!(served.scratch.sold().await, (0, 0), "{backend}: a 501 writes no order");
    let health = served.get("/healthz").await;
    assert_eq!(health.status, 200, "{backend}: {}", health.body);
    assert_eq!(health.body["backends"][backend.as_str()]["status"], "up", "{backend}: {}", health.body);
    served.finish().await;
}

/// `POST /admin/reset` keeping the catalogue, twice: each undoes the run since the last reset (its
/// orders gone, the stock it took back, its idempotency keys free) and sets the plan's products,
/// and the plan in force keeps the catalogue's other products.
async fn kept_resets(backend: SqlBackend) {
    let served = Served::start(backend, Tuning::default()).await;
    let kept = json!({ "products": [{ "id": HOT, "stock": 8 }], "keep_catalogue": true });
    for key in ["first", "second"] {
        let hot = served.buy(StrategyKind::SqlAtomic, &[(HOT, 2)], Some(key)).await;
        assert_eq!(hot.status, 201, "{backend}, {key} run: {}", hot.body);
        let both = served.buy(StrategyKind::SqlForUpdate, &[(HOT, 1), (7, 1)], None).await;
        assert_eq!(both.status, 201, "{backend}, {key} run: {}", both.body);
        let audit = served.get("/admin/audit").await;
        assert_eq!(audit.body["order_status"]["confirmed"], 2, "{backend}, {key} run: {}", audit.body);

        let reset = served.reset(&kept).await;
        assert_eq!(reset.status, 200, "{backend}, {key} run: {}", reset.body);
        let summary = &reset.body["summary"];
        assert_eq!(
            (&summary["run_orders_deleted"], &summary["products_restored"], &summary["products_written"]),
            (&json!(2), &json!(2), &json!(1)),
            "{backend}, {key} run: {}",
            reset.body
        );
        assert_eq!(
            reset.body["plan"]["products"],
            json!([{ "id": 7, "stock": 3 }, { "id": HOT, "stock": 8 }]),
            "{backend}, {key} run: {}",
            reset.body
        );
        assert_eq!(served.scratch.sold().await, (0, 0), "{backend}, {key} run: every order was the run's");
        assert_eq!(served.scratch.stock(HOT).await, 8, "{backend}, {key} run: as planned");
        assert_eq!(
            served.scratch.stock(7).await,
            3,
            "{backend}, {key} run: back to its stock before the run"
        );
        let replayed = served.buy(StrategyKind::SqlAtomic, &[(HOT, 1)], Some(key)).await;
        assert_eq!(replayed.status, 201, "{backend}, {key} run: the key is free again: {}", replayed.body);
        assert_eq!(served.reset(&kept).await.status, 200, "{backend}");
    }
    served.finish().await;
}

/// The database is down: purchases answer 503 at once and `/healthz` says which backend is down.
async fn database_down(backend: SqlBackend) {
    let settings =
        PgSettings { connections: 2, acquire_timeout: Duration::from_millis(500), ..PgSettings::default() };
    let books = match backend {
        SqlBackend::Postgres => {
            SqlPool::Postgres(pg_pool("postgres://postgres@127.0.0.1:9/checkout", settings).expect("a URL"))
        }
        SqlBackend::MySql => {
            SqlPool::MySql(mysql_pool("mysql://root@127.0.0.1:9/checkout", settings).expect("a URL"))
        }
    };
    let keys = RedisKeys::new(format!("test-{}:", uuid::Uuid::new_v4().simple()));
    let (url, app, shutdown) = serve(&backends_on(&books, &keys, Tuning::default()), &keys, None).await;
    let client = reqwest::Client::new();
    for kind in ported_sql_strategies() {
        let started = std::time::Instant::now();
        let response = client
            .post(format!("{url}/strategies/{kind}/purchase"))
            .json(&order_body(&[(HOT, 1)]))
            .send()
            .await
            .expect("server answers");
        read_answer(response).await.assert_error(503, "backend_unavailable");
        assert!(started.elapsed() < Duration::from_secs(5), "{kind} on {backend}: a 503, never a hang");
    }
    let health = read_answer(client.get(format!("{url}/healthz")).send().await.expect("answers")).await;
    assert_eq!(health.status, 503, "{backend}: {}", health.body);
    assert_eq!(health.body["backends"][backend.as_str()]["status"], "down", "{backend}: {}", health.body);
    app.registry.shutdown().await;
    drop(shutdown);
}

/// A unit pool of thousands of units is laid out on first sale, on either database (a pool is
/// one row per unit: its layout must not stop at a recursion or statement limit).
async fn a_large_unit_pool_is_laid_out(backend: SqlBackend) {
    const UNITS: i64 = 25_000;
    let served = Served::start(backend, Tuning::default()).await;
    assert_eq!(served.reset(&json!({ "products": [{ "id": HOT, "stock": UNITS }] })).await.status, 200);
    let bought = served.buy(StrategyKind::SqlSkipLocked, &[(HOT, 3)], None).await;
    assert_eq!(bought.status, 201, "{backend}: {}", bought.body);
    assert_eq!(served.scratch.number("SELECT COUNT(*) FROM inventory_units").await, UNITS, "{backend}");
    assert_eq!(served.scratch.stock(HOT).await, UNITS - 3, "{backend}: three units marked");
    let audit = served.get("/admin/audit").await;
    assert_eq!(audit.body["clean"], true, "{backend}: {}", audit.body);
    served.finish().await;
}

/// Ends every other session of the test's database, from a session of its own: each purchase or
/// batch in flight dies wherever it stood. Returns how many it ended.
async fn kill_other_sessions(scratch: &Scratch) -> i64 {
    match scratch.books() {
        SqlPool::Postgres(_) => {
            scratch
                .number(
                    "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .await
        }
        SqlPool::MySql(pool) => {
            let mut conn = pool.acquire().await.expect("a session of the test's own");
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()",
            )
            .fetch_all(&mut *conn)
            .await
            .expect("the session list");
            for id in &ids {
                // A session may have ended on its own since the list was read.
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
                    .execute(&mut *conn)
                    .await;
            }
            i64::try_from(ids.len()).expect("a count")
        }
    }
}

/// Sessions ended mid-sale, a few times, while buyers of one line and of two lines storm every
/// safe ported strategy: every 201 is an order in the books, every other answer left nothing, no unit
/// is sold twice or lost, and the audit says clean.
async fn sessions_killed_mid_sale(backend: SqlBackend) {
    const OTHER: i64 = 7;
    let served = Arc::new(Served::start(backend, Tuning::default()).await);
    let counter = served.scratch.reopened();
    let plan = json!({ "products": [{ "id": HOT, "stock": 30 }, { "id": OTHER, "stock": 20 }] });
    // `sql-naive` settles no reply lost with its session (unsafe by design, as for its oversells).
    for kind in ported_sql_strategies().into_iter().filter(|kind| kind.spec().safe) {
        // Connections the last round's kills left in the pool fail once each.
        let mut reset = served.reset(&plan).await;
        for _ in 0..20 {
            if reset.status != 503 {
                break;
            }
            reset = served.reset(&plan).await;
        }
        assert_eq!(reset.status, 200, "{kind} on {backend}: {}", reset.body);
        let buyers: Vec<_> = (0..40_u64)
            .map(|n| {
                let served = Arc::clone(&served);
                let items: &[(i64, i64)] = if n % 2 == 0 { &[(HOT, 1)] } else { &[(HOT, 1), (OTHER, 1)] };
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(n * 12)).await;
                    (items, served.buy(kind, items, None).await)
                })
            })
            .collect();
        let mut killed = 0;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            killed += kill_other_sessions(&counter).await;
        }
        assert!(killed > 0, "{kind} on {backend}: no session was ended");
        let (mut placed, mut units, mut in_doubt) = (Vec::new(), [0_i64; 2], 0_i64);
        for buyer in buyers {
            let (items, answer) = buyer.await.expect("no buyer panics");
            match answer.status {
                201 => {
                    placed.push(answer.body["order_id"].as_str().expect("an order id").to_owned());
                    for (product, quantity) in items {
                        units[usize::from(*product != HOT)] += quantity;
                    }
                }
                409 => assert_eq!(answer.body["error"], "sold_out", "{kind} on {backend}: {}", answer.body),
                // Its session ended and the books could not be asked: the order may stand.
                503 if answer.body["error"] == "outcome_unknown" => in_doubt += 1,
                // A purchase whose session ended before it was decided: nothing of it stays.
                503 => {}
                other => panic!("{kind} on {backend}: unexpected {other} {}", answer.body),
            }
        }
        assert!(!placed.is_empty(), "{kind} on {backend}: the sale went on around the ended sessions");
        let (orders, sold_units) = counter.sold().await;
        let answered = i64::try_from(placed.len()).expect("a count");
        assert!(
            (answered..=answered + in_doubt).contains(&orders),
            "{kind} on {backend}: {orders} orders for {answered} answered 201 and {in_doubt} in doubt"
        );
        for id in &placed {
            let live = counter
                .number(&format!(
                    "SELECT COUNT(*) FROM orders WHERE status = 'confirmed' AND id = {}",
                    order_id_literal(backend, id)
                ))
                .await;
            assert_eq!(live, 1, "{kind} on {backend}: order {id} was answered 201");
        }
        let (hot_left, other_left) = (counter.stock(HOT).await, counter.stock(OTHER).await);
        assert_eq!(
            30 - hot_left + 20 - other_left,
            sold_units,
            "{kind} on {backend}: every unit sold is in an order"
        );
        if in_doubt == 0 {
            assert_eq!(
                (hot_left, other_left),
                (30 - units[0], 20 - units[1]),
                "{kind} on {backend}: per product"
            );
        }
        let audit = served.get_retrying("/admin/audit").await;
        assert_eq!(audit.body["clean"], true, "{kind} on {backend}: {}", audit.body);
    }
    counter.close().await;
    Arc::into_inner(served).expect("every buyer is done").finish().await;
}

/// The audit holds Redis to account wherever a Redis-gated strategy runs: units missing from the
/// mirror (what a crash between a reservation and its commit leaves) are named, the verdict is not
/// clean, and `/admin/reconcile` rewrites the mirror from the books, after which it is clean again.
async fn a_drifted_redis_mirror_is_named_and_repaired(backend: SqlBackend) {
    let served = Served::start(backend, Tuning::default()).await;
    for kind in [StrategyKind::RedisLua, StrategyKind::RedisDecr] {
        assert_eq!(served.reset(&json!({ "products": [{ "id": HOT, "stock": STOCK }] })).await.status, 200);
        for _ in 0..3 {
            let sold = served.buy(kind, &[(HOT, 1)], None).await;
            assert_eq!(sold.status, 201, "{kind} on {backend}: {}", sold.body);
        }
        let audit = served.get("/admin/audit").await;
        assert_eq!(audit.body["redis"]["checked"], true, "{kind} on {backend}: {}", audit.body);
        assert_eq!(audit.body["clean"], true, "{kind} on {backend}: {}", audit.body);
        let hot = |audit: &Value| {
            audit["products"]
                .as_array()
                .and_then(|products| products.iter().find(|p| p["product_id"] == HOT).cloned())
                .unwrap_or_else(|| panic!("{kind} on {backend}: product {HOT} missing: {audit}"))
        };
        assert_eq!(
            hot(&audit.body)["redis_stock"],
            STOCK - 3,
            "{kind} on {backend}: Redis mirrors the sales"
        );

        let redis = &served.app.redis;
        let mut conn = redis.conn.clone();
        redis::cmd("DECRBY")
            .arg(redis.keys.stock(HOT))
            .arg(2)
            .query_async::<i64>(&mut conn)
            .await
            .expect("Redis answers");
        let drifted = served.get("/admin/audit").await;
        assert_eq!(hot(&drifted.body)["redis_drift"], -2, "{kind} on {backend}: {}", drifted.body);
        assert_eq!(drifted.body["clean"], false, "{kind} on {backend}: a drifted mirror is not clean");

        let response = served
            .client
            .post(format!("{}/admin/reconcile", served.url))
            .send()
            .await
            .expect("server answers");
        let repaired = read_answer(response).await;
        assert_eq!(repaired.status, 200, "{kind} on {backend}: {}", repaired.body);
        assert_eq!(repaired.body["products_repaired"], 1, "{kind} on {backend}: {}", repaired.body);
        assert_eq!(repaired.body["repairs"][0]["redis_stock_after"], STOCK - 3, "{kind} on {backend}");
        let audit = served.get("/admin/audit").await;
        assert_eq!(audit.body["clean"], true, "{kind} on {backend}: repaired: {}", audit.body);
    }
    served.finish().await;
}

/// A transaction holding one product row's lock, on either server.
enum RowLock {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    MySql(sqlx::Transaction<'static, sqlx::MySql>),
}

impl RowLock {
    async fn release(self) {
        match self {
            Self::Postgres(tx) => tx.rollback().await,
            Self::MySql(tx) => tx.rollback().await,
        }
        .expect("the lock is released");
    }
}

async fn lock_row(books: &SqlPool, product: i64) -> RowLock {
    let sql = format!("SELECT stock FROM products WHERE id = {product} FOR UPDATE");
    match books {
        SqlPool::Postgres(pool) => {
            let mut tx = pool.begin().await.expect("a transaction");
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.expect("the row lock");
            RowLock::Postgres(tx)
        }
        SqlPool::MySql(pool) => {
            let mut tx = pool.begin().await.expect("a transaction");
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.expect("the row lock");
            RowLock::MySql(tx)
        }
    }
}

/// A purchase reserves in Redis and then waits on the books (its product row held by another
/// transaction) past its reservation's deadline: the sweeper voids its order id and gives the unit
/// back once; when the row frees, the late order cannot commit and its buyer hears 503. The units
/// sold, the books and the mirror agree, and the audit is clean.
async fn a_stranded_reservation_is_swept(backend: SqlBackend) {
    let ttl = Duration::from_millis(300);
    let served = Arc::new(Served::start(backend, Tuning { reservation_ttl: ttl, ..Tuning::default() }).await);
    for kind in [StrategyKind::RedisLua, StrategyKind::RedisDecr] {
        assert_eq!(served.reset(&json!({ "products": [{ "id": HOT, "stock": STOCK }] })).await.status, 200);
        // The first sale claims the product for the Redis gate, an update the lock would hold up.
        assert_eq!(served.buy(kind, &[(HOT, 1)], None).await.status, 201, "{kind} on {backend}");
        let locker = lock_row(served.scratch.books(), HOT).await;
        let late = {
            let served = Arc::clone(&served);
            tokio::spawn(async move { served.buy(kind, &[(HOT, 1)], None).await })
        };
        let redis = served.app.redis.clone();
        let started = std::time::Instant::now();
        while reservation::holds(&redis).await.expect("Redis answers").len() != 1 {
            assert!(started.elapsed() < Duration::from_secs(10), "{kind} on {backend}: no reservation made");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(ttl + Duration::from_millis(200)).await;
        let swept = Sweeper::new(served.scratch.books().clone(), redis.clone(), SweeperSettings::default())
            .sweep()
            .await
            .expect("the sweep runs");
        assert_eq!((swept.settled, swept.released), (0, 1), "{kind} on {backend}: {swept:?}");
        assert_eq!(
            served.hot_mirror().await,
            (Some(STOCK - 1), Some(0)),
            "{kind} on {backend}: the unit is back on the shelf, once"
        );
        locker.release().await;
        let answer = late.await.expect("the buyer finishes");
        answer.assert_error(503, "backend_unavailable");
        assert_eq!(
            served.scratch.sold().await,
            (1, 1),
            "{kind} on {backend}: the late order never committed"
        );
        assert_eq!(served.scratch.stock(HOT).await, STOCK - 1, "{kind} on {backend}");
        let audit = served.get("/admin/audit").await;
        assert_eq!(audit.body["clean"], true, "{kind} on {backend}: {}", audit.body);
    }
    Arc::into_inner(served).expect("every buyer is done").finish().await;
}

/// Stream workers crash on either database: one after its batch committed and before it was
/// acknowledged, one after reading a batch and before writing it. The next worker takes both
/// batches over once idle: every accepted order is in the books once, the stock moved once per
/// order in the books and in Redis, and the audit is clean.
async fn crashed_workers_write_each_order_once(backend: SqlBackend) {
    let served = Arc::new(Served::start(backend, Tuning::default()).await);
    let quick =
        WorkerSettings { batch: 5, claim_idle: Duration::from_millis(200), ..WorkerSettings::draining() };
    for kind in
        ported_queued_strategies().into_iter().filter(|kind| kind.spec().queue == Some(Queue::RedisStream))
    {
        assert_eq!(served.reset(&json!({ "products": [{ "id": HOT, "stock": STOCK }] })).await.status, 200);
        served.accept(kind, 10).await;
        let mut committed_then_died = Worker::new(&served.backends, kind, quick).expect("a stream worker");
        let batch = committed_then_died.next_batch(false).await.expect("Redis answers").expect("a batch");
        let persisted = committed_then_died.persist(&batch).await.expect("the batch commits");
        assert_eq!(persisted.written(), 5, "{kind} on {backend}");
        drop(committed_then_died);
        let mut read_then_died = Worker::new(&served.backends, kind, quick).expect("a stream worker");
        let batch = read_then_died.next_batch(false).await.expect("Redis answers").expect("a batch");
        assert_eq!(batch.len(), 5, "{kind} on {backend}: the second worker holds the rest");
        drop(read_then_died);
        assert_eq!(served.scratch.sold().await, (5, 5), "{kind} on {backend}: one batch committed");

        tokio::time::sleep(quick.claim_idle * 3).await;
        let report = Worker::new(&served.backends, kind, quick)
            .expect("a stream worker")
            .run_until_idle(Duration::from_secs(20))
            .await
            .unwrap_or_else(|err| panic!("{kind} on {backend}: the stream drains: {err}"));
        assert_eq!((report.persisted, report.redelivered), (5, 5), "{kind} on {backend}: {report:?}");
        assert_eq!(served.scratch.sold().await, (10, 10), "{kind} on {backend}: each order once");
        assert_eq!(served.scratch.stock(HOT).await, STOCK - 10, "{kind} on {backend}: moved once per order");
        assert_eq!(served.hot_mirror().await, (Some(STOCK - 10), Some(0)), "{kind} on {backend}");
        let audit = served.get("/admin/audit").await;
        assert_eq!(audit.body["clean"], true, "{kind} on {backend}: {}", audit.body);
    }
    Arc::into_inner(served).expect("every buyer is done").finish().await;
}

/// The database becomes unreachable while Redis and the broker stay up. Every queued strategy keeps
/// accepting unkeyed purchases (202); a keyed one answers 503 at once (its key is claimed in the
/// books) and takes nothing; the worker or consumer writes nothing meanwhile and gives up on
/// nothing. Once the database is back, the same worker or consumer writes every accepted order
/// once: the stock moved once per order in the books and in Redis, and the audit is clean.
async fn queued_strategies_wait_out_a_database_outage(backend: SqlBackend) {
    const ACCEPTED: usize = 4;
    let quick_to_fail = PgSettings {
        connections: 4,
        acquire_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_secs(2),
    };
    let (served, proxy) = Served::behind_proxy(backend, quick_to_fail).await;
    let quick = WorkerSettings {
        block: Duration::from_millis(50),
        claim_idle: Duration::from_millis(200),
        ..WorkerSettings::draining()
    };
    let accepted = i64::try_from(ACCEPTED).expect("a count");
    for kind in ported_queued_strategies() {
        assert_eq!(served.reset(&json!({ "products": [{ "id": HOT, "stock": STOCK }] })).await.status, 200);
        // The first sale claims the product for the Redis gate and fills the shelf from the books.
        served.accept(kind, 1).await;
        proxy.break_networking().await;
        served.accept(kind, ACCEPTED - 1).await;

        let (backlog, mirror) = (served.backlog(kind).await, served.hot_mirror().await);
        assert_eq!(backlog.pending, accepted, "{kind} on {backend}: {backlog:?}");
        let started = std::time::Instant::now();
        let keyed = served.buy(kind, &[(HOT, 1)], Some(&format!("outage-{kind}"))).await;
        keyed.assert_error(503, "backend_unavailable");
        assert!(started.elapsed() < Duration::from_secs(5), "{kind} on {backend}: a 503, never a hang");
        assert_eq!(
            served.backlog(kind).await,
            backlog,
            "{kind} on {backend}: the keyed purchase queued nothing"
        );
        assert_eq!(served.hot_mirror().await, mirror, "{kind} on {backend}: the keyed purchase took nothing");

        let mut drainer = Drainer::new(&served.backends, kind, quick);
        let stuck = drainer.run_until_idle(Duration::from_secs(2)).await;
        assert!(stuck.is_err(), "{kind} on {backend}: nothing is written while the books are unreachable");
        let report = drainer.report();
        assert_eq!(
            (report.persisted, report.failed_attempts, report.dead_lettered),
            (0, 0, 0),
            "{kind} on {backend}: an outage counts against no order: {report:?}"
        );
        assert_eq!(served.scratch.sold().await, (0, 0), "{kind} on {backend}: nothing written meanwhile");
        assert_eq!(served.backlog(kind).await, backlog, "{kind} on {backend}: nothing given up on");

        proxy.restore_networking();
        let report = drainer
            .run_until_idle(Duration::from_secs(20))
            .await
            .unwrap_or_else(|err| panic!("{kind} on {backend}: drains once the books are back: {err}"));
        assert_eq!(
            (report.persisted, report.failed_attempts, report.dead_lettered),
            (u64::try_from(ACCEPTED).expect("a count"), 0, 0),
            "{kind} on {backend}: {report:?}"
        );
        assert_eq!(served.scratch.sold().await, (accepted, accepted), "{kind} on {backend}: each order once");
        assert_eq!(served.scratch.stock(HOT).await, STOCK - accepted, "{kind} on {backend}");
        assert_eq!(served.hot_mirror().await, (Some(STOCK - accepted), Some(0)), "{kind} on {backend}");
        assert_eq!(served.backlog(kind).await, Backlog::default(), "{kind} on {backend}: settled");
        let audit = served.get_retrying("/admin/audit").await;
        assert_eq!(audit.body["clean"], true, "{kind} on {backend}: {}", audit.body);
    }
    drop(proxy);
    served.finish().await;
}

/// Pulls until the broker delivers a batch (one a dead consumer held comes back after `ack_wait`).
async fn next_batch(consumer: &mut queue_nats::Consumer) -> queue_nats::consumer::Batch {
    for _ in 0..100 {
        if let Some(batch) = consumer.next_batch(true).await.expect("the broker answers") {
            return batch;
        }
    }
    panic!("no message came back");
}

/// The broker consumer crashes on either database: one after its batch committed and before it
/// acknowledged it, one after pulling a batch and before writing it. The broker delivers both
/// batches again once their `ack_wait` passed: the committed one writes no second order and moves
/// no stock twice, the other is written once; the books and Redis agree and the audit is clean.
async fn crashed_broker_consumers_write_each_order_once(backend: SqlBackend) {
    let served = Served::start(backend, Tuning::default()).await;
    let quick =
        WorkerSettings { batch: 5, claim_idle: Duration::from_millis(200), ..WorkerSettings::draining() };
    let consumer = || queue_nats::Consumer::new(&served.backends, quick).expect("a broker consumer");
    for kind in
        ported_queued_strategies().into_iter().filter(|kind| kind.spec().queue == Some(Queue::NatsJetstream))
    {
        assert_eq!(served.reset(&json!({ "products": [{ "id": HOT, "stock": STOCK }] })).await.status, 200);
        served.accept(kind, 10).await;
        let mut committed_then_died = consumer();
        let batch = next_batch(&mut committed_then_died).await;
        let persisted = committed_then_died.persist(&batch).await.expect("the batch commits");
        assert_eq!(persisted.written(), 5, "{kind} on {backend}");
        drop((batch, committed_then_died));
        let mut pulled_then_died = consumer();
        let batch = next_batch(&mut pulled_then_died).await;
        assert_eq!(batch.len(), 5, "{kind} on {backend}: the second consumer holds the rest");
        drop((batch, pulled_then_died));
        assert_eq!(served.scratch.sold().await, (5, 5), "{kind} on {backend}: one batch committed");
        assert_eq!(served.scratch.stock(HOT).await, STOCK - 5, "{kind} on {backend}: with its stock");
        assert_eq!(
            served.backlog(kind).await,
            Backlog { pending: 10, pending_units: 10, in_queue: 10, dead_lettered: 0 },
            "{kind} on {backend}: nothing acknowledged, nothing settled"
        );
        let audit = served.get("/admin/audit").await;
        assert_eq!(audit.body["settled"], false, "{kind} on {backend}: {}", audit.body);
        assert_eq!(audit.body["queues"]["in_queue"], 10, "{kind} on {backend}: {}", audit.body);

        tokio::time::sleep(quick.claim_idle * 3).await;
        let mut heir = consumer();
        let report = heir
            .run_until_idle(Duration::from_secs(20))
            .await
            .unwrap_or_else(|err| panic!("{kind} on {backend}: the broker drains: {err}"));
        assert_eq!((report.persisted, report.redelivered), (5, 5), "{kind} on {backend}: {report:?}");
        assert_eq!(served.scratch.sold().await, (10, 10), "{kind} on {backend}: each order once");
        assert_eq!(served.scratch.stock(HOT).await, STOCK - 10, "{kind} on {backend}: moved once per order");
        assert_eq!(served.hot_mirror().await, (Some(STOCK - 10), Some(0)), "{kind} on {backend}");
        assert_eq!(served.backlog(kind).await, Backlog::default(), "{kind} on {backend}: settled");
        let audit = served.get("/admin/audit").await;
        assert_eq!(
            (&audit.body["clean"], &audit.body["settled"]),
            (&json!(true), &json!(true)),
            "{kind} on {backend}: {}",
            audit.body
        );
    }
    served.finish().await;
}

/// The queued strategies' contract on either database: a repeated Idempotency-Key replays the
/// first order (200, before and after the worker wrote it), a reused key with another body is
/// refused with 422, a malformed order with 400, and a multi-item order that does not fit takes
/// nothing (refused at once, or, by a strategy that accepts before it reserves, possibly accepted
/// and then cancelled whole by the worker). After the drain the books hold the one order, and the audit is
/// clean or names the cancellation.
async fn queued_replays_and_refusals(backend: SqlBackend) {
    let served = Served::start(backend, Tuning::default()).await;
    for kind in ported_queued_strategies() {
        let (first, too_much) = served.replay_and_refuse(kind, 202).await;
        // A strategy that accepts before it reserves may still refuse what its shelf shows short.
        let cancelled = match too_much.status {
            409 => 0,
            202 if !kind.spec().reserves_before_accepting => 1,
            other => panic!("{kind} on {backend}: unexpected {other} {}", too_much.body),
        };
        served.drain(kind).await;
        let replayed = served.buy(kind, &[(HOT, 2)], Some(&replay_key(kind))).await;
        assert_eq!(
            replayed.status, 200,
            "{kind} on {backend}: still replays once written: {}",
            replayed.body
        );
        assert_eq!(replayed.body["order_id"], first.body["order_id"], "{kind} on {backend}");
        assert_eq!(served.scratch.sold().await, (1, 2), "{kind} on {backend}: one order, written once");
        assert_eq!(served.scratch.stock(HOT).await, STOCK - 2, "{kind} on {backend}");
        assert_eq!(served.scratch.stock(7).await, 3, "{kind} on {backend}: the refused line took nothing");
        let audit = served.get("/admin/audit").await;
        assert_eq!(audit.body["queues"]["accepted_then_cancelled"], cancelled, "{kind} on {backend}");
        assert_eq!(audit.body["clean"], cancelled == 0, "{kind} on {backend}: {}", audit.body);
    }
    served.finish().await;
}

/// An order id as each server spells a UUID literal.
fn order_id_literal(backend: SqlBackend, id: &str) -> String {
    let id = uuid::Uuid::parse_str(id).expect("a UUID");
    match backend {
        SqlBackend::Postgres => format!("'{id}'"),
        SqlBackend::MySql => format!("X'{}'", id.simple()),
    }
}

/// One test per scenario and backend.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$scenario(SqlBackend::Postgres).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn mariadb() {
                    super::$scenario(SqlBackend::MySql).await;
                }
            }
        )*
    };
}

on_both!(
    flash_sale,
    replays_and_refusals,
    what_runs_where,
    kept_resets,
    database_down,
    sessions_killed_mid_sale,
    a_large_unit_pool_is_laid_out,
    a_drifted_redis_mirror_is_named_and_repaired,
    a_stranded_reservation_is_swept,
    queued_flash_sale,
    queued_replays_and_refusals,
    crashed_workers_write_each_order_once,
    queued_strategies_wait_out_a_database_outage,
    crashed_broker_consumers_write_each_order_once,
);

/// A reset waits for the purchases in progress (each holds a pass from its start to its end, past
/// its client's timeout too), and purchases that start meanwhile wait for the reset: none reserves
/// against the old catalogue and commits into the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_waits_for_the_purchases_in_progress() {
    let served = Arc::new(Served::start(SqlBackend::Postgres, Tuning::default()).await);
    let in_progress = served.app.purchase_pass().await;
    let reset = {
        let served = Arc::clone(&served);
        tokio::spawn(async move { served.reset(&json!({ "products": [{ "id": HOT, "stock": 5 }] })).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!reset.is_finished(), "the reset waits while a purchase is in progress");
    let late = {
        let served = Arc::clone(&served);
        tokio::spawn(async move { served.buy(StrategyKind::SqlAtomic, &[(HOT, 1)], None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!late.is_finished(), "a purchase that starts meanwhile waits for the reset");
    drop(in_progress);
    assert_eq!(reset.await.expect("the reset finishes").status, 200);
    let sold = late.await.expect("the purchase finishes");
    assert_eq!(sold.status, 201, "{}", sold.body);
    assert_eq!(served.scratch.stock(HOT).await, 4, "the late purchase sold from the new catalogue");
    Arc::into_inner(served).expect("every task is done").finish().await;
}
