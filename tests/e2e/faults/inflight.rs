//! The in-flight counter moves only with a reservation record, so it can never go below zero and
//! no unit is given back twice: not when the record died with a Redis restart and the purchase
//! commits afterwards, and not when two sweepers end the same expired reservations at once.

use std::sync::Arc;
use std::time::Duration;

use checkout_strategies::reservation::{self, Sweeper, SweeperSettings};
use checkout_strategies::{ProductId, StrategyKind};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use super::books::{self, Expect, RedisView, audit, settle};
use super::redis_restart::{lock_row, unlock};
use super::redis_server::DisposableRedis;
use super::storm::{Attempt, Tally};
use super::{ANSWER_BOUND, RESERVATION_TTL, fault_setup, redis_reconnected};
use crate::helpers::{TestApp, eventually, order_body, plan_of, spawn_app};

const HOT: i64 = 100;
const STOCK: i64 = 10;
const KIND: StrategyKind = StrategyKind::RedisLua;

fn buy_in_background(app: &Arc<TestApp>) -> tokio::task::JoinHandle<Attempt> {
    let app = Arc::clone(app);
    tokio::spawn(async move {
        let sent = std::time::Instant::now();
        let answer = app.buy(KIND, &order_body(&[(HOT, 1)]), None).await;
        Attempt { answer, took: sent.elapsed() }
    })
}

/// A purchase reserves, Redis restarts empty (its reservation and the counter gone), the stock key
/// is rebuilt from PostgreSQL, and only then does the purchase commit and settle: the settle finds
/// no reservation and moves nothing.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_settle_after_a_restart_moves_nothing(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let mut redis = DisposableRedis::start().await;
    let app = Arc::new(spawn_app(connect.clone(), fault_setup(plan_of(&[(HOT, STOCK)]), redis.url())).await);
    let view = RedisView::new(&redis.url(), &app);
    // The first sale claims the product for the Redis gate (an UPDATE the row lock would hold up).
    let warm_up = buy_in_background(&app).await.expect("purchase task");
    warm_up.answer.assert_placed(KIND);

    let locker = lock_row(&connect, HOT).await;
    let purchase = buy_in_background(&app);
    eventually("the purchase holds a reservation", Duration::from_secs(10), || async {
        view.reservations().await == 1
    })
    .await;
    assert_eq!(view.inflight(HOT).await, Some(1), "one unit in flight");
    redis.restart().await;
    redis_reconnected(&app).await;
    let rebuilt =
        reservation::recover(&app.pool.clone().into(), &app.redis, ProductId::parse(HOT).expect("id"))
            .await
            .expect("recover the stock key");
    assert_eq!(rebuilt, Some(STOCK - 1), "rebuilt from PostgreSQL: the lost reservation is not counted");
    assert_eq!(view.inflight(HOT).await, Some(0), "the counter is rebuilt from the holds: none");

    unlock(locker).await;
    let attempt = purchase.await.expect("purchase task");
    attempt.answer.assert_placed(KIND);
    assert_eq!(
        view.inflight(HOT).await,
        Some(0),
        "the settle of a lost reservation leaves the counter at zero"
    );
    assert_eq!(view.stock(HOT).await, Some(STOCK - 1), "and adds no unit to the shelf");
    assert_eq!(app.stock(HOT).await, STOCK - 2, "PostgreSQL sold the unit");
    let before = audit(&app).await;
    assert_eq!(
        before["reservations"]["awaiting_resync"], 1,
        "the rebuilt mirror waits for a resync: {before}"
    );

    let settled = settle(&app, &[KIND]).await;
    let tally = Tally::of(KIND, &[warm_up, attempt], ANSWER_BOUND);
    books::assert_exact(
        &app,
        &settled,
        &Expect { kind: KIND, products: &[(HOT, STOCK)], tally: &tally, redis: Some(&view) },
    )
    .await;
}

/// Five purchases hold reservations past their deadline while PostgreSQL keeps them waiting; two
/// sweepers (two server processes) end the same reservations at once. Each order id is voided,
/// each reservation released once, and the late purchases cannot commit.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn two_sweepers_release_each_reservation_once(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let redis = DisposableRedis::start().await;
    let app = Arc::new(spawn_app(connect.clone(), fault_setup(plan_of(&[(HOT, STOCK)]), redis.url())).await);
    let view = RedisView::new(&redis.url(), &app);
    let warm_up = buy_in_background(&app).await.expect("purchase task");
    warm_up.answer.assert_placed(KIND);
    const LEFT: i64 = STOCK - 1;

    let locker = lock_row(&connect, HOT).await;
    let purchases: Vec<_> = (0..5).map(|_| buy_in_background(&app)).collect();
    eventually("five purchases hold reservations", Duration::from_secs(10), || async {
        view.reservations().await == 5
    })
    .await;
    assert_eq!(view.stock(HOT).await, Some(LEFT - 5), "reserved");
    tokio::time::sleep(RESERVATION_TTL + Duration::from_millis(200)).await;
    let (one, two) = (
        Sweeper::new(app.pool.clone(), app.redis.clone(), SweeperSettings::default()),
        Sweeper::new(app.pool.clone(), app.redis.clone(), SweeperSettings::default()),
    );
    let (first, second) = tokio::join!(one.sweep(), two.sweep());
    let (first, second) = (first.expect("sweep"), second.expect("sweep"));
    assert_eq!(first.settled + second.settled, 0, "none of them committed: {first:?} {second:?}");
    assert!(
        first.released + second.released >= 5,
        "every expired reservation is ended: {first:?} {second:?}"
    );
    assert_eq!(view.reservations().await, 0, "no reservation left");
    assert_eq!(view.stock(HOT).await, Some(LEFT), "each reservation released once, not twice");
    assert_eq!(view.inflight(HOT).await, Some(0), "the counter at zero, not below");

    unlock(locker).await;
    let mut attempts = vec![warm_up];
    for purchase in purchases {
        let attempt = purchase.await.expect("purchase task");
        attempt.answer.assert_error(503, "backend_unavailable");
        attempts.push(attempt);
    }
    let voided: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'void'")
        .fetch_one(&app.pool)
        .await
        .expect("count void rows");
    assert_eq!(voided, 5, "each late order id is voided, so none can commit");
    assert_eq!(view.stock(HOT).await, Some(LEFT), "the late purchases gave back nothing more");
    assert_eq!(view.inflight(HOT).await, Some(0), "and moved no counter");
    let settled = settle(&app, &[KIND]).await;
    let tally = Tally::of(KIND, &attempts, ANSWER_BOUND);
    books::assert_exact(
        &app,
        &settled,
        &Expect { kind: KIND, products: &[(HOT, STOCK)], tally: &tally, redis: Some(&view) },
    )
    .await;
}
