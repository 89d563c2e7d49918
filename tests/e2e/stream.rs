//! The queueing strategies end to end: `202 pending` at the door, a worker that persists every
//! accepted order exactly once — across crashes before the acknowledgement, reclaimed batches,
//! poison entries and resets — and the books that agree once the stream is drained.
//!
//! The server under test runs no worker (`spawn_app` serves the API only), so each test decides
//! when orders are persisted: by draining, or by driving a [`Worker`] step by step.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use checkout_strategies::redis_stream::{GROUP, SOLD_OUT_AFTER_ACCEPTANCE, StreamKeys};
use checkout_strategies::{
    Backends, Backlog, CancellationToken, Delivery, DrainReport, OrderLine, OrderLines, OrderStatus,
    ProductId, PurchaseOutcome, PurchaseRequest, Quantity, Queue, StrategyKind, Tuning, Worker,
    WorkerSettings, queue_nats,
};
use redis::AsyncCommands;
use serde_json::{Value, json};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::helpers::{
    Answer, Setup, TestApp, all_at_once, audited_product, eventually, one_order_for_the_key, order_body,
    plan_of, spawn_app,
};

const HOT: i64 = 100;
const KINDS: [StrategyKind; 2] = [StrategyKind::Stream, StrategyKind::StreamDeferred];
/// Far above anything a drain of a few hundred entries needs: reaching it means a stuck worker.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Worker settings for tests: short waits, a small claim threshold so a dead consumer's entries
/// are taken over quickly, and few deliveries before the dead-letter stream.
pub(crate) fn quick() -> WorkerSettings {
    WorkerSettings {
        batch: 100,
        block: Duration::from_millis(50),
        claim_idle: Duration::from_millis(100),
        max_deliveries: 3,
    }
}

pub(crate) fn backends(app: &TestApp) -> Backends {
    Backends::new(app.pool.clone(), app.redis.clone(), Tuning::default()).with_nats(app.nats.clone())
}

fn worker(app: &TestApp, kind: StrategyKind, settings: WorkerSettings) -> Worker {
    Worker::new(&backends(app), kind, settings).expect("a queueing strategy has a worker")
}

/// Persists everything `kind`'s queue holds: its Redis stream, or the broker for `queue-nats`.
pub(crate) async fn drain(app: &TestApp, kind: StrategyKind) -> DrainReport {
    match kind.spec().queue.expect("a queueing strategy") {
        Queue::RedisStream => {
            worker(app, kind, quick()).run_until_idle(DRAIN_TIMEOUT).await.expect("the stream drains")
        }
        Queue::NatsJetstream => queue_nats::Consumer::new(&backends(app), quick())
            .expect("the books are in PostgreSQL")
            .run_until_idle(DRAIN_TIMEOUT)
            .await
            .expect("the broker drains"),
    }
}

pub(crate) async fn backlog(app: &TestApp, kind: StrategyKind) -> Backlog {
    app.app.registry.get(kind).backlog().await.expect("backlog").expect("queueing strategies report one")
}

/// Orders PostgreSQL holds: id → (status, reason).
pub(crate) async fn orders(app: &TestApp) -> Vec<(Uuid, String, Option<String>, String)> {
    // Void rows are fences for order ids settled while in doubt, not orders.
    sqlx::query_as(
        "SELECT id, status, reason, strategy FROM orders WHERE status <> 'void' ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .expect("read orders")
}

pub(crate) async fn inflight(app: &TestApp, product: i64) -> i64 {
    let mut conn = app.redis.conn.clone();
    conn.get::<_, Option<i64>>(app.redis.keys.inflight(product)).await.expect("Redis answers").unwrap_or(0)
}

async fn stream_len(app: &TestApp, kind: StrategyKind) -> u64 {
    let mut conn = app.redis.conn.clone();
    conn.xlen(StreamKeys::new(&app.redis.keys, kind).stream).await.expect("Redis answers")
}

/// Asserts `202 Accepted`, pending, pointing at the order; returns the order id.
#[track_caller]
pub(crate) fn assert_accepted(answer: &Answer, kind: StrategyKind) -> Uuid {
    assert_eq!(answer.status, 202, "{kind}: an accepted order answers 202: {}", answer.body);
    assert_eq!(answer.body["status"], "pending", "{kind}: accepted orders are pending: {}", answer.body);
    assert_eq!(answer.body["strategy"], kind.as_str(), "{kind}: the receipt names the strategy");
    let id = answer.body["order_id"].as_str().expect("receipt has an order_id");
    let location = answer.headers.get(reqwest::header::LOCATION).and_then(|value| value.to_str().ok());
    assert_eq!(location, Some(format!("/orders/{id}").as_str()), "{kind}: 202 points at the order");
    Uuid::parse_str(id).expect("order_id is a UUID")
}

/// Places `count` single-unit orders of `HOT` one after the other; returns their ids.
pub(crate) async fn place(app: &TestApp, kind: StrategyKind, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(assert_accepted(&app.buy(kind, &order_body(&[(HOT, 1)]), None).await, kind));
    }
    ids
}

/// 10 units, 200 buyers at once. `stream` accepts exactly the stock and persists every accepted
/// order exactly once; `stream-deferred` accepts more than the stock and cancels the excess.
/// Runs on the backends `base` names (its plan is the scenario's); returns the server.
pub(crate) async fn flash_sale_on(
    connect: PgConnectOptions,
    kind: StrategyKind,
    base: Setup,
) -> Arc<TestApp> {
    const STOCK: i64 = 10;
    const BUYERS: usize = 200;
    let app = Arc::new(spawn_app(connect, Setup { plan: plan_of(&[(HOT, STOCK)]), ..base }).await);
    let answers =
        all_at_once(&app, BUYERS, |app| async move { app.buy(kind, &order_body(&[(HOT, 1)]), None).await })
            .await;
    let mut accepted = HashSet::new();
    let mut sold_out = 0;
    for answer in answers {
        match answer.status {
            202 => assert!(accepted.insert(assert_accepted(&answer, kind)), "{kind}: an order id told twice"),
            409 => sold_out += 1,
            other => panic!("{kind}: unexpected status {other}: {}", answer.body),
        }
    }
    let accepted_count = i64::try_from(accepted.len()).unwrap();
    if kind.spec().safe {
        assert_eq!(
            accepted_count, STOCK,
            "{kind}: accepted (202) != stock: oversold or undersold at the door"
        );
        assert_eq!(sold_out, BUYERS - accepted.len(), "{kind}: sold-out answers");
        assert_eq!(app.redis_stock(HOT).await, Some(0), "{kind}: the reservations took the whole shelf");
        assert_eq!(inflight(&app, HOT).await, STOCK, "{kind}: reserved units are in flight until persisted");
    } else {
        assert!(accepted_count > STOCK, "{kind} only checks the stock, yet accepted just {accepted_count}");
    }
    assert_eq!(app.order_count().await, 0, "{kind}: nothing is persisted before a worker runs");
    assert_eq!(backlog(&app, kind).await.pending, accepted_count, "{kind}: every accepted order is pending");

    let report = drain(&app, kind).await;

    let persisted = orders(&app).await;
    let ids: HashSet<Uuid> = persisted.iter().map(|(id, ..)| *id).collect();
    assert_eq!(ids.len(), persisted.len(), "{kind}: an order persisted twice");
    assert_eq!(ids, accepted, "{kind}: lost (accepted, not persisted) or invented orders");
    let confirmed = persisted.iter().filter(|(_, status, ..)| status == "confirmed").count();
    let cancelled: Vec<_> = persisted.iter().filter(|(_, status, ..)| status == "cancelled").collect();
    assert_eq!(i64::try_from(confirmed).unwrap(), STOCK, "{kind}: confirmed orders != stock");
    assert_eq!(
        cancelled.len() + confirmed,
        accepted.len(),
        "{kind}: every accepted order is confirmed or cancelled"
    );
    assert!(
        cancelled.iter().all(|(_, _, reason, _)| reason.as_deref() == Some(SOLD_OUT_AFTER_ACCEPTANCE)),
        "{kind}: a cancelled order carries its reason: {cancelled:?}"
    );
    assert!(
        persisted.iter().all(|(.., strategy)| strategy == kind.as_str()),
        "{kind}: orders name the strategy"
    );
    assert_eq!(report.persisted, u64::try_from(STOCK).unwrap(), "{kind}: drain report: {report:?}");
    assert_eq!(report.cancelled, u64::try_from(cancelled.len()).unwrap(), "{kind}: drain report: {report:?}");

    assert_eq!(app.stock(HOT).await, 0, "{kind}: PostgreSQL's stock moved by the confirmed orders only");
    assert_eq!(app.redis_stock(HOT).await, Some(0), "{kind}: Redis and PostgreSQL agree after the drain");
    assert_eq!(inflight(&app, HOT).await, 0, "{kind}: nothing left in flight after the drain");
    assert_eq!(backlog(&app, kind).await, Backlog::default(), "{kind}: nothing pending, nothing dead");

    let audit = app.audit().await;
    let product = audited_product(&audit, HOT, kind);
    assert_eq!(product["oversold"], 0, "{kind}: audit: {product}");
    assert_eq!(product["stock_drift"], 0, "{kind}: audit: {product}");
    assert_eq!(product["units_in_orders"], STOCK, "{kind}: audit: {product}");
    assert_eq!(audit["order_status"]["cancelled"], cancelled.len(), "{kind}: audit: {audit}");
    if kind.spec().safe {
        assert_eq!(audit["clean"], true, "{kind}: a drained safe queue audits clean: {audit}");
    } else {
        assert_eq!(
            audit["queues"]["accepted_then_cancelled"],
            cancelled.len(),
            "{kind}: the audit counts clients told 202 whose order was cancelled: {audit}"
        );
        assert_eq!(audit["clean"], false, "{kind}: cancelled acceptances must not audit clean");
    }
    app
}

async fn buy_by_header(app: &TestApp, kind: StrategyKind, body: &Value, key: &str) -> Answer {
    let request = app
        .client
        .post(format!("{}/purchase", app.url))
        .header("X-Strategy", kind.as_str())
        .header("Idempotency-Key", key)
        .json(body);
    crate::helpers::read_answer(request.send().await.expect("server answers")).await
}

async fn orders_with_key(app: &TestApp, key: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE idempotency_key = $1")
        .bind(key)
        .fetch_one(&app.pool)
        .await
        .expect("count orders by key")
}

/// The same key again, by the other route and with another body, answers the first order: pending
/// while it waits, confirmed once persisted.
pub(crate) async fn idempotent_replay(connect: PgConnectOptions, kind: StrategyKind) {
    const KEY: &str = "replay-order-0001";
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 50), (7, 5)]), ..Setup::default() }).await;

    let first = app.buy(kind, &order_body(&[(HOT, 2)]), Some(KEY)).await;
    let order_id = assert_accepted(&first, kind);
    let again = app.buy(kind, &order_body(&[(HOT, 2)]), Some(KEY)).await;
    assert_eq!(again.status, 200, "{kind}: a replayed key answers 200: {}", again.body);
    assert_eq!(again.body, first.body, "{kind}: a replayed key answers the first receipt");
    let by_header = buy_by_header(&app, kind, &order_body(&[(HOT, 2)]), KEY).await;
    assert_eq!(by_header.status, 200, "{kind}: the key is the same through X-Strategy: {}", by_header.body);
    assert_eq!(by_header.body, first.body, "{kind}: the key is the same through X-Strategy");
    let other_body = app.buy(kind, &order_body(&[(7, 1)]), Some(KEY)).await;
    other_body.assert_error(422, "idempotency_key_reused");
    assert_eq!(
        other_body.body["order_id"],
        order_id.to_string().as_str(),
        "{kind}: a key reused for another purchase is refused and names the first order: {}",
        other_body.body
    );
    assert_eq!(backlog(&app, kind).await.pending, 1, "{kind}: one key, one queued order");

    let report = drain(&app, kind).await;
    assert_eq!(report.persisted, 1, "{kind}: {report:?}");
    let after = app.buy(kind, &order_body(&[(HOT, 2)]), Some(KEY)).await;
    assert_eq!(after.status, 200, "{kind}: the key still replays once persisted: {}", after.body);
    assert_eq!(after.body["order_id"], order_id.to_string(), "{kind}: the same order");
    assert_eq!(
        after.body["status"], "confirmed",
        "{kind}: the replay tells what became of it: {}",
        after.body
    );

    assert_eq!(orders_with_key(&app, KEY).await, 1, "{kind}: one key, one order");
    assert_eq!(app.order_count().await, 1, "{kind}: replays write no order");
    assert_eq!(app.stock(HOT).await, 48, "{kind}: replays take no stock");
    assert_eq!(app.stock(7).await, 5, "{kind}: a reused key with another body takes no stock");
    assert_eq!(app.redis_stock(HOT).await, Some(48), "{kind}: Redis agrees");
    assert_eq!(app.redis_stock(7).await, Some(5), "{kind}: Redis agrees");

    let stats = app.stats_of(kind).await;
    assert_eq!(stats["pending"], 1, "{kind}: one acceptance: {stats}");
    assert_eq!(stats["replayed"], 3, "{kind}: three replays: {stats}");
    assert_eq!(stats["errors"]["idempotency_key_reused"], 1, "{kind}: one reused key: {stats}");
}

/// Twenty clients send the same key at once: one order queued, one 202, the others 200 with its id.
pub(crate) async fn concurrent_replay(connect: PgConnectOptions, kind: StrategyKind) {
    const KEY: &str = "concurrent-order-0001";
    const CLIENTS: usize = 20;
    let app = Arc::new(spawn_app(connect, Setup { plan: plan_of(&[(HOT, 50)]), ..Setup::default() }).await);
    let answers =
        all_at_once(
            &app,
            CLIENTS,
            |app| async move { app.buy(kind, &order_body(&[(HOT, 3)]), Some(KEY)).await },
        )
        .await;
    assert_accepted(one_order_for_the_key(&answers, 202, kind), kind);
    assert_eq!(backlog(&app, kind).await.pending, 1, "{kind}: one queued order");
    drain(&app, kind).await;
    assert_eq!(orders_with_key(&app, KEY).await, 1, "{kind}: one key, one order");
    assert_eq!(app.order_count().await, 1, "{kind}: concurrent replays write no order");
    assert_eq!(app.stock(HOT).await, 47, "{kind}: stock is taken once");
    assert_eq!(app.redis_stock(HOT).await, Some(47), "{kind}: Redis agrees");
}

/// A consumer reads a batch and dies before acknowledging it; another takes it over once it is
/// idle, and every accepted order is persisted exactly once.
async fn a_dead_consumers_batch_is_reclaimed(connect: PgConnectOptions, kind: StrategyKind) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 50)]), ..Setup::default() }).await;
    let accepted: HashSet<Uuid> = place(&app, kind, 30).await.into_iter().collect();

    let mut doomed = worker(&app, kind, WorkerSettings { batch: 10, ..quick() });
    let batch = doomed.next_batch(false).await.expect("Redis answers").expect("entries to read");
    assert_eq!(batch.len(), 10, "{kind}: the doomed consumer holds a batch");
    let doomed_name = doomed.consumer().to_owned();
    drop(doomed);
    let mut conn = app.redis.conn.clone();
    let stream = StreamKeys::new(&app.redis.keys, kind).stream;
    let held: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&stream)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async(&mut conn)
        .await
        .expect("XPENDING");
    assert_eq!(held.len(), 10, "{kind}: the batch waits in the group's pending list");
    assert!(held.iter().all(|(_, owner, ..)| *owner == doomed_name), "{kind}: held by the dead consumer");
    // Idle long past the limit, but holding entries: its name must stay, or they would leave the
    // pending list unpersisted.
    let mut survivor = worker(&app, kind, quick());
    tokio::time::sleep(quick().claim_idle * 12).await;
    let forgotten = survivor.forget_dead_consumers().await.expect("XINFO");
    assert!(!forgotten.contains(&doomed_name), "{kind}: a consumer holding entries was dropped");

    let report = drain(&app, kind).await;
    assert_eq!(report.persisted, 30, "{kind}: every accepted order persisted once: {report:?}");
    assert_eq!(report.redelivered, 0, "{kind}: nothing was written before the crash: {report:?}");
    let persisted = orders(&app).await;
    let ids: HashSet<Uuid> = persisted.iter().map(|(id, ..)| *id).collect();
    assert_eq!(persisted.len(), 30, "{kind}: order count != accepted count");
    assert_eq!(ids, accepted, "{kind}: the persisted orders are the accepted ones");
    assert_eq!(app.stock(HOT).await, 20, "{kind}: PostgreSQL's stock moved once per order");
    assert_eq!(app.redis_stock(HOT).await, Some(20), "{kind}: Redis agrees");
    assert_eq!(inflight(&app, HOT).await, 0, "{kind}: nothing left in flight");
    assert_eq!(stream_len(&app, kind).await, 0, "{kind}: every entry acknowledged and removed");

    // Its entries taken over, the dead consumer's name leaves the group once idle long enough.
    tokio::time::sleep(quick().claim_idle * 12).await;
    survivor.forget_dead_consumers().await.expect("XINFO");
    let consumers: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&stream)
        .arg(GROUP)
        .query_async(&mut conn)
        .await
        .expect("XINFO CONSUMERS");
    let names: Vec<String> = consumers
        .iter()
        .map(|consumer| redis::from_redis_value(consumer["name"].clone()).expect("a name"))
        .collect();
    assert!(!names.contains(&doomed_name), "{kind}: the dead consumer is still in the group: {names:?}");
}

/// A worker commits a batch and dies before settling it in Redis; the redelivery writes no second
/// order and moves no stock twice, neither in PostgreSQL nor in Redis.
async fn a_batch_committed_but_not_acknowledged_is_not_written_twice(
    connect: PgConnectOptions,
    kind: StrategyKind,
) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 50)]), ..Setup::default() }).await;
    place(&app, kind, 10).await;

    let mut doomed = worker(&app, kind, quick());
    let batch = doomed.next_batch(false).await.expect("Redis answers").expect("entries to read");
    let persisted = doomed.persist(&batch).await.expect("the batch commits");
    assert_eq!(persisted.written(), 10, "{kind}: the batch is in PostgreSQL");
    drop(doomed);
    assert_eq!(app.order_count().await, 10, "{kind}: committed before the crash");
    assert_eq!(app.stock(HOT).await, 40, "{kind}: committed with its stock decrement");
    assert_eq!(app.redis_stock(HOT).await, Some(40), "{kind}: taken in Redis");
    assert_eq!(inflight(&app, HOT).await, 10, "{kind}: not settled: still in flight");
    assert_eq!(backlog(&app, kind).await.pending, 10, "{kind}: not settled: still pending");

    let report = drain(&app, kind).await;
    assert_eq!(report.redelivered, 10, "{kind}: the redelivered entries are recognised: {report:?}");
    assert_eq!(report.persisted, 0, "{kind}: nothing written twice: {report:?}");
    assert_eq!(app.order_count().await, 10, "{kind}: no second order");
    assert_eq!(app.stock(HOT).await, 40, "{kind}: no second decrement in PostgreSQL");
    assert_eq!(app.redis_stock(HOT).await, Some(40), "{kind}: no second take in Redis");
    assert_eq!(inflight(&app, HOT).await, 0, "{kind}: settled once");
    assert_eq!(backlog(&app, kind).await, Backlog::default(), "{kind}: nothing pending");
    assert_eq!(app.audit().await["products"][0]["stock_drift"], 0, "{kind}: the books balance");
}

/// An order PostgreSQL refuses (a NUL byte in its address: the HTTP edge refuses those, so it is
/// handed to the strategy directly, as a bug upstream would) and an entry nobody can read fail
/// every delivery; after the limit they are in the dead-letter stream, the poison order's units are
/// back on the shelf, and the good orders around them were persisted.
async fn poison_entries_go_to_the_dead_letter_stream(connect: PgConnectOptions, kind: StrategyKind) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 10)]), ..Setup::default() }).await;
    let first = assert_accepted(&app.buy(kind, &order_body(&[(HOT, 1)]), None).await, kind);
    let poison_request = PurchaseRequest {
        order_id: Uuid::new_v4(),
        lines: OrderLines::new(vec![OrderLine {
            product_id: ProductId::parse(HOT).unwrap(),
            quantity: Quantity::parse(2).unwrap(),
        }])
        .unwrap(),
        delivery: Delivery {
            address: "1 Khreshchatyk St\u{0}, Kyiv".into(),
            phone: "+380441234567".into(),
            email: "buyer@example.com".into(),
        },
        user: Some("buyer".into()),
        idempotency_key: None,
    };
    let outcome =
        app.app.registry.get(kind).purchase(&poison_request).await.expect("the poison order is accepted");
    assert!(
        matches!(&outcome, PurchaseOutcome::Placed(receipt) if receipt.status == OrderStatus::Pending),
        "{kind}: the poison order is accepted as pending: {outcome:?}"
    );
    let poison = poison_request.order_id;
    let keys = StreamKeys::new(&app.redis.keys, kind);
    let mut conn = app.redis.conn.clone();
    let garbage: String = conn
        .xadd(&keys.stream, "*", &[("order_id", Uuid::new_v4().to_string()), ("payload", "{not json".into())])
        .await
        .expect("XADD");
    let last = assert_accepted(&app.buy(kind, &order_body(&[(HOT, 1)]), None).await, kind);

    let report = drain(&app, kind).await;
    assert_eq!(report.persisted, 2, "{kind}: the good orders are persisted: {report:?}");
    assert_eq!(report.dead_lettered, 2, "{kind}: both poison entries given up on: {report:?}");
    assert_eq!(
        report.failed_attempts,
        2 * quick().max_deliveries,
        "{kind}: each tried the limit: {report:?}"
    );

    let persisted: BTreeSet<Uuid> = orders(&app).await.into_iter().map(|(id, ..)| id).collect();
    assert_eq!(
        persisted,
        BTreeSet::from([first, last]),
        "{kind}: the orders around the poison are persisted"
    );
    assert_eq!(app.stock(HOT).await, 8, "{kind}: PostgreSQL's stock moved by the persisted orders");
    assert_eq!(app.redis_stock(HOT).await, Some(8), "{kind}: the poison order's units are back on the shelf");
    assert_eq!(inflight(&app, HOT).await, 0, "{kind}: nothing left in flight");
    assert_eq!(
        backlog(&app, kind).await,
        Backlog { pending: 0, dead_lettered: 2, ..Backlog::default() },
        "{kind}: backlog"
    );
    assert_eq!(stream_len(&app, kind).await, 0, "{kind}: the stream is empty");

    let dead: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(&keys.dead_letter)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    let dead_entries: BTreeSet<&str> = dead.iter().map(|(_, fields)| fields["entry_id"].as_str()).collect();
    assert!(
        dead_entries.contains(garbage.as_str()),
        "{kind}: the unreadable entry is dead-lettered: {dead:?}"
    );
    let poisoned = dead
        .iter()
        .find(|(_, fields)| fields["order_id"] == poison.to_string())
        .unwrap_or_else(|| panic!("{kind}: the poison order is dead-lettered: {dead:?}"));
    assert_eq!(poisoned.1["deliveries"], quick().max_deliveries.to_string(), "{kind}: {poisoned:?}");
    assert!(!poisoned.1["reason"].is_empty(), "{kind}: a dead letter says why: {poisoned:?}");
    assert!(poisoned.1["payload"].contains("Khreshchatyk"), "{kind}: the order is kept: {poisoned:?}");

    let audit = app.audit().await;
    assert_eq!(audit["queues"]["dead_lettered"], 2, "{kind}: the audit shows the dead letters: {audit}");
    assert_eq!(audit["clean"], false, "{kind}: dead letters must not audit clean: {audit}");
}

macro_rules! per_kind {
    ($($scenario:ident => $stream:ident, $deferred:ident;)*) => {
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $stream(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                $scenario(connect, StrategyKind::Stream).await;
            }

            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $deferred(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                $scenario(connect, StrategyKind::StreamDeferred).await;
            }
        )*
    };
}

per_kind! {
    a_dead_consumers_batch_is_reclaimed => stream_reclaims_a_dead_consumers_batch, stream_deferred_reclaims_a_dead_consumers_batch;
    a_batch_committed_but_not_acknowledged_is_not_written_twice => stream_never_writes_a_redelivered_batch_twice, stream_deferred_never_writes_a_redelivered_batch_twice;
    poison_entries_go_to_the_dead_letter_stream => stream_dead_letters_poison_entries, stream_deferred_dead_letters_poison_entries;
}

#[test]
fn every_queueing_strategy_is_covered() {
    let on_redis: Vec<StrategyKind> =
        StrategyKind::ALL.into_iter().filter(|kind| kind.spec().queue == Some(Queue::RedisStream)).collect();
    assert_eq!(on_redis, KINDS, "every Redis stream strategy runs the scenarios above");
    let on_broker: Vec<StrategyKind> = StrategyKind::ALL
        .into_iter()
        .filter(|kind| kind.spec().queue == Some(Queue::NatsJetstream))
        .collect();
    assert_eq!(on_broker, crate::nats::KINDS, "every broker strategy runs `nats`'s scenarios");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn an_order_reads_pending_then_confirmed(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const KIND: StrategyKind = StrategyKind::Stream;
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 10), (7, 10)]), ..Setup::default() }).await;
    let body = order_body(&[(7, 2), (HOT, 1)]);
    let id = assert_accepted(&app.buy(KIND, &body, Some("read-me")).await, KIND);

    let pending = app.get_json(&format!("/orders/{id}")).await;
    assert_eq!(pending["status"], "pending", "an accepted order reads back pending: {pending}");
    assert_eq!(pending["strategy"], KIND.as_str(), "{pending}");
    assert_eq!(
        pending["items"],
        json!([{ "product_id": 7, "quantity": 2 }, { "product_id": 100, "quantity": 1 }]),
        "a pending order keeps every line, by product id"
    );
    assert_eq!(pending["delivery"], body["delivery"], "a pending order keeps its delivery details");
    assert_eq!(pending["user"], body["user"], "a pending order keeps its user");
    assert_eq!(pending["idempotency_key"], "read-me", "a pending order keeps its key");

    drain(&app, KIND).await;
    let confirmed = app.get_json(&format!("/orders/{id}")).await;
    assert_eq!(confirmed["status"], "confirmed", "a persisted order reads back confirmed: {confirmed}");
    for field in ["items", "delivery", "user", "idempotency_key", "created_at"] {
        assert_eq!(confirmed[field], pending[field], "{field} is the same before and after persisting");
    }
    assert_eq!(app.stock(7).await, 8, "every line persisted");
    assert_eq!(app.stock(HOT).await, 9, "every line persisted");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_deferred_order_the_stock_no_longer_covers_reads_cancelled(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    const KIND: StrategyKind = StrategyKind::StreamDeferred;
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 1)]), ..Setup::default() }).await;
    let [first, second] = place(&app, KIND, 2).await[..] else { unreachable!("two orders placed") };
    for id in [first, second] {
        assert_eq!(app.get_json(&format!("/orders/{id}")).await["status"], "pending", "accepted: pending");
    }
    let report = drain(&app, KIND).await;
    assert_eq!((report.persisted, report.cancelled), (1, 1), "{report:?}");
    let confirmed = app.get_json(&format!("/orders/{first}")).await;
    assert_eq!(confirmed["status"], "confirmed", "the first accepted gets the unit: {confirmed}");
    assert_eq!(confirmed["reason"], Value::Null, "{confirmed}");
    let cancelled = app.get_json(&format!("/orders/{second}")).await;
    assert_eq!(cancelled["status"], "cancelled", "the second was told 202 and is cancelled: {cancelled}");
    assert_eq!(cancelled["reason"], SOLD_OUT_AFTER_ACCEPTANCE, "a cancelled order says why: {cancelled}");
    assert_eq!(cancelled["strategy"], KIND.as_str(), "{cancelled}");
    assert_eq!(cancelled["items"], json!([{ "product_id": 100, "quantity": 1 }]), "it keeps its lines");
    assert_eq!(app.stock(HOT).await, 0, "only the confirmed order moved the stock");
    assert_eq!(app.redis_stock(HOT).await, Some(0), "Redis agrees");
    assert_eq!(inflight(&app, HOT).await, 0, "nothing left in flight");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn stream_reservations_are_all_or_nothing(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    stream_reservations_are_all_or_nothing_on(connect, StrategyKind::Stream, Setup::default()).await;
}

/// A multi-line order is reserved whole or not at all, and persisted whole, on the backends
/// `base` names (its plan is the scenario's).
pub(crate) async fn stream_reservations_are_all_or_nothing_on(
    connect: PgConnectOptions,
    kind: StrategyKind,
    base: Setup,
) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(1, 10), (2, 3)]), ..base }).await;

    let refused = app.buy(kind, &order_body(&[(1, 2), (2, 5)]), None).await;
    refused.assert_error(409, "sold_out");
    assert_eq!(refused.body["product_id"], 2, "names the product that does not fit: {}", refused.body);
    let unknown = app.buy(kind, &order_body(&[(1, 2), (999, 1)]), None).await;
    unknown.assert_error(404, "unknown_product");
    assert_eq!(
        (app.redis_stock(1).await, app.redis_stock(2).await),
        (Some(10), Some(3)),
        "refusals take nothing"
    );
    assert_eq!(backlog(&app, kind).await.pending, 0, "refusals queue nothing");

    assert_accepted(&app.buy(kind, &order_body(&[(2, 3), (1, 2)]), None).await, kind);
    assert_eq!(
        (app.redis_stock(1).await, app.redis_stock(2).await),
        (Some(8), Some(0)),
        "every line reserved"
    );
    assert_eq!((inflight(&app, 1).await, inflight(&app, 2).await), (2, 3), "and in flight");
    drain(&app, kind).await;
    assert_eq!((app.stock(1).await, app.stock(2).await), (8, 0), "PostgreSQL follows");
    assert_eq!((inflight(&app, 1).await, inflight(&app, 2).await), (0, 0), "settled");
    assert_eq!(app.audit().await["clean"], true, "the books balance");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_lost_stock_key_is_rebuilt_net_of_pending_orders(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    const KIND: StrategyKind = StrategyKind::Stream;
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 10)]), ..Setup::default() }).await;
    place(&app, KIND, 3).await;
    let mut conn = app.redis.conn.clone();
    let _: () = conn.del(app.redis.keys.stock(HOT)).await.expect("DEL");

    place(&app, KIND, 1).await;
    assert_eq!(app.redis_stock(HOT).await, Some(6), "rebuilt as 10 in PostgreSQL - 3 pending, then reserved");
    drain(&app, KIND).await;
    assert_eq!(app.stock(HOT).await, 6, "four orders persisted");
    assert_eq!(app.redis_stock(HOT).await, Some(6), "Redis agrees");
}

/// Stopping while a batch is in hand (its transaction waits on a row lock): the worker finishes
/// the batch — committed and acknowledged — and only then stops.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_stopped_worker_finishes_its_batch(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const KIND: StrategyKind = StrategyKind::Stream;
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 10)]), ..Setup::default() }).await;
    place(&app, KIND, 5).await;
    let mut lock = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT stock FROM products WHERE id = $1 FOR UPDATE")
        .bind(HOT)
        .execute(&mut *lock)
        .await
        .expect("lock the hot row");

    let cancel = CancellationToken::new();
    let running = tokio::spawn(worker(&app, KIND, quick()).run(cancel.clone()));
    let stream = StreamKeys::new(&app.redis.keys, KIND).stream;
    let redis = app.redis.clone();
    eventually("the worker holds the batch", Duration::from_secs(10), || {
        let (mut conn, stream) = (redis.conn.clone(), stream.clone());
        async move {
            let held: Result<redis::streams::StreamPendingReply, _> = conn.xpending(&stream, GROUP).await;
            held.is_ok_and(|held| held.count() == 5)
        }
    })
    .await;
    cancel.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!running.is_finished(), "the worker stops only after its batch");
    lock.rollback().await.expect("release the row");

    let report = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker stops once its batch is done")
        .expect("worker task");
    assert_eq!(report.persisted, 5, "the batch in hand was committed: {report:?}");
    assert_eq!(app.order_count().await, 5, "the batch in hand was committed");
    assert_eq!(stream_len(&app, KIND).await, 0, "and acknowledged");
    assert_eq!(backlog(&app, KIND).await.pending, 0, "and settled");
}

/// A reset deletes the stream and its group under a running worker; it recreates the group and
/// persists what comes next.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_running_worker_survives_a_reset(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const KIND: StrategyKind = StrategyKind::Stream;
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 10)]), ..Setup::default() }).await;
    let cancel = CancellationToken::new();
    let running = tokio::spawn(worker(&app, KIND, quick()).run(cancel.clone()));
    let pool = app.pool.clone();
    let persisted = |n: i64| {
        let pool = pool.clone();
        move || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM orders")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(-1)
                    == n
            }
        }
    };
    place(&app, KIND, 1).await;
    eventually("the running worker persists the order", Duration::from_secs(10), persisted(1)).await;

    app.app.reset(plan_of(&[(HOT, 10)])).await.expect("reset");
    assert_eq!(app.order_count().await, 0, "the reset deleted the order");
    let after = place(&app, KIND, 2).await;
    eventually("the worker persists orders placed after the reset", Duration::from_secs(10), persisted(2))
        .await;
    let ids: HashSet<Uuid> = orders(&app).await.into_iter().map(|(id, ..)| id).collect();
    assert_eq!(ids, after.into_iter().collect(), "the orders placed after the reset");
    eventually("the worker settles them", Duration::from_secs(10), || async {
        inflight(&app, HOT).await == 0
    })
    .await;
    assert_eq!(app.redis_stock(HOT).await, Some(8), "Redis agrees with PostgreSQL");
    assert_eq!(app.stock(HOT).await, 8, "PostgreSQL");

    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(10), running).await.expect("stops").expect("task");
    assert_eq!(report.persisted, 3, "{report:?}");
}
