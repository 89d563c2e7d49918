//! The search for the highest rate that passes: double from a start rate until a probe fails
//! (halve instead when the start fails), then bisect between the last pass and the first fail.
//! Given a hint (the capacity an earlier run found), it starts there instead and steps up or down
//! by a step that starts at the resolution and doubles (to a factor of 2 at most, as the ramp),
//! so a hint that still holds brackets the
//! capacity in three probes and a stale one costs a few more, never a wrong figure.
//! A failure that would end the climb (the ramp's, the first probe at a hint, a step up from it)
//! is probed once more at the same rate, and only a second failure ends it: on two cores one
//! stall in a probe's first second would otherwise settle a whole search far below the capacity
//! (a `queue-nats` search went 500 pass, 1,000 fail with 9 requests unsent in 0.13 s, and
//! found 875 where the run before found 2,500). Bisections are not repeated: a noisy one costs
//! at most half of the bracket.
//! It knows nothing of HTTP: a probe is any async function from a rate to pass or fail, so the
//! unit tests drive it with a synthetic server.

pub use crate::run_folder::Phase;

/// Where the search starts, where it must stop, and how fine it gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchPlan {
    /// The first rate probed, requests per second.
    pub start: f64,
    /// The highest rate the load generator can offer: never probed above.
    pub cap: f64,
    /// Halving below `start` stops under this rate: the capacity is then "below the lowest rate".
    pub floor: f64,
    /// Bisection stops when the first fail is within this fraction above the last pass.
    pub resolution: f64,
    /// Bisection stops after this many probes whatever the resolution.
    pub max_bisections: u32,
    /// Where the capacity was last found: the search starts there instead of at `start`.
    pub hint: Option<f64>,
}

impl SearchPlan {
    /// # Errors
    /// When a bound makes no search: a start or cap not above zero, or a resolution not in (0, 1).
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.start.is_finite() && self.start > 0.0, "--start-rate must be above 0");
        anyhow::ensure!(self.cap.is_finite() && self.cap > 0.0, "--max-rate must be above 0");
        anyhow::ensure!(
            self.hint.is_none_or(|hint| hint.is_finite() && hint > 0.0),
            "a capacity hint must be above 0"
        );
        anyhow::ensure!(
            self.resolution > 0.0 && self.resolution < 1.0,
            "--resolution must be a fraction between 0 and 1, got {}",
            self.resolution
        );
        Ok(())
    }
}

/// One probe of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Tried<T> {
    pub rate: f64,
    pub phase: Phase,
    pub passed: bool,
    /// What the probe measured.
    pub probe: T,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found<T> {
    /// The highest rate that passed; `None` when even the lowest probed failed.
    pub capacity: Option<f64>,
    /// The probe at the cap passed: the capacity is at least `capacity`, not equal to it.
    pub at_least: bool,
    /// The lowest rate that failed.
    pub first_fail: Option<f64>,
    pub steps: Vec<Tried<T>>,
}

impl<T> Found<T> {
    /// The probe at the capacity, when one passed.
    pub fn at_capacity(&self) -> Option<&Tried<T>> {
        let capacity = self.capacity?;
        self.steps.iter().find(|step| step.passed && step.rate.total_cmp(&capacity).is_eq())
    }

    /// The lowest rate probed.
    pub fn lowest_tried(&self) -> Option<f64> {
        self.steps.iter().map(|step| step.rate).min_by(f64::total_cmp)
    }
}

/// Rates are whole requests per second: tables read better and a probe cannot offer a fraction.
fn whole(rate: f64) -> f64 {
    rate.round().max(1.0)
}

/// Runs the search; `probe(rate, phase)` offers `rate` and says whether it passed.
///
/// # Errors
/// The first error a probe returns (a reset that failed, a server that went away).
pub async fn search<T>(
    plan: &SearchPlan,
    mut probe: impl AsyncFnMut(f64, Phase) -> anyhow::Result<(bool, T)>,
) -> anyhow::Result<Found<T>> {
    plan.validate()?;
    let mut steps = Vec::new();
    // `climbing`: a failure there would end the climb, so it must be seen twice in a row.
    let mut try_rate =
        async |rate: f64, phase: Phase, climbing: bool, steps: &mut Vec<Tried<T>>| -> anyhow::Result<bool> {
            for _ in 0..if climbing { 2 } else { 1 } {
                let (passed, measured) = probe(rate, phase).await?;
                steps.push(Tried { rate, phase, passed, probe: measured });
                if passed {
                    return Ok(true);
                }
            }
            Ok(false)
        };
    let cap = whole(plan.cap);
    let floor = plan.floor.max(1.0);
    let mut last_pass = None;
    let mut first_fail = None;
    if let Some(hint) = plan.hint {
        // A step of one resolution first: a capacity that has not moved is bracketed at once.
        let mut step = plan.resolution;
        let mut rate = whole(hint.min(cap).max(floor));
        if try_rate(rate, Phase::Near, true, &mut steps).await? {
            last_pass = Some(rate);
            while rate < cap {
                rate = whole((rate * (1.0 + step)).min(cap)).max(rate + 1.0).min(cap);
                if !try_rate(rate, Phase::Near, true, &mut steps).await? {
                    first_fail = Some(rate);
                    break;
                }
                last_pass = Some(rate);
                step = (step * 2.0).min(1.0);
            }
        } else {
            first_fail = Some(rate);
            loop {
                rate = whole(rate / (1.0 + step));
                if rate < floor || Some(rate) == first_fail {
                    break;
                }
                if try_rate(rate, Phase::Near, false, &mut steps).await? {
                    last_pass = Some(rate);
                    break;
                }
                first_fail = Some(rate);
                step = (step * 2.0).min(1.0);
            }
        }
    } else {
        let mut rate = whole(plan.start.min(cap));
        loop {
            if try_rate(rate, Phase::Ramp, true, &mut steps).await? {
                last_pass = Some(rate);
                if rate >= cap {
                    break;
                }
                rate = whole((rate * 2.0).min(cap));
            } else {
                first_fail = Some(rate);
                break;
            }
        }
        if last_pass.is_none() {
            rate = whole(rate / 2.0);
            while rate >= floor {
                if try_rate(rate, Phase::Descend, false, &mut steps).await? {
                    last_pass = Some(rate);
                    break;
                }
                first_fail = Some(rate);
                if rate <= 1.0 {
                    break;
                }
                rate = whole(rate / 2.0);
            }
        }
    }
    if let (Some(mut pass), Some(mut fail)) = (last_pass, first_fail) {
        for _ in 0..plan.max_bisections {
            if fail <= pass * (1.0 + plan.resolution) {
                break;
            }
            let mid = whole(f64::midpoint(pass, fail));
            if mid <= pass || mid >= fail {
                break;
            }
            if try_rate(mid, Phase::Bisect, false, &mut steps).await? {
                pass = mid;
            } else {
                fail = mid;
            }
        }
        last_pass = Some(pass);
        first_fail = Some(fail);
    }
    let at_least = last_pass.is_some_and(|pass| pass >= cap);
    Ok(Found { capacity: last_pass, at_least, first_fail, steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cap: f64) -> SearchPlan {
        SearchPlan { start: 500.0, cap, floor: 50.0, resolution: 0.05, max_bisections: 8, hint: None }
    }

    fn near(cap: f64, hint: f64) -> SearchPlan {
        SearchPlan { resolution: 0.1, max_bisections: 3, hint: Some(hint), ..plan(cap) }
    }

    /// A synthetic server that sustains up to `capacity` requests per second.
    async fn against(plan: &SearchPlan, capacity: f64) -> Found<()> {
        search(plan, async |rate, _| Ok((rate <= capacity, ()))).await.unwrap()
    }

    #[tokio::test]
    async fn converges_to_the_capacity_within_the_resolution() {
        for capacity in [730.0, 2_900.0, 5_000.0, 11_300.0] {
            let found = against(&plan(64_000.0), capacity).await;
            let pass = found.capacity.unwrap();
            let fail = found.first_fail.unwrap();
            assert!(pass <= capacity && fail > capacity, "{capacity}: bracketed by {pass}..{fail}");
            assert!(fail <= pass * 1.05 + 1.0, "{capacity}: within 5 %: {pass}..{fail}");
            assert!(!found.at_least, "{capacity}: below the cap is a figure, not a bound");
            assert!(found.steps.len() <= 16, "{capacity}: {} probes", found.steps.len());
            let ramp: Vec<f64> =
                found.steps.iter().filter(|s| s.phase == Phase::Ramp).map(|s| s.rate).collect();
            assert_eq!(ramp[0], 500.0, "starts at the start rate");
            assert!(
                ramp.windows(2).all(|w| w[1] == w[0] * 2.0 || w[1] == w[0]),
                "doubles while passing: {ramp:?}"
            );
            assert_eq!(
                ramp.windows(2).filter(|w| w[1] == w[0]).count(),
                1,
                "the failure is seen twice: {ramp:?}"
            );
            assert!(found.at_capacity().is_some_and(|step| step.passed && step.rate == pass));
        }
    }

    #[tokio::test]
    async fn never_probes_above_the_cap_and_says_at_least_there() {
        let found = against(&plan(6_000.0), 1e9).await;
        assert!(found.steps.iter().all(|step| step.rate <= 6_000.0), "{:?}", found.steps);
        assert_eq!(found.capacity, Some(6_000.0));
        assert!(found.at_least, "passing at the cap is a lower bound");
        assert_eq!(found.first_fail, None);
        assert_eq!(found.steps.last().map(|s| s.rate), Some(6_000.0), "the cap itself was probed");
    }

    #[tokio::test]
    async fn a_failing_start_rate_halves_down_then_bisects() {
        let found = against(&plan(64_000.0), 180.0).await;
        let pass = found.capacity.unwrap();
        assert!((170.0..=180.0).contains(&pass), "{pass}");
        assert!(found.steps.iter().any(|s| s.phase == Phase::Descend));
        assert!(!found.at_least);
        let nothing = against(&plan(64_000.0), 10.0).await;
        assert_eq!(nothing.capacity, None, "nothing passed above the floor");
        assert!(nothing.lowest_tried().is_some_and(|rate| rate >= 50.0), "stops at the floor");
    }

    #[tokio::test]
    async fn a_probe_error_ends_the_search() {
        let err = search(&plan(64_000.0), async |rate, _| {
            anyhow::ensure!(rate < 2_000.0, "the server went away");
            Ok((true, ()))
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("went away"));
    }

    #[tokio::test]
    async fn a_hint_that_still_holds_brackets_the_capacity_in_three_probes() {
        for (capacity, hint) in [(26_000.0, 26_000.0), (1_530.0, 1_500.0), (17_900.0, 18_000.0)] {
            let found = against(&near(64_000.0, hint), capacity).await;
            let (pass, fail) = (found.capacity.unwrap(), found.first_fail.unwrap());
            assert!(pass <= capacity && fail > capacity, "{capacity}: bracketed by {pass}..{fail}");
            assert!(fail <= pass * 1.1 + 1.0, "{capacity}: within the resolution: {pass}..{fail}");
            // The pass at the hint, the step up that fails, and that failure seen again.
            assert_eq!(found.steps.len(), 3, "{capacity} from {hint}: {:?}", found.steps);
            assert!(found.steps.iter().all(|step| step.phase == Phase::Near));
        }
    }

    #[tokio::test]
    async fn a_stale_hint_costs_probes_not_precision() {
        for (capacity, hint) in
            [(20_000.0, 2_000.0), (900.0, 26_000.0), (5_000.0, 4_000.0), (4_000.0, 5_000.0)]
        {
            let found = against(&near(64_000.0, hint), capacity).await;
            let (pass, fail) = (found.capacity.unwrap(), found.first_fail.unwrap());
            assert!(pass <= capacity && fail > capacity, "{capacity} from {hint}: {pass}..{fail}");
            // Three bisections of a bracket no wider than the ramp's (×2) leave at most 12.5 %.
            assert!(fail <= pass * 1.125 + 1.0, "{capacity} from {hint}: {pass}..{fail}");
            let fresh = against(&SearchPlan { hint: None, ..near(64_000.0, hint) }, capacity).await;
            // Twenty per cent off costs a probe or two; ten times off, the walk to the ramp's step.
            let extra = if (0.5..2.0).contains(&(hint / capacity)) { 2 } else { 7 };
            assert!(found.steps.len() <= fresh.steps.len() + extra, "{:?}", found.steps);
        }
    }

    #[tokio::test]
    async fn a_hint_never_probes_above_the_cap_nor_below_the_floor() {
        let found = against(&near(6_000.0, 9_000.0), 1e9).await;
        assert!(found.steps.iter().all(|step| step.rate <= 6_000.0), "{:?}", found.steps);
        assert_eq!((found.capacity, found.at_least), (Some(6_000.0), true));
        let found = against(&near(64_000.0, 400.0), 10.0).await;
        assert_eq!(found.capacity, None);
        assert!(found.lowest_tried().is_some_and(|rate| rate >= 50.0), "{:?}", found.steps);
    }

    /// One probe that stalls must not end the climb: a failure there is probed again, and a
    /// rate that passes the second time lets the ramp go on. A rate that fails twice ends it.
    #[tokio::test]
    async fn a_single_noisy_failure_does_not_end_the_climb() {
        for hint in [None, Some(1_000.0), Some(2_000.0)] {
            let mut stalled = std::collections::BTreeSet::new();
            let found = search(&SearchPlan { hint, ..plan(64_000.0) }, async |rate, phase| {
                // Every rate the search climbs through stalls once, as a 2-core machine might.
                let first_time = phase != Phase::Bisect && stalled.insert(rate.to_bits());
                Ok((rate <= 11_300.0 && !first_time, ()))
            })
            .await
            .unwrap();
            let (pass, fail) = (found.capacity.unwrap(), found.first_fail.unwrap());
            assert!(pass <= 11_300.0 && fail > 11_300.0, "{hint:?}: bracketed by {pass}..{fail}");
            assert!(fail <= pass * 1.05 + 1.0, "{hint:?}: within the resolution: {pass}..{fail}");
        }
        let bisected = against(&plan(64_000.0), 730.0).await;
        let again = bisected.steps.windows(2).filter(|w| w[0].rate == w[1].rate).count();
        assert_eq!(again, 1, "only the failure that ends the ramp is probed twice: {:?}", bisected.steps);
    }
}
