//! Redis killed (`kill -9`) mid-sale and started again.
//!
//! Without persistence the restarted Redis is empty: no stock, no reservations, no queue. The
//! synchronous strategies rebuild the stock from PostgreSQL on first use and go on selling; the
//! purchases that had reserved in the lost Redis and were still on their way to PostgreSQL commit
//! afterwards, and PostgreSQL's conditional decrement keeps them from selling a unit twice. With
//! an AOF that fsyncs every write, `stream` loses nothing it acknowledged. Without one, it loses
//! the orders it accepted and had not persisted: the README says so, and a test shows it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use checkout_strategies::{CancellationToken, StrategyKind, Worker};
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Postgres};
use uuid::Uuid;

use super::books::{self, Expect, RedisView, audit, backends, quick_worker, settle};
use super::redis_proxy::RedisFaultProxy;
use super::redis_server::DisposableRedis;
use super::storm::{self, Attempt, Storm, Tally};
use super::{ANSWER_BOUND, fault_setup, redis_reconnected};
use crate::helpers::{TestApp, eventually, order_body, plan_of, spawn_app};

const HOT: i64 = 100;
const STOCK: i64 = 20;

/// A session holding `product`'s row lock until it rolls back: purchases that reserved in Redis
/// wait behind it on their way to PostgreSQL.
pub(super) async fn lock_row(connect: &PgConnectOptions, product: i64) -> PgConnection {
    let mut locker = PgConnection::connect_with(connect).await.expect("connect the locking session");
    sqlx::query("BEGIN").execute(&mut locker).await.expect("begin");
    sqlx::query("SELECT stock FROM products WHERE id = $1 FOR UPDATE")
        .bind(product)
        .execute(&mut locker)
        .await
        .expect("lock the row");
    locker
}

/// Ends the locking session's transaction.
pub(super) async fn unlock(mut locker: PgConnection) {
    sqlx::query("ROLLBACK").execute(&mut locker).await.expect("release the row lock");
    locker.close().await.expect("close the locking session");
}

/// One purchase, timed.
async fn buy_once(app: &TestApp, kind: StrategyKind) -> Attempt {
    let sent = Instant::now();
    let answer = app.buy(kind, &order_body(&[(HOT, 1)]), None).await;
    Attempt { answer, took: sent.elapsed() }
}

async fn restart_mid_sale(connect: PgConnectOptions, kind: StrategyKind) {
    let mut redis = DisposableRedis::start().await;
    let app = Arc::new(spawn_app(connect.clone(), fault_setup(plan_of(&[(HOT, STOCK)]), redis.url())).await);
    let view = RedisView::new(&redis.url(), &app);
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let attempt = buy_once(&app, kind).await;
        attempt.answer.assert_placed(kind);
        attempts.push(attempt);
    }

    // Four purchases reserve in Redis and wait on their way to PostgreSQL; Redis dies under them.
    let locker = lock_row(&connect, HOT).await;
    let caught: Vec<_> = (0..4)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { buy_once(&app, kind).await })
        })
        .collect();
    eventually("four purchases hold reservations", Duration::from_secs(10), || async {
        view.reservations().await == 4
    })
    .await;
    redis.kill();
    let down = buy_once(&app, kind).await;
    down.answer.assert_error(503, "backend_unavailable");
    assert!(down.took < ANSWER_BOUND, "{kind}: a purchase while Redis is down answers in bounded time");
    attempts.push(down);
    redis.start_again().await;
    assert_eq!(view.stock(HOT).await, None, "{kind}: the restarted Redis kept nothing");
    assert_eq!(view.reservations().await, 0, "{kind}: the reservations died with it");

    // The sale resumes on a stock rebuilt from PostgreSQL, while the caught purchases still wait.
    let storm = storm::start(
        &app,
        kind,
        &order_body(&[(HOT, 1)]),
        Storm { buyers: 40, stagger: Duration::from_millis(5), ..Storm::default() },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    unlock(locker).await;
    attempts.extend(storm.finish().await);
    for purchase in caught {
        attempts.push(purchase.await.expect("caught purchase"));
    }
    let tally = Tally::of(kind, &attempts, ANSWER_BOUND);
    assert!(tally.sold_out > 0, "{kind}: the sale went on to the end after the restart: {tally:?}");

    let before = audit(&app).await;
    assert_eq!(
        before["reservations"]["awaiting_resync"], 1,
        "{kind}: the rebuilt mirror waits to be checked against PostgreSQL once quiet: {before}"
    );
    let settled = settle(&app, &[kind]).await;
    let expect = Expect { kind, products: &[(HOT, STOCK)], tally: &tally, redis: Some(&view) };
    books::assert_exact(&app, &settled, &expect).await;
    assert_eq!(app.stock(HOT).await, 0, "{kind}: the whole stock sold once the sale resumed");
}

/// A Redis that fsyncs every write before answering loses nothing it acknowledged, and a purchase
/// whose reply was lost just before the kill is found in the replayed stream.
async fn stream_survives_a_restart_with_aof(connect: PgConnectOptions) {
    const KIND: StrategyKind = StrategyKind::Stream;
    let mut redis = DisposableRedis::start_with_aof().await;
    let proxy = RedisFaultProxy::start(redis.addr()).await;
    let app = Arc::new(spawn_app(connect, fault_setup(plan_of(&[(HOT, STOCK)]), proxy.url())).await);
    let view = RedisView::new(&redis.url(), &app);
    let cancel = CancellationToken::new();
    let worker = Worker::new(&backends(&app), KIND, quick_worker()).expect("a queue");
    let running = tokio::spawn(worker.run(cancel.clone()));
    let storm = storm::start(
        &app,
        KIND,
        &order_body(&[(HOT, 1)]),
        Storm { buyers: 60, stagger: Duration::from_millis(20), ..Storm::default() },
    );
    storm.wait_for_sales(5, Duration::from_secs(10)).await;

    proxy.mute_replies();
    let lost = buy_once(&app, KIND).await;
    lost.answer.assert_error(503, "outcome_unknown");
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.start_again().await;
    proxy.restore();
    let mut attempts = storm.finish().await;
    let lost_id: Uuid =
        lost.answer.body["order_id"].as_str().and_then(|id| id.parse().ok()).expect("order id");
    attempts.push(lost);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker stops")
        .expect("worker task");
    let tally = Tally::of(KIND, &attempts, ANSWER_BOUND);
    assert!(tally.refused_for_faults() > 0, "buyers saw no 503 while Redis was down");

    let settled = settle(&app, &[KIND]).await;
    let expect = Expect { kind: KIND, products: &[(HOT, STOCK)], tally: &tally, redis: Some(&view) };
    books::assert_exact(&app, &settled, &expect).await;
    let orders = books::orders(&app).await;
    assert!(orders.contains_key(&lost_id), "the order whose reply was lost before the kill is persisted");
}

/// Without persistence, orders answered 202 and not yet persisted die with Redis: after the
/// restart no worker can find them, and they never reach PostgreSQL. What the README warns about.
async fn stream_loses_accepted_orders_to_a_restart_without_persistence(connect: PgConnectOptions) {
    const KIND: StrategyKind = StrategyKind::Stream;
    let mut redis = DisposableRedis::start().await;
    let app = spawn_app(connect, fault_setup(plan_of(&[(HOT, STOCK)]), redis.url())).await;
    let view = RedisView::new(&redis.url(), &app);
    let mut accepted = Vec::new();
    for _ in 0..3 {
        let answer = app.buy(KIND, &order_body(&[(HOT, 1)]), None).await;
        assert_eq!(answer.status, 202, "accepted: {}", answer.body);
        accepted.push(answer.body["order_id"].as_str().expect("order id").to_owned());
    }
    assert_eq!(view.stock(HOT).await, Some(STOCK - 3), "the accepted orders hold their units");

    redis.restart().await;
    settle(&app, &[KIND]).await;

    assert_eq!(app.order_count().await, 0, "no accepted order reached PostgreSQL");
    for id in &accepted {
        let order = app.get(&format!("/orders/{id}")).await;
        order.assert_error(404, "unknown_order");
    }
    assert_eq!(app.stock(HOT).await, STOCK, "PostgreSQL never took their units");
    // The next purchase rebuilds the shelf from PostgreSQL: the lost orders' units are on sale
    // again, so nothing is oversold, but three buyers told 202 got nothing.
    redis_reconnected(&app).await;
    let again = app.buy(KIND, &order_body(&[(HOT, 1)]), None).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(view.stock(HOT).await, Some(STOCK - 1), "rebuilt from PostgreSQL, then one reserved");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn redis_lua_survives_a_redis_restart_mid_sale(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    restart_mid_sale(connect, StrategyKind::RedisLua).await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn redis_decr_survives_a_redis_restart_mid_sale(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    restart_mid_sale(connect, StrategyKind::RedisDecr).await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn stream_loses_nothing_acknowledged_to_a_restart_with_aof(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    stream_survives_a_restart_with_aof(connect).await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn stream_without_persistence_loses_accepted_orders_to_a_restart(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    stream_loses_accepted_orders_to_a_restart_without_persistence(connect).await;
}
