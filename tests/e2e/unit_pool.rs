//! `sql-skip-locked`: a product's unit pool is laid out by its first sale, sells exactly its rows,
//! answers sold out when no free row is left, and is its own gate: the other safe strategies are
//! refused on it.

use checkout_strategies::StrategyKind;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgPool, Postgres};

use crate::helpers::{Setup, audited_product, order_body, plan_of, spawn_app};

const KIND: StrategyKind = StrategyKind::SqlSkipLocked;
const HOT: i64 = 100;

/// (free, claimed) unit rows of `product`.
async fn pool_of(pool: &PgPool, product: i64) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE order_id IS NULL), COUNT(order_id) FROM inventory_units WHERE product_id = $1",
    )
    .bind(product)
    .fetch_one(pool)
    .await
    .expect("count units")
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn the_pool_sells_its_rows_then_answers_sold_out(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(HOT, 5), (7, 3)]), ..Setup::default() }).await;
    assert_eq!(pool_of(&app.pool, HOT).await, (0, 0), "no pool before the first sale");

    app.buy(KIND, &order_body(&[(HOT, 2)]), None).await.assert_placed(KIND);
    assert_eq!(
        pool_of(&app.pool, HOT).await,
        (3, 2),
        "the first sale lays out one row per unit and claims two"
    );
    app.buy(KIND, &order_body(&[(HOT, 3)]), None).await.assert_placed(KIND);
    let refused = app.buy(KIND, &order_body(&[(HOT, 1)]), None).await;
    refused.assert_error(409, "sold_out");
    assert_eq!(refused.body["product_id"], HOT, "names the product: {}", refused.body);
    assert_eq!(pool_of(&app.pool, HOT).await, (0, 5), "every unit claimed once, none twice");
    assert_eq!(app.stock(HOT).await, 5, "the stock row is not the pool's books and stays as it was");
    assert_eq!(app.get_json(&format!("/products/{HOT}")).await["stock"], 0, "GET /products reads free units");
    let claimed_by_orders: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM inventory_units u JOIN orders o ON o.id = u.order_id WHERE o.status = 'confirmed'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("join units to orders");
    assert_eq!(claimed_by_orders, 5, "every claimed unit belongs to a confirmed order");

    // Another safe strategy may not take the same units from the stock row.
    for other in [StrategyKind::SqlAtomic, StrategyKind::SqlForUpdate, StrategyKind::RedisLua] {
        let conflict = app.buy(other, &order_body(&[(HOT, 1)]), None).await;
        conflict.assert_error(409, "inventory_gate_conflict");
        assert_eq!(conflict.body["gate"], "units", "{other}: names the pool's gate: {}", conflict.body);
    }
    // And the pool may not take units another gate sells.
    app.buy(StrategyKind::SqlAtomic, &order_body(&[(7, 1)]), None)
        .await
        .assert_placed(StrategyKind::SqlAtomic);
    let conflict = app.buy(KIND, &order_body(&[(7, 1)]), None).await;
    conflict.assert_error(409, "inventory_gate_conflict");
    assert_eq!(conflict.body["gate"], "postgres", "{}", conflict.body);
    assert_eq!(pool_of(&app.pool, 7).await, (0, 0), "no pool for a product another gate sells");

    let audit = app.audit().await;
    let product = audited_product(&audit, HOT, KIND);
    assert_eq!(product["gate"], "units", "{product}");
    assert_eq!(product["final_stock"], 0, "the audit reads the pool: {product}");
    assert_eq!(product["units_in_orders"], 5, "{product}");
    assert!(product.get("redis_drift").is_none(), "the mirror is not the pool's: {product}");
    assert_eq!(audit["clean"], true, "{audit}");
    assert_eq!(audit["settled"], true, "{audit}");
}
