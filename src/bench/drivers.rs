//! `--pg-driver sqlx,tokio-postgres`: one comparison, the per-sale SQL strategies measured once per
//! PostgreSQL client. The driver is a server setting, so bench runs a pass per driver, each on a
//! server of its own started with `--pg-driver` (one after the other, never side by side: two
//! servers would share the database and Redis, their workers and sweepers included). The first
//! pass runs every selected strategy; each later one only those the driver switches. Rows of a
//! driver other than sqlx are labelled `<strategy>@<driver>` ([`StrategyInfo::label`]).

use std::path::PathBuf;

use anyhow::Context;
use checkout_strategies::{PgDriver, SqlBackend};
use clap::Args;

use super::options::ServerFlags;
use crate::run_folder::{RunFolder, StrategyInfo};

/// Which PostgreSQL clients the per-sale SQL strategies are measured on.
#[derive(Debug, Clone, Default, Args)]
pub struct DriverFlags {
    /// PostgreSQL clients of the per-sale SQL strategies, comma-separated (`sqlx`,
    /// `tokio-postgres`): a server per driver, one after the other; every selected strategy on
    /// the first, the strategies the driver switches again on each other one, their rows labelled
    /// `<strategy>@<driver>` [default: the server's own, sqlx unless PG_DRIVER says otherwise].
    #[arg(long = "pg-driver", value_delimiter = ',')]
    pub pg_drivers: Vec<PgDriver>,
    /// More databases to measure the SQL strategies on, comma-separated URLs
    /// (`mysql://root@127.0.0.1:3306/checkout_bench`): after the passes on --database-url, a server
    /// per database, one after the other, running the selected strategies that keep their books in
    /// SQL and run there, their rows labelled `<strategy>@<database>` (`sql-atomic@mysql`).
    #[arg(long = "also-database", value_delimiter = ',', value_name = "URL")]
    pub also_databases: Vec<String>,
}

/// One server of a comparison and what runs on it.
#[derive(Debug, Clone)]
pub struct Pass {
    /// How bench starts (or reaches) it.
    pub server: ServerFlags,
    /// The driver it was started with; `None`: the server's own.
    pub driver: Option<PgDriver>,
    /// The database of an `--also-database` pass: it runs the selected SQL strategies again there.
    pub database: Option<SqlBackend>,
    /// The first pass runs every selected strategy; the others only the driver-switched ones (or,
    /// on another database, the SQL ones).
    pub first: bool,
}

impl DriverFlags {
    /// The passes to run against `server`: one with the server as it is when no driver was
    /// asked for (today's comparison), else one per driver, in the order given.
    ///
    /// # Errors
    /// When drivers or more databases are asked of a server bench does not start (`--url`): bench
    /// cannot restart it; when a database URL names no supported server.
    pub fn passes(&self, server: &ServerFlags) -> anyhow::Result<Vec<Pass>> {
        let mut passes = self.driver_passes(server)?;
        anyhow::ensure!(
            server.url.is_none() || self.also_databases.is_empty(),
            "--also-database starts a server per database: it needs a server bench starts, not --url"
        );
        for url in &self.also_databases {
            let database = SqlBackend::from_url(url).with_context(|| format!("--also-database {url}"))?;
            let mut flags = server.clone();
            flags.database_url.clone_from(url);
            passes.push(Pass { server: flags, driver: None, database: Some(database), first: false });
        }
        Ok(passes)
    }

    fn driver_passes(&self, server: &ServerFlags) -> anyhow::Result<Vec<Pass>> {
        let mut drivers: Vec<PgDriver> = Vec::new();
        for driver in &self.pg_drivers {
            if !drivers.contains(driver) {
                drivers.push(*driver);
            }
        }
        if drivers.is_empty() {
            return Ok(vec![Pass { server: server.clone(), driver: None, database: None, first: true }]);
        }
        anyhow::ensure!(
            server.url.is_none() || drivers.len() == 1,
            "--pg-driver with several drivers restarts the server for each: it needs a server bench starts, not --url"
        );
        Ok(drivers
            .into_iter()
            .enumerate()
            .map(|(index, driver)| {
                let mut flags = server.clone();
                if flags.url.is_none() {
                    flags.server_args.push(format!("--pg-driver={driver}"));
                }
                Pass { server: flags, driver: Some(driver), database: None, first: index == 0 }
            })
            .collect())
    }
}

/// Notes the drivers asked for in `run.json`'s options (`pg_drivers`), when any were: a run without
/// `--pg-driver` writes what it always wrote.
pub fn record(options: &mut serde_json::Value, flags: &DriverFlags) {
    let Some(options) = options.as_object_mut() else { return };
    if !flags.pg_drivers.is_empty() {
        options.insert("pg_drivers".into(), serde_json::json!(flags.pg_drivers));
    }
    if !flags.also_databases.is_empty() {
        options.insert("also_databases".into(), serde_json::json!(flags.also_databases));
    }
}

impl Pass {
    /// The server's log in `folder`: `server.log` for the first pass, as before drivers, and
    /// `server-<driver>.log` for the others.
    pub fn log(&self, folder: &RunFolder) -> PathBuf {
        match (self.first, self.driver, self.database) {
            (false, _, Some(database)) => folder.file(&format!("server-{database}.log")),
            (false, Some(driver), None) => folder.file(&format!("server-{driver}.log")),
            _ => folder.file("server.log"),
        }
    }

    /// Whether this pass has something to run of `selected` (a later pass runs only some).
    pub fn runs_any_of(&self, selected: &[StrategyInfo]) -> bool {
        self.first || selected.iter().any(|strategy| self.runs_again(strategy))
    }

    /// Whether a later pass runs `strategy` again: its driver switches it, or its database holds
    /// its books.
    fn runs_again(&self, strategy: &StrategyInfo) -> bool {
        if self.database.is_some() { strategy.uses_database() } else { strategy.pg_driver.is_some() }
    }

    /// The strategies this pass runs, from the server's own list (`available`) and the selection
    /// of the first pass (`selected`): all of them on the first pass, the driver-switched ones on
    /// the others, each as this server describes it (its driver included).
    ///
    /// # Errors
    /// When the server runs the switched strategies on another driver than asked (a `--url`
    /// server, or one that ignored the flag).
    pub fn choose(
        &self,
        available: &[StrategyInfo],
        selected: &[StrategyInfo],
    ) -> anyhow::Result<Vec<StrategyInfo>> {
        let chosen: Vec<StrategyInfo> = selected
            .iter()
            .filter(|strategy| self.first || self.runs_again(strategy))
            .filter_map(|strategy| available.iter().find(|s| s.name == strategy.name).cloned())
            .collect();
        if let Some(database) = self.database {
            let (runs, elsewhere): (Vec<StrategyInfo>, Vec<StrategyInfo>) =
                chosen.into_iter().partition(|s| s.available);
            if !elsewhere.is_empty() {
                let names: Vec<&str> = elsewhere.iter().map(|s| s.name.as_str()).collect();
                eprintln!("bench: not on {database}: {} (not ported to it)", names.join(", "));
            }
            return Ok(runs);
        }
        if let Some(driver) = self.driver
            && let Some(other) =
                chosen.iter().find(|s| s.pg_driver.as_deref().is_some_and(|used| used != driver.as_str()))
        {
            anyhow::bail!(
                "--pg-driver {driver}: the server runs {} on {}",
                other.name,
                other.pg_driver.as_deref().unwrap_or_default()
            );
        }
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerFlags,
        #[command(flatten)]
        drivers: DriverFlags,
    }

    fn passes(args: &[&str]) -> anyhow::Result<Vec<Pass>> {
        let cli =
            Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).expect("flags parse");
        cli.drivers.passes(&cli.server)
    }

    fn info(name: &str, pg_driver: Option<&str>) -> StrategyInfo {
        StrategyInfo {
            name: name.into(),
            backend: "postgres".into(),
            safe: true,
            durable: true,
            queued: false,
            pg_driver: pg_driver.map(str::to_owned),
            single_process: false,
            database: None,
            available: true,
        }
    }

    #[test]
    fn without_drivers_the_comparison_is_one_pass_on_the_server_as_it_is() {
        let only = passes(&[]).unwrap();
        assert_eq!(only.len(), 1);
        assert!(only[0].first && only[0].driver.is_none());
        assert!(only[0].server.server_args.is_empty(), "no flag added: today's output unchanged");
    }

    #[test]
    fn each_driver_gets_a_server_started_with_it() {
        let both =
            passes(&["--pg-driver", "sqlx,tokio-postgres,sqlx", "--server-arg=--pg-connections=4"]).unwrap();
        assert_eq!(both.len(), 2, "a driver named twice runs once");
        assert_eq!(both[0].server.server_args, ["--pg-connections=4", "--pg-driver=sqlx"]);
        assert_eq!(both[1].server.server_args, ["--pg-connections=4", "--pg-driver=tokio-postgres"]);
        assert!(both[0].first && !both[1].first);
        assert!(
            Cli::try_parse_from(["bench", "--pg-driver", "diesel"]).is_err(),
            "unknown drivers are refused"
        );
        assert!(passes(&["--url", "http://127.0.0.1:8080", "--pg-driver", "sqlx,tokio-postgres"]).is_err());
        let one = passes(&["--url", "http://127.0.0.1:8080", "--pg-driver", "tokio-postgres"]).unwrap();
        assert!(one[0].server.server_args.is_empty(), "a server bench does not start gets no flag");
    }

    #[test]
    fn later_passes_run_the_driver_switched_strategies_only_and_check_the_driver() {
        let both = passes(&["--pg-driver", "sqlx,tokio-postgres"]).unwrap();
        let selected = [info("memory", None), info("sql-atomic", Some("sqlx"))];
        let first = both[0].choose(&selected, &selected).unwrap();
        assert_eq!(first, selected, "the first pass runs every selected strategy");
        let raw = [info("memory", None), info("sql-atomic", Some("tokio-postgres"))];
        let second = both[1].choose(&raw, &selected).unwrap();
        assert_eq!(second, [info("sql-atomic", Some("tokio-postgres"))]);
        assert_eq!(second[0].label(), "sql-atomic@tokio-postgres");
        let err = both[1].choose(&selected, &selected).unwrap_err().to_string();
        assert!(err.contains("runs sql-atomic on sqlx"), "{err}");
    }
}
