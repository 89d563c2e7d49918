//! Where each search starts: the capacities an earlier run found (its `capacity.csv`), when that
//! run measured the same thing — the same build profile, objective, probe length and connections.
//! A capacity rarely moves far between two runs on one machine, so a search that starts at the
//! last one brackets it in three or four probes instead of ramping up from 1,000/s; one that moved
//! costs a few probes more (see [`super::search`]), never a different figure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Settings;
use crate::run_folder::{self, CapacityRow, meta};

/// Capacities of an earlier run, per strategy, and the load generator's ceiling it measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hints {
    /// The run folder they come from.
    pub from: Option<PathBuf>,
    pub by_strategy: BTreeMap<String, f64>,
    pub generator: Option<f64>,
}

impl Hints {
    /// Where `strategy`'s search starts, if the earlier run found a capacity for it.
    pub fn for_strategy(&self, strategy: &str) -> Option<f64> {
        self.by_strategy.get(strategy).copied()
    }

    /// The hints of run folder `dir`, or why it gives none: no folder, another profile or
    /// another search shape, no capacity step.
    pub fn read(dir: &Path, settings: &Settings) -> Result<Self, String> {
        let run: Value = std::fs::read_to_string(dir.join("run.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .ok_or_else(|| format!("{} holds no run", dir.display()))?;
        let profile = run.get("profile").and_then(Value::as_str).unwrap_or_default();
        if profile != meta::profile() {
            return Err(format!("{} was a {profile} build", dir.display()));
        }
        let then = run
            .pointer("/options/capacity")
            .ok_or_else(|| format!("{} had no capacity step", dir.display()))?;
        let now = settings.describe();
        for field in ["slo_ms", "probe_secs", "connections"] {
            if then.get(field).and_then(Value::as_f64) != now.get(field).and_then(Value::as_f64) {
                return Err(format!("{} searched with another {field}", dir.display()));
            }
        }
        let rows: Vec<CapacityRow> =
            run_folder::read_csv(&dir.join("capacity.csv")).map_err(|err| format!("{err:#}"))?;
        let found = rows.iter().filter(|row| row.capacity_rps > 0.0);
        let by_strategy =
            run_folder::medians_by_strategy(found.map(|row| (row.strategy.as_str(), row.capacity_rps)));
        let generator =
            run_folder::Spread::of(rows.iter().map(|row| row.cap_rps)).map(|spread| spread.median);
        if by_strategy.is_empty() {
            return Err(format!("{} found no capacity", dir.display()));
        }
        Ok(Self { from: Some(dir.to_path_buf()), by_strategy, generator })
    }

    /// The hints of `<out>/latest` unless `fresh`, saying on stderr where the searches start.
    pub fn latest(out: &Path, fresh: bool, settings: &Settings) -> Self {
        if fresh {
            return Self::default();
        }
        let latest = out.join("latest");
        // The link names the folder; the folder's own name is what a reader can find again.
        let dir = std::fs::canonicalize(&latest).unwrap_or(latest);
        match Self::read(&dir, settings) {
            Ok(hints) => {
                eprintln!(
                    "[capacity] searches start near the capacities of {} (--fresh-search ignores them)",
                    dir.display()
                );
                hints
            }
            Err(why) => {
                eprintln!("[capacity] searches ramp up from the start rate: {why}");
                Self::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::capacity::probe::{ProbeShape, Regulars};
    use crate::bench::capacity::search::SearchPlan;

    fn settings(connections: usize) -> Settings {
        Settings {
            search: SearchPlan {
                start: 1_000.0,
                cap: 64_000.0,
                floor: 31.0,
                resolution: 0.1,
                max_bisections: 3,
                hint: None,
            },
            shape: ProbeShape {
                product: 100,
                connections,
                probe: Duration::from_secs(2),
                slo: Duration::from_millis(100),
                drain_limit: Duration::from_secs(60),
                regulars: Regulars::default(),
                keep_catalogue: false,
            },
            warmup: Duration::from_millis(500),
            generator_cap: None,
            hints: Hints::default(),
        }
    }

    fn row(strategy: &str, repetition: u32, capacity_rps: f64) -> CapacityRow {
        CapacityRow {
            run_id: "r".into(),
            strategy: strategy.into(),
            repetition,
            safe: true,
            slo_ms: 100.0,
            probe_secs: 2.0,
            cap_rps: 40_000.0,
            capacity_rps,
            at_least: false,
            first_fail_rps: None,
            sales_per_sec: capacity_rps,
            achieved_rps: capacity_rps,
            p50_ms: None,
            p99_ms: None,
            steps: 5,
        }
    }

    fn folder(profile: &str, connections: usize) -> tempdir::Dir {
        let dir = tempdir::Dir::new();
        let run = serde_json::json!({
            "profile": profile,
            "options": { "capacity": settings(connections).describe() },
        });
        std::fs::write(dir.0.join("run.json"), run.to_string()).unwrap();
        let rows = [
            row("memory", 1, 26_000.0),
            row("memory", 2, 24_000.0),
            row("memory", 3, 27_000.0),
            row("sql-atomic", 1, 0.0),
        ];
        run_folder::write_csv(&dir.0.join("capacity.csv"), &rows).unwrap();
        dir
    }

    #[test]
    fn an_earlier_run_of_the_same_shape_gives_each_strategy_its_median() {
        let dir = folder(meta::profile(), 256);
        let hints = Hints::read(&dir.0, &settings(256)).unwrap();
        assert_eq!(hints.for_strategy("memory"), Some(26_000.0));
        assert_eq!(hints.for_strategy("sql-atomic"), None, "no capacity found is no hint");
        assert_eq!(hints.generator, Some(40_000.0));
    }

    #[test]
    fn another_profile_or_shape_gives_none() {
        let other = if meta::profile() == "debug" { "release" } else { "debug" };
        assert!(Hints::read(&folder(other, 256).0, &settings(256)).unwrap_err().contains("build"));
        assert!(
            Hints::read(&folder(meta::profile(), 64).0, &settings(256)).unwrap_err().contains("connections")
        );
        let empty = tempdir::Dir::new();
        assert!(Hints::read(&empty.0, &settings(256)).is_err());
        assert_eq!(Hints::latest(&empty.0, false, &settings(256)), Hints::default());
    }

    /// A folder of its own under the system's temporary directory, removed when dropped.
    mod tempdir {
        pub(super) struct Dir(pub(super) std::path::PathBuf);

        impl Dir {
            pub(super) fn new() -> Self {
                let path = std::env::temp_dir().join(format!("capacity-hints-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
