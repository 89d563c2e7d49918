//! `server populate`: replaces the catalogue with N seeded random products, the hot product and,
//! optionally, M historical orders, all through `COPY` in one transaction.
//!
//! No row is kept in memory. A product's stock is a pure function of `(seed, id)`
//! ([`RandomProducts::stock_of`]) and an order a pure function of `(seed, order index)`, so rows
//! are generated while they stream and generated again when a later table needs them. The one
//! buffer is O(products): the units generated orders hold per product. A product's row needs it
//! before any order is written, because those orders already left the shelf: `stock` stays the
//! plan's stock and `initial_stock` adds the held units, so the audit's
//! `initial = final + units_in_orders` holds from the start.
//!
//! Loading into indexed tables costs one random B-tree insert per row and one foreign-key probe
//! per order line, so the keys and indexes of the three tables are dropped before `COPY` and
//! rebuilt after from the definitions PostgreSQL reports, under the same names: at the seed's scale
//! on two cores that is about 2 minutes instead of 18. The tables were truncated in the same
//! transaction, which lets `COPY … FREEZE` write rows already frozen, so no vacuum rewrites them
//! later.
//!
//! The plan is recorded with the generated orders as history (`orders_since`): audits and resets
//! with `keep_catalogue` read only the orders placed after populate.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use checkout_strategies::catalog::{self, copy_in, write_row};
use checkout_strategies::order::MAX_LINES;
use checkout_strategies::plan::MAX_RANDOM_PRODUCTS;
use checkout_strategies::{ProductId, ProductStock, RandomProducts, StockPlan, StrategyKind};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use indicatif::{HumanCount, ProgressBar, ProgressStyle};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use uuid::Uuid;

/// Most orders one populate may generate, so the per-product tally of held units fits a `u32`.
pub const MAX_ORDERS: u64 = 1_000_000_000;

/// Units of one product in one generated order are drawn from `1..=MAX_GENERATED_QUANTITY`.
const MAX_GENERATED_QUANTITY: u64 = 3;

/// Distinct customers generated orders are spread over.
const CUSTOMERS: u64 = 1_000_000;

/// The tables populate replaces, in the order their rows are written.
const TABLES: [&str; 3] = ["products", "orders", "order_items"];

/// `server populate` flags.
#[derive(Debug, Clone, Args)]
pub struct PopulateArgs {
    /// Random products to create, ids 1..=N, each with a seeded stock in [min-stock, max-stock].
    #[arg(long, env = "POPULATE_PRODUCTS", default_value_t = 5_000_000)]
    pub products: u64,

    /// Confirmed orders to create as history, each holding 1..=max-items-per-order random products.
    #[arg(long, env = "POPULATE_ORDERS", default_value_t = 0)]
    pub orders: u64,

    /// Id of the hot product. Inside 1..=N, its stock replaces the random one.
    #[arg(long, env = "POPULATE_HOT_PRODUCT", default_value_t = 100)]
    pub hot_product: i64,

    /// Units of the hot product on the shelf.
    #[arg(long, env = "POPULATE_HOT_STOCK", default_value_t = 10_000)]
    pub hot_stock: i64,

    /// Smallest random stock.
    #[arg(long, env = "POPULATE_MIN_STOCK", default_value_t = 30_000)]
    pub min_stock: i64,

    /// Largest random stock.
    #[arg(long, env = "POPULATE_MAX_STOCK", default_value_t = 100_000)]
    pub max_stock: i64,

    /// Seed of stocks and orders: the same seed and flags give the same rows.
    #[arg(long, env = "POPULATE_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Most distinct products in one generated order; each order gets 1 to this many, 1 to 3 units
    /// of each.
    #[arg(long, env = "POPULATE_MAX_ITEMS_PER_ORDER", default_value_t = 3)]
    pub max_items_per_order: usize,

    /// Strategy generated orders are attributed to (GET /orders/{id} reports it).
    #[arg(
        long,
        env = "POPULATE_ORDERS_STRATEGY",
        default_value = "sql-atomic",
        value_parser = PossibleValuesParser::new(StrategyKind::names()).try_map(|name| name.parse::<StrategyKind>())
    )]
    pub orders_strategy: StrategyKind,
}

impl PopulateArgs {
    /// The plan these flags describe, which strategies keeping their own stock rebuild.
    ///
    /// # Errors
    /// Names the flag that is out of range.
    pub fn plan(&self) -> anyhow::Result<StockPlan> {
        ensure!(
            (1..=MAX_RANDOM_PRODUCTS).contains(&self.products),
            "--products must be between 1 and {MAX_RANDOM_PRODUCTS}, got {}",
            self.products
        );
        ensure!(self.orders <= MAX_ORDERS, "--orders must be at most {MAX_ORDERS}, got {}", self.orders);
        ensure!(self.min_stock >= 0, "--min-stock must be >= 0, got {}", self.min_stock);
        ensure!(
            self.min_stock <= self.max_stock,
            "--min-stock ({}) must not exceed --max-stock ({})",
            self.min_stock,
            self.max_stock
        );
        ensure!(self.hot_stock >= 0, "--hot-stock must be >= 0, got {}", self.hot_stock);
        ensure!(
            (1..=MAX_LINES).contains(&self.max_items_per_order),
            "--max-items-per-order must be between 1 and {MAX_LINES}, got {}",
            self.max_items_per_order
        );
        let hot = ProductId::parse(self.hot_product)
            .map_err(|_| anyhow::anyhow!("--hot-product must be positive, got {}", self.hot_product))?;
        let plan = StockPlan {
            products: vec![ProductStock { id: hot, stock: self.hot_stock }],
            random_products: Some(RandomProducts {
                count: self.products,
                min_stock: self.min_stock,
                max_stock: self.max_stock,
                seed: self.seed,
            }),
            keep_catalogue: false,
        };
        plan.validate()?;
        Ok(plan)
    }
}

/// Rows one table received and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableLoad {
    pub rows: u64,
    pub elapsed: Duration,
}

impl TableLoad {
    /// Throughput; zero when nothing was timed.
    pub fn rows_per_sec(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 { self.rows as f64 / seconds } else { 0.0 }
    }
}

/// What populate did, table by table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PopulateSummary {
    /// Generating every order once to count the units each product's `initial_stock` adds.
    pub tally: Duration,
    pub products: TableLoad,
    pub orders: TableLoad,
    pub order_items: TableLoad,
    /// Rebuilding the keys and indexes dropped for the load, and refreshing planner statistics.
    pub indexes: Duration,
    /// Every row, over the whole run (tally, loads, index rebuild, commit).
    pub total: TableLoad,
}

impl PopulateSummary {
    /// One line per step: rows, seconds and rows/s for each table and the total, seconds for the
    /// tally and the index rebuild.
    pub fn lines(&self) -> Vec<String> {
        let table = |name: &str, load: &TableLoad| {
            format!(
                "{name:<12} {:>12} rows {:>8.1} s {:>12} rows/s",
                HumanCount(load.rows).to_string(),
                load.elapsed.as_secs_f64(),
                HumanCount(load.rows_per_sec() as u64).to_string(),
            )
        };
        let step =
            |name: &str, elapsed: Duration| format!("{name:<12} {:>17} {:>8.1} s", "", elapsed.as_secs_f64());
        vec![
            step("tally", self.tally),
            table("products", &self.products),
            table("orders", &self.orders),
            table("order_items", &self.order_items),
            step("indexes", self.indexes),
            table("total", &self.total),
        ]
    }
}

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

    let products = load_products(&mut tx, args, &held).await?;
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

    let summary = PopulateSummary {
        tally: tallied,
        products,
        orders: orders_load,
        order_items: items_load,
        indexes,
        total: TableLoad {
            rows: products.rows + orders_load.rows + items_load.rows,
            elapsed: started.elapsed(),
        },
    };
    for line in summary.lines() {
        println!("{line}");
    }
    Ok(summary)
}

/// Units generated orders hold, indexed by product id (index 0 unused).
fn tally(orders: &OrderGenerator, products: u64) -> Vec<u32> {
    let len = usize::try_from(products + 1).expect("products is at most MAX_RANDOM_PRODUCTS");
    let mut held = vec![0_u32; len];
    if orders.count == 0 {
        return held;
    }
    let bar = progress("tally", orders.count);
    for index in 0..orders.count {
        for &(product, quantity) in orders.order(index).lines() {
            // `MAX_ORDERS * MAX_GENERATED_QUANTITY` fits a u32, so this cannot wrap.
            held[usize::try_from(product).expect("product ids fit usize")] += quantity;
        }
        if index % 65_536 == 65_535 {
            bar.inc(65_536);
        }
    }
    bar.finish_and_clear();
    held
}

async fn load_products(
    conn: &mut PgConnection,
    args: &PopulateArgs,
    held: &[u32],
) -> anyhow::Result<TableLoad> {
    let started = Instant::now();
    let hot_outside = args.hot_product.cast_unsigned() > args.products;
    let rows = args.products + u64::from(hot_outside);
    let random = RandomProducts {
        count: args.products,
        min_stock: args.min_stock,
        max_stock: args.max_stock,
        seed: args.seed,
    };
    let bar = progress("products", rows);
    let written = copy_in(
        conn,
        "COPY products (id, stock, initial_stock) FROM STDIN WITH (FREEZE)",
        rows,
        |i, out| {
            let id = (i + 1).cast_signed();
            let id = if i == args.products { args.hot_product } else { id };
            let stock = if id == args.hot_product { args.hot_stock } else { random.stock_of(id) };
            let units = held.get(usize::try_from(id).unwrap_or(usize::MAX)).copied().unwrap_or(0);
            write_row(out, &[&id, &stock, &(stock + i64::from(units))]);
        },
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
        |i, out| orders.order(i).write_order(orders.strategy, out),
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
        |i, out| orders.order(i).write_items(out),
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

/// Generated orders: order `i` is a pure function of `(seed, i)`, so the tally, the `orders` rows
/// and the `order_items` rows agree without remembering anything.
#[derive(Debug, Clone, Copy)]
struct OrderGenerator {
    key: u64,
    count: u64,
    products: u64,
    max_lines: u64,
    strategy: StrategyKind,
}

impl OrderGenerator {
    fn new(args: &PopulateArgs) -> Self {
        // Salted so order draws never replay the stock draws of `RandomProducts`.
        const ORDERS_SALT: u64 = 0x6f72_6465_7273_0001;
        let max_lines = u64::try_from(args.max_items_per_order).unwrap_or(u64::MAX).min(args.products);
        Self {
            key: splitmix64(args.seed ^ ORDERS_SALT),
            count: args.orders,
            products: args.products,
            max_lines,
            strategy: args.orders_strategy,
        }
    }

    fn order(&self, index: u64) -> GeneratedOrder {
        let mut draws = Draws(splitmix64(self.key.wrapping_add(index.wrapping_mul(GOLDEN_GAMMA))));
        let mut id = [0; 16];
        id[..8].copy_from_slice(&draws.next().to_le_bytes());
        id[8..].copy_from_slice(&draws.next().to_le_bytes());
        let mut order = GeneratedOrder {
            id: uuid::Builder::from_random_bytes(id).into_uuid(),
            lines: [(0, 0); MAX_LINES],
            len: 0,
            draws,
        };
        let len = 1 + order.draws.below(self.max_lines);
        while (order.len as u64) < len {
            let product = 1 + order.draws.below(self.products);
            if order.lines().iter().all(|&(taken, _)| taken != product) {
                let quantity = 1 + order.draws.below(MAX_GENERATED_QUANTITY);
                order.lines[order.len] = (product, u32::try_from(quantity).expect("quantity is at most 3"));
                order.len += 1;
            }
        }
        order
    }
}

/// One generated order; `draws` continues its stream for the customer fields.
struct GeneratedOrder {
    id: Uuid,
    lines: [(u64, u32); MAX_LINES],
    len: usize,
    draws: Draws,
}

const STREETS: [&str; 8] = [
    "Market Street",
    "Station Road",
    "Church Lane",
    "High Street",
    "Mill Road",
    "Park Avenue",
    "Oak Drive",
    "Harbour Way",
];
const CITIES: [&str; 8] =
    ["Springfield", "Riverton", "Lakeside", "Fairview", "Greenville", "Ashford", "Kingston", "Milton"];

impl GeneratedOrder {
    fn lines(&self) -> &[(u64, u32)] {
        &self.lines[..self.len]
    }

    /// Appends the `orders` row. Every field is digits, ASCII letters and punctuation that `COPY`
    /// text format takes literally.
    fn write_order(mut self, strategy: StrategyKind, out: &mut Vec<u8>) {
        let customer = 1 + self.draws.below(CUSTOMERS);
        let number = 1 + self.draws.below(9_999);
        let street = STREETS[self.draws.pick(STREETS.len())];
        let city = CITIES[self.draws.pick(CITIES.len())];
        let exchange = 200 + self.draws.below(800);
        let line = self.draws.below(10_000);
        writeln!(
            out,
            "{}\t{strategy}\tconfirmed\tuser-{customer}\t{number} {street}, {city}\t\
             +1-555-{exchange}-{line:04}\tuser-{customer}@example.com",
            self.id
        )
        .expect("writing to a Vec cannot fail");
    }

    /// Appends the `order_items` rows.
    fn write_items(&self, out: &mut Vec<u8>) {
        for &(product, quantity) in self.lines() {
            write_row(out, &[&self.id, &product, &quantity]);
        }
    }
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A SplitMix64 stream: cheap, well mixed, and restartable from any order's seed.
struct Draws(u64);

impl Draws {
    const fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; the modulo bias is below `n / 2^64`, invisible at catalogue sizes.
    const fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick(&mut self, n: usize) -> usize {
        usize::try_from(self.below(u64::try_from(n).expect("usize fits u64"))).expect("below n")
    }
}

/// SplitMix64's finaliser, to derive independent stream seeds.
const fn splitmix64(x: u64) -> u64 {
    Draws(x).next()
}

fn progress(prefix: &'static str, len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec} eta {eta}",
    )
    .expect("the template is valid");
    ProgressBar::new(len).with_style(style).with_prefix(prefix)
}

fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(products: u64, max_items: usize) -> PopulateArgs {
        PopulateArgs {
            products,
            orders: 10_000,
            hot_product: 100,
            hot_stock: 10_000,
            min_stock: 30_000,
            max_stock: 100_000,
            seed: 42,
            max_items_per_order: max_items,
            orders_strategy: StrategyKind::SqlAtomic,
        }
    }

    #[test]
    fn orders_are_reproducible_distinct_and_in_range() {
        let generator = OrderGenerator::new(&args(50, 5));
        let mut ids = std::collections::HashSet::new();
        for index in 0..10_000 {
            let order = generator.order(index);
            assert_eq!(order.id, generator.order(index).id);
            assert_eq!(order.lines(), generator.order(index).lines());
            assert!(ids.insert(order.id), "order {index} repeats an id");
            assert!((1..=5).contains(&order.len));
            let mut products: Vec<u64> = order.lines().iter().map(|&(p, _)| p).collect();
            assert!(products.iter().all(|p| (1..=50).contains(p)));
            assert!(order.lines().iter().all(|&(_, q)| (1..=3).contains(&q)));
            products.sort_unstable();
            products.dedup();
            assert_eq!(products.len(), order.len, "order {index} names a product twice");
        }
    }

    #[test]
    fn orders_never_ask_more_distinct_products_than_exist() {
        let generator = OrderGenerator::new(&args(2, 5));
        assert!((0..1_000).all(|index| generator.order(index).len <= 2));
    }

    #[test]
    fn generated_rows_are_copy_text_safe() {
        let generator = OrderGenerator::new(&args(1_000, 3));
        let mut out = Vec::new();
        for index in 0..1_000 {
            generator.order(index).write_order(StrategyKind::SqlAtomic, &mut out);
            generator.order(index).write_items(&mut out);
        }
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\\') && !text.contains('\r'));
        assert!(text.lines().all(|line| matches!(line.split('\t').count(), 3 | 7)));
    }

    #[test]
    fn plan_rejects_bad_flags() {
        let mut bad = args(10, 3);
        bad.min_stock = 10;
        bad.max_stock = 9;
        assert!(bad.plan().unwrap_err().to_string().contains("--min-stock"));
        assert!(PopulateArgs { hot_product: 0, ..args(10, 3) }.plan().is_err());
        assert!(PopulateArgs { products: 0, ..args(10, 3) }.plan().is_err());
        assert!(PopulateArgs { max_items_per_order: 0, ..args(10, 3) }.plan().is_err());
        assert!(PopulateArgs { orders: MAX_ORDERS + 1, ..args(10, 3) }.plan().is_err());
        let plan = args(10, 3).plan().unwrap();
        assert_eq!(plan.stock_of(ProductId::parse(100).unwrap()), Some(10_000));
    }
}
