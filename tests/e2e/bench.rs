//! The load generator's audit against the real server and database: each anomaly produced on
//! purpose and found by the join, and `bench compare` end to end, files and gate included.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use checkout_bench::bench::options::ServerFlags;
use checkout_bench::bench::server::Server;
use checkout_bench::bench::settle;
use checkout_bench::loadgen::{self, LoadPlan, Model, RunRecord, Scenario};
use checkout_bench::run_folder::Anomalies;
use checkout_bench::run_folder::{
    CapacityRow, CapacityStepRow, LatencyRow, RunKey, ScaleRow, SummaryRow, TimeseriesRow, Verdict, read_csv,
};
use checkout_strategies::{Backends, StrategyKind, Tuning, redis_stream};
use redis::AsyncCommands;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{Setup, TestApp, plan_of, spawn_app};

const STOCK: i64 = 20;
const BUYERS: u64 = 30;

/// Thirty one-unit purchases of product 100 by four users who never wait: 20 sell, 10 are refused.
fn plan() -> LoadPlan {
    LoadPlan {
        model: Model::Closed,
        rate: 1.0,
        connections: 4,
        users: 4,
        user_rate: 0.0,
        ramp: Duration::ZERO,
        scenario: Scenario {
            hot_product: 100,
            hot_stock: STOCK,
            hot_weight: 1,
            regular_weight: 0,
            products: 1,
            quantity: 1,
            seed: 3,
        },
        duration: Duration::from_secs(30),
        max_requests: Some(BUYERS),
        grace: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
        give_up: None,
    }
}

async fn server_for(app: &TestApp) -> Server {
    let flags = ServerFlags {
        url: Some(app.url.clone()),
        admin_token: None,
        database_url: String::new(),
        redis_url: String::new(),
        redis_prefix: String::new(),
        server_args: Vec::new(),
        replicas: 1,
    };
    Server::start(&flags, Path::new("unused.log")).await.expect("the test server answers")
}

async fn load(app: &TestApp, kind: StrategyKind) -> (Server, RunRecord) {
    let server = server_for(app).await;
    let record =
        loadgen::run(&plan(), &server.target, kind.as_str(), "[test]").await.expect("the run completes");
    assert_eq!(record.counts.sent, BUYERS, "exactly the requested purchases");
    assert_eq!(record.counts.errors, 0, "{:?}", record.errors);
    (server, record)
}

async fn anomalies(server: &Server, record: &RunRecord, kind: StrategyKind) -> Anomalies {
    settle(server, record, kind.as_str(), 100, Duration::from_secs(10)).await.expect("settle").0.anomalies
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn the_join_finds_each_anomaly_made_in_the_database(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, STOCK)]), ..Setup::default() }).await;
    let (server, mut record) = load(&app, StrategyKind::SqlAtomic).await;
    assert_eq!((record.counts.confirmed, record.counts.sold_out), (20, 10));
    assert_eq!(
        anomalies(&server, &record, StrategyKind::SqlAtomic).await,
        Anomalies::default(),
        "clean as sold"
    );

    // lost: an acknowledged order vanishes from the database.
    sqlx::query("DELETE FROM orders WHERE id = $1")
        .bind(record.acks[0].order_id)
        .execute(&app.pool)
        .await
        .unwrap();
    // phantom: an order nobody was told about.
    sqlx::query(
        "INSERT INTO orders (id, strategy, status, address, phone, email) VALUES ($1, 'sql-atomic', 'confirmed', 'a', 'b', 'c')",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(&app.pool)
    .await
    .unwrap();
    // undersold: two units still on the shelf while ten buyers were turned away.
    // oversold: 19 units in orders against an initial stock of 15.
    sqlx::query("UPDATE products SET stock = 2, initial_stock = 15 WHERE id = 100")
        .execute(&app.pool)
        .await
        .unwrap();
    // duplicated: the same order id acknowledged to two clients.
    record.acks.push(record.acks[1]);

    let found = anomalies(&server, &record, StrategyKind::SqlAtomic).await;
    assert_eq!(
        found,
        Anomalies { oversold: 4, undersold: 2, lost: 1, phantom: 1, duplicated: 1, ..Anomalies::default() }
    );
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn the_join_finds_redis_drift(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, STOCK)]), ..Setup::default() }).await;
    let (server, record) = load(&app, StrategyKind::RedisLua).await;
    assert_eq!(
        anomalies(&server, &record, StrategyKind::RedisLua).await,
        Anomalies::default(),
        "clean as sold"
    );
    let mut conn = app.redis.conn.clone();
    let _: i64 = conn.incr(app.redis.keys.stock(100), 3).await.unwrap();
    let found = anomalies(&server, &record, StrategyKind::RedisLua).await;
    assert_eq!(found, Anomalies { redis_drift: 3, ..Anomalies::default() });
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn the_join_finds_accepted_then_cancelled(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, STOCK)]), ..Setup::default() }).await;
    let (server, record) = load(&app, StrategyKind::StreamDeferred).await;
    assert_eq!(record.counts.pending, BUYERS, "stream-deferred accepts whatever the shelf showed");
    let backends =
        Backends::new(app.pool.clone(), app.redis.clone(), Tuning::default()).with_nats(app.nats.clone());
    redis_stream::drain(&backends, StrategyKind::StreamDeferred, Duration::from_secs(20))
        .await
        .expect("drain");
    let found = anomalies(&server, &record, StrategyKind::StreamDeferred).await;
    assert_eq!(
        found,
        Anomalies { accepted_then_cancelled: 10, ..Anomalies::default() },
        "10 told 202, cancelled"
    );
    assert_eq!(Verdict::of(false, &found), Verdict::Flagged);
    assert_eq!(Verdict::of(true, &found), Verdict::Invalid);
}

/// `stream` answers 202 before its orders are durable: while nothing persists them the drain
/// cannot say when they were durable; once the worker has, the durable time is after the accepted
/// sell-out, and the summary carries both.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_queued_strategy_is_durable_only_once_its_backlog_is_persisted(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, STOCK)]), ..Setup::default() }).await;
    let (server, record) = load(&app, StrategyKind::Stream).await;
    assert_eq!(record.counts.pending, 20, "accepted, not yet durable");
    let (waiting, _) =
        settle(&server, &record, StrategyKind::Stream.as_str(), 100, Duration::ZERO).await.expect("settle");
    assert_eq!(waiting.durable_at, None, "nothing persisted yet: no durable time");
    let backends =
        Backends::new(app.pool.clone(), app.redis.clone(), Tuning::default()).with_nats(app.nats.clone());
    redis_stream::drain(&backends, StrategyKind::Stream, Duration::from_secs(20)).await.expect("drain");
    let (settled, _) = settle(&server, &record, StrategyKind::Stream.as_str(), 100, Duration::from_secs(10))
        .await
        .expect("settle");
    let durable_at = settled.durable_at.expect("durable once the worker persisted the backlog");
    let sold_out = record.time_to_sell_out.expect("the 20 units were accepted");
    assert!(durable_at > sold_out, "durable {durable_at:?} after the accepted sell-out {sold_out:?}");
    let key = RunKey {
        run_id: "r".into(),
        strategy: "stream".into(),
        repetition: 1,
        position: 1,
        safe: true,
        queued: true,
    };
    let row = SummaryRow::new(&key, "closed", 0.0, &record, &settled);
    assert_eq!(row.verdict, Verdict::Clean, "{row:?}");
    let durable_ms = durable_at.as_secs_f64() * 1e3;
    assert_eq!(row.sold_out_durable_ms, Some(durable_ms));
    assert!(row.durable_sales_per_sec.unwrap() < row.sales_per_sec, "{row:?}");
}

/// A database and a Redis prefix of their own for `bench` child processes, the database dropped
/// afterwards.
pub(crate) struct ScratchDatabase {
    admin_url: String,
    name: String,
    redis_prefix: String,
}

impl ScratchDatabase {
    pub(crate) fn new() -> Self {
        let admin_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let id = uuid::Uuid::new_v4().simple();
        Self { admin_url, name: format!("bench_e2e_{id}"), redis_prefix: format!("e2e-{id}:") }
    }

    /// `bench` arguments: `command` (a command and its flags, split on white space), then the
    /// flags that point it at this database, this Redis prefix and run folders in `out`.
    pub(crate) fn args(&self, out: &Path, command: &str) -> Vec<String> {
        let mut args: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        args.extend([
            "--out".to_owned(),
            out.display().to_string(),
            "--database-url".to_owned(),
            self.url(),
            "--redis-prefix".to_owned(),
            self.redis_prefix.clone(),
        ]);
        args
    }

    pub(crate) fn url(&self) -> String {
        let base = self.admin_url.rsplit_once('/').map_or(self.admin_url.as_str(), |(base, _)| base);
        format!("{base}/{}", self.name)
    }

    pub(crate) async fn drop_it(self) {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await.expect("admin connection");
        // The name is generated above from a UUID: nothing to escape.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut conn)
            .await
            .expect("drop the scratch database");
    }
}

pub(crate) fn bench(args: &[impl AsRef<std::ffi::OsStr>]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bench")).args(args).output().expect("bench runs")
}

fn baseline(path: &Path, ratio: f64) {
    let profile = serde_json::json!({ "preset": "ci", "run_id": "test", "ratios": { "sql-atomic": ratio } });
    let json = serde_json::json!({ "tolerance": 0.5, "profiles": { "debug": profile, "release": profile } });
    std::fs::write(path, json.to_string()).unwrap();
}

#[tokio::test]
async fn bench_compare_writes_a_complete_results_folder_and_gates_it() {
    let db = ScratchDatabase::new();
    let out = tempdir();
    let args = db.args(
        &out,
        "compare --preset ci --strategies memory,sql-atomic --repeat 2 --rate 400 --hot-stock 150 \
         --regular-weight 0 --duration-secs 4 --grace-ms 200 --probe-secs 0.5 --warmup-secs 0 --generator-cap 2000",
    );
    let output = bench(&args);
    db.drop_it().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench compare failed:\n{stderr}");
    assert!(stderr.contains("sales/s"), "one progress summary per run:\n{stderr}");

    let run = out.join("latest").canonicalize().expect("results/latest points at the run");
    let summary: Vec<SummaryRow> = read_csv(&run.join("summary.csv")).unwrap();
    assert_eq!(summary.len(), 4, "2 strategies × 2 repetitions");
    for row in &summary {
        assert_eq!(row.verdict, Verdict::Clean, "{row:?}");
        assert_eq!(row.confirmed, 150, "{}: exactly the stock sold", row.strategy);
        assert_eq!(row.final_stock, Some(0), "{}", row.strategy);
        assert!(row.time_to_sell_out_ms.is_some() && row.sold_out > 0, "{row:?}");
        assert!(row.p99_ms.is_some_and(|p99| p99 > 0.0));
        assert!(row.due_max_ms >= row.max_ms, "the due requests include the successes: {row:?}");
        assert!(row.dispatch_p99_ms.is_some(), "{row:?}");
        assert_eq!(row.durable_ms, None, "{}: durable when answered", row.strategy);
    }
    let capacity: Vec<CapacityRow> = read_csv(&run.join("capacity.csv")).unwrap();
    assert_eq!(capacity.len(), 2, "the ci preset runs a capacity step: one row per strategy");
    assert!(capacity.iter().all(|row| row.cap_rps == 2_000.0 && row.steps > 0), "{capacity:?}");
    let saturation: Vec<SummaryRow> = read_csv(&run.join("saturation.csv")).unwrap();
    for found in &capacity {
        let own = saturation.iter().find(|row| row.strategy == found.strategy);
        let beyond_the_sale = found.at_least || found.capacity_rps >= 400.0;
        assert_eq!(own.is_some(), beyond_the_sale, "a run of its own only above the sale's rate: {found:?}");
        if let Some(row) = own {
            assert!(
                row.offered_rps > 400.0 && row.offered_rps <= 2_000.0,
                "above the sale, within the cap: {row:?}"
            );
            assert!(
                row.offered_rps >= found.capacity_rps.min(2_000.0),
                "offered at least its capacity: {row:?}"
            );
            assert_eq!((row.confirmed, row.final_stock), (150, Some(0)), "the same sale: {row:?}");
            assert_eq!(row.verdict, Verdict::Clean, "{row:?}");
            assert!(row.time_to_sell_out_ms.is_some(), "{row:?}");
            assert!(run.join(format!("audit/{}-saturation.json", row.strategy)).exists(), "audited");
        }
    }
    assert!(saturation.iter().any(|row| row.strategy == "memory"), "memory outruns 400/s: {capacity:?}");
    assert!(stderr.contains("[saturation 1/"), "the step says what it runs:\n{stderr}");
    let page = std::fs::read_to_string(run.join("index.html")).unwrap();
    assert!(page.contains("<h2>Sold out at saturation</h2>"), "the page shows the step");
    let first = |text: &str| page.find(text).unwrap_or_else(|| panic!("the page has no {text:?}"));
    assert!(
        first("<h2>Sustainable capacity</h2>") < first("<h2>Summary</h2>"),
        "capacity is the first table"
    );
    let first_figure = page[first("<figure>")..].split("</figure>").next().unwrap_or_default();
    assert!(first_figure.contains("Sustainable capacity: p99"), "capacity is the first chart");
    let markdown = std::fs::read_to_string(run.join("summary.md")).unwrap();
    assert!(markdown.find("### Sustainable capacity") < markdown.find("### Flash sale"), "{markdown}");
    let timeseries: Vec<TimeseriesRow> = read_csv(&run.join("timeseries.csv")).unwrap();
    for strategy in ["memory", "sql-atomic"] {
        let last = timeseries.iter().rfind(|r| r.strategy == strategy && r.repetition == 1).unwrap();
        assert_eq!(last.units_left, Some(0), "{strategy}: the sell-out curve ends at zero");
    }
    let latency: Vec<LatencyRow> = read_csv(&run.join("latency.csv")).unwrap();
    assert!(latency.iter().any(|r| r.strategy == "sql-atomic" && r.percentile == 99.0));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(meta["preset"], "ci");
    assert_eq!(meta["repetition_order"].as_array().unwrap().len(), 2);
    assert_eq!(meta["server"]["spawned"], true);
    assert!(meta["git"]["sha"].is_string() && meta["versions"]["postgres"].is_string());
    for file in [
        "errors.csv",
        "histograms/memory.hgrm",
        "histograms/sql-atomic.sold_out.hgrm",
        "histograms/sql-atomic.due.hgrm",
        "histograms/sql-atomic.dispatch.hgrm",
        "audit/memory-1.json",
        "audit/sql-atomic-2.json",
        "index.html",
        "summary.md",
        "charts/throughput.png",
        "charts/throughput.svg",
        "charts/capacity.png",
        "capacity_steps.csv",
    ] {
        let len = std::fs::metadata(run.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} is missing or empty");
    }

    let strict = out.join("strict.json");
    baseline(&strict, 1e6);
    let gate = bench(&["check", run.to_str().unwrap(), "--baseline", strict.to_str().unwrap()]);
    assert_eq!(gate.status.code(), Some(1), "a ratio far below its baseline fails the gate");
    assert!(String::from_utf8_lossy(&gate.stdout).contains("below the floor"));
    let lenient = out.join("lenient.json");
    baseline(&lenient, 1e-6);
    let gate = bench(&["check", run.to_str().unwrap(), "--baseline", lenient.to_str().unwrap()]);
    assert!(gate.status.success(), "{}", String::from_utf8_lossy(&gate.stdout));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("gate.json")).unwrap()).unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["degraded"], serde_json::json!([]), "no degraded run above the tolerance");
    let _ = std::fs::remove_dir_all(&out);
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn bench_names_the_strategies_it_knows_when_asked_for_another(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup::default()).await;
    let out = tempdir();
    let url = app.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        bench(&["compare", "--url", &url, "--strategies", "sql-magic", "--out", out.to_str().unwrap()])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown strategy \"sql-magic\"") && stderr.contains("sql-atomic"), "{stderr}");
    let started = std::time::Instant::now();
    let out = tempdir();
    let dead = bench(&[
        "compare",
        "--database-url",
        "postgres://postgres@127.0.0.1:1/nowhere",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&dead.stderr);
    assert_eq!(dead.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot prepare the database"), "the server's own reason is shown: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "a dead database fails fast, it does not hang");
    let bad = bench(&["compare", "--rate", "0"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--rate"), "a bad flag is named");
}

/// `bench capacity` against its own server: each strategy gets a capacity from probes it records,
/// and the strategy that commits every sale to one PostgreSQL row sustains less than the one that
/// counts in memory.
#[tokio::test]
async fn bench_capacity_ranks_memory_above_sql_atomic_and_records_every_probe() {
    let db = ScratchDatabase::new();
    let out = tempdir();
    let args = db.args(
        &out,
        "capacity --strategies memory,sql-atomic --probe-secs 1 --warmup-secs 0.2 --start-rate 250 \
         --max-rate 8000 --generator-cap 8000 --resolution 0.25 --max-bisections 2 --connections 64",
    );
    let output = bench(&args);
    db.drop_it().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench capacity failed:\n{stderr}");
    assert!(
        stderr.lines().any(|line| line.starts_with("[capacity · sql-atomic] 250/s: ")),
        "one progress line per probe:\n{stderr}"
    );

    let run = out.join("latest").canonicalize().expect("results/latest points at the run");
    let rows: Vec<CapacityRow> = read_csv(&run.join("capacity.csv")).unwrap();
    let steps: Vec<CapacityStepRow> = read_csv(&run.join("capacity_steps.csv")).unwrap();
    let of = |name: &str| {
        rows.iter().find(|row| row.strategy == name).unwrap_or_else(|| panic!("{name}: {rows:?}"))
    };
    for row in &rows {
        assert!(row.capacity_rps > 0.0, "{}: some rate passed: {row:?}", row.strategy);
        assert!(row.capacity_rps <= 8_000.0 && row.cap_rps == 8_000.0, "never above the cap: {row:?}");
        assert!(row.p99_ms.is_some_and(|p99| p99 <= 100.0), "the passing probe met the objective: {row:?}");
        let mine: Vec<&CapacityStepRow> = steps.iter().filter(|step| step.strategy == row.strategy).collect();
        assert_eq!(mine.len(), row.steps as usize, "{}: every probe recorded", row.strategy);
        assert!(
            mine.iter().any(|step| step.passed && step.offered_rps == row.capacity_rps),
            "{}: the capacity is a rate that passed",
            row.strategy
        );
        for step in &mine {
            assert_eq!(step.passed, step.failure.is_empty(), "a failure says why: {step:?}");
            if step.passed {
                assert_eq!((step.errors, step.unsent, step.sold_out), (0, 0, 0), "{step:?}");
                assert!(step.offered_rps <= row.capacity_rps, "no pass above the capacity: {step:?}");
            }
        }
        if let Some(fail) = row.first_fail_rps {
            assert!(fail > row.capacity_rps);
            assert!(mine.iter().any(|step| !step.passed && step.offered_rps == fail));
        } else {
            assert!(row.at_least, "no failure below the cap means at least the cap: {row:?}");
        }
    }
    assert!(
        of("sql-atomic").capacity_rps < of("memory").capacity_rps,
        "one PostgreSQL row per sale sustains less than memory: {rows:?}"
    );
    let page = std::fs::read_to_string(run.join("index.html")).unwrap();
    assert!(page.contains("Sustainable capacity"), "the page shows the capacity table");
    assert!(std::fs::metadata(run.join("charts/capacity.png")).is_ok_and(|m| m.len() > 0));
    let _ = std::fs::remove_dir_all(&out);
}

/// `bench capacity --pg-driver sqlx,tokio-postgres`: a server per driver in one run; the strategy
/// the driver switches is measured on each, labelled by driver, the others once; `run.json` and the
/// page say which client each row ran on.
#[tokio::test]
async fn bench_capacity_measures_the_sql_strategies_once_per_driver() {
    let db = ScratchDatabase::new();
    let out = tempdir();
    let args = db.args(
        &out,
        "capacity --strategies memory,sql-atomic --pg-driver sqlx,tokio-postgres --probe-secs 0.5 \
         --warmup-secs 0 --start-rate 200 --max-rate 400 --generator-cap 400 --resolution 0.5 \
         --max-bisections 1 --connections 32",
    );
    let output = bench(&args);
    db.drop_it().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench capacity failed:\n{stderr}");
    assert!(
        stderr.lines().any(|line| line.starts_with("[capacity · sql-atomic@tokio-postgres] 200/s: ")),
        "progress lines name the driver:\n{stderr}"
    );

    let run = out.join("latest").canonicalize().expect("results/latest points at the run");
    let rows: Vec<CapacityRow> = read_csv(&run.join("capacity.csv")).unwrap();
    let mut labels: Vec<&str> = rows.iter().map(|row| row.strategy.as_str()).collect();
    labels.sort_unstable();
    assert_eq!(
        labels,
        ["memory", "sql-atomic", "sql-atomic@tokio-postgres"],
        "sql-atomic once per driver, memory once (no driver switches it): {rows:?}"
    );
    assert!(rows.iter().all(|row| row.steps > 0), "every search probed: {rows:?}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    let drivers: Vec<(String, Option<String>)> = meta["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["pg_driver"].as_str().map(str::to_owned)))
        .collect();
    assert_eq!(
        drivers,
        [
            ("memory".to_owned(), None),
            ("sql-atomic".to_owned(), Some("sqlx".to_owned())),
            ("sql-atomic".to_owned(), Some("tokio-postgres".to_owned())),
        ],
        "run.json records each pass's strategies with their driver"
    );
    assert_eq!(meta["options"]["pg_drivers"], serde_json::json!(["sqlx", "tokio-postgres"]));
    assert!(run.join("server.log").exists() && run.join("server-tokio-postgres.log").exists());
    let page = std::fs::read_to_string(run.join("index.html")).unwrap();
    assert!(page.contains("sql-atomic@tokio-postgres"), "the page labels the driver's rows");
    let _ = std::fs::remove_dir_all(&out);
}

pub(crate) fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bench-e2e-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `bench ceilings` measures real tools against the real services and writes both files; the
/// subset needs only what the services' own packages bring (pgbench, redis-benchmark).
#[tokio::test]
async fn bench_ceilings_measures_the_raw_tools_and_writes_its_files() {
    use checkout_bench::run_folder::ceilings::CeilingRow;
    let db = ScratchDatabase::new();
    let out = tempdir();
    let args = db.args(
        &out,
        "ceilings --repeat 2 --secs 1 --pg-clients 2,4 --redis-clients 4 --connections 4 \
         --only client-static,client-memory,redis-reserve-check,pg-hot-row",
    );
    let output = tokio::task::spawn_blocking(move || bench(&args)).await.unwrap();
    db.drop_it().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench ceilings failed:\n{stderr}");
    assert!(stderr.contains("[ceilings · rep 2/2 · pg-hot-row · c=4]"), "one progress line each:\n{stderr}");
    let folder = std::fs::read_dir(&out).unwrap().flatten().find(|e| e.path().is_dir()).unwrap().path();
    let rows: Vec<CeilingRow> = read_csv(&folder.join("ceilings.csv")).unwrap();
    assert_eq!(rows.len(), 2 * (1 + 1 + 1 + 2), "every ceiling × client count × repetition: {rows:?}");
    for row in &rows {
        assert!(row.ops_per_sec > 0.0 && row.seconds > 0.0, "{row:?}");
    }
    let pg: Vec<_> = rows.iter().filter(|r| r.ceiling == "pg-hot-row").collect();
    assert!(pg.iter().any(|r| r.cpu_postgres > 0.0), "PostgreSQL's CPU is counted: {pg:?}");
    let client: Vec<_> = rows.iter().filter(|r| r.ceiling == "client-memory").collect();
    assert!(client.iter().any(|r| r.cpu_server > 0.0), "the server's CPU is counted: {client:?}");
    let ratios = std::fs::read_to_string(folder.join("ceiling_ratios.csv")).unwrap();
    assert!(ratios.starts_with("subject,"), "{ratios}");
    let bad = bench(&["ceilings", "--only", "wrk-turbo"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown ceiling \"wrk-turbo\""));
    let _ = std::fs::remove_dir_all(&out);
}

/// `bench ceilings` measures the MariaDB ceiling through mysqlslap on a scratch database of its
/// own, dropped afterwards; with MariaDB unreachable it skips it in one line and measures the rest.
#[tokio::test]
async fn bench_ceilings_measures_mariadb_or_skips_it_in_one_line() {
    use checkout_bench::run_folder::ceilings::CeilingRow;
    let db = ScratchDatabase::new();
    let out = tempdir();
    let maria = format!("ceilings_e2e_{}", uuid::Uuid::new_v4().simple());
    let measured = db.args(
        &out,
        &format!(
            "ceilings --repeat 1 --secs 1 --mariadb-clients 2 --only mariadb-hot-row \
             --mariadb-url mysql://root@127.0.0.1:3306/{maria}"
        ),
    );
    let skipped_out = tempdir();
    let unreachable = db.args(
        &skipped_out,
        "ceilings --repeat 1 --secs 1 --connections 2 --only client-static,mariadb-hot-row \
         --mariadb-url mysql://root@127.0.0.1:1/checkout_bench_ceilings",
    );
    let (measured, unreachable) =
        tokio::task::spawn_blocking(move || (bench(&measured), bench(&unreachable))).await.unwrap();
    db.drop_it().await;
    let stderr = String::from_utf8_lossy(&measured.stderr);
    assert!(measured.status.success(), "bench ceilings failed:\n{stderr}");
    let folder = std::fs::read_dir(&out).unwrap().flatten().find(|e| e.path().is_dir()).unwrap().path();
    let rows: Vec<CeilingRow> = read_csv(&folder.join("ceilings.csv")).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].ceiling.as_str(), rows[0].tool.as_str(), rows[0].clients),
        ("mariadb-hot-row", "mysqlslap", 2)
    );
    assert!(rows[0].ops_per_sec > 0.0, "{rows:?}");
    let admin = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306").await.unwrap();
    let left: Option<(String,)> =
        sqlx::query_as("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?")
            .bind(&maria)
            .fetch_optional(&admin)
            .await
            .unwrap();
    assert!(left.is_none(), "the scratch MariaDB database is dropped");
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(unreachable.status.success(), "an unreachable MariaDB fails nothing:\n{stderr}");
    assert_eq!(stderr.matches("skipping the MariaDB ceilings").count(), 1, "{stderr}");
    assert!(stderr.contains("client-static · c=2]"), "the others still run:\n{stderr}");
    assert!(!stderr.contains("mariadb-hot-row · c="), "{stderr}");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&skipped_out);
}

/// `bench chaos` breaks Redis through a proxy a cluster client would bypass: with
/// `REDIS_CLUSTER_NODES` set it stops before starting anything, and says why.
#[test]
fn bench_chaos_refuses_a_redis_cluster_by_name() {
    let out = tempdir();
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .env("REDIS_CLUSTER_NODES", "127.0.0.1:7000,127.0.0.1:7001")
        .args(["chaos", "--out"])
        .arg(&out)
        .output()
        .expect("bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot run on a Redis Cluster") && stderr.contains("REDIS_CLUSTER_NODES"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing was started or written");
    let _ = std::fs::remove_dir_all(&out);
}

/// `--replicas 2`: two server processes on one database and Redis, the load spread over both; the
/// flash sale still sells exactly the stock, and the run records the replica count. A strategy
/// whose books live in one process is refused by name and left out by default.
#[tokio::test]
async fn bench_compare_spreads_the_load_over_replicas() {
    let db = ScratchDatabase::new();
    let out = tempdir();
    let common = "--preset ci --repeat 1 --rate 400 --hot-stock 150 --regular-weight 0 --duration-secs 4 \
                  --grace-ms 200 --capacity=false --no-report --replicas 2";
    let refused = bench(&db.args(&out, &format!("compare --strategies memory {common}")));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "memory across replicas must be refused:\n{stderr}");
    assert!(stderr.contains("memory keeps its books in one server process"), "{stderr}");

    let output = bench(&db.args(&out, &format!("compare --strategies sql-atomic,redis-lua,stream {common}")));
    db.drop_it().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench compare --replicas 2 failed:\n{stderr}");
    let run = out.join("latest").canonicalize().expect("results/latest points at the run");
    let summary: Vec<SummaryRow> = read_csv(&run.join("summary.csv")).unwrap();
    assert_eq!(summary.len(), 3, "one row per strategy");
    for row in &summary {
        assert_eq!(row.verdict, Verdict::Clean, "{row:?}");
        assert_eq!(
            row.confirmed + row.pending,
            150,
            "{}: exactly the stock sold across replicas",
            row.strategy
        );
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(meta["server"]["replicas"], 2, "{meta}");
    assert!(run.join("server-replica-2.log").exists(), "the second replica logs beside the first");
}

/// `--also-database`: the strategies that keep books (SQL, Redis-gated, queued) run again on
/// MariaDB in the same run folder, labelled `<strategy>@mysql`, each selling exactly the stock
/// there too; `memory` runs once; the page shows both databases side by side.
#[tokio::test]
async fn bench_compare_runs_the_sql_strategies_on_both_databases() {
    let db = ScratchDatabase::new();
    let mariadb = format!("mysql://root@127.0.0.1:3306/bench_e2e_{}", uuid::Uuid::new_v4().simple());
    let out = tempdir();
    let common = "--preset ci --repeat 1 --rate 400 --hot-stock 150 --regular-weight 0 --duration-secs 3 \
                  --grace-ms 200 --capacity=false";
    let output = bench(&db.args(
        &out,
        &format!(
            "compare --strategies memory,sql-atomic,redis-lua,stream --also-database {mariadb} {common}"
        ),
    ));
    db.drop_it().await;
    let created = <sqlx::MySql as sqlx::migrate::MigrateDatabase>::database_exists(&mariadb).await.unwrap();
    if created {
        <sqlx::MySql as sqlx::migrate::MigrateDatabase>::drop_database(&mariadb).await.unwrap();
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench compare --also-database failed:\n{stderr}");
    assert!(created, "the MariaDB server created its database");
    let run = out.join("latest").canonicalize().expect("results/latest points at the run");
    let summary: Vec<SummaryRow> = read_csv(&run.join("summary.csv")).unwrap();
    let mut labels: Vec<&str> = summary.iter().map(|row| row.strategy.as_str()).collect();
    labels.sort_unstable();
    assert_eq!(
        labels,
        [
            "memory",
            "redis-lua",
            "redis-lua@mysql",
            "sql-atomic",
            "sql-atomic@mysql",
            "stream",
            "stream@mysql"
        ],
        "the strategies with books once per database, memory once"
    );
    for row in &summary {
        assert_eq!(row.verdict, Verdict::Clean, "{row:?}");
        assert_eq!(row.confirmed + row.pending, 150, "{}: exactly the stock sold", row.strategy);
    }
    assert!(run.join("server-mysql.log").exists(), "the MariaDB pass logs beside the first");
    let page = std::fs::read_to_string(run.join("summary.md")).unwrap();
    assert!(page.contains("### By database") && page.contains("| stream |"), "{page}");
}

/// `bench scale` on MariaDB with a tiny catalogue: `server populate` loads it into a database of
/// its own (`populate::run_mysql`), the capacity search runs on it, and a second run finds the
/// catalogue held already (its plan and history read back from MariaDB) instead of loading again.
#[tokio::test]
async fn bench_scale_populates_and_measures_on_mariadb() {
    let name = format!("scale_e2e_{}", uuid::Uuid::new_v4().simple());
    let out = tempdir();
    let command = format!(
        "scale --scales 200:50 --strategies sql-atomic --repeat 1 --probe-secs 0.5 --warmup-secs 0 \
         --start-rate 50 --max-rate 400 --generator-cap 400 --resolution 0.5 --max-bisections 1 \
         --database-url mysql://root@127.0.0.1:3306/{name} --redis-prefix {name}: --out {}",
        out.display()
    );
    let args: Vec<&str> = command.split_whitespace().collect();
    let first = bench(&args);
    let second = bench(&args);
    let loaded = format!("mysql://root@127.0.0.1:3306/{name}_200p_50o");
    let created = <sqlx::MySql as sqlx::migrate::MigrateDatabase>::database_exists(&loaded).await.unwrap();
    if created {
        <sqlx::MySql as sqlx::migrate::MigrateDatabase>::drop_database(&loaded).await.unwrap();
    }
    let (first_err, second_err) =
        (String::from_utf8_lossy(&first.stderr), String::from_utf8_lossy(&second.stderr));
    assert!(first.status.success(), "bench scale on MariaDB failed:\n{first_err}");
    assert!(created, "the catalogue got a MariaDB database of its own");
    assert!(first_err.contains("loaded 347 rows"), "200 products, 50 orders and their lines:\n{first_err}");
    assert!(second.status.success(), "the second bench scale failed:\n{second_err}");
    assert!(second_err.contains("holds it already"), "the catalogue is not loaded twice:\n{second_err}");

    let run = out.join("latest").canonicalize().expect("results/latest points at the scale run");
    let rows: Vec<ScaleRow> = read_csv(&run.join("scale.csv")).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!((row.strategy.as_str(), row.products, row.orders), ("sql-atomic@mysql", 200, 50), "{row:?}");
    // A busy machine may pass no rate at all: what matters is that the search ran on MariaDB.
    assert!(row.capacity_rps.is_finite() && !row.capacity_run.is_empty(), "{row:?}");
    let _ = std::fs::remove_dir_all(&out);
}
