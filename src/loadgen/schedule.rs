//! When requests are due. The open model sends on a fixed timetable whatever the server does, so
//! a slow answer cannot hold the next request back (coordinated omission); the closed model paces
//! each user the way Locust's `constant_throughput` does.

use std::time::Duration;

/// A request sent this much after its intended time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(10);

/// A constant arrival rate: request `i` is due at `i / rate` seconds after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timetable {
    rate: f64,
}

impl Timetable {
    pub(crate) fn new(rate: f64) -> Self {
        Self { rate }
    }

    /// When request `i` is due, from the start.
    pub(crate) fn due(self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How many requests were due in `[0, elapsed)`.
    pub(crate) fn due_within(self, elapsed: Duration) -> u64 {
        // ceil(elapsed × rate): request i is due in [0, elapsed) when i / rate < elapsed.
        let exact = elapsed.as_secs_f64() * self.rate;
        let due = exact.ceil();
        if due.is_finite() && due > 0.0 { due as u64 } else { 0 }
    }
}

/// Locust's `constant_throughput(t)`: a user waits whatever is left of `1 / t` seconds after each
/// request; `t = 0` means no wait at all (as `wrk` does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pace {
    cycle: Option<Duration>,
}

impl Pace {
    pub(crate) fn new(per_user_rate: f64) -> Self {
        let cycle = (per_user_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / per_user_rate));
        Self { cycle }
    }

    /// The think time after a request that took `took`.
    pub(crate) fn wait_after(self, took: Duration) -> Duration {
        self.cycle.map_or(Duration::ZERO, |cycle| cycle.saturating_sub(took))
    }
}

/// Users start spread evenly over the ramp, so the first second is not one burst of every user.
pub(crate) fn ramp_offset(user: usize, users: usize, ramp: Duration) -> Duration {
    if users <= 1 {
        return Duration::ZERO;
    }
    ramp.mul_f64(user as f64 / users as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timetable_spaces_requests_evenly() {
        let table = Timetable::new(4.0);
        assert_eq!(table.due(0), Duration::ZERO);
        assert_eq!(table.due(1), Duration::from_millis(250));
        assert_eq!(table.due(8), Duration::from_secs(2));
    }

    #[test]
    fn due_within_counts_requests_whose_time_has_come() {
        let table = Timetable::new(4.0);
        assert_eq!(table.due_within(Duration::ZERO), 0);
        assert_eq!(table.due_within(Duration::from_millis(1)), 1, "request 0 is due at once");
        assert_eq!(table.due_within(Duration::from_millis(250)), 1, "request 1 is due at 250 ms, not before");
        assert_eq!(table.due_within(Duration::from_millis(251)), 2);
        assert_eq!(table.due_within(Duration::from_secs(10)), 40);
        for i in 0..1_000 {
            assert_eq!(table.due_within(table.due(i)), i, "consistent with due({i})");
        }
    }

    #[test]
    fn pace_waits_out_the_rest_of_the_cycle() {
        let pace = Pace::new(0.1);
        assert_eq!(pace.wait_after(Duration::from_secs(3)), Duration::from_secs(7));
        assert_eq!(pace.wait_after(Duration::from_secs(12)), Duration::ZERO, "a slow answer means no wait");
        assert_eq!(Pace::new(0.0).wait_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn users_start_spread_over_the_ramp() {
        let ramp = Duration::from_secs(2);
        assert_eq!(ramp_offset(0, 4, ramp), Duration::ZERO);
        assert_eq!(ramp_offset(2, 4, ramp), Duration::from_secs(1));
        assert!(ramp_offset(3, 4, ramp) < ramp);
        assert_eq!(ramp_offset(0, 1, ramp), Duration::ZERO);
    }
}
