//! Admission control: how many purchases may be in flight per backend, and refusing the rest at
//! once.
//!
//! Without a bound, a purchase waits behind the PostgreSQL pool or Redis for as long as their own
//! timeouts allow, so overload turns into a queue nobody sized: every buyer waits seconds and many
//! get a late 503 anyway. With one, the purchases that fit run at the backend's pace and the others
//! hear `503 overloaded` with `Retry-After` straight away, having touched nothing.
//!
//! The bound is per backend class, not per strategy: strategies of one class share the resource
//! that saturates (the PostgreSQL pool, the Redis connection, the server's own cores). A permit is
//! taken before the purchase task is spawned and moves into that task, so it is released when the
//! purchase ends, not when its client stops listening (a disconnect or the request timeout drops
//! the handler, never the purchase).

use std::fmt;
use std::sync::Arc;

use checkout_strategies::StrategyKind;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The resource a purchase waits on before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendClass {
    /// Nothing outside the process: the `memory` baseline.
    InProcess,
    /// A PostgreSQL connection from the pool: every strategy that commits the order before
    /// answering, including the Redis-gated ones that persist synchronously.
    Postgres,
    /// Redis only: queueing strategies answer once the order is in a stream.
    Redis,
}

impl BackendClass {
    /// Every class, in the order listings show them.
    pub const ALL: [Self; 3] = [Self::InProcess, Self::Postgres, Self::Redis];

    /// The name used in messages, metrics and `GET /stats`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "in-process",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for BackendClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The backend class of `kind`: what its purchases hold while they run. The one place that reads
/// a strategy's guarantees for this; derive any other use from it.
pub fn backend_class(kind: StrategyKind) -> BackendClass {
    let spec = kind.spec();
    match (spec.backend, spec.queued) {
        ("in-process", _) => BackendClass::InProcess,
        // The answer waits for the queue only (a Redis stream, or Redis and the broker's PubAck);
        // the worker meets PostgreSQL later.
        (_, true) => BackendClass::Redis,
        // Committed to PostgreSQL before the answer, whatever gates it first: the pool is the
        // bottleneck. A backend not named here gets this class too, the tightest bound.
        _ => BackendClass::Postgres,
    }
}

/// Most purchases in flight per backend class; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflightLimits {
    pub postgres: Option<usize>,
    pub redis: Option<usize>,
    pub in_process: Option<usize>,
}

/// Default limit of PostgreSQL purchases, per pooled connection.
pub const POSTGRES_PER_CONNECTION: usize = 4;
/// Default limit of Redis-only purchases.
pub const DEFAULT_REDIS: usize = 512;
/// Default limit of in-process purchases.
pub const DEFAULT_IN_PROCESS: usize = 4_096;

impl InflightLimits {
    /// The defaults for a pool of `pg_connections`: a few waiters per connection, so the pool never
    /// idles for want of work and no purchase waits long for a connection.
    pub fn for_pool(pg_connections: u32) -> Self {
        let connections = usize::try_from(pg_connections).unwrap_or(usize::MAX);
        Self {
            postgres: Some(connections.saturating_mul(POSTGRES_PER_CONNECTION)),
            redis: Some(DEFAULT_REDIS),
            in_process: Some(DEFAULT_IN_PROCESS),
        }
    }

    /// No limit anywhere: every purchase waits its turn, as before admission control.
    pub const fn unlimited() -> Self {
        Self { postgres: None, redis: None, in_process: None }
    }

    /// The limit of `class`.
    pub const fn of(&self, class: BackendClass) -> Option<usize> {
        match class {
            BackendClass::InProcess => self.in_process,
            BackendClass::Postgres => self.postgres,
            BackendClass::Redis => self.redis,
        }
    }
}

impl Default for InflightLimits {
    /// The defaults for the default pool of 8 connections.
    fn default() -> Self {
        Self::for_pool(8)
    }
}

/// A purchase refused because its backend has as many in flight as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{limit} purchases are already in flight on {class}; retry later")]
pub struct Overloaded {
    pub class: BackendClass,
    pub limit: usize,
}

/// The in-flight counters of every backend class, shared by every request of one server.
#[derive(Debug, Clone)]
pub struct Admission {
    /// One gate per [`BackendClass`], in [`BackendClass::ALL`] order; `None` lets everything in.
    gates: [Option<Gate>; 3],
}

#[derive(Debug, Clone)]
struct Gate {
    limit: usize,
    /// Owned: a permit moves into the purchase task and outlives the request.
    permits: Arc<Semaphore>,
}

impl Admission {
    /// Gates with `limits`; a limit above what a semaphore can count is no limit.
    pub fn new(limits: InflightLimits) -> Self {
        let gate = |class| {
            limits
                .of(class)
                .filter(|limit| *limit <= Semaphore::MAX_PERMITS)
                .map(|limit| Gate { limit, permits: Arc::new(Semaphore::new(limit)) })
        };
        Self { gates: BackendClass::ALL.map(gate) }
    }

    const fn gate(&self, class: BackendClass) -> Option<&Gate> {
        self.gates[class as usize].as_ref()
    }

    /// Admits a purchase of `kind` when its backend has room, without waiting.
    ///
    /// # Errors
    /// [`Overloaded`] when the backend already has its limit of purchases in flight.
    pub fn admit(&self, kind: StrategyKind) -> Result<Admitted, Overloaded> {
        let class = backend_class(kind);
        let permit = match self.gate(class) {
            None => None,
            // Fails only for want of a permit: these semaphores are never closed.
            Some(gate) => Some(
                Arc::clone(&gate.permits)
                    .try_acquire_owned()
                    .map_err(|_| Overloaded { class, limit: gate.limit })?,
            ),
        };
        metrics::gauge!("checkout_purchases_in_flight", "backend" => class.as_str()).increment(1.0);
        Ok(Admitted { class, _permit: permit })
    }

    /// Purchases of `class` in flight now, when it has a limit.
    pub fn in_flight(&self, class: BackendClass) -> Option<usize> {
        self.gate(class).map(|gate| gate.limit - gate.permits.available_permits())
    }
}

/// A purchase let through: holds its backend's place until dropped.
#[derive(Debug)]
pub struct Admitted {
    class: BackendClass,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        metrics::gauge!("checkout_purchases_in_flight", "backend" => self.class.as_str()).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_waits_on_the_backend_that_answers_it() {
        let expected = |kind| match kind {
            StrategyKind::Memory => BackendClass::InProcess,
            StrategyKind::SqlNaive
            | StrategyKind::SqlForUpdate
            | StrategyKind::SqlAtomic
            | StrategyKind::SqlCoalesce
            | StrategyKind::SqlSkipLocked
            | StrategyKind::SqlOptimistic
            | StrategyKind::RedisDecr
            | StrategyKind::RedisLua
            | StrategyKind::RedisOrderlog => BackendClass::Postgres,
            StrategyKind::Stream | StrategyKind::StreamDeferred | StrategyKind::QueueNats => {
                BackendClass::Redis
            }
        };
        for kind in StrategyKind::ALL {
            assert_eq!(backend_class(kind), expected(kind), "{kind}");
        }
    }

    #[test]
    fn gates_are_indexed_in_the_order_of_all() {
        for (index, class) in BackendClass::ALL.into_iter().enumerate() {
            assert_eq!(class as usize, index, "{class}");
        }
    }

    #[test]
    fn beyond_the_limit_a_purchase_is_refused_until_one_ends() {
        let admission = Admission::new(InflightLimits { postgres: Some(2), ..InflightLimits::unlimited() });
        let first = admission.admit(StrategyKind::SqlAtomic).expect("room for the first");
        let second = admission.admit(StrategyKind::RedisLua).expect("the class is shared: room for two");
        assert_eq!(admission.in_flight(BackendClass::Postgres), Some(2));
        let refused = admission.admit(StrategyKind::SqlNaive).expect_err("a third is one too many");
        assert_eq!(refused, Overloaded { class: BackendClass::Postgres, limit: 2 });
        assert!(refused.to_string().contains("postgres"), "{refused}");
        assert!(admission.admit(StrategyKind::Stream).is_ok(), "another class is not held back");
        drop(first);
        let third = admission.admit(StrategyKind::SqlForUpdate).expect("a finished purchase frees its place");
        drop((second, third));
        assert_eq!(admission.in_flight(BackendClass::Postgres), Some(0));
    }

    #[test]
    fn a_clone_shares_the_count() {
        let admission = Admission::new(InflightLimits { in_process: Some(1), ..InflightLimits::unlimited() });
        let other_route = admission.clone();
        let held = other_route.admit(StrategyKind::Memory).expect("room");
        assert!(admission.admit(StrategyKind::Memory).is_err(), "the clone counted the first purchase");
        drop(held);
        assert!(admission.admit(StrategyKind::Memory).is_ok(), "and its end");
    }

    #[test]
    fn no_limit_refuses_nothing() {
        let admission = Admission::new(InflightLimits::unlimited());
        let held: Vec<_> =
            (0..10_000).map(|_| admission.admit(StrategyKind::SqlAtomic).expect("no limit")).collect();
        assert_eq!(admission.in_flight(BackendClass::Postgres), None);
        drop(held);
    }

    #[test]
    fn defaults_follow_the_pool() {
        let limits = InflightLimits::for_pool(8);
        assert_eq!(limits.postgres, Some(32));
        assert_eq!(InflightLimits::for_pool(20).postgres, Some(80));
        assert!(limits.redis > limits.postgres && limits.in_process > limits.redis);
        assert_eq!(InflightLimits::default(), limits);
    }
}
