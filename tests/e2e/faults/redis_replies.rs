//! Redis replies lost after the command ran: the purchase cannot tell whether its script took the
//! units, and, when the link dies with it, its compensation never arrives either.
//!
//! Mid-storm, the proxy first stalls the link right after one purchase's script reached Redis (the
//! script runs, the reply and everything after it are lost), then mutes every reply for a second
//! (scripts run, replies time out, compensations still arrive). Buyers get 503s and retry. Units a
//! dead purchase left reserved are off the shelf until the sweeper settles them after their
//! deadline: before it, the audit must say so; after it, the books are exact.

use std::sync::Arc;
use std::time::Duration;

use checkout_strategies::StrategyKind;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use super::books::{self, Expect, RedisView, audit, settle};
use super::redis_proxy::RedisFaultProxy;
use super::redis_server::DisposableRedis;
use super::storm::{self, Storm, Tally};
use super::{ANSWER_BOUND, REDIS_REPLY_TIMEOUT, fault_setup, redis_reconnected, script_sha};
use crate::helpers::{order_body, plan_of, spawn_app};

const HOT: i64 = 100;
const STOCK: i64 = 20;

/// The script whose `EVALSHA` reserves units for `kind`.
fn reserving_script(kind: StrategyKind) -> String {
    if kind.spec().queued {
        script_sha(include_str!("../../../strategies/lua/stream_enqueue.lua"))
    } else {
        script_sha(include_str!("../../../strategies/lua/reserve.lua"))
    }
}

async fn replies_lost_mid_sale(connect: PgConnectOptions, kind: StrategyKind) {
    let redis = DisposableRedis::start().await;
    let proxy = RedisFaultProxy::start(redis.addr()).await;
    let app = Arc::new(spawn_app(connect, fault_setup(plan_of(&[(HOT, STOCK)]), proxy.url())).await);
    let view = RedisView::new(&redis.url(), &app);
    let storm = storm::start(
        &app,
        kind,
        &order_body(&[(HOT, 1)]),
        Storm { buyers: 60, stagger: Duration::from_millis(25), ..Storm::default() },
    );

    storm.wait_for_sales(3, Duration::from_secs(10)).await;
    // One purchase's script runs; its reply, and whatever it sends next, never arrive.
    proxy.stall_after(&reserving_script(kind));
    proxy.triggered(Duration::from_secs(10)).await;
    // Well past the reply timeout, so the purchase sends its compensation into the stall even on a
    // busy machine.
    tokio::time::sleep(REDIS_REPLY_TIMEOUT * 3).await;
    proxy.restore();
    let resumed = storm.created();
    storm.wait_for_sales(resumed + 2, Duration::from_secs(10)).await;
    // Every reply lost for a second: scripts run, buyers time out, their compensations still land.
    proxy.mute_replies();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let attempts = storm.finish().await;
    let tally = Tally::of(kind, &attempts, ANSWER_BOUND);
    assert!(tally.refused_for_faults() > 0, "{kind}: buyers saw no 503 while Redis lost replies");

    let orders = books::orders(&app).await;
    let sold: i64 = orders.values().filter_map(|order| order.items.get(&HOT)).sum();
    if kind.spec().queued {
        // What a lost reply leaves is an accepted order nobody was told about: it waits in the
        // stream, its units held, and the books are not final until a worker persists it.
        let before = audit(&app).await;
        assert_eq!(before["settled"], false, "{kind}: orders wait in the stream: {before}");
        assert!(before["queues"]["pending"].as_i64() > Some(0), "{kind}: {before}");
    } else {
        // The purchase whose compensation was lost left its units reserved: once the deadline
        // passed, the audit names them, and the shelf is short by them.
        let expired = wait_for_expired(&app).await;
        assert_eq!(expired["clean"], false, "{kind}: stranded units must not audit clean: {expired}");
        assert_eq!(expired["settled"], false, "{kind}: {expired}");
        assert!(
            expired["total"]["stranded"].as_i64() > Some(0),
            "{kind}: names the stranded units: {expired}"
        );
        let shelf = view.stock(HOT).await.expect("the stock key");
        assert!(
            shelf + sold < STOCK,
            "{kind}: units held by a dead purchase are off the shelf: {shelf} + {sold}"
        );
        assert_eq!(app.stock_in(kind, HOT).await, STOCK - sold, "{kind}: PostgreSQL holds only what sold");
    }

    let settled = settle(&app, &[kind]).await;
    let expect = Expect { kind, products: &[(HOT, STOCK)], tally: &tally, redis: Some(&view) };
    books::assert_exact(&app, &settled, &expect).await;
    let orders = books::orders(&app).await;
    let sold: i64 = orders.values().filter_map(|order| order.items.get(&HOT)).sum();
    assert_eq!(view.stock(HOT).await, Some(STOCK - sold), "{kind}: every unit sold or back on the shelf");
    if kind.spec().queued {
        assert!(
            tally.unknown.iter().any(|id| orders.contains_key(id)),
            "{kind}: the order whose reply was lost is persisted, and its buyer was given its id"
        );
    }
}

/// Polls the audit until a reservation is past its deadline.
async fn wait_for_expired(app: &crate::helpers::TestApp) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let audit = audit(app).await;
        if audit["reservations"]["expired"].as_i64() > Some(0) {
            return audit;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reservation expired: {audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A keyed purchase whose reply was lost, retried with the same key: one order, and the retry is
/// told about it instead of buying again. For `stream` the lost reply may hide an accepted order,
/// so the first answer must name it.
async fn a_keyed_retry_after_a_lost_reply_buys_once(connect: PgConnectOptions, kind: StrategyKind) {
    const KEY: &str = "lost-reply-0001";
    let redis = DisposableRedis::start().await;
    let proxy = RedisFaultProxy::start(redis.addr()).await;
    let app = spawn_app(connect, fault_setup(plan_of(&[(HOT, STOCK)]), proxy.url())).await;
    let view = RedisView::new(&redis.url(), &app);
    let body = order_body(&[(HOT, 1)]);
    // A sale first: Redis has the script then, so the muted call runs it (a fresh Redis would
    // answer NOSCRIPT, and that reply would be lost instead).
    let warm_up = app.buy(kind, &body, None).await;
    assert!(matches!(warm_up.status, 201 | 202), "{kind}: {}", warm_up.body);

    proxy.mute_replies();
    let first = app.buy(kind, &body, Some(KEY)).await;
    proxy.restore();
    redis_reconnected(&app).await;
    let retry = app.buy(kind, &body, Some(KEY)).await;

    let settled = settle(&app, &[kind]).await;
    let orders = books::orders(&app).await;
    let keyed: Vec<String> = sqlx::query_scalar("SELECT id::text FROM orders WHERE idempotency_key = $1")
        .bind(KEY)
        .fetch_all(&app.pool)
        .await
        .expect("orders with the key");
    assert_eq!(orders.len(), 2, "{kind}: the warm-up sale and one order for the key: {orders:?}");
    let [id] = &keyed[..] else { panic!("{kind}: one key, one order: {keyed:?}") };
    if kind.spec().queued {
        // The script may have run: the answer must say the outcome is unknown, name the order, and
        // keep the key, so the retry is told about the order instead of buying a second one.
        first.assert_error(503, "outcome_unknown");
        assert_eq!(first.body["order_id"], id.as_str(), "{kind}: the 503 names the accepted order");
        assert_eq!(retry.status, 200, "{kind}: the retry replays the accepted order: {}", retry.body);
    } else {
        // The purchase gave its reservation back: nothing was sold, so the retry buys.
        first.assert_error(503, "backend_unavailable");
        assert_eq!(retry.status, 201, "{kind}: the retry buys: {}", retry.body);
    }
    assert_eq!(retry.body["order_id"], id.as_str(), "{kind}: the retry names the one order");
    assert_eq!(app.stock_in(kind, HOT).await, STOCK - 2, "{kind}: one unit for the key, one before");
    assert_eq!(view.stock(HOT).await, Some(STOCK - 2), "{kind}: Redis agrees");
    assert_eq!(settled["clean"], true, "{kind}: {settled}");
}

macro_rules! per_kind {
    ($($scenario:ident => $($name:ident: $kind:expr),+;)*) => {
        $($(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $name(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                $scenario(connect, $kind).await;
            }
        )+)*
    };
}

per_kind! {
    replies_lost_mid_sale =>
        redis_lua_replies_lost_mid_sale: StrategyKind::RedisLua,
        redis_orderlog_replies_lost_mid_sale: StrategyKind::RedisOrderlog,
        redis_decr_replies_lost_mid_sale: StrategyKind::RedisDecr,
        stream_replies_lost_mid_sale: StrategyKind::Stream;
    a_keyed_retry_after_a_lost_reply_buys_once =>
        redis_lua_keyed_retry_after_a_lost_reply_buys_once: StrategyKind::RedisLua,
        redis_orderlog_keyed_retry_after_a_lost_reply_buys_once: StrategyKind::RedisOrderlog,
        stream_keyed_retry_after_a_lost_reply_buys_once: StrategyKind::Stream;
}
