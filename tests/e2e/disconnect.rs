//! A client that gives up mid-purchase loses nothing and gains nothing half-done: the purchase
//! runs in its own task, so it either completes whole or not at all, whoever is still listening.
//!
//! To catch the purchase in flight, a separate session holds the product's row lock; the purchase
//! queues behind it, the client leaves (or the server's own deadline passes), and only then is the
//! lock released.

use std::time::Duration;

use checkout_strategies::StrategyKind;
use serde_json::Value;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::io::AsyncWriteExt;

use crate::helpers::{
    RowLock, Setup, TestApp, eventually, order_body, plan_of, spawn_app, wait_for_lock_waiters,
};

const HOT: i64 = 100;
const STOCK: i64 = 10;
const QUANTITY: i64 = 3;
/// How long the tests wait for a state before failing; only a stuck purchase reaches it.
const PATIENCE: Duration = Duration::from_secs(15);

/// The one order in PostgreSQL once it exists.
async fn the_order(app: &TestApp, kind: StrategyKind) -> (uuid::Uuid, String, String) {
    eventually(&format!("{kind}: the abandoned purchase completes"), PATIENCE, || async {
        app.order_count().await > 0
    })
    .await;
    let orders: Vec<(uuid::Uuid, String, String)> = sqlx::query_as("SELECT id, strategy, status FROM orders")
        .fetch_all(&app.pool)
        .await
        .expect("read orders");
    assert_eq!(orders.len(), 1, "{kind}: one purchase, one order: {orders:?}");
    orders.into_iter().next().expect("one order")
}

/// Asserts the books after the purchase completed: its units gone, one order, clean audit, and
/// the statistics counting it as confirmed.
async fn assert_completed_once(app: &TestApp, kind: StrategyKind, order_id: uuid::Uuid) {
    assert_eq!(
        app.stock(HOT).await,
        STOCK - QUANTITY,
        "{kind}: the order's units, and only them, left the shelf"
    );
    let order = app.get_json(&format!("/orders/{order_id}")).await;
    assert_eq!(order["status"], "confirmed", "{kind}: the completed order is confirmed: {order}");
    assert_eq!(order["items"][0]["quantity"], QUANTITY, "{kind}: the order holds what was asked: {order}");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{kind}: an abandoned purchase leaves the books clean: {audit}");
    assert_eq!(audit["total"]["orders"], 1, "{kind}: one order in the books: {audit}");
    eventually(&format!("{kind}: /stats counts the purchase as confirmed"), PATIENCE, || async {
        let stats: Value = app.stats_of(kind).await;
        stats["attempts"] == 1 && stats["confirmed"] == 1
    })
    .await;
}

/// The client closes its connection while the purchase waits on the lock.
async fn client_disconnects_mid_purchase(connect: PgConnectOptions, kind: StrategyKind) {
    let app = spawn_app(connect.clone(), Setup { plan: plan_of(&[(HOT, STOCK)]), ..Setup::default() }).await;
    let locker = RowLock::take(&connect, HOT).await;

    let body = serde_json::to_string(&order_body(&[(HOT, QUANTITY)])).expect("serialise");
    let request = format!(
        "POST /strategies/{kind}/purchase HTTP/1.1\r\nHost: checkout\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .expect("connect to the server");
    client.write_all(request.as_bytes()).await.expect("send the purchase");
    wait_for_lock_waiters(&app.pool, 1, PATIENCE).await;
    drop(client);
    // Not a timing assertion: gives the server the chance to see the closed connection and drop
    // its handler before the purchase can go on. The purchase must complete either way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.order_count().await, 0, "{kind}: nothing is written while the row is locked");

    locker.release().await;
    let (order_id, strategy, status) = the_order(&app, kind).await;
    assert_eq!(strategy, kind.as_str(), "{kind}: the order is the abandoned purchase");
    assert_eq!(status, "confirmed", "{kind}: the abandoned purchase is confirmed, not left pending");
    assert_completed_once(&app, kind, order_id).await;
}

/// The server's own deadline passes while the purchase waits: the client hears 503 with the order
/// id, and the order it names is there once the lock goes.
async fn purchase_outlives_the_request_timeout(connect: PgConnectOptions, kind: StrategyKind) {
    let setup = Setup {
        plan: plan_of(&[(HOT, STOCK)]),
        request_timeout: Duration::from_millis(300),
        ..Setup::default()
    };
    let app = spawn_app(connect.clone(), setup).await;
    let locker = RowLock::take(&connect, HOT).await;

    let answer = app.buy(kind, &order_body(&[(HOT, QUANTITY)]), None).await;
    answer.assert_error(503, "backend_unavailable");
    assert!(answer.headers.contains_key(reqwest::header::RETRY_AFTER), "{kind}: 503 tells when to retry");
    let order_id: uuid::Uuid = answer.body["order_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{kind}: a timed-out purchase names its order id: {}", answer.body));
    let pending = app.get(&format!("/orders/{order_id}")).await;
    pending.assert_error(404, "unknown_order");

    locker.release().await;
    let (found, _, status) = the_order(&app, kind).await;
    assert_eq!(found, order_id, "{kind}: the order completed under the id the 503 named");
    assert_eq!(status, "confirmed", "{kind}: the timed-out purchase is confirmed once it completes");
    assert_completed_once(&app, kind, order_id).await;
}

macro_rules! disconnect_tests {
    ($($disconnect:ident, $timeout:ident => $kind:expr),* $(,)?) => {
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $disconnect(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                client_disconnects_mid_purchase(connect, $kind).await;
            }

            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $timeout(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                purchase_outlives_the_request_timeout(connect, $kind).await;
            }
        )*
    };
}

disconnect_tests! {
    sql_naive_completes_after_the_client_left, sql_naive_completes_after_the_request_timeout => StrategyKind::SqlNaive,
    sql_for_update_completes_after_the_client_left, sql_for_update_completes_after_the_request_timeout => StrategyKind::SqlForUpdate,
    sql_atomic_completes_after_the_client_left, sql_atomic_completes_after_the_request_timeout => StrategyKind::SqlAtomic,
    sql_coalesce_completes_after_the_client_left, sql_coalesce_completes_after_the_request_timeout => StrategyKind::SqlCoalesce,
}
