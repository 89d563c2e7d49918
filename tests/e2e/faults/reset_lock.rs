//! `POST /admin/reset` while another session holds a product's row lock: the reset gives up after
//! its lock timeout and answers 503 instead of hanging, and leaves the books as they were.

use std::time::{Duration, Instant};

use checkout_strategies::StrategyKind;
use serde_json::json;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use super::redis_restart::{lock_row, unlock};
use crate::helpers::{Answer, Setup, TestApp, order_body, plan_of, read_answer, snapshot_of, spawn_app};

const HOT: i64 = 100;
/// The reset's lock timeout plus a margin: past it, the reset hangs.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

async fn reset(app: &TestApp) -> Answer {
    let request = app
        .client
        .post(format!("{}/admin/reset", app.url))
        .json(&json!({ "products": [{ "id": HOT, "stock": 5 }] }))
        .send();
    let answer = tokio::time::timeout(ANSWER_WITHIN, async {
        read_answer(request.await.expect("server answers")).await
    });
    answer.await.unwrap_or_else(|_| {
        panic!("the reset did not answer within {ANSWER_WITHIN:?}: it hangs on the row lock")
    })
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_reset_behind_a_row_lock_answers_503(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect.clone(), Setup { plan: plan_of(&[(HOT, 10)]), ..Setup::default() }).await;
    app.buy(StrategyKind::SqlAtomic, &order_body(&[(HOT, 1)]), None)
        .await
        .assert_placed(StrategyKind::SqlAtomic);
    let before = snapshot_of(&app.pool).await;

    let locker = lock_row(&connect, HOT).await;
    let started = Instant::now();
    let refused = reset(&app).await;
    refused.assert_error(503, "backend_unavailable");
    assert!(started.elapsed() < ANSWER_WITHIN, "answered in {:?}", started.elapsed());
    assert_eq!(snapshot_of(&app.pool).await, before, "the refused reset changed nothing");

    unlock(locker).await;
    let done = reset(&app).await;
    assert_eq!(done.status, 200, "once the lock is gone the reset goes through: {}", done.body);
    assert_eq!(app.stock(HOT).await, 5, "the new plan is laid out");
    assert_eq!(app.order_count().await, 0, "and the orders are gone");
}
