//! `bench chaos`: fault scenarios against a live server bench starts itself, and a table that says
//! whether each safe strategy stays exact under each fault.
//!
//! The rig is bench's own: a disposable `redis-server` on a free loopback port, a fault proxy in
//! front of it ([`proxy`]), and the server (`bench serve`, as `compare` starts it) talking to Redis
//! through the proxy and to a database of its own, on PostgreSQL or MariaDB (`--database-url`'s
//! scheme). The shared Redis and database servers are never stopped; only what bench started is
//! killed, also on error and Ctrl-C.
//!
//! For each scenario × strategy: reset → a bounded storm of buyers ([`storm`]) → the fault,
//! mid-storm, and recovery ([`faults`]) → drain until the audit is settled → the audit and the
//! orders joined with what each client was told ([`super::join`]) → one row ([`table`]).

pub mod faults;
pub mod proxy;
pub mod redis_server;
pub mod storm;
pub mod table;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use checkout_strategies::SqlBackend;
use serde::Deserialize as _;
use serde_json::json;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use super::join::AuditView;
use super::options::ServerFlags;
use super::server::{Server, StrategyInfo};
use crate::run_folder::meta;
use crate::run_folder::{self as results, RunFolder};
pub use faults::Fault;
use proxy::FaultProxy;
use redis_server::DisposableRedis;
use storm::{HOT, REGULARS, Reply, SameKey, Storm};
pub use table::{Row, Verdict};

/// Flags the server under chaos always gets: short timeouts, so a fault is answered (503) within
/// the storm rather than waited out, and a short claim time, so the stream entries of a killed
/// worker are taken over within the drain.
const SERVER_ARGS: [&str; 6] = [
    "--request-timeout-ms=2000",
    "--redis-response-timeout-ms=500",
    "--pg-acquire-timeout-ms=1000",
    "--pg-statement-timeout-ms=3000",
    "--claim-idle-ms=2000",
    "--default-products=10",
];

/// How long a storm buyer waits for one answer: past the server's request timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(4);

/// Where in the storm the fault comes: this share of the spread in.
const FAULT_AT: f64 = 0.3;

/// Same-key scenario: keys, and copies of each.
const SAME_KEYS: u64 = 24;
const SAME_KEY_COPIES: u64 = 8;

/// How often the drain asks the audit whether the books are final.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// How long a case waits for the server to report every backend up before it starts; past it, the
/// server is started again.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// `bench chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosFlags {
    /// Scenarios to run, comma-separated [default: all, in the order below].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenarios: Vec<Fault>,
    /// Strategies, comma-separated [default: every safe strategy the server runs on its database].
    /// Unsafe ones may be named; their rows do not decide the exit status.
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Units of the hot product (100) at each reset; the storm sends twice as many buyers, one in
    /// ten to one of three other products (20 units each).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub hot_stock: i64,
    /// Buyers in flight at once at most.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub clients: u64,
    /// Buyers start evenly spread over this many milliseconds; the fault comes 30% in.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(500..=600_000))]
    pub storm_ms: u64,
    /// Longest wait, after the storm, for the audit to say the books are final (`settled`, nothing
    /// stranded), seconds.
    #[arg(long, default_value_t = 20)]
    pub drain_timeout_secs: u64,
    /// Database of the server chaos starts, PostgreSQL or `mysql://…` for MariaDB: created when
    /// missing. `pg-terminate` ends every session on this database, so it must be one of its own.
    #[arg(
        long,
        env = "BENCH_CHAOS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/checkout_chaos"
    )]
    pub database_url: String,
    /// Extra flag for the server, repeatable: `--server-arg=--pg-connections=16`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Where run folders go.
    #[arg(long, default_value = "results/chaos")]
    pub out: PathBuf,
    /// The `bench` executable that serves [default: this one]; tests point it at the built bench.
    #[arg(skip)]
    pub server_exe: Option<PathBuf>,
}

impl ChaosFlags {
    /// The scenarios to run: the chosen ones in the order given, or all.
    pub fn faults(&self) -> Vec<Fault> {
        if self.scenarios.is_empty() {
            return Fault::ALL.to_vec();
        }
        let mut faults = Vec::new();
        for fault in &self.scenarios {
            if !faults.contains(fault) {
                faults.push(*fault);
            }
        }
        faults
    }
}

impl ChaosFlags {
    /// The server's flags: chaos's own ([`SERVER_ARGS`]) but those a `--server-arg` sets too
    /// (the server refuses a flag given twice), then the `--server-arg`s.
    fn all_server_args(&self) -> Vec<String> {
        let name = |arg: &str| arg.split('=').next().unwrap_or_default().to_owned();
        let overridden: Vec<String> = self.server_args.iter().map(|arg| name(arg)).collect();
        SERVER_ARGS
            .iter()
            .filter(|arg| !overridden.contains(&name(arg)))
            .map(|arg| (*arg).to_owned())
            .chain(self.server_args.iter().cloned())
            .collect()
    }
}

/// A row as `chaos.json` lists it: its fields and its verdict.
fn row_json(row: &Row) -> serde_json::Value {
    let mut value = serde_json::to_value(row).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        fields.insert("verdict".to_owned(), json!(row.verdict().to_string()));
    }
    value
}

/// What a chaos run produced.
#[derive(Debug)]
pub struct ChaosReport {
    pub rows: Vec<Row>,
    pub folder: RunFolder,
}

impl ChaosReport {
    /// False when a safe strategy was not exact under some fault.
    pub fn passed(&self) -> bool {
        !self.rows.iter().any(Row::fails_the_run)
    }
}

/// Everything bench started for a chaos run.
#[derive(Debug)]
pub(crate) struct Rig {
    server: Server,
    proxy: FaultProxy,
    redis: DisposableRedis,
    database_url: String,
    /// The database's server and name, for the sessions `pg-terminate` ends.
    database: ChaosDatabase,
}

impl Rig {
    /// Redis, then the proxy in front of it, then the server behind both. Whatever started is
    /// killed if a later step fails (each child is killed on drop).
    async fn start(flags: &ChaosFlags, database: ChaosDatabase, folder: &RunFolder) -> anyhow::Result<Self> {
        let redis = DisposableRedis::start(&folder.path, &folder.file("redis.log")).await?;
        let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port()).into())
            .await
            .context("cannot start the Redis fault proxy")?;
        let server_flags = ServerFlags {
            url: None,
            admin_token: None,
            database_url: flags.database_url.clone(),
            redis_url: format!("redis://{}", proxy.addr()),
            redis_prefix: "chaos:".to_owned(),
            server_args: flags.all_server_args(),
            replicas: 1,
        };
        let server =
            Server::start_from(flags.server_exe.as_deref(), &server_flags, &folder.file("server.log"))
                .await?;
        Ok(Self { server, proxy, redis, database_url: flags.database_url.clone(), database })
    }

    /// Waits until the server reports every backend up (after a fault, reconnecting takes a
    /// moment); a server that does not within [`READY_TIMEOUT`] is killed and started again, so
    /// one fault's aftermath does not become the next case's fault.
    ///
    /// # Errors
    /// When the server does not come back.
    async fn ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if self.server.is_healthy().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "  the server did not report every backend up within {}s: restarting it",
            READY_TIMEOUT.as_secs()
        );
        self.server.kill().await?;
        self.server.restart().await
    }

    /// Stops the server (SIGTERM, then SIGKILL), the proxy and Redis.
    async fn stop(self) {
        let Self { server, proxy, redis, .. } = self;
        server.stop().await;
        drop(proxy);
        redis.stop().await;
    }
}

/// Runs the chaos `flags` describe and writes `chaos.json`, `chaos.csv` and `chaos.txt` into a
/// new folder under `--out` (the rows done so far, also when it fails half-way).
///
/// # Errors
/// When the rig cannot be started or brought back after a fault, an admin call fails, or the
/// files cannot be written.
pub async fn run(flags: &ChaosFlags) -> anyhow::Result<ChaosReport> {
    refuse_redis_cluster(std::env::var(CLUSTER_NODES_ENV).ok().as_deref(), &flags.server_args)?;
    let database = chaos_database(&flags.database_url)?;
    let git = meta::git();
    let folder = RunFolder::create(&flags.out, &git.short_sha)?;
    let started_at = chrono::Utc::now();
    eprintln!(
        "bench chaos: run {} ({} build, on {})",
        folder.path.display(),
        meta::profile(),
        database.backend.as_str()
    );
    let backend = database.backend;
    // Listened to from the start: a Ctrl-C while the rig starts drops what started so far (each
    // child is killed on drop) instead of leaving a Redis behind.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut rig = tokio::select! {
        rig = Rig::start(flags, database, &folder) => rig?,
        _ = &mut ctrl_c => anyhow::bail!("interrupted while starting the rig"),
    };
    let mut rows = Vec::new();
    let mut strategies = Vec::new();
    let outcome = tokio::select! {
        outcome = run_all(&mut rig, flags, &folder, &mut strategies, &mut rows) => outcome,
        _ = &mut ctrl_c => Err(anyhow::anyhow!("interrupted: the rows done before Ctrl-C are written")),
    };
    rig.stop().await;
    let summary = json!({
        "run_id": folder.id,
        "started_at": started_at.to_rfc3339(),
        "finished_at": chrono::Utc::now().to_rfc3339(),
        "git": git,
        "profile": meta::profile(),
        "options": {
            "scenarios": flags.faults(),
            "strategies": strategies,
            "hot_stock": flags.hot_stock,
            "clients": flags.clients,
            "storm_ms": flags.storm_ms,
            "drain_timeout_secs": flags.drain_timeout_secs,
            "database_url": flags.database_url,
            "database": backend.as_str(),
            "server_args": flags.all_server_args(),
        },
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
        "incomplete": outcome.as_ref().err().map(|err| format!("{err:#}")),
    });
    std::fs::write(folder.file("chaos.json"), serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", folder.file("chaos.json").display()))?;
    let lines: Vec<table::CsvLine> = rows.iter().map(table::CsvLine::from).collect();
    results::write_csv(&folder.file("chaos.csv"), &lines)?;
    std::fs::write(folder.file("chaos.txt"), table::text(&rows) + "\n")
        .with_context(|| format!("cannot write {}", folder.file("chaos.txt").display()))?;
    outcome?;
    Ok(ChaosReport { rows, folder })
}

/// Where the server reads its Redis Cluster nodes from; it inherits bench's environment.
const CLUSTER_NODES_ENV: &str = "REDIS_CLUSTER_NODES";

/// Refuses a run whose server would use a Redis Cluster: the Redis faults go through a TCP proxy
/// in front of the one `redis-server` chaos starts, and a cluster client connects to the
/// addresses the cluster announces, past any proxy (the server would also leave chaos's Redis
/// unused, so every Redis fault would hit nothing the server touches).
fn refuse_redis_cluster(env_nodes: Option<&str>, server_args: &[String]) -> anyhow::Result<()> {
    let from_env = env_nodes.is_some_and(|nodes| nodes.split(',').any(|node| !node.trim().is_empty()));
    let from_args = server_args.iter().any(|arg| arg.starts_with("--redis-cluster-nodes"));
    anyhow::ensure!(
        !from_env && !from_args,
        "bench chaos cannot run on a Redis Cluster ({}): it breaks Redis through a fault proxy in \
         front of one redis-server of its own, and a cluster client connects straight to the nodes \
         the cluster announces, past the proxy. Unset {CLUSTER_NODES_ENV} for bench chaos; the \
         cluster's own failures are tested in tests/e2e/redis_cluster.rs",
        if from_env { CLUSTER_NODES_ENV } else { "--server-arg=--redis-cluster-nodes" }
    );
    Ok(())
}

/// The database chaos's server keeps its books in: `pg-terminate` ends every session on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChaosDatabase {
    pub(crate) backend: SqlBackend,
    pub(crate) name: String,
}

/// Databases every server of its kind has, which other clients use: never chaos's.
const SHARED_DATABASES: [(SqlBackend, &[&str]); 2] = [
    (SqlBackend::Postgres, &["postgres", "template0", "template1"]),
    (SqlBackend::MySql, &["mysql", "information_schema", "performance_schema", "sys"]),
];

/// The database `url` names, which must be on loopback and not a shared one: `pg-terminate` ends
/// every session on it.
fn chaos_database(url: &str) -> anyhow::Result<ChaosDatabase> {
    let backend = SqlBackend::from_url(url)?;
    let (host, name) = match backend {
        SqlBackend::Postgres => {
            let options = PgConnectOptions::from_str(url)
                .with_context(|| format!("{url:?} is not a PostgreSQL URL"))?;
            let name = options.get_database().unwrap_or(options.get_username()).to_owned();
            (options.get_host().to_owned(), name)
        }
        SqlBackend::MySql => {
            let options =
                MySqlConnectOptions::from_str(url).with_context(|| format!("{url:?} is not a MySQL URL"))?;
            let name = options
                .get_database()
                .with_context(|| format!("{url:?} names no database; give bench chaos one of its own"))?
                .to_owned();
            (options.get_host().to_owned(), name)
        }
    };
    anyhow::ensure!(
        ["127.0.0.1", "localhost", "::1", "[::1]"].contains(&host.as_str()),
        "bench chaos only talks to loopback; the database URL names {host:?}"
    );
    let shared =
        SHARED_DATABASES.iter().find(|(kind, _)| *kind == backend).map_or(&[][..], |(_, names)| names);
    anyhow::ensure!(
        !shared.contains(&name.to_ascii_lowercase().as_str()),
        "bench chaos ends every session on its database; give it one of its own, not {name:?}"
    );
    Ok(ChaosDatabase { backend, name })
}

async fn run_all(
    rig: &mut Rig,
    flags: &ChaosFlags,
    folder: &RunFolder,
    chosen: &mut Vec<StrategyInfo>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    // As compare: the strategies the server's database does not run are left out in one line (or,
    // named, refused by name).
    let listed = rig.server.strategies().await?;
    *chosen = super::select(&listed, &flags.strategies, 1)?;
    if flags.strategies.is_empty() {
        chosen.retain(|strategy| strategy.safe);
    }
    let faults = flags.faults();
    for (position, fault) in (1..).zip(&faults) {
        eprintln!("bench chaos [{position}/{}] {fault}", faults.len());
        if *fault == Fault::SameKeyMixed {
            let row = same_key_case(rig, flags, folder, chosen).await.with_context(|| format!("{fault}"))?;
            eprintln!("  {}", row.one_line());
            rows.push(row);
            continue;
        }
        for strategy in chosen.iter() {
            let row = match fault.skip_reason(strategy) {
                Some(why) => Row::skipped(*fault, &strategy.name, strategy.safe, why),
                None => storm_case(rig, flags, folder, *fault, strategy)
                    .await
                    .with_context(|| format!("{fault} against {}", strategy.name))?,
            };
            eprintln!("  {}", row.one_line());
            rows.push(row);
        }
    }
    Ok(())
}

/// The catalogue of every case: the hot product and a few others.
fn reset_plan(hot_stock: i64) -> serde_json::Value {
    let products: Vec<_> = std::iter::once((HOT, hot_stock))
        .chain(REGULARS)
        .map(|(id, stock)| json!({ "id": id, "stock": stock }))
        .collect();
    json!({ "products": products })
}

/// A tag that keeps one case's idempotency keys apart from every other's.
fn tag(fault: Fault, strategy: &str) -> String {
    format!("chaos-{fault}-{strategy}-{}", Uuid::new_v4().simple())
}

/// One fault against one strategy: reset, storm with the fault mid-way, drain, audit, join.
async fn storm_case(
    rig: &mut Rig,
    flags: &ChaosFlags,
    folder: &RunFolder,
    fault: Fault,
    strategy: &StrategyInfo,
) -> anyhow::Result<Row> {
    rig.ready().await?;
    rig.server.reset(&reset_plan(flags.hot_stock)).await?;
    let spread = Duration::from_millis(flags.storm_ms);
    let storm = Storm {
        strategy: strategy.name.clone(),
        hot_stock: flags.hot_stock,
        buyers: u64::try_from(flags.hot_stock).unwrap_or(1).saturating_mul(2),
        clients: usize::try_from(flags.clients).unwrap_or(1),
        spread,
        timeout: CLIENT_TIMEOUT,
        hang_up: fault.clients_abort(),
        tag: tag(fault, &strategy.name),
    };
    let mut buyers = AbortOnDrop(tokio::spawn(storm::run(rig.server.target.clone(), storm)));
    tokio::time::sleep(spread.mul_f64(FAULT_AT)).await;
    let injected = faults::inject(fault, rig).await?;
    if !injected.done.is_empty() {
        eprintln!("  [{fault} · {}] {}", strategy.name, injected.done);
    }
    let outcome = (&mut buyers.0).await.context("the storm's clients failed")?;
    let label = format!("[{fault} · {}]", strategy.name);
    let mut row = Row {
        fault,
        strategy: strategy.name.clone(),
        safe: strategy.safe,
        skipped: None,
        tally: outcome.tally,
        lost: 0,
        duplicated: 0,
        oversold: 0,
        stranded: 0,
        unheard: 0,
        audit_clean: false,
        audit_findings: Vec::new(),
        settled: false,
        problems: injected.problems,
        note: injected.note,
    };
    let audited = async {
        let (drained, _) = drain(&rig.server, Duration::from_secs(flags.drain_timeout_secs), &label).await?;
        let (settlement, audit) =
            super::settle(&rig.server, &outcome.record, &strategy.name, HOT, Duration::ZERO).await?;
        anyhow::Ok((drained, settlement, audit))
    };
    match audited.await {
        Ok((drained, settlement, audit)) => {
            save_audit(folder, &format!("{fault}-{}", strategy.name), &audit)?;
            row.lost = settlement.anomalies.lost;
            row.duplicated = settlement.anomalies.duplicated;
            row.oversold = settlement.anomalies.oversold;
            row.stranded = drained.total.stranded;
            row.unheard = settlement.anomalies.phantom;
            row.audit_clean = drained.clean;
            row.audit_findings = audit_findings(&audit);
            row.settled = settlement.settled;
        }
        // The server cannot say what it holds after the fault: that is the finding, and the next
        // case starts from a server made ready again.
        Err(err) => row.problems.push(format!("no audit after the fault: {err:#}")),
    }
    Ok(row)
}

/// Aborts a spawned task when dropped, so an error or Ctrl-C between spawning the buyers and
/// hearing from them does not leave them running.
#[derive(Debug)]
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Copies of one request under one key, spread over the chosen strategies that keep their orders
/// in the SQL books (one key, one book, on either database): exactly one order per key, and every
/// answer names it.
async fn same_key_case(
    rig: &mut Rig,
    flags: &ChaosFlags,
    folder: &RunFolder,
    chosen: &[StrategyInfo],
) -> anyhow::Result<Row> {
    let fault = Fault::SameKeyMixed;
    let mixed: Vec<&StrategyInfo> = chosen.iter().filter(|strategy| strategy.uses_database()).collect();
    let safe = mixed.iter().all(|strategy| strategy.safe);
    if mixed.len() < 2 {
        return Ok(Row::skipped(
            fault,
            "mixed",
            safe,
            "needs two chosen strategies that keep orders in the SQL books",
        ));
    }
    rig.ready().await?;
    rig.server.reset(&reset_plan(flags.hot_stock.max(i64::try_from(SAME_KEYS).unwrap_or(i64::MAX)))).await?;
    let plan = SameKey {
        strategies: mixed.iter().map(|strategy| strategy.name.clone()).collect(),
        keys: SAME_KEYS,
        copies: SAME_KEY_COPIES,
        clients: usize::try_from(flags.clients).unwrap_or(1),
        timeout: CLIENT_TIMEOUT,
        tag: tag(fault, "mixed"),
    };
    let names = plan.strategies.join(", ");
    let outcome = storm::same_key(rig.server.target.clone(), plan).await;
    let label = format!("[{fault}]");
    let (drained, audit) = drain(&rig.server, Duration::from_secs(flags.drain_timeout_secs), &label).await?;
    save_audit(folder, &fault.to_string(), &audit)?;
    let held = rig.server.orders().await?;
    anyhow::ensure!(!held.truncated, "GET /admin/orders was truncated: too many orders to join");
    let held: HashMap<Uuid, &str> =
        held.orders.iter().map(|order| (order.order_id, order.status.as_str())).collect();
    let named = named_orders(&outcome.replies);
    let lost = named.iter().filter(|id| held.get(id).is_none_or(|status| *status == "cancelled")).count();
    let unheard = held.iter().filter(|(id, status)| **status != "cancelled" && !named.contains(id)).count();
    let queued = mixed.iter().filter(|strategy| strategy.queued).count();
    let kinds = match queued {
        0 => "synchronous only",
        n if n == mixed.len() => "queued only",
        _ => "queued and synchronous",
    };
    Ok(Row {
        fault,
        strategy: "mixed".to_owned(),
        safe,
        skipped: None,
        tally: outcome.tally,
        lost: i64::try_from(lost).unwrap_or(i64::MAX),
        duplicated: drained.total.duplicated + split_keys(&outcome.replies),
        oversold: drained.total.oversold,
        stranded: drained.total.stranded,
        unheard: i64::try_from(unheard).unwrap_or(i64::MAX),
        audit_clean: drained.clean,
        audit_findings: audit_findings(&audit),
        settled: drained.settled,
        problems: Vec::new(),
        note: Some(format!("{SAME_KEYS} keys × {SAME_KEY_COPIES} copies over {names} ({kinds})")),
    })
}

/// Every order id some answer named.
fn named_orders(replies: &[Vec<Reply>]) -> HashSet<Uuid> {
    replies
        .iter()
        .flatten()
        .filter_map(|reply| match reply {
            Reply::Order { order_id, .. } => Some(*order_id),
            _ => None,
        })
        .collect()
}

/// Order ids beyond the first that the answers to one key named, summed over keys: each is a
/// second order the key made, or an answer naming the wrong one.
fn split_keys(replies: &[Vec<Reply>]) -> i64 {
    replies
        .iter()
        .map(|copies| {
            let ids: HashSet<Uuid> = named_orders(std::slice::from_ref(copies));
            i64::try_from(ids.len().saturating_sub(1)).unwrap_or(i64::MAX)
        })
        .sum()
}

/// Polls the audit until it is settled with nothing stranded (the server sweeps expired Redis
/// reservations in the background), at most `limit`; returns the last audit read. An audit that
/// fails (a backend still reconnecting after the fault) is asked again until the limit.
///
/// # Errors
/// When no audit could be read within `limit`.
async fn drain(
    server: &Server,
    limit: Duration,
    label: &str,
) -> anyhow::Result<(AuditView, serde_json::Value)> {
    let started = Instant::now();
    let mut last_said = started;
    let mut last = None;
    loop {
        match server.audit().await {
            Ok(raw) => {
                let audit =
                    AuditView::deserialize(&raw).context("GET /admin/audit answered an unexpected shape")?;
                let done = audit.settled && audit.total.stranded == 0;
                if done || started.elapsed() >= limit {
                    return Ok((audit, raw));
                }
                if last_said.elapsed() >= Duration::from_secs(2) {
                    eprintln!(
                        "  {label} draining: {} accepted orders pending, {} units stranded",
                        audit.queues.pending, audit.total.stranded
                    );
                    last_said = Instant::now();
                }
                last = Some((audit, raw));
            }
            Err(err) if started.elapsed() >= limit => {
                return last
                    .ok_or(err)
                    .map_err(|err| err.context(format!("no audit within {}s", limit.as_secs())));
            }
            Err(_) => {}
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// What made an audit unclean, beyond the table's own columns (oversold, duplicated, stranded):
/// the audit's other non-zero counters, each by its name in the audit.
fn audit_findings(audit: &serde_json::Value) -> Vec<String> {
    let count = |pointer: &str| audit.pointer(pointer).and_then(serde_json::Value::as_i64).unwrap_or(0);
    let redis_checked = audit.pointer("/redis/checked").and_then(serde_json::Value::as_bool).unwrap_or(false);
    let mut counters =
        vec![("negative_stock", "/total/negative_stock"), ("stock_drift", "/total/stock_drift")];
    if redis_checked {
        counters.push(("redis_drift", "/total/redis_drift"));
    }
    counters.extend([
        ("dead_lettered", "/queues/dead_lettered"),
        ("accepted_then_cancelled", "/queues/accepted_then_cancelled"),
    ]);
    let mut findings: Vec<String> = counters
        .into_iter()
        .filter(|(_, pointer)| count(pointer) != 0)
        .map(|(name, pointer)| format!("{name} {}", count(pointer)))
        .collect();
    if let Some(ledgers) = audit.get("ledgers").and_then(serde_json::Value::as_object) {
        for (name, ledger) in ledgers {
            if ledger.get("clean").and_then(serde_json::Value::as_bool) == Some(false) {
                findings.push(format!("{name}'s ledger"));
            }
        }
    }
    findings
}

fn save_audit(folder: &RunFolder, name: &str, audit: &serde_json::Value) -> anyhow::Result<()> {
    let path: PathBuf = folder.path.join("audit").join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(audit)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_database_of_its_own_is_accepted_on_either_server() {
        let on = |backend, name: &str| ChaosDatabase { backend, name: name.to_owned() };
        assert_eq!(
            chaos_database("postgres://postgres@127.0.0.1:5432/checkout_chaos").unwrap(),
            on(SqlBackend::Postgres, "checkout_chaos")
        );
        assert_eq!(
            chaos_database("mysql://root@127.0.0.1:3306/checkout_chaos").unwrap(),
            on(SqlBackend::MySql, "checkout_chaos")
        );
        assert_eq!(
            chaos_database("mariadb://root@localhost/chaos_maria").unwrap(),
            on(SqlBackend::MySql, "chaos_maria")
        );
        for refused in [
            "postgres://postgres@10.0.0.5:5432/checkout_chaos",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/template1",
            "mysql://root@10.0.0.5:3306/checkout_chaos",
            "mysql://root@127.0.0.1:3306",
            "mysql://root@127.0.0.1:3306/mysql",
            "mysql://root@127.0.0.1:3306/information_schema",
            "mysql://root@127.0.0.1:3306/PERFORMANCE_SCHEMA",
            "mysql://root@127.0.0.1:3306/sys",
            "sqlite://chaos.db",
            "nope",
        ] {
            assert!(chaos_database(refused).is_err(), "{refused}");
        }
        // The shared names are shared on their own server only.
        assert!(chaos_database("mysql://root@127.0.0.1:3306/postgres").is_ok());
        assert!(chaos_database("postgres://postgres@127.0.0.1:5432/sys").is_ok());
    }

    #[test]
    fn a_redis_cluster_is_refused_by_name() {
        let err = refuse_redis_cluster(Some("127.0.0.1:7000,127.0.0.1:7001"), &[]).unwrap_err().to_string();
        assert!(err.contains("REDIS_CLUSTER_NODES") && err.contains("fault proxy"), "{err}");
        let args = vec!["--redis-cluster-nodes=127.0.0.1:7000".to_owned()];
        let err = refuse_redis_cluster(None, &args).unwrap_err().to_string();
        assert!(err.contains("--server-arg=--redis-cluster-nodes"), "{err}");
        refuse_redis_cluster(None, &["--pg-connections=4".to_owned()]).expect("one Redis: no cluster");
        refuse_redis_cluster(Some(" , "), &[]).expect("an empty list names no cluster");
    }

    #[test]
    fn scenarios_default_to_all_and_keep_the_order_given() {
        let flags = |scenarios: Vec<Fault>| ChaosFlags {
            scenarios,
            strategies: Vec::new(),
            hot_stock: 200,
            clients: 64,
            storm_ms: 5_000,
            drain_timeout_secs: 20,
            database_url: String::new(),
            server_args: Vec::new(),
            out: PathBuf::new(),
            server_exe: None,
        };
        assert_eq!(flags(Vec::new()).faults(), Fault::ALL);
        let overriding = ChaosFlags {
            server_args: vec!["--request-timeout-ms=5000".into(), "--pg-connections=4".into()],
            ..flags(Vec::new())
        };
        let args = overriding.all_server_args();
        assert_eq!(
            args.iter().filter(|arg| arg.starts_with("--request-timeout-ms")).collect::<Vec<_>>(),
            ["--request-timeout-ms=5000"],
            "a --server-arg replaces chaos's own value of that flag: {args:?}"
        );
        assert!(
            args.contains(&"--claim-idle-ms=2000".to_owned())
                && args.contains(&"--pg-connections=4".to_owned())
        );
        assert_eq!(
            flags(vec![Fault::Sigterm, Fault::PgTerminate, Fault::Sigterm]).faults(),
            [Fault::Sigterm, Fault::PgTerminate]
        );
    }

    #[test]
    fn an_unclean_audit_is_explained_by_its_counters() {
        let audit = json!({
            "clean": false,
            "total": {"oversold": 1, "negative_stock": 1, "stock_drift": 0, "duplicated": 0, "redis_drift": 2},
            "queues": {"pending": 0, "dead_lettered": 0, "accepted_then_cancelled": 3},
            "redis": {"checked": true},
            "ledgers": {"memory": {"clean": false}, "other": {"clean": true}},
        });
        assert_eq!(
            audit_findings(&audit),
            ["negative_stock 1", "redis_drift 2", "accepted_then_cancelled 3", "memory's ledger"]
        );
        let unchecked = json!({"total": {"redis_drift": 2}, "redis": {"checked": false}});
        assert!(audit_findings(&unchecked).is_empty(), "an unchecked mirror is not a finding");
    }

    #[test]
    fn one_key_naming_two_orders_counts_once_per_extra_order() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let replies = vec![
            vec![Reply::Order { status: 201, order_id: a }, Reply::Order { status: 200, order_id: a }],
            vec![
                Reply::Order { status: 201, order_id: b },
                Reply::Order { status: 202, order_id: Uuid::new_v4() },
                Reply::Refused { status: 503 },
                Reply::NoAnswer,
            ],
        ];
        assert_eq!(split_keys(&replies), 1);
        assert_eq!(named_orders(&replies).len(), 3);
    }
}
