//! Overload: beyond its backend's in-flight limit a purchase is refused at once with 503
//! `overloaded` and `Retry-After`, and touches nothing; the purchases let in complete, each keeps
//! its place until it ends (not until its client leaves), and the books stay clean.
//!
//! A row lock held by a session of the test's own (or a stalled proxy in front of Redis) keeps the
//! purchases that were let in waiting for as long as the test needs, so which purchases are shed
//! is decided by the limit, not by timing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkout_bench::admission::InflightLimits;
use checkout_strategies::{PgSettings, RedisSettings, StrategyKind};
use serde_json::Value;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::mpsc;

use crate::helpers::{
    Answer, ChaosProxy, RowLock, Setup, TestApp, eventually, order_body, plan_of, spawn_app,
    wait_for_lock_waiters,
};

const HOT: i64 = 100;
/// A second product, for purchases that must not queue behind the hot row's lock.
const OTHER: i64 = 7;
const STOCK: i64 = 1_000;
/// Concurrent buyers in each burst: many times the limits below.
const BUYERS: usize = 40;
/// Purchases let in wait this long for PostgreSQL or Redis, and clients this long for an answer:
/// longer than any test holds them, so only the limit can turn a purchase away.
const PATIENT: Duration = Duration::from_secs(60);
/// A shed purchase answers well within this, far under [`PATIENT`]: at once, not after a wait.
const AT_ONCE: Duration = Duration::from_secs(3);
/// How long a test waits for a state; only a stuck server reaches it.
const PATIENCE: Duration = Duration::from_secs(20);

/// A server whose backends wait [`PATIENT`]ly, with these in-flight limits.
fn limited(inflight: InflightLimits) -> Setup {
    Setup {
        plan: plan_of(&[(HOT, STOCK), (OTHER, STOCK)]),
        pg: PgSettings { connections: 8, acquire_timeout: PATIENT, statement_timeout: PATIENT },
        redis: RedisSettings { response_timeout: PATIENT, ..RedisSettings::default() },
        request_timeout: PATIENT,
        inflight,
        ..Setup::default()
    }
}

/// One buyer's answer and how long it took.
#[derive(Debug)]
struct Timed {
    user: String,
    answer: Answer,
    elapsed: Duration,
}

/// Sends `buyers` purchases of one unit of `product` with `kind` at once, each naming its buyer
/// `{prefix}-{i}`; answers arrive on the channel as they come.
fn burst(
    app: &Arc<TestApp>,
    kind: StrategyKind,
    product: i64,
    buyers: usize,
    prefix: &str,
) -> mpsc::UnboundedReceiver<Timed> {
    let (sender, answers) = mpsc::unbounded_channel();
    for i in 0..buyers {
        let (app, sender, user) = (Arc::clone(app), sender.clone(), format!("{prefix}-{i}"));
        tokio::spawn(async move {
            let mut body = order_body(&[(product, 1)]);
            body["user"] = Value::from(user.clone());
            let started = Instant::now();
            let answer = app.buy(kind, &body, None).await;
            // The receiver may be gone when the test already failed.
            let _ = sender.send(Timed { user, answer, elapsed: started.elapsed() });
        });
    }
    answers
}

/// The next `count` answers, failing the test if they do not come within [`PATIENCE`].
async fn next_answers(answers: &mut mpsc::UnboundedReceiver<Timed>, count: usize) -> Vec<Timed> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let answer = tokio::time::timeout(PATIENCE, answers.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} answers came", received.len()))
            .expect("buyers answer");
        received.push(answer);
    }
    received
}

/// Asserts a shed purchase: 503 `overloaded` naming `backend`, `Retry-After`, answered at once.
#[track_caller]
fn assert_shed(timed: &Timed, backend: &str) {
    let answer = &timed.answer;
    answer.assert_error(503, "overloaded");
    assert_eq!(answer.body["backend"], backend, "{}: names the full backend: {}", timed.user, answer.body);
    let retry_after = answer.headers.get(reqwest::header::RETRY_AFTER).and_then(|value| value.to_str().ok());
    assert_eq!(retry_after, Some("1"), "{}: a shed purchase says when to retry", timed.user);
    assert!(
        timed.elapsed < AT_ONCE,
        "{}: shed after {:?}: a full backend is answered at once, not after a wait",
        timed.user,
        timed.elapsed
    );
}

/// Buyers named in PostgreSQL's orders.
async fn buyers_with_orders(app: &TestApp) -> BTreeSet<String> {
    sqlx::query_scalar::<_, Option<String>>("SELECT user_name FROM orders")
        .fetch_all(&app.pool)
        .await
        .expect("read orders")
        .into_iter()
        .flatten()
        .collect()
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn postgres_purchases_beyond_the_limit_are_shed_at_once(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    const LIMIT: usize = 4;
    const KIND: StrategyKind = StrategyKind::SqlAtomic;
    let inflight = InflightLimits { postgres: Some(LIMIT), ..InflightLimits::unlimited() };
    let app = Arc::new(spawn_app(connect.clone(), limited(inflight)).await);
    let lock = RowLock::take(&connect, HOT).await;

    let mut answers = burst(&app, KIND, HOT, BUYERS, "buyer");
    // While the row is locked no purchase that was let in can finish: every answer now is a shed one.
    let shed = next_answers(&mut answers, BUYERS - LIMIT).await;
    for timed in &shed {
        assert_shed(timed, "postgres");
    }
    wait_for_lock_waiters(&app.pool, i64::try_from(LIMIT).expect("small"), PATIENCE).await;

    // The limit is the backend's, shared by its strategies; other backends keep selling.
    let mut other_sql = order_body(&[(OTHER, 1)]);
    other_sql["user"] = "other-sql".into();
    app.buy(StrategyKind::SqlForUpdate, &other_sql, None).await.assert_error(503, "overloaded");
    let mut memory = order_body(&[(HOT, 1)]);
    memory["user"] = "memory-buyer".into();
    app.buy(StrategyKind::Memory, &memory, None).await.assert_placed(StrategyKind::Memory);

    lock.release().await;
    let admitted = next_answers(&mut answers, LIMIT).await;
    let placed: BTreeSet<String> = admitted
        .iter()
        .map(|timed| {
            timed.answer.assert_placed(KIND);
            timed.user.clone()
        })
        .collect();

    assert_eq!(buyers_with_orders(&app).await, placed, "orders exist for the 201s and for no shed purchase");
    assert_eq!(app.stock(HOT).await, STOCK - LIMIT as i64, "only the purchases let in took stock");
    assert_eq!(app.stock(OTHER).await, STOCK, "the shed purchase of another strategy took nothing");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "shedding leaves the books clean: {audit}");
    assert_eq!(audit["total"]["orders"], LIMIT, "one order per purchase let in: {audit}");

    let stats = app.stats_of(KIND).await;
    assert_eq!(stats["shed"], BUYERS - LIMIT, "/stats counts the shed purchases: {stats}");
    assert_eq!(stats["attempts"], LIMIT, "shed purchases never reached the strategy: {stats}");
    assert_eq!(app.stats_of(StrategyKind::SqlForUpdate).await["shed"], 1);
    let metrics = app.client.get(format!("{}/metrics", app.url)).send().await.expect("metrics");
    let metrics = metrics.text().await.expect("metrics text");
    assert!(metrics.contains(r#"outcome="overloaded""#), "/metrics counts shed purchases:\n{metrics}");
    assert!(metrics.contains("checkout_purchases_in_flight"), "/metrics shows purchases in flight");

    // Every place was given back when its purchase ended.
    let again = next_answers(&mut burst(&app, KIND, HOT, LIMIT, "after"), LIMIT).await;
    for timed in &again {
        timed.answer.assert_placed(KIND);
    }
}

/// A client that leaves does not give its place back: the purchase still runs, and holds it.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_purchase_keeps_its_place_after_its_client_left(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    const LIMIT: usize = 2;
    const KIND: StrategyKind = StrategyKind::SqlAtomic;
    let inflight = InflightLimits { postgres: Some(LIMIT), ..InflightLimits::unlimited() };
    let app = Arc::new(spawn_app(connect.clone(), limited(inflight)).await);
    let lock = RowLock::take(&connect, HOT).await;

    let leaving: Vec<_> = (0..LIMIT)
        .map(|i| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let mut body = order_body(&[(HOT, 1)]);
                body["user"] = format!("leaving-{i}").into();
                app.buy(KIND, &body, None).await
            })
        })
        .collect();
    wait_for_lock_waiters(&app.pool, i64::try_from(LIMIT).expect("small"), PATIENCE).await;
    for client in leaving {
        client.abort();
    }
    // Not a timing assertion: gives the server the chance to see the closed connections and drop
    // their handlers. The places must stay taken either way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shed = next_answers(&mut burst(&app, KIND, OTHER, 1, "while-held"), 1).await;
    assert_shed(&shed[0], "postgres");

    lock.release().await;
    eventually("the abandoned purchases complete", PATIENCE, || async { app.order_count().await == 2 }).await;
    let expected: BTreeSet<String> = (0..LIMIT).map(|i| format!("leaving-{i}")).collect();
    assert_eq!(buyers_with_orders(&app).await, expected, "the abandoned purchases completed, nothing else");
    // Their places come back once they end: a new purchase is let in (a shed try touches nothing).
    eventually("a purchase is let in again", PATIENCE, || async {
        next_answers(&mut burst(&app, KIND, OTHER, 1, "after"), 1).await[0].answer.status == 201
    })
    .await;
    assert_eq!(app.order_count().await, 3, "the two abandoned purchases and the one after them");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{audit}");
}

/// The Redis-only class has its own limit: with Redis stalled, queueing purchases beyond it are
/// shed at once while PostgreSQL purchases go on.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn redis_purchases_beyond_the_limit_are_shed_when_redis_stalls(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    const LIMIT: usize = 2;
    const KIND: StrategyKind = StrategyKind::Stream;
    let redis = reqwest::Url::parse(&Setup::default().redis_url).expect("REDIS_URL is a URL");
    let proxy = ChaosProxy::start_tcp(
        redis.host_str().expect("REDIS_URL names a host"),
        redis.port().unwrap_or(6379),
    )
    .await;
    let setup = Setup {
        redis_url: format!("redis://{}", proxy.addr()),
        ..limited(InflightLimits { redis: Some(LIMIT), ..InflightLimits::unlimited() })
    };
    let app = Arc::new(spawn_app(connect, setup).await);
    proxy.stall_networking();

    let mut answers = burst(&app, KIND, HOT, BUYERS, "queued");
    let shed = next_answers(&mut answers, BUYERS - LIMIT).await;
    for timed in &shed {
        assert_shed(timed, "redis");
    }
    let mut sql = order_body(&[(OTHER, 1)]);
    sql["user"] = "sql-buyer".into();
    app.buy(StrategyKind::SqlAtomic, &sql, None).await.assert_placed(StrategyKind::SqlAtomic);

    // Connections held by the stall are closed: the purchases let in fail without reaching Redis.
    proxy.restore_networking();
    let admitted = next_answers(&mut answers, LIMIT).await;
    let mut accepted = 0;
    for timed in &admitted {
        match timed.answer.status {
            202 => accepted += 1,
            // The cut may have come after the enqueue left: then the purchase is in doubt and
            // names its order (see README, "doubtful outcomes").
            _ if timed.answer.body["error"] == "outcome_unknown" => {
                timed.answer.assert_error(503, "outcome_unknown");
                assert!(timed.answer.body["order_id"].is_string(), "{}", timed.answer.body);
            }
            _ => timed.answer.assert_error(503, "backend_unavailable"),
        }
    }
    // Once the connection is back and the places are free, a queueing purchase is let in again.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = next_answers(&mut burst(&app, KIND, HOT, 1, "after"), 1).await.remove(0).answer;
        if answer.status == 202 {
            accepted += 1;
            break;
        }
        assert!(Instant::now() < deadline, "no queueing purchase let in after the stall: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stock = app.redis_stock(HOT).await.expect("the hot product's stock is in Redis");
    assert_eq!(stock, STOCK - accepted as i64, "only accepted purchases took stock in Redis");
    let mut conn = app.redis.conn.clone();
    let pending: usize = redis::cmd("HLEN")
        .arg(app.redis.keys.pending(KIND.as_str()))
        .query_async(&mut conn)
        .await
        .expect("Redis answers");
    assert_eq!(pending, accepted, "one queued order per 202, none for a shed purchase");
    assert_eq!(app.stats_of(KIND).await["shed"], BUYERS - LIMIT);
    assert_eq!(buyers_with_orders(&app).await, BTreeSet::from(["sql-buyer".to_owned()]));
}

/// The seed's endpoint answers the same refusal its own way: 503 as text, with `Retry-After`.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn the_seed_endpoint_sheds_as_text(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let inflight = InflightLimits { postgres: Some(1), ..InflightLimits::unlimited() };
    let app = Arc::new(spawn_app(connect.clone(), limited(inflight)).await);
    let lock = RowLock::take(&connect, HOT).await;
    let seed_purchase = |app: Arc<TestApp>, user: &str| {
        let body = format!(
            "items[0][product_id]={HOT}&items[0][count]=1&delivery[address]=Kyiv\
             &delivery[phone]=%2B380441234567&delivery[email]=a%40example.com&username={user}"
        );
        async move {
            let started = Instant::now();
            let response = app
                .client
                .post(format!("{}/index.php?action=purchase&mode=sql-atomic&skip_auth=1", app.url))
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .expect("server answers");
            let status = response.status().as_u16();
            let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let (content_type, retry_after) =
                (header(reqwest::header::CONTENT_TYPE), header(reqwest::header::RETRY_AFTER));
            let text = response.text().await.expect("read the body");
            (status, content_type.unwrap_or_default(), retry_after, text, started.elapsed())
        }
    };

    let first = tokio::spawn(seed_purchase(Arc::clone(&app), "first"));
    wait_for_lock_waiters(&app.pool, 1, PATIENCE).await;
    for i in 0..3 {
        let (status, content_type, retry_after, text, elapsed) =
            seed_purchase(Arc::clone(&app), &format!("shed-{i}")).await;
        assert_eq!(status, 503, "a full backend answers 503 on the seed endpoint too: {text:?}");
        assert!(content_type.starts_with("text/plain"), "as text, like every seed answer: {content_type:?}");
        assert_eq!(retry_after.as_deref(), Some("1"), "says when to retry");
        assert!(text.contains("in flight"), "says why: {text:?}");
        assert!(elapsed < AT_ONCE, "answered at once, not after {elapsed:?}");
    }

    lock.release().await;
    let (status, _, _, text, _) = first.await.expect("the first buyer");
    assert_eq!(status, 200, "the purchase let in completes: {text:?}");
    assert!(text.starts_with("Purchase successful: order "), "{text:?}");
    assert_eq!(buyers_with_orders(&app).await, BTreeSet::from(["first".to_owned()]));
    assert_eq!(app.stock(HOT).await, STOCK - 1);
}
