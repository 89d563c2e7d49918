//! The shared batch writer (`order_store::write_batch_on`) and the stock sync on both backends,
//! each scenario one test per backend on a scratch database of its own
//! ([`crate::dialects::Scratch`]): what the queue workers, `redis-orderlog` and `sql-coalesce`
//! rely on, asked of the library directly.

use std::time::{Duration, Instant};

use checkout_strategies::fence::{Doubt, settle_on};
use checkout_strategies::order_store::{BatchOrder, StockTake, Written, write_batch_on};
use checkout_strategies::stock_sync::{StockSync, StockSyncSettings};
use checkout_strategies::{Delivery, OrderLines, OrderStatus, SqlBackend, SqlPool, StrategyKind};
use uuid::Uuid;

use crate::dialects::{Scratch, delivery, lines};

const HOT: i64 = 100;
const OTHER: i64 = 200;

/// An order as a queue worker holds it, owning what a [`BatchOrder`] borrows.
struct Order {
    id: Uuid,
    lines: OrderLines,
    delivery: Delivery,
    key: Option<String>,
    status: OrderStatus,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl Order {
    fn new(order_lines: &[(i64, u32)], key: Option<&str>) -> Self {
        Self {
            id: Uuid::new_v4(),
            lines: lines(order_lines),
            delivery: delivery(),
            key: key.map(str::to_owned),
            status: OrderStatus::Confirmed,
            created_at: chrono::Utc::now(),
        }
    }

    fn with_status(mut self, status: OrderStatus) -> Self {
        self.status = status;
        self
    }

    fn batch(&self, strategy: StrategyKind) -> BatchOrder<'_> {
        BatchOrder {
            order_id: self.id,
            strategy,
            lines: &self.lines,
            delivery: &self.delivery,
            user: None,
            idempotency_key: self.key.as_deref(),
            created_at: self.created_at,
            status: self.status,
            reason: (self.status == OrderStatus::Cancelled).then_some("sold_out"),
        }
    }
}

/// Writes `orders` as `strategy` would, in one transaction of their own.
async fn write(
    scratch: &Scratch,
    strategy: StrategyKind,
    orders: &[&Order],
    take: StockTake,
) -> Result<Vec<Written>, checkout_strategies::order_store::BatchError> {
    let batch: Vec<BatchOrder<'_>> = orders.iter().map(|order| order.batch(strategy)).collect();
    write_batch_on(scratch.books(), &batch, take).await
}

async fn scratch_with(backend: SqlBackend, products: &[(i64, i64)]) -> Scratch {
    let scratch = Scratch::new(backend).await;
    scratch.stock_products(products).await;
    scratch
}

async fn a_redelivered_batch_writes_nothing_twice(backend: SqlBackend) {
    let scratch = scratch_with(backend, &[(HOT, 10), (OTHER, 10)]).await;
    let (a, b, c) = (
        Order::new(&[(HOT, 2)], Some("a")),
        Order::new(&[(HOT, 1), (OTHER, 3)], None),
        Order::new(&[(HOT, 1)], None),
    );
    let first = write(&scratch, StrategyKind::Stream, &[&a, &b], StockTake::Decided).await;
    assert_eq!(first, Ok(vec![Written::Inserted; 2]), "{backend}");
    assert_eq!((scratch.stock_row(HOT).await, scratch.stock_row(OTHER).await), (7, 7), "{backend}");

    let again = write(&scratch, StrategyKind::Stream, &[&a, &b], StockTake::Decided).await;
    assert_eq!(again, Ok(vec![Written::AlreadyThere; 2]), "{backend}: the same batch, delivered again");
    let mixed = write(&scratch, StrategyKind::Stream, &[&b, &c], StockTake::Decided).await;
    assert_eq!(mixed, Ok(vec![Written::AlreadyThere, Written::Inserted]), "{backend}");

    assert_eq!(
        (scratch.stock_row(HOT).await, scratch.stock_row(OTHER).await),
        (6, 7),
        "{backend}: moved once"
    );
    assert_eq!(scratch.sold().await, (3, 7), "{backend}: three orders, their lines once");
    assert_eq!(scratch.number("SELECT COUNT(*) FROM products WHERE gate = 'redis'").await, 2, "{backend}");
    scratch.drop_database().await;
}

/// Another delivery of the same order commits while this batch waits for its row: the batch
/// finds it written, whichever transaction's snapshot it reads, and takes nothing; when that
/// delivery rolls back instead, the batch inserts the order and takes its units.
async fn a_delivery_committed_while_the_batch_waits_is_already_there(backend: SqlBackend) {
    let scratch = scratch_with(backend, &[(HOT, 10)]).await;
    for commits in [true, false] {
        let order = Order::new(&[(HOT, 2)], Some(if commits { "committed" } else { "rolled-back" }));
        let other_delivery = OtherDelivery::begin(&scratch, &order).await;
        let ((written, written_at), ended_at) = tokio::join!(
            async {
                let written = write(&scratch, StrategyKind::Stream, &[&order], StockTake::Decided).await;
                (written, Instant::now())
            },
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let ended_at = Instant::now();
                other_delivery.end(commits).await;
                ended_at
            }
        );
        assert!(written_at > ended_at, "{backend}: the batch waited for the other delivery's row");
        let expected = if commits { Written::AlreadyThere } else { Written::Inserted };
        assert_eq!(written, Ok(vec![expected]), "{backend}, the other delivery committing: {commits}");
    }
    // The committed delivery took 2 units itself; the batch took 2 only for the one it inserted.
    assert_eq!(scratch.stock_row(HOT).await, 6, "{backend}");
    assert_eq!(scratch.number("SELECT COUNT(*) FROM orders").await, 2, "{backend}");
    scratch.drop_database().await;
}

/// A transaction that writes `order` as another delivery would (its row and its units), held
/// open until [`OtherDelivery::end`].
enum OtherDelivery {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    MySql(sqlx::Transaction<'static, sqlx::MySql>),
}

impl OtherDelivery {
    async fn begin(scratch: &Scratch, order: &Order) -> Self {
        const ORDER: &str = "INSERT INTO orders (id, strategy, status, idempotency_key, address, phone, email) \
                             VALUES ($1, 'stream', 'confirmed', $2, '', '', '')";
        const TAKE: &str = "UPDATE products SET stock = stock - 2 WHERE id = 100";
        match scratch.books() {
            SqlPool::Postgres(pool) => {
                let mut tx = pool.begin().await.expect("a transaction");
                sqlx::query(ORDER)
                    .bind(order.id)
                    .bind(&order.key)
                    .execute(&mut *tx)
                    .await
                    .expect("the order");
                sqlx::query(TAKE).execute(&mut *tx).await.expect("its units");
                Self::Postgres(tx)
            }
            SqlPool::MySql(pool) => {
                let mut tx = pool.begin().await.expect("a transaction");
                let sql = ORDER.replace("$1", "?").replace("$2", "?");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(order.id)
                    .bind(&order.key)
                    .execute(&mut *tx)
                    .await
                    .expect("the order");
                sqlx::query(TAKE).execute(&mut *tx).await.expect("its units");
                Self::MySql(tx)
            }
        }
    }

    async fn end(self, commit: bool) {
        match (self, commit) {
            (Self::Postgres(tx), true) => tx.commit().await,
            (Self::Postgres(tx), false) => tx.rollback().await,
            (Self::MySql(tx), true) => tx.commit().await,
            (Self::MySql(tx), false) => tx.rollback().await,
        }
        .expect("the other delivery ends");
    }
}

async fn a_taken_key_answers_key_taken_for_that_order_only(backend: SqlBackend) {
    let scratch = scratch_with(backend, &[(HOT, 10), (OTHER, 10)]).await;
    let holder = Order::new(&[(HOT, 1)], Some("taken"));
    let written = write(&scratch, StrategyKind::Stream, &[&holder], StockTake::Decided).await;
    assert_eq!(written, Ok(vec![Written::Inserted]), "{backend}");

    let (late, free, unkeyed) = (
        Order::new(&[(HOT, 3)], Some("taken")),
        Order::new(&[(OTHER, 2)], Some("free")),
        Order::new(&[(HOT, 1)], None),
    );
    let written = write(&scratch, StrategyKind::Stream, &[&free, &late, &unkeyed], StockTake::Decided).await;
    assert_eq!(written, Ok(vec![Written::Inserted, Written::KeyTaken, Written::Inserted]), "{backend}");
    assert_eq!(
        (scratch.stock_row(HOT).await, scratch.stock_row(OTHER).await),
        (8, 8),
        "{backend}: not the late order's"
    );
    let late_rows = scratch
        .number(&format!("SELECT COUNT(*) FROM orders WHERE id = {}", id_literal(backend, late.id)))
        .await;
    assert_eq!(late_rows, 0, "{backend}: the late order is not written");
    assert_eq!(scratch.sold().await, (3, 4), "{backend}");
    scratch.drop_database().await;
}

async fn a_voided_id_answers_key_taken(backend: SqlBackend) {
    let scratch = scratch_with(backend, &[(HOT, 10)]).await;
    let (voided, sold) = (Order::new(&[(HOT, 2)], Some("voided")), Order::new(&[(HOT, 3)], None));
    let fate = settle_on(scratch.books(), StrategyKind::Stream, voided.id, "test").await.expect("the books");
    assert_eq!(fate, Doubt::Void, "{backend}");
    for _ in 0..2 {
        let written = write(&scratch, StrategyKind::Stream, &[&voided, &sold], StockTake::Decided).await;
        assert_eq!(written.as_ref().map(|w| w[0]), Ok(Written::KeyTaken), "{backend}: {written:?}");
    }
    assert_eq!(scratch.stock_row(HOT).await, 7, "{backend}: only the order written took stock");
    assert_eq!(scratch.number("SELECT COUNT(*) FROM orders WHERE status = 'void'").await, 1, "{backend}");
    assert_eq!(scratch.sold().await, (1, 3), "{backend}");
    scratch.drop_database().await;
}

async fn logged_units_wait_for_the_stock_sync(backend: SqlBackend) {
    let scratch = scratch_with(backend, &[(HOT, 10), (OTHER, 10)]).await;
    let (a, b) = (Order::new(&[(HOT, 2)], None), Order::new(&[(HOT, 1), (OTHER, 3)], Some("b")));
    for expected in [Written::Inserted, Written::AlreadyThere] {
        let written = write(&scratch, StrategyKind::RedisOrderlog, &[&a, &b], StockTake::Logged).await;
        assert_eq!(written, Ok(vec![expected; 2]), "{backend}");
    }
    assert_eq!(
        (scratch.stock_row(HOT).await, scratch.stock_row(OTHER).await),
        (10, 10),
        "{backend}: no stock row moved"
    );
    assert_eq!(scratch.number("SELECT COUNT(*) FROM stock_unapplied").await, 3, "{backend}: logged once");
    let logged = scratch.number("SELECT CAST(SUM(quantity) AS SIGNED) FROM stock_unapplied").await;
    assert_eq!(logged, 6, "{backend}");
    assert_eq!(scratch.sold().await, (2, 6), "{backend}");

    let pending = Order::new(&[(HOT, 1)], None).with_status(OrderStatus::Pending);
    let refused = write(&scratch, StrategyKind::RedisOrderlog, &[&pending], StockTake::Logged).await;
    assert!(refused.is_err_and(|err| !err.transient), "{backend}: a pending order has no units to log");

    let sync = StockSync::new(scratch.books().clone(), StockSyncSettings::default());
    let report = sync.sync_once().await.expect("a sync");
    assert_eq!((report.lines, report.units, report.products, report.skipped), (3, 6, 2, false), "{backend}");
    assert_eq!((scratch.stock_row(HOT).await, scratch.stock_row(OTHER).await), (7, 7), "{backend}");
    assert_eq!(scratch.number("SELECT COUNT(*) FROM stock_unapplied").await, 0, "{backend}");
    assert_eq!(sync.sync_once().await.expect("a sync").lines, 0, "{backend}: nothing twice");
    scratch.drop_database().await;
}

async fn checked_stock_fails_the_batch_when_short(backend: SqlBackend) {
    let scratch = scratch_with(backend, &[(HOT, 2)]).await;
    let (one, two) = (Order::new(&[(HOT, 1)], None), Order::new(&[(HOT, 2)], None));
    let short = write(&scratch, StrategyKind::SqlCoalesce, &[&one, &two], StockTake::Checked).await;
    assert!(short.as_ref().is_err_and(|err| !err.transient), "{backend}: {short:?}");
    assert_eq!(scratch.number("SELECT COUNT(*) FROM orders").await, 0, "{backend}: nothing written");
    assert_eq!(scratch.stock_row(HOT).await, 2, "{backend}");

    let fits = write(&scratch, StrategyKind::SqlCoalesce, &[&two], StockTake::Checked).await;
    assert_eq!(fits, Ok(vec![Written::Inserted]), "{backend}");
    assert_eq!(scratch.stock_row(HOT).await, 0, "{backend}");
    assert_eq!(scratch.number("SELECT COUNT(*) FROM products WHERE gate = 'postgres'").await, 1, "{backend}");
    scratch.drop_database().await;
}

/// `stream-deferred` writes the orders it could not fill as cancelled and `stream` may write
/// pending ones: their lines are kept, and only confirmed orders take units.
async fn only_confirmed_orders_take_stock(backend: SqlBackend) {
    let scratch = scratch_with(backend, &[(HOT, 10)]).await;
    let confirmed = Order::new(&[(HOT, 1)], None);
    let cancelled = Order::new(&[(HOT, 4)], None).with_status(OrderStatus::Cancelled);
    let pending = Order::new(&[(HOT, 2)], Some("pending")).with_status(OrderStatus::Pending);
    for take in [StockTake::Decided, StockTake::Checked] {
        let orders = [&confirmed, &cancelled, &pending];
        let written = write(&scratch, StrategyKind::StreamDeferred, &orders, take).await;
        assert!(written.is_ok(), "{backend}, {take:?}: {written:?}");
    }
    assert_eq!(scratch.stock_row(HOT).await, 9, "{backend}");
    assert_eq!(scratch.number("SELECT COUNT(*) FROM order_items").await, 3, "{backend}");
    let statuses = scratch.number(
        "SELECT COUNT(*) FROM orders WHERE (status = 'cancelled' AND reason = 'sold_out') OR status = 'pending'",
    )
    .await;
    assert_eq!(statuses, 2, "{backend}");
    scratch.drop_database().await;
}

/// Two stock syncs drain one backlog side by side while orders keep being logged: every logged
/// line is applied exactly once.
async fn racing_stock_syncs_apply_each_line_once(backend: SqlBackend) {
    const PRODUCTS: i64 = 5;
    let scratch = scratch_with(backend, &(1..=PRODUCTS).map(|id| (id, 10_000)).collect::<Vec<_>>()).await;
    let batches: Vec<Vec<Order>> = (0..30_u32)
        .map(|batch| {
            (0..10_u32)
                .map(|i| {
                    let n = batch * 10 + i;
                    let first = i64::from(n % 5) + 1;
                    let second = (first % PRODUCTS) + 1;
                    Order::new(&[(first, 1 + n % 3), (second, 1)], None)
                })
                .collect()
        })
        .collect();
    let logged_units: i64 = batches
        .iter()
        .flatten()
        .flat_map(|order| order.lines.iter())
        .map(|l| i64::from(l.quantity.get()))
        .sum();
    let log = async |orders: &[Vec<Order>]| {
        for batch in orders {
            let batch: Vec<&Order> = batch.iter().collect();
            let written = write(&scratch, StrategyKind::RedisOrderlog, &batch, StockTake::Logged).await;
            assert!(written.is_ok(), "{backend}: {written:?}");
        }
    };
    log(&batches[..10]).await;
    let settings = StockSyncSettings { every: Duration::from_millis(1), batch: 7 };
    let (one, two) = (
        StockSync::new(scratch.books().clone(), settings),
        StockSync::new(scratch.books().clone(), settings),
    );
    let (_, first, second) = tokio::join!(log(&batches[10..]), one.drain(), two.drain());
    let rest = one.drain().await.expect("a sync");
    let applied = first.expect("a sync") + second.expect("a sync") + rest;
    assert_eq!(applied, 600, "{backend}: every logged line applied once");
    assert_eq!(scratch.number("SELECT COUNT(*) FROM stock_unapplied").await, 0, "{backend}");
    let left = scratch.number("SELECT CAST(SUM(stock) AS SIGNED) FROM products").await;
    assert_eq!(left, PRODUCTS * 10_000 - logged_units, "{backend}: the stock moved by the logged units");
    scratch.drop_database().await;
}

/// While one process holds its database's sync, another skips its turn and touches nothing; the
/// lock is per database, so another database's sync goes on.
async fn a_held_stock_sync_makes_the_next_skip(backend: SqlBackend) {
    let (scratch, elsewhere) =
        (scratch_with(backend, &[(HOT, 10)]).await, scratch_with(backend, &[(HOT, 10)]).await);
    for books in [&scratch, &elsewhere] {
        let written =
            write(books, StrategyKind::RedisOrderlog, &[&Order::new(&[(HOT, 1)], None)], StockTake::Logged)
                .await;
        assert_eq!(written, Ok(vec![Written::Inserted]), "{backend}");
    }
    let sync = |books: &Scratch| StockSync::new(books.books().clone(), StockSyncSettings::default());
    let holder = SyncHolder::hold(&scratch).await;
    let skipped = sync(&scratch).sync_once().await.expect("an answer");
    assert!(skipped.skipped && skipped.lines == 0, "{backend}: {skipped:?}");
    assert_eq!(sync(&elsewhere).sync_once().await.expect("a sync").lines, 1, "{backend}: another database");
    assert_eq!(scratch.stock_row(HOT).await, 10, "{backend}");
    holder.release().await;
    assert_eq!(sync(&scratch).sync_once().await.expect("a sync").lines, 1, "{backend}");
    assert_eq!(scratch.stock_row(HOT).await, 9, "{backend}");
    scratch.drop_database().await;
    elsewhere.drop_database().await;
}

/// Another process's stock sync, holding its lock.
enum SyncHolder {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    MySql(sqlx::pool::PoolConnection<sqlx::MySql>),
}

impl SyncHolder {
    async fn hold(scratch: &Scratch) -> Self {
        match scratch.books() {
            SqlPool::Postgres(pool) => {
                let mut tx = pool.begin().await.expect("a transaction");
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('checkout-bench:stock-sync'))")
                    .execute(&mut *tx)
                    .await
                    .expect("the lock");
                Self::Postgres(tx)
            }
            SqlPool::MySql(pool) => {
                let mut conn = pool.acquire().await.expect("a connection");
                let granted: Option<i64> = sqlx::query_scalar(
                    "SELECT GET_LOCK(CONCAT('checkout-bench:stock-sync:', MD5(DATABASE())), 0)",
                )
                .fetch_one(&mut *conn)
                .await
                .expect("the lock");
                assert_eq!(granted, Some(1));
                Self::MySql(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            Self::Postgres(tx) => tx.rollback().await.expect("released"),
            Self::MySql(mut conn) => {
                sqlx::query("SELECT RELEASE_LOCK(CONCAT('checkout-bench:stock-sync:', MD5(DATABASE())))")
                    .execute(&mut *conn)
                    .await
                    .expect("released");
            }
        }
    }
}

/// An order id as a literal the test's own queries can compare with.
fn id_literal(backend: SqlBackend, id: Uuid) -> String {
    match backend {
        SqlBackend::Postgres => format!("'{id}'"),
        SqlBackend::MySql => format!("UNHEX('{}')", id.simple()),
    }
}

/// One test per backend for each scenario.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        $(mod $scenario {
            use checkout_strategies::SqlBackend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(SqlBackend::Postgres).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb() {
                super::$scenario(SqlBackend::MySql).await;
            }
        })*
    };
}

on_both_backends!(
    a_redelivered_batch_writes_nothing_twice,
    a_delivery_committed_while_the_batch_waits_is_already_there,
    a_taken_key_answers_key_taken_for_that_order_only,
    a_voided_id_answers_key_taken,
    logged_units_wait_for_the_stock_sync,
    checked_stock_fails_the_batch_when_short,
    only_confirmed_orders_take_stock,
    racing_stock_syncs_apply_each_line_once,
    a_held_stock_sync_makes_the_next_skip,
);
