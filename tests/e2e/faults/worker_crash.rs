//! Stream workers dying mid-batch, then an entry given up on. `tests/e2e/stream.rs` covers a
//! consumer that dies after reading (the batch is reclaimed) and one that dies between its commit
//! and its acknowledgement (the redelivery writes nothing twice). What is left is the dead-letter
//! decision for such entries: one whose order an earlier delivery already committed must be
//! settled, not dead-lettered, and its units must stay sold; one that never committed is
//! dead-lettered with its units back on the shelf, and its order id is voided so it can never
//! commit later.

use std::collections::BTreeSet;
use std::time::Duration;

use checkout_strategies::redis_stream::StreamKeys;
use checkout_strategies::{StrategyKind, Worker, WorkerSettings};
use redis::AsyncCommands;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use super::books::{self, RedisView, audit, backends, quick_worker};
use crate::helpers::{Setup, TestApp, order_body, plan_of, spawn_app};

const HOT: i64 = 100;
const STOCK: i64 = 10;

/// A worker that gives up on an entry at its second delivery.
fn impatient() -> WorkerSettings {
    WorkerSettings { max_deliveries: 1, claim_idle: Duration::from_millis(100), ..quick_worker() }
}

async fn place(app: &TestApp, kind: StrategyKind, count: usize) -> BTreeSet<Uuid> {
    let mut ids = BTreeSet::new();
    for _ in 0..count {
        let answer = app.buy(kind, &order_body(&[(HOT, 1)]), None).await;
        assert_eq!(answer.status, 202, "{kind}: accepted: {}", answer.body);
        ids.insert(answer.body["order_id"].as_str().and_then(|id| id.parse().ok()).expect("order id"));
    }
    ids
}

async fn entries_given_up_on_are_settled_by_their_commit(connect: PgConnectOptions, kind: StrategyKind) {
    let setup = Setup { plan: plan_of(&[(HOT, STOCK)]), ..Setup::default() };
    let redis_url = setup.redis_url.clone();
    let app = spawn_app(connect, setup).await;
    let view = RedisView::new(&redis_url, &app);

    // One consumer commits three orders and dies before settling them in Redis.
    let committed = place(&app, kind, 3).await;
    let mut first =
        Worker::new(&backends(&app), kind, WorkerSettings { batch: 3, ..impatient() }).expect("queue");
    let batch = first.next_batch(false).await.expect("Redis answers").expect("three entries");
    assert_eq!(first.persist(&batch).await.expect("the batch commits").written(), 3, "{kind}");
    drop(first);
    // Another reads two more orders and dies before writing them.
    let never_written = place(&app, kind, 2).await;
    // A claim threshold it cannot reach: it reads the new entries, never the first consumer's.
    let patient = WorkerSettings { claim_idle: Duration::from_secs(60), ..impatient() };
    let mut second = Worker::new(&backends(&app), kind, patient).expect("queue");
    let batch = second.next_batch(false).await.expect("Redis answers").expect("two entries");
    assert_eq!(batch.len(), 2, "{kind}: the second consumer holds the two new entries");
    drop(second);

    // Every entry comes back past its delivery limit: the worker gives up on all five.
    let report = Worker::new(&backends(&app), kind, impatient())
        .expect("queue")
        .run_until_idle(Duration::from_secs(10))
        .await
        .expect("the stream drains");
    assert_eq!(report.redelivered, 3, "{kind}: committed entries are settled, not dead-lettered: {report:?}");
    assert_eq!(report.dead_lettered, 2, "{kind}: only the entries that never committed: {report:?}");
    assert_eq!(report.persisted, 0, "{kind}: an entry given up on is not written: {report:?}");

    let orders = books::orders(&app).await;
    let ids: BTreeSet<Uuid> = orders.keys().copied().collect();
    assert_eq!(ids, committed, "{kind}: exactly the committed orders, once each");
    let voided: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE status = 'void'")
        .fetch_all(&app.pool)
        .await
        .expect("read void rows");
    assert_eq!(
        voided.into_iter().collect::<BTreeSet<_>>(),
        never_written,
        "{kind}: the dead-lettered orders are voided, so no late delivery can commit them"
    );
    let sold = i64::try_from(committed.len()).expect("a few orders");
    assert_eq!(app.stock(HOT).await, STOCK - sold, "{kind}: PostgreSQL sold the committed orders once");
    assert_eq!(
        view.stock(HOT).await,
        Some(STOCK - sold),
        "{kind}: units of the committed orders stay sold; those of the dead letters are back"
    );
    assert_eq!(view.inflight(HOT).await.unwrap_or(0), 0, "{kind}: nothing left in flight");
    let keys = StreamKeys::new(&app.redis.keys, kind);
    let mut conn = view.conn().await;
    let dead: usize = conn.xlen(&keys.dead_letter).await.expect("XLEN");
    assert_eq!(dead, 2, "{kind}: two dead letters");
    let audit = audit(&app).await;
    assert_eq!(audit["queues"]["dead_lettered"], 2, "{kind}: {audit}");
    assert_eq!(audit["total"]["redis_drift"], 0, "{kind}: Redis agrees with PostgreSQL: {audit}");
    assert_eq!(audit["total"]["stock_drift"], 0, "{kind}: {audit}");
    assert_eq!(audit["total"]["oversold"], 0, "{kind}: {audit}");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn stream_settles_a_committed_entry_it_gives_up_on(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    entries_given_up_on_are_settled_by_their_commit(connect, StrategyKind::Stream).await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn stream_deferred_settles_a_committed_entry_it_gives_up_on(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    entries_given_up_on_are_settled_by_their_commit(connect, StrategyKind::StreamDeferred).await;
}
