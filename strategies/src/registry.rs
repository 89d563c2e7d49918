//! From a [`StrategyKind`] to a running strategy: the one `match` that must grow with every new
//! strategy.

use std::sync::Arc;

use crate::backends::Backends;
use crate::idempotency::{Keyed, Peers};
use crate::in_memory::InMemory;
use crate::kind::StrategyKind;
use crate::queue_nats::QueueNats;
use crate::redis_decr::RedisDecr;
use crate::redis_lua::RedisLua;
use crate::redis_orderlog::RedisOrderlog;
use crate::redis_stream::{Stream, StreamDeferred};
use crate::sql_atomic::SqlAtomic;
use crate::sql_coalesce::SqlCoalesce;
use crate::sql_for_update::SqlForUpdate;
use crate::sql_naive::SqlNaive;
use crate::sql_optimistic::SqlOptimistic;
use crate::sql_skip_locked::SqlSkipLocked;
use crate::strategy::Strategy;

/// Builds the strategy `kind` names on the shared backends.
pub fn build(kind: StrategyKind, backends: &Backends) -> Arc<dyn Strategy> {
    match kind {
        StrategyKind::Memory => Arc::new(InMemory::new()),
        StrategyKind::SqlNaive => Arc::new(SqlNaive::new(
            backends.books.clone(),
            backends.purchases.clone(),
            backends.tuning.naive_race_window,
        )),
        StrategyKind::SqlForUpdate => Arc::new(SqlForUpdate::new(
            backends.books.clone(),
            backends.purchases.clone(),
            backends.tuning.conflict_retries,
        )),
        StrategyKind::SqlAtomic => {
            Arc::new(SqlAtomic::new(backends.books.clone(), backends.purchases.clone()))
        }
        StrategyKind::SqlCoalesce => {
            Arc::new(SqlCoalesce::new(backends.pg.clone(), backends.tuning.coalesce_max_batch))
        }
        StrategyKind::SqlSkipLocked => {
            Arc::new(SqlSkipLocked::new(backends.pg.clone(), backends.purchases.clone()))
        }
        StrategyKind::SqlOptimistic => Arc::new(SqlOptimistic::new(
            backends.pg.clone(),
            backends.purchases.clone(),
            backends.tuning.optimistic_retries,
        )),
        StrategyKind::RedisDecr => Arc::new(RedisDecr::new(
            backends.pg.clone(),
            backends.redis.clone(),
            backends.tuning.reservation_ttl,
        )),
        StrategyKind::RedisLua => Arc::new(RedisLua::new(
            backends.pg.clone(),
            backends.redis.clone(),
            backends.tuning.reservation_ttl,
        )),
        StrategyKind::RedisOrderlog => Arc::new(RedisOrderlog::new(
            backends.pg.clone(),
            backends.redis.clone(),
            backends.tuning.reservation_ttl,
            backends.tuning.coalesce_max_batch,
        )),
        StrategyKind::Stream => Arc::new(Stream::new(backends.pg.clone(), backends.redis.clone())),
        StrategyKind::StreamDeferred => {
            Arc::new(StreamDeferred::new(backends.pg.clone(), backends.redis.clone()))
        }
        StrategyKind::QueueNats => {
            Arc::new(QueueNats::new(backends.pg.clone(), backends.redis.clone(), backends.nats.clone()))
        }
    }
}

/// Every strategy, indexed by kind.
#[derive(Debug, Clone)]
pub struct Registry {
    strategies: Vec<(StrategyKind, Arc<dyn Strategy>)>,
}

impl Registry {
    /// Builds every [`StrategyKind::ALL`] entry behind the shared idempotency claim
    /// ([`crate::idempotency`]), each then passed through `layer` (timing, metrics).
    pub fn build_all(
        backends: &Backends,
        mut layer: impl FnMut(Arc<dyn Strategy>) -> Arc<dyn Strategy>,
    ) -> Self {
        let raw: Peers =
            Arc::new(StrategyKind::ALL.into_iter().map(|kind| (kind, build(kind, backends))).collect());
        let strategies = raw
            .iter()
            .map(|(kind, strategy)| {
                let keyed = Keyed::wrap(Arc::clone(strategy), backends.books.clone(), Arc::clone(&raw));
                (*kind, layer(keyed))
            })
            .collect();
        Self { strategies }
    }

    /// The strategy for `kind`.
    pub fn get(&self, kind: StrategyKind) -> &Arc<dyn Strategy> {
        &self.strategies.iter().find(|(k, _)| *k == kind).expect("build_all builds every kind").1
    }

    /// Stops every strategy's own background work, each after finishing what it took.
    pub async fn shutdown(&self) {
        for strategy in self.iter() {
            strategy.shutdown().await;
        }
    }

    /// Every strategy, in [`StrategyKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Strategy>> {
        self.strategies.iter().map(|(_, strategy)| strategy)
    }
}
