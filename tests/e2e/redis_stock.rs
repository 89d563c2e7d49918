//! Stock mirrored into Redis: what a reset loads, what it clears, and what health reports.

use checkout_strategies::{ProductId, redis_stock};
use redis::AsyncCommands;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{Setup, spawn_app};

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

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_missing_key_is_recovered_from_sql_minus_units_in_flight(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup::default()).await;
    let mut conn = app.redis.conn.clone();
    let _: () = conn.del(app.redis.keys.stock(100)).await.unwrap();
    let _: () = conn.set(app.redis.keys.inflight(100), 3).await.unwrap();
    let hot = ProductId::parse(100).unwrap();

    let recovered = redis_stock::recover(&app.pool, &app.redis, hot).await.expect("recover");
    assert_eq!(recovered, Some(10_000 - 3), "SQL stock minus units in flight");
    assert_eq!(app.redis_stock(100).await, Some(9_997));

    let _: () = conn.set(app.redis.keys.stock(100), 5).await.unwrap();
    let again = redis_stock::recover(&app.pool, &app.redis, hot).await.expect("recover");
    assert_eq!(again, Some(5), "a key that exists is never overwritten");
    let unknown =
        redis_stock::recover(&app.pool, &app.redis, ProductId::parse(424_242).unwrap()).await.unwrap();
    assert_eq!(unknown, None, "no key is invented for an unknown product");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn health_reports_both_backends(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup::default()).await;
    let health = app.get_json("/healthz").await;
    assert_eq!(health["backends"]["postgres"]["status"], "up", "{health}");
    assert_eq!(health["backends"]["redis"]["status"], "up", "{health}");
}
