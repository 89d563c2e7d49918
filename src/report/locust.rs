//! Locust output mapped into the bench's [`Run`], so the same charts and tables draw a Locust run.
//!
//! Reads a folder holding Locust's `--csv <prefix>` files (`<prefix>_stats.csv`,
//! `<prefix>_stats_history.csv`, `<prefix>_failures.csv`) and/or its `--json-file` output, and the
//! server's audit the locustfile saves beside them (`<prefix>_audit.json`). The locustfile names a
//! hunter's purchase `<strategy>` when it got 201/202 and `<strategy> (sold out)` for a 409, a
//! regular customer's `<strategy> (regular)` and `<strategy> (regular) (sold out)`, and
//! `seed:<mode>` for the seed-compatible endpoint; other request names (browsing) are not
//! purchases and are left out. Output from before regular customers were named apart counts every
//! purchase as a hunter's.
//!
//! Sales per second are the hunters' acknowledged purchases over the hunters' selling time, so
//! regular customers buying other products do not count as hot-product sales. The anomalies come
//! from the saved audit: `oversold`, `duplicated`, `accepted_then_cancelled` and `redis_drift` as
//! the server counts them (for the whole run: with several strategies in one Locust run, each is
//! charged with the run's); `lost`, `phantom` and `undersold` need the order ids and products
//! clients were told about, which Locust does not keep, and read 0. Without an audit file the
//! verdict is `unknown`. What Locust cannot say either: 201 from 202 (all acknowledged purchases
//! count as confirmed) and the stock (so no units left, only units acknowledged). Time to sell out
//! is the first sold-out answer a hunter got.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use checkout_strategies::StrategyKind;
use serde::Deserialize;

use super::load;
use super::model::{ErrorRow, LatencyRow, Origin, Outcome, Run, SummaryRow, TimeseriesRow, Verdict};
use crate::run_folder::Anomalies;

const SOLD_OUT_SUFFIX: &str = " (sold out)";
const REGULAR_SUFFIX: &str = " (regular)";
/// What the locustfile's quit hook names the audit it saves beside `<prefix>_stats.csv`.
const AUDIT_SUFFIX: &str = "_audit.json";
const SEED_PREFIX: &str = "seed:";
/// Locust's `PERCENTILES_TO_REPORT`, the percentile columns of its CSVs.
const PERCENTILES: [(f64, &str); 11] = [
    (50.0, "50%"),
    (66.0, "66%"),
    (75.0, "75%"),
    (80.0, "80%"),
    (90.0, "90%"),
    (95.0, "95%"),
    (98.0, "98%"),
    (99.0, "99%"),
    (99.9, "99.9%"),
    (99.99, "99.99%"),
    (100.0, "100%"),
];

/// One Locust request name's statistics, from the CSV or the JSON output.
#[derive(Debug, Clone, Default)]
struct Entry {
    name: String,
    requests: u64,
    failures: u64,
    /// Seconds from its first request to its last.
    span_secs: f64,
    /// (percentile, ms).
    percentiles: Vec<(f64, f64)>,
    /// Cumulative (seconds since the run started, requests, failures).
    history: Vec<(f64, u64, u64)>,
}

/// What a request name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Purchase {
    strategy: String,
    outcome: Outcome,
    /// A regular customer's, not a hot-product hunter's.
    regular: bool,
}

fn classify(name: &str) -> Option<Purchase> {
    let (base, outcome) = match name.strip_suffix(SOLD_OUT_SUFFIX) {
        Some(base) => (base, Outcome::SoldOut),
        None => (name, Outcome::Success),
    };
    let (base, regular) = match base.strip_suffix(REGULAR_SUFFIX) {
        Some(base) => (base, true),
        None => (base, false),
    };
    let known = base.parse::<StrategyKind>().is_ok() || base.starts_with(SEED_PREFIX);
    known.then(|| Purchase { strategy: base.to_owned(), outcome, regular })
}

/// The strategy a Locust name stands for (a seed mode's, for `seed:<mode>`).
fn kind(strategy: &str) -> Option<StrategyKind> {
    match strategy.strip_prefix(SEED_PREFIX) {
        Some(mode) => StrategyKind::of_seed_mode(mode),
        None => strategy.parse().ok(),
    }
}

/// Whether the strategy (or the one a seed mode stands for) claims to be safe; an unknown seed
/// mode claims nothing.
fn safe(strategy: &str) -> bool {
    kind(strategy).is_some_and(|kind| kind.spec().safe)
}

/// The parts of the saved `GET /admin/audit` the anomalies come from.
#[derive(Debug, Clone, Default, Deserialize)]
struct SavedAudit {
    total: AuditTotals,
    #[serde(default)]
    queues: AuditQueues,
    #[serde(default)]
    redis: AuditRedis,
    #[serde(default)]
    ledgers: BTreeMap<String, AuditLedger>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct AuditTotals {
    #[serde(default)]
    oversold: i64,
    #[serde(default)]
    duplicated: i64,
    #[serde(default)]
    redis_drift: i64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct AuditQueues {
    #[serde(default)]
    accepted_then_cancelled: i64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct AuditRedis {
    #[serde(default)]
    checked: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct AuditLedger {
    #[serde(default)]
    total: AuditTotals,
}

impl SavedAudit {
    /// What the audit charges `strategy` with: the server's books plus its own ledger, if any.
    fn anomalies(&self, strategy: &str) -> Anomalies {
        let name = kind(strategy).map_or(strategy, |kind| kind.as_str());
        let own = self.ledgers.get(name).map(|ledger| ledger.total).unwrap_or_default();
        Anomalies {
            oversold: self.total.oversold + own.oversold,
            duplicated: self.total.duplicated + own.duplicated,
            accepted_then_cancelled: self.queues.accepted_then_cancelled,
            redis_drift: if self.redis.checked { self.total.redis_drift } else { 0 },
            ..Anomalies::default()
        }
    }
}

/// Whether `dir` holds Locust output.
///
/// # Errors
///
/// The folder cannot be listed.
pub fn detect(dir: &Path) -> anyhow::Result<bool> {
    Ok(stats_csv(dir)?.is_some() || json_file(dir)?.is_some())
}

fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    paths.sort();
    Ok(paths)
}

fn stats_csv(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    Ok(files(dir)?.into_iter().find(|path| path.to_string_lossy().ends_with("_stats.csv")))
}

/// The first JSON file that is neither the bench's own nor a saved audit.
fn json_file(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    Ok(files(dir)?.into_iter().find(|path| {
        path.extension().is_some_and(|ext| ext == "json")
            && !path.file_name().is_some_and(|name| {
                name == "run.json" || name == "gate.json" || name.to_string_lossy().ends_with(AUDIT_SUFFIX)
            })
    }))
}

/// The audit the locustfile saved, if any.
fn audit_file(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    Ok(files(dir)?.into_iter().find(|path| path.to_string_lossy().ends_with(AUDIT_SUFFIX)))
}

/// Loads Locust output from `dir`, preferring the JSON output (per-second history for every
/// name, full latency distribution) and falling back to the CSVs.
///
/// # Errors
///
/// No Locust output, or a file that does not follow Locust's layout (named with its line).
pub fn load(dir: &Path) -> anyhow::Result<Run> {
    let csv = stats_csv(dir)?;
    let entries = match (json_file(dir)?, &csv) {
        (Some(json), _) => json_entries(&json)?,
        (None, Some(stats)) => csv_entries(stats)?,
        (None, None) => anyhow::bail!("{} holds no Locust *_stats.csv or JSON output", dir.display()),
    };
    let failures = match &csv {
        Some(stats) => {
            let path = sibling(stats, "_failures.csv");
            if path.exists() { load::csv_rows::<FailureRow>(&path)? } else { Vec::new() }
        }
        None => Vec::new(),
    };
    let audit: Option<SavedAudit> = audit_file(dir)?.map(|path| load::json(&path)).transpose()?;
    let id =
        dir.file_name().map_or_else(|| dir.display().to_string(), |name| name.to_string_lossy().into_owned());
    Ok(to_run(id, &entries, &failures, audit.as_ref()))
}

fn sibling(stats: &Path, suffix: &str) -> PathBuf {
    let name = stats.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = name.strip_suffix("_stats.csv").unwrap_or(&name);
    stats.with_file_name(format!("{prefix}{suffix}"))
}

/// A row of `<prefix>_stats.csv`; the percentile columns are read by name from the raw record.
#[derive(Debug, Deserialize)]
struct StatsRow {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Request Count")]
    requests: u64,
    #[serde(rename = "Failure Count")]
    failures: u64,
    #[serde(rename = "Requests/s")]
    requests_per_sec: f64,
    #[serde(rename = "Max Response Time")]
    max_ms: f64,
}

/// A row of `<prefix>_stats_history.csv`.
#[derive(Debug, Deserialize)]
struct HistoryRow {
    #[serde(rename = "Timestamp")]
    timestamp: f64,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Total Request Count")]
    requests: u64,
    #[serde(rename = "Total Failure Count")]
    failures: u64,
}

/// A row of `<prefix>_failures.csv`.
#[derive(Debug, Deserialize)]
struct FailureRow {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Error")]
    error: String,
    #[serde(rename = "Occurrences")]
    occurrences: u64,
}

fn csv_entries(stats: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut reader =
        csv::Reader::from_path(stats).with_context(|| format!("cannot read {}", stats.display()))?;
    let headers = reader.headers().with_context(|| format!("{} has no header row", stats.display()))?.clone();
    let mut entries = Vec::new();
    for record in reader.records() {
        let malformed = |err: &dyn std::fmt::Display, line: Option<u64>| {
            let line = line.map_or_else(String::new, |line| format!(" line {line}"));
            anyhow::anyhow!("{}{line} is malformed: {err}", stats.display())
        };
        let record = record.map_err(|err| malformed(&err, err.position().map(csv::Position::line)))?;
        let line = record.position().map(csv::Position::line);
        let row: StatsRow = record.deserialize(Some(&headers)).map_err(|err| malformed(&err, line))?;
        if classify(&row.name).is_none() {
            continue;
        }
        let mut percentiles = Vec::new();
        for (percentile, column) in PERCENTILES {
            let index = headers.iter().position(|h| h == column).ok_or_else(|| {
                anyhow::anyhow!("{} has no {column:?} column: not Locust 2.x stats", stats.display())
            })?;
            // Locust writes N/A for a name with no requests.
            match record.get(index).map(str::parse::<f64>) {
                Some(Ok(ms)) => percentiles.push((percentile, ms)),
                Some(Err(_)) if record.get(index) == Some("N/A") => {}
                _ => return Err(malformed(&format!("{column} is not a number"), line)),
            }
        }
        if let Some(last) = percentiles.last_mut().filter(|(p, _)| *p >= 100.0) {
            // The 100% column is rounded like the rest; the exact maximum is its own column.
            last.1 = row.max_ms;
        }
        #[expect(clippy::cast_precision_loss, reason = "request counts stay far below 2^52")]
        let span_secs =
            if row.requests_per_sec > 0.0 { row.requests as f64 / row.requests_per_sec } else { 0.0 };
        entries.push(Entry {
            name: row.name,
            requests: row.requests,
            failures: row.failures,
            span_secs,
            percentiles,
            history: Vec::new(),
        });
    }
    let history_path = sibling(stats, "_stats_history.csv");
    if history_path.exists() {
        let rows: Vec<HistoryRow> = load::csv_rows(&history_path)?;
        let start = rows.iter().map(|row| row.timestamp).fold(f64::INFINITY, f64::min);
        for entry in &mut entries {
            // Per-name rows exist only with --csv-full-history; without them there is no series.
            entry.history = rows
                .iter()
                .filter(|row| row.name == entry.name)
                .map(|row| (row.timestamp - start, row.requests, row.failures))
                .collect();
        }
    }
    Ok(entries)
}

/// One element of the `--json-file` output (Locust's `StatsEntry` report).
#[derive(Debug, Deserialize)]
struct JsonEntry {
    name: String,
    start_time: f64,
    last_request_timestamp: Option<f64>,
    num_requests: u64,
    num_failures: u64,
    max_response_time: f64,
    /// Rounded response time (ms) → count.
    response_times: BTreeMap<String, u64>,
    /// Unix second → requests (failures included) in that second.
    num_reqs_per_sec: BTreeMap<String, u64>,
    num_fail_per_sec: BTreeMap<String, u64>,
}

fn numeric_keys(map: &BTreeMap<String, u64>) -> Result<Vec<(f64, u64)>, std::num::ParseFloatError> {
    let mut pairs =
        map.iter().map(|(key, count)| Ok((key.parse::<f64>()?, *count))).collect::<Result<Vec<_>, _>>()?;
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(pairs)
}

/// The latency at `percentile` as Locust computes it from its rounded distribution.
fn percentile_of(sorted: &[(f64, u64)], total: u64, percentile: f64) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "counts"
    )]
    let within = (total as f64 * percentile / 100.0) as u64;
    let mut seen = 0;
    for &(ms, count) in sorted.iter().rev() {
        seen += count;
        if total - seen.min(total) <= within {
            return ms;
        }
    }
    0.0
}

fn json_entries(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let raw: Vec<JsonEntry> = load::json(path)?;
    let start = raw.iter().map(|e| e.start_time).fold(f64::INFINITY, f64::min);
    let mut entries = Vec::new();
    for e in raw.into_iter().filter(|e| classify(&e.name).is_some()) {
        let malformed = |err| anyhow::anyhow!("{} is malformed: entry {:?}: {err}", path.display(), e.name);
        let times = numeric_keys(&e.response_times).map_err(malformed)?;
        let total: u64 = times.iter().map(|(_, count)| count).sum();
        let mut percentiles: Vec<(f64, f64)> = if total == 0 {
            Vec::new()
        } else {
            PERCENTILES.iter().map(|&(p, _)| (p, percentile_of(&times, total, p))).collect()
        };
        if let Some(last) = percentiles.last_mut() {
            last.1 = e.max_response_time;
        }
        let requests = numeric_keys(&e.num_reqs_per_sec).map_err(malformed)?;
        let failures = numeric_keys(&e.num_fail_per_sec).map_err(malformed)?;
        let (mut cumulative_requests, mut cumulative_failures) = (0, 0);
        let history = requests
            .iter()
            .map(|&(second, count)| {
                cumulative_requests += count;
                cumulative_failures +=
                    failures.iter().filter(|(s, _)| *s == second).map(|(_, c)| c).sum::<u64>();
                // Counts of second s are complete at s + 1.
                (second + 1.0 - start.floor(), cumulative_requests, cumulative_failures)
            })
            .collect();
        entries.push(Entry {
            span_secs: e.last_request_timestamp.map_or(0.0, |last| (last - e.start_time).max(0.0)),
            requests: e.num_requests,
            failures: e.num_failures,
            percentiles,
            history,
            name: e.name,
        });
    }
    Ok(entries)
}

fn to_run(id: String, entries: &[Entry], failures: &[FailureRow], audit: Option<&SavedAudit>) -> Run {
    let mut strategies: Vec<String> = Vec::new();
    for purchase in entries.iter().filter_map(|e| classify(&e.name)) {
        if !strategies.contains(&purchase.strategy) {
            strategies.push(purchase.strategy);
        }
    }
    let find = |strategy: &str, outcome, regular| {
        entries
            .iter()
            .find(|e| classify(&e.name) == Some(Purchase { strategy: strategy.to_owned(), outcome, regular }))
    };
    let mut run = Run {
        id: id.clone(),
        origin: Origin::Locust { audited: audit.is_some() },
        meta: None,
        summary: Vec::new(),
        timeseries: Vec::new(),
        latency: Vec::new(),
        errors: Vec::new(),
        capacity: Vec::new(),
        capacity_steps: Vec::new(),
        saturation: None,
        gate: None,
    };
    for (position, strategy) in (1..).zip(&strategies) {
        let empty = Entry::default();
        let success = find(strategy, Outcome::Success, false).unwrap_or(&empty);
        let sold_out = find(strategy, Outcome::SoldOut, false).unwrap_or(&empty);
        let regular = [
            find(strategy, Outcome::Success, true).unwrap_or(&empty),
            find(strategy, Outcome::SoldOut, true).unwrap_or(&empty),
        ];
        for (entry, outcome) in [(success, Outcome::Success), (sold_out, Outcome::SoldOut)] {
            run.latency.extend(entry.percentiles.iter().map(|&(percentile, latency_ms)| LatencyRow {
                strategy: strategy.clone(),
                repetition: 1,
                outcome,
                percentile,
                latency_ms,
                count: entry.requests - entry.failures,
            }));
        }
        run.timeseries.extend(timeseries(strategy, success, sold_out));
        run.errors.extend(
            failures.iter().filter(|f| classify(&f.name).is_some_and(|p| &p.strategy == strategy)).map(|f| {
                ErrorRow {
                    strategy: strategy.clone(),
                    repetition: 1,
                    kind: f.error.clone(),
                    count: f.occurrences,
                }
            }),
        );
        let mut row = summary(&id, strategy, position, success, sold_out);
        for entry in regular {
            row.sent += entry.requests;
            row.answered += entry.requests;
            row.errors += entry.failures;
            row.server_errors += entry.failures;
        }
        row.confirmed += regular[0].requests - regular[0].failures;
        row.sold_out += regular[1].requests - regular[1].failures;
        row.verdict = match audit {
            Some(audit) => {
                let anomalies = audit.anomalies(strategy);
                row.oversold = anomalies.oversold;
                row.duplicated = anomalies.duplicated;
                row.accepted_then_cancelled = anomalies.accepted_then_cancelled;
                row.redis_drift = anomalies.redis_drift;
                Verdict::of(row.safe, &anomalies).with_errors(row.server_errors)
            }
            None => Verdict::Unknown,
        };
        run.summary.push(row);
    }
    run
}

fn summary(id: &str, strategy: &str, position: u32, success: &Entry, sold_out: &Entry) -> SummaryRow {
    let at = |entry: &Entry, percentile: f64| {
        entry.percentiles.iter().find(|(p, _)| (p - percentile).abs() < 1e-9).map(|(_, ms)| *ms)
    };
    let span = success.span_secs.max(sold_out.span_secs);
    let answered = success.requests + sold_out.requests;
    let confirmed = success.requests - success.failures;
    #[expect(clippy::cast_precision_loss, reason = "request counts stay far below 2^52")]
    let per_sec = |count: u64, secs: f64| if secs > 0.0 { count as f64 / secs } else { 0.0 };
    // The first history point where a sold-out answer had arrived.
    let first_sold_out_ms =
        sold_out.history.iter().find(|(_, requests, failures)| requests > failures).map(|h| h.0 * 1000.0);
    SummaryRow {
        run_id: id.to_owned(),
        strategy: strategy.to_owned(),
        repetition: 1,
        position,
        safe: safe(strategy),
        model: "closed".to_owned(),
        offered_rps: per_sec(answered, span),
        achieved_rps: per_sec(answered, span),
        sent: answered,
        answered,
        confirmed,
        pending: 0,
        sold_out: sold_out.requests - sold_out.failures,
        errors: success.failures + sold_out.failures,
        // The locustfile fails a purchase only on an answer the contract does not allow (5xx,
        // broken connection, timeout).
        server_errors: success.failures + sold_out.failures,
        late: 0,
        unsent: 0,
        // Locust's users wait for each answer: no schedule, so no request is due unsent.
        censored: 0,
        duration_ms: span * 1000.0,
        // Successful purchases stop when the stock runs out, so their span is the selling time.
        sales_per_sec: per_sec(confirmed, success.span_secs),
        // Locust cannot see when a queued order reached the database.
        durable_sales_per_sec: None,
        time_to_sell_out_ms: first_sold_out_ms,
        sold_out_durable_ms: None,
        durable_ms: None,
        first_sold_out_ms,
        hot_stock: 0,
        final_stock: None,
        p50_ms: at(success, 50.0),
        p90_ms: at(success, 90.0),
        p99_ms: at(success, 99.0),
        p999_ms: at(success, 99.9),
        max_ms: at(success, 100.0),
        sold_out_p50_ms: at(sold_out, 50.0),
        sold_out_p99_ms: at(sold_out, 99.0),
        // Locust times each request from its actual send: there is no intended time to count from.
        due_p50_ms: None,
        due_p90_ms: None,
        due_p99_ms: None,
        due_max_ms: None,
        service_p99_ms: at(success, 99.0),
        dispatch_p50_ms: None,
        dispatch_p99_ms: None,
        dispatch_max_ms: None,
        oversold: 0,
        undersold: 0,
        lost: 0,
        phantom: 0,
        duplicated: 0,
        accepted_then_cancelled: 0,
        redis_drift: 0,
        drain_ms: 0.0,
        settled: true,
        // Judged by the caller, from the saved audit.
        verdict: Verdict::Unknown,
    }
}

/// Window counts from the cumulative history of both names, on the union of their timestamps.
fn timeseries(strategy: &str, success: &Entry, sold_out: &Entry) -> Vec<TimeseriesRow> {
    let mut times: Vec<f64> = success.history.iter().chain(&sold_out.history).map(|h| h.0).collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let at = |entry: &Entry, t: f64| {
        entry
            .history
            .iter()
            .rev()
            .find(|h| h.0 <= t)
            .map_or((0, 0), |&(_, requests, failures)| (requests, failures))
    };
    let mut previous = ((0, 0), (0, 0));
    times
        .into_iter()
        .map(|t| {
            let now = (at(success, t), at(sold_out, t));
            let delta = |now: (u64, u64), before: (u64, u64)| {
                (now.0.saturating_sub(before.0), now.1.saturating_sub(before.1))
            };
            let (s_requests, s_failures) = delta(now.0, previous.0);
            let (o_requests, o_failures) = delta(now.1, previous.1);
            previous = now;
            TimeseriesRow {
                strategy: strategy.to_owned(),
                repetition: 1,
                t_ms: (t * 1000.0).round() as u64,
                sent: s_requests + o_requests,
                confirmed: s_requests - s_failures.min(s_requests),
                pending: 0,
                sold_out: o_requests - o_failures.min(o_requests),
                errors: s_failures + o_failures,
                units_left: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_strategies_and_outcomes() {
        let sold_out = classify("sql-atomic (sold out)").unwrap();
        assert_eq!(
            sold_out,
            Purchase { strategy: "sql-atomic".to_owned(), outcome: Outcome::SoldOut, regular: false }
        );
        let regular = classify("sql-atomic (regular) (sold out)").unwrap();
        assert_eq!(
            regular,
            Purchase { strategy: "sql-atomic".to_owned(), outcome: Outcome::SoldOut, regular: true }
        );
        assert!(classify("seed:redis (regular)").unwrap().regular);
        assert_eq!(classify("memory").unwrap().outcome, Outcome::Success);
        assert_eq!(classify("seed:simple").unwrap().strategy, "seed:simple");
        assert!(classify("/products").is_none(), "browsing is not a purchase");
        assert!(!safe("seed:simple"), "the seed's simple mode is sql-naive");
        assert!(safe("seed:redis"));
        assert!(safe("sql-atomic"));
    }

    #[test]
    fn percentiles_follow_locusts_rounded_distribution() {
        let sorted = [(1.0, 50), (2.0, 40), (10.0, 9), (100.0, 1)];
        // Locust counts down from the slowest bucket, so each percentile lands on the bucket that
        // completes it from above.
        assert_eq!(percentile_of(&sorted, 100, 40.0), 1.0);
        assert_eq!(percentile_of(&sorted, 100, 50.0), 2.0);
        assert_eq!(percentile_of(&sorted, 100, 90.0), 10.0);
        assert_eq!(percentile_of(&sorted, 100, 99.0), 100.0);
        assert_eq!(percentile_of(&sorted, 100, 100.0), 100.0);
    }
}
