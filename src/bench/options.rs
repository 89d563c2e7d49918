//! `bench` flags and the presets they start from. Every load flag is optional: a preset fills what
//! the command line leaves out, and `run.json` records the values that were used.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::capacity::{CapacityArgs, Depth, Settings};
use crate::loadgen::{LoadPlan, Model, Scenario};

/// Starting points for the load flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Capacity, then the flash sale: 10,000 purchases per second offered against 10,000 units
    /// of product 100, two repetitions.
    Default,
    /// A short comparison for CI: a short capacity search, then 3,000 per second against 2,000
    /// units, one repetition.
    Ci,
    /// The seed's Locust shape: 5,500 users, each buying once every ten seconds.
    SeedLocust,
}

impl Preset {
    /// How deep the capacity step of `compare` searches; `None`: no capacity step unless asked.
    pub const fn capacity_depth(self) -> Option<Depth> {
        match self {
            Self::Default => Some(Depth::Full),
            Self::Ci => Some(Depth::Short),
            // Locust's shape is a closed model of users; the preset reproduces it, nothing more.
            Self::SeedLocust => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Ci => "ci",
            Self::SeedLocust => "seed-locust",
        }
    }

    /// The preset's sale and how many times `compare` repeats it.
    pub(crate) fn plan(self) -> (LoadPlan, u32) {
        let scenario = Scenario {
            hot_product: 100,
            hot_stock: 10_000,
            hot_weight: 100,
            regular_weight: 3,
            products: 1_000,
            quantity: 1,
            seed: 42,
        };
        let default = LoadPlan {
            model: Model::Open,
            rate: 10_000.0,
            connections: 256,
            users: 5_500,
            user_rate: 0.1,
            ramp: Duration::from_secs(1),
            scenario,
            // The slowest strategies sell 10,000 units in 4-8 s here; a run still going at 15 s
            // has said what it can.
            duration: Duration::from_secs(15),
            max_requests: None,
            grace: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            give_up: None,
        };
        match self {
            Self::Default => (default, 2),
            Self::Ci => (
                LoadPlan {
                    rate: 3_000.0,
                    connections: 64,
                    scenario: Scenario { hot_stock: 2_000, products: 200, ..default.scenario.clone() },
                    duration: Duration::from_secs(8),
                    grace: Duration::from_millis(500),
                    timeout: Duration::from_secs(15),
                    ..default
                },
                1,
            ),
            Self::SeedLocust => (
                LoadPlan {
                    model: Model::Closed,
                    connections: 512,
                    ramp: Duration::from_secs(10),
                    duration: Duration::from_secs(60),
                    ..default
                },
                1,
            ),
        }
    }
}

/// The load: who buys, how fast, until when.
#[derive(Debug, Clone, Default, Args)]
pub struct LoadFlags {
    /// Starting values for every flag below that is not given.
    #[arg(long, value_enum, default_value = "default")]
    pub preset: Option<Preset>,
    /// Arrival model: `open` sends at a constant rate whatever the server does (latency from the
    /// intended send time); `closed` runs users who wait for each answer, then think.
    #[arg(long, value_enum)]
    pub model: Option<Model>,
    /// Open model: requests per second offered [default: 10000; ci: 3000].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Keep-alive connections to the server [default: 256; ci: 64; seed-locust: 512].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Closed model: users [default: 5500].
    #[arg(long)]
    pub users: Option<usize>,
    /// Closed model: purchases per second per user, as Locust's `constant_throughput`; 0 = no
    /// think time [default: 0.1].
    #[arg(long)]
    pub user_rate: Option<f64>,
    /// Closed model: users start spread over this many milliseconds [default: 1000; seed-locust:
    /// 10000].
    #[arg(long)]
    pub ramp_ms: Option<u64>,
    /// The product everyone hunts [default: 100].
    #[arg(long)]
    pub hot_product: Option<i64>,
    /// Its stock at each reset [default: 10000; ci: 2000].
    #[arg(long)]
    pub hot_stock: Option<i64>,
    /// Weight of hot-product hunters [default: 100].
    #[arg(long)]
    pub hot_weight: Option<u32>,
    /// Weight of regular customers, who buy a random product [default: 3].
    #[arg(long)]
    pub regular_weight: Option<u32>,
    /// Catalogue size: products 1..=N, random stock [default: 1000; ci: 200].
    #[arg(long)]
    pub products: Option<i64>,
    /// Units per purchase [default: 1].
    #[arg(long)]
    pub quantity: Option<u32>,
    /// Seeds the buyers and the catalogue's stock [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Longest run per strategy, seconds [default: 30; ci: 8; seed-locust: 60].
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Stop each run after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Keep going this long after the hot product sold out, milliseconds [default: 1000; ci: 500].
    #[arg(long)]
    pub grace_ms: Option<u64>,
    /// A request without an answer after this long is a `timeout` error [default: 30000; ci:
    /// 15000].
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

impl LoadFlags {
    pub fn preset(&self) -> Preset {
        self.preset.unwrap_or(Preset::Default)
    }

    /// The plan and repetitions: the preset, overridden by every flag given.
    ///
    /// # Errors
    /// When a duration is negative or not a number, or the plan cannot run.
    pub fn resolve(&self) -> anyhow::Result<(LoadPlan, u32)> {
        let (mut plan, repeat) = self.preset().plan();
        macro_rules! take {
            ($($flag:ident => $field:expr),* $(,)?) => {
                $(if let Some(value) = self.$flag.clone() { $field = value; })*
            };
        }
        take!(
            model => plan.model,
            rate => plan.rate,
            connections => plan.connections,
            users => plan.users,
            user_rate => plan.user_rate,
            hot_product => plan.scenario.hot_product,
            hot_stock => plan.scenario.hot_stock,
            hot_weight => plan.scenario.hot_weight,
            regular_weight => plan.scenario.regular_weight,
            products => plan.scenario.products,
            quantity => plan.scenario.quantity,
            seed => plan.scenario.seed,
        );
        if let Some(ms) = self.ramp_ms {
            plan.ramp = Duration::from_millis(ms);
        }
        if let Some(secs) = self.duration_secs {
            plan.duration = Duration::try_from_secs_f64(secs)
                .map_err(|_| anyhow::anyhow!("--duration-secs must be a positive number, got {secs}"))?;
        }
        if let Some(requests) = self.requests {
            plan.max_requests = Some(requests);
        }
        if let Some(ms) = self.grace_ms {
            plan.grace = Duration::from_millis(ms);
        }
        if let Some(ms) = self.timeout_ms {
            plan.timeout = Duration::from_millis(ms);
        }
        plan.validate()?;
        Ok((plan, repeat))
    }
}

/// How bench reaches (or starts) the server.
#[derive(Debug, Clone, Args)]
pub struct ServerFlags {
    /// Drive the server at this URL instead of starting one (it must accept admin calls from
    /// here: loopback, or `--admin-token`).
    #[arg(long, env = "BENCH_URL")]
    pub url: Option<String>,
    /// Bearer token for the server's /admin routes.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, value_parser = crate::config::admin_token)]
    pub admin_token: Option<String>,
    /// The database of the server bench starts: PostgreSQL, or `mysql://…` for MariaDB (README,
    /// "MariaDB"); created when missing.
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/checkout_bench"
    )]
    pub database_url: String,
    /// Redis for the server bench starts.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Prefix of the Redis keys of the server bench starts.
    #[arg(long, env = "BENCH_REDIS_PREFIX", default_value = "bench:")]
    pub redis_prefix: String,
    /// Extra flag for the server bench starts, repeatable: `--server-arg=--pg-connections=16`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Server processes bench starts, each on its own port, sharing the database and Redis; the
    /// load is spread over all of them (connection i goes to replica i mod N). Strategies that keep
    /// their books in one process (`memory`) are left out when above 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub replicas: u16,
}

/// `bench compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareFlags {
    #[command(flatten)]
    pub load: LoadFlags,
    #[command(flatten)]
    pub server: ServerFlags,
    #[command(flatten)]
    pub drivers: super::drivers::DriverFlags,
    /// Strategies to compare, comma-separated [default: every strategy the server has].
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Repetitions of the flash sale; the order of strategies is shuffled in each [default: 2;
    /// ci, seed-locust: 1].
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Search each strategy's sustainable capacity before the flash sale (`--capacity=false`
    /// skips it) [default: true; seed-locust: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub capacity: Option<bool>,
    #[command(flatten)]
    pub capacity_search: CapacityArgs,
    /// After the flash sale, run it once more for each strategy whose capacity it did not reach,
    /// offered 1.5 times that capacity, to time its sell-out at saturation (`--saturation=false`
    /// skips it) [default: true whenever the capacity step runs].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub saturation: Option<bool>,
    /// Where run folders go.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Longest wait for queueing strategies to persist what they accepted, seconds.
    #[arg(long, default_value_t = 60)]
    pub drain_timeout_secs: u64,
    /// Exit non-zero when a safe strategy's run is invalid or a ratio fell below the baseline.
    #[arg(long)]
    pub gate: bool,
    /// The gate's baseline.
    #[arg(long, default_value = "results/baseline.json")]
    pub baseline: PathBuf,
    /// Record this run's ratios as the baseline of its profile and preset.
    #[arg(long)]
    pub write_baseline: bool,
    /// Do not render the charts and the page after the run.
    #[arg(long)]
    pub no_report: bool,
}

impl CompareFlags {
    /// The capacity step's settings for `plan` (its product and connections), `None` without one.
    ///
    /// # Errors
    /// When a capacity flag makes no search.
    pub fn capacity_settings(&self, plan: &LoadPlan) -> anyhow::Result<Option<Settings>> {
        let preset = self.load.preset();
        let depth = match (self.capacity, preset.capacity_depth()) {
            (Some(false), _) => return Ok(None),
            (Some(true), None) => Depth::Full,
            (_, depth) => match depth {
                Some(depth) => depth,
                None => return Ok(None),
            },
        };
        let drain = Duration::from_secs(self.drain_timeout_secs);
        self.capacity_search
            .settings_near_last(depth, plan.scenario.hot_product, plan.connections, drain, &self.out)
            .map(Some)
    }

    /// Whether the saturation step runs: it needs the capacities the capacity step finds.
    ///
    /// # Errors
    /// `--saturation` asked for without a capacity step.
    pub fn saturation_step(&self, capacity_step: bool) -> anyhow::Result<bool> {
        match self.saturation {
            Some(true) if !capacity_step => anyhow::bail!(
                "--saturation needs the capacity step (it offers each strategy more than its capacity): \
                 drop --capacity=false, or pick a preset that searches capacity"
            ),
            Some(asked) => Ok(asked),
            None => Ok(capacity_step),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadFlags,
    }

    fn resolve(args: &[&str]) -> anyhow::Result<(LoadPlan, u32)> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .expect("flags parse")
            .load
            .resolve()
    }

    #[test]
    fn a_preset_fills_what_the_flags_leave_out() {
        let (plan, repeat) = resolve(&["--preset", "ci", "--rate", "500"]).unwrap();
        assert_eq!(plan.rate, 500.0, "the flag wins");
        assert_eq!(plan.scenario.hot_stock, 2_000, "the preset fills the rest");
        assert_eq!(repeat, 1);
        let (plan, repeat) = resolve(&[]).unwrap();
        assert_eq!(
            (plan.model, plan.rate, plan.scenario.hot_stock, repeat),
            (Model::Open, 10_000.0, 10_000, 2)
        );
        let (plan, _) = resolve(&["--preset", "seed-locust"]).unwrap();
        assert_eq!((plan.model, plan.users, plan.user_rate), (Model::Closed, 5_500, 0.1));
    }

    #[test]
    fn impossible_plans_are_refused_with_the_flag_named() {
        for (args, flag) in [
            (&["--rate", "0"][..], "--rate"),
            (&["--connections", "0"], "--connections"),
            (&["--duration-secs=-1"], "--duration-secs"),
            (&["--model", "closed", "--users", "0"], "--users"),
            (&["--quantity", "0"], "--quantity"),
            (&["--requests", "0"], "--requests"),
        ] {
            let err = resolve(args).unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }
}
