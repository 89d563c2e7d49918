//! `ceilings.csv` and `ceiling_ratios.csv`: what the raw tools reach on the same machine in the
//! same run, and each strategy's figure over the ceiling that bounds it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::files::CsvRow;
use super::spread::Spread;

/// One measurement of one raw ceiling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CeilingRow {
    pub run_id: String,
    /// What was measured ([`Ceiling::name`]).
    pub ceiling: String,
    /// The tool that measured it: `wrk`, `bench-client`, `redis-benchmark`, `pgbench`, `mysqlslap`.
    pub tool: String,
    /// The operation, in words.
    pub operation: String,
    /// Concurrent connections or clients.
    pub clients: u32,
    pub repetition: u32,
    pub seconds: f64,
    pub ops_per_sec: f64,
    /// CPU used while it ran, in cores (1.0 = one core busy), by the checkout server, PostgreSQL,
    /// Redis, and everything else (the tool itself and MariaDB included).
    pub cpu_server: f64,
    pub cpu_postgres: f64,
    pub cpu_redis: f64,
    pub cpu_rest: f64,
}

impl CsvRow for CeilingRow {
    const COLUMNS: &'static [&'static str] = &[
        "run_id",
        "ceiling",
        "tool",
        "operation",
        "clients",
        "repetition",
        "seconds",
        "ops_per_sec",
        "cpu_server",
        "cpu_postgres",
        "cpu_redis",
        "cpu_rest",
    ];
}

/// Every raw ceiling `bench ceilings` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ceiling {
    /// wrk against a route that touches no backend (`GET /strategies`).
    WrkStatic,
    /// wrk buying from `memory`.
    WrkMemory,
    /// Our own HTTP client, closed loop, against the static route.
    ClientStatic,
    /// Our own HTTP client, closed loop, buying from `memory`.
    ClientMemory,
    /// redis-benchmark `DECR` of one key.
    RedisDecr,
    /// redis-benchmark `EVALSHA` of the reservation script, all-or-nothing (`redis-lua`).
    RedisReserveCheck,
    /// redis-benchmark `EVALSHA` of the reservation script, decrement first (`redis-decr`).
    RedisReserveDecr,
    /// redis-benchmark `EVALSHA` of `stream`'s enqueue script.
    RedisStreamEnqueue,
    /// redis-benchmark `XADD`.
    RedisXadd,
    /// pgbench, `sql-atomic`'s statement on one hot row.
    PgHotRow,
    /// pgbench, the same statement spread over 100 rows.
    PgHundredRows,
    /// mysqlslap, `sql-atomic`'s MariaDB transaction on one hot row.
    MariaHotRow,
    /// mysqlslap, the same transaction spread over 100 rows.
    MariaHundredRows,
}

impl Ceiling {
    pub const ALL: [Self; 13] = [
        Self::WrkStatic,
        Self::WrkMemory,
        Self::ClientStatic,
        Self::ClientMemory,
        Self::RedisDecr,
        Self::RedisReserveCheck,
        Self::RedisReserveDecr,
        Self::RedisStreamEnqueue,
        Self::RedisXadd,
        Self::PgHotRow,
        Self::PgHundredRows,
        Self::MariaHotRow,
        Self::MariaHundredRows,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::WrkStatic => "wrk-static",
            Self::WrkMemory => "wrk-memory",
            Self::ClientStatic => "client-static",
            Self::ClientMemory => "client-memory",
            Self::RedisDecr => "redis-decr-command",
            Self::RedisReserveCheck => "redis-reserve-check",
            Self::RedisReserveDecr => "redis-reserve-decr",
            Self::RedisStreamEnqueue => "redis-stream-enqueue",
            Self::RedisXadd => "redis-xadd",
            Self::PgHotRow => "pg-hot-row",
            Self::PgHundredRows => "pg-100-rows",
            Self::MariaHotRow => "mariadb-hot-row",
            Self::MariaHundredRows => "mariadb-100-rows",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|ceiling| ceiling.name() == name)
    }
}

/// One figure over the ceiling that bounds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CeilingRatioRow {
    /// What is measured: a strategy's capacity, or a tool.
    pub subject: String,
    /// Its figure, ops/s (median over repetitions).
    pub subject_ops_per_sec: f64,
    pub ceiling: String,
    /// The ceiling, ops/s (median; `min`–`max` over repetitions).
    pub ceiling_ops_per_sec: f64,
    pub ceiling_min: f64,
    pub ceiling_max: f64,
    pub ratio: f64,
    /// The ratio the project aims at, when it has one.
    pub target: Option<f64>,
    /// `met`, `missed` or empty (no target).
    pub status: String,
}

impl CsvRow for CeilingRatioRow {
    const COLUMNS: &'static [&'static str] = &[
        "subject",
        "subject_ops_per_sec",
        "ceiling",
        "ceiling_ops_per_sec",
        "ceiling_min",
        "ceiling_max",
        "ratio",
        "target",
        "status",
    ];
}

/// Which figure is held against which ceiling, and the ratio aimed at. A strategy measured on
/// MariaDB is labelled `<strategy>@mysql` (`bench --also-database`), so it meets MariaDB's ceiling
/// and never PostgreSQL's.
const PAIRS: [(Subject, Ceiling, Option<f64>); 10] = [
    (Subject::Capacity("memory"), Ceiling::WrkStatic, Some(0.5)),
    (Subject::Ceiling(Ceiling::ClientMemory), Ceiling::WrkMemory, Some(0.7)),
    (Subject::Ceiling(Ceiling::ClientStatic), Ceiling::WrkStatic, None),
    (Subject::Capacity("stream"), Ceiling::RedisStreamEnqueue, Some(0.6)),
    (Subject::Capacity("redis-lua"), Ceiling::RedisReserveCheck, None),
    (Subject::Capacity("redis-decr"), Ceiling::RedisReserveDecr, None),
    (Subject::Capacity("sql-atomic"), Ceiling::PgHotRow, Some(0.8)),
    (Subject::Capacity("sql-for-update"), Ceiling::PgHotRow, None),
    (Subject::Capacity("sql-atomic@mysql"), Ceiling::MariaHotRow, Some(0.8)),
    (Subject::Capacity("sql-for-update@mysql"), Ceiling::MariaHotRow, None),
];

#[derive(Debug, Clone, Copy)]
enum Subject {
    /// A strategy's sustainable capacity, requests per second.
    Capacity(&'static str),
    /// Another ceiling (a tool against a tool).
    Ceiling(Ceiling),
}

/// Every ratio this run can give: `capacity` holds each strategy's median capacity (requests/s;
/// empty when the run measured none); a pair whose two sides were not both measured is left out.
/// A pgbench ceiling is the best over the client counts measured, as the figure it bounds may use
/// its best pool size.
pub fn ratios(capacity: &BTreeMap<String, f64>, rows: &[CeilingRow]) -> Vec<CeilingRatioRow> {
    let spread_of = |ceiling: Ceiling| -> Option<Spread> {
        let mut by_clients: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for row in rows.iter().filter(|row| row.ceiling == ceiling.name()) {
            by_clients.entry(row.clients).or_default().push(row.ops_per_sec);
        }
        by_clients.into_values().filter_map(Spread::of).max_by(|a, b| a.median.total_cmp(&b.median))
    };
    PAIRS
        .iter()
        .filter_map(|&(subject, ceiling, target)| {
            let (name, figure) = match subject {
                Subject::Capacity(strategy) => (strategy.to_owned(), *capacity.get(strategy)?),
                Subject::Ceiling(other) => (other.name().to_owned(), spread_of(other)?.median),
            };
            let bound = spread_of(ceiling)?;
            let ratio = if bound.median > 0.0 { figure / bound.median } else { 0.0 };
            let status = match target {
                Some(target) if ratio >= target => "met",
                Some(_) => "missed",
                None => "",
            };
            Some(CeilingRatioRow {
                subject: name,
                subject_ops_per_sec: figure,
                ceiling: ceiling.name().to_owned(),
                ceiling_ops_per_sec: bound.median,
                ceiling_min: bound.min,
                ceiling_max: bound.max,
                ratio,
                target,
                status: status.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ceiling: Ceiling, clients: u32, ops: f64) -> CeilingRow {
        CeilingRow {
            run_id: "r".into(),
            ceiling: ceiling.name().into(),
            tool: "t".into(),
            operation: "o".into(),
            clients,
            repetition: 1,
            seconds: 1.0,
            ops_per_sec: ops,
            cpu_server: 0.0,
            cpu_postgres: 0.0,
            cpu_redis: 0.0,
            cpu_rest: 0.0,
        }
    }

    #[test]
    fn names_round_trip_and_are_unique() {
        for ceiling in Ceiling::ALL {
            assert_eq!(Ceiling::parse(ceiling.name()), Some(ceiling));
        }
        let mut names: Vec<_> = Ceiling::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Ceiling::ALL.len());
    }

    #[test]
    fn ratios_take_medians_the_best_client_count_and_judge_targets() {
        let rows = [
            row(Ceiling::WrkStatic, 64, 100_000.0),
            row(Ceiling::WrkStatic, 64, 80_000.0),
            row(Ceiling::WrkStatic, 64, 120_000.0),
            row(Ceiling::PgHotRow, 8, 4_000.0),
            row(Ceiling::PgHotRow, 32, 2_000.0),
        ];
        let capacity = BTreeMap::from([("memory".to_owned(), 40_000.0), ("sql-atomic".to_owned(), 3_600.0)]);
        let ratios = ratios(&capacity, &rows);
        let memory = ratios.iter().find(|r| r.subject == "memory").unwrap();
        assert_eq!(memory.ceiling_ops_per_sec, 100_000.0);
        assert_eq!((memory.ceiling_min, memory.ceiling_max), (80_000.0, 120_000.0));
        assert!((memory.ratio - 0.4).abs() < 1e-9);
        assert_eq!(memory.status, "missed", "0.4 is below the 0.5 target");
        let atomic = ratios.iter().find(|r| r.subject == "sql-atomic").unwrap();
        assert_eq!(atomic.ceiling_ops_per_sec, 4_000.0, "the best pool size bounds it");
        assert_eq!(atomic.status, "met");
        assert!(
            !ratios.iter().any(|r| r.subject == "stream"),
            "a pair with a side not measured is left out: {ratios:?}"
        );
    }

    #[test]
    fn a_strategy_on_mariadb_meets_the_mariadb_ceiling_only() {
        let rows = [row(Ceiling::PgHotRow, 8, 4_000.0), row(Ceiling::MariaHotRow, 8, 2_500.0)];
        let capacity =
            BTreeMap::from([("sql-atomic".to_owned(), 3_000.0), ("sql-atomic@mysql".to_owned(), 2_000.0)]);
        let ratios = ratios(&capacity, &rows);
        let on = |subject: &str| -> Vec<&str> {
            ratios.iter().filter(|r| r.subject == subject).map(|r| r.ceiling.as_str()).collect()
        };
        assert_eq!(on("sql-atomic"), ["pg-hot-row"]);
        assert_eq!(on("sql-atomic@mysql"), ["mariadb-hot-row"]);
        let mariadb = ratios.iter().find(|r| r.subject == "sql-atomic@mysql").unwrap();
        assert!((mariadb.ratio - 0.8).abs() < 1e-9 && mariadb.status == "met", "{mariadb:?}");
    }
}
