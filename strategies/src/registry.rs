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

/// Builds the strategy `kind` names on the shared backends; `None` when it does not run on the
/// database holding the books ([`crate::SqlBackend::runs`]).
pub fn build(kind: StrategyKind, backends: &Backends) -> Option<Arc<dyn Strategy>> {
    if !backends.database().runs(kind) {
        return None;
    }
    let books = || backends.books.clone();
    let purchases = || backends.purchases.clone();
    let redis = || backends.redis.clone();
    let tuning = &backends.tuning;
    Some(match kind {
        StrategyKind::Memory => Arc::new(InMemory::new()),
        StrategyKind::SqlNaive => Arc::new(SqlNaive::new(books(), purchases(), tuning.naive_race_window)),
        StrategyKind::SqlForUpdate => {
            Arc::new(SqlForUpdate::new(books(), purchases(), tuning.conflict_retries))
        }
        StrategyKind::SqlAtomic => Arc::new(SqlAtomic::new(books(), purchases())),
        StrategyKind::SqlCoalesce => Arc::new(SqlCoalesce::new(books(), tuning.coalesce_max_batch)),
        StrategyKind::SqlSkipLocked => Arc::new(SqlSkipLocked::new(books(), purchases())),
        StrategyKind::SqlOptimistic => {
            Arc::new(SqlOptimistic::new(books(), purchases(), tuning.optimistic_retries))
        }
        StrategyKind::RedisDecr => Arc::new(RedisDecr::new(books(), redis(), tuning.reservation_ttl)),
        StrategyKind::RedisLua => Arc::new(RedisLua::new(books(), redis(), tuning.reservation_ttl)),
        StrategyKind::RedisOrderlog => {
            Arc::new(RedisOrderlog::new(books(), redis(), tuning.reservation_ttl, tuning.coalesce_max_batch))
        }
        StrategyKind::Stream => Arc::new(Stream::new(books(), redis())),
        StrategyKind::StreamDeferred => Arc::new(StreamDeferred::new(books(), redis())),
        StrategyKind::QueueNats => Arc::new(QueueNats::new(books(), redis(), backends.nats.clone())),
    })
}

/// Every strategy, indexed by kind.
#[derive(Debug, Clone)]
pub struct Registry {
    strategies: Vec<(StrategyKind, Arc<dyn Strategy>)>,
}

impl Registry {
    /// Builds every [`StrategyKind::ALL`] entry that runs on the books' database behind the shared
    /// idempotency claim ([`crate::idempotency`]), each then passed through `layer` (timing,
    /// metrics).
    pub fn build_all(
        backends: &Backends,
        mut layer: impl FnMut(Arc<dyn Strategy>) -> Arc<dyn Strategy>,
    ) -> Self {
        let raw: Peers = Arc::new(
            StrategyKind::ALL.into_iter().filter_map(|kind| Some((kind, build(kind, backends)?))).collect(),
        );
        let strategies = raw
            .iter()
            .map(|(kind, strategy)| {
                let keyed = Keyed::wrap(Arc::clone(strategy), backends.books.clone(), Arc::clone(&raw));
                (*kind, layer(keyed))
            })
            .collect();
        Self { strategies }
    }

    /// The strategy for `kind`, when it runs on the books' database.
    pub fn try_get(&self, kind: StrategyKind) -> Option<&Arc<dyn Strategy>> {
        self.strategies.iter().find(|(k, _)| *k == kind).map(|(_, strategy)| strategy)
    }

    /// The strategy for `kind`.
    ///
    /// # Panics
    /// When `kind` does not run on the books' database: callers that cannot know use
    /// [`Self::try_get`].
    pub fn get(&self, kind: StrategyKind) -> &Arc<dyn Strategy> {
        self.try_get(kind).unwrap_or_else(|| panic!("{kind} is not built on this database"))
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
