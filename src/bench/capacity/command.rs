//! `bench capacity`: every selected strategy's search, `--repeat` times in a shuffled order, in a
//! run folder of its own (`run.json`, `capacity.csv`, `capacity_steps.csv`, the report).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::{CapacityArgs, Collected, Depth, generator_cap, measure, probe};
use crate::bench::drivers::{self, DriverFlags};
use crate::bench::options::ServerFlags;
use crate::bench::server::Server;
use crate::bench::{Ran, shuffled};
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
    let git = meta::git();
    let folder = RunFolder::create(&flags.out, &git.short_sha)?;
    let started_at = chrono::Utc::now();
    eprintln!("bench capacity: run {} ({} build)", folder.path.display(), meta::profile());
    let passes = flags.drivers.passes(&flags.server)?;
    let mut settings = settings;
    settings.shape.keep_catalogue = flags.catalogue == Catalogue::Existing;
    let order_seed = u64::try_from(started_at.timestamp_micros()).unwrap_or_default();
    let mut collected = Collected::default();
    let mut ran = Ran::new(flags.repeat);
    let mut cap = None;
    let mut outcome = Ok(());
    for pass in &passes {
        let server = match ran.start(pass, &flags.strategies, &folder).await {
            Ok(Some(server)) => server,
            Ok(None) => continue,
            Err(err) if pass.first => return Err(err),
            Err(err) => {
                outcome = Err(err);
                break;
            }
        };
        // Every pass runs on the same catalogue; each server says how large it is.
        match flags.regulars(&server).await {
            Ok(regulars) => settings.shape.regulars = regulars,
            Err(err) => {
                server.stop().await;
                if pass.first {
                    return Err(err);
                }
                outcome = Err(err);
                break;
            }
        }
        let orders = shuffled(&ran.pass_strategies, flags.repeat, order_seed);
        ran.record(&orders);
        let measured = async {
            // Measured once: every pass's searches stop at the same ceiling.
            let cap = match cap {
                Some(cap) => cap,
                None => *cap.insert(generator_cap(&settings).await?),
            };
            for (repetition, order) in (1u32..).zip(&orders) {
                measure(&server, order, &settings, cap, &folder.id, repetition, &mut collected).await?;
            }
            anyhow::Ok(())
        };
        outcome = tokio::select! {
            outcome = measured => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted: the searches finished before Ctrl-C are written")),
        };
        server.stop().await;
        if outcome.is_err() {
            break;
        }
    }
    let mut meta = meta::RunMeta {
        run_id: folder.id.clone(),
        started_at: started_at.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        git,
        versions: meta::versions(&flags.server.database_url, &flags.server.redis_url).await,
        host: meta::host(),
        profile: meta::profile().to_owned(),
        preset: "capacity".to_owned(),
        command,
        options: serde_json::json!({
            "capacity": settings.describe(),
            "repeat": flags.repeat,
            "strategies": ran.strategies.iter().map(StrategyInfo::label).collect::<Vec<_>>(),
            "drain_timeout_secs": flags.drain_timeout_secs,
            "order_seed": order_seed,
            "server_args": flags.server.server_args,
        }),
        strategies: ran.strategies,
        repetition_order: ran.repetition_order,
        server: ran.server.unwrap_or_default(),
        incomplete: outcome.as_ref().err().map(|err| format!("{err:#}")),
    };
    drivers::record(&mut meta.options, &flags.drivers);
    std::fs::write(folder.file("run.json"), serde_json::to_string_pretty(&meta)?)
        .with_context(|| format!("cannot write {}", folder.file("run.json").display()))?;
    collected.write(&folder)?;
    folder.mark_latest(&flags.out)?;
    outcome?;
    if !flags.no_report {
        let rendered =
            crate::report::render(&folder.path).context("the run is written, but its report failed")?;
        eprintln!("bench: report {}", rendered.index_html.display());
    }
    Ok(CapacityReport { folder, strategies: meta.strategies, rows: collected.rows })
}
