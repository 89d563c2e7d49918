//! Per-strategy figures over repetitions: the median a chart or table shows, and the spread
//! behind it, so one noisy repetition cannot pass for the result.

use super::model::{ANOMALIES, Outcome, Run, SummaryRow, Verdict};

pub use crate::run_folder::Spread;

/// One strategy's figures over every repetition of a run.
#[derive(Debug, Clone)]
pub struct StrategyFigures {
    pub name: String,
    pub safe: bool,
    pub repetitions: usize,
    pub sales_per_sec: Spread,
    pub sold_out_per_sec: Spread,
    pub errors_per_sec: Spread,
    pub achieved_rps: Spread,
    pub p50_ms: Spread,
    pub p99_ms: Spread,
    /// p99 of every due request (censored ones included); `None` when the source has no schedule
    /// to count from (Locust).
    pub due_p99_ms: Option<Spread>,
    /// 5xx answers, timeouts and broken connections, summed over repetitions.
    pub server_errors: u64,
    /// Queued strategies: acknowledged units per second until they were durable.
    pub durable_sales_per_sec: Option<Spread>,
    /// Queued strategies: sold out and every accepted order durable.
    pub sold_out_durable_ms: Option<Spread>,
    /// Requests whose latency is a lower bound (timeouts, never sent), summed over repetitions.
    pub censored: u64,
    /// Over the repetitions that sold out; `None` when none did.
    pub time_to_sell_out_ms: Option<Spread>,
    /// How many repetitions sold out.
    pub sold_out_runs: usize,
    /// Each anomaly summed over repetitions, in [`ANOMALIES`] order.
    pub anomalies: [u64; ANOMALIES.len()],
    /// The worst verdict of any repetition.
    pub verdict: Verdict,
    /// Median sustainable capacity (`capacity.csv`), req/s; `None` without a capacity step, or
    /// when it is only a lower bound (the load generator's ceiling): a bound is no figure to
    /// compare.
    pub capacity_rps: Option<f64>,
}

impl StrategyFigures {
    /// Every anomaly of every repetition, added up.
    #[must_use]
    pub fn anomaly_total(&self) -> u64 {
        self.anomalies.iter().sum()
    }
}

/// Figures per strategy, in the run's strategy order.
#[must_use]
pub fn by_strategy(run: &Run) -> Vec<StrategyFigures> {
    let mut figures = of_rows(run.strategies(), &run.summary);
    let capacity = super::capacity::figures(&[], &run.capacity, &run.capacity_steps);
    for f in &mut figures {
        f.capacity_rps =
            capacity.iter().find(|c| c.name == f.name && !c.at_least).map(|c| c.capacity_rps.median);
    }
    figures
}

/// Figures of each strategy in `names`, from `summary.csv` rows, in that order.
#[must_use]
pub fn of_rows(names: Vec<String>, summary: &[SummaryRow]) -> Vec<StrategyFigures> {
    names
        .into_iter()
        .filter_map(|name| {
            let rows: Vec<&SummaryRow> = summary.iter().filter(|row| row.strategy == name).collect();
            strategy(name, &rows)
        })
        .collect()
}

fn strategy(name: String, rows: &[&SummaryRow]) -> Option<StrategyFigures> {
    let spread = |figure: fn(&SummaryRow) -> f64| Spread::of(rows.iter().map(|row| figure(row)));
    let per_sec = |count: fn(&SummaryRow) -> u64| {
        Spread::of(rows.iter().filter(|row| row.duration_ms > 0.0).map(|row| {
            #[expect(clippy::cast_precision_loss, reason = "answer counts stay far below 2^52")]
            let count = count(row) as f64;
            count / row.duration_secs()
        }))
    };
    let mut anomalies = [0; ANOMALIES.len()];
    for row in rows {
        for (total, count) in anomalies.iter_mut().zip(row.anomalies()) {
            *total += count;
        }
    }
    let sold_out: Vec<f64> = rows.iter().filter_map(|row| row.time_to_sell_out_ms).collect();
    Some(StrategyFigures {
        safe: rows.first()?.safe,
        repetitions: rows.len(),
        sales_per_sec: spread(|row| row.sales_per_sec)?,
        sold_out_per_sec: per_sec(|row| row.sold_out).unwrap_or(Spread::ZERO),
        errors_per_sec: per_sec(|row| row.errors).unwrap_or(Spread::ZERO),
        achieved_rps: spread(|row| row.achieved_rps)?,
        p50_ms: Spread::of(rows.iter().filter_map(|row| row.p50_ms)).unwrap_or(Spread::ZERO),
        p99_ms: Spread::of(rows.iter().filter_map(|row| row.p99_ms)).unwrap_or(Spread::ZERO),
        due_p99_ms: Spread::of(rows.iter().filter_map(|row| row.due_p99_ms)),
        censored: rows.iter().map(|row| row.censored).sum(),
        server_errors: rows.iter().map(|row| row.server_errors).sum(),
        durable_sales_per_sec: Spread::of(rows.iter().filter_map(|row| row.durable_sales_per_sec)),
        sold_out_durable_ms: Spread::of(rows.iter().filter_map(|row| row.sold_out_durable_ms)),
        sold_out_runs: sold_out.len(),
        time_to_sell_out_ms: Spread::of(sold_out),
        anomalies,
        verdict: rows.iter().map(|row| row.verdict).max()?,
        capacity_rps: None,
        name,
    })
}

/// Latency at each percentile of `outcome` for `strategy`, median over repetitions, sorted by
/// percentile.
#[must_use]
pub fn latency_spectrum(run: &Run, strategy: &str, outcome: Outcome) -> Vec<(f64, f64)> {
    let rows: Vec<_> =
        run.latency.iter().filter(|row| row.strategy == strategy && row.outcome == outcome).collect();
    let mut percentiles: Vec<f64> = rows.iter().map(|row| row.percentile).collect();
    percentiles.sort_by(f64::total_cmp);
    percentiles.dedup();
    percentiles
        .into_iter()
        .filter_map(|p| {
            let at = rows.iter().filter(|row| row.percentile.total_cmp(&p).is_eq()).map(|row| row.latency_ms);
            Spread::of(at).map(|spread| (p, spread.median))
        })
        .collect()
}

/// The repetition the time series charts draw: the first one, so every strategy is shown under
/// the same conditions rather than a blend of runs that sold out at different moments.
#[must_use]
pub fn charted_repetition(run: &Run, strategy: &str) -> Option<u32> {
    run.timeseries.iter().filter(|row| row.strategy == strategy).map(|row| row.repetition).min()
}

/// A time series point: seconds from the start, and a value.
pub type Point = (f64, f64);

/// Units left over time for `strategy`'s charted repetition; `None` when the source does not
/// know the stock (Locust), in which case [`acknowledged_over_time`] is what can be drawn.
#[must_use]
pub fn units_left_over_time(run: &Run, strategy: &str) -> Option<Vec<Point>> {
    let repetition = charted_repetition(run, strategy)?;
    let stock =
        run.summary.iter().find(|row| row.strategy == strategy && row.repetition == repetition)?.hot_stock;
    // The windows end at 100 ms, 200 ms…; the line starts from the full stock at 0.
    #[expect(clippy::cast_precision_loss, reason = "stock counts stay far below 2^52")]
    let start = (0.0, stock as f64);
    std::iter::once(Some(start))
        .chain(
            run.timeseries.iter().filter(|row| row.strategy == strategy && row.repetition == repetition).map(
                |row| {
                    #[expect(clippy::cast_precision_loss, reason = "stock counts stay far below 2^52")]
                    row.units_left.map(|units| (row.t_ms as f64 / 1000.0, units as f64))
                },
            ),
        )
        .collect()
}

/// Units acknowledged (201 + 202) so far, for `strategy`'s charted repetition.
#[must_use]
pub fn acknowledged_over_time(run: &Run, strategy: &str) -> Vec<Point> {
    let Some(repetition) = charted_repetition(run, strategy) else { return Vec::new() };
    let mut total = 0;
    std::iter::once((0.0, 0.0))
        .chain(
            run.timeseries.iter().filter(|row| row.strategy == strategy && row.repetition == repetition).map(
                |row| {
                    total += row.confirmed + row.pending;
                    #[expect(clippy::cast_precision_loss, reason = "answer counts stay far below 2^52")]
                    (row.t_ms as f64 / 1000.0, total as f64)
                },
            ),
        )
        .collect()
}

/// Time to sell out of `strategy`'s charted repetition, in seconds.
#[must_use]
pub fn charted_sell_out_secs(run: &Run, strategy: &str) -> Option<f64> {
    let repetition = charted_repetition(run, strategy)?;
    run.summary
        .iter()
        .find(|row| row.strategy == strategy && row.repetition == repetition)?
        .time_to_sell_out_ms
        .map(|ms| ms / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_middle_of_an_even_count() {
        let spread = Spread::of([4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(spread, Spread { median: 2.5, min: 1.0, max: 4.0 });
        assert_eq!(Spread::of([5.0, 1.0, 3.0]).unwrap().median, 3.0);
        assert!(Spread::of([]).is_none());
        assert!(Spread::of([f64::NAN]).is_none());
    }
}
