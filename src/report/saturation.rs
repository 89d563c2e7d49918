//! The sell-out at saturation (`saturation.csv` beside the flash sale): for every strategy, the
//! sale that offered more than it sustains, and how soon that sale was sold out and durable. For a
//! strategy the flash sale itself saturated, that is the flash sale; for a faster one, the step's
//! own run at 1.5 times its capacity.

use super::figures::StrategyFigures;
use super::model::{Run, SummaryRow};

pub const HEADER: [&str; 8] = [
    "strategy",
    "capacity req/s",
    "offered req/s",
    "sale",
    "sales/s",
    "sold out after ms",
    "sold out and durable after ms",
    "verdict",
];

/// What the table shows, under it.
pub const LEGEND: &str = "Every strategy offered more than it sustains: the flash sale where its capacity is below the \
     sale's rate, otherwise one more run of the same sale at 1.5 times its capacity (the load generator's ceiling at \
     most). A strategy that answers after its commit is durable when it is sold out; a queued one once the audit \
     after the sale (every 250 ms) finds nothing left to persist, an upper bound.";

fn whole(value: f64) -> String {
    format!("{value:.0}")
}

fn sold_out(ms: Option<f64>) -> String {
    ms.map_or_else(|| "did not sell out".to_owned(), whole)
}

/// One row per strategy with a flash sale, in the run's order; empty when the run had no
/// saturation step (the table is then left out).
#[must_use]
pub fn rows(run: &Run, figures: &[StrategyFigures]) -> Vec<Vec<String>> {
    let Some(saturation) = &run.saturation else { return Vec::new() };
    let capacities = super::capacity::figures(&[], &run.capacity, &run.capacity_steps);
    figures
        .iter()
        .map(|flash| {
            let found = capacities.iter().find(|capacity| capacity.name == flash.name);
            let capacity = found.map_or_else(|| "–".to_owned(), super::capacity::CapacityFigures::shown);
            let own: Option<&SummaryRow> = saturation.iter().find(|row| row.strategy == flash.name);
            match own {
                Some(row) => vec![
                    flash.name.clone(),
                    capacity,
                    whole(row.offered_rps),
                    "its own, above its capacity".to_owned(),
                    whole(row.sales_per_sec),
                    sold_out(row.time_to_sell_out_ms),
                    sold_out(row.sold_out_durable_ms.or(row.time_to_sell_out_ms)),
                    row.verdict.as_str().to_owned(),
                ],
                None => {
                    let offered =
                        run.summary.iter().find(|row| row.strategy == flash.name).map(|row| row.offered_rps);
                    let sold = flash.time_to_sell_out_ms.map(|spread| spread.median);
                    let durable = flash.sold_out_durable_ms.map(|spread| spread.median).or(sold);
                    vec![
                        flash.name.clone(),
                        capacity,
                        offered.map_or_else(|| "–".to_owned(), whole),
                        "the flash sale (median)".to_owned(),
                        whole(flash.sales_per_sec.median),
                        sold_out(sold),
                        sold_out(durable),
                        flash.verdict.as_str().to_owned(),
                    ]
                }
            }
        })
        .collect()
}
