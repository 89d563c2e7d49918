//! PostgreSQL connections terminated mid-sale (`pg_terminate_backend`, a few times, from a session
//! of the test's own database): a purchase or a worker batch dies wherever it stood. Single-line and
//! two-line orders run together, so a half-written order or a stock moved on one line only would
//! show.

use std::sync::Arc;
use std::time::Duration;

use checkout_strategies::{CancellationToken, Gate, StrategyKind, Worker};
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Postgres};

use super::books::{self, Expect, RedisView, backends, quick_worker, settle};
use super::storm::{self, Storm, Tally};
use super::{ANSWER_BOUND, fault_setup};
use crate::helpers::{Setup, order_body, plan_of, spawn_app};

const HOT: i64 = 100;
const OTHER: i64 = 7;
const PRODUCTS: [(i64, i64); 2] = [(HOT, 30), (OTHER, 20)];
const TERMINATIONS: usize = 4;

/// Every other backend of this test's database; only this test's connections live there.
const TERMINATE: &str = "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()";

async fn backends_terminated_mid_sale(connect: PgConnectOptions, kind: StrategyKind) {
    let redis_url = Setup::default().redis_url;
    let app = Arc::new(spawn_app(connect.clone(), fault_setup(plan_of(&PRODUCTS), redis_url.clone())).await);
    let cancel = CancellationToken::new();
    let worker = kind.spec().queued.then(|| {
        let worker = Worker::new(&backends(&app), kind, quick_worker()).expect("a queue");
        tokio::spawn(worker.run(cancel.clone()))
    });
    let buyers = Storm { buyers: 30, stagger: Duration::from_millis(15), ..Storm::default() };
    let single = storm::start(&app, kind, &order_body(&[(HOT, 1)]), buyers);
    let double = storm::start(&app, kind, &order_body(&[(HOT, 1), (OTHER, 1)]), buyers);

    let mut terminator = PgConnection::connect_with(&connect).await.expect("connect the terminating session");
    let mut terminated = 0;
    for _ in 0..TERMINATIONS {
        tokio::time::sleep(Duration::from_millis(120)).await;
        terminated += sqlx::query_scalar::<_, i64>(TERMINATE)
            .fetch_one(&mut terminator)
            .await
            .expect("terminate the other backends");
    }
    terminator.close().await.expect("close the terminating session");
    assert!(terminated > 0, "{kind}: no connection was terminated");

    let mut attempts = single.finish().await;
    attempts.extend(double.finish().await);
    cancel.cancel();
    if let Some(worker) = worker {
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .expect("the worker stops")
            .expect("worker task");
    }
    let tally = Tally::of(kind, &attempts, ANSWER_BOUND);
    let settled = settle(&app, &[kind]).await;
    let view = RedisView::new(&redis_url, &app);
    let redis = (kind.spec().gate == Gate::Redis).then_some(&view);
    let expect = Expect { kind, products: &PRODUCTS, tally: &tally, redis };
    books::assert_exact(&app, &settled, &expect).await;
    let orders = books::orders(&app).await;
    assert!(!orders.is_empty(), "{kind}: the sale went on around the terminations");
}

macro_rules! per_kind {
    ($($name:ident: $kind:expr,)*) => {
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $name(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                backends_terminated_mid_sale(connect, $kind).await;
            }
        )*
    };
}

per_kind! {
    sql_for_update_survives_terminated_connections: StrategyKind::SqlForUpdate,
    sql_atomic_survives_terminated_connections: StrategyKind::SqlAtomic,
    sql_coalesce_survives_terminated_connections: StrategyKind::SqlCoalesce,
    redis_lua_survives_terminated_connections: StrategyKind::RedisLua,
    redis_orderlog_survives_terminated_connections: StrategyKind::RedisOrderlog,
    redis_decr_survives_terminated_connections: StrategyKind::RedisDecr,
    stream_survives_terminated_connections: StrategyKind::Stream,
}
