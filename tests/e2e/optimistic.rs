//! `sql-optimistic`: buyers who read one version race for one swap; the losers retry, and those
//! out of retries are told 409 `contention` while units are left — counted per product in the
//! audit, never oversold.

use std::sync::Arc;
use std::time::Duration;

use checkout_strategies::{PgSettings, StrategyKind, Tuning};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{
    RowLock, Setup, audited_product, order_body, plan_of, spawn_app, wait_for_lock_waiters,
};

const KIND: StrategyKind = StrategyKind::SqlOptimistic;
const HOT: i64 = 100;
const STOCK: i64 = 1_000;
const BUYERS: usize = 8;

/// Every buyer reads the same version while the row is locked, then all swap at once: with no
/// retry, exactly one wins and the others are refused for contention with plenty of stock left.
async fn stale_versions(connect: PgConnectOptions, retries: u32) -> (usize, usize, serde_json::Value) {
    let setup = Setup {
        plan: plan_of(&[(HOT, STOCK)]),
        tuning: Tuning { optimistic_retries: retries, ..Tuning::default() },
        pg: PgSettings { connections: u32::try_from(BUYERS).unwrap() + 2, ..PgSettings::default() },
        ..Setup::default()
    };
    let app = Arc::new(spawn_app(connect.clone(), setup).await);
    let lock = RowLock::take(&connect, HOT).await;
    let buyers: Vec<_> = (0..BUYERS)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.buy(KIND, &order_body(&[(HOT, 1)]), None).await })
        })
        .collect();
    wait_for_lock_waiters(&app.pool, i64::try_from(BUYERS).unwrap(), Duration::from_secs(10)).await;
    lock.release().await;
    let (mut placed, mut refused) = (0, 0);
    for buyer in buyers {
        let answer = buyer.await.expect("buyer task");
        match answer.status {
            201 => placed += 1,
            _ => {
                answer.assert_error(409, "contention");
                assert_eq!(answer.body["product_id"], HOT, "names the product: {}", answer.body);
                refused += 1;
            }
        }
    }
    (placed, refused, app.audit().await)
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn losers_out_of_retries_are_refused_for_contention_and_counted(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let (placed, refused, audit) = stale_versions(connect, 0).await;
    assert_eq!(placed, 1, "one swap per version read: the others find it moved");
    assert_eq!(refused, BUYERS - 1, "without retries every loser is refused");
    let product = audited_product(&audit, HOT, KIND);
    assert_eq!(product["contention_refusals"], refused, "the audit counts every refusal: {product}");
    assert_eq!(audit["total"]["contention_refusals"], refused, "{audit}");
    assert_eq!(product["final_stock"], STOCK - 1, "units left while buyers were refused: {product}");
    assert_eq!(product["units_in_orders"], 1, "{product}");
    assert_eq!(audit["clean"], true, "an undersell is not an anomaly: {audit}");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn retries_turn_lost_swaps_into_sales(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    // A buyer loses a swap only to another buyer's successful one, and each buyer succeeds once:
    // nobody loses more than BUYERS - 1 times.
    let (placed, refused, audit) = stale_versions(connect, u32::try_from(BUYERS).unwrap()).await;
    assert_eq!((placed, refused), (BUYERS, 0), "every buyer retried until it swapped");
    let product = audited_product(&audit, HOT, KIND);
    assert_eq!(product["final_stock"], STOCK - i64::try_from(BUYERS).unwrap(), "{product}");
    assert_eq!(product["contention_refusals"], 0, "{product}");
    assert_eq!(audit["clean"], true, "{audit}");
}
