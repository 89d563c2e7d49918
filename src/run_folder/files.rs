//! The files of a run folder, as `results/README.md` documents them. CSV rows are serde structs,
//! so the header and the columns cannot drift apart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::Anomalies;
use crate::loadgen::RunRecord;
use crate::loadgen::record::WINDOW;

/// Percentiles written to `latency.csv`.
pub const PERCENTILES: [f64; 13] =
    [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0];

/// How a run of a strategy came out, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No anomaly, and every request answered without a server error.
    Clean,
    /// No anomaly, but some requests got a 5xx, timed out or broke: the books are right, the
    /// service was not (the count is `server_errors`).
    Degraded,
    /// A strategy unsafe by design showed the anomaly it is known for.
    Flagged,
    /// A strategy that claims to be safe showed an anomaly: the run does not count.
    Invalid,
    /// Nobody audited the run (Locust output saved without the server's audit).
    Unknown,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Degraded => "degraded",
            Self::Flagged => "flagged",
            Self::Invalid => "invalid",
            Self::Unknown => "unknown",
        }
    }

    /// The verdict of the books alone.
    pub const fn of(safe: bool, anomalies: &Anomalies) -> Self {
        match (anomalies.is_clean(), safe) {
            (true, _) => Self::Clean,
            (false, true) => Self::Invalid,
            (false, false) => Self::Flagged,
        }
    }

    /// The verdict of the books and the service: a clean run with `server_errors` is degraded;
    /// an anomaly outranks errors.
    #[must_use]
    pub const fn with_errors(self, server_errors: u64) -> Self {
        match self {
            Self::Clean if server_errors > 0 => Self::Degraded,
            other => other,
        }
    }
}

/// Errors the server (or the path to it) is to blame for: 5xx answers, timeouts, refused or broken
/// connections. Other 4xx answers are the client's and 409 is an answer, not an error.
pub fn server_errors(errors: &std::collections::BTreeMap<String, u64>) -> u64 {
    errors
        .iter()
        .filter(|(kind, _)| kind.strip_prefix("http_").is_none_or(|rest| rest.starts_with('5')))
        .map(|(_, count)| count)
        .sum()
}

/// One row of `summary.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub run_id: String,
    pub strategy: String,
    pub repetition: u32,
    pub position: u32,
    pub safe: bool,
    pub model: String,
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub sent: u64,
    pub answered: u64,
    pub confirmed: u64,
    pub pending: u64,
    pub sold_out: u64,
    pub errors: u64,
    /// Of `errors`, those that make a run `degraded`.
    #[serde(default)]
    pub server_errors: u64,
    pub late: u64,
    pub unsent: u64,
    /// Columns added after a folder's schema was first written read as their default from older
    /// folders.
    #[serde(default)]
    pub censored: u64,
    pub duration_ms: f64,
    pub sales_per_sec: f64,
    #[serde(default)]
    pub durable_sales_per_sec: Option<f64>,
    pub time_to_sell_out_ms: Option<f64>,
    #[serde(default)]
    pub sold_out_durable_ms: Option<f64>,
    #[serde(default)]
    pub durable_ms: Option<f64>,
    pub first_sold_out_ms: Option<f64>,
    pub hot_stock: i64,
    pub final_stock: Option<i64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub sold_out_p50_ms: Option<f64>,
    pub sold_out_p99_ms: Option<f64>,
    #[serde(default)]
    pub due_p50_ms: Option<f64>,
    #[serde(default)]
    pub due_p90_ms: Option<f64>,
    #[serde(default)]
    pub due_p99_ms: Option<f64>,
    #[serde(default)]
    pub due_max_ms: Option<f64>,
    #[serde(default)]
    pub service_p99_ms: Option<f64>,
    #[serde(default)]
    pub dispatch_p50_ms: Option<f64>,
    #[serde(default)]
    pub dispatch_p99_ms: Option<f64>,
    #[serde(default)]
    pub dispatch_max_ms: Option<f64>,
    pub oversold: i64,
    pub undersold: i64,
    pub lost: i64,
    pub phantom: i64,
    pub duplicated: i64,
    pub accepted_then_cancelled: i64,
    pub redis_drift: i64,
    pub drain_ms: f64,
    pub settled: bool,
    pub verdict: Verdict,
}

/// The anomaly columns of `summary.csv`, in the order tables and charts show them.
pub const ANOMALIES: [&str; 7] =
    ["oversold", "undersold", "lost", "phantom", "duplicated", "accepted_then_cancelled", "redis_drift"];

impl SummaryRow {
    /// The anomaly counts, in [`ANOMALIES`] order (each is a count, never below zero).
    pub fn anomalies(&self) -> [u64; 7] {
        [
            self.oversold,
            self.undersold,
            self.lost,
            self.phantom,
            self.duplicated,
            self.accepted_then_cancelled,
            self.redis_drift,
        ]
        .map(|count| u64::try_from(count).unwrap_or(0))
    }

    /// The non-zero anomalies, by column name.
    pub fn named_anomalies(&self) -> Vec<(&'static str, u64)> {
        ANOMALIES.into_iter().zip(self.anomalies()).filter(|(_, count)| *count != 0).collect()
    }

    /// Seconds the run lasted.
    pub fn duration_secs(&self) -> f64 {
        self.duration_ms / 1000.0
    }
}

/// Which run of which strategy a row belongs to.
#[derive(Debug, Clone)]
pub struct RunKey {
    pub run_id: String,
    pub strategy: String,
    pub repetition: u32,
    pub position: u32,
    pub safe: bool,
    /// The strategy answers before its orders are durable (`Guarantees.queued`).
    pub queued: bool,
}

/// What the drain and the audit found for one run.
#[derive(Debug, Clone, Copy)]
pub struct Settlement {
    pub anomalies: Anomalies,
    pub final_stock: Option<i64>,
    pub drain: Duration,
    pub settled: bool,
    /// From the run's start until the first audit that found nothing waiting for a worker; `None`
    /// when the drain gave up first.
    pub durable_at: Option<Duration>,
}

/// When a queued strategy's accepted orders were all durable, and the rate that makes.
#[derive(Debug, Clone, Copy)]
struct Durable {
    /// From the start until nothing accepted was left waiting for a worker.
    at: Duration,
    /// The hot product sold out and every unit of it durable: the later of the sell-out and `at`.
    sold_out_at: Option<Duration>,
    /// Hot-product units acknowledged per second until they were all durable.
    sales_per_sec: f64,
}

impl Durable {
    /// `None` when the drain gave up before the backlog was empty.
    fn of(record: &RunRecord, settlement: &Settlement) -> Option<Self> {
        let at = settlement.durable_at?;
        let sold_out_at = record.time_to_sell_out.map(|sold_out| sold_out.max(at));
        let units = if sold_out_at.is_some() { record.hot_stock } else { record.hot_units() };
        let span = sold_out_at.unwrap_or(at);
        let sales_per_sec = if span.is_zero() { 0.0 } else { units.max(0) as f64 / span.as_secs_f64() };
        Some(Self { at, sold_out_at, sales_per_sec })
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// A latency percentile in milliseconds (histograms hold microseconds); none without answers.
fn at(histogram: &Histogram<u64>, percentile: f64) -> Option<f64> {
    (!histogram.is_empty()).then(|| histogram.value_at_percentile(percentile) as f64 / 1_000.0)
}

impl SummaryRow {
    pub fn new(
        key: &RunKey,
        model: &str,
        offered_rps: f64,
        record: &RunRecord,
        settlement: &Settlement,
    ) -> Self {
        let success = &record.success;
        let due = record.due_latency();
        let durable = key.queued.then(|| Durable::of(record, settlement)).flatten();
        let server_errors = server_errors(&record.errors);
        Self {
            run_id: key.run_id.clone(),
            strategy: key.strategy.clone(),
            repetition: key.repetition,
            position: key.position,
            safe: key.safe,
            model: model.to_owned(),
            offered_rps,
            achieved_rps: record.achieved_rps(),
            sent: record.counts.sent,
            answered: record.counts.answered,
            confirmed: record.counts.confirmed,
            pending: record.counts.pending,
            sold_out: record.counts.sold_out,
            errors: record.counts.errors,
            server_errors,
            late: record.counts.late,
            unsent: record.unsent,
            censored: record.counts.censored,
            duration_ms: ms(record.duration),
            sales_per_sec: record.sales_per_sec(),
            durable_sales_per_sec: durable.map(|d| d.sales_per_sec),
            time_to_sell_out_ms: record.time_to_sell_out.map(ms),
            sold_out_durable_ms: durable.and_then(|d| d.sold_out_at).map(ms),
            durable_ms: durable.map(|d| ms(d.at)),
            first_sold_out_ms: record.first_hot_sold_out.map(ms),
            hot_stock: record.hot_stock,
            final_stock: settlement.final_stock,
            p50_ms: at(success, 50.0),
            p90_ms: at(success, 90.0),
            p99_ms: at(success, 99.0),
            p999_ms: at(success, 99.9),
            max_ms: at(success, 100.0),
            sold_out_p50_ms: at(&record.sold_out_latency, 50.0),
            sold_out_p99_ms: at(&record.sold_out_latency, 99.0),
            due_p50_ms: at(&due, 50.0),
            due_p90_ms: at(&due, 90.0),
            due_p99_ms: at(&due, 99.0),
            due_max_ms: at(&due, 100.0),
            service_p99_ms: at(&record.service_latency, 99.0),
            dispatch_p50_ms: at(&record.dispatch, 50.0),
            dispatch_p99_ms: at(&record.dispatch, 99.0),
            dispatch_max_ms: at(&record.dispatch, 100.0),
            oversold: settlement.anomalies.oversold,
            undersold: settlement.anomalies.undersold,
            lost: settlement.anomalies.lost,
            phantom: settlement.anomalies.phantom,
            duplicated: settlement.anomalies.duplicated,
            accepted_then_cancelled: settlement.anomalies.accepted_then_cancelled,
            redis_drift: settlement.anomalies.redis_drift,
            drain_ms: ms(settlement.drain),
            settled: settlement.settled,
            verdict: Verdict::of(key.safe, &settlement.anomalies).with_errors(server_errors),
        }
    }
}

/// One row of `timeseries.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeseriesRow {
    pub strategy: String,
    pub repetition: u32,
    pub t_ms: u64,
    pub sent: u64,
    pub confirmed: u64,
    pub pending: u64,
    pub sold_out: u64,
    pub errors: u64,
    /// Always present in a bench folder; Locust output does not know the stock.
    pub units_left: Option<i64>,
}

impl TimeseriesRow {
    pub fn of(key: &RunKey, record: &RunRecord) -> Vec<Self> {
        let window_ms = u64::try_from(WINDOW.as_millis()).unwrap_or(100);
        record
            .windows
            .iter()
            .zip(record.units_left())
            .zip(1u64..)
            .map(|((window, units_left), n)| Self {
                strategy: key.strategy.clone(),
                repetition: key.repetition,
                t_ms: n * window_ms,
                sent: window.sent,
                confirmed: window.confirmed,
                pending: window.pending,
                sold_out: window.sold_out,
                errors: window.errors,
                units_left: Some(units_left),
            })
            .collect()
    }
}

/// `latency.csv`'s `outcome` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 201 and 202.
    Success,
    /// 409.
    SoldOut,
    /// Error answers and broken connections.
    Failed,
    /// Lower bounds: client timeouts and requests due but never sent.
    Censored,
    /// Every due request: the four above together.
    Due,
    /// Intended → actual send, per request sent.
    Dispatch,
    /// Actual send → answer: the latency without the correction for coordinated omission.
    Service,
}

impl Outcome {
    /// The name `latency.csv` and the histogram files use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::SoldOut => "sold_out",
            Self::Failed => "failed",
            Self::Censored => "censored",
            Self::Due => "due",
            Self::Dispatch => "dispatch",
            Self::Service => "service",
        }
    }

    /// Each outcome with its histogram in `record`.
    pub fn histograms(record: &RunRecord) -> [(Self, Histogram<u64>); 7] {
        [
            (Self::Success, record.success.clone()),
            (Self::SoldOut, record.sold_out_latency.clone()),
            (Self::Failed, record.failed_latency.clone()),
            (Self::Censored, record.censored_latency.clone()),
            (Self::Due, record.due_latency()),
            (Self::Dispatch, record.dispatch.clone()),
            (Self::Service, record.service_latency.clone()),
        ]
    }
}

/// One row of `latency.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    pub strategy: String,
    pub repetition: u32,
    pub outcome: Outcome,
    pub percentile: f64,
    pub latency_ms: f64,
    pub count: u64,
}

impl LatencyRow {
    pub fn of(key: &RunKey, record: &RunRecord) -> Vec<Self> {
        Outcome::histograms(record)
            .into_iter()
            .filter(|(_, histogram)| !histogram.is_empty())
            .flat_map(|(outcome, histogram)| {
                PERCENTILES
                    .iter()
                    .map(|&percentile| Self {
                        strategy: key.strategy.clone(),
                        repetition: key.repetition,
                        outcome,
                        percentile,
                        latency_ms: at(&histogram, percentile).unwrap_or_default(),
                        count: histogram.len(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// One row of `errors.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRow {
    pub strategy: String,
    pub repetition: u32,
    pub kind: String,
    pub count: u64,
}

impl ErrorRow {
    pub fn of(key: &RunKey, record: &RunRecord) -> Vec<Self> {
        record
            .errors
            .iter()
            .map(|(kind, count)| Self {
                strategy: key.strategy.clone(),
                repetition: key.repetition,
                kind: kind.clone(),
                count: *count,
            })
            .collect()
    }
}

/// A row of one of the run folder's CSV files. `COLUMNS` is its header, written also when a file
/// has no rows; a test holds it equal to the serialized fields and to `results/README.md`.
pub trait CsvRow: Serialize {
    const COLUMNS: &'static [&'static str];
}

impl CsvRow for SummaryRow {
    const COLUMNS: &'static [&'static str] = &[
        "run_id",
        "strategy",
        "repetition",
        "position",
        "safe",
        "model",
        "offered_rps",
        "achieved_rps",
        "sent",
        "answered",
        "confirmed",
        "pending",
        "sold_out",
        "errors",
        "server_errors",
        "late",
        "unsent",
        "censored",
        "duration_ms",
        "sales_per_sec",
        "durable_sales_per_sec",
        "time_to_sell_out_ms",
        "sold_out_durable_ms",
        "durable_ms",
        "first_sold_out_ms",
        "hot_stock",
        "final_stock",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "sold_out_p50_ms",
        "sold_out_p99_ms",
        "due_p50_ms",
        "due_p90_ms",
        "due_p99_ms",
        "due_max_ms",
        "service_p99_ms",
        "dispatch_p50_ms",
        "dispatch_p99_ms",
        "dispatch_max_ms",
        "oversold",
        "undersold",
        "lost",
        "phantom",
        "duplicated",
        "accepted_then_cancelled",
        "redis_drift",
        "drain_ms",
        "settled",
        "verdict",
    ];
}

impl CsvRow for TimeseriesRow {
    const COLUMNS: &'static [&'static str] = &[
        "strategy",
        "repetition",
        "t_ms",
        "sent",
        "confirmed",
        "pending",
        "sold_out",
        "errors",
        "units_left",
    ];
}

impl CsvRow for LatencyRow {
    const COLUMNS: &'static [&'static str] =
        &["strategy", "repetition", "outcome", "percentile", "latency_ms", "count"];
}

impl CsvRow for ErrorRow {
    const COLUMNS: &'static [&'static str] = &["strategy", "repetition", "kind", "count"];
}

/// Writes `rows` as a CSV with a header row (also when there are no rows).
///
/// # Errors
/// When the file cannot be written.
pub fn write_csv<T: CsvRow>(path: &Path, rows: &[T]) -> anyhow::Result<()> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(!rows.is_empty())
        .from_path(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if rows.is_empty() {
        writer.write_record(T::COLUMNS)?;
    }
    for row in rows {
        writer.serialize(row).with_context(|| format!("cannot write a row of {}", path.display()))?;
    }
    writer.flush()?;
    Ok(())
}

/// Reads a CSV of `T` rows.
///
/// # Errors
/// When the file is missing or a row does not match `T`, naming the file and the line.
pub fn read_csv<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.with_context(|| format!("{}: row {} is malformed", path.display(), i + 2)))
        .collect()
}

/// Writes `histogram` (microseconds) in HdrHistogram's percentile-distribution text format, in
/// milliseconds, as `HistogramLogProcessor` and the online plotters read it.
///
/// # Errors
/// When the file cannot be written.
pub fn write_hgrm(path: &Path, histogram: &Histogram<u64>) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let scale = 1_000.0;
    let mut total = 0;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let quantile = step.quantile_iterated_to();
        let inverse = if quantile < 1.0 { format!("{:12.2}", 1.0 / (1.0 - quantile)) } else { String::new() };
        let _ = writeln!(
            out,
            "{:12.3} {:14.12} {total:10} {inverse}",
            step.value_iterated_to() as f64 / scale,
            quantile,
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]",
        histogram.mean() / scale,
        histogram.stdev() / scale,
        histogram.max() as f64 / scale,
        histogram.len(),
    );
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// A run folder: `results/<run-id>/`.
#[derive(Debug, Clone)]
pub struct RunFolder {
    pub id: String,
    pub path: PathBuf,
}

impl RunFolder {
    /// Creates `<out>/<UTC timestamp>-<short sha>/` with its sub-folders.
    ///
    /// # Errors
    /// When the folder cannot be created.
    pub fn create(out: &Path, short_sha: &str) -> anyhow::Result<Self> {
        let id = format!("{}-{short_sha}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
        let path = out.join(&id);
        for sub in ["histograms", "audit"] {
            std::fs::create_dir_all(path.join(sub))
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        Ok(Self { id, path })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Points `<out>/latest` at this run.
    ///
    /// # Errors
    /// When the link cannot be replaced.
    pub fn mark_latest(&self, out: &Path) -> anyhow::Result<()> {
        let link = out.join("latest");
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(&self.id, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use uuid::Uuid;

    use super::*;
    use crate::loadgen::AckStatus;
    use crate::loadgen::record::{Answer, Live, Recorder};

    /// The backticked column names of a file's table in `results/README.md`, in order.
    fn documented(file: &str) -> Vec<String> {
        let doc = include_str!("../../results/README.md");
        let section = doc
            .split(&format!("## {file}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("results/README.md has no section for {file}"));
        let section = section.split("\n## ").next().unwrap_or_default();
        section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .filter_map(|line| line.split('|').nth(1))
            .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    fn header<T: Serialize>(rows: &[T]) -> Vec<String> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.serialize(&rows[0]).unwrap();
        let bytes = writer.into_inner().unwrap();
        String::from_utf8(bytes).unwrap().lines().next().unwrap().split(',').map(str::to_owned).collect()
    }

    #[test]
    fn every_csv_has_exactly_the_documented_columns() {
        let start = Instant::now();
        let live = Live::new(start, Duration::from_secs(1), 100, 5, Duration::ZERO);
        let mut recorder = Recorder::default();
        let at = start + Duration::from_millis(50);
        recorder.sent(&live, at, Duration::ZERO);
        recorder.answered(
            &live,
            at,
            Duration::from_millis(2),
            100,
            1,
            Answer::Acked(AckStatus::Confirmed, Uuid::new_v4()),
        );
        recorder.answered(&live, at, Duration::from_millis(1), 7, 1, Answer::SoldOut);
        recorder.answered(&live, at, Duration::from_millis(9), 100, 1, Answer::timeout());
        let record = RunRecord::merge(vec![recorder], &live, &[], Duration::from_secs(1));
        let row = SummaryRow::new(
            &RunKey {
                run_id: "r".into(),
                strategy: "m".into(),
                repetition: 1,
                position: 1,
                safe: true,
                queued: false,
            },
            "open",
            10.0,
            &record,
            &Settlement {
                anomalies: Anomalies::default(),
                final_stock: Some(4),
                drain: Duration::ZERO,
                settled: true,
                durable_at: None,
            },
        );
        assert_eq!(
            (row.server_errors, row.verdict),
            (1, Verdict::Degraded),
            "a timeout degrades a clean run"
        );
        let key = RunKey {
            run_id: "r".into(),
            strategy: "memory".into(),
            repetition: 1,
            position: 1,
            safe: true,
            queued: true,
        };
        let settlement = Settlement {
            anomalies: Anomalies::default(),
            final_stock: Some(4),
            drain: Duration::ZERO,
            settled: true,
            durable_at: Some(Duration::from_millis(900)),
        };

        check(&[SummaryRow::new(&key, "open", 10.0, &record, &settlement)], "summary.csv");
        check(&TimeseriesRow::of(&key, &record), "timeseries.csv");
        check(&LatencyRow::of(&key, &record), "latency.csv");
        check(&ErrorRow::of(&key, &record), "errors.csv");
        let ceiling = super::super::ceilings::CeilingRow {
            run_id: "r".into(),
            ceiling: "pg-hot-row".into(),
            tool: "pgbench".into(),
            operation: "o".into(),
            clients: 8,
            repetition: 1,
            seconds: 1.0,
            ops_per_sec: 1.0,
            cpu_server: 0.0,
            cpu_postgres: 0.0,
            cpu_redis: 0.0,
            cpu_rest: 0.0,
        };
        check(std::slice::from_ref(&ceiling), "ceilings.csv");
        let ratios = super::super::ceilings::ratios(
            &std::collections::BTreeMap::from([("sql-atomic".to_owned(), 1.0)]),
            &[ceiling],
        );
        assert!(!ratios.is_empty());
        check(&ratios, "ceiling_ratios.csv");
        let chaos =
            crate::bench::chaos::Row::skipped(crate::bench::chaos::Fault::Sigterm, "memory", true, "why");
        check(&[crate::bench::chaos::table::CsvLine::from(&chaos)], "chaos.csv");
        let probe = crate::bench::capacity::probe::Measured {
            record,
            drain: Duration::ZERO,
            failure: Some("why".into()),
        };
        let step = probe.row("r", "memory", 1, 1, super::super::Phase::Ramp, 500.0, false);
        check(std::slice::from_ref(&step), "capacity_steps.csv");
        let capacity = super::super::CapacityRow {
            run_id: "r".into(),
            strategy: "memory".into(),
            repetition: 1,
            safe: true,
            slo_ms: 100.0,
            probe_secs: 2.0,
            cap_rps: 16_000.0,
            capacity_rps: 8_000.0,
            at_least: false,
            first_fail_rps: Some(9_000.0),
            sales_per_sec: 7_900.0,
            achieved_rps: 8_000.0,
            p50_ms: Some(1.0),
            p99_ms: Some(9.0),
            steps: 7,
        };
        check(&[capacity], "capacity.csv");
    }

    /// The serialized header, the declared columns and the documented ones are the same list.
    fn check<T: CsvRow>(rows: &[T], file: &str) {
        assert_eq!(header(rows), documented(file), "{file}: the rows against results/README.md");
        assert_eq!(header(rows), T::COLUMNS, "{file}: the rows against CsvRow::COLUMNS");
    }

    #[test]
    fn a_written_csv_reads_back_and_a_malformed_one_names_its_line() {
        let dir = std::env::temp_dir().join(format!("results-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = vec![ErrorRow { strategy: "s".into(), repetition: 1, kind: "timeout".into(), count: 3 }];
        let path = dir.join("errors.csv");
        write_csv(&path, &rows).unwrap();
        assert_eq!(read_csv::<ErrorRow>(&path).unwrap(), rows);
        write_csv::<ErrorRow>(&path, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "strategy,repetition,kind,count");
        let summary = dir.join("summary.csv");
        write_csv::<SummaryRow>(&summary, &[]).unwrap();
        let written = std::fs::read_to_string(&summary).unwrap();
        assert!(
            written.starts_with("run_id,strategy,repetition,") && written.trim().ends_with(",verdict"),
            "{written}"
        );
        std::fs::write(&path, "strategy,repetition,kind,count\ns,one,timeout,3\n").unwrap();
        let err = format!("{:#}", read_csv::<ErrorRow>(&path).unwrap_err());
        assert!(err.contains("errors.csv") && err.contains("row 2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hgrm_lists_percentiles_in_milliseconds_with_cumulative_counts() {
        let mut histogram = crate::loadgen::record::latency_histogram();
        for micros in [1_000, 2_000, 3_000, 4_000] {
            histogram.record(micros).unwrap();
        }
        let path = std::env::temp_dir().join(format!("{}.hgrm", Uuid::new_v4().simple()));
        write_hgrm(&path, &histogram).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let last = text.lines().rfind(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
        let fields: Vec<&str> = last.split_whitespace().collect();
        let value: f64 = fields[0].parse().unwrap();
        assert!((value - 4.0).abs() < 0.01, "4 ms, to HdrHistogram's precision: {text}");
        assert_eq!(fields[1..3], ["1.000000000000", "4"], "{text}");
        assert!(text.contains("Total count    =            4"), "{text}");
    }

    /// Four units of the hot product acknowledged by 400 ms, the backlog empty at 1.6 s.
    fn sold_out_run() -> RunRecord {
        let start = Instant::now();
        let live = Live::new(start, Duration::from_secs(5), 100, 4, Duration::ZERO);
        let mut recorder = Recorder::default();
        for i in 1..=4u64 {
            let at = start + Duration::from_millis(100 * i);
            recorder.sent(&live, at, Duration::ZERO);
            recorder.answered(
                &live,
                at,
                Duration::from_millis(1),
                100,
                1,
                Answer::Acked(AckStatus::Pending, Uuid::new_v4()),
            );
        }
        RunRecord::merge(vec![recorder], &live, &[], Duration::from_millis(500))
    }

    fn settled(durable_at: Option<Duration>) -> Settlement {
        Settlement {
            anomalies: Anomalies::default(),
            final_stock: Some(0),
            drain: Duration::from_millis(1_100),
            settled: durable_at.is_some(),
            durable_at,
        }
    }

    #[test]
    fn a_queued_strategy_reports_when_its_orders_were_durable() {
        let record = sold_out_run();
        let key = |queued| RunKey {
            run_id: "r".into(),
            strategy: "stream".into(),
            repetition: 1,
            position: 1,
            safe: true,
            queued,
        };
        let row =
            SummaryRow::new(&key(true), "open", 10.0, &record, &settled(Some(Duration::from_millis(1_600))));
        assert_eq!(row.time_to_sell_out_ms, Some(400.0), "accepted");
        assert_eq!(row.sold_out_durable_ms, Some(1_600.0), "accepted and durable");
        assert_eq!(row.durable_ms, Some(1_600.0));
        assert!((row.sales_per_sec - 10.0).abs() < 1e-9, "4 units accepted in 400 ms");
        assert!((row.durable_sales_per_sec.unwrap() - 2.5).abs() < 1e-9, "4 units durable in 1.6 s");

        let unsettled = SummaryRow::new(&key(true), "open", 10.0, &record, &settled(None));
        assert_eq!((unsettled.durable_ms, unsettled.durable_sales_per_sec), (None, None), "never durable");
        let synchronous =
            SummaryRow::new(&key(false), "open", 10.0, &record, &settled(Some(Duration::from_millis(1_600))));
        assert_eq!(synchronous.durable_ms, None, "durable when answered: no column of its own");
    }

    #[test]
    fn verdicts_follow_the_claims() {
        let dirty = Anomalies { oversold: 1, ..Anomalies::default() };
        assert_eq!(Verdict::of(true, &Anomalies::default()), Verdict::Clean);
        assert_eq!(Verdict::of(false, &Anomalies::default()), Verdict::Clean);
        assert_eq!(Verdict::of(true, &dirty), Verdict::Invalid);
        assert_eq!(Verdict::of(false, &dirty), Verdict::Flagged);
        assert!(Verdict::Invalid > Verdict::Flagged && Verdict::Flagged > Verdict::Clean, "worst sorts last");
        assert_eq!(Verdict::of(true, &Anomalies::default()).with_errors(3), Verdict::Degraded);
        assert_eq!(Verdict::of(true, &Anomalies::default()).with_errors(0), Verdict::Clean);
        assert_eq!(Verdict::of(true, &dirty).with_errors(3), Verdict::Invalid, "an anomaly outranks errors");
        assert_eq!(Verdict::of(false, &dirty).with_errors(3), Verdict::Flagged);
    }

    #[test]
    fn server_errors_are_5xx_timeouts_and_broken_connections() {
        let errors: std::collections::BTreeMap<String, u64> = [
            ("http_503_backend_unavailable", 4),
            ("http_500_internal", 1),
            ("timeout", 2),
            ("connect", 1),
            ("io", 1),
            ("http_400_invalid_request", 7),
            ("http_404_unknown_strategy", 5),
        ]
        .into_iter()
        .map(|(kind, count)| (kind.to_owned(), count))
        .collect();
        assert_eq!(server_errors(&errors), 9, "4xx answers are the client's");
    }
}
