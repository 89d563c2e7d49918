//! `server populate` on MariaDB (`populate::run_mysql`): the same catalogue, history and plan as
//! on PostgreSQL, read back with independent SQL, the keys in place after the load, and a second
//! populate replacing the first. Each test has a scratch database of its own, dropped at its end.

use checkout_bench::populate::{self, PopulateArgs};
use checkout_strategies::backends::{PgSettings, mysql_pool, prepare_database};
use checkout_strategies::{OrderStatus, ProductId, SqlPool, StrategyKind, catalog, order_store};
use sqlx::MySqlPool;
use sqlx::migrate::MigrateDatabase;
use uuid::Uuid;

fn args(products: u64, orders: u64) -> PopulateArgs {
    PopulateArgs {
        products,
        orders,
        hot_product: 100,
        hot_stock: 10_000,
        min_stock: 30_000,
        max_stock: 100_000,
        seed: 7,
        max_items_per_order: 3,
        orders_strategy: StrategyKind::SqlAtomic,
    }
}

struct Scratch {
    url: String,
    pool: MySqlPool,
}

impl Scratch {
    async fn new() -> Self {
        let url = format!("mysql://root@127.0.0.1:3306/populate_{}", Uuid::new_v4().simple());
        prepare_database(&url).await.expect("the scratch database is created and migrated");
        let pool = mysql_pool(&url, PgSettings::default()).expect("a MySQL URL");
        Self { url, pool }
    }

    fn books(&self) -> SqlPool {
        SqlPool::MySql(self.pool.clone())
    }

    async fn number(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap_or_else(|err| panic!("{sql}: {err}"))
    }

    async fn drop_database(self) {
        self.pool.close().await;
        sqlx::MySql::drop_database(&self.url).await.expect("the scratch database is dropped");
    }
}

/// Every key, index and constraint of the populated tables, as MariaDB's catalogue lists them.
async fn schema(pool: &MySqlPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT CONCAT_WS(' ', TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME)
         FROM information_schema.STATISTICS
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('products', 'orders', 'order_items')
         UNION ALL
         SELECT CONCAT_WS(' ', TABLE_NAME, CONSTRAINT_NAME, CONSTRAINT_TYPE)
         FROM information_schema.TABLE_CONSTRAINTS
         WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME IN ('products', 'orders', 'order_items')
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Row counts and digests of the three tables (order-independent: a sum of row checksums).
async fn fingerprint(pool: &MySqlPool) -> Vec<(i64, i64)> {
    let mut tables = Vec::new();
    for sql in [
        "SELECT COUNT(*), CAST(COALESCE(SUM(CRC32(CONCAT_WS(':', id, stock, initial_stock))), 0) AS SIGNED)
         FROM products",
        "SELECT COUNT(*), CAST(COALESCE(SUM(CRC32(CONCAT_WS(':', HEX(id), strategy, status, user_name, address,
                phone, email))), 0) AS SIGNED) FROM orders",
        "SELECT COUNT(*), CAST(COALESCE(SUM(CRC32(CONCAT_WS(':', HEX(order_id), product_id, quantity))), 0)
                AS SIGNED) FROM order_items",
    ] {
        tables.push(sqlx::query_as(sql).fetch_one(pool).await.unwrap());
    }
    tables
}

#[tokio::test]
async fn mariadb_loads_the_plan_and_orders_with_balanced_books() {
    let scratch = Scratch::new().await;
    let schema_before = schema(&scratch.pool).await;
    let args = args(2_000, 5_000);
    let plan = args.plan().unwrap();

    let summary = populate::run_mysql(&scratch.pool, &args).await.unwrap();

    assert_eq!(
        scratch.number("SELECT COUNT(*) FROM products").await,
        2_000,
        "the hot product is one of them"
    );
    let planned: i64 = (1..=2_000).map(|id| plan.stock_of(ProductId::parse(id).unwrap()).unwrap()).sum();
    let stock = scratch.number("SELECT CAST(SUM(stock) AS SIGNED) FROM products").await;
    assert_eq!(stock, planned, "the shelf holds the plan's stock");
    assert_eq!(scratch.number("SELECT stock FROM products WHERE id = 100").await, 10_000);
    assert_eq!(scratch.number("SELECT COUNT(*) FROM orders").await, 5_000);
    let items = scratch.number("SELECT COUNT(*) FROM order_items").await;
    assert_eq!(
        (summary.products.rows, summary.orders.rows, summary.order_items.rows),
        (2_000, 5_000, u64::try_from(items).unwrap())
    );
    assert_eq!(summary.total.rows, 7_000 + u64::try_from(items).unwrap());

    let (fewest, most, orders_with_items): (i64, i64, i64) = sqlx::query_as(
        "SELECT MIN(n), MAX(n), COUNT(*) FROM (SELECT COUNT(*) AS n FROM order_items GROUP BY order_id) AS o",
    )
    .fetch_one(&scratch.pool)
    .await
    .unwrap();
    assert_eq!(orders_with_items, 5_000, "every order has items");
    assert_eq!((fewest, most), (1, 3), "1 to max-items-per-order distinct products per order");
    let orphans = scratch
        .number(
            "SELECT COUNT(*) FROM order_items i WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id)
                OR i.product_id NOT BETWEEN 1 AND 2000 OR i.quantity NOT BETWEEN 1 AND 3",
        )
        .await;
    assert_eq!(orphans, 0, "every line names a loaded order and a product in range");
    let plain = scratch
        .number(
            "SELECT COUNT(*) FROM orders WHERE status = 'confirmed' AND strategy = 'sql-atomic'
             AND idempotency_key IS NULL AND reason IS NULL AND user_name LIKE 'user-%'
             AND email LIKE 'user-%@example.com'",
        )
        .await;
    assert_eq!(plain, 5_000, "generated orders are confirmed, unkeyed and attributed to sql-atomic");
    let unbalanced = scratch
        .number(
            "SELECT COUNT(*) FROM products p WHERE p.initial_stock <> p.stock
                + (SELECT COALESCE(SUM(quantity), 0) FROM order_items i WHERE i.product_id = p.id)",
        )
        .await;
    assert_eq!(unbalanced, 0, "initial stock = stock + units the generated orders hold");

    assert_eq!(
        schema(&scratch.pool).await,
        schema_before,
        "keys and indexes are the migrations' after the load"
    );
    let idempotency_key = scratch
        .number(
            "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()
             AND TABLE_NAME = 'orders' AND INDEX_NAME = 'orders_idempotency_key' AND NON_UNIQUE = 0",
        )
        .await;
    assert_eq!(idempotency_key, 1, "the idempotency key is unique again");
    let reused = sqlx::query(
        "INSERT INTO orders (id, strategy, status, idempotency_key, address, phone, email)
         VALUES (UNHEX(REPLACE(UUID(), '-', '')), 'sql-atomic', 'confirmed', 'k', '', '', ''),
                (UNHEX(REPLACE(UUID(), '-', '')), 'sql-atomic', 'confirmed', 'k', '', '', '')",
    )
    .execute(&scratch.pool)
    .await;
    assert!(reused.is_err(), "a reused idempotency key is refused after the load");

    // The generated orders are history: the audit reads the run's orders only, and there are none.
    let (rows, totals) = catalog::sql_books_on(&scratch.books(), &[100]).await.unwrap();
    let ledger: Vec<_> = rows.iter().map(|row| row.ledger).collect();
    assert_eq!(ledger.len(), 1, "only the tracked product: {ledger:?}");
    assert_eq!(
        (ledger[0].initial_stock, ledger[0].final_stock, ledger[0].units_in_orders),
        (10_000, 10_000, 0),
        "the hot product's history is out of its initial stock"
    );
    assert_eq!((totals.confirmed, totals.pending, totals.cancelled, totals.duplicated), (0, 0, 0, 0));
    let (_, recorded) = catalog::latest_plan_with_id_on(&scratch.books()).await.unwrap().unwrap();
    assert_eq!(recorded, plan);
    scratch.drop_database().await;
}

#[tokio::test]
async fn mariadb_without_orders_initial_stock_is_the_stock() {
    let scratch = Scratch::new().await;
    let summary = populate::run_mysql(&scratch.pool, &args(100, 0)).await.unwrap();

    assert_eq!((summary.products.rows, summary.orders.rows, summary.order_items.rows), (100, 0, 0));
    assert_eq!(scratch.number("SELECT COUNT(*) FROM products").await, 100);
    assert_eq!(scratch.number("SELECT COUNT(*) FROM products WHERE stock <> initial_stock").await, 0);
    assert_eq!(scratch.number("SELECT COUNT(*) FROM orders").await, 0);
    scratch.drop_database().await;
}

#[tokio::test]
async fn mariadb_a_hot_product_outside_the_range_is_added() {
    let scratch = Scratch::new().await;
    let args = PopulateArgs { hot_product: 1_000, hot_stock: 7, ..args(50, 200) };

    let summary = populate::run_mysql(&scratch.pool, &args).await.unwrap();

    assert_eq!(summary.products.rows, 51);
    assert_eq!(scratch.number("SELECT COUNT(*) FROM products").await, 51);
    let hot: (i64, i64) = sqlx::query_as("SELECT stock, initial_stock FROM products WHERE id = 1000")
        .fetch_one(&scratch.pool)
        .await
        .unwrap();
    assert_eq!(hot, (7, 7), "orders only draw from 1..=N");
    scratch.drop_database().await;
}

#[tokio::test]
async fn mariadb_a_second_populate_replaces_the_first() {
    let scratch = Scratch::new().await;
    populate::run_mysql(&scratch.pool, &args(500, 1_000)).await.unwrap();
    let first = fingerprint(&scratch.pool).await;
    assert_eq!(first.iter().map(|&(rows, _)| rows).take(2).collect::<Vec<_>>(), [500, 1_000]);
    // What a run leaves behind that populate clears, as PostgreSQL's TRUNCATE does.
    sqlx::raw_sql(
        "INSERT INTO idempotency_claims (idempotency_key, order_id, strategy, fingerprint)
             VALUES ('k-1', UNHEX(REPLACE(UUID(), '-', '')), 'sql-atomic', 'f');
         INSERT INTO inventory_units (product_id, unit_no) VALUES (1, 1)",
    )
    .execute(&scratch.pool)
    .await
    .unwrap();

    populate::run_mysql(&scratch.pool, &args(500, 1_000)).await.unwrap();
    assert_eq!(fingerprint(&scratch.pool).await, first, "a second run replaces the rows with the same ones");
    assert_eq!(scratch.number("SELECT COUNT(*) FROM idempotency_claims").await, 0);
    assert_eq!(scratch.number("SELECT COUNT(*) FROM inventory_units").await, 0);
    assert_eq!(scratch.number("SELECT COUNT(*) FROM stock_plans").await, 2, "each populate records its plan");

    populate::run_mysql(&scratch.pool, &PopulateArgs { seed: 8, ..args(500, 1_000) }).await.unwrap();
    let other = fingerprint(&scratch.pool).await;
    for (table, (a, b)) in ["products", "orders", "order_items"].iter().zip(first.iter().zip(&other)) {
        assert_ne!(a.1, b.1, "another seed, other {table}");
    }
    scratch.drop_database().await;
}

#[tokio::test]
async fn mariadb_generated_orders_read_back_like_real_ones() {
    let scratch = Scratch::new().await;
    let args = PopulateArgs { orders_strategy: StrategyKind::SqlForUpdate, ..args(300, 50) };
    populate::run_mysql(&scratch.pool, &args).await.unwrap();

    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM orders").fetch_all(&scratch.pool).await.unwrap();
    assert_eq!(ids.len(), 50);
    for id in ids {
        let order =
            order_store::fetch_order_on(&scratch.books(), id).await.unwrap().expect("the order exists");
        assert_eq!(order.strategy, StrategyKind::SqlForUpdate);
        assert_eq!(order.status, OrderStatus::Confirmed);
        assert!((1..=3).contains(&order.items.len()));
        assert_eq!(id.get_version_num(), 4);
    }
    scratch.drop_database().await;
}

#[tokio::test]
async fn mariadb_bad_flags_are_refused_and_change_nothing() {
    let scratch = Scratch::new().await;
    populate::run_mysql(&scratch.pool, &args(300, 300)).await.unwrap();
    let before = fingerprint(&scratch.pool).await;

    let inverted = PopulateArgs { min_stock: 10, max_stock: 9, ..args(300, 300) };
    let err = populate::run_mysql(&scratch.pool, &inverted).await.unwrap_err().to_string();
    assert!(err.contains("--min-stock") && err.contains("--max-stock"), "{err}");
    let err = populate::run_mysql(&scratch.pool, &args(0, 300)).await.unwrap_err();
    assert!(err.to_string().contains("--products"), "{err}");

    assert_eq!(fingerprint(&scratch.pool).await, before);
    assert_eq!(scratch.number("SELECT COUNT(*) FROM stock_plans").await, 1);
    scratch.drop_database().await;
}
