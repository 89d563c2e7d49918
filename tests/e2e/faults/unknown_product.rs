//! Products PostgreSQL does not have: a Redis stock key left for one sells nothing, and units sold
//! of one (an order row whose product has no row) make the audit unclean.

use checkout_strategies::StrategyKind;
use redis::AsyncCommands;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use super::books::{self, RedisView, audit};
use crate::helpers::{Setup, order_body, plan_of, spawn_app};

const HOT: i64 = 100;
const GHOST: i64 = 555;

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_redis_key_without_a_product_sells_nothing(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let setup = Setup { plan: plan_of(&[(HOT, 10)]), ..Setup::default() };
    let redis_url = setup.redis_url.clone();
    let app = spawn_app(connect, setup).await;
    let view = RedisView::new(&redis_url, &app);
    let mut conn = view.conn().await;
    let _: () = conn.set(app.redis.keys.stock(GHOST), 10).await.expect("SET");

    for kind in [StrategyKind::RedisLua, StrategyKind::RedisDecr, StrategyKind::Stream] {
        let answer = app.buy(kind, &order_body(&[(GHOST, 1)]), None).await;
        answer.assert_error(404, "unknown_product");
        assert_eq!(answer.body["product_id"], GHOST, "{kind}: names the product: {}", answer.body);
        let mixed = app.buy(kind, &order_body(&[(HOT, 1), (GHOST, 1)]), None).await;
        mixed.assert_error(404, "unknown_product");
    }
    assert_eq!(view.stock(GHOST).await, Some(10), "nothing was taken from the stray key");
    assert_eq!(view.stock(HOT).await, Some(10), "nor from the real product of a refused order");
    assert_eq!(view.reservations().await, 0, "no reservation was made");
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(&app.pool).await.expect("count");
    assert_eq!(rows, 0, "no order, not even a void one");
    let audit = audit(&app).await;
    assert_eq!(audit["queues"]["pending"], 0, "nothing queued: {audit}");
    assert_eq!(audit["clean"], true, "{audit}");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn units_sold_of_a_missing_product_make_the_audit_unclean(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 10)]), ..Setup::default() }).await;
    assert_eq!(audit(&app).await["clean"], true, "clean before");
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO orders (id, strategy, status, address, phone, email) \
         VALUES ($1, 'redis-lua', 'confirmed', 'a', 'b', 'c@d.e')",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .expect("insert an order");
    sqlx::query("INSERT INTO order_items (order_id, product_id, quantity) VALUES ($1, $2, 2)")
        .bind(id)
        .bind(GHOST)
        .execute(&app.pool)
        .await
        .expect("insert its line");
    assert_eq!(books::orders(&app).await.len(), 1);

    let audit = audit(&app).await;
    assert_eq!(audit["total"]["orphan_units"], 2, "units sold of a product PostgreSQL lacks: {audit}");
    assert_eq!(audit["clean"], false, "an order for a missing product must not audit clean: {audit}");
}
