//! Two safe strategies of different gates storming one product: `sql-atomic` takes PostgreSQL's
//! row, `redis-lua` takes the Redis mirror first, and neither sees the other's sales before they
//! commit. The first sale claims the product for its gate; the other side is refused, so the
//! stock is sold once.

use std::sync::Arc;
use std::time::Duration;

use checkout_strategies::{Gate, StrategyKind};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use super::books::{self, Expect, RedisView, settle};
use super::storm::{self, Storm, Tally};
use super::{ANSWER_BOUND, fault_setup};
use crate::helpers::{Setup, audited_product, order_body, plan_of, spawn_app};

const HOT: i64 = 100;
const STOCK: i64 = 10;

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn two_gates_storming_one_product_sell_it_once(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let redis_url = Setup::default().redis_url;
    let app = Arc::new(spawn_app(connect, fault_setup(plan_of(&[(HOT, STOCK)]), redis_url.clone())).await);
    let view = RedisView::new(&redis_url, &app);
    let buyers = Storm { buyers: 100, stagger: Duration::ZERO, ..Storm::default() };
    let body = order_body(&[(HOT, 1)]);
    let sql = storm::start(&app, StrategyKind::SqlAtomic, &body, buyers);
    let redis = storm::start(&app, StrategyKind::RedisLua, &body, buyers);
    let sql = Tally::of(StrategyKind::SqlAtomic, &sql.finish().await, ANSWER_BOUND);
    let redis = Tally::of(StrategyKind::RedisLua, &redis.finish().await, ANSWER_BOUND);

    let settled = settle(&app, &[StrategyKind::RedisLua]).await;
    let product = audited_product(&settled, HOT, StrategyKind::SqlAtomic);
    let (winner, loser, won, lost) = match product["gate"].as_str() {
        Some("postgres") => (StrategyKind::SqlAtomic, StrategyKind::RedisLua, &sql, &redis),
        Some("redis") => (StrategyKind::RedisLua, StrategyKind::SqlAtomic, &redis, &sql),
        other => panic!("the product must be claimed by one gate, got {other:?}: {settled}"),
    };
    assert!(
        lost.created.is_empty() && lost.unknown.is_empty(),
        "{loser} sold a product {winner}'s gate owns"
    );
    assert!(lost.gate_conflicts > 0, "{loser} was refused by the gate: {lost:?}");
    assert_eq!(
        i64::try_from(won.created.len()).expect("a count"),
        STOCK,
        "{winner} sold the whole stock once"
    );
    let redis_books = (winner.spec().gate == Gate::Redis).then_some(&view);
    let expect = Expect { kind: winner, products: &[(HOT, STOCK)], tally: won, redis: redis_books };
    books::assert_exact(&app, &settled, &expect).await;
}
