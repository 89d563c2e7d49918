//! `server populate`: the catalogue it loads matches the plan it records, generated orders keep
//! the books balanced and read back like real ones, the same seed gives the same rows, and bad
//! flags change nothing.

use checkout_bench::populate::{self, PopulateArgs};
use checkout_strategies::{OrderStatus, ProductId, StrategyKind, catalog, order_store};
use sqlx::PgPool;
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

/// Digests of every row of the three tables, ordered by key.
async fn fingerprint(pool: &PgPool) -> [Option<String>; 3] {
    let products: Option<String> = sqlx::query_scalar(
        "SELECT md5(string_agg(concat_ws(':', id, stock, initial_stock), ',' ORDER BY id)) FROM products",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let orders: Option<String> = sqlx::query_scalar(
        "SELECT md5(string_agg(concat_ws(':', id, strategy, status, user_name, address, phone, email), ','
                    ORDER BY id)) FROM orders",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let items: Option<String> = sqlx::query_scalar(
        "SELECT md5(string_agg(concat_ws(':', order_id, product_id, quantity), ','
                    ORDER BY order_id, product_id)) FROM order_items",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    [products, orders, items]
}

/// Every key, index and constraint of the populated tables, as PostgreSQL prints them.
async fn schema(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE tablename IN ('products', 'orders', 'order_items')
         UNION ALL
         SELECT format('%s %s %s valid=%s', conrelid::regclass, conname, pg_get_constraintdef(oid), convalidated)
         FROM pg_constraint WHERE conrelid IN ('products'::regclass, 'orders'::regclass, 'order_items'::regclass)
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    let sql = match table {
        "products" => "SELECT COUNT(*) FROM products",
        "orders" => "SELECT COUNT(*) FROM orders",
        "order_items" => "SELECT COUNT(*) FROM order_items",
        _ => panic!("no table {table}"),
    };
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn stock_and_initial(pool: &PgPool, id: i64) -> (i64, i64) {
    sqlx::query_as("SELECT stock, initial_stock FROM products WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn loads_the_plan_and_orders_with_balanced_books(pool: PgPool) {
    let schema_before = schema(&pool).await;
    let args = args(2_000, 5_000);
    let plan = args.plan().unwrap();

    let summary = populate::run(&pool, &args).await.unwrap();

    assert_eq!(count(&pool, "products").await, 2_000, "the hot product 100 is one of the 2,000");
    assert_eq!(count(&pool, "orders").await, 5_000);
    let items = count(&pool, "order_items").await;
    assert_eq!(
        (summary.products.rows, summary.orders.rows, summary.order_items.rows),
        (2_000, 5_000, u64::try_from(items).unwrap())
    );
    assert_eq!(summary.total.rows, 7_000 + u64::try_from(items).unwrap());
    assert_eq!(schema(&pool).await, schema_before, "keys and indexes come back as the migrations made them");

    for id in [1, 2, 99, 101, 1_999, 2_000] {
        let (stock, _) = stock_and_initial(&pool, id).await;
        assert_eq!(Some(stock), plan.stock_of(ProductId::parse(id).unwrap()), "stock of product {id}");
        assert!((30_000..=100_000).contains(&stock));
    }
    assert_eq!(stock_and_initial(&pool, 100).await.0, 10_000, "the hot product has its own stock");

    let (fewest, most, orders_with_items): (i64, i64, i64) = sqlx::query_as(
        "SELECT MIN(n), MAX(n), COUNT(*) FROM (SELECT COUNT(*) AS n FROM order_items GROUP BY order_id) AS o",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(orders_with_items, 5_000, "every order has items");
    assert_eq!((fewest, most), (1, 3), "1 to max-items-per-order distinct products per order");
    let out_of_range: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM order_items WHERE product_id NOT BETWEEN 1 AND 2000 OR quantity NOT BETWEEN 1 AND 3",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(out_of_range, 0);
    let plain: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders WHERE status = 'confirmed' AND strategy = 'sql-atomic'
         AND idempotency_key IS NULL AND reason IS NULL AND user_name LIKE 'user-%' AND email LIKE 'user-%@example.com'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(plain, 5_000, "generated orders are confirmed, unkeyed and attributed to sql-atomic");

    let ledger: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT p.id, p.initial_stock, p.stock, SUM(i.quantity)::bigint
         FROM products p JOIN order_items i ON i.product_id = p.id GROUP BY p.id ORDER BY p.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(ledger.len() > 1_000, "most products are held by some order: {}", ledger.len());
    for &(id, initial, stock, units) in &ledger {
        assert_eq!(initial, stock + units, "books of {id}");
        assert_eq!(
            Some(stock),
            plan.stock_of(ProductId::parse(id).unwrap()),
            "orders are history: stock stays the plan's"
        );
    }
    // The generated orders are history: the audit reads the run's orders only, and there are none.
    let (rows, totals) = catalog::sql_books(&pool, &[100]).await.unwrap();
    let ledger: Vec<_> = rows.iter().map(|row| row.ledger).collect();
    assert_eq!(ledger.len(), 1, "only the tracked product: {ledger:?}");
    assert_eq!(
        (ledger[0].initial_stock, ledger[0].final_stock, ledger[0].units_in_orders),
        (10_000, 10_000, 0),
        "the hot product's history is out of its initial stock"
    );
    assert_eq!((totals.confirmed, totals.pending, totals.cancelled, totals.duplicated), (0, 0, 0, 0));
    assert_eq!(catalog::latest_plan(&pool).await.unwrap(), Some(plan));
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn generated_orders_read_back_like_real_ones(pool: PgPool) {
    let args = populate::PopulateArgs { orders_strategy: StrategyKind::SqlForUpdate, ..args(300, 50) };
    populate::run(&pool, &args).await.unwrap();

    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM orders").fetch_all(&pool).await.unwrap();
    for id in ids {
        let order = order_store::fetch_order(&pool, id).await.unwrap().expect("the order exists");
        assert_eq!(order.strategy, StrategyKind::SqlForUpdate);
        assert_eq!(order.status, OrderStatus::Confirmed);
        assert!((1..=3).contains(&order.items.len()));
        assert_eq!(id.get_version_num(), 4);
    }
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_hot_product_outside_the_range_is_added(pool: PgPool) {
    let args = PopulateArgs { hot_product: 1_000, hot_stock: 7, ..args(50, 200) };

    let summary = populate::run(&pool, &args).await.unwrap();

    assert_eq!(summary.products.rows, 51);
    assert_eq!(count(&pool, "products").await, 51);
    assert_eq!(stock_and_initial(&pool, 1_000).await, (7, 7), "orders only draw from 1..=N");
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM products p WHERE p.initial_stock <> p.stock
             + (SELECT COALESCE(SUM(quantity), 0) FROM order_items i WHERE i.product_id = p.id)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unbalanced, 0);
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn without_orders_initial_stock_is_the_stock(pool: PgPool) {
    let summary = populate::run(&pool, &args(100, 0)).await.unwrap();

    assert_eq!((summary.products.rows, summary.orders.rows, summary.order_items.rows), (100, 0, 0));
    let moved: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE stock <> initial_stock")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(moved, 0);

    // What each order line's foreign-key check runs: with no orders loaded, it must still find
    // an order through the primary key once a run has written thousands, not scan them all.
    let plan: serde_json::Value = sqlx::query_scalar(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM ONLY orders x \
         WHERE id = '00000000-0000-0000-0000-000000000001'::uuid FOR KEY SHARE OF x",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let scan = &plan[0]["Plan"]["Plans"][0]["Node Type"];
    assert_eq!(scan, "Index Scan", "an order is found by its key on an empty catalogue: {plan}");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn the_same_seed_gives_the_same_rows(pool: PgPool) {
    populate::run(&pool, &args(500, 1_000)).await.unwrap();
    let first = fingerprint(&pool).await;
    assert!(first.iter().all(Option::is_some));

    populate::run(&pool, &args(500, 1_000)).await.unwrap();
    assert_eq!(fingerprint(&pool).await, first, "a second run replaces the rows with the same ones");

    populate::run(&pool, &PopulateArgs { seed: 8, ..args(500, 1_000) }).await.unwrap();
    let other = fingerprint(&pool).await;
    for (table, (a, b)) in ["products", "orders", "order_items"].iter().zip(first.iter().zip(&other)) {
        assert_ne!(a, b, "another seed, other {table}");
    }
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn bad_flags_are_refused_and_change_nothing(pool: PgPool) {
    populate::run(&pool, &args(300, 300)).await.unwrap();
    let before = fingerprint(&pool).await;
    let plan = catalog::latest_plan(&pool).await.unwrap();

    let inverted = PopulateArgs { min_stock: 10, max_stock: 9, ..args(300, 300) };
    let err = populate::run(&pool, &inverted).await.unwrap_err().to_string();
    assert!(err.contains("--min-stock") && err.contains("--max-stock"), "{err}");
    let err = populate::run(&pool, &PopulateArgs { hot_product: 0, ..args(300, 300) }).await.unwrap_err();
    assert!(err.to_string().contains("--hot-product"), "{err}");
    let err = populate::run(&pool, &args(0, 300)).await.unwrap_err();
    assert!(err.to_string().contains("--products"), "{err}");

    assert_eq!(fingerprint(&pool).await, before);
    assert_eq!(catalog::latest_plan(&pool).await.unwrap(), plan);
}
