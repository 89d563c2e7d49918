//! Stock mirrored into Redis: what a reset loads, what it clears, and what health reports.

use checkout_strategies::{
    Backends, Gate, ProductId, StrategyKind, Tuning, Worker, WorkerSettings, reservation,
};
use redis::AsyncCommands;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{Setup, order_body, plan_of, spawn_app};

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn reset_mirrors_every_product_into_redis(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let setup = Setup::default();
    let plan = setup.plan.clone();
    let app = spawn_app(connect, setup).await;
    assert_eq!(app.redis_stock(100).await, Some(10_000), "hot product stock in Redis");
    for id in [1, 7, 99] {
        let expected = plan.stock_of(ProductId::parse(id).unwrap());
        assert_eq!(app.redis_stock(id).await, expected, "product {id}: Redis stock equals the plan's");
        assert_eq!(Some(app.stock(id).await), expected, "product {id}: PostgreSQL stock equals the plan's");
    }
    assert_eq!(app.redis_stock(101).await, None, "no key for a product outside the catalogue");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn reset_clears_its_own_prefix_only(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup::default()).await;
    let mut conn = app.redis.conn.clone();
    let own_leftover = app.redis.keys.idempotency("stale");
    let foreign = format!("other-{}", app.redis.keys.prefix());
    let _: () = conn.set(&own_leftover, "x").await.unwrap();
    let _: () = conn.set(&foreign, "keep me").await.unwrap();

    app.app.reset(app.app.current_plan()).await.expect("reset");

    let own: Option<String> = conn.get(&own_leftover).await.unwrap();
    let other: Option<String> = conn.get(&foreign).await.unwrap();
    let _: () = conn.del(&foreign).await.unwrap();
    assert_eq!(own, None, "a reset clears every key under its prefix");
    assert_eq!(other.as_deref(), Some("keep me"), "a reset leaves other prefixes alone");
    assert_eq!(app.redis_stock(100).await, Some(10_000), "stock reloaded after the clear");
}

/// A lost stock key is rebuilt from PostgreSQL minus the units of holds PostgreSQL does not have:
/// three queued orders hold a unit each, one of them already committed by a worker that has not
/// settled it. The committed one is in PostgreSQL's stock already and must not count twice; the
/// in-flight counter is rebuilt from the holds, whatever it said.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_missing_key_is_recovered_from_postgres_minus_uncommitted_holds(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup::default()).await;
    for _ in 0..3 {
        assert_eq!(app.purchase(StrategyKind::Stream, &order_body(&[(100, 1)])).await.status(), 202);
    }
    let backends =
        Backends::new(app.pool.clone(), app.redis.clone(), Tuning::default()).with_nats(app.nats.clone());
    let settings = WorkerSettings { batch: 1, ..WorkerSettings::default() };
    let mut worker = Worker::new(&backends, StrategyKind::Stream, settings).unwrap();
    let batch = worker.next_batch(false).await.unwrap().expect("an entry to persist");
    let persisted = worker.persist(&batch).await.expect("persist one order, not settled yet");
    assert_eq!(app.stock(100).await, 9_999, "one order committed");

    let mut conn = app.redis.conn.clone();
    let _: () = conn.del(app.redis.keys.stock(100)).await.unwrap();
    let _: () = conn.set(app.redis.keys.inflight(100), 40).await.unwrap();
    let hot = ProductId::parse(100).unwrap();
    let recovered = reservation::recover(&app.pool.clone().into(), &app.redis, hot).await.expect("recover");
    assert_eq!(recovered, Some(9_999 - 2), "PostgreSQL's stock minus the two uncommitted holds");
    let inflight: i64 = conn.get(app.redis.keys.inflight(100)).await.unwrap();
    assert_eq!(inflight, 3, "the in-flight counter is the units held");

    worker.settle(&batch, &persisted).await.expect("settle");
    worker.run_until_idle(std::time::Duration::from_secs(10)).await.expect("drain");
    assert_eq!(app.stock(100).await, 9_997);
    assert_eq!(app.redis_stock(100).await, Some(9_997), "exact once everything settled");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{audit}");

    let _: () = conn.set(app.redis.keys.stock(100), 5).await.unwrap();
    let again = reservation::recover(&app.pool.clone().into(), &app.redis, hot).await.expect("recover");
    assert_eq!(again, Some(5), "a key that exists is never overwritten");
    let unknown =
        reservation::recover(&app.pool.clone().into(), &app.redis, ProductId::parse(424_242).unwrap())
            .await
            .unwrap();
    assert_eq!(unknown, None, "no key is invented for an unknown product");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn health_reports_both_backends(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup::default()).await;
    let health = app.get_json("/healthz").await;
    assert_eq!(health["backends"]["postgres"]["status"], "up", "{health}");
    assert_eq!(health["backends"]["redis"]["status"], "up", "{health}");
}

fn product(audit: &serde_json::Value, id: i64) -> &serde_json::Value {
    audit["products"]
        .as_array()
        .expect("products")
        .iter()
        .find(|p| p["product_id"] == id)
        .unwrap_or_else(|| panic!("product {id} missing from the audit: {audit}"))
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn audit_catches_redis_drift_and_reconcile_repairs_it(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, 10), (7, 5)]), ..Setup::default() }).await;
    for _ in 0..3 {
        let status = app.purchase(StrategyKind::RedisLua, &order_body(&[(100, 1)])).await.status();
        assert_eq!(status, 201, "redis-lua sells while stock lasts");
    }
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "three clean sales: {audit}");
    assert_eq!(audit["redis"]["checked"], true, "Redis strategies alone sold, so Redis is held to account");
    assert_eq!(product(&audit, 100)["redis_stock"], 7, "Redis mirrors the sales");
    assert_eq!(product(&audit, 100)["redis_drift"], 0);

    // What a crash between the reservation and the commit leaves: units gone from Redis, no order.
    let mut conn = app.redis.conn.clone();
    let _: i64 = conn.decr(app.redis.keys.stock(100), 2).await.unwrap();
    let audit = app.audit().await;
    assert_eq!(
        product(&audit, 100)["redis_drift"],
        -2,
        "the audit sees two units missing from Redis: {audit}"
    );
    assert_eq!(audit["total"]["redis_drift"], 2);
    assert_eq!(audit["clean"], false, "a drifted mirror is not clean");

    let response =
        app.client.post(format!("{}/admin/reconcile", app.url)).send().await.expect("server answers");
    assert_eq!(response.status(), 200);
    let report: serde_json::Value = response.json().await.expect("JSON report");
    assert_eq!(report["products_repaired"], 1, "only the drifted product is rewritten: {report}");
    assert_eq!(report["repairs"][0]["product_id"], 100);
    assert_eq!(report["repairs"][0]["redis_stock_before"], 5);
    assert_eq!(report["repairs"][0]["redis_stock_after"], 7);
    assert_eq!(app.redis_stock(100).await, Some(7), "the mirror matches PostgreSQL again");
    assert_eq!(app.audit().await["clean"], true, "repaired books are clean");
}

/// One gate per product: once a safe SQL strategy sold it, safe Redis strategies are refused
/// (and the other way round after a reset), so neither sells units the other already sold. The
/// refusal takes nothing and the books stay clean. Unsafe strategies are never refused.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn safe_strategies_of_two_gates_never_share_a_product(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, 10), (7, 10)]), ..Setup::default() }).await;
    assert_eq!(app.purchase(StrategyKind::SqlAtomic, &order_body(&[(100, 1)])).await.status(), 201);
    for kind in [StrategyKind::RedisLua, StrategyKind::RedisDecr, StrategyKind::Stream] {
        let answer = app.buy(kind, &order_body(&[(100, 1)]), None).await;
        answer.assert_error(409, "inventory_gate_conflict");
        assert_eq!(answer.body["gate"], "postgres", "{kind}: names the gate: {}", answer.body);
        assert_eq!(answer.body["product_id"], 100);
    }
    assert_eq!(app.redis_stock(100).await, Some(10), "the refusals took nothing from Redis");
    assert_eq!(
        app.purchase(StrategyKind::Stream, &order_body(&[(7, 1)])).await.status(),
        202,
        "another product is free"
    );
    let safe_sql_gate =
        StrategyKind::ALL.into_iter().filter(|kind| kind.spec().safe && kind.spec().gate == Gate::Postgres);
    for kind in safe_sql_gate {
        let answer = app.buy(kind, &order_body(&[(7, 1)]), None).await;
        answer.assert_error(409, "inventory_gate_conflict");
        assert_eq!(answer.body["gate"], "redis", "{kind}: {}", answer.body);
        let multi = app.buy(kind, &order_body(&[(7, 1), (100, 1)]), None).await;
        multi.assert_error(409, "inventory_gate_conflict");
    }
    assert_eq!(app.stock(7).await, 10, "the refusals took nothing from PostgreSQL");
    assert_eq!(app.stock(100).await, 9);
    let unsafe_sale = app.buy(StrategyKind::SqlNaive, &order_body(&[(7, 1)]), None).await;
    assert_eq!(unsafe_sale.status, 201, "unsafe strategies are never refused: {}", unsafe_sale.body);

    app.app.reset(plan_of(&[(100, 10), (7, 10)])).await.expect("reset");
    assert_eq!(
        app.purchase(StrategyKind::RedisLua, &order_body(&[(100, 1)])).await.status(),
        201,
        "a reset frees the gate"
    );
    app.buy(StrategyKind::SqlAtomic, &order_body(&[(100, 1)]), None)
        .await
        .assert_error(409, "inventory_gate_conflict");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{audit}");
    assert_eq!(product(&audit, 100)["gate"], "redis", "{audit}");
}

/// The loader sends full pipelines as it goes; a catalogue that fills the last one exactly must
/// not end with an empty pipeline (redis-rs refuses those).
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_catalogue_filling_whole_pipelines_loads(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let plan: checkout_strategies::StockPlan = serde_json::from_value(serde_json::json!({
        "random_products": { "count": 10_000, "seed": 3 }
    }))
    .unwrap();
    let app = spawn_app(connect, Setup { plan: plan.clone(), ..Setup::default() }).await;
    let (summary, _) =
        app.app.reset(plan.clone()).await.expect("a reset of exactly one full pipeline succeeds");
    assert_eq!(summary.redis_keys_loaded, 10_000, "every product mirrored");
    assert_eq!(app.redis_stock(10_000).await, plan.stock_of(ProductId::parse(10_000).unwrap()));
}
