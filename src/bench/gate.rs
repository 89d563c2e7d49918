//! The regression gate. Invariants are the hard gate: a run of a safe strategy with any anomaly
//! fails it, and so does a `degraded` run whose server errors exceed `degraded_tolerance` of its
//! requests. Speed is judged only as same-run ratios against the `memory` baseline strategy,
//! because absolute figures on shared CI machines say more about the neighbours than the code.
//!
//! A ratio is of sustainable capacity (`capacity.csv`) when the run measured it, else of the
//! flash sale's `sales_per_sec`: at a fixed offered rate every strategy fast enough sells at that
//! rate, so sales/s ratios cannot see a regression above it. A baseline says which of the two it
//! holds, and a run is compared on that one only.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use crate::run_folder::DENOMINATOR;
use crate::run_folder::{CapacityRow, SummaryRow, Verdict, medians_by_strategy};

/// What a same-run ratio divides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioMetric {
    /// Median `capacity_rps` (`capacity.csv`) over `memory`'s.
    Capacity,
    /// Median flash-sale `sales_per_sec` (`summary.csv`) over `memory`'s: the fallback for runs
    /// without a capacity step, and what baselines written before capacity existed hold.
    #[default]
    SalesPerSec,
}

impl RatioMetric {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Capacity => "capacity",
            Self::SalesPerSec => "sales/s (fallback)",
        }
    }
}

/// `results/baseline.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// How far below its baseline a ratio may fall (0.5: to half) before the gate fails.
    pub tolerance: f64,
    /// The share of a run's requests that may end in a server error (5xx, timeout, broken
    /// connection) before a `degraded` run fails the gate.
    #[serde(default = "default_degraded_tolerance")]
    pub degraded_tolerance: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Per build profile (`debug`, `release`).
    pub profiles: BTreeMap<String, ProfileBaseline>,
}

/// 0.1 % of a run's requests.
pub const DEFAULT_DEGRADED_TOLERANCE: f64 = 0.001;

const fn default_degraded_tolerance() -> f64 {
    DEFAULT_DEGRADED_TOLERANCE
}

/// The ratios measured with one profile and one preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileBaseline {
    pub preset: String,
    pub run_id: String,
    /// What the ratios divide; files without the field hold sales/s ratios.
    #[serde(default)]
    pub metric: RatioMetric,
    /// Each strategy's figure over `memory`'s, medians over repetitions.
    pub ratios: BTreeMap<String, f64>,
}

impl Baseline {
    /// # Errors
    /// When the file is missing or malformed.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the baseline {}", path.display()))?;
        let baseline: Self =
            serde_json::from_str(&text).with_context(|| format!("{} is not a baseline", path.display()))?;
        anyhow::ensure!(
            (0.0..1.0).contains(&baseline.tolerance),
            "{}: tolerance must be in [0, 1), got {}",
            path.display(),
            baseline.tolerance
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&baseline.degraded_tolerance),
            "{}: degraded_tolerance must be in [0, 1), got {}",
            path.display(),
            baseline.degraded_tolerance
        );
        Ok(baseline)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvalidRun {
    pub strategy: String,
    pub repetition: u32,
    pub anomalies: BTreeMap<&'static str, u64>,
}

/// A `degraded` run with more server errors than the tolerance allows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DegradedRun {
    pub strategy: String,
    pub repetition: u32,
    pub server_errors: u64,
    /// Of the run's due requests (sent and unsent).
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatioCheck {
    pub strategy: String,
    pub measured: f64,
    pub baseline: Option<f64>,
    pub floor: Option<f64>,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineRef {
    pub path: String,
    pub profile: String,
    pub preset: String,
    pub tolerance: f64,
}

/// `gate.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateReport {
    pub passed: bool,
    pub invalid: Vec<InvalidRun>,
    pub degraded: Vec<DegradedRun>,
    /// What `ratios` divide; `None` when the ratio gate was skipped before choosing.
    pub metric: Option<RatioMetric>,
    /// What a reader must know about the ratios (a fallback, a lower-bound denominator).
    pub note: Option<String>,
    pub ratios: Vec<RatioCheck>,
    pub baseline: Option<BaselineRef>,
    pub skipped: Option<String>,
}

impl GateReport {
    /// A safe strategy that showed an anomaly when offered more than its capacity fails the gate
    /// like one in the flash sale; its errors do not (it was overloaded on purpose).
    pub fn fail_invalid_at_saturation(&mut self, saturation: &[SummaryRow]) {
        for row in saturation.iter().filter(|row| row.verdict == Verdict::Invalid) {
            self.invalid.push(InvalidRun {
                strategy: format!("{} at saturation", row.strategy),
                repetition: row.repetition,
                anomalies: row.named_anomalies().into_iter().collect(),
            });
            self.passed = false;
        }
    }
}

/// Median `sales_per_sec` of each strategy over `memory`'s, or why there is none.
///
/// # Errors
/// When `memory` is not in the run or sold nothing.
pub fn ratios(rows: &[SummaryRow]) -> Result<BTreeMap<String, f64>, String> {
    let medians = medians_by_strategy(rows.iter().map(|row| (row.strategy.as_str(), row.sales_per_sec)));
    let denominator = *medians
        .get(DENOMINATOR)
        .ok_or_else(|| format!("`{DENOMINATOR}` is not in this run: no same-run ratio can be taken"))?;
    if denominator <= 0.0 {
        return Err(format!("`{DENOMINATOR}` sold nothing in this run"));
    }
    Ok(over(medians, denominator))
}

/// Every strategy's median but the denominator's, divided by it.
fn over(medians: BTreeMap<String, f64>, denominator: f64) -> BTreeMap<String, f64> {
    medians
        .into_iter()
        .filter(|(strategy, _)| strategy != DENOMINATOR)
        .map(|(strategy, median)| (strategy, median / denominator))
        .collect()
}

/// Median `capacity_rps` of each strategy over `memory`'s, and whether `memory`'s is only a lower
/// bound (it passed at the load generator's ceiling), or why there is none.
///
/// # Errors
/// When `memory` has no capacity in this run.
pub fn capacity_ratios(rows: &[CapacityRow]) -> Result<(BTreeMap<String, f64>, bool), String> {
    let medians = medians_by_strategy(rows.iter().map(|row| (row.strategy.as_str(), row.capacity_rps)));
    let denominator = *medians.get(DENOMINATOR).ok_or_else(|| {
        format!("`{DENOMINATOR}` has no capacity in this run: no capacity ratio can be taken")
    })?;
    if denominator <= 0.0 {
        return Err(format!("`{DENOMINATOR}` sustained no probed rate in this run"));
    }
    let lower_bound = rows.iter().any(|row| row.strategy == DENOMINATOR && row.at_least);
    Ok((over(medians, denominator), lower_bound))
}

/// The run's ratios of `metric`, and a note for the reader.
fn measured(
    metric: RatioMetric,
    rows: &[SummaryRow],
    capacity: &[CapacityRow],
) -> Result<(BTreeMap<String, f64>, Option<String>), String> {
    match metric {
        RatioMetric::Capacity if capacity.is_empty() => {
            Err("the baseline holds capacity ratios and this run measured no capacity".to_owned())
        }
        RatioMetric::Capacity => capacity_ratios(capacity).map(|(ratios, lower_bound)| {
            let note = lower_bound.then(|| {
                format!(
                    "`{DENOMINATOR}` passed at the load generator's ceiling: its capacity is a lower bound, \
                     so every ratio is at most what it shows"
                )
            });
            (ratios, note)
        }),
        RatioMetric::SalesPerSec => {
            let note = if capacity.is_empty() {
                "sales/s ratios: this run has no capacity figures"
            } else {
                "sales/s ratios (fallback): the baseline holds sales/s ratios, not capacity ones"
            };
            ratios(rows).map(|ratios| (ratios, Some(note.to_owned())))
        }
    }
}

/// Judges a run's rows (and its capacity rows, if any) against `baseline` (read from `path`), for
/// a run built with `profile` from `preset`.
pub fn check(
    rows: &[SummaryRow],
    capacity: &[CapacityRow],
    baseline: &Baseline,
    path: &Path,
    profile: &str,
    preset: &str,
) -> GateReport {
    let invalid: Vec<InvalidRun> = rows
        .iter()
        .filter(|row| row.verdict == Verdict::Invalid)
        .map(|row| InvalidRun {
            strategy: row.strategy.clone(),
            repetition: row.repetition,
            anomalies: row.named_anomalies().into_iter().collect(),
        })
        .collect();
    let degraded: Vec<DegradedRun> = rows
        .iter()
        .filter(|row| row.verdict == Verdict::Degraded)
        .filter_map(|row| {
            let share = row.server_errors as f64 / (row.sent + row.unsent).max(1) as f64;
            (share > baseline.degraded_tolerance).then(|| DegradedRun {
                strategy: row.strategy.clone(),
                repetition: row.repetition,
                server_errors: row.server_errors,
                share,
            })
        })
        .collect();
    let mut report = GateReport {
        passed: invalid.is_empty() && degraded.is_empty(),
        invalid,
        degraded,
        metric: None,
        note: None,
        ratios: Vec::new(),
        baseline: None,
        skipped: None,
    };
    let Some(reference) = baseline.profiles.get(profile) else {
        report.skipped = Some(format!("{} has no `{profile}` profile: ratios not gated", path.display()));
        return report;
    };
    report.baseline = Some(BaselineRef {
        path: path.display().to_string(),
        profile: profile.to_owned(),
        preset: reference.preset.clone(),
        tolerance: baseline.tolerance,
    });
    if reference.preset != preset {
        report.skipped = Some(format!(
            "the baseline was measured with preset `{}`, this run with `{preset}`: ratios not gated",
            reference.preset
        ));
        return report;
    }
    report.metric = Some(reference.metric);
    let measured = match measured(reference.metric, rows, capacity) {
        Ok((measured, note)) => {
            report.note = note;
            measured
        }
        Err(why) => {
            report.skipped = Some(why);
            return report;
        }
    };
    for (strategy, measured) in measured {
        let expected = reference.ratios.get(&strategy).copied();
        let floor = expected.map(|expected| expected * (1.0 - baseline.tolerance));
        let passed = floor.is_none_or(|floor| measured >= floor);
        report.passed &= passed;
        report.ratios.push(RatioCheck { strategy, measured, baseline: expected, floor, passed });
    }
    report
}

/// This run's ratios as the baseline of `profile` (capacity ratios when the run measured capacity),
/// keeping the other profiles and the tolerance.
///
/// # Errors
/// When the run has no ratios.
pub fn rebaseline(
    existing: Option<Baseline>,
    rows: &[SummaryRow],
    capacity: &[CapacityRow],
    profile: &str,
    preset: &str,
    run_id: &str,
) -> anyhow::Result<Baseline> {
    let (metric, ratios) = if capacity.is_empty() {
        (RatioMetric::SalesPerSec, ratios(rows).map_err(|why| anyhow::anyhow!(why))?)
    } else {
        (RatioMetric::Capacity, capacity_ratios(capacity).map_err(|why| anyhow::anyhow!(why))?.0)
    };
    let mut baseline = existing.unwrap_or(Baseline {
        tolerance: 0.5,
        degraded_tolerance: DEFAULT_DEGRADED_TOLERANCE,
        note: None,
        profiles: BTreeMap::new(),
    });
    baseline.profiles.insert(
        profile.to_owned(),
        ProfileBaseline { preset: preset.to_owned(), run_id: run_id.to_owned(), metric, ratios },
    );
    Ok(baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        strategy: &str,
        repetition: u32,
        sales_per_sec: f64,
        verdict: Verdict,
        oversold: i64,
    ) -> SummaryRow {
        let csv = format!(
            "run_id,strategy,repetition,position,safe,model,offered_rps,achieved_rps,sent,answered,confirmed,pending,sold_out,errors,late,unsent,duration_ms,sales_per_sec,time_to_sell_out_ms,first_sold_out_ms,hot_stock,final_stock,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,sold_out_p50_ms,sold_out_p99_ms,oversold,undersold,lost,phantom,duplicated,accepted_then_cancelled,redis_drift,drain_ms,settled,verdict\n\
             r,{strategy},{repetition},1,true,open,1,1,1,1,1,0,0,0,0,0,1,{sales_per_sec},,,10,0,1,1,1,1,1,0,0,{oversold},0,0,0,0,0,0,0,true,{}\n",
            serde_json::to_value(verdict).unwrap().as_str().unwrap()
        );
        csv::Reader::from_reader(csv.as_bytes()).deserialize().next().unwrap().unwrap()
    }

    fn baseline(preset: &str) -> Baseline {
        Baseline {
            tolerance: 0.5,
            degraded_tolerance: DEFAULT_DEGRADED_TOLERANCE,
            note: None,
            profiles: BTreeMap::from([(
                "release".to_owned(),
                ProfileBaseline {
                    preset: preset.to_owned(),
                    run_id: "r0".to_owned(),
                    metric: RatioMetric::SalesPerSec,
                    ratios: BTreeMap::from([("sql-atomic".to_owned(), 0.4)]),
                },
            )]),
        }
    }

    fn gate(rows: &[SummaryRow], preset: &str) -> GateReport {
        check(rows, &[], &baseline("ci"), Path::new("results/baseline.json"), "release", preset)
    }

    #[test]
    fn ratios_are_medians_over_memory_in_the_same_run() {
        let rows = [
            row("memory", 1, 1_000.0, Verdict::Clean, 0),
            row("memory", 2, 3_000.0, Verdict::Clean, 0),
            row("sql-atomic", 1, 400.0, Verdict::Clean, 0),
            row("sql-atomic", 2, 800.0, Verdict::Clean, 0),
            row("sql-atomic", 3, 500.0, Verdict::Clean, 0),
        ];
        let ratios = ratios(&rows).unwrap();
        assert_eq!(ratios.get("sql-atomic"), Some(&0.25), "median 500 over median 2000");
        assert!(!ratios.contains_key("memory"));
    }

    #[test]
    fn a_ratio_below_its_floor_fails_and_above_passes() {
        let slow =
            [row("memory", 1, 1_000.0, Verdict::Clean, 0), row("sql-atomic", 1, 150.0, Verdict::Clean, 0)];
        let report = gate(&slow, "ci");
        assert!(!report.passed);
        assert_eq!(report.ratios[0].floor, Some(0.2));
        let fine =
            [row("memory", 1, 1_000.0, Verdict::Clean, 0), row("sql-atomic", 1, 250.0, Verdict::Clean, 0)];
        assert!(gate(&fine, "ci").passed);
    }

    #[test]
    fn an_invalid_run_fails_the_gate_whatever_the_speed_and_flagged_ones_do_not() {
        let rows = [
            row("memory", 1, 1_000.0, Verdict::Clean, 0),
            row("sql-atomic", 1, 900.0, Verdict::Invalid, 3),
            row("sql-naive", 1, 900.0, Verdict::Flagged, 40),
        ];
        let report = gate(&rows, "other");
        assert!(!report.passed);
        assert_eq!(report.invalid.len(), 1);
        assert_eq!(report.invalid[0].anomalies.get("oversold"), Some(&3));
        assert!(report.skipped.unwrap().contains("preset"), "another preset's ratios are not compared");
    }

    #[test]
    fn an_invalid_run_at_saturation_fails_the_gate_and_a_degraded_one_does_not() {
        let flash =
            [row("memory", 1, 1_000.0, Verdict::Clean, 0), row("sql-atomic", 1, 250.0, Verdict::Clean, 0)];
        let mut report = gate(&flash, "ci");
        report.fail_invalid_at_saturation(&[row("memory", 1, 9_000.0, Verdict::Degraded, 0)]);
        assert!(report.passed, "overloaded on purpose: errors are expected there");
        report.fail_invalid_at_saturation(&[row("sql-atomic", 1, 2_000.0, Verdict::Invalid, 2)]);
        assert!(!report.passed);
        assert_eq!(report.invalid[0].strategy, "sql-atomic at saturation");
        assert_eq!(report.invalid[0].anomalies.get("oversold"), Some(&2));
    }

    #[test]
    fn a_degraded_run_fails_the_gate_above_the_tolerance_only() {
        let degraded = |server_errors: u64| {
            let mut row = row("sql-atomic", 1, 900.0, Verdict::Degraded, 0);
            (row.sent, row.unsent, row.server_errors) = (9_000, 1_000, server_errors);
            row
        };
        let memory = row("memory", 1, 1_000.0, Verdict::Clean, 0);
        let report = gate(&[memory.clone(), degraded(11)], "other");
        assert!(!report.passed, "11 server errors in 10,000 requests is above 0.1 %");
        assert_eq!(report.degraded.len(), 1);
        assert_eq!(report.degraded[0].server_errors, 11);
        assert!(gate(&[memory, degraded(10)], "other").passed, "10 in 10,000 is within 0.1 %");
        let old: Baseline = serde_json::from_str(r#"{"tolerance": 0.5, "profiles": {}}"#).unwrap();
        assert_eq!(old.degraded_tolerance, DEFAULT_DEGRADED_TOLERANCE, "a baseline without the field");
    }

    #[test]
    fn without_memory_or_a_profile_the_ratio_gate_is_skipped_not_passed_silently() {
        let report = gate(&[row("sql-atomic", 1, 100.0, Verdict::Clean, 0)], "ci");
        assert!(report.passed);
        assert!(report.skipped.unwrap().contains("memory"));
        let report = check(&[], &[], &baseline("ci"), Path::new("b.json"), "debug", "ci");
        assert!(report.skipped.unwrap().contains("debug"));
    }

    #[test]
    fn a_strategy_missing_from_the_baseline_is_not_gated() {
        let rows = [
            row("memory", 1, 1_000.0, Verdict::Clean, 0),
            row("sql-atomic", 1, 250.0, Verdict::Clean, 0),
            row("redis-orderlog", 1, 1.0, Verdict::Clean, 0),
        ];
        let report = gate(&rows, "ci");
        assert!(report.passed, "a strategy newer than the baseline cannot fail it: {report:?}");
        let new = report.ratios.iter().find(|ratio| ratio.strategy == "redis-orderlog").expect("listed");
        assert_eq!((new.baseline, new.floor, new.passed), (None, None, true));
        assert!(crate::bench::describe_gate(&report).contains("not gated, no baseline"));
    }

    #[test]
    fn rebaselining_keeps_other_profiles_and_the_tolerance() {
        let rows =
            [row("memory", 1, 1_000.0, Verdict::Clean, 0), row("sql-atomic", 1, 300.0, Verdict::Clean, 0)];
        let updated = rebaseline(Some(baseline("ci")), &rows, &[], "debug", "ci", "r1").unwrap();
        assert_eq!(updated.tolerance, 0.5);
        assert_eq!(updated.profiles.len(), 2);
        assert_eq!(updated.profiles["debug"].ratios["sql-atomic"], 0.3);
        assert_eq!(updated.profiles["debug"].metric, RatioMetric::SalesPerSec, "no capacity: sales/s");
        let capacity = [capacity_row("memory", 8_000.0, false), capacity_row("sql-atomic", 2_000.0, false)];
        let updated = rebaseline(Some(baseline("ci")), &rows, &capacity, "debug", "ci", "r2").unwrap();
        assert_eq!(updated.profiles["debug"].metric, RatioMetric::Capacity);
        assert_eq!(updated.profiles["debug"].ratios["sql-atomic"], 0.25);
        assert_eq!(updated.profiles["release"].metric, RatioMetric::SalesPerSec, "other profiles kept");
    }

    fn capacity_row(strategy: &str, capacity_rps: f64, at_least: bool) -> CapacityRow {
        CapacityRow {
            run_id: "r".to_owned(),
            strategy: strategy.to_owned(),
            repetition: 1,
            safe: true,
            slo_ms: 100.0,
            probe_secs: 2.0,
            cap_rps: 64_000.0,
            capacity_rps,
            at_least,
            first_fail_rps: None,
            sales_per_sec: capacity_rps,
            achieved_rps: capacity_rps,
            p50_ms: Some(1.0),
            p99_ms: Some(5.0),
            steps: 6,
        }
    }

    fn capacity_baseline(ratio: f64) -> Baseline {
        let mut baseline = baseline("ci");
        let profile = baseline.profiles.get_mut("release").unwrap();
        profile.metric = RatioMetric::Capacity;
        profile.ratios = BTreeMap::from([("sql-atomic".to_owned(), ratio)]);
        baseline
    }

    #[test]
    fn a_capacity_baseline_gates_capacity_ratios_whatever_the_sales_per_sec() {
        // The flash sale's sales/s tie (both sell at the offered rate); capacity tells them apart.
        let rows =
            [row("memory", 1, 9_700.0, Verdict::Clean, 0), row("sql-atomic", 1, 9_700.0, Verdict::Clean, 0)];
        let capacity = [capacity_row("memory", 20_000.0, false), capacity_row("sql-atomic", 2_000.0, false)];
        let path = Path::new("b.json");
        let report = check(&rows, &capacity, &capacity_baseline(0.4), path, "release", "ci");
        assert_eq!(report.metric, Some(RatioMetric::Capacity));
        assert!((report.ratios[0].measured - 0.1).abs() < 1e-9, "{:?}", report.ratios);
        assert!(!report.passed, "0.1 is below the floor 0.2, although sales/s say 1.0");
        let report = check(&rows, &capacity, &capacity_baseline(0.15), path, "release", "ci");
        assert!(report.passed);
        let without = check(&rows, &[], &capacity_baseline(0.15), path, "release", "ci");
        assert!(
            without.skipped.unwrap().contains("no capacity"),
            "never a sales/s ratio against a capacity one"
        );
    }

    #[test]
    fn a_sales_baseline_is_the_labelled_fallback_and_a_lower_bound_denominator_is_said() {
        let rows =
            [row("memory", 1, 1_000.0, Verdict::Clean, 0), row("sql-atomic", 1, 500.0, Verdict::Clean, 0)];
        let capacity = [capacity_row("memory", 20_000.0, true), capacity_row("sql-atomic", 2_000.0, false)];
        let report = gate_with(&rows, &capacity);
        assert_eq!(report.metric, Some(RatioMetric::SalesPerSec));
        assert!(report.note.unwrap().contains("fallback"));
        assert_eq!(report.ratios[0].measured, 0.5, "sales/s against a sales/s baseline");
        let path = Path::new("b.json");
        let report = check(&rows, &capacity, &capacity_baseline(0.05), path, "release", "ci");
        assert!(report.note.unwrap().contains("lower bound"), "memory at the ceiling is said");
        let (ratios, lower_bound) = capacity_ratios(&capacity).unwrap();
        assert!(lower_bound && (ratios["sql-atomic"] - 0.1).abs() < 1e-9);
    }

    fn gate_with(rows: &[SummaryRow], capacity: &[CapacityRow]) -> GateReport {
        check(rows, capacity, &baseline("ci"), Path::new("results/baseline.json"), "release", "ci")
    }

    #[test]
    fn a_strategy_without_a_baseline_is_not_gated() {
        let rows = [row("memory", 1, 1_000.0, Verdict::Clean, 0), row("newcomer", 1, 1.0, Verdict::Clean, 0)];
        let report = gate_with(&rows, &[]);
        assert!(report.passed, "a newcomer far below memory does not fail: it has no baseline");
        assert_eq!(report.ratios[0].floor, None);
        assert!(super::super::describe_gate(&report).contains("not gated"));
    }
}
