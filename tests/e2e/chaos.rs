//! `bench chaos` end to end, through its library API: the rig (a disposable Redis, the fault
//! proxy, a `bench serve` child on the test's own database), one short `pg-terminate` storm per
//! strategy, the audit's join, the table and the run folder.
//!
//! Only the invariants that hold today are asserted: SQL strategies stay exact under terminated
//! backends, nothing oversells, no strategy confirms more than the shelf held; and the harness
//! does see an anomaly when one is there (the unsafe `sql-naive`, given a wide race window).

use std::collections::HashMap;

use checkout_bench::bench::chaos::{self, ChaosFlags, Fault, Row, Verdict};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

/// Units of the hot product, and of the three regular products (20 each) beside it.
const HOT_STOCK: i64 = 30;
const SHELF: u64 = 30 + 3 * 20;

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn terminated_backends_leave_sql_exact_and_an_oversell_is_seen(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let database = connect.get_database().expect("sqlx::test names the database it made");
    let flags = ChaosFlags {
        scenarios: vec![Fault::PgTerminate],
        strategies: vec!["sql-atomic".into(), "redis-lua".into(), "sql-naive".into()],
        hot_stock: HOT_STOCK,
        clients: 16,
        storm_ms: 1_000,
        drain_timeout_secs: 15,
        database_url: format!(
            "postgres://{}@{}:{}/{database}",
            connect.get_username(),
            connect.get_host(),
            connect.get_port()
        ),
        // Sixty buyers in a second and 100 ms between read and write: several naive buyers read
        // the last units at once.
        server_args: vec!["--naive-race-window-ms=100".into()],
        out: std::env::temp_dir().join(format!("chaos-e2e-{}", uuid::Uuid::new_v4().simple())),
        server_exe: Some(env!("CARGO_BIN_EXE_bench").into()),
    };
    let report = chaos::run(&flags).await.expect("the chaos run completes");
    let rows: HashMap<&str, &Row> = report.rows.iter().map(|row| (row.strategy.as_str(), row)).collect();
    assert_eq!(rows.len(), 3, "one row per strategy: {:?}", report.rows);

    for (name, row) in &rows {
        assert_eq!(row.fault, Fault::PgTerminate);
        assert!(row.skipped.is_none(), "{name} ran");
        let t = row.tally;
        assert!(t.requests >= 2 * HOT_STOCK as u64, "{name}: every buyer was sent at least once: {t:?}");
        assert!(t.confirmed > 0, "{name}: the storm sold something: {t:?}");
        assert!(
            t.requests >= t.confirmed + t.unavailable + t.connection_errors,
            "{name}: no answer is counted twice: {t:?}"
        );
        assert_eq!(t.aborted, 0, "{name}: nobody hangs up in pg-terminate");
    }
    for name in ["sql-atomic", "redis-lua"] {
        let row = rows[name];
        assert!(row.safe, "{name} is safe");
        assert!(
            row.tally.confirmed <= SHELF,
            "{name}: confirmed {} > the shelf's {SHELF}",
            row.tally.confirmed
        );
        assert_eq!(row.oversold, 0, "{name}: oversold under terminated backends");
        assert_eq!(row.duplicated, 0, "{name}: duplicated under terminated backends");
    }
    let atomic = rows["sql-atomic"];
    assert_eq!(atomic.verdict(), Verdict::Exact, "sql-atomic stays exact: {atomic:?}");
    assert!(!atomic.fails_the_run());

    let naive = rows["sql-naive"];
    assert!(!naive.safe);
    assert!(naive.oversold > 0, "the harness sees sql-naive oversell: {naive:?}");
    let Verdict::NotExact(failed) = naive.verdict() else { panic!("sql-naive is not exact: {naive:?}") };
    assert!(failed.iter().any(|f| f.starts_with("oversold")), "the verdict names the oversell: {failed:?}");
    assert!(failed.iter().any(|f| f.starts_with("audit not clean")), "the audit saw it too: {failed:?}");
    assert!(!naive.fails_the_run(), "an unsafe strategy's anomaly does not fail the run");

    let table = chaos::table::text(&report.rows);
    assert!(table.contains("sql-naive (unsafe)") && table.contains("NOT EXACT (oversold"), "{table}");
    let csv = std::fs::read_to_string(report.folder.file("chaos.csv")).expect("chaos.csv written");
    assert_eq!(csv.lines().count(), 4, "a header and one line per row: {csv}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.folder.file("chaos.json")).expect("chaos.json"))
            .expect("chaos.json is JSON");
    assert_eq!(written["rows"].as_array().map(Vec::len), Some(3));
    assert!(written["incomplete"].is_null(), "{written}");
    let _ = std::fs::remove_dir_all(&flags.out);
}

/// `bench chaos` on MariaDB: the server keeps its books in a MariaDB database of the test's own
/// (created by the server, dropped at the end); `pg-terminate` ends its sessions with KILL
/// CONNECTION and says so in the row's note; nothing is lost, duplicated or oversold, `sql-atomic`
/// stays exact, and the same-key case mixes both strategies.
///
/// As in the PostgreSQL test above, only what holds today is asserted: on a loaded machine,
/// `redis-lua` was seen unsettled at the end of its drain, and the same-key case right after it
/// with a Redis mirror one or two units off (`redis_drift`), with two orders no client heard of
/// (PostgreSQL, same load, held such orders without the drift).
#[tokio::test]
async fn chaos_runs_on_mariadb_and_ends_its_sessions() {
    let url = format!("mysql://root@127.0.0.1:3306/chaos_e2e_{}", uuid::Uuid::new_v4().simple());
    let flags = ChaosFlags {
        scenarios: vec![Fault::PgTerminate, Fault::SameKeyMixed],
        strategies: vec!["sql-atomic".into(), "redis-lua".into()],
        hot_stock: HOT_STOCK,
        clients: 16,
        storm_ms: 1_000,
        drain_timeout_secs: 15,
        database_url: url.clone(),
        server_args: Vec::new(),
        out: std::env::temp_dir().join(format!("chaos-e2e-{}", uuid::Uuid::new_v4().simple())),
        server_exe: Some(env!("CARGO_BIN_EXE_bench").into()),
    };
    let report = chaos::run(&flags).await;
    let created = <sqlx::MySql as sqlx::migrate::MigrateDatabase>::database_exists(&url).await.unwrap();
    if created {
        <sqlx::MySql as sqlx::migrate::MigrateDatabase>::drop_database(&url).await.unwrap();
    }
    let report = report.expect("the chaos run on MariaDB completes");
    assert!(created, "the server created its MariaDB database");
    assert_eq!(report.rows.len(), 3, "two pg-terminate rows and the same-key row: {:?}", report.rows);

    for row in report.rows.iter().filter(|row| row.fault == Fault::PgTerminate) {
        let name = &row.strategy;
        assert!(row.tally.confirmed > 0 && row.tally.confirmed <= SHELF, "{name}: {:?}", row.tally);
        assert_eq!((row.lost, row.duplicated, row.oversold), (0, 0, 0), "{name} on MariaDB: {row:?}");
        let note = row.note.as_deref().expect("the row says what pg-terminate did on MariaDB");
        let ended: u64 = note.split_whitespace().next().and_then(|n| n.parse().ok()).expect("a count");
        assert!(ended > 0 && note.contains("KILL CONNECTION"), "{name}: {note}");
    }
    let atomic = report.rows.iter().find(|row| row.strategy == "sql-atomic").expect("a sql-atomic row");
    assert_eq!(atomic.verdict(), Verdict::Exact, "sql-atomic stays exact on MariaDB: {atomic:?}");
    let mixed = report.rows.iter().find(|row| row.fault == Fault::SameKeyMixed).expect("a same-key row");
    assert!(mixed.skipped.is_none(), "both strategies keep their orders in the SQL books: {mixed:?}");
    assert!(mixed.note.as_deref().is_some_and(|note| note.contains("sql-atomic, redis-lua")), "{mixed:?}");
    assert_eq!((mixed.lost, mixed.duplicated, mixed.oversold), (0, 0, 0), "one order per key: {mixed:?}");
    assert!(mixed.tally.confirmed > 0, "{mixed:?}");

    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.folder.file("chaos.json")).expect("chaos.json"))
            .expect("chaos.json is JSON");
    assert_eq!(written["options"]["database"], "mysql", "{written}");

    let _ = std::fs::remove_dir_all(&flags.out);
}
