//! `bench capacity`: every selected strategy's search, `--repeat` times in a shuffled order, in a
//! run folder of its own (`run.json`, `capacity.csv`, `capacity_steps.csv`, the report).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{CapacityArgs, Collected, Depth, generator_cap, measure, probe};
use crate::bench::drivers::DriverFlags;
use crate::bench::options::ServerFlags;
use crate::bench::passes::Ran;
use crate::bench::run_file::{Described, RunStart};
use crate::bench::server::Server;
use crate::run_folder::{CapacityRow, RunFolder, StrategyInfo, meta};

/// `bench capacity`.
#[derive(Debug, Clone, Args)]
pub struct CapacityFlags {
    #[command(flatten)]
    pub search: CapacityArgs,
    #[command(flatten)]
    pub server: ServerFlags,
    #[command(flatten)]
    pub drivers: DriverFlags,
    /// Strategies to measure, comma-separated [default: every strategy the server has].
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Searches per strategy; the order of strategies is shuffled in each.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Keep-alive connections (one open-model worker each).
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// The product probes buy (reset before each probe).
    #[arg(long, default_value_t = 100)]
    pub product: i64,
    /// Longest wait for queueing strategies to persist a probe's orders, seconds.
    #[arg(long, default_value_t = 60)]
    pub drain_timeout_secs: u64,
    /// Where run folders go.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Do not render the charts and the page after the run.
    #[arg(long)]
    pub no_report: bool,
    /// `fresh`: each probe lays out its own catalogue (`--products` random products); `existing`:
    /// probes run on the catalogue the server's database holds (loaded by `server populate`),
    /// keeping it and its order history, and each reset undoes only the last probe.
    #[arg(long, value_enum, default_value = "fresh")]
    pub catalogue: Catalogue,
    /// Regular customers per 100 hunters, each buying one random product of the catalogue (the
    /// seed: 3) [default: 0; --catalogue existing: 3].
    #[arg(long)]
    pub regular_weight: Option<u32>,
    /// `--catalogue fresh`: products regular customers pick from, laid out by each probe's reset
    /// [default: 1,000]. An existing catalogue's size is read from the server.
    #[arg(long)]
    pub products: Option<i64>,
}

/// Which catalogue capacity probes run on: laid out by each probe's reset (`Fresh`), or the one in
/// the database, kept with its history (`Existing`). Variant doc comments would turn `--help` into
/// a list of possible values and spread every flag out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Catalogue {
    Fresh,
    Existing,
}

impl CapacityFlags {
    /// Regulars and catalogue of the probes, once the server said how large its catalogue is.
    async fn regulars(&self, server: &Server) -> anyhow::Result<probe::Regulars> {
        match self.catalogue {
            Catalogue::Fresh => {
                anyhow::ensure!(self.products.is_none_or(|n| n >= 1), "--products must be at least 1");
                Ok(probe::Regulars {
                    weight: self.regular_weight.unwrap_or(0),
                    products: self.products.unwrap_or(1_000),
                })
            }
            Catalogue::Existing => {
                anyhow::ensure!(
                    self.products.is_none(),
                    "--products sizes a fresh catalogue; an existing one has its own size"
                );
                // A first reset that keeps the catalogue answers with the plan in force.
                let answer = server
                    .reset(&serde_json::json!({
                        "products": [{ "id": self.product, "stock": 1 }],
                        "keep_catalogue": true,
                    }))
                    .await?;
                let products = answer["plan"]["random_products"]["count"].as_i64().ok_or_else(|| {
                    anyhow::anyhow!(
                        "the server's database has no random catalogue to keep: load one with \
                         `server populate` first (the reset answered {answer})"
                    )
                })?;
                eprintln!(
                    "[capacity] existing catalogue: {products} products, order history kept \
                     ({} orders of the last run deleted)",
                    answer["summary"]["run_orders_deleted"]
                );
                Ok(probe::Regulars { weight: self.regular_weight.unwrap_or(3), products })
            }
        }
    }
}

/// What `bench capacity` produced.
#[derive(Debug)]
pub struct CapacityReport {
    pub folder: RunFolder,
    pub strategies: Vec<StrategyInfo>,
    pub rows: Vec<CapacityRow>,
}

/// `bench capacity`: searches every selected strategy's capacity `--repeat` times (order shuffled
/// in each), then writes the run folder and renders its report. `command` goes to `run.json`.
///
/// # Errors
/// When the server cannot be started or reached, an admin call or a probe fails, or a file cannot
/// be written. What was measured before the error is written first.
pub async fn run(flags: &CapacityFlags, command: String) -> anyhow::Result<CapacityReport> {
    anyhow::ensure!(flags.repeat >= 1, "--repeat must be at least 1");
    let settings = flags.search.settings_near_last(
        Depth::Full,
        flags.product,
        flags.connections,
        Duration::from_secs(flags.drain_timeout_secs),
        &flags.out,
    )?;
    let run = RunStart::begin(&flags.out)?;
    eprintln!("bench capacity: run {} ({} build)", run.folder.path.display(), meta::profile());
    let mut settings = settings;
    settings.shape.keep_catalogue = flags.catalogue == Catalogue::Existing;
    let mut collected = Collected::default();
    let mut ran =
        Ran::new(flags.drivers.passes(&flags.server)?, &flags.strategies, flags.repeat, run.order_seed());
    let mut cap = None;
    let folder = &run.folder;
    let outcome = ran
        .each_pass(folder, "the searches finished before Ctrl-C are written", async |server, ran| {
            // Every pass runs on the same catalogue; each server says how large it is.
            settings.shape.regulars = flags.regulars(server).await?;
            let orders = ran.draw_orders();
            // Measured once: every pass's searches stop at the same ceiling.
            let cap = match cap {
                Some(cap) => cap,
                None => *cap.insert(generator_cap(&settings).await?),
            };
            for (repetition, order) in (1u32..).zip(&orders) {
                measure(server, order, &settings, cap, &folder.id, repetition, &mut collected).await?;
            }
            Ok(())
        })
        .await?;
    let described = Described {
        preset: "capacity".to_owned(),
        command,
        options: serde_json::json!({ "capacity": settings.describe() }),
        server: &flags.server,
        drivers: &flags.drivers,
        drain_timeout_secs: flags.drain_timeout_secs,
        out: &flags.out,
    };
    let meta = run.finish(described, ran, outcome, |folder| collected.write(folder)).await?;
    run.report(flags.no_report)?;
    Ok(CapacityReport { folder: run.folder, strategies: meta.strategies, rows: collected.rows })
}
