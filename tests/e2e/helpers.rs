//! `spawn_app` and request helpers shared by the end-to-end tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use checkout_bench::app::{App, AppConfig, AppState};
use checkout_strategies::{Backends, PgSettings, StockPlan, StrategyKind, Tuning, backends};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::oneshot;

/// How a test wants its server.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) plan: StockPlan,
    pub(crate) tuning: Tuning,
    pub(crate) pg: PgSettings,
    pub(crate) admin_token: Option<String>,
    pub(crate) request_timeout: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            plan: StockPlan::flash_sale(100),
            tuning: Tuning::default(),
            pg: PgSettings::default(),
            admin_token: None,
            request_timeout: Duration::from_secs(10),
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
    _shutdown: oneshot::Sender<()>,
}

/// Starts a server on the test's own database, reset to `setup.plan`.
pub(crate) async fn spawn_app(connect: PgConnectOptions, setup: Setup) -> TestApp {
    let pool = backends::pg_pool_with(connect, setup.pg);
    spawn_app_on(pool, setup, true).await
}

/// Starts a server on `pool`; resets the catalogue first when `reset` is set.
pub(crate) async fn spawn_app_on(pool: PgPool, setup: Setup, reset: bool) -> TestApp {
    let backends = Backends { pg: pool.clone(), tuning: setup.tuning };
    let config = AppConfig { admin_token: setup.admin_token.clone(), request_timeout: setup.request_timeout };
    let app =
        Arc::new(App::new(&backends, config, setup.plan.clone()).await.expect("strategies take the plan"));
    if reset {
        app.reset(setup.plan.clone()).await.expect("reset the test database");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
    let addr: SocketAddr = listener.local_addr().expect("bound address");
    let (shutdown, stop) = oneshot::channel::<()>();
    let state = AppState(Arc::clone(&app));
    tokio::spawn(async move {
        checkout_bench::server::run(listener, state, async {
            let _ = stop.await;
        })
        .await
        .expect("server runs");
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    TestApp { url: format!("http://{addr}"), pool, client, app, _shutdown: shutdown }
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
    #[track_caller]
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

    /// Number of orders PostgreSQL holds.
    pub(crate) async fn order_count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(&self.pool).await.expect("count orders")
    }
}

/// The audit section that holds `kind`'s books: its own ledger when it keeps one, else PostgreSQL.
pub(crate) fn books_of<'a>(audit: &'a Value, kind: StrategyKind) -> &'a Value {
    if kind.spec().backend == "postgres" { audit } else { &audit["ledgers"][kind.as_str()] }
}
