//! `sql-coalesce`'s own rules, beyond what every strategy is tested for: one batch takes its
//! purchases greedily in arrival order (multi-item ones all or nothing), duplicates of a key inside
//! one batch make one order, a batch whose COMMIT PostgreSQL refuses answers everyone 503 and
//! leaves nothing, a full queue answers 503 at once, and `GET /stats` shows the batch sizes.
//!
//! To put purchases in one batch in a known order, a session holds a product's row lock so the
//! batcher's first batch waits on it; the next purchases are queued meanwhile, in the order they
//! are first polled (queueing happens on the first poll, before any await).

use std::sync::Arc;
use std::time::Duration;

use checkout_strategies::sql_coalesce::SqlCoalesce;
use checkout_strategies::{
    Delivery, Gate, IdempotencyKey, OrderLine, OrderLines, ProductId, PurchaseOutcome, PurchaseRequest,
    Quantity, Receipt, SqlPool, Strategy, StrategyError, StrategyKind, Tuning,
};
use futures_util::future::join_all;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{
    RowLock, Setup, TestApp, all_at_once, eventually, order_body, plan_of, spawn_app, wait_for_lock_waiters,
};

const KIND: StrategyKind = StrategyKind::SqlCoalesce;
const PATIENCE: Duration = Duration::from_secs(15);
/// Holds the row lock during the tests; never sold.
const LOCKED: i64 = 1;
const A: i64 = 10;
const B: i64 = 20;
const REDIS_GATED: i64 = 30;

fn request(items: &[(i64, i64)], key: Option<&str>) -> PurchaseRequest {
    let lines = items
        .iter()
        .map(|&(product, quantity)| OrderLine {
            product_id: ProductId::parse(product).expect("valid id"),
            quantity: Quantity::parse(quantity).expect("valid quantity"),
        })
        .collect();
    PurchaseRequest {
        order_id: uuid::Uuid::new_v4(),
        lines: OrderLines::new(lines).expect("valid lines"),
        delivery: Delivery::new("1 Khreshchatyk St".into(), "+380441234567".into(), "b@example.com".into())
            .expect("valid delivery"),
        user: Some("buyer".into()),
        idempotency_key: key.map(|key| IdempotencyKey::parse(key).expect("valid key")),
    }
}

fn product(id: i64) -> ProductId {
    ProductId::parse(id).expect("valid id")
}

/// Runs `blocker` until the batcher's batch holding it waits on `lock`, then queues `requests`
/// behind it in order, releases the lock and returns their answers.
async fn behind_a_held_batch(
    app: &TestApp,
    strategy: Arc<dyn Strategy>,
    lock: RowLock,
    blocker: PurchaseRequest,
    requests: Vec<PurchaseRequest>,
) -> (Result<PurchaseOutcome, StrategyError>, Vec<Result<PurchaseOutcome, StrategyError>>) {
    let first = Arc::clone(&strategy);
    let held = tokio::spawn(async move { first.purchase(&blocker).await });
    wait_for_lock_waiters(&app.pool, 1, PATIENCE).await;
    let queued = join_all(requests.iter().map(|request| strategy.purchase(request)));
    tokio::pin!(queued);
    // One poll queues every purchase, in order; they then wait for the held batch to commit.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut queued).await.is_err(),
        "the queued purchases were answered while the batch ahead of them was held"
    );
    lock.release().await;
    let answers = queued.await;
    (held.await.expect("blocker task"), answers)
}

/// One batch, in arrival order: each purchase takes every line or none, a purchase that does not
/// fit leaves the stock for the ones after it, and refusals name the product as `sql-atomic`'s do.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn one_batch_takes_fitting_orders_in_arrival_order(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let plan = plan_of(&[(LOCKED, 5), (A, 6), (B, 3), (REDIS_GATED, 5)]);
    let app = spawn_app(connect.clone(), Setup { plan, ..Setup::default() }).await;
    sqlx::query("UPDATE products SET gate = 'redis' WHERE id = $1")
        .bind(REDIS_GATED)
        .execute(&app.pool)
        .await
        .expect("give a product to the Redis gate");
    let lock = RowLock::take(&connect, LOCKED).await;
    let strategy = Arc::clone(app.app.registry.get(KIND));

    let requests = vec![
        request(&[(A, 2), (B, 2)], None),        // fits: A 6→4, B 3→1
        request(&[(A, 1), (B, 2)], None),        // B short: refused whole, A stays 4
        request(&[(A, 4)], None),                // fits: A 4→0 (the refused one left it)
        request(&[(B, 1)], None),                // fits: B 1→0
        request(&[(A, 1)], None),                // sold out
        request(&[(LOCKED, 1), (999, 1)], None), // unknown product: LOCKED untouched
        request(&[(REDIS_GATED, 1)], None),      // the Redis gate sells it
    ];
    let ids: Vec<uuid::Uuid> = requests.iter().map(|request| request.order_id).collect();
    let (blocker, answers) =
        behind_a_held_batch(&app, strategy, lock, request(&[(LOCKED, 1)], None), requests).await;
    let placed = |i: usize| PurchaseOutcome::Placed(Receipt::confirmed(ids[i], KIND));
    assert!(matches!(blocker, Ok(PurchaseOutcome::Placed(_))), "the held purchase: {blocker:?}");
    let answers: Vec<PurchaseOutcome> =
        answers.into_iter().map(|answer| answer.expect("every purchase answered")).collect();
    assert_eq!(
        answers,
        [
            placed(0),
            PurchaseOutcome::SoldOut(product(B)),
            placed(2),
            placed(3),
            PurchaseOutcome::SoldOut(product(A)),
            PurchaseOutcome::UnknownProduct(product(999)),
            PurchaseOutcome::GateConflict { product: product(REDIS_GATED), gate: Gate::Redis },
        ],
        "greedy in arrival order, all or nothing per purchase"
    );
    assert_eq!((app.stock(A).await, app.stock(B).await), (0, 0), "exactly the accepted units left");
    assert_eq!(app.stock(REDIS_GATED).await, 5, "a refused purchase takes nothing");
    assert_eq!(app.stock(LOCKED).await, 4, "a purchase naming an unknown product takes nothing");
    assert_eq!(app.order_count().await, 4, "the held purchase and three of the batch");
    let gates: Vec<(i64, Option<String>)> = sqlx::query_as("SELECT id, gate FROM products ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .expect("read gates");
    assert_eq!(
        gates,
        [
            (LOCKED, Some("postgres".into())),
            (A, Some("postgres".into())),
            (B, Some("postgres".into())),
            (REDIS_GATED, Some("redis".into())),
        ],
        "a sale claims its products for the PostgreSQL gate"
    );

    let stats = app.stats_of(KIND).await;
    assert_eq!(stats["batches"]["batches"], 2, "the held purchase's batch, then one batch of seven: {stats}");
    assert_eq!(stats["batches"]["requests"], 8, "every purchase in a batch: {stats}");
    assert_eq!(stats["batches"]["largest"], 7, "the purchases queued meanwhile formed one batch: {stats}");
    assert!(
        app.stats_of(StrategyKind::SqlAtomic).await.get("batches").is_none(),
        "only batching strategies show it"
    );
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "the books stay clean: {audit}");
}

/// The same key twice in one batch (possible only below the shared idempotency claim): one order,
/// and the second purchase hears it as a replay.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn one_key_twice_in_a_batch_makes_one_order(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app =
        spawn_app(connect.clone(), Setup { plan: plan_of(&[(LOCKED, 5), (A, 6)]), ..Setup::default() }).await;
    let lock = RowLock::take(&connect, LOCKED).await;
    let raw: Arc<dyn Strategy> = Arc::new(SqlCoalesce::new(SqlPool::Postgres(app.pool.clone()), 256));
    let requests =
        vec![request(&[(A, 2)], Some("twice")), request(&[(A, 2)], Some("twice")), request(&[(A, 1)], None)];
    let first = requests[0].order_id;
    let (_, answers) = behind_a_held_batch(&app, raw, lock, request(&[(LOCKED, 1)], None), requests).await;
    let answers: Vec<PurchaseOutcome> = answers.into_iter().map(|answer| answer.expect("answered")).collect();
    assert_eq!(
        answers[..2],
        [
            PurchaseOutcome::Placed(Receipt::confirmed(first, KIND)),
            PurchaseOutcome::Replayed(Receipt::confirmed(first, KIND)),
        ],
        "the first purchase with the key places the order, the second replays it"
    );
    assert!(matches!(answers[2], PurchaseOutcome::Placed(_)), "the unkeyed one is served: {:?}", answers[2]);
    let keyed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE idempotency_key = 'twice'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(keyed, 1, "one key, one order");
    assert_eq!(app.stock(A).await, 3, "the key's units taken once");
}

/// PostgreSQL refuses the batch at COMMIT (a deferred trigger): every purchase of it hears 503,
/// nothing is sold, and the batcher serves the next batch once the refusal is gone.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_refused_commit_answers_the_batch_503_and_leaves_nothing(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = Arc::new(spawn_app(connect, Setup { plan: plan_of(&[(A, 100)]), ..Setup::default() }).await);
    for statement in [
        "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused at commit by the test'; END $$",
        "CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON orders DEFERRABLE INITIALLY DEFERRED \
         FOR EACH ROW EXECUTE FUNCTION refuse_commit()",
    ] {
        sqlx::query(statement).execute(&app.pool).await.expect("install the refusing trigger");
    }
    let answers =
        all_at_once(&app, 40, |app| async move { app.buy(KIND, &order_body(&[(A, 1)]), None).await }).await;
    for answer in &answers {
        answer.assert_error(503, "backend_unavailable");
    }
    assert_eq!(app.stock(A).await, 100, "a refused batch takes no stock");
    assert_eq!(app.order_count().await, 0, "a refused batch writes no order");

    sqlx::query("DROP TRIGGER refuse_commit ON orders").execute(&app.pool).await.expect("drop the trigger");
    app.buy(KIND, &order_body(&[(A, 1)]), None).await.assert_placed(KIND);
    assert_eq!(app.stock(A).await, 99, "the batcher sells again");
    let stats = app.stats_of(KIND).await;
    assert_eq!(stats["errors"]["backend_unavailable"], 40, "every refused purchase counted: {stats}");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "the books stay clean: {audit}");
}

/// With batches of one and a queue of sixteen, a held batch lets sixteen purchases wait and
/// refuses the rest at once with 503; the waiting ones are all served once it commits.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_full_queue_answers_503_at_once(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let setup = Setup {
        plan: plan_of(&[(LOCKED, 5), (A, 100)]),
        tuning: Tuning { coalesce_max_batch: 1, ..Tuning::default() },
        ..Setup::default()
    };
    let app = Arc::new(spawn_app(connect.clone(), setup).await);
    let lock = RowLock::take(&connect, LOCKED).await;
    let strategy = Arc::clone(app.app.registry.get(KIND));
    let blocker = request(&[(LOCKED, 1)], None);
    let held = tokio::spawn(async move { strategy.purchase(&blocker).await });
    wait_for_lock_waiters(&app.pool, 1, PATIENCE).await;

    let crowd = Arc::clone(&app);
    let buyers = tokio::spawn(async move {
        all_at_once(&crowd, 30, |app| async move { app.buy(KIND, &order_body(&[(A, 1)]), None).await }).await
    });
    // The refusals come while the batch is still held: they never wait for it.
    eventually("fourteen purchases refused while the batch is held", PATIENCE, || async {
        app.stats_of(KIND).await["errors"]["backend_unavailable"] == 14
    })
    .await;
    lock.release().await;
    let answers = buyers.await.expect("buyers");
    assert!(matches!(held.await.expect("blocker"), Ok(PurchaseOutcome::Placed(_))));
    let placed = answers.iter().filter(|answer| answer.status == 201).count();
    let shed: Vec<_> = answers.iter().filter(|answer| answer.status != 201).collect();
    assert_eq!(placed, 16, "the queue holds sixteen purchases");
    assert_eq!(shed.len(), 14, "the rest are refused");
    for answer in shed {
        answer.assert_error(503, "backend_unavailable");
    }
    assert_eq!(app.stock(A).await, 84, "only the queued purchases sold");
}

/// A graceful shutdown stops taking purchases at once and waits while the batcher commits and
/// answers every purchase already queued.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn shutdown_answers_every_queued_purchase(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app =
        spawn_app(connect.clone(), Setup { plan: plan_of(&[(LOCKED, 5), (A, 50)]), ..Setup::default() })
            .await;
    let lock = RowLock::take(&connect, LOCKED).await;
    let strategy = Arc::clone(app.app.registry.get(KIND));
    let blocker = {
        let strategy = Arc::clone(&strategy);
        let request = request(&[(LOCKED, 1)], None);
        tokio::spawn(async move { strategy.purchase(&request).await })
    };
    wait_for_lock_waiters(&app.pool, 1, PATIENCE).await;
    let requests: Vec<PurchaseRequest> = (0..5).map(|_| request(&[(A, 1)], None)).collect();
    let queued = join_all(requests.iter().map(|request| strategy.purchase(request)));
    tokio::pin!(queued);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut queued).await.is_err(),
        "the queued purchases wait for the held batch"
    );

    let shutdown = app.app.registry.shutdown();
    tokio::pin!(shutdown);
    // Its first poll closes the queue; it then waits for the batcher.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut shutdown).await.is_err(),
        "shutdown waits for the held batch and the queue"
    );
    let late = tokio::time::timeout(PATIENCE, strategy.purchase(&request(&[(A, 1)], None)))
        .await
        .expect("a purchase after the shutdown began is answered at once");
    assert!(matches!(late, Err(StrategyError::Unavailable(_))), "refused once shutting down: {late:?}");

    lock.release().await;
    tokio::time::timeout(PATIENCE, shutdown).await.expect("shutdown ends once the queue is answered");
    assert!(matches!(blocker.await.expect("blocker"), Ok(PurchaseOutcome::Placed(_))));
    for answer in queued.await {
        assert!(matches!(answer, Ok(PurchaseOutcome::Placed(_))), "a queued purchase is served: {answer:?}");
    }
    assert_eq!(app.stock(A).await, 45, "the five queued purchases sold, nothing after the shutdown began");
    assert_eq!(app.order_count().await, 6, "the held purchase and the five queued ones");
}

/// A crowd arriving at once is served in fewer commits than buyers: the batches gather while a
/// commit is in flight, each within the cap, and every buyer is sold exactly one unit.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_crowd_shares_commits(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const BUYERS: usize = 200;
    let setup = Setup {
        plan: plan_of(&[(A, 1_000)]),
        tuning: Tuning { coalesce_max_batch: 64, ..Tuning::default() },
        ..Setup::default()
    };
    let app = Arc::new(spawn_app(connect, setup).await);
    let answers =
        all_at_once(&app, BUYERS, |app| async move { app.buy(KIND, &order_body(&[(A, 1)]), None).await })
            .await;
    for answer in &answers {
        answer.assert_placed(KIND);
    }
    assert_eq!(app.stock(A).await, 1_000 - BUYERS as i64, "one unit per buyer");
    assert_eq!(app.order_count().await, BUYERS as i64, "one order per buyer");
    let batches = &app.stats_of(KIND).await["batches"];
    assert_eq!(batches["requests"], BUYERS, "every purchase in exactly one batch: {batches}");
    let (count, largest) = (batches["batches"].as_u64().unwrap(), batches["largest"].as_u64().unwrap());
    assert!(count < BUYERS as u64, "buyers shared commits: {count} batches for {BUYERS} buyers: {batches}");
    assert!((2..=64).contains(&largest), "batches formed, within the cap: {batches}");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "the books stay clean: {audit}");
}
