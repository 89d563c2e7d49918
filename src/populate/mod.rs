//! `server populate`: replaces the catalogue with N seeded random products, the hot product and,
//! optionally, M historical orders, on PostgreSQL ([`run`], through `COPY`) or MariaDB
//! ([`run_mysql`], through multi-row `INSERT`s).
//!
//! No row is kept in memory. A product's stock is a pure function of `(seed, id)`
//! ([`RandomProducts::stock_of`]) and an order a pure function of `(seed, order index)`, so rows
//! are generated while they stream and generated again when a later table needs them
//! (`generator`). The one buffer is O(products): the units generated orders hold per product. A
//! product's row needs it before any order is written, because those orders already left the
//! shelf: `stock` stays the plan's stock and `initial_stock` adds the held units, so the audit's
//! `initial = final + units_in_orders` holds from the start.
//!
//! The plan is recorded with the generated orders as history (`orders_since`): audits and resets
//! with `keep_catalogue` read only the orders placed after populate.

mod generator;
mod mysql;
mod postgres;
mod rows;

use std::time::Duration;

use anyhow::ensure;
use checkout_strategies::order::MAX_LINES;
use checkout_strategies::plan::MAX_RANDOM_PRODUCTS;
use checkout_strategies::{ProductId, ProductStock, RandomProducts, StockPlan, StrategyKind};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use indicatif::{HumanCount, ProgressBar, ProgressStyle};

pub use mysql::run_mysql;
pub use postgres::run;

/// Most orders one populate may generate, so the per-product tally of held units fits a `u32`.
pub const MAX_ORDERS: u64 = 1_000_000_000;

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
    /// Rebuilding the keys and indexes dropped for the load, and refreshing planner statistics. On
    /// MariaDB, which keeps its keys through the load, the commit and the statistics.
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

impl PopulateSummary {
    /// The steps' figures, the total counted from `started`, printed one line per step.
    fn report(
        started: std::time::Instant,
        tally: Duration,
        [products, orders, order_items]: [TableLoad; 3],
        indexes: Duration,
    ) -> Self {
        let total =
            TableLoad { rows: products.rows + orders.rows + order_items.rows, elapsed: started.elapsed() };
        let summary = Self { tally, products, orders, order_items, indexes, total };
        for line in summary.lines() {
            println!("{line}");
        }
        summary
    }
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

    /// Flags of a small catalogue with history; tests override what they vary.
    pub(super) fn args() -> PopulateArgs {
        PopulateArgs {
            products: 10,
            orders: 10_000,
            hot_product: 100,
            hot_stock: 10_000,
            min_stock: 30_000,
            max_stock: 100_000,
            seed: 42,
            max_items_per_order: 3,
            orders_strategy: StrategyKind::SqlAtomic,
        }
    }

    #[test]
    fn plan_rejects_bad_flags() {
        let mut bad = args();
        bad.min_stock = 10;
        bad.max_stock = 9;
        assert!(bad.plan().unwrap_err().to_string().contains("--min-stock"));
        assert!(PopulateArgs { hot_product: 0, ..args() }.plan().is_err());
        assert!(PopulateArgs { products: 0, ..args() }.plan().is_err());
        assert!(PopulateArgs { max_items_per_order: 0, ..args() }.plan().is_err());
        assert!(PopulateArgs { orders: MAX_ORDERS + 1, ..args() }.plan().is_err());
        let plan = args().plan().unwrap();
        assert_eq!(plan.stock_of(ProductId::parse(100).unwrap()), Some(10_000));
    }
}
