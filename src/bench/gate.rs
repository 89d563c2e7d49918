//! The regression gate. Invariants are the hard gate: a run of a safe strategy with any anomaly
//! fails it. Speed is judged only as same-run ratios against the `memory` baseline strategy,
//! because absolute figures on shared CI machines say more about the neighbours than the code.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::results::{SummaryRow, Verdict};
use crate::report::figures::Spread;

/// The strategy every ratio is taken against.
pub const DENOMINATOR: &str = "memory";

/// `results/baseline.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// How far below its baseline a ratio may fall (0.5: to half) before the gate fails.
    pub tolerance: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Per build profile (`debug`, `release`).
    pub profiles: BTreeMap<String, ProfileBaseline>,
}

/// The ratios measured with one profile and one preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileBaseline {
    pub preset: String,
    pub run_id: String,
    /// `sales_per_sec` of each strategy over `memory`'s, medians over repetitions.
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
        Ok(baseline)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvalidRun {
    pub strategy: String,
    pub repetition: u32,
    pub anomalies: BTreeMap<&'static str, u64>,
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
    pub ratios: Vec<RatioCheck>,
    pub baseline: Option<BaselineRef>,
    pub skipped: Option<String>,
}

/// The median over repetitions, as the report computes it.
fn median(values: &[f64]) -> Option<f64> {
    Spread::of(values.iter().copied()).map(|spread| spread.median)
}

/// Median `sales_per_sec` of each strategy over `memory`'s, or why there is none.
///
/// # Errors
/// When `memory` is not in the run or sold nothing.
pub fn ratios(rows: &[SummaryRow]) -> Result<BTreeMap<String, f64>, String> {
    let mut by_strategy: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for row in rows {
        by_strategy.entry(&row.strategy).or_default().push(row.sales_per_sec);
    }
    let denominator = by_strategy
        .get(DENOMINATOR)
        .and_then(|values| median(values))
        .ok_or_else(|| format!("`{DENOMINATOR}` is not in this run: no same-run ratio can be taken"))?;
    if denominator <= 0.0 {
        return Err(format!("`{DENOMINATOR}` sold nothing in this run"));
    }
    Ok(by_strategy
        .into_iter()
        .filter(|(strategy, _)| *strategy != DENOMINATOR)
        .filter_map(|(strategy, values)| Some((strategy.to_owned(), median(&values)? / denominator)))
        .collect())
}

/// Judges a run's rows against `baseline` (read from `path`), for a run built with `profile` from
/// `preset`.
pub fn check(
    rows: &[SummaryRow],
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
    let mut report =
        GateReport { passed: invalid.is_empty(), invalid, ratios: Vec::new(), baseline: None, skipped: None };
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
    let measured = match ratios(rows) {
        Ok(measured) => measured,
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

/// This run's ratios as the baseline of `profile`, keeping the other profiles and the tolerance.
///
/// # Errors
/// When the run has no ratios.
pub fn rebaseline(
    existing: Option<Baseline>,
    rows: &[SummaryRow],
    profile: &str,
    preset: &str,
    run_id: &str,
) -> anyhow::Result<Baseline> {
    let ratios = ratios(rows).map_err(|why| anyhow::anyhow!(why))?;
    let mut baseline = existing.unwrap_or(Baseline { tolerance: 0.5, note: None, profiles: BTreeMap::new() });
    baseline.profiles.insert(
        profile.to_owned(),
        ProfileBaseline { preset: preset.to_owned(), run_id: run_id.to_owned(), ratios },
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
            note: None,
            profiles: BTreeMap::from([(
                "release".to_owned(),
                ProfileBaseline {
                    preset: preset.to_owned(),
                    run_id: "r0".to_owned(),
                    ratios: BTreeMap::from([("sql-atomic".to_owned(), 0.4)]),
                },
            )]),
        }
    }

    fn gate(rows: &[SummaryRow], preset: &str) -> GateReport {
        check(rows, &baseline("ci"), Path::new("results/baseline.json"), "release", preset)
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
    fn without_memory_or_a_profile_the_ratio_gate_is_skipped_not_passed_silently() {
        let report = gate(&[row("sql-atomic", 1, 100.0, Verdict::Clean, 0)], "ci");
        assert!(report.passed);
        assert!(report.skipped.unwrap().contains("memory"));
        let report = check(&[], &baseline("ci"), Path::new("b.json"), "debug", "ci");
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
        let updated = rebaseline(Some(baseline("ci")), &rows, "debug", "ci", "r1").unwrap();
        assert_eq!(updated.tolerance, 0.5);
        assert_eq!(updated.profiles.len(), 2);
        assert_eq!(updated.profiles["debug"].ratios["sql-atomic"], 0.3);
    }
}
