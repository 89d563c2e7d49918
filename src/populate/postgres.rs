//! [`run`]: populate on PostgreSQL, every table through `COPY` in one transaction.
//!
//! Loading into indexed tables costs one random B-tree insert per row and one foreign-key probe
//! per order line, so the keys and indexes of the three tables are dropped before `COPY` and
//! rebuilt after from the definitions PostgreSQL reports, under the same names: at the seed's scale
//! on two cores that is about 2 minutes instead of 18. The tables were truncated in the same
//! transaction, which lets `COPY … FREEZE` write rows already frozen, so no vacuum rewrites them
//! later.

use std::time::Instant;

use anyhow::Context;
use checkout_strategies::catalog::{self, copy_in};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use super::generator::{OrderGenerator, ProductRows, tally};
use super::rows::RowFormat;
use super::{PopulateArgs, PopulateSummary, TableLoad, progress, spinner};

/// The tables populate replaces, in the order their rows are written.
const TABLES: [&str; 3] = ["products", "orders", "order_items"];

/// Replaces the catalogue with the one `args` describes and records its plan, in one transaction:
/// readers see the old catalogue or the new one, and a failure leaves the old one in place.
///
/// # Errors
/// When a flag is out of range (before anything is touched), or PostgreSQL fails.
pub async fn run(pool: &PgPool, args: &PopulateArgs) -> anyhow::Result<PopulateSummary> {
    let plan = args.plan()?;
    let started = Instant::now();
    let orders = OrderGenerator::new(args);
    let held = tally(&orders, args.products);
    let tallied = started.elapsed();

    // A connection of its own: the load's statements run for minutes by design, and the pool's
    // slow-statement warnings would bury the summary.
    let options = pool.connect_options().as_ref().clone().disable_statement_logging();
    let mut conn = options.connect().await.context("cannot reach PostgreSQL")?;
    let mut tx = conn.begin().await?;
    // A load of millions of rows outlives the per-statement timeout meant for purchases.
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    sqlx::query(
        "TRUNCATE inventory_units, stock_unapplied, order_items, orders, idempotency_claims, products",
    )
    .execute(&mut *tx)
    .await?;
    let keys = Keys::read(&mut tx).await?;
    keys.drop_all(&mut tx).await?;

    let products = load_products(&mut tx, &ProductRows::new(args, &held)).await?;
    drop(held);
    let (orders_load, items_load) = if args.orders > 0 {
        (load_orders(&mut tx, &orders).await?, load_order_items(&mut tx, &orders).await?)
    } else {
        (TableLoad::default(), TableLoad::default())
    };

    let rebuilt = Instant::now();
    let spinner = spinner("rebuilding keys and indexes");
    keys.create_all(&mut tx).await?;
    // Fresh statistics, or the first audit plans its joins over "empty" tables. An empty table is
    // left unanalysed, though: statistics that say "no rows" make PostgreSQL plan the order lines'
    // foreign-key check as a sequential scan of `orders`, and a server's pooled connections keep
    // that plan while a run fills the table (with autovacuum off nothing replans it), so every
    // line would scan every order. Never analysed, the planner assumes a table of some size.
    let analyze = if args.orders > 0 { "ANALYZE products, orders, order_items" } else { "ANALYZE products" };
    sqlx::query(analyze).execute(&mut *tx).await?;
    let indexes = rebuilt.elapsed();
    spinner.finish_and_clear();

    // The generated orders are history: the audit and resets that keep the catalogue look only at
    // orders placed after them, so neither reads ten million rows.
    catalog::record_plan_keeping_history(&mut tx, &plan).await?;
    tx.commit().await.context("cannot commit the new catalogue")?;
    conn.close().await?;

    Ok(PopulateSummary::report(started, tallied, [products, orders_load, items_load], indexes))
}

async fn load_products(conn: &mut PgConnection, products: &ProductRows<'_>) -> anyhow::Result<TableLoad> {
    let started = Instant::now();
    let bar = progress("products", products.count);
    let written = copy_in(
        conn,
        "COPY products (id, stock, initial_stock) FROM STDIN WITH (FREEZE)",
        products.count,
        |i, out| products.write(i, RowFormat::CopyText, out),
        |sent| bar.inc(sent),
    )
    .await
    .context("COPY products failed")?;
    bar.finish_and_clear();
    Ok(TableLoad { rows: written, elapsed: started.elapsed() })
}

async fn load_orders(conn: &mut PgConnection, orders: &OrderGenerator) -> anyhow::Result<TableLoad> {
    let started = Instant::now();
    let bar = progress("orders", orders.count);
    let written = copy_in(
        conn,
        "COPY orders (id, strategy, status, user_name, address, phone, email) FROM STDIN WITH (FREEZE)",
        orders.count,
        |i, out| orders.order(i).write_order(orders.strategy, RowFormat::CopyText, out),
        |sent| bar.inc(sent),
    )
    .await
    .context("COPY orders failed")?;
    bar.finish_and_clear();
    Ok(TableLoad { rows: written, elapsed: started.elapsed() })
}

async fn load_order_items(conn: &mut PgConnection, orders: &OrderGenerator) -> anyhow::Result<TableLoad> {
    let started = Instant::now();
    // The bar counts orders: their line count is only known once each is generated.
    let bar = progress("order_items", orders.count);
    let written = copy_in(
        conn,
        "COPY order_items (order_id, product_id, quantity) FROM STDIN WITH (FREEZE)",
        orders.count,
        |i, out| orders.order(i).write_items(RowFormat::CopyText, out),
        |sent| bar.inc(sent),
    )
    .await
    .context("COPY order_items failed")?;
    bar.finish_and_clear();
    Ok(TableLoad { rows: written, elapsed: started.elapsed() })
}

/// Primary keys, unique and foreign-key constraints and plain indexes of [`TABLES`], as
/// PostgreSQL prints them, so the rebuild matches the migrations whatever they become.
#[derive(Debug)]
struct Keys {
    /// `(drop, create)` statements; foreign keys first, since they lean on the unique indexes.
    foreign: Vec<(String, String)>,
    unique: Vec<(String, String)>,
    indexes: Vec<(String, String)>,
}

const CONSTRAINTS: &str = r"
SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname),
       format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid)),
       c.contype = 'f'
FROM pg_constraint c
WHERE c.contype IN ('p', 'u', 'x', 'f')
  AND (c.conrelid = ANY($1::text[]::regclass[]) OR c.confrelid = ANY($1::text[]::regclass[]))
ORDER BY c.conname
";

const INDEXES: &str = r"
SELECT format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid)
FROM pg_index i
WHERE i.indrelid = ANY($1::text[]::regclass[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
ORDER BY i.indexrelid::regclass::text
";

impl Keys {
    async fn read(conn: &mut PgConnection) -> anyhow::Result<Self> {
        let tables: Vec<&str> = TABLES.to_vec();
        let constraints: Vec<(String, String, bool)> =
            sqlx::query_as(CONSTRAINTS).bind(&tables).fetch_all(&mut *conn).await?;
        let indexes: Vec<(String, String)> =
            sqlx::query_as(INDEXES).bind(&tables).fetch_all(&mut *conn).await?;
        let (foreign, unique): (Vec<_>, Vec<_>) =
            constraints.into_iter().partition(|(_, _, foreign)| *foreign);
        let pairs = |rows: Vec<(String, String, bool)>| rows.into_iter().map(|(d, c, _)| (d, c)).collect();
        Ok(Self { foreign: pairs(foreign), unique: pairs(unique), indexes })
    }

    fn all(&self) -> impl Iterator<Item = &(String, String)> {
        self.foreign.iter().chain(&self.unique).chain(&self.indexes)
    }

    async fn drop_all(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        for (drop, _) in self.all() {
            execute_ddl(conn, drop).await?;
        }
        Ok(())
    }

    async fn create_all(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        for (_, create) in self.unique.iter().chain(&self.indexes).chain(&self.foreign) {
            execute_ddl(conn, create).await?;
        }
        Ok(())
    }
}

/// Runs one statement of [`Keys`]. PostgreSQL printed them from its own catalogue, quoting every
/// name (`%I`, `regclass`, `pg_get_*def`), so they carry no outside input.
async fn execute_ddl(conn: &mut PgConnection, statement: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(conn)
        .await
        .with_context(|| format!("{statement} failed"))?;
    Ok(())
}
