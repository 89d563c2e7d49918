//! `redis-orderlog`: orders committed insert-only survive a server that stops before its stock
//! sync ran, a mirror rebuilt meanwhile offers only what is left, and the stock row converges once
//! any server's sync runs.

use std::time::Duration;

use checkout_strategies::background::{self, BackgroundSettings};
use checkout_strategies::reservation::SweeperSettings;
use checkout_strategies::stock_sync::StockSyncSettings;
use checkout_strategies::{Backends, CancellationToken, StrategyKind};
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgPool, Postgres};

use crate::helpers::{
    Setup, TestApp, audited_product, eventually, order_body, plan_of, spawn_app, spawn_app_on,
};

const KIND: StrategyKind = StrategyKind::RedisOrderlog;
const HOT: i64 = 100;
const STOCK: i64 = 10;

async fn unapplied_lines(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM stock_unapplied").fetch_one(pool).await.expect("count")
}

/// Runs every background job of a server on `app`'s backends until the token is cancelled.
fn run_background(app: &TestApp) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let backends =
        Backends::new(app.pool.clone(), app.redis.clone(), Default::default()).with_nats(app.nats.clone());
    let settings = BackgroundSettings {
        workers: None,
        sweeper: SweeperSettings::default(),
        stock_sync: StockSyncSettings { every: Duration::from_millis(20), ..StockSyncSettings::default() },
    };
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        background::run(&backends, settings, stop).await.expect("background jobs run");
    });
    (cancel, task)
}

/// A server sells four units and stops before any stock sync. A second server on the same
/// database starts with an empty Redis (its mirror must be rebuilt): it may sell exactly the six
/// units left, not ten. Its stock sync then applies all ten to the stock row.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn orders_outlive_a_server_that_stopped_before_its_sync(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let setup = Setup { plan: plan_of(&[(HOT, STOCK)]), ..Setup::default() };
    let first = spawn_app(connect, setup.clone()).await;
    for _ in 0..4 {
        first.buy(KIND, &order_body(&[(HOT, 1)]), None).await.assert_placed(KIND);
    }
    assert_eq!(first.stock(HOT).await, STOCK, "the purchase leaves the stock row to the sync");
    assert_eq!(unapplied_lines(&first.pool).await, 4, "every committed line awaits the sync");
    let audit = first.audit().await;
    let product = audited_product(&audit, HOT, KIND);
    assert_eq!(product["awaiting_sync"], 4, "the audit counts units awaiting sync: {product}");
    assert_eq!(product["stock_drift"], 0, "units awaiting sync are not drift: {product}");
    assert_eq!(audit["settled"], false, "books awaiting a sync are not final: {audit}");
    assert_eq!(audit["clean"], true, "{audit}");
    let pool = first.pool.clone();
    drop(first);

    // Same database, a Redis prefix of its own: every stock key is missing and rebuilt on use.
    let second = spawn_app_on(pool, setup, false).await;
    assert_eq!(
        second.get_json(&format!("/products/{HOT}")).await["stock"],
        STOCK - 4,
        "GET /products shows what is left to sell, sync or not"
    );
    let mut placed = 0;
    for _ in 0..STOCK {
        let answer = second.buy(KIND, &order_body(&[(HOT, 1)]), None).await;
        match answer.status {
            201 => placed += 1,
            409 => answer.assert_error(409, "sold_out"),
            other => panic!("unexpected answer {other}: {}", answer.body),
        }
    }
    assert_eq!(placed, STOCK - 4, "the rebuilt mirror offers what is left, not the stock row: oversold");
    assert_eq!(second.stock(HOT).await, STOCK, "still no sync has run");

    let (cancel, jobs) = run_background(&second);
    eventually("the stock sync applies every order", Duration::from_secs(10), || async {
        second.audit().await["settled"] == true
    })
    .await;
    cancel.cancel();
    jobs.await.expect("background jobs stop");

    let audit = second.audit().await;
    let product = audited_product(&audit, HOT, KIND);
    assert_eq!(product["final_stock"], 0, "the stock row converged: {product}");
    assert_eq!(product["units_in_orders"], STOCK, "{product}");
    assert_eq!(product["awaiting_sync"], 0, "{product}");
    assert_eq!(unapplied_lines(&second.pool).await, 0, "nothing left to apply");
    assert_eq!(audit["clean"], true, "{audit}");
}

/// A sync applies a line exactly once, whatever the batch size, and a sync that finds nothing
/// changes nothing.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn the_sync_applies_each_line_once_in_batches(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(1, 50), (2, 50)]), ..Setup::default() }).await;
    for _ in 0..7 {
        app.buy(KIND, &order_body(&[(1, 2), (2, 1)]), None).await.assert_placed(KIND);
    }
    let sync = checkout_strategies::stock_sync::StockSync::new(
        checkout_strategies::SqlPool::Postgres(app.pool.clone()),
        StockSyncSettings { batch: 3, ..StockSyncSettings::default() },
    );
    let first = sync.sync_once().await.expect("sync");
    assert_eq!(first.lines, 3, "one batch at most: {first:?}");
    assert_eq!(sync.drain().await.expect("drain"), 11, "the other lines, once each");
    assert_eq!(sync.drain().await.expect("drain"), 0, "nothing twice");
    assert_eq!((app.stock(1).await, app.stock(2).await), (50 - 14, 50 - 7), "each line applied once");
    let audit = app.audit().await;
    assert_eq!((audit["clean"].clone(), audit["settled"].clone()), (true.into(), true.into()), "{audit}");
}

/// The sweeper's resync rewrites a quiet mirror from PostgreSQL: from what is left to sell, not
/// from a stock row the sync has not caught up with.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_resync_leaves_out_units_awaiting_sync(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, STOCK)]), ..Setup::default() }).await;
    for _ in 0..4 {
        app.buy(KIND, &order_body(&[(HOT, 1)]), None).await.assert_placed(KIND);
    }
    assert_eq!(app.redis_stock(HOT).await, Some(STOCK - 4), "the mirror took the units");
    let mut conn = app.redis.conn.clone();
    redis::cmd("SADD")
        .arg(app.redis.keys.resync())
        .arg(HOT)
        .query_async::<i64>(&mut conn)
        .await
        .expect("mark the product for a resync");
    let report = checkout_strategies::reservation::Sweeper::new(
        app.pool.clone(),
        app.redis.clone(),
        SweeperSettings::default(),
    )
    .sweep()
    .await
    .expect("sweep");
    assert_eq!(report.resynced, 1, "the quiet product was rewritten: {report:?}");
    assert_eq!(app.stock(HOT).await, STOCK, "no sync ran");
    assert_eq!(app.redis_stock(HOT).await, Some(STOCK - 4), "four units sold are not offered again");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{audit}");
}
