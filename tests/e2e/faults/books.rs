//! Settling after a fault (draining queues, sweeping reservations) and checking the books
//! independently of the audit: PostgreSQL's rows and Redis's keys, read directly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use checkout_strategies::background::Job;
use checkout_strategies::reservation::{Sweeper, SweeperSettings};
use checkout_strategies::{
    Backends, Queue, RedisKeys, StrategyKind, Tuning, Worker, WorkerSettings, queue_nats,
};
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use super::storm::Tally;
use crate::helpers::TestApp;

/// Longest a settle may take: the reservation deadline plus a few sweeps and a drain.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);

/// Worker settings for tests: short waits, and entries a dead consumer held are taken over fast.
pub(crate) fn quick_worker() -> WorkerSettings {
    WorkerSettings {
        batch: 100,
        block: Duration::from_millis(50),
        claim_idle: Duration::from_millis(200),
        max_deliveries: 3,
    }
}

/// The app's own backends, as its background work would use them.
pub(crate) fn backends(app: &TestApp) -> Backends {
    Backends::new(app.pool.clone(), app.redis.clone(), Tuning::default()).with_nats(app.nats.clone())
}

/// `GET /admin/audit`, tolerating the 503s of a backend still coming back.
pub(crate) async fn audit(app: &TestApp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = app.get("/admin/audit").await;
        if answer.status == 200 {
            return answer.body;
        }
        assert!(Instant::now() < deadline, "the audit kept failing: {} {}", answer.status, answer.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Does what the server's background work does until the audit says the books are final and no
/// unit is held for an order any more: drains the queues of `kinds`, sweeps expired reservations
/// and applies orders awaiting the stock sync. Returns that audit. Call it once the buyers stopped.
pub(crate) async fn settle(app: &TestApp, kinds: &[StrategyKind]) -> Value {
    let sweeper = Sweeper::new(app.pool.clone(), app.redis.clone(), SweeperSettings::default());
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        for &kind in kinds {
            let drained = match kind.spec().queue {
                None => continue,
                Some(Queue::RedisStream) => Worker::new(&backends(app), kind, quick_worker())
                    .expect("a queue")
                    .run_until_idle(Duration::from_secs(5))
                    .await
                    .map(drop),
                Some(Queue::NatsJetstream) => queue_nats::Consumer::new(&backends(app), quick_worker())
                    .expect("the books are in PostgreSQL")
                    .run_until_idle(Duration::from_secs(5))
                    .await
                    .map(drop),
            };
            if let Err(err) = drained {
                eprintln!("{kind}: drain not finished yet: {err}");
            }
        }
        if let Err(err) = sweeper.sweep().await {
            eprintln!("sweep failed; trying again: {err}");
        }
        if kinds.iter().any(|kind| kind.background().contains(&Job::StockSync)) {
            app.sync_stock().await;
        }
        let audit = audit(app).await;
        // `settled` says nothing is overdue; a reservation whose owner died before its deadline
        // still holds units until the sweeper ends it, so wait for those too.
        if audit["settled"] == true && audit["reservations"]["holds"] == 0 {
            return audit;
        }
        assert!(Instant::now() < deadline, "the books did not settle within {SETTLE_WITHIN:?}: {audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A live order as PostgreSQL holds it.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) status: String,
    /// Units per product.
    pub(crate) items: BTreeMap<i64, i64>,
}

/// Every order that is not a void fence, with its lines.
pub(crate) async fn orders(app: &TestApp) -> BTreeMap<Uuid, Order> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, status FROM orders WHERE status <> 'void'")
        .fetch_all(&app.pool)
        .await
        .expect("read orders");
    let mut orders: BTreeMap<Uuid, Order> =
        rows.into_iter().map(|(id, status)| (id, Order { status, items: BTreeMap::new() })).collect();
    let items: Vec<(Uuid, i64, i32)> =
        sqlx::query_as("SELECT order_id, product_id, quantity FROM order_items")
            .fetch_all(&app.pool)
            .await
            .expect("read order items");
    for (order, product, quantity) in items {
        let order =
            orders.get_mut(&order).unwrap_or_else(|| panic!("items of order {order}, which is not live"));
        order.items.insert(product, i64::from(quantity));
    }
    orders
}

/// Redis read over a fresh connection, so a restarted server or a cut proxy does not matter.
#[derive(Debug, Clone)]
pub(crate) struct RedisView {
    url: String,
    keys: RedisKeys,
}

impl RedisView {
    /// The Redis at `url`, under `app`'s key prefix.
    pub(crate) fn new(url: &str, app: &TestApp) -> Self {
        Self { url: url.to_owned(), keys: app.redis.keys.clone() }
    }

    pub(crate) async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis answers")
    }

    async fn int(&self, key: String) -> Option<i64> {
        redis::cmd("GET").arg(key).query_async(&mut self.conn().await).await.expect("GET")
    }

    pub(crate) async fn stock(&self, product: i64) -> Option<i64> {
        self.int(self.keys.stock(product)).await
    }

    pub(crate) async fn inflight(&self, product: i64) -> Option<i64> {
        self.int(self.keys.inflight(product)).await
    }

    /// Open reservations of the synchronous Redis strategies.
    pub(crate) async fn reservations(&self) -> usize {
        redis::cmd("HLEN")
            .arg(self.keys.reservations())
            .query_async(&mut self.conn().await)
            .await
            .expect("HLEN")
    }
}

/// What the checks need to know about a run.
#[derive(Debug)]
pub(crate) struct Expect<'a> {
    pub(crate) kind: StrategyKind,
    /// Products sold, with their initial stock.
    pub(crate) products: &'a [(i64, i64)],
    pub(crate) tally: &'a Tally,
    /// Redis, when the products are sold through the Redis gate.
    pub(crate) redis: Option<&'a RedisView>,
}

/// Checks settled books: nothing oversold, lost, invented, duplicated, half-written or stranded,
/// each stock exactly what was not sold, Redis equal to PostgreSQL, and an audit that agrees.
pub(crate) async fn assert_exact(app: &TestApp, audit: &Value, expect: &Expect<'_>) {
    let kind = expect.kind;
    let orders = orders(app).await;
    for (id, order) in &orders {
        assert!(
            matches!(order.status.as_str(), "confirmed" | "pending"),
            "{kind}: order {id} is {}",
            order.status
        );
        assert!(!order.items.is_empty(), "{kind}: order {id} has no lines: a half order");
        assert!(
            expect.tally.created.contains(id) || expect.tally.unknown.contains(id),
            "{kind}: order {id} exists but its buyer was told it failed (backend_unavailable or refused)"
        );
    }
    let lost: BTreeSet<_> = expect.tally.created.iter().filter(|id| !orders.contains_key(id)).collect();
    assert!(lost.is_empty(), "{kind}: orders answered 201/202 that PostgreSQL does not hold: {lost:?}");
    for &(product, initial) in expect.products {
        let sold: i64 = orders.values().filter_map(|order| order.items.get(&product)).sum();
        let stock = app.stock(product).await;
        assert!(
            sold <= initial,
            "{kind}: product {product} oversold: {sold} units in orders, {initial} existed"
        );
        assert_eq!(
            stock,
            initial - sold,
            "{kind}: product {product}: stock moved by other than the units sold"
        );
        if let Some(redis) = expect.redis {
            assert_eq!(
                redis.stock(product).await,
                Some(stock),
                "{kind}: product {product}: Redis != PostgreSQL"
            );
            assert_eq!(
                redis.inflight(product).await.unwrap_or(0),
                0,
                "{kind}: product {product}: units in flight"
            );
        }
    }
    if let Some(redis) = expect.redis {
        assert_eq!(redis.reservations().await, 0, "{kind}: reservations left open");
    }
    assert_eq!(audit["settled"], true, "{kind}: {audit}");
    assert_eq!(audit["clean"], true, "{kind}: the audit is not clean: {audit}");
    assert_eq!(audit["total"]["oversold"], 0, "{kind}: {audit}");
    assert_eq!(audit["total"]["stranded"], 0, "{kind}: {audit}");
    assert_eq!(audit["total"]["redis_drift"], 0, "{kind}: {audit}");
    assert_eq!(audit["reservations"]["holds"], 0, "{kind}: {audit}");
    assert_eq!(audit["queues"]["pending"], 0, "{kind}: {audit}");
    assert_eq!(audit["total"]["duplicated"], 0, "{kind}: {audit}");
}
