//! `queue-nats` with its broker away: a publish that cannot reach it answers 503 within the bound
//! and returns the reservation; a broker killed (`kill -9`) and started again on the same store
//! mid-sale loses no order it acknowledged, and the books settle exactly.

use std::sync::Arc;
use std::time::Duration;

use checkout_strategies::{CancellationToken, NatsSettings, StrategyKind, queue_nats};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::time::Instant;

use super::books::{self, Expect, RedisView, backends, quick_worker, settle};
use super::nats_server::DisposableNats;
use super::storm::{self, Storm, Tally};
use super::{ANSWER_BOUND, fault_setup};
use crate::helpers::{Setup, TestApp, eventually, order_body, plan_of, spawn_app};

const KIND: StrategyKind = StrategyKind::QueueNats;
const HOT: i64 = 100;
const STOCK: i64 = 40;

/// Short broker deadlines, so a publish into a dead connection is answered well within the bound
/// and an orphaned order is published again within the test.
fn broker_setup(nats_url: String) -> Setup {
    Setup {
        nats_url,
        nats: NatsSettings {
            connect_timeout: Duration::from_millis(500),
            publish_timeout: Duration::from_millis(500),
        },
        ..fault_setup(plan_of(&[(HOT, STOCK)]), Setup::default().redis_url)
    }
}

/// Units held in Redis for `queue-nats` orders not yet persisted.
async fn pending(app: &TestApp) -> i64 {
    let mut conn = app.redis.conn.clone();
    redis::cmd("HLEN")
        .arg(app.redis.keys.pending(KIND.as_str()))
        .query_async(&mut conn)
        .await
        .expect("Redis answers")
}

async fn buy_refused(app: &TestApp) {
    let started = Instant::now();
    let answer = app.buy(KIND, &order_body(&[(HOT, 2)]), None).await;
    assert!(started.elapsed() <= ANSWER_BOUND, "answered after {:?}", started.elapsed());
    answer.assert_error(503, "backend_unavailable");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn queue_nats_returns_the_reservation_when_no_broker_listens(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let nobody = format!("nats://127.0.0.1:{}", super::free_port());
    let app = spawn_app(connect, broker_setup(nobody)).await;
    for _ in 0..3 {
        buy_refused(&app).await;
    }
    assert_eq!(app.redis_stock(HOT).await, Some(STOCK), "every reservation went back on the shelf");
    assert_eq!(crate::stream::inflight(&app, HOT).await, 0, "nothing in flight");
    assert_eq!(pending(&app).await, 0, "nothing pending");
    assert_eq!(app.order_count().await, 0, "nothing sold");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "a broker this process never reached does not fail the audit: {audit}");
    assert_eq!(audit["settled"], true, "{audit}");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn queue_nats_refuses_while_its_broker_is_stopped_and_persists_what_it_accepted(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let mut nats = DisposableNats::start().await;
    let app = spawn_app(connect, broker_setup(nats.url())).await;
    let accepted = crate::stream::place(&app, KIND, 2).await;

    nats.kill();
    eventually("the client sees the broker gone", Duration::from_secs(5), || async {
        !app.nats.is_connected()
    })
    .await;
    buy_refused(&app).await;
    assert_eq!(app.redis_stock(HOT).await, Some(STOCK - 2), "the refused purchase took nothing");
    assert_eq!(crate::stream::inflight(&app, HOT).await, 2, "only the accepted orders hold units");
    assert_eq!(pending(&app).await, 2, "only the accepted orders are pending");

    nats.start_again().await;
    eventually("the client reconnects", Duration::from_secs(15), || async { app.nats.is_connected() }).await;
    let report =
        queue_nats::drain(&backends(&app), Duration::from_secs(20)).await.expect("the broker drains");
    assert_eq!(report.persisted, 2, "both accepted orders survived the stop: {report:?}");
    let orders = books::orders(&app).await;
    assert!(accepted.iter().all(|id| orders.contains_key(id)), "the accepted orders are persisted");
    assert_eq!(app.stock(HOT).await, STOCK - 2, "PostgreSQL sold them once");
    assert_eq!(app.redis_stock(HOT).await, Some(STOCK - 2), "Redis agrees");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{audit}");
    assert_eq!(audit["settled"], true, "{audit}");
}

/// Buyers keep buying while the broker is killed (`kill -9`) and started again on its store. No
/// consumer runs during the sale, so every order acknowledged before the kill is in the broker's
/// store when it dies. Afterwards every order answered 202 is persisted once, every 503
/// `backend_unavailable` sold nothing, an `outcome_unknown` order is persisted or not but never
/// half, and Redis agrees with PostgreSQL.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn queue_nats_loses_nothing_acknowledged_to_a_broker_restart(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let mut nats = DisposableNats::start().await;
    let app = Arc::new(spawn_app(connect, broker_setup(nats.url())).await);
    let view = RedisView::new(&Setup::default().redis_url, &app);
    let storm = storm::start(
        &app,
        KIND,
        &order_body(&[(HOT, 1)]),
        Storm {
            buyers: 60,
            stagger: Duration::from_millis(20),
            pause: Duration::from_millis(100),
            ..Storm::default()
        },
    );
    storm.wait_for_sales(10, Duration::from_secs(10)).await;
    let before_kill = storm.created();

    nats.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.start_again().await;
    eventually("the client reconnects", Duration::from_secs(15), || async { app.nats.is_connected() }).await;
    let kept = app.nats.queued_messages().await.expect("the broker answers");
    assert!(
        kept >= u64::try_from(before_kill).unwrap(),
        "the broker kept every order it acknowledged before the kill: {kept} < {before_kill}"
    );
    let attempts = storm.finish().await;

    let tally = Tally::of(KIND, &attempts, ANSWER_BOUND);
    assert!(tally.refused_for_faults() > 0, "buyers saw no 503 while the broker was down: {tally:?}");
    assert!(tally.created.len() > before_kill, "the sale resumed after the restart: {tally:?}");
    let settled = settle(&app, &[KIND]).await;
    let expect = Expect { kind: KIND, products: &[(HOT, STOCK)], tally: &tally, redis: Some(&view) };
    books::assert_exact(&app, &settled, &expect).await;
    assert_eq!(settled["queues"]["in_queue"], 0, "the broker is drained: {settled}");
}

/// The broker consumer runs beside the sale through the restart, as it does in the server: it
/// loses its connection, comes back, and finishes the work.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn queue_nats_consumer_rides_out_a_broker_restart(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let mut nats = DisposableNats::start().await;
    let app = Arc::new(spawn_app(connect, broker_setup(nats.url())).await);
    let cancel = CancellationToken::new();
    let running = tokio::spawn(
        queue_nats::Consumer::new(&backends(&app), quick_worker())
            .expect("the books are in PostgreSQL")
            .run(cancel.clone()),
    );
    let accepted = crate::stream::place(&app, KIND, 5).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.start_again().await;
    eventually("the client reconnects", Duration::from_secs(15), || async { app.nats.is_connected() }).await;
    let more = crate::stream::place(&app, KIND, 5).await;
    eventually("the running consumer persists every accepted order", Duration::from_secs(20), || async {
        app.order_count().await == 10
    })
    .await;
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(10), running).await.expect("stops").expect("task");
    // An acknowledgement lost with the broker brings its message back: recognised, not rewritten.
    assert_eq!(report.persisted, 10, "each accepted order written once: {report:?}");
    let orders = books::orders(&app).await;
    assert!(accepted.iter().chain(&more).all(|id| orders.contains_key(id)), "every accepted order persisted");
    eventually("settled", Duration::from_secs(10), || async { app.audit().await["settled"] == true }).await;
    assert_eq!(app.audit().await["clean"], true);
}
