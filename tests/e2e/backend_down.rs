//! PostgreSQL gone: purchases and reads answer 503 `backend_unavailable` with `Retry-After`, in
//! bounded time, never a hang and never a 500; nothing half-done survives the outage; the server
//! sells again once the database is back; the memory strategy never notices.
//!
//! The time bounds below only tell a hang from an answer: they are far above the configured
//! timeouts, and no assertion is about speed.

use std::time::Duration;

use checkout_strategies::{Gate, PgDriver, PgSettings, StrategyKind, backends};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{
    Answer, ChaosProxy, Setup, TestApp, eventually, order_body, plan_of, snapshot_of, spawn_app_on,
};

/// Longer than any timeout the servers below are configured with: reaching it means a hang.
const HANG: Duration = Duration::from_secs(10);

/// Strategies whose gate is PostgreSQL's row: every purchase of theirs needs the database.
fn sql_kinds() -> impl Iterator<Item = StrategyKind> {
    StrategyKind::ALL.into_iter().filter(|kind| kind.spec().gate == Gate::Postgres)
}

/// How many [`sql_kinds`] there are, as a count of orders or units.
fn sql_kind_count() -> i64 {
    i64::try_from(sql_kinds().count()).expect("a handful")
}

/// Pool settings that give up quickly, so an outage is answered in about a second.
const fn impatient() -> PgSettings {
    PgSettings {
        connections: 4,
        acquire_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(2),
    }
}

/// A loopback port nothing listens on.
async fn dead_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}

/// `GET path` or a purchase, failing the test if the server does not answer within [`HANG`].
async fn within_bound<F: std::future::Future<Output = Answer>>(what: &str, request: F) -> Answer {
    tokio::time::timeout(HANG, request).await.unwrap_or_else(|_| {
        panic!("{what}: no answer within {HANG:?}; an outage must be answered, not hung on")
    })
}

/// 503: `backend_unavailable` when nothing was written, or `outcome_unknown` with the order id when
/// the connection broke after the request left and PostgreSQL could not be asked what happened.
#[track_caller]
fn assert_unavailable(what: &str, answer: &Answer) {
    assert_eq!(answer.status, 503, "{what}: an outage answers 503, never 500 or 2xx: {}", answer.body);
    if answer.body["error"] == "outcome_unknown" {
        assert!(
            answer.body["order_id"].is_string(),
            "{what}: an unknown outcome names the order: {}",
            answer.body
        );
    } else {
        answer.assert_error(503, "backend_unavailable");
    }
    assert!(answer.headers.contains_key(reqwest::header::RETRY_AFTER), "{what}: 503 tells when to retry");
}

async fn assert_sql_purchases_unavailable(app: &TestApp) {
    for kind in sql_kinds() {
        let what = format!("{kind} purchase");
        let answer = within_bound(&what, app.buy(kind, &order_body(&[(100, 1)]), None)).await;
        assert_unavailable(&what, &answer);
        let keyed = within_bound(&what, app.buy(kind, &order_body(&[(100, 1)]), Some("outage-key"))).await;
        assert_unavailable(&format!("{what} with an idempotency key"), &keyed);
    }
}

/// No database at all: the pool points at a port nothing listens on.
#[tokio::test]
async fn database_never_reachable() {
    never_reachable(PgDriver::Sqlx).await;
}

#[tokio::test]
async fn database_never_reachable_on_tokio_postgres() {
    never_reachable(PgDriver::TokioPostgres).await;
}

async fn never_reachable(pg_driver: PgDriver) {
    let port = dead_port().await;
    let options =
        PgConnectOptions::new().host("127.0.0.1").port(port).username("postgres").database("checkout");
    let pool = backends::pg_pool_with(options, impatient());
    let setup = Setup { plan: plan_of(&[(100, 10)]), pg: impatient(), pg_driver, ..Setup::default() };
    let app = spawn_app_on(pool, setup, false).await;

    assert_sql_purchases_unavailable(&app).await;

    let health = within_bound("GET /healthz", app.get("/healthz")).await;
    assert_eq!(health.status, 503, "healthz reports the outage: {}", health.body);
    assert_eq!(
        health.body["backends"]["postgres"]["status"], "down",
        "healthz names the backend: {}",
        health.body
    );

    for path in ["/products/100", &format!("/orders/{}", uuid::Uuid::new_v4()), "/admin/audit"] {
        assert_unavailable(path, &within_bound(path, app.get(path)).await);
    }
    let reset = app
        .client
        .post(format!("{}/admin/reset", app.url))
        .json(&serde_json::json!({ "products": [{ "id": 100, "stock": 5 }] }))
        .send();
    let reset = within_bound("POST /admin/reset", async {
        crate::helpers::read_answer(reset.await.expect("server answers")).await
    })
    .await;
    assert_unavailable("POST /admin/reset", &reset);

    // What needs no database keeps working.
    let memory = StrategyKind::Memory;
    within_bound("memory purchase", app.buy(memory, &order_body(&[(100, 1)]), None))
        .await
        .assert_placed(memory);
    app.get_json("/strategies").await;
    for kind in sql_kinds() {
        let stats = app.stats_of(kind).await;
        assert_eq!(stats["confirmed"], 0, "{kind}: nothing confirmed during the outage: {stats}");
        assert_eq!(stats["errors"]["backend_unavailable"], 2, "{kind}: outages are counted as such: {stats}");
    }
    assert_eq!(app.stats_of(memory).await["confirmed"], 1, "memory sells through the outage");
}

/// Each scenario once per driver of the per-sale SQL strategies: `$sqlx` on sqlx, `$raw` on
/// tokio-postgres.
macro_rules! on_both_drivers {
    ($($scenario:ident: $sqlx:ident, $raw:ident;)*) => {
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $sqlx(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                $scenario(connect, PgDriver::Sqlx).await;
            }

            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $raw(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                $scenario(connect, PgDriver::TokioPostgres).await;
            }
        )*
    };
}

on_both_drivers! {
    lost_and_restored: database_lost_and_restored, database_lost_and_restored_on_tokio_postgres;
    network_blip: purchases_after_a_network_blip_succeed, purchases_after_a_network_blip_succeed_on_tokio_postgres;
    network_stall: purchases_answer_when_the_network_stalls, purchases_answer_when_the_network_stalls_on_tokio_postgres;
}

async fn lost_and_restored(connect: PgConnectOptions, pg_driver: PgDriver) {
    let proxy = ChaosProxy::start(&connect).await;
    let direct = backends::pg_pool_with(connect.clone(), PgSettings::default());
    let pool = backends::pg_pool_with(proxy.connect_options(&connect), impatient());
    let setup = Setup { plan: plan_of(&[(100, 10)]), pg: impatient(), pg_driver, ..Setup::default() };
    let app = spawn_app_on(pool, setup, true).await;

    sell_one_each(&app).await;
    let healthy = snapshot_of(&direct).await;
    assert_eq!(healthy.orders, sql_kind_count(), "one order per SQL strategy before the outage");

    proxy.break_networking().await;
    // Two purchases per SQL strategy, more than the pool's connections: every connection opened
    // before the outage meets it here, so what follows the restore is about reconnecting. Connections the outage
    // killed while idle are `purchases_after_a_network_blip_succeed`'s subject.
    assert_sql_purchases_unavailable(&app).await;
    let health = within_bound("GET /healthz", app.get("/healthz")).await;
    assert_eq!(health.status, 503, "healthz reports the outage: {}", health.body);
    assert_eq!(
        health.body["backends"]["postgres"]["status"], "down",
        "healthz names the backend: {}",
        health.body
    );
    assert_unavailable(
        "GET /products/100",
        &within_bound("GET /products/100", app.get("/products/100")).await,
    );
    assert_eq!(
        snapshot_of(&direct).await,
        healthy,
        "purchases that failed in the outage left nothing behind"
    );

    proxy.restore_networking();
    assert_recovered(&app, "an outage").await;
    assert_eq!(
        app.get_json("/healthz").await["backends"]["postgres"]["status"],
        "up",
        "healthz sees the recovery"
    );
}

/// The network drops every connection and comes straight back: PostgreSQL never stopped
/// answering, so the next purchases are served.
async fn network_blip(connect: PgConnectOptions, pg_driver: PgDriver) {
    let proxy = ChaosProxy::start(&connect).await;
    let pool = backends::pg_pool_with(proxy.connect_options(&connect), impatient());
    let setup = Setup { plan: plan_of(&[(100, 10)]), pg: impatient(), pg_driver, ..Setup::default() };
    let app = spawn_app_on(pool, setup, true).await;
    sell_one_each(&app).await;
    // Connections busy during a blip fail their own request (its outcome is unknown, so 503 is
    // the honest answer). Idle ones die silently; the pool must not hand them out afterwards.
    proxy.break_networking().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore_networking();
    for kind in sql_kinds() {
        let what = format!("{kind} purchase after the blip");
        within_bound(&what, app.buy(kind, &order_body(&[(100, 1)]), None)).await.assert_placed(kind);
    }
}

/// One single-unit purchase of product 100 per SQL strategy, each placed.
async fn sell_one_each(app: &TestApp) {
    for kind in sql_kinds() {
        app.buy(kind, &order_body(&[(100, 1)]), None).await.assert_placed(kind);
    }
}

/// Once the network is back: every SQL strategy sells again, and the books hold exactly the
/// confirmed purchases (one per strategy before `what`, one after), clean.
async fn assert_recovered(app: &TestApp, what: &str) {
    sell_one_each(app).await;
    let confirmed = 2 * sql_kind_count();
    assert_eq!(app.stock(100).await, 10 - confirmed, "only the confirmed purchases took stock");
    assert_eq!(app.order_count().await, confirmed, "only the confirmed purchases were written");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{what} leaves the books clean: {audit}");
}

/// A server behind `proxy` with purchases bounded by a short request timeout, that has sold one
/// unit per SQL strategy and holds an idle pooled connection for purchases.
async fn served_through(proxy: &ChaosProxy, connect: &PgConnectOptions, pg_driver: PgDriver) -> TestApp {
    let pool = backends::pg_pool_with(proxy.connect_options(connect), impatient());
    let setup = Setup {
        plan: plan_of(&[(100, 10)]),
        pg: impatient(),
        request_timeout: Duration::from_secs(2),
        pg_driver,
        ..Setup::default()
    };
    let app = spawn_app_on(pool, setup, true).await;
    sell_one_each(&app).await;
    eventually("a connection returns to the pool", HANG, || async { app.purchases.idle_connections() > 0 })
        .await;
    app
}

/// The network stops forwarding without closing anything, so no error ever comes back: purchases
/// still answer 503 within the request timeout, and nothing they started survives.
async fn network_stall(connect: PgConnectOptions, pg_driver: PgDriver) {
    let proxy = ChaosProxy::start(&connect).await;
    let app = served_through(&proxy, &connect, pg_driver).await;
    let direct = backends::pg_pool_with(connect.clone(), PgSettings::default());
    let before = snapshot_of(&direct).await;

    proxy.stall_networking();
    assert_sql_purchases_unavailable(&app).await;
    assert_eq!(snapshot_of(&direct).await, before, "purchases stalled on the network wrote nothing");

    proxy.restore_networking();
    assert_recovered(&app, "a stall").await;
}

/// The same stall, seen by the routes that read PostgreSQL outside a purchase: they must answer
/// 503 too rather than wait on a connection that will never answer.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn reads_answer_when_the_network_stalls(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let proxy = ChaosProxy::start(&connect).await;
    let app = served_through(&proxy, &connect, PgDriver::Sqlx).await;

    proxy.stall_networking();
    let health = within_bound("GET /healthz", app.get("/healthz")).await;
    assert_eq!(health.status, 503, "healthz reports the stall: {}", health.body);
    assert_eq!(
        health.body["backends"]["postgres"]["status"], "down",
        "healthz names the backend: {}",
        health.body
    );
    for path in ["/products/100", &format!("/orders/{}", uuid::Uuid::new_v4())] {
        assert_unavailable(path, &within_bound(path, app.get(path)).await);
    }
}
