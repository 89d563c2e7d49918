//! The strategies ported to every SQL dialect, run on each backend by construction: every case
//! below expands to one test per (backend, strategy) pair, on a scratch database of its own
//! (created, migrated and dropped by the test). A strategy ported later joins by being added to
//! `ported!`'s list; a backend by being added to `SqlBackend::ALL`'s scratch URLs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use checkout_strategies::backends::{PgSettings, mysql_pool, pg_pool, prepare_database};
use checkout_strategies::redis_decr::RedisDecr;
use checkout_strategies::redis_lua::RedisLua;
use checkout_strategies::redis_orderlog::RedisOrderlog;
use checkout_strategies::sql_atomic::SqlAtomic;
use checkout_strategies::sql_coalesce::SqlCoalesce;
use checkout_strategies::sql_for_update::SqlForUpdate;
use checkout_strategies::sql_naive::SqlNaive;
use checkout_strategies::sql_optimistic::SqlOptimistic;
use checkout_strategies::sql_skip_locked::SqlSkipLocked;
use checkout_strategies::{
    Backends, Delivery, Gate, IdempotencyKey, OrderLine, OrderLines, ProductId, PurchaseOutcome,
    PurchasePool, PurchaseRequest, Quantity, RedisBackend, RedisKeys, RedisSettings, Registry, SqlBackend,
    SqlPool, StockPlan, Strategy, StrategyError, StrategyKind, Tuning, catalog, order_store, redis_stock,
};
use sqlx::migrate::MigrateDatabase;
use sqlx::{MySql, Postgres};

use crate::helpers::ChaosProxy;

/// A database of its own on `backend`'s local server, dropped by [`Scratch::drop_database`].
pub(crate) struct Scratch {
    url: String,
    backend: SqlBackend,
    books: SqlPool,
    /// Keys under a prefix of this database's own, for the strategies gated by Redis.
    redis: RedisBackend,
}

fn redis_of_its_own() -> RedisBackend {
    RedisBackend::lazy(
        "redis://127.0.0.1:6379",
        RedisKeys::new(format!("dialect-{}:", uuid::Uuid::new_v4().simple())),
        RedisSettings::default(),
    )
    .expect("a Redis URL")
}

fn server_url(backend: SqlBackend) -> &'static str {
    match backend {
        SqlBackend::Postgres => "postgres://postgres@127.0.0.1:5432",
        SqlBackend::MySql => "mysql://root@127.0.0.1:3306",
    }
}

fn settings() -> PgSettings {
    PgSettings { connections: 8, ..PgSettings::default() }
}

impl Scratch {
    pub(crate) async fn new(backend: SqlBackend) -> Self {
        Self::with_settings(backend, settings()).await
    }

    async fn with_settings(backend: SqlBackend, settings: PgSettings) -> Self {
        let name = format!("dialect_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{}/{name}", server_url(backend));
        prepare_database(&url).await.expect("the scratch database is created and migrated");
        let books = pool_at(backend, &url, settings);
        Self { url, backend, books, redis: redis_of_its_own() }
    }

    pub(crate) const fn books(&self) -> &SqlPool {
        &self.books
    }

    /// Where the database is, for a proxy to stand in front of.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The database's books on a pool of their own that reaches it through `proxy`.
    pub(crate) fn through(&self, proxy: &ChaosProxy, settings: PgSettings) -> SqlPool {
        pool_at(self.backend, &proxy.url(&self.url), settings)
    }

    fn purchases(&self) -> PurchasePool {
        match &self.books {
            SqlPool::Postgres(pool) => PurchasePool::Sqlx(pool.clone()),
            SqlPool::MySql(pool) => PurchasePool::MySql(pool.clone()),
        }
    }

    async fn exec(&self, sql: &str) {
        match &self.books {
            SqlPool::Postgres(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(drop),
            SqlPool::MySql(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(drop),
        }
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    /// One integer: `sql` must select a single BIGINT-compatible value (cast on both servers).
    pub(crate) async fn number(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(portable(sql, self.backend));
        match &self.books {
            SqlPool::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            SqlPool::MySql(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
        }
        .expect("the books answer")
    }

    /// What is left to sell: the stock row less the units sold insert-only that the stock sync
    /// has not applied yet, or the free units of a product a unit pool sells.
    pub(crate) async fn stock(&self, product: i64) -> i64 {
        self.number(&format!(
            "SELECT CASE WHEN p.gate = 'units' \
                    THEN (SELECT COUNT(*) FROM inventory_units u WHERE u.product_id = p.id AND u.order_id IS NULL) \
                    ELSE p.stock - CAST((SELECT COALESCE(SUM(s.quantity), 0) FROM stock_unapplied s \
                                         WHERE s.product_id = p.id) AS SIGNED) END \
             FROM products p WHERE p.id = {product}"
        ))
        .await
    }

    /// The stock row itself, as the stock sync leaves it.
    pub(crate) async fn stock_row(&self, product: i64) -> i64 {
        self.number(&format!("SELECT stock FROM products WHERE id = {product}")).await
    }

    /// Live orders and the units their lines hold.
    pub(crate) async fn sold(&self) -> (i64, i64) {
        let orders = self.number("SELECT COUNT(*) FROM orders WHERE status = 'confirmed'").await;
        let units = self
            .number(
                "SELECT CAST(COALESCE(SUM(i.quantity), 0) AS SIGNED) FROM order_items i \
                 JOIN orders o ON o.id = i.order_id WHERE o.status = 'confirmed'",
            )
            .await;
        (orders, units)
    }

    /// Removes product `id`'s Redis stock key, which the Redis strategies then rebuild from the
    /// books on first use.
    async fn forget_redis_shelf(&self, id: i64) {
        let mut conn = self.redis.conn.clone();
        redis::cmd("DEL")
            .arg(self.redis.keys.stock(id))
            .query_async::<i64>(&mut conn)
            .await
            .expect("Redis answers");
    }

    pub(crate) async fn stock_products(&self, products: &[(i64, i64)]) {
        for (id, stock) in products {
            self.exec(&format!(
                "INSERT INTO products (id, stock, initial_stock) VALUES ({id}, {stock}, {stock})"
            ))
            .await;
        }
    }

    /// The same database on a pool of its own: its connections outlive what a test does to the
    /// first pool's (killed connections, say).
    pub(crate) fn reopened(&self) -> Self {
        let books = pool_at(self.backend, &self.url, settings());
        Self { url: self.url.clone(), backend: self.backend, books, redis: self.redis.clone() }
    }

    /// Closes the pool, leaving the database.
    pub(crate) async fn close(self) {
        match &self.books {
            SqlPool::Postgres(pool) => pool.close().await,
            SqlPool::MySql(pool) => pool.close().await,
        }
    }

    pub(crate) async fn drop_database(self) {
        redis_stock::clear(&self.redis).await.expect("the scratch Redis keys are removed");
        match &self.books {
            SqlPool::Postgres(pool) => pool.close().await,
            SqlPool::MySql(pool) => pool.close().await,
        }
        match self.backend {
            SqlBackend::Postgres => Postgres::force_drop_database(&self.url).await,
            SqlBackend::MySql => MySql::drop_database(&self.url).await,
        }
        .expect("the scratch database is dropped");
    }
}

/// A lazy pool on the database `url` names, of `backend`'s kind.
fn pool_at(backend: SqlBackend, url: &str, settings: PgSettings) -> SqlPool {
    match backend {
        SqlBackend::Postgres => SqlPool::Postgres(pg_pool(url, settings).expect("a PostgreSQL URL")),
        SqlBackend::MySql => SqlPool::MySql(mysql_pool(url, settings).expect("a MySQL URL")),
    }
}

/// The test's own queries are written for MySQL, whose SUM is a DECIMAL cast to `SIGNED`;
/// PostgreSQL spells that type BIGINT.
fn portable(sql: &str, backend: SqlBackend) -> String {
    match backend {
        SqlBackend::Postgres => sql.replace("AS SIGNED", "AS BIGINT"),
        SqlBackend::MySql => sql.to_owned(),
    }
}

fn build(kind: StrategyKind, scratch: &Scratch, race_window: Duration) -> Arc<dyn Strategy> {
    let (books, purchases) = (scratch.books.clone(), scratch.purchases());
    match kind {
        StrategyKind::SqlNaive => Arc::new(SqlNaive::new(books, purchases, race_window)),
        StrategyKind::SqlForUpdate => Arc::new(SqlForUpdate::new(books, purchases, 3)),
        StrategyKind::SqlAtomic => Arc::new(SqlAtomic::new(books, purchases)),
        StrategyKind::SqlCoalesce => Arc::new(SqlCoalesce::new(books, 256)),
        StrategyKind::SqlSkipLocked => Arc::new(SqlSkipLocked::new(books, purchases)),
        StrategyKind::SqlOptimistic => Arc::new(SqlOptimistic::new(books, purchases, 10)),
        StrategyKind::RedisDecr => Arc::new(RedisDecr::new(books, scratch.redis.clone(), RESERVATION_TTL)),
        StrategyKind::RedisLua => Arc::new(RedisLua::new(books, scratch.redis.clone(), RESERVATION_TTL)),
        StrategyKind::RedisOrderlog => {
            Arc::new(RedisOrderlog::new(books, scratch.redis.clone(), RESERVATION_TTL, 256))
        }
        other => panic!("{other} is not ported to every dialect"),
    }
}

/// The order lines of `(product, quantity)` pairs.
pub(crate) fn lines(lines: &[(i64, u32)]) -> OrderLines {
    let lines = lines
        .iter()
        .map(|&(product, quantity)| OrderLine {
            product_id: ProductId::parse(product).expect("a product id"),
            quantity: Quantity::parse(i64::from(quantity)).expect("a quantity"),
        })
        .collect();
    OrderLines::new(lines).expect("valid lines")
}

/// Where every test order goes.
pub(crate) fn delivery() -> Delivery {
    Delivery::new("1 Main St".into(), "555-0100".into(), "buyer@example.com".into()).expect("a delivery")
}

fn request(order_lines: &[(i64, u32)], key: Option<&str>) -> PurchaseRequest {
    PurchaseRequest {
        order_id: uuid::Uuid::new_v4(),
        lines: lines(order_lines),
        delivery: delivery(),
        user: None,
        idempotency_key: key.map(|key| IdempotencyKey::parse(key).expect("a key")),
    }
}

const HOT: i64 = 100;
const STOCK: i64 = 10;
/// Long enough that no reservation of a test expires while its purchase runs.
const RESERVATION_TTL: Duration = Duration::from_secs(30);
const BUYERS: usize = 120;

async fn contention(backend: SqlBackend, kind: StrategyKind) {
    let scratch = Scratch::new(backend).await;
    scratch.stock_products(&[(HOT, STOCK)]).await;
    // Wide enough that naive buyers read the stock before any of them writes it.
    let strategy = build(kind, &scratch, Duration::from_millis(50));
    let buyers: Vec<_> = (0..BUYERS)
        .map(|_| {
            let strategy = Arc::clone(&strategy);
            tokio::spawn(async move { strategy.purchase(&request(&[(HOT, 1)], None)).await })
        })
        .collect();
    let (mut placed, mut contention) = (0, 0);
    for buyer in buyers {
        match buyer.await.expect("no buyer panics") {
            Ok(PurchaseOutcome::Placed(_)) => placed += 1,
            Ok(PurchaseOutcome::SoldOut(_)) | Err(StrategyError::Conflict(_)) => {}
            // `sql-optimistic` gives up after its retries: counted in the books, never oversold.
            Ok(PurchaseOutcome::Contention(_)) => contention += 1,
            other => panic!("{kind} on {backend}: unexpected answer {other:?}"),
        }
    }
    let stock = scratch.stock(HOT).await;
    let (orders, units) = scratch.sold().await;
    assert_eq!(orders, placed, "{kind} on {backend}: every 201 is an order in the books");
    assert_eq!(units, STOCK - stock, "{kind} on {backend}: the stock moved by the units sold");
    if kind.spec().gate == Gate::Redis {
        let (mirror, inflight) = redis_stock::mirror(&scratch.redis, &[HOT]).await.expect("Redis answers");
        assert_eq!(
            (mirror, inflight),
            (vec![Some(stock)], vec![Some(0)]),
            "{kind} on {backend}: Redis's shelf agrees with the books and nothing is left in flight"
        );
    }
    let counted =
        scratch.number("SELECT CAST(COALESCE(SUM(refusals), 0) AS SIGNED) FROM contention_refusals").await;
    assert_eq!(counted, contention, "{kind} on {backend}: every contention refusal is counted");
    if contention > 0 {
        assert!(placed < STOCK && stock == STOCK - placed, "{kind} on {backend}: undersold, never oversold");
    } else if kind.spec().safe {
        assert_eq!(placed, STOCK, "{kind} on {backend}: exactly the stock is sold");
        assert_eq!(stock, 0, "{kind} on {backend}");
    } else {
        assert!(
            placed > STOCK && stock < 0,
            "{kind} on {backend}: oversold {placed} of {STOCK}, stock {stock}"
        );
    }
    scratch.drop_database().await;
}

async fn multi_item(backend: SqlBackend, kind: StrategyKind) {
    let scratch = Scratch::new(backend).await;
    scratch.stock_products(&[(1, 5), (2, 1)]).await;
    let strategy = build(kind, &scratch, Duration::ZERO);
    let refused = strategy.purchase(&request(&[(1, 2), (2, 2)], None)).await.expect("an answer");
    assert!(
        matches!(refused, PurchaseOutcome::SoldOut(p) if p.get() == 2),
        "{kind} on {backend}: {refused:?}"
    );
    assert_eq!(
        (scratch.stock(1).await, scratch.stock(2).await),
        (5, 1),
        "{kind} on {backend}: nothing taken"
    );
    let unknown = strategy.purchase(&request(&[(1, 1), (404, 1)], None)).await.expect("an answer");
    assert!(matches!(unknown, PurchaseOutcome::UnknownProduct(p) if p.get() == 404), "{kind}: {unknown:?}");
    assert_eq!(scratch.stock(1).await, 5, "{kind} on {backend}: an unknown line takes nothing");
    assert_eq!(scratch.sold().await, (0, 0), "{kind} on {backend}: no order for a refusal");

    let placed = strategy.purchase(&request(&[(2, 1), (1, 2)], None)).await.expect("an answer");
    assert!(matches!(placed, PurchaseOutcome::Placed(_)), "{kind} on {backend}: {placed:?}");
    assert_eq!((scratch.stock(1).await, scratch.stock(2).await), (3, 0), "{kind} on {backend}");
    assert_eq!(scratch.sold().await, (1, 3), "{kind} on {backend}: one order, both lines");
    scratch.drop_database().await;
}

async fn idempotency(backend: SqlBackend, kind: StrategyKind) {
    let scratch = Scratch::new(backend).await;
    scratch.stock_products(&[(HOT, STOCK)]).await;
    let strategy = build(kind, &scratch, Duration::ZERO);
    let first = strategy.purchase(&request(&[(HOT, 2)], Some("retry-1"))).await.expect("an answer");
    let PurchaseOutcome::Placed(receipt) = first else { panic!("{kind} on {backend}: {first:?}") };
    let again = strategy.purchase(&request(&[(HOT, 2)], Some("retry-1"))).await.expect("an answer");
    assert!(
        matches!(&again, PurchaseOutcome::Replayed(replayed) if replayed.order_id == receipt.order_id),
        "{kind} on {backend}: a retry replays the first order: {again:?}"
    );
    // Keys compare byte for byte, as on PostgreSQL.
    let other_case = strategy.purchase(&request(&[(HOT, 1)], Some("RETRY-1"))).await.expect("an answer");
    assert!(matches!(other_case, PurchaseOutcome::Placed(_)), "{kind} on {backend}: {other_case:?}");

    // Buyers racing with one key: one order, the rest replay it.
    let racers: Vec<_> = (0..12)
        .map(|_| {
            let strategy = Arc::clone(&strategy);
            tokio::spawn(async move { strategy.purchase(&request(&[(HOT, 1)], Some("race"))).await })
        })
        .collect();
    let mut placed = Vec::new();
    let mut replayed = Vec::new();
    for racer in racers {
        match racer.await.expect("no buyer panics").expect("an answer") {
            PurchaseOutcome::Placed(receipt) => placed.push(receipt.order_id),
            PurchaseOutcome::Replayed(receipt) => replayed.push(receipt.order_id),
            // A unit pool skips the units other buyers hold instead of waiting for them, and a
            // Redis shelf is taken before the order is written: a racer that finds every unit held
            // by same-key racers (who will give theirs back) hears sold out. The server's shared
            // claim keeps same-key racers from ever reaching a strategy at once.
            PurchaseOutcome::SoldOut(_)
                if kind == StrategyKind::SqlSkipLocked || kind.spec().gate == Gate::Redis => {}
            other => panic!("{kind} on {backend}: {other:?}"),
        }
    }
    assert_eq!(placed.len(), 1, "{kind} on {backend}: one order per key");
    assert!(replayed.iter().all(|id| *id == placed[0]), "{kind} on {backend}: replays name it");
    assert_eq!(scratch.stock(HOT).await, STOCK - 4, "{kind} on {backend}: the key's units taken once");
    assert_eq!(scratch.sold().await, (3, 4), "{kind} on {backend}");
    scratch.drop_database().await;
}

async fn backend_down(backend: SqlBackend, kind: StrategyKind) {
    // Nothing listens on port 9 (discard) here: every connection is refused.
    let url = match backend {
        SqlBackend::Postgres => "postgres://postgres@127.0.0.1:9/checkout",
        SqlBackend::MySql => "mysql://root@127.0.0.1:9/checkout",
    };
    let down = PgSettings { acquire_timeout: Duration::from_millis(500), ..settings() };
    let books = match backend {
        SqlBackend::Postgres => SqlPool::Postgres(pg_pool(url, down).expect("a URL")),
        SqlBackend::MySql => SqlPool::MySql(mysql_pool(url, down).expect("a URL")),
    };
    let purchases = match &books {
        SqlPool::Postgres(pool) => PurchasePool::Sqlx(pool.clone()),
        SqlPool::MySql(pool) => PurchasePool::MySql(pool.clone()),
    };
    let strategy: Arc<dyn Strategy> = match kind {
        StrategyKind::SqlNaive => Arc::new(SqlNaive::new(books, purchases, Duration::ZERO)),
        StrategyKind::SqlForUpdate => Arc::new(SqlForUpdate::new(books, purchases, 3)),
        StrategyKind::SqlCoalesce => Arc::new(SqlCoalesce::new(books, 256)),
        StrategyKind::RedisDecr => Arc::new(RedisDecr::new(books, redis_of_its_own(), RESERVATION_TTL)),
        StrategyKind::RedisLua => Arc::new(RedisLua::new(books, redis_of_its_own(), RESERVATION_TTL)),
        StrategyKind::RedisOrderlog => {
            Arc::new(RedisOrderlog::new(books, redis_of_its_own(), RESERVATION_TTL, 256))
        }
        _ => Arc::new(SqlAtomic::new(books, purchases)),
    };
    let started = Instant::now();
    let answer = strategy.purchase(&request(&[(HOT, 1)], Some("down"))).await;
    assert!(matches!(answer, Err(StrategyError::Unavailable(_))), "{kind} on {backend}: {answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{kind} on {backend}: answered in {:?}",
        started.elapsed()
    );
}

/// The claim every keyed purchase takes first (`idempotency_claims`, in front of every strategy),
/// on the scratch database's books: a retry replays, through any ported strategy; a reused key
/// with another body is refused; a purchase that placed nothing frees its key.
async fn shared_claim(backend: SqlBackend, kind: StrategyKind) {
    let scratch = Scratch::new(backend).await;
    scratch.stock_products(&[(HOT, 3), (7, 0)]).await;
    let pg = pg_pool("postgres://postgres@127.0.0.1:5432/postgres", settings()).expect("a URL");
    let mut backends = Backends::new(pg, scratch.redis.clone(), Tuning::default());
    backends.books = scratch.books.clone();
    backends.purchases = scratch.purchases();
    let registry = Registry::build_all(&backends, |strategy| strategy);
    let strategy = registry.get(kind);

    let first = strategy.purchase(&request(&[(HOT, 1)], Some("shared"))).await.expect("an answer");
    let PurchaseOutcome::Placed(receipt) = first else { panic!("{kind} on {backend}: {first:?}") };
    for other in COVERED {
        let again =
            registry.get(*other).purchase(&request(&[(HOT, 1)], Some("shared"))).await.expect("an answer");
        assert!(
            matches!(&again, PurchaseOutcome::Replayed(r) if r.order_id == receipt.order_id && r.strategy == kind),
            "{kind} then {other} on {backend}: {again:?}"
        );
    }
    let reused = strategy.purchase(&request(&[(HOT, 2)], Some("shared"))).await.expect("an answer");
    assert!(
        matches!(reused, PurchaseOutcome::KeyReused(id) if id == receipt.order_id),
        "{kind} on {backend}: another body under the key: {reused:?}"
    );
    let sold_out = strategy.purchase(&request(&[(7, 1)], Some("empty-shelf"))).await.expect("an answer");
    assert!(matches!(sold_out, PurchaseOutcome::SoldOut(_)), "{kind} on {backend}: {sold_out:?}");
    scratch.exec("UPDATE products SET stock = 1, initial_stock = 1 WHERE id = 7").await;
    // A Redis shelf mirrors the books as of its first use: restocking rebuilds it from them.
    scratch.forget_redis_shelf(7).await;
    // A unit pool sells its unit rows, laid out when the shelf was empty: restock it with one.
    scratch
        .exec("INSERT INTO inventory_units (product_id, unit_no) SELECT id, 1 FROM products WHERE id = 7 AND gate = 'units'")
        .await;
    let restocked = strategy.purchase(&request(&[(7, 1)], Some("empty-shelf"))).await.expect("an answer");
    assert!(
        matches!(restocked, PurchaseOutcome::Placed(_)),
        "{kind} on {backend}: a key whose purchase placed nothing is free again: {restocked:?}"
    );
    assert_eq!(scratch.number("SELECT COUNT(*) FROM idempotency_claims").await, 2, "{kind} on {backend}");
    assert_eq!(scratch.sold().await, (2, 2), "{kind} on {backend}");
    scratch.drop_database().await;
}

/// One test per (scenario, backend, ported strategy), and the list of ported strategies the
/// tests cover, which must be every strategy `SqlBackend::MySql` runs.
macro_rules! ported {
    (scenarios: [$($scenario:ident),*], strategies: $strategies:tt) => {
        ported!(@list $strategies);
        $(mod $scenario {
            ported!(@backend $scenario, postgres, Postgres, $strategies);
            ported!(@backend $scenario, mariadb, MySql, $strategies);
        })*
    };
    (@list [$($strategy:ident => $kind:ident),*]) => {
        const COVERED: &[StrategyKind] = &[$(StrategyKind::$kind),*];
    };
    (@backend $scenario:ident, $name:ident, $backend:ident, [$($strategy:ident => $kind:ident),*]) => {
        mod $name {
            use checkout_strategies::{SqlBackend, StrategyKind};

            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $strategy() {
                super::super::$scenario(SqlBackend::$backend, StrategyKind::$kind).await;
            })*
        }
    };
}

ported! {
    scenarios: [contention, multi_item, idempotency, shared_claim, backend_down],
    strategies: [
        sql_naive => SqlNaive,
        sql_for_update => SqlForUpdate,
        sql_atomic => SqlAtomic,
        sql_coalesce => SqlCoalesce,
        sql_skip_locked => SqlSkipLocked,
        sql_optimistic => SqlOptimistic,
        redis_decr => RedisDecr,
        redis_lua => RedisLua,
        redis_orderlog => RedisOrderlog
    ]
}

#[test]
fn every_strategy_ported_to_mariadb_is_covered_on_both_backends() {
    // `memory` runs on every database, needing none; the queued strategies, whose orders reach
    // the books after their 202, have their own scenarios in `dialect_server.rs`.
    let ported: Vec<StrategyKind> = StrategyKind::ALL
        .into_iter()
        .filter(|kind| {
            SqlBackend::MySql.runs(*kind) && kind.spec().persists_to_postgres() && !kind.spec().queued
        })
        .collect();
    assert_eq!(ported, COVERED, "add a newly ported strategy to `ported!`'s list");
}

#[tokio::test]
async fn a_mariadb_database_is_created_and_migrated_twice() {
    let scratch = Scratch::new(SqlBackend::MySql).await;
    prepare_database(&scratch.url).await.expect("migrating again changes nothing");
    let applied = scratch.number("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").await;
    assert_eq!(applied, i64::try_from(SqlBackend::MySql.migrator().iter().count()).unwrap());
    let tables = scratch
        .number(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_name IN ('products', 'orders', 'order_items', 'idempotency_claims', 'stock_plans')",
        )
        .await;
    assert_eq!(tables, 5);
    scratch.drop_database().await;
}

#[tokio::test]
async fn an_unknown_scheme_is_refused_before_connecting() {
    let err = prepare_database("sqlite://checkout.db").await.unwrap_err().to_string();
    assert!(err.contains("mysql://") && err.contains("postgres://"), "{err}");
}

/// MariaDB: a row lock held past `innodb_lock_wait_timeout` answers 503, not a hang.
#[tokio::test]
async fn a_lock_held_too_long_answers_503_on_mariadb() {
    let short = PgSettings { statement_timeout: Duration::from_secs(1), ..settings() };
    let scratch = Scratch::with_settings(SqlBackend::MySql, short).await;
    scratch.stock_products(&[(HOT, STOCK)]).await;
    let SqlPool::MySql(pool) = &scratch.books else { unreachable!("a MariaDB scratch") };
    let mut holder = pool.begin().await.expect("a transaction");
    sqlx::query("SELECT stock FROM products WHERE id = 100 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("the lock");
    for kind in [StrategyKind::SqlForUpdate, StrategyKind::SqlAtomic] {
        let strategy = build(kind, &scratch, Duration::ZERO);
        let started = Instant::now();
        let answer = strategy.purchase(&request(&[(HOT, 1)], None)).await;
        assert!(matches!(answer, Err(StrategyError::Unavailable(_))), "{kind}: {answer:?}");
        assert!(started.elapsed() < Duration::from_secs(4), "{kind}: {:?}", started.elapsed());
    }
    holder.rollback().await.expect("the lock is released");
    assert_eq!(scratch.stock(HOT).await, STOCK, "nothing was sold while the row was locked");
    scratch.drop_database().await;
}

/// MariaDB: `sql-coalesce` batches that fail answer every buyer of them 503 and leave nothing
/// behind, whether they fail taking the row locks (a product row held past the lock wait timeout)
/// or after writing their first orders (an idempotency key another transaction is inserting, held
/// past the timeout, under the batch's multi-row insert).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_coalesced_batches_answer_503_and_leave_nothing_on_mariadb() {
    let short = PgSettings { statement_timeout: Duration::from_secs(1), ..settings() };
    let scratch = Scratch::with_settings(SqlBackend::MySql, short).await;
    scratch.stock_products(&[(HOT, STOCK), (200, STOCK)]).await;
    let SqlPool::MySql(pool) = &scratch.books else { unreachable!("a MariaDB scratch") };
    let strategy = build(StrategyKind::SqlCoalesce, &scratch, Duration::ZERO);
    let nothing_left = async || {
        assert_eq!(scratch.number("SELECT COUNT(*) FROM orders").await, 0, "no order, not even a void one");
        assert_eq!(scratch.number("SELECT COUNT(*) FROM order_items").await, 0, "no line");
        assert_eq!((scratch.stock(HOT).await, scratch.stock(200).await), (STOCK, STOCK), "no unit taken");
        assert_eq!(scratch.number("SELECT COUNT(*) FROM products WHERE gate IS NOT NULL").await, 0);
    };
    // The first purchase's batch waits on a lock; the rest queue meanwhile, in order, into the next.
    let all_503 = async |requests: Vec<PurchaseRequest>| {
        let started = Instant::now();
        let mut buyers = Vec::new();
        for request in requests {
            let strategy = Arc::clone(&strategy);
            buyers.push(tokio::spawn(async move { strategy.purchase(&request).await }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for buyer in buyers {
            let answer = buyer.await.expect("no buyer panics");
            assert!(matches!(answer, Err(StrategyError::Unavailable(_))), "{answer:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(8), "answered in {:?}", started.elapsed());
    };

    let mut holder = pool.begin().await.expect("a transaction");
    sqlx::query("SELECT stock FROM products WHERE id = 200 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("the lock");
    all_503(
        (0..6)
            .map(
                |i| {
                    if i % 2 == 0 { request(&[(HOT, 1), (200, 1)], None) } else { request(&[(200, 2)], None) }
                },
            )
            .collect(),
    )
    .await;
    holder.rollback().await.expect("the lock is released");
    nothing_left().await;

    // Behind a batch waiting on product 200, one batch inserts the unkeyed order, then waits on the
    // key the holder is inserting.
    let mut holder = pool.begin().await.expect("a transaction");
    sqlx::query("SELECT stock FROM products WHERE id = 200 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("the lock");
    sqlx::query(
        "INSERT INTO orders (id, strategy, status, idempotency_key, address, phone, email) \
         VALUES (?, 'sql-coalesce', 'confirmed', 'held', '', '', '')",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(&mut *holder)
    .await
    .expect("the key is being inserted");
    all_503(vec![request(&[(200, 1)], None), request(&[(HOT, 1)], None), request(&[(HOT, 1)], Some("held"))])
        .await;
    holder.rollback().await.expect("the key is free again");
    nothing_left().await;

    let placed = strategy.purchase(&request(&[(HOT, 1), (200, 1)], Some("held"))).await.expect("an answer");
    assert!(matches!(placed, PurchaseOutcome::Placed(_)), "the batcher serves the next batch: {placed:?}");
    assert_eq!(scratch.sold().await, (1, 2));
    scratch.drop_database().await;
}

/// MariaDB has no `RETURNING`: when the batch's insert skips an order (its id was voided while
/// in doubt), the batch's ids are read back, and only the orders this transaction wrote take
/// stock. The voided purchase places nothing; its batch mate is sold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_batch_skips_a_voided_order_on_mariadb() {
    let scratch = Scratch::new(SqlBackend::MySql).await;
    scratch.stock_products(&[(1, 5), (HOT, STOCK)]).await;
    let SqlPool::MySql(pool) = &scratch.books else { unreachable!("a MariaDB scratch") };
    let strategy = build(StrategyKind::SqlCoalesce, &scratch, Duration::ZERO);
    let voided = request(&[(HOT, 2)], Some("voided"));
    let fate = checkout_strategies::fence::settle_on(
        &scratch.books,
        StrategyKind::SqlCoalesce,
        voided.order_id,
        "test",
    )
    .await
    .expect("the books answer");
    assert_eq!(fate, checkout_strategies::fence::Doubt::Void);

    // A batch waits on product 1's row while the next two purchases queue into one batch.
    let mut holder = pool.begin().await.expect("a transaction");
    sqlx::query("SELECT stock FROM products WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("the lock");
    let first = {
        let strategy = Arc::clone(&strategy);
        tokio::spawn(async move { strategy.purchase(&request(&[(1, 1)], None)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sold = request(&[(HOT, 3)], Some("sold"));
    let sold_id = sold.order_id;
    let queued: Vec<_> = [voided, sold]
        .into_iter()
        .map(|request| {
            let strategy = Arc::clone(&strategy);
            tokio::spawn(async move { strategy.purchase(&request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.rollback().await.expect("the lock is released");

    assert!(matches!(first.await.expect("no panic"), Ok(PurchaseOutcome::Placed(_))));
    let mut answers = Vec::new();
    for buyer in queued {
        answers.push(buyer.await.expect("no buyer panics"));
    }
    assert!(matches!(answers[0], Err(StrategyError::Unavailable(_))), "the voided id: {:?}", answers[0]);
    assert!(
        matches!(&answers[1], Ok(PurchaseOutcome::Placed(receipt)) if receipt.order_id == sold_id),
        "{:?}",
        answers[1]
    );
    assert_eq!(scratch.stock(HOT).await, STOCK - 3, "only the order written took stock");
    assert_eq!(scratch.sold().await, (2, 4));
    assert_eq!(scratch.number("SELECT COUNT(*) FROM orders WHERE status = 'void'").await, 1);
    assert_eq!(scratch.number("SELECT COUNT(*) FROM orders WHERE idempotency_key = 'voided'").await, 0);
    scratch.drop_database().await;
}

/// `fence::settle_all_on` on MariaDB: a committed order stays, an id nobody wrote is voided for
/// good (a later insert of it collides), and asking again answers the same.
#[tokio::test]
async fn a_batch_in_doubt_is_settled_on_mariadb() {
    use checkout_strategies::fence::{Doubt, settle_all_on};

    let scratch = Scratch::new(SqlBackend::MySql).await;
    scratch.stock_products(&[(HOT, STOCK)]).await;
    let placed = build(StrategyKind::SqlCoalesce, &scratch, Duration::ZERO)
        .purchase(&request(&[(HOT, 1)], None))
        .await
        .expect("an answer");
    let PurchaseOutcome::Placed(receipt) = placed else { panic!("{placed:?}") };
    let (committed, absent) = (receipt.order_id, uuid::Uuid::new_v4());
    for _ in 0..2 {
        let settled = settle_all_on(&scratch.books, StrategyKind::SqlCoalesce, &[committed, absent], "test")
            .await
            .expect("the books answer");
        assert_eq!(settled.len(), 2);
        assert_eq!((settled[&committed], settled[&absent]), (Doubt::Committed, Doubt::Void));
    }
    assert_eq!(scratch.number("SELECT COUNT(*) FROM orders WHERE status = 'void'").await, 1);
    assert_eq!(scratch.sold().await, (1, 1), "the committed order is untouched");
    let empty = settle_all_on(&scratch.books, StrategyKind::SqlCoalesce, &[], "test").await.expect("no ids");
    assert!(empty.is_empty());
    scratch.drop_database().await;
}

/// MariaDB: a deadlock (1213) is classified as a conflict to run again, as PostgreSQL's 40P01.
#[tokio::test]
async fn a_mariadb_deadlock_is_retryable() {
    let scratch = Scratch::new(SqlBackend::MySql).await;
    scratch.stock_products(&[(1, 5), (2, 5)]).await;
    let SqlPool::MySql(pool) = &scratch.books else { unreachable!("a MariaDB scratch") };
    let (mut a, mut b) = (pool.begin().await.unwrap(), pool.begin().await.unwrap());
    sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = 1").execute(&mut *a).await.unwrap();
    sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = 2").execute(&mut *b).await.unwrap();
    let (first, second) = tokio::join!(
        sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = 2").execute(&mut *a),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = 1").execute(&mut *b).await
        }
    );
    let victim = first.err().or(second.err()).expect("InnoDB breaks the cycle");
    let err = checkout_strategies::pg_driver::DbError::from(victim);
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(StrategyError::from(err), StrategyError::Conflict(_)));
    drop((a, b));
    scratch.drop_database().await;
}

/// A reset through either backend's books: the same plan lays out the same catalogue (the seeded
/// random stock, chunked on MariaDB, included), deletes every order and claim, rebaselines what a
/// sale moved, and is the plan read back.
#[tokio::test]
async fn a_reset_lays_out_the_same_catalogue_on_both_backends() {
    let full: StockPlan = serde_json::from_value(serde_json::json!({
        "products": [{"id": 100, "stock": 7}, {"id": 25_001, "stock": 3}],
        "random_products": {"count": 25_000, "seed": 7}
    }))
    .expect("a plan");
    let partial: StockPlan =
        serde_json::from_value(serde_json::json!({"products": [{"id": 100, "stock": 9}]})).expect("a plan");
    let mut books = Vec::new();
    for backend in SqlBackend::ALL {
        let scratch = Scratch::new(backend).await;
        scratch.stock_products(&[(HOT, 5)]).await;
        let atomic = build(StrategyKind::SqlAtomic, &scratch, Duration::ZERO);
        let before = atomic.purchase(&request(&[(HOT, 1)], Some("before"))).await.expect("an answer");
        assert!(matches!(before, PurchaseOutcome::Placed(_)), "{backend}: {before:?}");

        let (laid_out, _) = catalog::reset_on(&scratch.books, &full).await.expect("a reset");
        assert_eq!(scratch.sold().await, (0, 0), "{backend}: a reset deletes every order");
        let placed = atomic.purchase(&request(&[(7, 1)], Some("before"))).await.expect("an answer");
        assert!(matches!(placed, PurchaseOutcome::Placed(_)), "{backend}: the key is free again: {placed:?}");
        let (kept, _) = catalog::reset_on(&scratch.books, &partial).await.expect("a reset");
        let (_, latest) =
            catalog::latest_plan_with_id_on(&scratch.books).await.expect("the books").expect("a plan");
        assert_eq!(latest, partial, "{backend}");
        books.push((
            laid_out.products_written,
            laid_out.products_rebaselined,
            kept.products_written,
            kept.products_rebaselined,
            scratch.number("SELECT COUNT(*) FROM products").await,
            scratch.number("SELECT CAST(SUM(stock) AS SIGNED) FROM products").await,
            scratch
                .number("SELECT COUNT(*) FROM products WHERE stock <> initial_stock OR gate IS NOT NULL")
                .await,
            scratch.stock(HOT).await,
            scratch.stock(25_001).await,
        ));
        scratch.drop_database().await;
    }
    assert_eq!(books[0].0, 25_001, "the random catalogue and one explicit product beyond it");
    assert_eq!(books[0].3, 1, "the product the sale between the resets moved is rebaselined");
    assert_eq!((books[0].6, books[0].7), (0, 9));
    assert_eq!(books[0], books[1], "PostgreSQL, then MariaDB");
}

/// The audit's SQL books read the same on both backends after the same sales.
#[tokio::test]
async fn the_audit_books_read_the_same_on_both_backends() {
    let plan: StockPlan = serde_json::from_value(
        serde_json::json!({"products": [{"id": 100, "stock": 10}, {"id": 200, "stock": 5}]}),
    )
    .expect("a plan");
    let mut books = Vec::new();
    for backend in SqlBackend::ALL {
        let scratch = Scratch::new(backend).await;
        catalog::reset_on(&scratch.books, &plan).await.expect("a reset");
        for (kind, lines) in [
            (StrategyKind::SqlAtomic, &[(HOT, 2)][..]),
            (StrategyKind::SqlForUpdate, &[(HOT, 1), (200, 2)][..]),
            (StrategyKind::SqlNaive, &[(200, 1)][..]),
        ] {
            let answer = build(kind, &scratch, Duration::ZERO).purchase(&request(lines, None)).await;
            assert!(matches!(answer, Ok(PurchaseOutcome::Placed(_))), "{kind} on {backend}: {answer:?}");
        }
        let (ledger, totals) =
            catalog::sql_books_on(&scratch.books, &[HOT, 200, 300]).await.expect("the books");
        let ledger: Vec<_> =
            ledger.iter().map(|product| (product.ledger, product.gate, product.awaiting_sync)).collect();
        books.push((ledger, totals));
        scratch.drop_database().await;
    }
    let (ledger, totals) = &books[0];
    let figures: Vec<_> = ledger
        .iter()
        .map(|(l, _, _)| (l.product_id, l.initial_stock, l.final_stock, l.units_in_orders, l.orders))
        .collect();
    assert_eq!(figures, [(HOT, 10, 7, 3, 2), (200, 5, 2, 3, 2)]);
    assert_eq!((totals.confirmed, totals.voided, totals.orphan_units), (3, 0, 0));
    assert_eq!(books[0], books[1], "PostgreSQL, then MariaDB");
}

/// What the server's reads and listings ask of the books answers the same on both backends.
#[tokio::test]
async fn the_catalogue_reads_the_same_on_both_backends() {
    let plan: StockPlan = serde_json::from_value(
        serde_json::json!({"products": [{"id": 100, "stock": 10}, {"id": 200, "stock": 5}]}),
    )
    .expect("a plan");
    let mut reads = Vec::new();
    for backend in SqlBackend::ALL {
        let scratch = Scratch::new(backend).await;
        let books = catalog::BooksOn(&scratch.books);
        let empty_before = books.is_empty().await.expect("the books");
        catalog::reset_on(&scratch.books, &plan).await.expect("a reset");
        let strategy = build(StrategyKind::SqlForUpdate, &scratch, Duration::ZERO);
        let mut placed = Vec::new();
        for lines in [&[(HOT, 2)][..], &[(HOT, 1), (200, 1)][..]] {
            match strategy.purchase(&request(lines, None)).await {
                Ok(PurchaseOutcome::Placed(receipt)) => placed.push(receipt.order_id),
                other => panic!("{backend}: {other:?}"),
            }
        }
        let mut entries: Vec<_> = books
            .order_entries(10)
            .await
            .expect("the books")
            .into_iter()
            .map(|entry| (entry.order_id, entry.strategy, entry.status))
            .collect();
        entries.sort_by_key(|entry| entry.0);
        let first = placed[0];
        placed.sort();
        assert_eq!(entries.iter().map(|entry| entry.0).collect::<Vec<_>>(), placed, "{backend}");
        let unknown = ProductId::parse(404).expect("an id");
        let view =
            order_store::fetch_order_on(&scratch.books, first).await.expect("the books").expect("an order");
        let missing =
            order_store::fetch_order_on(&scratch.books, uuid::Uuid::new_v4()).await.expect("the books");
        assert!(missing.is_none(), "{backend}");
        let age = chrono::Utc::now() - view.created_at;
        assert!(
            age < chrono::Duration::minutes(1) && age > -chrono::Duration::minutes(1),
            "{backend}: {age}"
        );
        reads.push((
            empty_before,
            books.is_empty().await.expect("the books"),
            books.latest_plan_id().await.expect("the books").is_some(),
            books.stock_of(ProductId::parse(HOT).expect("an id")).await.expect("the books"),
            books.stock_of(unknown).await.expect("the books"),
            entries.iter().map(|entry| (entry.1, entry.2)).collect::<Vec<_>>(),
            (
                view.strategy,
                view.status,
                view.items
                    .iter()
                    .map(|line| (line.product_id.get(), line.quantity.get()))
                    .collect::<Vec<_>>(),
                view.delivery,
                view.user,
                view.idempotency_key,
                view.reason,
            ),
        ));
        scratch.drop_database().await;
    }
    assert_eq!(
        (reads[0].0, reads[0].1, reads[0].2, reads[0].3, reads[0].4),
        (true, false, true, Some(7), None)
    );
    assert_eq!(reads[0], reads[1], "PostgreSQL, then MariaDB");
}

/// A populated catalogue's rows, `(id, stock, initial_stock)` by id.
async fn catalogue(scratch: &Scratch) -> Vec<(i64, i64, i64)> {
    const ROWS: &str = "SELECT id, stock, initial_stock FROM products ORDER BY id";
    match &scratch.books {
        SqlPool::Postgres(pool) => sqlx::query_as(ROWS).fetch_all(pool).await,
        SqlPool::MySql(pool) => sqlx::query_as(ROWS).fetch_all(pool).await,
    }
    .expect("the books")
}

/// Every order and line: counts and a sum that changes when any line goes or comes.
async fn orders_digest(scratch: &Scratch) -> (i64, i64, i64) {
    (
        scratch.number("SELECT COUNT(*) FROM orders").await,
        scratch.number("SELECT COUNT(*) FROM order_items").await,
        scratch
            .number("SELECT CAST(COALESCE(SUM(product_id * 1000 + quantity), 0) AS SIGNED) FROM order_items")
            .await,
    )
}

/// What a reset keeping the catalogue left besides the catalogue: unit pools, unapplied sales,
/// idempotency claims and gates.
async fn leftovers(scratch: &Scratch) -> [i64; 4] {
    [
        scratch.number("SELECT COUNT(*) FROM inventory_units").await,
        scratch.number("SELECT COUNT(*) FROM stock_unapplied").await,
        scratch.number("SELECT COUNT(*) FROM idempotency_claims").await,
        scratch.number("SELECT COUNT(*) FROM products WHERE gate IS NOT NULL").await,
    ]
}

fn kept(products: &[(i64, i64)]) -> StockPlan {
    let products: Vec<_> =
        products.iter().map(|(id, stock)| serde_json::json!({"id": id, "stock": stock})).collect();
    serde_json::from_value(serde_json::json!({"products": products, "keep_catalogue": true})).expect("a plan")
}

/// A reset keeping a populated catalogue, through either backend's books, undoes exactly the run
/// since the last one: the run's orders deleted and history kept, every product the run touched
/// (by its orders, or a gate with no order) back to its stock before the run, the plan's products
/// set over their history, pools, claims and gates cleared, and the plan in force recorded. A
/// second run and reset do the same, and both backends report the same figures.
#[tokio::test]
async fn a_kept_reset_undoes_only_the_run_on_both_backends() {
    use checkout_bench::populate::{self, PopulateArgs};
    const REDIS_GATED: i64 = 9;
    let args = PopulateArgs {
        products: 300,
        orders: 600,
        hot_product: HOT,
        hot_stock: 40,
        min_stock: 50,
        max_stock: 80,
        seed: 3,
        max_items_per_order: 3,
        orders_strategy: StrategyKind::SqlAtomic,
    };
    let mut figures = Vec::new();
    for backend in SqlBackend::ALL {
        let scratch = Scratch::new(backend).await;
        match &scratch.books {
            SqlPool::Postgres(pool) => populate::run(pool, &args).await.map(drop),
            SqlPool::MySql(pool) => populate::run_mysql(pool, &args).await.map(drop),
        }
        .expect("a populated catalogue");
        let populated = catalogue(&scratch).await;
        let history = orders_digest(&scratch).await;
        let history_of = |id: i64| {
            let (_, stock, initial) = populated[usize::try_from(id - 1).expect("an index")];
            initial - stock
        };
        assert!(history_of(HOT) > 0 && history_of(7) > 0, "{backend}: the products have history");

        let (first, in_force) =
            catalog::reset_on(&scratch.books, &kept(&[(HOT, 30)])).await.expect("a reset");
        assert_eq!(
            (first.run_orders_deleted, first.products_restored, first.products_written),
            (Some(0), Some(0), 1),
            "{backend}: populate's orders are history"
        );
        assert_eq!(in_force.random_products.map(|random| random.count), Some(300), "{backend}");
        assert!(!in_force.keep_catalogue, "{backend}: the plan in force is a catalogue");

        // The run: every ported strategy sells, one with an idempotency key, one lays out a unit
        // pool, and a gate moves stock with no order yet (a Redis sale in flight).
        for (kind, lines, key) in [
            (StrategyKind::SqlAtomic, &[(HOT, 2)][..], Some("run-key")),
            (StrategyKind::SqlForUpdate, &[(1, 1), (2, 2)][..], None),
            (StrategyKind::SqlNaive, &[(3, 1)][..], None),
            (StrategyKind::SqlSkipLocked, &[(4, 1)][..], None),
            (StrategyKind::SqlOptimistic, &[(5, 1)][..], None),
            (StrategyKind::SqlCoalesce, &[(6, 3)][..], None),
        ] {
            let answer = build(kind, &scratch, Duration::ZERO).purchase(&request(lines, key)).await;
            assert!(matches!(answer, Ok(PurchaseOutcome::Placed(_))), "{kind} on {backend}: {answer:?}");
        }
        scratch
            .exec(&format!("UPDATE products SET stock = stock - 5, gate = 'redis' WHERE id = {REDIS_GATED}"))
            .await;
        let (_, totals) = catalog::sql_books_on(&scratch.books, &[]).await.expect("the books");
        assert_eq!(totals.confirmed, 6, "{backend}: the audit reads the run's orders alone");
        assert_ne!(leftovers(&scratch).await, [0; 4], "{backend}: the run left a pool, a claim and gates");

        let (second, in_force) =
            catalog::reset_on(&scratch.books, &kept(&[(HOT, 50), (7, 11)])).await.expect("a reset");
        assert_eq!(orders_digest(&scratch).await, history, "{backend}: the run's orders alone are deleted");
        assert_eq!(leftovers(&scratch).await, [0; 4], "{backend}");
        for (before, now) in populated.iter().zip(&catalogue(&scratch).await) {
            let expected = match before.0 {
                HOT => (HOT, 50, 50 + history_of(HOT)),
                7 => (7, 11, 11 + history_of(7)),
                _ => *before,
            };
            assert_eq!(*now, expected, "{backend}: product {} after the first run", before.0);
        }
        let explicit: Vec<_> = in_force.products.iter().map(|p| (p.id.get(), p.stock)).collect();
        assert_eq!(explicit, [(HOT, 50), (7, 11)], "{backend}: this reset's products win");
        let (_, latest) =
            catalog::latest_plan_with_id_on(&scratch.books).await.expect("the books").expect("a plan");
        assert_eq!(latest, in_force, "{backend}: the plan in force is recorded");

        // A second run over the same history: the claim of the first run's key is gone.
        for (kind, lines) in
            [(StrategyKind::SqlAtomic, &[(HOT, 3)][..]), (StrategyKind::SqlForUpdate, &[(7, 2), (1, 1)][..])]
        {
            let answer =
                build(kind, &scratch, Duration::ZERO).purchase(&request(lines, Some(kind.as_str()))).await;
            assert!(matches!(answer, Ok(PurchaseOutcome::Placed(_))), "{kind} on {backend}: {answer:?}");
        }
        let again = build(StrategyKind::SqlAtomic, &scratch, Duration::ZERO)
            .purchase(&request(&[(HOT, 1)], Some("run-key")))
            .await;
        assert!(
            matches!(again, Ok(PurchaseOutcome::Placed(_))),
            "{backend}: a new order, no replay: {again:?}"
        );
        let (third, _) = catalog::reset_on(&scratch.books, &kept(&[(HOT, 50)])).await.expect("a reset");
        assert_eq!(orders_digest(&scratch).await, history, "{backend}");
        let rows = catalogue(&scratch).await;
        assert_eq!(
            rows[usize::try_from(HOT - 1).expect("an index")],
            (HOT, 50, 50 + history_of(HOT)),
            "{backend}"
        );
        assert_eq!(rows[6], (7, 11, 11 + history_of(7)), "{backend}: back to its stock before the run");
        assert_eq!(rows[0], populated[0], "{backend}");
        figures.push(
            [first, second, third].map(|s| (s.run_orders_deleted, s.products_restored, s.products_written)),
        );
        scratch.drop_database().await;
    }
    assert_eq!(
        figures[0],
        [(Some(0), Some(0), 1), (Some(6), Some(8), 2), (Some(3), Some(3), 1)],
        "the run's orders; HOT, 1–6 and the gated product, then HOT, 1 and 7"
    );
    assert_eq!(figures[0], figures[1], "PostgreSQL, then MariaDB");
}

/// One gate per product on either database: once a safe SQL strategy sold a product, the Redis
/// strategies are refused it and take nothing; a product Redis sells is claimed once and every
/// process's Redis strategy (each remembering its own claims) sells it, while the SQL strategies
/// are refused it in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gates_keep_to_their_products_on_both_backends() {
    for backend in SqlBackend::ALL {
        let scratch = Scratch::new(backend).await;
        scratch.stock_products(&[(1, 5), (2, 5)]).await;
        let atomic = build(StrategyKind::SqlAtomic, &scratch, Duration::ZERO);
        let sold = atomic.purchase(&request(&[(1, 1)], None)).await.expect("an answer");
        assert!(matches!(sold, PurchaseOutcome::Placed(_)), "{backend}: {sold:?}");
        for kind in [StrategyKind::RedisLua, StrategyKind::RedisDecr] {
            let refused = build(kind, &scratch, Duration::ZERO)
                .purchase(&request(&[(1, 1)], None))
                .await
                .expect("an answer");
            assert!(
                matches!(refused, PurchaseOutcome::GateConflict { gate: Gate::Postgres, .. }),
                "{kind} on {backend}: {refused:?}"
            );
        }
        // Two processes' strategies: the second finds the product already Redis's.
        for kind in [StrategyKind::RedisLua, StrategyKind::RedisDecr, StrategyKind::RedisLua] {
            let placed = build(kind, &scratch, Duration::ZERO)
                .purchase(&request(&[(2, 1)], None))
                .await
                .expect("an answer");
            assert!(matches!(placed, PurchaseOutcome::Placed(_)), "{kind} on {backend}: {placed:?}");
        }
        let refused = atomic.purchase(&request(&[(2, 1)], None)).await.expect("an answer");
        assert!(
            matches!(refused, PurchaseOutcome::GateConflict { gate: Gate::Redis, .. }),
            "sql-atomic on {backend}: {refused:?}"
        );
        assert_eq!(
            (scratch.stock(1).await, scratch.stock(2).await),
            (4, 2),
            "{backend}: refusals took nothing"
        );
        assert_eq!(scratch.sold().await, (4, 4), "{backend}");
        scratch.drop_database().await;
    }
}

/// A MariaDB connection keeps every statement a batch writer's many sizes need: evicting one
/// sends `COM_STMT_CLOSE`, which the server never answers, and the next command then waits for
/// its delayed ACK (`backends::MYSQL_STATEMENT_CACHE`). Six hundred distinct texts on one
/// connection close none.
#[tokio::test]
async fn a_mariadb_connection_keeps_its_prepared_statements() {
    const CLOSED: &str = "SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM information_schema.SESSION_STATUS \
                          WHERE VARIABLE_NAME = 'COM_STMT_CLOSE'";
    let pool = mysql_pool("mysql://root@127.0.0.1:3306", settings()).expect("a MySQL URL");
    let mut connection = pool.acquire().await.expect("a connection");
    let closed_before: i64 = sqlx::query_scalar(CLOSED).fetch_one(&mut *connection).await.expect("a status");
    for size in 1..=600 {
        let text = format!("SELECT ? + {size}");
        let sum: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(text))
            .bind(1_i64)
            .fetch_one(&mut *connection)
            .await
            .expect("an answer");
        assert_eq!(sum, 1 + size);
    }
    let closed_after: i64 = sqlx::query_scalar(CLOSED).fetch_one(&mut *connection).await.expect("a status");
    assert_eq!(closed_after, closed_before, "statements evicted from the connection's cache");
}
