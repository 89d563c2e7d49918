//! `sql-atomic`'s purchase statement through each `PG_DRIVER` client, each beside a bare round
//! trip on one connection of that client, in one group so the ratios come from one run:
//!
//! - `select_1/*`: `SELECT 1` on one connection held throughout, no pool: the least a statement
//!   costs with that client.
//! - `sold_out/*`: the purchase statement as the strategy runs it (a pool checkout, the statement,
//!   the connection back), for a product with no stock: parse, plan, execute and the round trip,
//!   no commit. The difference between the drivers is the client's own work.
//! - `sells/*`: the same, for a product it sells: one commit (a WAL flush) per iteration, which
//!   the client's work sits beside.
//!
//! Needs the real PostgreSQL (`DATABASE_URL`, else `127.0.0.1:5432`, database
//! `checkout_criterion`, created and migrated when missing); without it the group is skipped with a
//! message. One caller at a time: the hot row serialises concurrent buyers anyway.

use std::hint::black_box;
use std::time::Duration;

use checkout_strategies::sql_atomic::ONE_LINE_STATEMENT;
use checkout_strategies::{PgSettings, PurchasePool, backends, pg_driver};
use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};

const SOLD_OUT: i64 = 900_001;
const PLENTY: i64 = 900_002;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .map(|url| match url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/checkout_criterion"),
            None => url,
        })
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/checkout_criterion".into())
}

/// The scratch database with one product that cannot sell and one that always can; `None` (and
/// why) when PostgreSQL does not answer.
async fn prepare(url: &str) -> Result<PgPool, String> {
    tokio::time::timeout(Duration::from_secs(5), backends::prepare_database(url))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|err| err.to_string())?;
    let pool = backends::pg_pool(url, PgSettings::default()).map_err(|err| err.to_string())?;
    for (id, stock) in [(SOLD_OUT, 0_i64), (PLENTY, i64::MAX / 2)] {
        sqlx::query(
            "INSERT INTO products (id, stock, initial_stock, gate) VALUES ($1, $2, $2, NULL) \
             ON CONFLICT (id) DO UPDATE SET stock = $2, initial_stock = $2, gate = NULL",
        )
        .bind(id)
        .bind(stock)
        .execute(&pool)
        .await
        .map_err(|err| err.to_string())?;
    }
    Ok(pool)
}

/// Binds of one purchase of `product`, as `sql-atomic` sends them.
struct Purchase {
    product: i64,
    order_id: uuid::Uuid,
}

impl Purchase {
    fn of(product: i64) -> Self {
        Self { product, order_id: uuid::Uuid::new_v4() }
    }
}

async fn via_sqlx(pool: &PgPool, purchase: Purchase) -> bool {
    let mut conn = pool.acquire().await.expect("a connection");
    let (placed,): (bool,) = sqlx::query_as(ONE_LINE_STATEMENT)
        .bind(purchase.product)
        .bind(1_i64)
        .bind(purchase.order_id)
        .bind("sql-atomic")
        .bind(None::<&str>)
        .bind(Some("bench"))
        .bind("1 Main St")
        .bind("+380441234567")
        .bind("a@example.com")
        .fetch_one(&mut *conn)
        .await
        .expect("the statement runs");
    placed
}

async fn via_deadpool(pool: &deadpool_postgres::Pool, purchase: Purchase) -> bool {
    let client = pool.get().await.expect("a connection");
    let statement = client.prepare_cached(ONE_LINE_STATEMENT).await.expect("prepared");
    let row = client
        .query_one(
            &statement,
            &[
                &purchase.product,
                &1_i64,
                &purchase.order_id,
                &"sql-atomic",
                &None::<&str>,
                &Some("bench"),
                &"1 Main St",
                &"+380441234567",
                &"a@example.com",
            ],
        )
        .await
        .expect("the statement runs");
    row.get(0)
}

fn purchase_statement(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let url = database_url();
    let sqlx_pool = match runtime.block_on(prepare(&url)) {
        Ok(pool) => pool,
        Err(why) => {
            eprintln!("pg_driver bench skipped: PostgreSQL at {url} is not reachable ({why})");
            return;
        }
    };
    let options: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    let PurchasePool::TokioPostgres(deadpool) =
        PurchasePool::tokio_postgres(pg_driver::config_of(&options), PgSettings::default())
    else {
        unreachable!("tokio_postgres builds a deadpool pool")
    };
    let (mut sqlx_conn, raw_client) = runtime.block_on(async {
        let sqlx_conn = PgConnection::connect(&url).await.expect("one sqlx connection");
        let (client, connection) = pg_driver::config_of(&options)
            .connect(tokio_postgres::NoTls)
            .await
            .expect("one tokio-postgres client");
        tokio::spawn(connection);
        (sqlx_conn, client)
    });
    let select_1 = runtime.block_on(raw_client.prepare("SELECT 1")).expect("prepared");

    let mut group = c.benchmark_group("pg_purchase_statement");
    group.bench_function("select_1/sqlx_connection", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let one: i32 =
                    sqlx::query_scalar("SELECT 1").fetch_one(&mut sqlx_conn).await.expect("SELECT 1");
                black_box(one)
            })
        });
    });
    group.bench_function("select_1/tokio_postgres_client", |b| {
        b.to_async(&runtime).iter(|| async {
            let one: i32 = raw_client.query_one(&select_1, &[]).await.expect("SELECT 1").get(0);
            black_box(one)
        });
    });
    for (name, product, expected) in [("sold_out", SOLD_OUT, false), ("sells", PLENTY, true)] {
        group.bench_function(format!("{name}/sqlx_pool"), |b| {
            b.to_async(&runtime).iter(|| async {
                assert_eq!(via_sqlx(&sqlx_pool, Purchase::of(product)).await, expected);
            });
        });
        group.bench_function(format!("{name}/deadpool_prepared"), |b| {
            b.to_async(&runtime).iter(|| async {
                assert_eq!(via_deadpool(&deadpool, Purchase::of(product)).await, expected);
            });
        });
    }
    group.finish();
    runtime.block_on(async {
        // The orders the `sells` runs placed: the next run starts from the same books.
        let _ = sqlx::query("DELETE FROM orders WHERE strategy = 'sql-atomic' AND user_name = 'bench'")
            .execute(&sqlx_pool)
            .await;
    });
}

criterion_group!(benches, purchase_statement);
criterion_main!(benches);
