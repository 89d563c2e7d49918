//! `bench ceilings`: the raw ceilings beside the strategies, measured on the same machine in the
//! same run — wrk and our own client against a static route and against `memory`,
//! redis-benchmark of each Redis strategy's command, pgbench of `sql-atomic`'s statement, mysqlslap
//! of `sql-atomic`'s MariaDB transaction — each
//! repeated, with the CPU every party used while it ran. A strategy's figure means little alone;
//! over the ceiling that bounds it, it says how much the strategy itself costs.

mod client;
pub mod cpu;
mod mariadb;
mod redis_target;
mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use checkout_strategies::lua_sources;
use checkout_strategies::sql_atomic::ONE_LINE_STATEMENT;
use clap::Args;
use serde_json::json;

use super::options::ServerFlags;
use super::server::Server;
use crate::run_folder::capacity::CapacityRow;
use crate::run_folder::ceilings::{Ceiling, CeilingRatioRow, CeilingRow, ratios};
use crate::run_folder::{RunFolder, medians_by_strategy, meta, read_csv, write_csv};

/// The product every ceiling buys or decrements; the pgbench spread uses products 1..=100.
const HOT: i64 = 100;
/// A stock no measurement can sell out.
const BOUNDLESS: i64 = 1_000_000_000_000;
/// Keys of the Redis ceilings, deleted afterwards. All under [`redis_target::TAG`], so the
/// scripts' keys share a slot on a Redis Cluster.
const STOCK: &str = "{ceilings}:stock";
const INFLIGHT: &str = "{ceilings}:inflight";
const RESERVATIONS: &str = "{ceilings}:reservations";
const DEADLINES: &str = "{ceilings}:deadlines";
const PENDING: &str = "{ceilings}:pending";
const STREAM: &str = "{ceilings}:stream";
const XADD: &str = "{ceilings}:xadd";
const REDIS_KEYS: [&str; 7] = [STOCK, INFLIGHT, RESERVATIONS, DEADLINES, PENDING, STREAM, XADD];

/// `bench ceilings`.
#[derive(Debug, Clone, Args)]
pub struct CeilingFlags {
    #[command(flatten)]
    pub server: ServerFlags,
    /// Repetitions of every measurement (median and min–max are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub secs: u64,
    /// HTTP connections for wrk and our client.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Redis Cluster nodes (`host:port,…`), as the server reads them: the server bench starts
    /// gets them, and the Redis ceilings run on the master holding their hash tag, the way one
    /// setup's keys all live on one master.
    #[arg(long, env = "REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,
    /// redis-benchmark clients (unpipelined).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub redis_clients: u32,
    /// pgbench client counts, comma-separated; the server's pool size (8) among them compares
    /// like with like, the best one bounds `sql-atomic`.
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    pub pg_clients: Vec<u32>,
    /// The MariaDB the MariaDB ceilings run on; the database it names is created for them (it must
    /// not exist) and dropped afterwards. Unreachable, or mysqlslap missing: they are skipped.
    #[arg(long, env = "MARIADB_URL", default_value = "mysql://root@127.0.0.1:3306/checkout_bench_ceilings")]
    pub mariadb_url: String,
    /// mysqlslap client counts, comma-separated [default: the pgbench ones, `--pg-clients`].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub mariadb_clients: Vec<u32>,
    /// Ceilings to measure, comma-separated [default: all]: wrk-static, wrk-memory, client-static,
    /// client-memory, redis-decr-command, redis-reserve-check, redis-reserve-decr,
    /// redis-stream-enqueue, redis-xadd, pg-hot-row, pg-100-rows, mariadb-hot-row, mariadb-100-rows.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Write into this existing run folder (a comparison's, so ratios use its capacities) instead of
    /// a new one under `--out`.
    #[arg(long)]
    pub into: Option<PathBuf>,
    /// Where a new run folder goes.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}

impl CeilingFlags {
    /// The cluster nodes named, blanks dropped (an empty `REDIS_CLUSTER_NODES` names none).
    fn cluster_nodes(&self) -> Vec<String> {
        self.redis_cluster_nodes
            .iter()
            .map(|node| node.trim())
            .filter(|node| !node.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// What a ceilings run produced.
#[derive(Debug)]
pub struct CeilingsReport {
    pub folder: PathBuf,
    pub rows: Vec<CeilingRow>,
    pub ratios: Vec<CeilingRatioRow>,
}

/// The ceilings (median and min–max over repetitions, per client count) and the ratios, as text.
pub fn table(report: &CeilingsReport) -> String {
    use std::fmt::Write as _;
    let mut groups: BTreeMap<(usize, u32), (&CeilingRow, Vec<f64>)> = BTreeMap::new();
    for row in &report.rows {
        let order = Ceiling::ALL.iter().position(|c| c.name() == row.ceiling).unwrap_or(usize::MAX);
        groups.entry((order, row.clients)).or_insert((row, Vec::new())).1.push(row.ops_per_sec);
    }
    let mut out =
        format!("{:<22} {:<16} {:>7} {:>12} {:>23}\n", "ceiling", "tool", "clients", "median/s", "min–max");
    for (row, values) in groups.values() {
        if let Some(spread) = crate::run_folder::Spread::of(values.iter().copied()) {
            let _ = writeln!(
                out,
                "{:<22} {:<16} {:>7} {:>12.0} {:>11.0} – {:<9.0}",
                row.ceiling, row.tool, row.clients, spread.median, spread.min, spread.max
            );
        }
    }
    if !report.ratios.is_empty() {
        // Wide enough for the longest label (`sql-for-update@mysql`).
        let width = report.ratios.iter().map(|ratio| ratio.subject.len()).max().unwrap_or(0).max(16);
        let _ = writeln!(
            out,
            "\n{:<width$} {:<22} {:>8} {:>8}  status",
            "figure", "over ceiling", "ratio", "target"
        );
        for ratio in &report.ratios {
            let target = ratio.target.map_or_else(|| "-".to_owned(), |t| format!("≥{t:.2}"));
            let _ = writeln!(
                out,
                "{:<width$} {:<22} {:>8.2} {:>8}  {}",
                ratio.subject, ratio.ceiling, ratio.ratio, target, ratio.status
            );
        }
    }
    out
}

/// Which ceilings `only` names (all when empty); unknown names are an error listing the known ones.
fn selected(only: &[String]) -> anyhow::Result<Vec<Ceiling>> {
    if only.is_empty() {
        return Ok(Ceiling::ALL.to_vec());
    }
    only.iter()
        .map(|name| {
            Ceiling::parse(name.trim()).with_context(|| {
                let known: Vec<_> = Ceiling::ALL.iter().map(|c| c.name()).collect();
                format!("unknown ceiling {name:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

/// The tools each selected ceiling needs that are not installed.
async fn missing_tools(ceilings: &[Ceiling]) -> Vec<&'static str> {
    let mut missing = Vec::new();
    for tool in ["wrk", "redis-benchmark", "pgbench"] {
        let needed = ceilings.iter().any(|ceiling| tool_of(*ceiling) == tool);
        if needed && !tools::installed(tool).await {
            missing.push(tool);
        }
    }
    missing
}

const fn tool_of(ceiling: Ceiling) -> &'static str {
    match ceiling {
        Ceiling::WrkStatic | Ceiling::WrkMemory => "wrk",
        Ceiling::ClientStatic | Ceiling::ClientMemory => "bench-client",
        Ceiling::RedisDecr
        | Ceiling::RedisReserveCheck
        | Ceiling::RedisReserveDecr
        | Ceiling::RedisStreamEnqueue
        | Ceiling::RedisXadd => "redis-benchmark",
        Ceiling::PgHotRow | Ceiling::PgHundredRows => "pgbench",
        Ceiling::MariaHotRow | Ceiling::MariaHundredRows => "mysqlslap",
    }
}

/// Runs `bench ceilings`.
///
/// # Errors
/// When a tool is missing or fails, the server cannot be started, or a file cannot be written.
pub async fn run(flags: &CeilingFlags) -> anyhow::Result<CeilingsReport> {
    let ceilings = selected(&flags.only)?;
    let missing = missing_tools(&ceilings).await;
    anyhow::ensure!(
        missing.is_empty(),
        "missing tools: {} (Debian: apt-get install wrk redis-tools postgresql-client)",
        missing.join(", ")
    );
    let (folder_path, run_id) = match &flags.into {
        Some(dir) => {
            anyhow::ensure!(dir.is_dir(), "{} is not a run folder", dir.display());
            let id =
                dir.canonicalize()?.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (dir.clone(), id)
        }
        None => {
            let folder = RunFolder::create(&flags.out, &meta::git().short_sha)?;
            (folder.path.clone(), folder.id)
        }
    };
    eprintln!("bench ceilings: {} ({} build)", folder_path.display(), meta::profile());
    let cluster_nodes = flags.cluster_nodes();
    let server =
        Server::start(&server_flags(&flags.server, &cluster_nodes), &folder_path.join("ceilings-server.log"))
            .await?;
    let outcome = measure_all(flags, &server, &cluster_nodes, &ceilings, &run_id).await;
    server.stop().await;
    let rows = outcome?;
    write_csv(&folder_path.join("ceilings.csv"), &rows)?;
    let ratios = ratios(&capacities(&folder_path), &rows);
    write_csv(&folder_path.join("ceiling_ratios.csv"), &ratios)?;
    Ok(CeilingsReport { folder: folder_path, rows, ratios })
}

/// The server's flags with the cluster nodes passed on, unless a `--server-arg` names them
/// already (the server refuses a flag given twice). The environment reaches the server anyway;
/// the flag carries nodes given on bench's command line.
fn server_flags(server: &ServerFlags, cluster_nodes: &[String]) -> ServerFlags {
    let mut server = server.clone();
    let named = server.server_args.iter().any(|arg| arg.starts_with("--redis-cluster-nodes"));
    if !cluster_nodes.is_empty() && !named {
        server.server_args.push(format!("--redis-cluster-nodes={}", cluster_nodes.join(",")));
    }
    server
}

/// Each strategy's median capacity in `folder`, when the folder has a capacity search.
fn capacities(folder: &Path) -> BTreeMap<String, f64> {
    let Ok(rows) = read_csv::<CapacityRow>(&folder.join("capacity.csv")) else { return BTreeMap::new() };
    medians_by_strategy(rows.iter().map(|row| (row.strategy.as_str(), row.capacity_rps)))
}

async fn measure_all(
    flags: &CeilingFlags,
    server: &Server,
    cluster_nodes: &[String],
    ceilings: &[Ceiling],
    run_id: &str,
) -> anyhow::Result<Vec<CeilingRow>> {
    // First, so that whatever fails later still drops the scratch database it created.
    let (maria, ceilings) = prepare_mariadb(flags, ceilings).await?;
    let rows = measure_beside(flags, server, cluster_nodes, maria.as_ref(), &ceilings, run_id).await;
    if let Some(maria) = maria {
        maria.clean_up().await;
    }
    rows
}

async fn measure_beside(
    flags: &CeilingFlags,
    server: &Server,
    cluster_nodes: &[String],
    maria: Option<&mariadb::MariaBench>,
    ceilings: &[Ceiling],
    run_id: &str,
) -> anyhow::Result<Vec<CeilingRow>> {
    // Products 1..=100 and the hot one with a stock no measurement can exhaust.
    let products: Vec<_> = (1..=HOT).map(|id| json!({ "id": id, "stock": BOUNDLESS })).collect();
    server.reset(&json!({ "products": products })).await?;
    let scratch = tempdir()?;
    let target = redis_target::resolve(&flags.server.redis_url, cluster_nodes).await?;
    let redis = RedisBench::prepare(&target).await?;
    let parties = Parties { server, target: &target, redis: &redis, maria, scratch: &scratch };
    let rows = measure_each(flags, &parties, ceilings, run_id).await;
    redis.clean_up().await;
    let _ = std::fs::remove_dir_all(&scratch);
    rows
}

/// The MariaDB ceilings' scratch database when any is selected, and the ceilings that can run:
/// without mysqlslap or a reachable MariaDB the MariaDB ones are skipped with one line.
async fn prepare_mariadb(
    flags: &CeilingFlags,
    ceilings: &[Ceiling],
) -> anyhow::Result<(Option<mariadb::MariaBench>, Vec<Ceiling>)> {
    let is_maria = |ceiling: &Ceiling| tool_of(*ceiling) == "mysqlslap";
    if !ceilings.iter().any(is_maria) {
        return Ok((None, ceilings.to_vec()));
    }
    match mariadb::MariaBench::prepare(&flags.mariadb_url, HOT, BOUNDLESS).await? {
        Ok(maria) => Ok((Some(maria), ceilings.to_vec())),
        Err(reason) => {
            eprintln!("bench ceilings: skipping the MariaDB ceilings: {reason}");
            Ok((None, ceilings.iter().copied().filter(|ceiling| !is_maria(ceiling)).collect()))
        }
    }
}

/// What the measurements run against, each prepared once for the whole run.
struct Parties<'a> {
    server: &'a Server,
    target: &'a redis_target::RedisTarget,
    redis: &'a RedisBench,
    maria: Option<&'a mariadb::MariaBench>,
    scratch: &'a Path,
}

async fn measure_each(
    flags: &CeilingFlags,
    parties: &Parties<'_>,
    ceilings: &[Ceiling],
    run_id: &str,
) -> anyhow::Result<Vec<CeilingRow>> {
    let Parties { server, target, redis, maria, scratch } = *parties;
    let mut rows = Vec::new();
    for repetition in 1..=flags.repeat {
        for &ceiling in ceilings {
            let client_counts: Vec<u32> = match ceiling {
                Ceiling::MariaHotRow | Ceiling::MariaHundredRows if !flags.mariadb_clients.is_empty() => {
                    flags.mariadb_clients.clone()
                }
                // Without their own counts, the MariaDB ceilings run at pgbench's, side by side.
                Ceiling::PgHotRow
                | Ceiling::PgHundredRows
                | Ceiling::MariaHotRow
                | Ceiling::MariaHundredRows => flags.pg_clients.clone(),
                Ceiling::WrkStatic | Ceiling::WrkMemory | Ceiling::ClientStatic | Ceiling::ClientMemory => {
                    vec![flags.connections]
                }
                _ => vec![flags.redis_clients],
            };
            for clients in client_counts {
                let label = format!(
                    "[ceilings · rep {repetition}/{} · {} · c={clients}]",
                    flags.repeat,
                    ceiling.name()
                );
                let meter = cpu::Meter::start(server.pid());
                let started = std::time::Instant::now();
                let (ops, mut operation) = measure(flags, server, redis, maria, scratch, ceiling, clients)
                    .await
                    .with_context(|| label.clone())?;
                if tool_of(ceiling) == "redis-benchmark" && target.cluster_master {
                    operation = format!("{operation}, {}", target.describe());
                }
                let seconds = started.elapsed().as_secs_f64();
                let usage = meter.stop().await;
                eprintln!(
                    "{label} {ops:.0}/s (cpu: server {:.2}, postgres {:.2}, redis {:.2}, rest {:.2})",
                    usage.server, usage.postgres, usage.redis, usage.rest
                );
                rows.push(CeilingRow {
                    run_id: run_id.to_owned(),
                    ceiling: ceiling.name().to_owned(),
                    tool: tool_of(ceiling).to_owned(),
                    operation,
                    clients,
                    repetition,
                    seconds,
                    ops_per_sec: ops,
                    cpu_server: usage.server,
                    cpu_postgres: usage.postgres,
                    cpu_redis: usage.redis,
                    cpu_rest: usage.rest,
                });
            }
        }
    }
    Ok(rows)
}

/// One measurement: operations per second, and the operation in words.
async fn measure(
    flags: &CeilingFlags,
    server: &Server,
    redis: &RedisBench,
    maria: Option<&mariadb::MariaBench>,
    scratch: &Path,
    ceiling: Ceiling,
    clients: u32,
) -> anyhow::Result<(f64, String)> {
    let base = server.target.base();
    let purchase_path = "/strategies/memory/purchase".to_owned();
    let duration = Duration::from_secs(flags.secs);
    let redis_requests = 80_000 * flags.secs;
    Ok(match ceiling {
        Ceiling::WrkStatic => (
            tools::wrk(&format!("{base}/strategies"), clients, flags.secs, None).await?,
            "GET /strategies (no backend)".into(),
        ),
        Ceiling::WrkMemory => {
            let script = scratch.join("purchase.lua");
            std::fs::write(&script, wrk_post_script(&purchase_body()))?;
            (
                tools::wrk(&format!("{base}{purchase_path}"), clients, flags.secs, Some(&script)).await?,
                "POST /strategies/memory/purchase".into(),
            )
        }
        Ceiling::ClientStatic => (
            client::saturate(&server.target, client::Request::Get("/strategies".into()), clients, duration)
                .await?,
            "GET /strategies (no backend)".into(),
        ),
        Ceiling::ClientMemory => (
            client::saturate(
                &server.target,
                client::Request::Post(purchase_path.clone(), purchase_body().into()),
                clients,
                duration,
            )
            .await?,
            "POST /strategies/memory/purchase".into(),
        ),
        Ceiling::RedisDecr => {
            (redis.bench(clients, redis_requests, &["DECR", STOCK]).await?, "DECR of one key".into())
        }
        Ceiling::RedisReserveCheck => (
            redis.bench(clients, redis_requests, &redis.reserve_args("check")).await?,
            "EVALSHA reserve.lua, check mode (redis-lua)".into(),
        ),
        Ceiling::RedisReserveDecr => (
            redis.bench(clients, redis_requests, &redis.reserve_args("decr")).await?,
            "EVALSHA reserve.lua, decr mode (redis-decr)".into(),
        ),
        Ceiling::RedisStreamEnqueue => (
            redis.bench(clients, redis_requests, &redis.enqueue_args()).await?,
            "EVALSHA stream_enqueue.lua (stream)".into(),
        ),
        Ceiling::RedisXadd => (
            redis
                .bench(
                    clients,
                    redis_requests,
                    &["XADD", XADD, "*", "order_id", "__rand_int__", "payload", &purchase_body()],
                )
                .await?,
            "XADD of a 200-byte order".into(),
        ),
        Ceiling::PgHotRow | Ceiling::PgHundredRows => {
            let spread = ceiling == Ceiling::PgHundredRows;
            let script = scratch.join(if spread { "spread.sql" } else { "hot.sql" });
            std::fs::write(&script, pgbench_script(spread))?;
            (
                tools::pgbench(&flags.server.database_url, clients, flags.secs, &script).await?,
                if spread {
                    "sql-atomic's statement over 100 rows"
                } else {
                    "sql-atomic's statement, one hot row"
                }
                .into(),
            )
        }
        Ceiling::MariaHotRow | Ceiling::MariaHundredRows => {
            let maria = maria.context("the MariaDB ceilings run only once their database is prepared")?;
            let spread = ceiling == Ceiling::MariaHundredRows;
            let script = scratch.join(if spread { "mariadb-spread.sql" } else { "mariadb-hot.sql" });
            (
                maria.measure(&script, clients, flags.secs, HOT, spread).await?,
                if spread {
                    "sql-atomic's MariaDB transaction over 100 rows"
                } else {
                    "sql-atomic's MariaDB transaction, one hot row"
                }
                .into(),
            )
        }
    })
}

/// The body the load generator sends, one unit of the hot product.
fn purchase_body() -> String {
    json!({
        "items": [{ "product_id": HOT, "quantity": 1 }],
        "delivery": { "address": "1 Main St, Kyiv", "phone": "+380441234567", "email": "buyer@example.com" },
        "user": "bench",
    })
    .to_string()
}

fn wrk_post_script(body: &str) -> String {
    let quoted = body.replace('\\', "\\\\").replace('\'', "\\'");
    format!("wrk.method = 'POST'\nwrk.body = '{quoted}'\nwrk.headers['Content-Type'] = 'application/json'\n")
}

/// `sql-atomic`'s single-line statement with pgbench variables in place of its parameters: a new
/// order id per transaction, one unit of the hot product (or of a random one of 100).
fn pgbench_script(spread: bool) -> String {
    let set = if spread { "\\set pid random(1, 100)" } else { "\\set pid 100" };
    // From the highest parameter down, so `$1` never eats the start of a longer one.
    let values = [
        ("$9", "'buyer@example.com'"),
        ("$8", "'+380441234567'"),
        ("$7", "'1 Main St, Kyiv'"),
        ("$6", "'bench'"),
        ("$5", "NULL"),
        ("$4", "'sql-atomic'"),
        ("$3", "gen_random_uuid()"),
        ("$2", "1"),
        ("$1", ":pid"),
    ];
    let mut statement = ONE_LINE_STATEMENT.trim().to_owned();
    for (parameter, value) in values {
        statement = statement.replace(parameter, value);
    }
    format!("{set}\n{};\n", statement.trim_end_matches(';'))
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bench-ceilings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The Redis ceilings' keys and scripts on the Redis the server uses (its cluster's master for
/// the ceilings' tag).
struct RedisBench {
    host: String,
    port: u16,
    connection: redis::aio::MultiplexedConnection,
    reserve_sha: String,
    enqueue_sha: String,
}

impl RedisBench {
    async fn prepare(target: &redis_target::RedisTarget) -> anyhow::Result<Self> {
        let client = redis::Client::open(target.url())?;
        let (host, port) = (target.host.clone(), target.port);
        // A plain connection: every key used here hashes to the slot this master serves.
        let mut connection =
            client.get_multiplexed_async_connection().await.context("cannot connect to Redis")?;
        let load = |source: &'static str| redis::cmd("SCRIPT").arg("LOAD").arg(source).clone();
        let reserve_sha: String = load(lua_sources::RESERVE).query_async(&mut connection).await?;
        let enqueue_sha: String = load(lua_sources::STREAM_ENQUEUE).query_async(&mut connection).await?;
        let mut bench = Self { host, port, connection, reserve_sha, enqueue_sha };
        bench.clear().await?;
        redis::cmd("SET").arg(STOCK).arg(BOUNDLESS).query_async::<()>(&mut bench.connection).await?;
        Ok(bench)
    }

    async fn bench(&self, clients: u32, requests: u64, command: &[&str]) -> anyhow::Result<f64> {
        let command: Vec<String> = command.iter().map(|part| (*part).to_owned()).collect();
        tools::redis_benchmark(&self.host, self.port, clients, requests, 1_000_000_000_000, &command).await
    }

    /// `reserve.lua` as `redis-lua` (`check`) or `redis-decr` (`decr`) call it: one line, a new
    /// order id per call.
    fn reserve_args<'a>(&'a self, mode: &'a str) -> Vec<&'a str> {
        let keys = [RESERVATIONS, DEADLINES, STOCK, INFLIGHT];
        let mut args = vec!["EVALSHA", self.reserve_sha.as_str(), "4"];
        args.extend(keys);
        args.extend(["__rand_int__", "redis-lua;100:1", "30000", mode, "1"]);
        args
    }

    /// `stream_enqueue.lua` as `stream` calls it: one line, a new order id per call.
    fn enqueue_args(&self) -> Vec<&str> {
        vec![
            "EVALSHA",
            self.enqueue_sha.as_str(),
            "4",
            PENDING,
            STREAM,
            STOCK,
            INFLIGHT,
            "__rand_int__",
            PAYLOAD,
            "1",
        ]
    }

    async fn clear(&mut self) -> anyhow::Result<()> {
        redis::cmd("DEL").arg(&REDIS_KEYS[..]).query_async::<()>(&mut self.connection).await?;
        Ok(())
    }

    async fn clean_up(mut self) {
        if let Err(err) = self.clear().await {
            eprintln!("bench ceilings: warning: cannot delete the ceilings' Redis keys: {err}");
        }
    }
}

/// A pending order's payload of the size `stream` stores.
const PAYLOAD: &str = r#"{"items":[{"product_id":100,"quantity":1}],"delivery":{"address":"1 Main St, Kyiv","phone":"+380441234567","email":"buyer@example.com"},"user":"bench","strategy":"stream"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pgbench_script_is_sql_atomics_statement_with_no_parameter_left() {
        for spread in [false, true] {
            let script = pgbench_script(spread);
            assert!(!script.contains('$'), "a parameter was left: {script}");
            assert!(script.contains("stock >= 1::bigint"), "{script}");
            assert!(script.contains("gen_random_uuid()"), "{script}");
            assert_eq!(script.contains("random(1, 100)"), spread, "{script}");
            assert!(script.trim_end().ends_with(';'), "{script}");
        }
    }

    #[test]
    fn unknown_ceilings_are_refused_with_the_known_ones() {
        let err = selected(&["wrk-static".into(), "nope".into()]).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("pg-hot-row"), "{err}");
        assert_eq!(selected(&[]).unwrap().len(), Ceiling::ALL.len());
    }

    #[test]
    fn every_redis_key_carries_the_one_tag() {
        for key in REDIS_KEYS {
            assert!(key.starts_with(redis_target::TAG), "{key} would land in a slot of its own on a cluster");
        }
    }

    #[test]
    fn cluster_nodes_reach_the_server_once() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            ceilings: CeilingFlags,
        }
        let cli = Cli::try_parse_from(["bench", "--redis-cluster-nodes", "127.0.0.1:7000, 127.0.0.1:7001"])
            .unwrap();
        let nodes = cli.ceilings.cluster_nodes();
        assert_eq!(nodes, ["127.0.0.1:7000", "127.0.0.1:7001"]);
        let passed = server_flags(&cli.ceilings.server, &nodes);
        assert_eq!(passed.server_args, ["--redis-cluster-nodes=127.0.0.1:7000,127.0.0.1:7001"]);
        let mut named = cli.ceilings.server.clone();
        named.server_args.push("--redis-cluster-nodes=127.0.0.1:7002".into());
        assert_eq!(server_flags(&named, &nodes).server_args, named.server_args, "not given twice");
        assert!(server_flags(&cli.ceilings.server, &[]).server_args.is_empty(), "one Redis: nothing added");
    }

    #[test]
    fn the_wrk_script_posts_the_body_verbatim() {
        let script = wrk_post_script(r#"{"user":"o'brien"}"#);
        assert!(script.contains(r#"wrk.body = '{"user":"o\'brien"}'"#), "{script}");
    }
}
