//! One `Idempotency-Key` for every strategy: the same purchase sent at once through synchronous
//! and queued strategies, with their own books and PostgreSQL's, makes exactly one order, and
//! every answer names it. A queued winner's 202 is persisted, never pushed out.

use std::sync::Arc;

use checkout_strategies::{Gate, StrategyKind};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Barrier;

use super::books::{self, audit, settle};
use crate::helpers::{Answer, Setup, TestApp, order_body, plan_of, spawn_app};

const HOT: i64 = 100;
const STOCK: i64 = 50;
const KINDS: [StrategyKind; 5] = [
    StrategyKind::Memory,
    StrategyKind::SqlAtomic,
    StrategyKind::RedisLua,
    StrategyKind::Stream,
    StrategyKind::SqlForUpdate,
];

/// Orders held anywhere: PostgreSQL, the in-process baseline's books, the stream's pending orders.
async fn orders_anywhere(app: &TestApp) -> usize {
    let memory = app.app.registry.get(StrategyKind::Memory).own_orders().await.expect("memory's books");
    let pending = app
        .app
        .registry
        .get(StrategyKind::Stream)
        .backlog()
        .await
        .expect("stream backlog")
        .expect("a queue reports one")
        .pending;
    books::orders(app).await.len() + memory.len() + usize::try_from(pending).expect("a count")
}

/// Stock left in the books `kind` sells from.
async fn stock_for(app: &TestApp, kind: StrategyKind) -> i64 {
    app.stock_in(kind, HOT).await
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn one_key_sent_through_every_strategy_at_once_makes_one_order(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    const KEY: &str = "one-purchase-everywhere";
    const CLIENTS: usize = 30;
    let app =
        Arc::new(spawn_app(connect, Setup { plan: plan_of(&[(HOT, STOCK)]), ..Setup::default() }).await);
    let body = order_body(&[(HOT, 1)]);
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (app, body, barrier) = (Arc::clone(&app), body.clone(), Arc::clone(&barrier));
            let kind = KINDS[i % KINDS.len()];
            tokio::spawn(async move {
                barrier.wait().await;
                (kind, app.buy(kind, &body, Some(KEY)).await)
            })
        })
        .collect();
    let mut answers: Vec<(StrategyKind, Answer)> = Vec::new();
    for client in clients {
        answers.push(client.await.expect("client task"));
    }

    let created: Vec<&(StrategyKind, Answer)> =
        answers.iter().filter(|(_, answer)| matches!(answer.status, 201 | 202)).collect();
    assert_eq!(created.len(), 1, "one order for the key, whatever the strategies: {answers:?}");
    let (winner, first) = created[0];
    let winner = *winner;
    let id = first.body["order_id"].clone();
    for (kind, answer) in &answers {
        assert!(
            matches!(answer.status, 200..=202),
            "{kind}: a copy of the purchase is replayed, not refused: {} {}",
            answer.status,
            answer.body
        );
        assert_eq!(answer.body["order_id"], id, "{kind}: every answer names the one order: {}", answer.body);
    }
    assert_eq!(orders_anywhere(&app).await, 1, "won by {winner}: exactly one order anywhere");

    let settled = settle(&app, &[StrategyKind::Stream, StrategyKind::RedisLua]).await;
    assert_eq!(orders_anywhere(&app).await, 1, "won by {winner}: still one order after the drain");
    let persisted = books::orders(&app).await;
    if winner == StrategyKind::Memory {
        assert!(persisted.is_empty(), "the baseline's order lives in its books only: {persisted:?}");
    } else {
        let only = persisted.keys().next().expect("the order is in PostgreSQL").to_string();
        assert_eq!(id, only.as_str(), "won by {winner}: the order told to every client is persisted");
    }
    let in_memory = i64::from(winner == StrategyKind::Memory);
    assert_eq!(
        stock_for(&app, StrategyKind::Memory).await,
        STOCK - in_memory,
        "won by {winner}: the baseline's books"
    );
    assert_eq!(
        app.stock(HOT).await,
        STOCK - (1 - in_memory),
        "won by {winner}: PostgreSQL sold the one unit or none"
    );
    if winner.spec().gate == Gate::Redis {
        let shelf = app.redis_stock(HOT).await;
        assert_eq!(shelf, Some(STOCK - 1), "won by {winner}: Redis sold the one unit");
    }
    assert_eq!(settled["clean"], true, "won by {winner}: {settled}");

    // Later retries, through any strategy, still replay it.
    for kind in KINDS {
        let again = app.buy(kind, &body, Some(KEY)).await;
        assert_eq!(again.status, 200, "{kind}: a late retry replays: {}", again.body);
        assert_eq!(again.body["order_id"], id, "{kind}: the same order");
    }
    assert_eq!(orders_anywhere(&app).await, 1, "won by {winner}: replays make no order");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_key_used_in_memory_replays_through_sql(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const KEY: &str = "memory-then-sql";
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, STOCK)]), ..Setup::default() }).await;
    let body = order_body(&[(HOT, 1)]);
    let first = app.buy(StrategyKind::Memory, &body, Some(KEY)).await;
    let id = first.assert_placed(StrategyKind::Memory);
    let again = app.buy(StrategyKind::SqlAtomic, &body, Some(KEY)).await;
    assert_eq!(again.status, 200, "the second strategy replays the first order: {}", again.body);
    assert_eq!(again.body["order_id"], id.as_str(), "the same order");
    assert_eq!(again.body["strategy"], "memory", "the replay names the strategy that sold it");
    assert_eq!(app.order_count().await, 0, "no order in PostgreSQL");
    assert_eq!(app.stock(HOT).await, STOCK, "PostgreSQL sold nothing");
    assert_eq!(stock_for(&app, StrategyKind::Memory).await, STOCK - 1, "the baseline sold one");
    assert_eq!(audit(&app).await["clean"], true, "the books balance");
}
