//! `queue-nats` end to end against the shared NATS JetStream (streams named after the test's
//! prefix): poison messages dead-lettered after the delivery limit, and an order the broker never
//! got published again. The contention, idempotency and all-or-nothing scenarios it shares with
//! `stream` run from `contention.rs`, `orders.rs` and here through `stream.rs`'s helpers; consumers
//! killed before and after their commit, and a database outage, run on both databases from
//! `dialect_server.rs`.
//!
//! The server under test runs no consumer, so each test decides when orders are persisted: by
//! draining.

use std::collections::BTreeSet;
use std::time::Duration;

use checkout_strategies::queue_nats::Consumer;
use checkout_strategies::{
    Backlog, Delivery, OrderLine, OrderLines, OrderStatus, ProductId, PurchaseOutcome, PurchaseRequest,
    Quantity, StrategyKind, WorkerSettings,
};
use futures_util::StreamExt;
use serde_json::json;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::helpers::{Setup, order_body, plan_of, spawn_app};
use crate::stream::{assert_accepted, backends, backlog, drain, inflight, orders, place, quick};

const KIND: StrategyKind = StrategyKind::QueueNats;
/// Every strategy that queues through a broker; `stream.rs` checks the list is complete.
pub(crate) const KINDS: [StrategyKind; 1] = [KIND];
const HOT: i64 = 100;

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn queue_nats_reservations_are_all_or_nothing(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    crate::stream::stream_reservations_are_all_or_nothing_on(connect, KIND, crate::helpers::Setup::default())
        .await;
}

/// A batch acknowledged after its `ack_wait` passed (the books were slow, or down) is due for
/// redelivery until the broker reads the acknowledgements; a pull sent meanwhile must still end.
/// The pull that does not wait used to set no expiry, and the broker could leave it unanswered:
/// the consumer then waited forever, past any drain deadline, and persisted nothing more.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_pull_after_a_late_acknowledgement_ends(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const ROUNDS: usize = 20;
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 50)]), ..Setup::default() }).await;
    let settings = WorkerSettings { claim_idle: Duration::from_millis(100), ..quick() };
    let mut consumer = Consumer::new(&backends(&app), settings).expect("a broker consumer");
    for round in 0..ROUNDS {
        place(&app, KIND, 1).await;
        let batch = loop {
            if let Some(batch) = consumer.next_batch(true).await.expect("the broker answers") {
                break batch;
            }
        };
        tokio::time::sleep(settings.claim_idle * 2).await;
        let persisted = consumer.persist(&batch).await.expect("the batch commits");
        consumer.finish(&batch, &persisted).await.expect("settled and acknowledged");
        let pulled = tokio::time::timeout(Duration::from_secs(10), consumer.next_batch(false)).await;
        assert!(pulled.is_ok(), "round {round}: a pull that does not wait never ends");
    }
    let report = drain(&app, KIND).await;
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert_eq!(app.order_count().await, i64::try_from(ROUNDS).expect("a count"), "each order once");
}

/// An order PostgreSQL refuses (a NUL byte in its address, handed to the strategy directly as a bug
/// upstream would) and a message nobody can read fail every delivery; after `max_deliveries` they
/// are in the dead-letter stream, the poison order's id is void and its units are back on the
/// shelf, the orders around them are persisted, and the audit counts the dead letters.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn poison_messages_are_dead_lettered_after_the_delivery_limit(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 10)]), ..Setup::default() }).await;
    let first = assert_accepted(&app.buy(KIND, &order_body(&[(HOT, 1)]), None).await, KIND);
    let poison = PurchaseRequest {
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
    let outcome = app.app.registry.get(KIND).purchase(&poison).await.expect("the poison order is accepted");
    assert!(
        matches!(&outcome, PurchaseOutcome::Placed(receipt) if receipt.status == OrderStatus::Pending),
        "accepted as pending: {outcome:?}"
    );
    assert_eq!(app.redis_stock(HOT).await, Some(7), "the poison order holds its two units");
    let js = app.nats.jetstream().await.expect("the broker answers");
    js.publish(app.nats.names.subject.clone(), "{not json".into())
        .await
        .expect("published")
        .await
        .expect("stored");
    let last = assert_accepted(&app.buy(KIND, &order_body(&[(HOT, 1)]), None).await, KIND);

    let report = drain(&app, KIND).await;
    assert_eq!(report.persisted, 2, "the good orders are persisted: {report:?}");
    assert_eq!(report.dead_lettered, 2, "both poison messages given up on: {report:?}");
    assert_eq!(report.failed_attempts, 2 * quick().max_deliveries, "each tried the limit: {report:?}");

    let persisted: BTreeSet<Uuid> = orders(&app).await.into_iter().map(|(id, ..)| id).collect();
    assert_eq!(persisted, BTreeSet::from([first, last]), "the orders around the poison are persisted");
    let void: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE status = 'void'")
        .fetch_all(&app.pool)
        .await
        .expect("read void rows");
    assert_eq!(void, vec![poison.order_id], "the dead letter's id is void: no late delivery can commit it");
    assert_eq!(app.stock(HOT).await, 8, "PostgreSQL's stock moved by the persisted orders");
    assert_eq!(app.redis_stock(HOT).await, Some(8), "the poison order's units are back on the shelf");
    assert_eq!(inflight(&app, HOT).await, 0, "nothing left in flight");
    assert_eq!(
        backlog(&app, KIND).await,
        Backlog { dead_lettered: 2, ..Backlog::default() },
        "nothing pending or in the broker; two dead letters"
    );

    let dead = js.get_stream(&app.nats.names.dead_stream).await.expect("the dead-letter stream");
    let consumer = dead
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .expect("a reader");
    let mut letters = consumer.fetch().max_messages(10).messages().await.expect("read the dead letters");
    let mut reasons = Vec::new();
    while let Some(letter) = letters.next().await {
        let letter = letter.expect("a dead letter");
        let headers = letter.headers.clone().expect("a dead letter says why");
        assert_eq!(headers.get("Checkout-Deliveries").map(|v| v.as_str().to_owned()), Some("3".to_owned()));
        reasons.push(headers.get("Checkout-Reason").map(|v| v.as_str().to_owned()).unwrap_or_default());
        if headers.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str().to_owned())
            == Some(poison.order_id.to_string())
        {
            assert!(String::from_utf8_lossy(&letter.payload).contains("Khreshchatyk"), "the order is kept");
        }
    }
    assert_eq!(reasons.len(), 2, "two dead letters: {reasons:?}");
    assert!(reasons.iter().all(|reason| !reason.is_empty()), "each says why: {reasons:?}");

    let audit = app.audit().await;
    assert_eq!(audit["queues"]["dead_lettered"], 2, "the audit counts the dead letters: {audit}");
    assert_eq!(audit["clean"], false, "dead letters must not audit clean: {audit}");
    assert_eq!(audit["total"]["redis_drift"], 0, "Redis agrees with PostgreSQL: {audit}");
}

/// The server reserved an order and died before publishing it: it is pending in Redis and in no
/// broker. Once the broker's stream is empty and the order is old enough, the consumer publishes it
/// under its own id and persists it; its units stay sold.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn an_order_the_broker_never_got_is_published_again(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 10)]), ..Setup::default() }).await;
    place(&app, KIND, 1).await;
    let orphan = Uuid::new_v4();
    let payload = json!({
        "order_id": orphan,
        "strategy": KIND.as_str(),
        "items": [{ "product_id": HOT, "quantity": 3 }],
        "delivery": { "address": "1 Khreshchatyk St, Kyiv", "phone": "+380441234567", "email": "buyer@example.com" },
        "user": "buyer",
        "idempotency_key": null,
        "created_at": "2020-01-01T00:00:00Z",
    });
    // What the reservation script leaves behind when the publish never happens.
    let mut conn = app.redis.conn.clone();
    redis::pipe()
        .cmd("DECRBY")
        .arg(app.redis.keys.stock(HOT))
        .arg(3)
        .ignore()
        .cmd("INCRBY")
        .arg(app.redis.keys.inflight(HOT))
        .arg(3)
        .ignore()
        .cmd("HSET")
        .arg(app.redis.keys.pending(KIND.as_str()))
        .arg(orphan.to_string())
        .arg(payload.to_string())
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .expect("Redis answers");

    let report = drain(&app, KIND).await;
    assert_eq!(report.republished, 1, "the orphan is published again: {report:?}");
    assert_eq!(report.persisted, 2, "the orphan and the regular order: {report:?}");
    let ids: BTreeSet<Uuid> = orders(&app).await.into_iter().map(|(id, ..)| id).collect();
    assert!(ids.contains(&orphan), "the orphan is persisted");
    assert_eq!(app.stock(HOT).await, 6, "PostgreSQL sold both");
    assert_eq!(app.redis_stock(HOT).await, Some(6), "Redis agrees");
    assert_eq!(inflight(&app, HOT).await, 0, "settled");
    assert_eq!(app.audit().await["clean"], true);
}
