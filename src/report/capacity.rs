//! Sustainable capacity per strategy (`capacity.csv`, `capacity_steps.csv`): figures over
//! repetitions, the table every output shows first, and its headline. A capacity found at the
//! load generator's ceiling is only a lower bound, and every output says "≥" there.

use super::figures::Spread;
use super::table::aligned;
use crate::run_folder::{CapacityRow, CapacityStepRow, DENOMINATOR};

/// One strategy's capacity over the repetitions of a run.
#[derive(Debug, Clone)]
pub struct CapacityFigures {
    pub name: String,
    pub safe: bool,
    pub repetitions: usize,
    /// Highest passing offered rate, requests per second.
    pub capacity_rps: Spread,
    /// Some repetition passed at the load generator's ceiling: the capacity is at least this.
    pub at_least: bool,
    pub sales_per_sec: Spread,
    pub p50_ms: Option<Spread>,
    pub p99_ms: Option<Spread>,
    /// Lowest failing rate, over the repetitions that had one.
    pub first_fail_rps: Option<Spread>,
    /// The lowest rate probed, for "below N" when nothing passed.
    pub lowest_tried: Option<f64>,
    pub slo_ms: f64,
    /// Probes over every repetition.
    pub steps: u32,
    /// Median capacity over `memory`'s; `None` without a `memory` capacity.
    pub ratio: Option<f64>,
    /// `memory` itself reached the ceiling: every ratio is at most what it shows.
    pub over_a_bound: bool,
}

impl CapacityFigures {
    /// The capacity as people read it: `≥ 64000`, `2900`, or `< 250` when nothing passed.
    #[must_use]
    pub fn shown(&self) -> String {
        let median = self.capacity_rps.median;
        if self.at_least {
            format!("≥ {}", whole(median))
        } else if median <= 0.0 {
            self.lowest_tried.map_or_else(|| "none passed".to_owned(), |rate| format!("< {}", whole(rate)))
        } else if self.repetitions > 1 && self.capacity_rps.max > self.capacity_rps.min {
            format!("{} ({}–{})", whole(median), whole(self.capacity_rps.min), whole(self.capacity_rps.max))
        } else {
            whole(median)
        }
    }
}

/// Thousands separated: capacities are read at a glance.
fn whole(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(spread: Option<Spread>) -> String {
    spread.map_or_else(|| "–".to_owned(), |s| format!("{:.1}", s.median))
}

/// Figures per strategy, highest capacity first; strategies named in `order` come before the
/// others on ties, in that order.
#[must_use]
pub fn figures(order: &[String], rows: &[CapacityRow], steps: &[CapacityStepRow]) -> Vec<CapacityFigures> {
    let mut names: Vec<String> =
        order.iter().filter(|name| rows.iter().any(|r| &r.strategy == *name)).cloned().collect();
    for row in rows {
        if !names.contains(&row.strategy) {
            names.push(row.strategy.clone());
        }
    }
    let mut figures: Vec<CapacityFigures> = names
        .into_iter()
        .filter_map(|name| {
            let mine: Vec<&CapacityRow> = rows.iter().filter(|row| row.strategy == name).collect();
            let first = mine.first()?;
            let lowest_tried = steps
                .iter()
                .filter(|step| step.strategy == name)
                .map(|step| step.offered_rps)
                .min_by(f64::total_cmp);
            Some(CapacityFigures {
                safe: first.safe,
                repetitions: mine.len(),
                capacity_rps: Spread::of(mine.iter().map(|row| row.capacity_rps))?,
                at_least: mine.iter().any(|row| row.at_least),
                sales_per_sec: Spread::of(mine.iter().map(|row| row.sales_per_sec)).unwrap_or(Spread::ZERO),
                p50_ms: Spread::of(mine.iter().filter_map(|row| row.p50_ms)),
                p99_ms: Spread::of(mine.iter().filter_map(|row| row.p99_ms)),
                first_fail_rps: Spread::of(mine.iter().filter_map(|row| row.first_fail_rps)),
                lowest_tried,
                slo_ms: first.slo_ms,
                steps: mine.iter().map(|row| row.steps).sum(),
                ratio: None,
                over_a_bound: false,
                name,
            })
        })
        .collect();
    let denominator = figures
        .iter()
        .find(|f| f.name == DENOMINATOR)
        .map(|f| (f.capacity_rps.median, f.at_least))
        .filter(|(capacity, _)| *capacity > 0.0);
    for f in &mut figures {
        f.ratio = denominator.map(|(d, _)| f.capacity_rps.median / d);
        f.over_a_bound = denominator.is_some_and(|(_, at_least)| at_least);
    }
    figures.sort_by(|a, b| b.capacity_rps.median.total_cmp(&a.capacity_rps.median));
    figures
}

/// Column headers of [`rows`].
pub const HEADER: [&str; 8] = [
    "strategy",
    "capacity req/s",
    "sales/s at capacity",
    "p50 ms",
    "p99 ms",
    "first fail req/s",
    "× memory",
    "probes",
];

/// One row of cells per strategy.
#[must_use]
pub fn rows(figures: &[CapacityFigures]) -> Vec<Vec<String>> {
    figures
        .iter()
        .map(|f| {
            // A ratio of a lower bound, or over one, is a bound too.
            let ratio = match f.ratio {
                Some(_) if f.name == DENOMINATOR => "1".to_owned(),
                Some(_) if f.at_least && f.over_a_bound => "? (both at the ceiling)".to_owned(),
                Some(ratio) if f.at_least => format!("≥ {ratio:.2}"),
                Some(ratio) if f.over_a_bound => format!("≤ {ratio:.2}"),
                Some(ratio) => format!("{ratio:.2}"),
                None => "–".to_owned(),
            };
            vec![
                if f.safe { f.name.clone() } else { format!("{} (unsafe)", f.name) },
                f.shown(),
                if f.capacity_rps.median > 0.0 { whole(f.sales_per_sec.median) } else { "–".to_owned() },
                ms(f.p50_ms),
                ms(f.p99_ms),
                f.first_fail_rps.map_or_else(|| "none".to_owned(), |s| whole(s.median)),
                ratio,
                f.steps.to_string(),
            ]
        })
        .collect()
}

/// The table as plain text, for the terminal.
#[must_use]
pub fn text(figures: &[CapacityFigures]) -> String {
    let rows: Vec<Vec<String>> =
        std::iter::once(HEADER.iter().map(|h| (*h).to_owned()).collect()).chain(rows(figures)).collect();
    aligned(&rows)
}

/// What the capacity figures mean, under every table of them.
#[must_use]
pub fn legend(figures: &[CapacityFigures]) -> String {
    let slo = figures.first().map_or(100.0, |f| f.slo_ms);
    format!(
        "Capacity: the highest offered rate (open model) at which a probe had p99 ≤ {slo:.0} ms from the \
         intended send time, no request left unsent and no error or sold-out answer; medians over \
         repetitions, (min–max) where they differ. \"≥\": the probe at the load generator's ceiling passed, \
         so the strategy is at least that fast and the figure is not its capacity. The ratio is over \
         `{DENOMINATOR}`'s capacity in the same run."
    )
}

/// The run's capacity in a sentence or two, for the top of every output.
#[must_use]
pub fn headline(figures: &[CapacityFigures]) -> Vec<String> {
    let mut lines = Vec::new();
    let best = figures
        .iter()
        .filter(|f| f.safe && f.name != DENOMINATOR)
        .max_by(|a, b| a.capacity_rps.median.total_cmp(&b.capacity_rps.median));
    if let Some(best) = best {
        lines.push(format!(
            "Highest sustainable capacity of a safe strategy: {} — {} req/s ({} sales/s) with p99 {} ms.",
            best.name,
            best.shown(),
            whole(best.sales_per_sec.median),
            ms(best.p99_ms),
        ));
    }
    let bounded: Vec<&str> = figures.iter().filter(|f| f.at_least).map(|f| f.name.as_str()).collect();
    if !bounded.is_empty() {
        lines.push(format!(
            "At the load generator's ceiling (capacity is a lower bound): {}.",
            bounded.join(", ")
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(strategy: &str, capacity_rps: f64, at_least: bool) -> CapacityRow {
        CapacityRow {
            run_id: "r".to_owned(),
            strategy: strategy.to_owned(),
            repetition: 1,
            safe: true,
            slo_ms: 100.0,
            probe_secs: 2.0,
            cap_rps: 16_000.0,
            capacity_rps,
            at_least,
            first_fail_rps: (!at_least).then_some(capacity_rps * 1.1),
            sales_per_sec: capacity_rps * 0.99,
            achieved_rps: capacity_rps,
            p50_ms: Some(2.0),
            p99_ms: Some(40.0),
            steps: 7,
        }
    }

    #[test]
    fn the_ceiling_reads_at_least_and_the_order_is_by_capacity() {
        let rows =
            [row("sql-atomic", 2_900.0, false), row("memory", 16_000.0, true), row("stuck", 0.0, false)];
        let figures = figures(&["sql-atomic".into(), "memory".into()], &rows, &[]);
        let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["memory", "sql-atomic", "stuck"]);
        let table = text(&figures);
        assert!(table.contains("≥ 16,000"), "{table}");
        assert_eq!(
            table.matches("16,000").count(),
            table.matches("≥ 16,000").count(),
            "never a plain number at the ceiling: {table}"
        );
        assert!(table.contains("2,900") && table.contains("≤ 0.18"), "a ratio over a lower bound: {table}");
        assert!(
            headline(&figures).iter().any(|line| line.contains("lower bound") && line.contains("memory"))
        );
        assert_eq!(figures[2].shown(), "none passed");
    }
}
