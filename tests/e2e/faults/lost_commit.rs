//! Ambiguous commits: PostgreSQL commits the order, and the reply never reaches the server. The
//! purchase must not guess: it settles the doubt by the order id (the fence), so the buyer hears
//! 201 when the order exists, or 503 `outcome_unknown` naming it, never a plain failure for an
//! order that exists; and a Redis strategy must not give back units of an order that committed.

use std::sync::Arc;
use std::time::Duration;

use checkout_strategies::{Gate, StrategyKind};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use super::books::{self, Expect, RedisView, settle};
use super::pg_proxy::{PgFaultProxy, Trigger};
use super::storm::{self, Storm, Tally};
use super::{ANSWER_BOUND, fault_setup};
use crate::helpers::{Setup, order_body, plan_of, spawn_app};

const HOT: i64 = 100;
const OTHER: i64 = 7;
const PRODUCTS: [(i64, i64); 2] = [(HOT, 10), (OTHER, 10)];
/// Replies lost per run.
const LOST: usize = 3;
/// Replies lost per run of a batching strategy: one `COMMIT` may sell the whole stock, so only
/// the first is certain to come.
const LOST_IN_BATCHES: usize = 1;

/// `sql-atomic`'s one-line purchase is a single statement in autocommit: it sends no `COMMIT`, so
/// the reply lost is the one to the statement itself (the order insert rides in it).
const ORDER_INSERT: &str = "INSERT INTO orders (id, strategy, status, idempotency_key";

async fn commit_replies_lost(
    connect: PgConnectOptions,
    kind: StrategyKind,
    items: &[(i64, i64)],
    trigger: Trigger,
    lost: usize,
) {
    let proxy = PgFaultProxy::start(&connect).await;
    let redis_url = Setup::default().redis_url;
    let app = Arc::new(
        spawn_app(proxy.connect_options(&connect), fault_setup(plan_of(&PRODUCTS), redis_url.clone())).await,
    );
    let view = RedisView::new(&redis_url, &app);
    proxy.lose_replies(trigger, lost);
    let storm = storm::start(
        &app,
        kind,
        &order_body(items),
        Storm { buyers: 30, stagger: Duration::from_millis(5), ..Storm::default() },
    );
    let attempts = storm.finish().await;
    assert_eq!(proxy.cuts(), lost, "{kind}: the proxy lost {lost} replies");
    let tally = Tally::of(kind, &attempts, ANSWER_BOUND);

    let settled = settle(&app, &[kind]).await;
    let redis = (kind.spec().gate == Gate::Redis).then_some(&view);
    let products: Vec<(i64, i64)> =
        PRODUCTS.into_iter().filter(|(id, _)| items.iter().any(|(i, _)| i == id)).collect();
    books::assert_exact(&app, &settled, &Expect { kind, products: &products, tally: &tally, redis }).await;
    let orders = books::orders(&app).await;
    assert_eq!(orders.len(), 10, "{kind}: every unit sold once, the ambiguous commits included: {orders:?}");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn redis_lua_commit_reply_lost(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    commit_replies_lost(connect, StrategyKind::RedisLua, &[(HOT, 1)], Trigger::Commit, LOST).await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn sql_for_update_commit_reply_lost(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    commit_replies_lost(connect, StrategyKind::SqlForUpdate, &[(HOT, 1)], Trigger::Commit, LOST).await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn sql_atomic_single_statement_reply_lost(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    commit_replies_lost(
        connect,
        StrategyKind::SqlAtomic,
        &[(HOT, 1)],
        Trigger::Statement(ORDER_INSERT),
        LOST,
    )
    .await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn sql_atomic_multi_line_commit_reply_lost(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    commit_replies_lost(connect, StrategyKind::SqlAtomic, &[(HOT, 1), (OTHER, 1)], Trigger::Commit, LOST)
        .await;
}

/// A lost reply to a batch's `COMMIT` leaves every purchase of the batch in doubt at once: the
/// batch is settled by voiding all its order ids.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn sql_coalesce_batch_commit_reply_lost(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    commit_replies_lost(connect, StrategyKind::SqlCoalesce, &[(HOT, 1)], Trigger::Commit, LOST_IN_BATCHES)
        .await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn sql_coalesce_multi_line_batch_commit_reply_lost(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    commit_replies_lost(
        connect,
        StrategyKind::SqlCoalesce,
        &[(HOT, 1), (OTHER, 1)],
        Trigger::Commit,
        LOST_IN_BATCHES,
    )
    .await;
}

/// `redis-orderlog` group-commits insert-only: a lost `COMMIT` reply leaves a whole batch of
/// reserved purchases in doubt, and no reservation of a committed order may go back.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn redis_orderlog_batch_commit_reply_lost(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    commit_replies_lost(connect, StrategyKind::RedisOrderlog, &[(HOT, 1)], Trigger::Commit, LOST_IN_BATCHES)
        .await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn redis_orderlog_multi_line_batch_commit_reply_lost(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    commit_replies_lost(
        connect,
        StrategyKind::RedisOrderlog,
        &[(HOT, 1), (OTHER, 1)],
        Trigger::Commit,
        LOST_IN_BATCHES,
    )
    .await;
}
