//! Many buyers, little stock: safe strategies sell exactly the stock, the naive one is caught
//! overselling. Every strategy in `StrategyKind::ALL` gets the scenario, with expectations taken
//! from its declared guarantees.

use std::sync::Arc;
use std::time::Duration;

use checkout_strategies::background::Job;
use checkout_strategies::{PgDriver, StrategyKind, Tuning};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{
    Setup, TestApp, all_at_once, audited_product, books_of, order_body, plan_of, spawn_app,
};

const STOCK: i64 = 10;
const BUYERS: usize = 200;
const HOT: i64 = 100;

async fn flash_sale(connect: PgConnectOptions, kind: StrategyKind, pg_driver: PgDriver) {
    flash_sale_on(connect, kind, Setup { pg_driver, ..Setup::default() }).await;
}

/// The scenario on the backends `base` names (its plan and tuning are the scenario's); returns
/// the server for checks of the backends themselves.
pub(crate) async fn flash_sale_on(
    connect: PgConnectOptions,
    kind: StrategyKind,
    base: Setup,
) -> Arc<TestApp> {
    if kind.spec().queued {
        // Accepted is not sold for them: the scenario drains the queue before counting.
        return crate::stream::flash_sale_on(connect, kind, base).await;
    }
    let setup = Setup {
        plan: plan_of(&[(HOT, STOCK)]),
        // Wide enough that every naive buyer reads the stock before any of them writes it.
        tuning: Tuning { naive_race_window: Duration::from_millis(50), ..Tuning::default() },
        ..base
    };
    let pg_driver = setup.pg_driver;
    let app = Arc::new(spawn_app(connect, setup).await);
    let answers = all_at_once(&app, BUYERS, |app| async move {
        let answer = app.buy(kind, &order_body(&[(HOT, 1)]), None).await;
        (answer.status, answer.body["error"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    let confirmed = answers.iter().filter(|(status, _)| *status == 201).count();
    let contention = answers.iter().filter(|(status, error)| *status == 409 && error == "contention").count();
    let sold_out = answers.iter().filter(|(status, error)| *status == 409 && error == "sold_out").count();
    let other: Vec<_> = answers.iter().filter(|(status, _)| *status != 201 && *status != 409).collect();
    assert!(other.is_empty(), "{kind}: unexpected answers {other:?}");
    assert_eq!(confirmed + contention + sold_out, BUYERS, "{kind}: every 409 is sold_out or contention");

    if kind.background().contains(&Job::StockSync) {
        // Sold and committed, not yet applied to the stock row: the audit must say so, not drift.
        let before = app.audit().await;
        assert_eq!(before["settled"], false, "{kind}: orders await the stock sync: {before}");
        assert_eq!(before["total"]["awaiting_sync"], STOCK, "{kind}: units awaiting sync: {before}");
        assert_eq!(before["order_status"]["awaiting_sync"], STOCK, "{kind}: orders awaiting sync: {before}");
        assert_eq!(app.stock(HOT).await, STOCK, "{kind}: the purchase itself leaves the stock row alone");
        assert_eq!(before["clean"], true, "{kind}: units awaiting sync are not drift: {before}");
        assert_eq!(app.sync_stock().await, STOCK, "{kind}: the sync applies every order line once");
        assert_eq!(app.audit().await["settled"], true, "{kind}: settled once the sync caught up");
    }
    if kind.runs_on_pg_driver() {
        // The purchases went through the chosen driver's pool, not sqlx's behind its back.
        assert!(
            app.purchases.idle_connections() > 0,
            "{kind}: no connection of the {pg_driver} pool was used"
        );
    }
    let audit = app.audit().await;
    let books = books_of(&audit, kind);
    let product = audited_product(books, HOT, kind);
    let units = product["units_in_orders"].as_i64().expect("units");
    assert_eq!(
        units,
        i64::try_from(confirmed).unwrap(),
        "{kind}: units in orders != confirmations: {product}"
    );

    assert_eq!(
        product["contention_refusals"], contention,
        "{kind}: the audit counts every buyer refused for contention: {product}"
    );
    if kind == StrategyKind::SqlOptimistic {
        // Safe but not exact: buyers who lost every compare-and-swap leave units on the shelf.
        assert!(confirmed as i64 <= STOCK, "{kind}: oversold: {confirmed} confirmed > {STOCK} in stock");
        assert_eq!(product["final_stock"], STOCK - confirmed as i64, "{kind}: stock left: {product}");
        assert!(
            confirmed as i64 == STOCK || contention > 0,
            "{kind}: undersold ({confirmed} < {STOCK}) with no buyer refused for contention"
        );
        assert_eq!(audit["clean"], true, "{kind}: an undersell is not an anomaly: {audit}");
    } else if kind.spec().safe {
        assert_eq!(contention, 0, "{kind}: only sql-optimistic refuses for contention");
        assert!(confirmed as i64 <= STOCK, "{kind}: oversold: {confirmed} confirmed > {STOCK} in stock");
        assert_eq!(confirmed as i64, STOCK, "{kind}: undersold: {confirmed} confirmed < {STOCK} in stock");
        assert_eq!(sold_out, BUYERS - STOCK as usize, "{kind}: sold-out answers");
        assert_eq!(product["final_stock"], 0, "{kind}: stock left: {product}");
        assert_eq!(books["clean"], true, "{kind}: audit not clean: {books}");
        assert_eq!(audit["clean"], true, "{kind}: audit not clean: {audit}");
    } else {
        assert!(
            confirmed as i64 > STOCK,
            "{kind} is unsafe by design but did not oversell: {confirmed} confirmed"
        );
        assert!(product["oversold"].as_i64().unwrap() > 0, "{kind}: audit missed the oversell: {product}");
        assert!(
            product["negative_stock"].as_i64().unwrap() > 0,
            "{kind}: audit missed the negative stock: {product}"
        );
        assert_eq!(audit["clean"], false, "{kind}: an oversold run must not audit clean");
    }
    if kind.spec().persists_to_postgres() {
        assert_eq!(
            app.order_count().await,
            i64::try_from(confirmed).unwrap(),
            "{kind}: orders != confirmations"
        );
    }
    app
}

/// `sqlx`: every strategy on the default driver. `tokio_postgres`: every strategy whose purchase
/// `PG_DRIVER` switches, again on tokio-postgres.
macro_rules! contention_tests {
    (
        sqlx: { $($name:ident => $kind:expr),* $(,)? }
        tokio_postgres: { $($raw_name:ident => $raw_kind:expr),* $(,)? }
    ) => {
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $name(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                flash_sale(connect, $kind, PgDriver::Sqlx).await;
            }
        )*
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $raw_name(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                flash_sale(connect, $raw_kind, PgDriver::TokioPostgres).await;
            }
        )*

        #[test]
        fn every_strategy_has_a_contention_test() {
            let covered = [$($kind),*];
            for kind in StrategyKind::ALL {
                assert!(covered.contains(&kind), "{kind} has no contention test");
            }
            let on_tokio_postgres = [$($raw_kind),*];
            for kind in StrategyKind::ALL.into_iter().filter(|kind| kind.runs_on_pg_driver()) {
                assert!(on_tokio_postgres.contains(&kind), "{kind} has no contention test on tokio-postgres");
            }
        }
    };
}

contention_tests! {
    sqlx: {
        memory_sells_exactly_the_stock => StrategyKind::Memory,
        sql_naive_is_caught_overselling => StrategyKind::SqlNaive,
        sql_for_update_sells_exactly_the_stock => StrategyKind::SqlForUpdate,
        sql_atomic_sells_exactly_the_stock => StrategyKind::SqlAtomic,
        sql_coalesce_sells_exactly_the_stock => StrategyKind::SqlCoalesce,
        sql_skip_locked_sells_exactly_the_stock => StrategyKind::SqlSkipLocked,
        sql_optimistic_never_oversells => StrategyKind::SqlOptimistic,
        redis_decr_sells_exactly_the_stock => StrategyKind::RedisDecr,
        redis_lua_sells_exactly_the_stock => StrategyKind::RedisLua,
        redis_orderlog_sells_exactly_the_stock => StrategyKind::RedisOrderlog,
        stream_accepts_and_persists_exactly_the_stock => StrategyKind::Stream,
        stream_deferred_accepts_too_many_and_cancels_the_excess => StrategyKind::StreamDeferred,
        queue_nats_accepts_and_persists_exactly_the_stock => StrategyKind::QueueNats,
    }
    tokio_postgres: {
        tokio_postgres_sql_naive_is_caught_overselling => StrategyKind::SqlNaive,
        tokio_postgres_sql_for_update_sells_exactly_the_stock => StrategyKind::SqlForUpdate,
        tokio_postgres_sql_atomic_sells_exactly_the_stock => StrategyKind::SqlAtomic,
        tokio_postgres_sql_skip_locked_sells_exactly_the_stock => StrategyKind::SqlSkipLocked,
        tokio_postgres_sql_optimistic_never_oversells => StrategyKind::SqlOptimistic,
    }
}
