//! Median and range over repetitions, so one noisy repetition cannot pass for the result.

use std::collections::BTreeMap;

/// Each strategy's median over its repetitions, from `(strategy, value)` pairs, by name; a
/// strategy without a finite value is left out.
pub fn medians_by_strategy<'a>(values: impl IntoIterator<Item = (&'a str, f64)>) -> BTreeMap<String, f64> {
    let mut by_strategy: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (strategy, value) in values {
        by_strategy.entry(strategy).or_default().push(value);
    }
    by_strategy
        .into_iter()
        .filter_map(|(strategy, values)| Some((strategy.to_owned(), Spread::of(values)?.median)))
        .collect()
}

/// Median and range of one figure over repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// What a figure no repetition measured shows.
    pub const ZERO: Self = Self { median: 0.0, min: 0.0, max: 0.0 };

    /// The spread of `values`, `None` when there are none.
    #[must_use]
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let median = if values.len().is_multiple_of(2) {
            f64::midpoint(values[mid - 1], values[mid])
        } else {
            values[mid]
        };
        Some(Self { median, min: values[0], max: values[values.len() - 1] })
    }
}
