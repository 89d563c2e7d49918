//! `spawn_app` and request helpers shared by the end-to-end tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use checkout_bench::admission::InflightLimits;
use checkout_bench::app::{App, AppConfig, AppState};
use checkout_bench::sessions::SessionConfig;
use checkout_strategies::background::Job;
use checkout_strategies::stock_sync::{StockSync, StockSyncSettings};
use checkout_strategies::{
    Backends, Gate, NatsBackend, NatsSettings, PgDriver, PgSettings, PurchasePool, RedisBackend, RedisKeys,
    RedisSettings, SqlPool, StockPlan, StrategyKind, Tuning, backends,
};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;

/// How a test wants its server.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) plan: StockPlan,
    pub(crate) tuning: Tuning,
    pub(crate) pg: PgSettings,
    pub(crate) admin_token: Option<String>,
    pub(crate) request_timeout: Duration,
    /// Redis URL (`REDIS_URL`, else the local default); keys go under a prefix unique to the test.
    pub(crate) redis_url: String,
    /// Nodes of a Redis Cluster for the strategies' keys instead of `redis_url` (empty: none).
    /// Sessions stay on `redis_url`, as in the server.
    pub(crate) redis_cluster: Vec<String>,
    pub(crate) redis: RedisSettings,
    /// NATS URL (`NATS_URL`, else the local default); streams are named after the test's prefix.
    pub(crate) nats_url: String,
    pub(crate) nats: NatsSettings,
    /// Redis URL of the session store; `None` is `redis_url`. Sessions go in database 1, under
    /// the test's prefix.
    pub(crate) sessions_url: Option<String>,
    pub(crate) session_ttl: Duration,
    pub(crate) require_session: bool,
    /// In-flight limits per backend. No limit unless a test sets one: tests that start hundreds of
    /// buyers at once are about contention, not admission.
    pub(crate) inflight: InflightLimits,
    /// The client the per-sale SQL strategies buy through (`PG_DRIVER`).
    pub(crate) pg_driver: PgDriver,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            plan: StockPlan::flash_sale(100),
            tuning: Tuning::default(),
            pg: PgSettings::default(),
            admin_token: None,
            request_timeout: Duration::from_secs(10),
            redis_url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            redis_cluster: Vec::new(),
            redis: RedisSettings::default(),
            nats_url: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
            nats: NatsSettings::default(),
            sessions_url: None,
            session_ttl: Duration::from_secs(1800),
            require_session: true,
            inflight: InflightLimits::unlimited(),
            pg_driver: PgDriver::default(),
        }
    }
}

/// A server on a free loopback port, with the pool and an HTTP client to poke it.
#[derive(Debug)]
pub(crate) struct TestApp {
    pub(crate) url: String,
    pub(crate) pool: PgPool,
    pub(crate) client: reqwest::Client,
    pub(crate) app: Arc<App>,
    /// The test's Redis backend, keys under its own prefix.
    pub(crate) redis: RedisBackend,
    /// The test's broker, streams under the same prefix.
    pub(crate) nats: NatsBackend,
    /// Where the per-sale SQL strategies take their connections: `pool` itself unless the setup
    /// chose another driver.
    pub(crate) purchases: PurchasePool,
    _shutdown: oneshot::Sender<()>,
}

/// Starts a server on the test's own database, reset to `setup.plan`.
pub(crate) async fn spawn_app(connect: PgConnectOptions, setup: Setup) -> TestApp {
    let pool = backends::pg_pool_with(connect, setup.pg);
    spawn_app_on(pool, setup, true).await
}

/// Starts a server on `pool`; resets the catalogue first when `reset` is set.
pub(crate) async fn spawn_app_on(pool: PgPool, setup: Setup, reset: bool) -> TestApp {
    let keys = RedisKeys::new(format!("test-{}:", uuid::Uuid::new_v4().simple()));
    let redis = if setup.redis_cluster.is_empty() {
        RedisBackend::lazy(&setup.redis_url, keys.clone(), setup.redis).expect("valid REDIS_URL")
    } else {
        RedisBackend::lazy_cluster(&setup.redis_cluster, &keys, setup.redis).expect("valid cluster nodes")
    };
    let purchases = PurchasePool::with_options(setup.pg_driver, &pool, &pool.connect_options(), setup.pg);
    let backends = Backends::new(pool.clone(), redis.clone(), setup.tuning).with_purchases(purchases.clone());
    let nats = NatsBackend::lazy(&setup.nats_url, keys.prefix(), setup.nats);
    let backends = backends.with_nats(nats.clone());
    let sessions_url = setup.sessions_url.as_deref().unwrap_or(&setup.redis_url);
    let sessions = SessionConfig {
        prefix: keys.prefix().to_owned(),
        ttl: setup.session_ttl,
        required: setup.require_session,
        redis: setup.redis,
        ..SessionConfig::new(sessions_url, 1).expect("valid session Redis URL")
    };
    let config = AppConfig {
        admin_token: setup.admin_token.clone(),
        request_timeout: setup.request_timeout,
        sessions,
        inflight: setup.inflight,
    };
    let app =
        Arc::new(App::new(&backends, config, setup.plan.clone()).await.expect("strategies take the plan"));
    if reset {
        app.reset(setup.plan.clone()).await.expect("reset the test database");
    }
    let (addr, shutdown) = serve(&app).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    TestApp { url: format!("http://{addr}"), pool, client, app, redis, nats, purchases, _shutdown: shutdown }
}

/// Serves `app` on a free loopback port until the returned sender is dropped.
pub(crate) async fn serve(app: &Arc<App>) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
    let addr: SocketAddr = listener.local_addr().expect("bound address");
    let (shutdown, stop) = oneshot::channel::<()>();
    let state = AppState(Arc::clone(app));
    tokio::spawn(async move {
        checkout_bench::server::run(listener, state, async {
            let _ = stop.await;
        })
        .await
        .expect("server runs");
    });
    (addr, shutdown)
}

impl Drop for TestApp {
    /// Deletes the test's streams from the shared broker, which would otherwise keep them: on a
    /// fresh connection on a thread of its own, since the test's runtime is the one blocked here.
    fn drop(&mut self) {
        if !self.nats.is_connected() {
            return;
        }
        let nats = NatsBackend::lazy(self.nats.url(), self.redis.keys.prefix(), NatsSettings::default());
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(nats.delete_streams()).ok()
        })
        .join();
        if !matches!(deleted, Ok(Some(()))) {
            eprintln!("the test's broker streams were not deleted");
        }
    }
}

/// A valid purchase body.
pub(crate) fn order_body(items: &[(i64, i64)]) -> Value {
    json!({
        "items": items.iter().map(|(id, q)| json!({ "product_id": id, "quantity": q })).collect::<Vec<_>>(),
        "delivery": { "address": "1 Khreshchatyk St, Kyiv", "phone": "+380441234567", "email": "buyer@example.com" },
        "user": "buyer",
    })
}

/// A plan with exactly these products and nothing else.
pub(crate) fn plan_of(products: &[(i64, i64)]) -> StockPlan {
    serde_json::from_value(json!({
        "products": products.iter().map(|(id, stock)| json!({ "id": id, "stock": stock })).collect::<Vec<_>>()
    }))
    .expect("valid plan")
}

impl TestApp {
    /// `POST /strategies/{kind}/purchase`.
    pub(crate) async fn purchase(&self, kind: StrategyKind, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/strategies/{kind}/purchase", self.url))
            .json(body)
            .send()
            .await
            .expect("server answers")
    }

    /// `GET` a JSON document, asserting 200.
    pub(crate) async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.url)).send().await.expect("server answers");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `GET /admin/audit`.
    pub(crate) async fn audit(&self) -> Value {
        self.get_json("/admin/audit").await
    }

    /// Stock of a product as PostgreSQL holds it.
    pub(crate) async fn stock(&self, product: i64) -> i64 {
        sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
            .bind(product)
            .fetch_one(&self.pool)
            .await
            .expect("product exists")
    }

    /// Stock of a product as Redis holds it, `None` when the key is missing.
    pub(crate) async fn redis_stock(&self, product: i64) -> Option<i64> {
        let mut conn = self.redis.conn.clone();
        redis::cmd("GET")
            .arg(self.redis.keys.stock(product))
            .query_async(&mut conn)
            .await
            .expect("Redis answers")
    }

    /// Number of orders PostgreSQL holds.
    pub(crate) async fn order_count(&self) -> i64 {
        // Void rows are fences for order ids settled while in doubt, not orders.
        sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status <> 'void'")
            .fetch_one(&self.pool)
            .await
            .expect("count orders")
    }
}

/// The audit section that holds `kind`'s books: its own ledger when it keeps one, else PostgreSQL.
pub(crate) fn books_of(audit: &Value, kind: StrategyKind) -> &Value {
    if kind.spec().persists_to_postgres() { audit } else { &audit["ledgers"][kind.as_str()] }
}

/// `product`'s row in `books` (the audit, or one of its ledgers); the test fails when it is missing.
#[track_caller]
pub(crate) fn audited_product(books: &Value, product: i64, kind: StrategyKind) -> Value {
    books["products"]
        .as_array()
        .expect("products")
        .iter()
        .find(|p| p["product_id"] == product)
        .unwrap_or_else(|| panic!("{kind}: product {product} missing from the audit: {books}"))
        .clone()
}

/// Runs `buyers` calls of `buy` at once: each waits behind one barrier, so they contend instead
/// of arriving one by one. Returns their results in order.
pub(crate) async fn all_at_once<T, F, Fut>(app: &Arc<TestApp>, buyers: usize, buy: F) -> Vec<T>
where
    F: Fn(Arc<TestApp>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(buyers));
    let tasks: Vec<_> = (0..buyers)
        .map(|_| {
            let (purchase, barrier) = (buy(Arc::clone(app)), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                purchase.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(buyers);
    for task in tasks {
        results.push(task.await.expect("buyer task"));
    }
    results
}

/// Checks the answers to same-key requests sent at once: exactly one has `created` (201, or 202
/// for queueing strategies), every other is a 200 replay, and all name one order. Returns the
/// creating answer.
#[track_caller]
pub(crate) fn one_order_for_the_key(answers: &[Answer], created: u16, kind: StrategyKind) -> &Answer {
    let first: Vec<&Answer> = answers.iter().filter(|answer| answer.status == created).collect();
    assert_eq!(first.len(), 1, "{kind}: exactly one of the same-key requests creates the order");
    let order_id = &first[0].body["order_id"];
    for answer in answers {
        assert!(
            answer.status == created || answer.status == 200,
            "{kind}: a same-key request is created or replayed, never refused: {} {}",
            answer.status,
            answer.body
        );
        assert_eq!(&answer.body["order_id"], order_id, "{kind}: every same-key request answers one order");
    }
    first[0]
}

/// An HTTP answer read whole: status, headers, and the body parsed as JSON.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

/// Reads `response` whole. Every route of the contract answers JSON, so a body that is not JSON
/// fails the test.
pub(crate) async fn read_answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("read the body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("every answer is JSON, got {status} with {text:?}: {err}"));
    Answer { status, headers, body }
}

impl Answer {
    /// Asserts an error answer: `status`, a JSON content type, `error` = `code` and a human
    /// `message`.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status of an {code:?} answer: {}", self.body);
        assert_eq!(self.body["error"], code, "error code: {}", self.body);
        assert!(
            self.body["message"].as_str().is_some_and(|message| !message.is_empty()),
            "every error carries a human message: {}",
            self.body
        );
        let content_type = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error bodies are declared JSON, got Content-Type {content_type:?}: {}",
            self.body
        );
    }

    /// Asserts a new order: 201, `Location: /orders/{id}`, status confirmed, the strategy's name.
    /// Returns the order id.
    #[track_caller]
    pub(crate) fn assert_placed(&self, kind: StrategyKind) -> String {
        assert_eq!(self.status, 201, "{kind}: a placed order answers 201: {}", self.body);
        assert_eq!(self.body["status"], "confirmed", "{kind}: placed orders are confirmed: {}", self.body);
        assert_eq!(self.body["strategy"], kind.as_str(), "{kind}: receipt names the strategy: {}", self.body);
        let order_id = self.body["order_id"].as_str().expect("receipt has an order_id").to_owned();
        assert!(uuid::Uuid::parse_str(&order_id).is_ok(), "{kind}: order_id is a UUID: {order_id}");
        let location = self.headers.get(reqwest::header::LOCATION).and_then(|value| value.to_str().ok());
        assert_eq!(
            location,
            Some(format!("/orders/{order_id}").as_str()),
            "{kind}: a placed order points at itself"
        );
        order_id
    }
}

/// The catalogue and the order tables as PostgreSQL holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) products: Vec<(i64, i64)>,
    pub(crate) orders: i64,
    pub(crate) order_items: i64,
}

/// Reads a [`Snapshot`] through `pool`.
pub(crate) async fn snapshot_of(pool: &PgPool) -> Snapshot {
    let products = sqlx::query_as("SELECT id, stock FROM products ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("read products");
    let orders =
        sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(pool).await.expect("count orders");
    let order_items =
        sqlx::query_scalar("SELECT COUNT(*) FROM order_items").fetch_one(pool).await.expect("count items");
    Snapshot { products, orders, order_items }
}

impl TestApp {
    /// `POST /strategies/{kind}/purchase`, with an `Idempotency-Key` when `key` is set, read whole.
    pub(crate) async fn buy(&self, kind: StrategyKind, body: &Value, key: Option<&str>) -> Answer {
        let mut request = self.client.post(format!("{}/strategies/{kind}/purchase", self.url)).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        read_answer(request.send().await.expect("server answers")).await
    }

    /// `GET path`, read whole, whatever the status.
    pub(crate) async fn get(&self, path: &str) -> Answer {
        read_answer(self.client.get(format!("{}{path}", self.url)).send().await.expect("server answers"))
            .await
    }

    /// The catalogue and order tables, read through the test's pool.
    pub(crate) async fn snapshot(&self) -> Snapshot {
        snapshot_of(&self.pool).await
    }

    /// `kind`'s line of `GET /stats`.
    pub(crate) async fn stats_of(&self, kind: StrategyKind) -> Value {
        let stats = self.get_json("/stats").await;
        stats
            .as_array()
            .expect("GET /stats is an array")
            .iter()
            .find(|line| line["strategy"] == kind.as_str())
            .unwrap_or_else(|| panic!("GET /stats has no line for {kind}: {stats}"))
            .clone()
    }

    /// Applies every order committed insert-only to PostgreSQL's stock, as the stock sync job
    /// does in a server. Returns the order lines applied.
    pub(crate) async fn sync_stock(&self) -> i64 {
        StockSync::new(SqlPool::Postgres(self.pool.clone()), StockSyncSettings::default())
            .drain()
            .await
            .expect("stock sync")
    }

    /// Stock of `product` in the books `kind` sells from: its own ledger, or PostgreSQL (once the
    /// stock sync caught up, for strategies that need one).
    pub(crate) async fn stock_in(&self, kind: StrategyKind, product: i64) -> i64 {
        if kind.background().contains(&Job::StockSync) {
            self.sync_stock().await;
        }
        if kind.spec().gate == Gate::Units {
            // The unit pool is its books: what is left is its free rows, as GET /products says.
            let product = self.get_json(&format!("/products/{product}")).await;
            return product["stock"].as_i64().expect("stock");
        }
        if kind.spec().persists_to_postgres() {
            return self.stock(product).await;
        }
        let audit = self.audit().await;
        books_of(&audit, kind)["products"]
            .as_array()
            .expect("ledger lists products")
            .iter()
            .find(|row| row["product_id"] == product)
            .and_then(|row| row["final_stock"].as_i64())
            .unwrap_or_else(|| panic!("{kind}: product {product} missing from its ledger: {audit}"))
    }

    /// Orders in the books `kind` sells from.
    pub(crate) async fn orders_in(&self, kind: StrategyKind) -> i64 {
        if kind.spec().persists_to_postgres() {
            return self.order_count().await;
        }
        let audit = self.audit().await;
        books_of(&audit, kind)["total"]["orders"].as_i64().expect("ledger counts orders")
    }
}

/// Polls `check` until it holds, failing the test with `what` if it does not within `within`.
/// Waits for a state, not for a duration: a slow machine only makes it poll longer.
pub(crate) async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: still not true after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy in front of a server (PostgreSQL, MariaDB, Redis) that can cut the network.
/// `break_networking` drops every live connection and closes new ones as soon as they are
/// accepted; `stall_networking` keeps every connection open but forwards nothing, like a
/// partition that sends no reset; `restore_networking` forwards new connections again (stalled
/// ones are closed). Dropping the proxy closes everything.
#[derive(Debug)]
pub(crate) struct ChaosProxy {
    addr: SocketAddr,
    state: tokio::sync::watch::Sender<ProxyState>,
    live: Arc<std::sync::atomic::AtomicUsize>,
    accept_loop: tokio::task::JoinHandle<()>,
}

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    Up,
    Broken,
    Stalled,
}

/// The network, and a count of the cuts: a connection lives until the count moves past the one it
/// was accepted under.
#[derive(Debug, Clone, Copy)]
struct ProxyState {
    network: Network,
    generation: u64,
}

/// Counts a connection the proxy holds for as long as it lives.
#[derive(Debug)]
struct LiveConnection(Arc<std::sync::atomic::AtomicUsize>);

impl LiveConnection {
    fn new(live: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(Arc::clone(live))
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl ChaosProxy {
    /// Starts a proxy on a free loopback port forwarding to the server `backend` connects to.
    pub(crate) async fn start(backend: &PgConnectOptions) -> Self {
        Self::start_tcp(backend.get_host(), backend.get_port()).await
    }

    /// Starts a proxy on a free loopback port forwarding to the server `url` names (any scheme
    /// with a host and a port: `mysql://…`, for one); [`ChaosProxy::url`] names it through the proxy.
    pub(crate) async fn in_front_of(url: &str) -> Self {
        let url = reqwest::Url::parse(url).unwrap_or_else(|err| panic!("{url}: {err}"));
        let host = url.host_str().unwrap_or_else(|| panic!("{url} names no host"));
        let port = url.port().unwrap_or_else(|| panic!("{url} names no port"));
        Self::start_tcp(host, port).await
    }

    /// Starts a proxy on a free loopback port forwarding to `host:port` (Redis, for one).
    pub(crate) async fn start_tcp(host: &str, port: u16) -> Self {
        let target = (host.to_owned(), port);
        assert!(!target.0.starts_with('/'), "the proxy forwards TCP, not a Unix socket: {}", target.0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (state, watcher) =
            tokio::sync::watch::channel(ProxyState { network: Network::Up, generation: 0 });
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&live);
        let accept_loop = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let ProxyState { network, generation } = *watcher.borrow();
                if network == Network::Broken {
                    continue; // dropped: the client sees its connection closed
                }
                let connection = LiveConnection::new(&counter);
                let mut watcher = watcher.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let _connection = connection;
                    let cut = |now: &ProxyState| now.generation != generation;
                    if network == Network::Up {
                        let Ok(mut server) =
                            tokio::net::TcpStream::connect((target.0.as_str(), target.1)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                            _ = watcher.wait_for(|now| cut(now) || now.network == Network::Stalled) => {}
                        }
                    }
                    // Stalled: hold the connection open, forward nothing, until the next cut.
                    let _ = watcher.wait_for(cut).await;
                });
            }
        });
        Self { addr, state, live, accept_loop }
    }

    /// The proxy's own address, where clients connect.
    pub(crate) const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `backend` with its host and port replaced by the proxy's.
    pub(crate) fn connect_options(&self, backend: &PgConnectOptions) -> PgConnectOptions {
        backend.clone().host("127.0.0.1").port(self.addr.port())
    }

    /// `url` with its host and port replaced by the proxy's.
    pub(crate) fn url(&self, url: &str) -> String {
        let mut url = reqwest::Url::parse(url).unwrap_or_else(|err| panic!("{url}: {err}"));
        url.set_ip_host(self.addr.ip()).expect("a URL with a host");
        url.set_port(Some(self.addr.port())).expect("a URL with a port");
        url.into()
    }

    /// Refuses new connections and returns once every live one is closed.
    pub(crate) async fn break_networking(&self) {
        self.state.send_modify(|state| {
            state.network = Network::Broken;
            state.generation += 1;
        });
        let live = &self.live;
        eventually("the proxy closes every live connection", Duration::from_secs(10), || async {
            live.load(std::sync::atomic::Ordering::SeqCst) == 0
        })
        .await;
    }

    /// Stops forwarding in both directions; connections stay open, new ones are accepted.
    pub(crate) fn stall_networking(&self) {
        self.state.send_modify(|state| state.network = Network::Stalled);
    }

    /// Forwards new connections again; connections held by a stall are closed.
    pub(crate) fn restore_networking(&self) {
        self.state.send_modify(|state| {
            if state.network == Network::Stalled {
                state.generation += 1;
            }
            state.network = Network::Up;
        });
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.state.send_modify(|state| {
            state.network = Network::Broken;
            state.generation += 1;
        });
        self.accept_loop.abort();
    }
}

/// A session of its own holding one product's row lock until released: purchases of that product
/// queue behind it, which catches them in flight.
#[derive(Debug)]
pub(crate) struct RowLock(PgConnection);

impl RowLock {
    /// Opens a session on the database `connect` names and locks `product`'s row.
    pub(crate) async fn take(connect: &PgConnectOptions, product: i64) -> Self {
        let mut locker = PgConnection::connect_with(connect).await.expect("connect the locking session");
        sqlx::query("BEGIN").execute(&mut locker).await.expect("begin");
        sqlx::query("SELECT stock FROM products WHERE id = $1 FOR UPDATE")
            .bind(product)
            .execute(&mut locker)
            .await
            .expect("lock the row");
        Self(locker)
    }

    /// Commits, which lets the queued purchases go on, and closes the session.
    pub(crate) async fn release(mut self) {
        sqlx::query("COMMIT").execute(&mut self.0).await.expect("release the row lock");
        self.0.close().await.expect("close the locking session");
    }
}

/// Waits until at least `sessions` sessions of `pool`'s database wait on a lock: that many
/// purchases have reached a locked row.
pub(crate) async fn wait_for_lock_waiters(pool: &PgPool, sessions: i64, within: Duration) {
    eventually(&format!("{sessions} purchases queue behind the row lock"), within, || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("read pg_stat_activity")
            >= sessions
    })
    .await;
}
