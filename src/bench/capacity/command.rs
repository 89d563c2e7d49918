//! `bench capacity`: every selected strategy's search, `--repeat` times in a shuffled order, in a
//! run folder of its own (`run.json`, `capacity.csv`, `capacity_steps.csv`, the report).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;

use super::{CapacityArgs, Collected, Depth, generator_cap, measure};
use crate::bench::options::ServerFlags;
use crate::bench::server::Server;
use crate::run_folder::{CapacityRow, RunFolder, StrategyInfo, meta};

/// `bench capacity`.
#[derive(Debug, Clone, Args)]
pub struct CapacityFlags {
    #[command(flatten)]
    pub search: CapacityArgs,
    #[command(flatten)]
    pub server: ServerFlags,
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
    let server = Server::start(&flags.server, &folder.file("server.log")).await?;
    let strategies = match server.strategies().await {
        Ok(available) => crate::bench::select(&available, &flags.strategies),
        Err(err) => Err(err),
    };
    let strategies = match strategies {
        Ok(strategies) => strategies,
        Err(err) => {
            server.stop().await;
            return Err(err);
        }
    };
    let order_seed = u64::try_from(started_at.timestamp_micros()).unwrap_or_default();
    let orders: Vec<Vec<StrategyInfo>> = (0..flags.repeat)
        .map(|rep| {
            let mut order = strategies.clone();
            order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
                order_seed.wrapping_add(u64::from(rep)),
            ));
            order
        })
        .collect();
    let mut collected = Collected::default();
    let measured = async {
        let cap = generator_cap(&settings).await?;
        for (repetition, order) in (1u32..).zip(&orders) {
            measure(&server, order, &settings, cap, &folder.id, repetition, &mut collected).await?;
        }
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        outcome = measured => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted: the searches finished before Ctrl-C are written")),
    };
    let meta = meta::RunMeta {
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
            "strategies": strategies.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            "drain_timeout_secs": flags.drain_timeout_secs,
            "order_seed": order_seed,
            "server_args": flags.server.server_args,
        }),
        strategies,
        repetition_order: orders.iter().map(|order| order.iter().map(|s| s.name.clone()).collect()).collect(),
        server: meta::ServerInfo { url: server.target.base().to_owned(), spawned: server.spawned() },
        incomplete: outcome.as_ref().err().map(|err| format!("{err:#}")),
    };
    server.stop().await;
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
