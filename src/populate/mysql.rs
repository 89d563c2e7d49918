//! [`run_mysql`]: populate on MariaDB, through multi-row `INSERT`s.
//!
//! sqlx leaves a server's `LOAD DATA LOCAL INFILE` file request unanswered, so rows travel as
//! `INSERT … VALUES (…),(…),…` statements of about [`STATEMENT_BYTES`] each, spelled by the same
//! generator that writes PostgreSQL's `COPY` rows.
//!
//! InnoDB cannot give PostgreSQL's all-or-nothing: `TRUNCATE` and every `ALTER TABLE` commit on
//! their own. The tables are emptied first, then filled in one transaction with `unique_checks`
//! and `foreign_key_checks` off, since the generated rows are consistent by construction: no order
//! line probes its order, no unique key is checked row by row, and into an emptied table InnoDB
//! writes one undo record for the table rather than one per row. Measured at 200,000 products and
//! 400,000 orders (debug build, busy two-core machine), that halves the load, 38 s to 17-18 s,
//! nearly all of it in `order_items`. The keys stay in place: dropping and adding them back would
//! be DDL, each statement committed apart, and a failure between the two would leave the tables
//! without them. A failure during the load leaves the tables empty and the previous plan
//! recorded; a second populate loads them again.

use std::time::Instant;

use anyhow::Context;
use checkout_strategies::catalog;
use indicatif::ProgressBar;
use sqlx::{ConnectOptions, Connection, MySqlConnection, MySqlPool};

use super::generator::{OrderGenerator, ProductRows, tally};
use super::rows::RowFormat;
use super::{PopulateArgs, PopulateSummary, TableLoad, progress, spinner};

/// Bytes of one `INSERT`: thousands of rows a round trip, far below the 16 MiB
/// `max_allowed_packet` of MariaDB's defaults, and the one buffer populate holds.
const STATEMENT_BYTES: usize = 1 << 20;

/// Emptied before the load: the three tables populate fills, and what refers to their orders.
/// Children first, though with `foreign_key_checks` off InnoDB would truncate in any order.
const EMPTIED: [&str; 6] = [
    "TRUNCATE TABLE inventory_units",
    "TRUNCATE TABLE stock_unapplied",
    "TRUNCATE TABLE order_items",
    "TRUNCATE TABLE orders",
    "TRUNCATE TABLE idempotency_claims",
    "TRUNCATE TABLE products",
];

/// [`super::run`] on MariaDB: replaces the catalogue with the one `args` describes and records its
/// plan. Readers see the old catalogue, then empty tables, then the new catalogue once the load
/// commits.
///
/// # Errors
/// When a flag is out of range (before anything is touched), or MariaDB fails; after the tables
/// were emptied, a failure leaves them empty.
pub async fn run_mysql(pool: &MySqlPool, args: &PopulateArgs) -> anyhow::Result<PopulateSummary> {
    let plan = args.plan()?;
    let started = Instant::now();
    let orders = OrderGenerator::new(args);
    let held = tally(&orders, args.products);
    let tallied = started.elapsed();

    // A connection of its own, as on PostgreSQL: the pool's connections carry the purchases'
    // statement limit, and its slow-statement warnings would bury the summary.
    let options = pool.connect_options().as_ref().clone().disable_statement_logging();
    let mut conn = options.connect().await.context("cannot reach MariaDB")?;
    // Checks off for the session (see the module comment); `TRUNCATE` of a table other tables'
    // foreign keys name needs them off too.
    sqlx::query("SET SESSION max_statement_time = 0, foreign_key_checks = 0, unique_checks = 0")
        .execute(&mut conn)
        .await?;
    for statement in EMPTIED {
        sqlx::query(statement).execute(&mut conn).await.with_context(|| format!("{statement} failed"))?;
    }

    let mut tx = conn.begin().await?;
    let products = load_products(&mut tx, &ProductRows::new(args, &held)).await?;
    drop(held);
    let (orders_load, items_load) = if args.orders > 0 {
        (load_orders(&mut tx, &orders).await?, load_order_items(&mut tx, &orders).await?)
    } else {
        (TableLoad::default(), TableLoad::default())
    };
    // The generated orders are history, as on PostgreSQL.
    catalog::record_plan_keeping_history_mysql(&mut tx, &plan).await?;

    let built = Instant::now();
    let spinner = spinner("committing and analysing");
    tx.commit().await.context("cannot commit the new catalogue")?;
    // Only the tables populate filled, as on PostgreSQL (`ANALYZE TABLE` commits on its own, so
    // it follows the load). InnoDB probes foreign keys through the index whatever the statistics
    // say, so an empty `orders` has nothing to fear from them here; it is skipped to keep the
    // two servers' populate alike.
    let analyze = if args.orders > 0 {
        "ANALYZE TABLE products, orders, order_items"
    } else {
        "ANALYZE TABLE products"
    };
    sqlx::raw_sql(analyze).execute(&mut conn).await.context("ANALYZE TABLE failed")?;
    let indexes = built.elapsed();
    spinner.finish_and_clear();
    conn.close().await?;

    Ok(PopulateSummary::report(started, tallied, [products, orders_load, items_load], indexes))
}

async fn load_products(conn: &mut MySqlConnection, products: &ProductRows<'_>) -> anyhow::Result<TableLoad> {
    let started = Instant::now();
    let bar = progress("products", products.count);
    let written = insert_rows(
        conn,
        "INSERT INTO products (id, stock, initial_stock) VALUES ",
        products.count,
        |i, out| products.write(i, RowFormat::SqlValues, out),
        &bar,
    )
    .await
    .context("INSERT INTO products failed")?;
    bar.finish_and_clear();
    Ok(TableLoad { rows: written, elapsed: started.elapsed() })
}

async fn load_orders(conn: &mut MySqlConnection, orders: &OrderGenerator) -> anyhow::Result<TableLoad> {
    let started = Instant::now();
    let bar = progress("orders", orders.count);
    let written = insert_rows(
        conn,
        "INSERT INTO orders (id, strategy, status, user_name, address, phone, email) VALUES ",
        orders.count,
        |i, out| orders.order(i).write_order(orders.strategy, RowFormat::SqlValues, out),
        &bar,
    )
    .await
    .context("INSERT INTO orders failed")?;
    bar.finish_and_clear();
    Ok(TableLoad { rows: written, elapsed: started.elapsed() })
}

async fn load_order_items(conn: &mut MySqlConnection, orders: &OrderGenerator) -> anyhow::Result<TableLoad> {
    let started = Instant::now();
    // The bar counts orders: their line count is only known once each is generated.
    let bar = progress("order_items", orders.count);
    let written = insert_rows(
        conn,
        "INSERT INTO order_items (order_id, product_id, quantity) VALUES ",
        orders.count,
        |i, out| orders.order(i).write_items(RowFormat::SqlValues, out),
        &bar,
    )
    .await
    .context("INSERT INTO order_items failed")?;
    bar.finish_and_clear();
    Ok(TableLoad { rows: written, elapsed: started.elapsed() })
}

/// Sends `head` (`INSERT INTO … VALUES `) followed by the tuples `write(i, buf)` appends for
/// `i in 0..count`, one statement per [`STATEMENT_BYTES`]; `bar` advances by the `i`s each
/// statement carried. Returns the rows inserted.
async fn insert_rows(
    conn: &mut MySqlConnection,
    head: &str,
    count: u64,
    mut write: impl FnMut(u64, &mut Vec<u8>),
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut statement = Vec::with_capacity(STATEMENT_BYTES + 4096);
    let (mut written, mut carried) = (0, 0);
    for i in 0..count {
        if statement.is_empty() {
            statement.extend_from_slice(head.as_bytes());
        }
        write(i, &mut statement);
        carried += 1;
        if statement.len() >= STATEMENT_BYTES || i + 1 == count {
            // The tuples are numbers, hex literals and generated ASCII text without quotes
            // (`rows::Row`): nothing from outside.
            let sql = std::str::from_utf8(&statement).context("a generated row is not UTF-8")?;
            written += sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await?.rows_affected();
            statement.clear();
            bar.inc(carried);
            carried = 0;
        }
    }
    Ok(written)
}
