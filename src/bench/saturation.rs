//! The flash sale at saturation: how soon each strategy sells the whole stock, and has it durable,
//! when buyers arrive faster than it can serve them.
//!
//! The flash sale offers one fixed rate to every strategy, so every strategy that sustains that
//! rate sells out exactly as fast as buyers arrive and the sale cannot tell them apart. After the
//! capacity step, each such strategy runs the same sale once more, offered more than its measured
//! capacity (`OVERLOAD` × capacity, never above the load generator's ceiling). A strategy whose
//! capacity is below the flash sale's rate was already saturated by it: its flash sale is its
//! figure, and it runs nothing more here.

use std::time::Duration;

use crate::loadgen::{LoadPlan, Model};
use crate::run_folder::CapacityRow;

/// How far above its capacity a strategy is offered: far enough that the run measures what the
/// strategy serves, not what it is sent.
pub const OVERLOAD: f64 = 1.5;

/// Sends stop this long after the sell-out (the flash sale waits longer to see the sold-out
/// answers that follow); the drain's first audit follows at once, so a queued strategy's
/// "durable after" is not padded by a long tail of refusals.
const GRACE: Duration = Duration::from_millis(250);

/// At the strategy's capacity the stock sells in `stock / capacity` seconds: a run lasting this
/// many times that, and at least `SHORTEST`, has said what it can.
const SPAN: f64 = 4.0;
const SHORTEST: Duration = Duration::from_secs(2);

/// The rate that saturates a strategy of `capacity`, when the flash sale (offering `flash`) did
/// not; `None` when it did, when the capacity is unknown, or for a closed-model sale.
#[must_use]
pub fn rate(flash: &LoadPlan, capacity: &CapacityRow, generator_cap: f64) -> Option<f64> {
    let sustained = capacity.capacity_rps;
    let saturated_by_the_sale = sustained < flash.rate && !capacity.at_least;
    if flash.model != Model::Open || sustained <= 0.0 || saturated_by_the_sale {
        return None;
    }
    let rate = if capacity.at_least { generator_cap } else { (sustained * OVERLOAD).min(generator_cap) };
    // A generator that cannot offer more than the sale already did has nothing more to show.
    (rate > flash.rate).then_some(rate)
}

/// The flash sale of `flash`, offered at `rate` to a strategy that sustains `capacity` req/s.
#[must_use]
pub fn plan(flash: &LoadPlan, rate: f64, capacity: f64) -> LoadPlan {
    let sell_out = flash.scenario.hot_stock.max(1) as f64 / capacity.max(1.0);
    let duration = Duration::from_secs_f64(sell_out * SPAN).max(SHORTEST).min(flash.duration);
    LoadPlan { rate, duration, grace: GRACE.min(flash.grace), ..flash.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::options::Preset;

    /// The default comparison's flash sale.
    fn flash() -> LoadPlan {
        Preset::Default.plan().0
    }

    fn capacity(rps: f64, at_least: bool) -> CapacityRow {
        CapacityRow {
            run_id: "r".into(),
            strategy: "s".into(),
            repetition: 1,
            safe: true,
            slo_ms: 100.0,
            probe_secs: 2.0,
            cap_rps: 64_000.0,
            capacity_rps: rps,
            at_least,
            first_fail_rps: None,
            sales_per_sec: rps,
            achieved_rps: rps,
            p50_ms: None,
            p99_ms: None,
            steps: 5,
        }
    }

    #[test]
    fn a_strategy_the_sale_already_saturates_runs_nothing_more() {
        assert_eq!(rate(&flash(), &capacity(3_750.0, false), 64_000.0), None);
        assert_eq!(rate(&flash(), &capacity(0.0, false), 64_000.0), None, "no capacity found");
    }

    #[test]
    fn a_faster_strategy_is_offered_more_than_it_sustains_within_the_generator() {
        assert_eq!(rate(&flash(), &capacity(26_000.0, false), 64_000.0), Some(39_000.0));
        assert_eq!(rate(&flash(), &capacity(50_000.0, false), 64_000.0), Some(64_000.0));
        assert_eq!(rate(&flash(), &capacity(64_000.0, true), 64_000.0), Some(64_000.0), "a lower bound");
        assert_eq!(rate(&flash(), &capacity(10_000.0, false), 9_000.0), None, "the generator offers no more");
        let closed = LoadPlan { model: Model::Closed, ..flash() };
        assert_eq!(rate(&closed, &capacity(26_000.0, false), 64_000.0), None);
    }

    #[test]
    fn the_run_lasts_long_enough_to_sell_out_at_capacity_and_stops_soon_after() {
        let fast = plan(&flash(), 39_000.0, 26_000.0);
        assert_eq!(fast.rate, 39_000.0);
        assert_eq!(fast.duration, SHORTEST, "10,000 units at 26,000/s sell in 0.4 s");
        assert_eq!(fast.grace, GRACE);
        assert_eq!(fast.scenario, flash().scenario, "the same sale");
        let slower = plan(&flash(), 15_000.0, 10_000.0);
        assert_eq!(slower.duration, Duration::from_secs(4));
    }
}
