//! `bench scale`: does each strategy's capacity hold on the seed's catalogue? For each catalogue
//! size (`--scales`, the first being the reference), loads it once into a database of its own with
//! `server populate` (skipped when that database holds it already), runs `bench capacity
//! --catalogue existing` on it — regular customers buying over every product, the order history in
//! place — and writes one table: capacity per catalogue and the ratio to the first. On PostgreSQL
//! or MariaDB, as `--database-url`'s scheme says (`populate::run` or `populate::run_mysql`).

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context as _;
use checkout_strategies::catalog::BooksOn;
use checkout_strategies::{SqlBackend, SqlPool, StrategyKind, backends, catalog};
use clap::Args;
use sqlx::{MySqlPool, PgPool};

use super::capacity::{self, CapacityFlags, Catalogue};
use crate::populate::{self, PopulateArgs};
use crate::run_folder::{RunFolder, ScaleRow, medians_by_strategy, meta, write_csv};

/// One catalogue: `PRODUCTS[:ORDERS]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub products: u64,
    pub orders: u64,
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (products, orders) = text.split_once(':').unwrap_or((text, "0"));
        let number = |part: &str| {
            part.replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("{text:?}: expected PRODUCTS[:ORDERS], e.g. 5000000:10000000"))
        };
        let scale = Self { products: number(products)?, orders: number(orders)? };
        if scale.products == 0 {
            return Err(format!("{text:?}: a catalogue needs at least one product"));
        }
        Ok(scale)
    }
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} products, {} orders", thousands(self.products), thousands(self.orders))
    }
}

fn thousands(n: u64) -> String {
    indicatif::HumanCount(n).to_string()
}

/// `bench scale`.
#[derive(Debug, Clone, Args)]
pub struct ScaleFlags {
    /// Catalogues to compare, `PRODUCTS[:ORDERS]` comma-separated; ratios are over the first. Each
    /// gets its own database, named after `--database-url`'s with `_<products>p_<orders>o` added.
    #[arg(long, value_delimiter = ',', default_value = "100000,5000000:10000000")]
    pub scales: Vec<Scale>,
    /// Load every catalogue again, even when its database holds it already.
    #[arg(long)]
    pub repopulate: bool,
    #[command(flatten)]
    pub capacity: CapacityFlags,
}

/// What `bench scale` produced.
#[derive(Debug)]
pub struct ScaleReport {
    pub folder: RunFolder,
    pub rows: Vec<ScaleRow>,
    /// The table as `scale.md` has it.
    pub table: String,
}

/// `bench scale`: populate where needed, a capacity run per catalogue, then `scale.csv` and
/// `scale.md` in a run folder of their own. `command` goes into `scale.md`.
///
/// # Errors
/// When a database cannot be prepared or loaded, a capacity run fails, or a file cannot be written.
pub async fn run(flags: &ScaleFlags, command: String) -> anyhow::Result<ScaleReport> {
    anyhow::ensure!(!flags.scales.is_empty(), "--scales names no catalogue");
    anyhow::ensure!(
        flags.capacity.server.url.is_none(),
        "bench scale starts its own server per catalogue; --url cannot be used"
    );
    SqlBackend::from_url(&flags.capacity.server.database_url)?;
    let load_before = load_average();
    let started = Instant::now();
    let mut runs = Vec::new();
    for (index, scale) in flags.scales.iter().enumerate() {
        let label = format!("[scale {}/{} · {scale}]", index + 1, flags.scales.len());
        let url = database_url(&flags.capacity.server.database_url, *scale)?;
        ensure_populated(&url, *scale, flags.repopulate, &label).await?;
        eprintln!("{label} capacity search on the kept catalogue");
        let mut capacity_flags = flags.capacity.clone();
        capacity_flags.server.database_url = url;
        capacity_flags.catalogue = Catalogue::Existing;
        let report = capacity::run(&capacity_flags, format!("{command} (catalogue {scale})")).await?;
        runs.push((*scale, report));
    }
    let load_after = load_average();

    let folder = RunFolder::create(&flags.capacity.out, &meta::git().short_sha)?;
    let mut rows = Vec::new();
    let reference = medians(&runs[0].1.rows);
    for (scale, report) in &runs {
        let capacities = medians(&report.rows);
        for (strategy, (capacity_rps, at_least)) in &capacities {
            let base = reference.get(strategy).map(|(rps, _)| *rps).filter(|rps| *rps > 0.0);
            rows.push(ScaleRow {
                run_id: folder.id.clone(),
                strategy: strategy.clone(),
                products: scale.products,
                orders: scale.orders,
                capacity_rps: *capacity_rps,
                at_least: *at_least,
                ratio: base.map(|base| capacity_rps / base),
                capacity_run: report.folder.id.clone(),
            });
        }
    }
    write_csv(&folder.file("scale.csv"), &rows)?;
    let scales: Vec<Scale> = runs.iter().map(|(scale, _)| *scale).collect();
    let mut table = table(&scales, &rows);
    let _ = write!(
        table,
        "\n{} on {} ({} CPUs, {} build), {:.0} min; load average (1, 5, 15 min) before: {load_before}, \
         after: {load_after}\n`{command}`\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        meta::host().hostname,
        meta::host().cpus,
        meta::profile(),
        started.elapsed().as_secs_f64() / 60.0,
    );
    std::fs::write(folder.file("scale.md"), &table)
        .with_context(|| format!("cannot write {}", folder.file("scale.md").display()))?;
    folder.mark_latest(&flags.capacity.out)?;
    Ok(ScaleReport { folder, rows, table })
}

/// Each strategy's median capacity over repetitions, and whether any repetition hit the ceiling.
fn medians(rows: &[crate::run_folder::CapacityRow]) -> std::collections::BTreeMap<String, (f64, bool)> {
    medians_by_strategy(rows.iter().map(|row| (row.strategy.as_str(), row.capacity_rps)))
        .into_iter()
        .map(|(strategy, median)| {
            let at_least = rows.iter().any(|row| row.strategy == strategy && row.at_least);
            (strategy, (median, at_least))
        })
        .collect()
}

/// The comparison as a Markdown table: a column per catalogue, the ratio of each to the first.
pub fn table(scales: &[Scale], rows: &[ScaleRow]) -> String {
    let mut strategies: Vec<&str> = rows.iter().map(|row| row.strategy.as_str()).collect();
    strategies.sort_unstable();
    strategies.dedup();
    let find = |strategy: &str, scale: &Scale| {
        rows.iter().find(|row| {
            row.strategy == strategy && row.products == scale.products && row.orders == scale.orders
        })
    };
    let mut out = String::from("| strategy |");
    for scale in scales {
        let _ = write!(out, " {scale}, req/s |");
    }
    for scale in scales.iter().skip(1) {
        let _ = write!(out, " ratio {} / {} |", thousands(scale.products), thousands(scales[0].products));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(scales.len() * 2 - 1));
    out.push('\n');
    for strategy in strategies {
        let _ = write!(out, "| `{strategy}` |");
        for scale in scales {
            let cell = find(strategy, scale).map_or_else(
                || "–".to_owned(),
                |row| {
                    format!("{}{}", if row.at_least { "≥ " } else { "" }, thousands(row.capacity_rps as u64))
                },
            );
            let _ = write!(out, " {cell} |");
        }
        for scale in scales.iter().skip(1) {
            let cell = find(strategy, scale)
                .and_then(|row| row.ratio)
                .map_or_else(|| "–".to_owned(), |ratio| format!("{ratio:.2}"));
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

/// `base` with its database name suffixed for `scale`.
fn database_url(base: &str, scale: Scale) -> anyhow::Result<String> {
    let (head, query) = base.split_once('?').map_or((base, None), |(head, query)| (head, Some(query)));
    let (server, name) = head
        .rsplit_once('/')
        .filter(|(server, name)| server.contains("//") && !server.ends_with('/') && !name.is_empty())
        .with_context(|| format!("--database-url {base:?} names no database"))?;
    let mut url = format!("{server}/{name}_{}p_{}o", scale.products, scale.orders);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// Loads `scale` into the database at `url` unless it holds that catalogue and history already.
async fn ensure_populated(url: &str, scale: Scale, repopulate: bool, label: &str) -> anyhow::Result<()> {
    backends::prepare_database(url).await.with_context(|| format!("cannot prepare {url}"))?;
    let books = match SqlBackend::from_url(url)? {
        SqlBackend::Postgres => {
            SqlPool::Postgres(PgPool::connect(url).await.with_context(|| format!("cannot reach {url}"))?)
        }
        SqlBackend::MySql => {
            SqlPool::MySql(MySqlPool::connect(url).await.with_context(|| format!("cannot reach {url}"))?)
        }
    };
    let loaded = load_unless_held(&books, url, scale, repopulate, label).await;
    match books {
        SqlPool::Postgres(pool) => pool.close().await,
        SqlPool::MySql(pool) => pool.close().await,
    }
    loaded
}

async fn load_unless_held(
    books: &SqlPool,
    url: &str,
    scale: Scale,
    repopulate: bool,
    label: &str,
) -> anyhow::Result<()> {
    let held = held_scale(books).await?;
    // A purchase a probe gave up on may commit after the next reset, and then counts as history:
    // a few orders more than populate wrote are still this catalogue.
    let holds_it = held.is_some_and(|held| held.products == scale.products && held.orders >= scale.orders);
    if !repopulate && holds_it {
        eprintln!("{label} {url} holds it already (--repopulate loads it again)");
        return Ok(());
    }
    eprintln!("{label} loading it into {url} with server populate");
    let args = PopulateArgs {
        products: scale.products,
        orders: scale.orders,
        hot_product: 100,
        hot_stock: 10_000,
        min_stock: 30_000,
        max_stock: 100_000,
        seed: 42,
        max_items_per_order: 3,
        orders_strategy: StrategyKind::SqlAtomic,
    };
    let summary = match books {
        SqlPool::Postgres(pool) => populate::run(pool, &args).await?,
        SqlPool::MySql(pool) => populate::run_mysql(pool, &args).await?,
    };
    eprintln!(
        "{label} loaded {} rows in {:.0} s ({} rows/s)",
        thousands(summary.total.rows),
        summary.total.elapsed.as_secs_f64(),
        thousands(summary.total.rows_per_sec() as u64)
    );
    Ok(())
}

/// The catalogue size and history the database holds, when a populate (and resets keeping it)
/// laid it out.
async fn held_scale(books: &SqlPool) -> anyhow::Result<Option<Scale>> {
    let Some(plan) = BooksOn(books).latest_plan().await? else { return Ok(None) };
    let Some(random) = plan.random_products else { return Ok(None) };
    let history = match books {
        SqlPool::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            let Some(since) = catalog::orders_since(&mut conn).await? else { return Ok(None) };
            sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE created_at < $1")
                .bind(since)
                .fetch_one(&mut *conn)
                .await?
        }
        // The plan in force's history, counted where it is read: NULL when a truncating reset
        // left no history.
        SqlPool::MySql(pool) => {
            let history: Option<Option<i64>> = sqlx::query_scalar(
                "SELECT CASE WHEN p.orders_since IS NULL THEN NULL \
                 ELSE (SELECT COUNT(*) FROM orders o WHERE o.created_at < p.orders_since) END \
                 FROM stock_plans p ORDER BY p.id DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await?;
            let Some(history) = history.flatten() else { return Ok(None) };
            history
        }
    };
    Ok(Some(Scale { products: random.count, orders: u64::try_from(history).unwrap_or_default() }))
}

/// `/proc/loadavg`'s three load averages, or `unknown`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_parse_with_or_without_orders() {
        assert_eq!("100000".parse::<Scale>().unwrap(), Scale { products: 100_000, orders: 0 });
        assert_eq!(
            "5_000_000:10_000_000".parse::<Scale>().unwrap(),
            Scale { products: 5_000_000, orders: 10_000_000 }
        );
        for bad in ["", "0", "x", "10:y", "-5"] {
            assert!(bad.parse::<Scale>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_catalogue_gets_a_database_of_its_own() {
        let scale = Scale { products: 5_000_000, orders: 10_000_000 };
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/checkout_bench", scale).unwrap(),
            "postgres://postgres@127.0.0.1:5432/checkout_bench_5000000p_10000000o"
        );
        assert_eq!(
            database_url("postgres://u@h/db?sslmode=disable", Scale { products: 1, orders: 0 }).unwrap(),
            "postgres://u@h/db_1p_0o?sslmode=disable"
        );
        assert!(database_url("postgres://u@h", scale).is_err());
    }

    #[test]
    fn the_table_has_a_column_per_catalogue_and_ratios_to_the_first() {
        let small = Scale { products: 100_000, orders: 0 };
        let large = Scale { products: 5_000_000, orders: 10_000_000 };
        let row = |strategy: &str, scale: Scale, capacity_rps: f64, ratio: Option<f64>| ScaleRow {
            run_id: "r".into(),
            strategy: strategy.into(),
            products: scale.products,
            orders: scale.orders,
            capacity_rps,
            at_least: false,
            ratio,
            capacity_run: "c".into(),
        };
        let rows = [
            row("sql-atomic", small, 1_500.0, Some(1.0)),
            row("sql-atomic", large, 1_200.0, Some(0.8)),
            row("memory", small, 26_000.0, Some(1.0)),
        ];
        let text = table(&[small, large], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("100,000 products, 0 orders") && lines[0].contains("ratio 5,000,000 / 100,000")
        );
        assert_eq!(lines[2], "| `memory` | 26,000 | – | – |");
        assert_eq!(lines[3], "| `sql-atomic` | 1,500 | 1,200 | 0.80 |");
    }
}
