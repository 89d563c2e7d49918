//! `bench`: drives every strategy through the same flash sale and says which sells exactly the
//! stock, and how fast. `bench compare` is the main job; `bench capacity` searches each
//! strategy's sustainable rate; `bench run` drives one strategy; `bench check` gates a finished
//! run; `bench chaos` injects faults and says which strategy stays exact.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use checkout_bench::bench;
use checkout_bench::bench::capacity::CapacityFlags;
use checkout_bench::bench::ceilings::{self, CeilingFlags};
use checkout_bench::bench::chaos::{self, ChaosFlags};
use checkout_bench::bench::options::{CompareFlags, LoadFlags, ServerFlags};
use checkout_bench::bench::scale::ScaleFlags;
use checkout_bench::bench::server::{self, Server, StrategyInfo};
use checkout_bench::server_cli::{self, ServerCli};
use checkout_bench::{loadgen, report};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Flash-sale checkout benchmark: every strategy, the same sale, an audit of every unit.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare strategies: for each, reset → load → drain → audit, repeated; write
    /// results/<run-id>/ and render the report.
    Compare(Box<CompareFlags>),
    /// Search each strategy's sustainable capacity: the highest offered rate with p99 (from the
    /// intended send time) within --slo-ms, nothing unsent, no error; write capacity.csv and
    /// capacity_steps.csv into results/<run-id>/ and render the report.
    Capacity(Box<CapacityFlags>),
    /// Does capacity hold on the seed's catalogue? For each `--scales` catalogue (default 100,000
    /// products, then 5,000,000 products with 10,000,000 orders): load it once with `server
    /// populate` into a database of its own, search every strategy's capacity on it with regular
    /// customers over all its products, and write scale.csv: capacity per catalogue, ratio to the
    /// first.
    Scale(Box<ScaleFlags>),
    /// Drive one strategy on a running server (no reset unless --reset) and print what clients saw.
    Run(Box<RunFlags>),
    /// Gate a finished run: exit 1 when a safe strategy's run is invalid or a throughput ratio fell
    /// below results/baseline.json.
    Check {
        /// The run folder.
        #[arg(default_value = "results/latest")]
        dir: PathBuf,
        /// The baseline.
        #[arg(long, default_value = "results/baseline.json")]
        baseline: PathBuf,
    },
    /// Fault scenarios against a server, a Redis and a fault proxy of its own: for each scenario ×
    /// strategy, a storm of buyers, the fault mid-storm, recovery, drain and audit; prints a table
    /// and exits 1 when a safe strategy is not exact.
    Chaos(Box<ChaosFlags>),
    /// Measure the raw ceilings beside the strategies on this machine: wrk and our own client
    /// against a static route and `memory`, redis-benchmark of each Redis strategy's command,
    /// pgbench of `sql-atomic`'s statement, mysqlslap of its MariaDB transaction; write
    /// ceilings.csv and ceiling_ratios.csv.
    Ceilings(Box<CeilingFlags>),
    /// The checkout server itself (what `compare` starts when no --url is given).
    #[command(hide = true)]
    Serve(Box<ServerCli>),
}

#[derive(Debug, clap::Args)]
struct RunFlags {
    /// The strategy to drive.
    #[arg(long)]
    strategy: String,
    /// Reset the shop to the scenario's catalogue first.
    #[arg(long)]
    reset: bool,
    #[command(flatten)]
    load: LoadFlags,
    #[command(flatten)]
    server: ServerFlags,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()))
        .with_writer(std::io::stderr)
        .init();
    match execute(cli.command).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Compare(flags) => {
            let command_line = std::env::args().collect::<Vec<_>>().join(" ");
            let comparison = bench::compare(&flags, command_line).await?;
            let names: Vec<String> = comparison.strategies.iter().map(StrategyInfo::label).collect();
            let capacity = report::capacity::figures(&names, &comparison.capacity, &[]);
            let figures = report::figures::of_rows(names, &comparison.rows);
            println!();
            for line in report::capacity::headline(&capacity)
                .into_iter()
                .chain(report::table::headline(&figures, true))
            {
                println!("{line}");
            }
            if !capacity.is_empty() {
                println!("\nSustainable capacity\n{}", report::capacity::text(&capacity));
            }
            println!("\nFlash sale\n{}", report::table::text(&figures, true));
            println!("results: {}", comparison.folder.path.display());
            if let Some(gate) = &comparison.gate {
                println!("{}", bench::describe_gate(gate));
                if !gate.passed {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Capacity(flags) => {
            let command_line = std::env::args().collect::<Vec<_>>().join(" ");
            let measured = bench::capacity::run(&flags, command_line).await?;
            let names: Vec<String> = measured.strategies.iter().map(StrategyInfo::label).collect();
            let capacity = report::capacity::figures(&names, &measured.rows, &[]);
            println!();
            for line in report::capacity::headline(&capacity) {
                println!("{line}");
            }
            println!("\n{}", report::capacity::text(&capacity));
            println!("{}", report::capacity::legend(&capacity));
            println!("results: {}", measured.folder.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Scale(flags) => {
            let command_line = std::env::args().collect::<Vec<_>>().join(" ");
            let measured = bench::scale::run(&flags, command_line).await?;
            println!("\nCapacity by catalogue\n{}", measured.table);
            println!("results: {}", measured.folder.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(flags) => {
            let RunFlags { strategy, reset, load, server } = *flags;
            let (plan, _) = load.resolve()?;
            let log = std::env::temp_dir().join(format!("bench-server-{}.log", std::process::id()));
            let server = Server::start(&server, &log).await?;
            if reset {
                server.reset(&plan.scenario.reset_plan()).await?;
            }
            let record = loadgen::run(&plan, &server.target, &strategy, &format!("[{strategy}]")).await;
            server.stop().await;
            let record = record?;
            let at = |p: f64| record.success.value_at_percentile(p) as f64 / 1e3;
            let due = record.due_latency();
            let due_at = |p: f64| due.value_at_percentile(p) as f64 / 1e3;
            let summary = serde_json::json!({
                "strategy": strategy,
                "model": plan.model,
                "offered_rps": plan.offered_rps(),
                "achieved_rps": record.achieved_rps(),
                "counts": record.counts,
                "unsent": record.unsent,
                "errors": record.errors,
                "duration_ms": record.duration.as_secs_f64() * 1e3,
                "sales_per_sec": record.sales_per_sec(),
                "time_to_sell_out_ms": record.time_to_sell_out.map(|d| d.as_secs_f64() * 1e3),
                "latency_ms": {"p50": at(50.0), "p90": at(90.0), "p99": at(99.0), "p999": at(99.9), "max": at(100.0)},
                "due_latency_ms": {"p50": due_at(50.0), "p99": due_at(99.0), "max": due_at(100.0)},
                "max_send_lag_ms": record.max_lag.as_secs_f64() * 1e3,
            });
            println!("{}", serde_json::to_string_pretty(&summary).context("cannot print the summary")?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { dir, baseline } => {
            let report = bench::check_folder(&dir, &baseline)?;
            println!("{}", bench::describe_gate(&report));
            Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Chaos(flags) => {
            let report = chaos::run(&flags).await?;
            println!("\n{}", chaos::table::text(&report.rows));
            println!("results: {}", report.folder.path.display());
            if report.passed() {
                println!("chaos: every safe strategy stayed exact");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("chaos: a safe strategy was NOT EXACT under a fault");
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Ceilings(flags) => {
            let report = ceilings::run(&flags).await?;
            println!("\n{}", ceilings::table(&report));
            println!("results: {}", report.folder.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(cli) => {
            let gone = std::env::var_os(server::PARENT_PIPE_ENV).is_some().then(parent_gone);
            let parent_left = async {
                match gone {
                    Some(gone) => {
                        let _ = gone.await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = server_cli::run(*cli) => result?,
                () = parent_left => eprintln!("bench serve: the bench that started this server is gone; stopping"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Fires when stdin (a pipe from the parent bench) reaches its end. Read on a plain thread: a
/// blocking read inside the runtime would keep the process from exiting when serving fails.
fn parent_gone() -> tokio::sync::oneshot::Receiver<()> {
    let (gone, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buffer = [0u8; 64];
        let mut stdin = std::io::stdin();
        while let Ok(1..) = stdin.read(&mut buffer) {}
        let _ = gone.send(());
    });
    receiver
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use clap::Parser;

    use super::{Cli, Command};
    use checkout_bench::bench::chaos::Fault;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn chaos_takes_scenarios_and_strategies_as_lists() {
        let cli = Cli::try_parse_from([
            "bench",
            "chaos",
            "--scenarios",
            "pg-terminate,server-crash",
            "--strategies",
            "sql-atomic,redis-lua",
        ])
        .expect("valid flags");
        let Command::Chaos(flags) = cli.command else { panic!("parsed as chaos: {cli:?}") };
        assert_eq!(flags.faults(), [Fault::PgTerminate, Fault::ServerCrash]);
        assert_eq!(flags.strategies, ["sql-atomic", "redis-lua"]);
        assert_eq!((flags.hot_stock, flags.clients), (200, 64), "defaults: 200 units, 64 clients");
        let err = Cli::try_parse_from(["bench", "chaos", "--scenarios", "meteor"]).unwrap_err().to_string();
        assert!(
            err.contains("redis-reply-timeout") && err.contains("same-key-mixed"),
            "lists every scenario: {err}"
        );
    }

    #[test]
    fn chaos_help_lists_every_scenario() {
        let mut command = Cli::command();
        let help = command.find_subcommand_mut("chaos").expect("chaos").render_long_help().to_string();
        for fault in Fault::ALL {
            assert!(help.contains(fault.as_str()), "--help names {fault}: {help}");
        }
    }
}
