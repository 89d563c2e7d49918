//! Work strategies need beside their purchases, owned here: one closed `match` says which
//! consumer or sweeper each strategy runs, and [`run`] starts exactly those.

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;

use crate::backends::Backends;
use crate::dialect::SqlBackend;
use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::queue_nats::Consumer;
use crate::redis_stream::{Worker, WorkerSettings};
use crate::reservation::{Sweeper, SweeperSettings};
use crate::stock_sync::{StockSync, StockSyncSettings};

/// One kind of background work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Job {
    /// Persists one queueing strategy's accepted orders from its Redis stream.
    StreamWorker(StrategyKind),
    /// Persists `queue-nats`'s accepted orders from the broker, and publishes again the orders
    /// the broker never got.
    BrokerConsumer,
    /// Ends Redis reservations past their deadline and resyncs marked products.
    ReservationSweeper,
    /// Applies orders committed insert-only to PostgreSQL's stock.
    StockSync,
}

impl StrategyKind {
    /// The background work this strategy needs.
    pub const fn background(self) -> &'static [Job] {
        match self {
            // `sql-coalesce`'s batcher serves its own purchases only: the strategy starts it on
            // first use and owns it, so nothing runs for a server that never sells through it.
            Self::Memory
            | Self::SqlNaive
            | Self::SqlForUpdate
            | Self::SqlAtomic
            | Self::SqlCoalesce
            | Self::SqlSkipLocked
            | Self::SqlOptimistic => &[],
            Self::RedisDecr | Self::RedisLua => &[Job::ReservationSweeper],
            Self::RedisOrderlog => &[Job::ReservationSweeper, Job::StockSync],
            Self::Stream => &[Job::StreamWorker(Self::Stream)],
            Self::StreamDeferred => &[Job::StreamWorker(Self::StreamDeferred)],
            Self::QueueNats => &[Job::BrokerConsumer],
        }
    }
}

/// Every job some strategy that runs on `database` needs, once each.
pub fn jobs_on(database: SqlBackend) -> BTreeSet<Job> {
    StrategyKind::ALL
        .into_iter()
        .filter(|kind| database.runs(*kind))
        .flat_map(|kind| kind.background().iter().copied())
        .collect()
}

/// How background work behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackgroundSettings {
    /// `None` runs no stream worker and no broker consumer (another process runs them). The broker
    /// consumer reads its settings from here too: `claim_idle` is its `ack_wait`.
    pub workers: Option<WorkerSettings>,
    pub sweeper: SweeperSettings,
    pub stock_sync: StockSyncSettings,
}

/// Runs every job until `cancel` fires; workers finish the batch in hand. Several processes may
/// run the same jobs side by side: workers share a consumer group, and sweepers settle each
/// reservation once.
///
/// # Errors
/// When a job's task dies outside its own error handling.
pub async fn run(
    backends: &Backends,
    settings: BackgroundSettings,
    cancel: CancellationToken,
) -> Result<(), StrategyError> {
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs_on(backends.database()) {
        match job {
            Job::StreamWorker(kind) => match settings.workers {
                Some(worker) => {
                    let work = Worker::new(backends, kind, worker)?.run(cancel.clone());
                    // The worker logs its own report when it stops.
                    tasks.spawn(async move {
                        work.await;
                    });
                }
                None => {
                    tracing::info!(strategy = %kind, "stream worker off: run `server worker` to persist queued orders")
                }
            },
            Job::BrokerConsumer => match settings.workers {
                Some(worker) => {
                    let work = Consumer::new(backends, worker)?.run(cancel.clone());
                    // The consumer logs its own report when it stops.
                    tasks.spawn(async move {
                        work.await;
                    });
                }
                None => {
                    tracing::info!(strategy = %StrategyKind::QueueNats, "broker consumer off: run `server worker` to persist queued orders")
                }
            },
            Job::ReservationSweeper => {
                let sweeper = Sweeper::new(backends.books.clone(), backends.redis.clone(), settings.sweeper);
                tasks.spawn(sweeper.run(cancel.clone()));
            }
            Job::StockSync => {
                let sync = StockSync::new(backends.books.clone(), settings.stock_sync);
                tasks.spawn(sync.run(cancel.clone()));
            }
        }
    }
    if tasks.is_empty() {
        cancel.cancelled().await;
    }
    while let Some(finished) = tasks.join_next().await {
        finished.map_err(|err| StrategyError::Internal(format!("a background task died: {err}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_insert_only_strategy_has_its_stock_synced_and_its_reservations_swept() {
        let needs = StrategyKind::RedisOrderlog.background();
        assert!(needs.contains(&Job::StockSync), "nobody would apply redis-orderlog's orders to the stock");
        assert!(needs.contains(&Job::ReservationSweeper), "redis-orderlog's reservations would never expire");
        assert!(jobs_on(SqlBackend::Postgres).contains(&Job::StockSync), "the stock sync is started once");
    }

    #[test]
    fn every_queue_has_its_consumer_started_by_the_registry() {
        for kind in StrategyKind::ALL {
            let needs = kind.background();
            match kind.spec().queue {
                Some(crate::kind::Queue::RedisStream) => {
                    assert!(needs.contains(&Job::StreamWorker(kind)), "{kind}: nobody reads its stream");
                }
                Some(crate::kind::Queue::NatsJetstream) => {
                    assert!(
                        needs.contains(&Job::BrokerConsumer),
                        "{kind}: nobody consumes its broker stream"
                    );
                }
                None => assert!(
                    !needs.iter().any(|job| matches!(job, Job::StreamWorker(_) | Job::BrokerConsumer)),
                    "{kind} queues nothing"
                ),
            }
        }
    }
}
