//! The `queue-nats` consumer: pulls accepted orders from the broker as the durable consumer every
//! process shares, persists each batch in one PostgreSQL transaction through the shared batch
//! writer, settles the orders' units in Redis, and only then acknowledges the messages.
//!
//! One step: take what the broker has (up to `batch`, without waiting), else wait up to `block`
//! for one message and take what came with it. Write the batch in one transaction; if it fails for
//! a reason other than an unavailable database, write the orders one by one, so one poison message
//! cannot hold back the rest. Then, per message: written (now or by an earlier delivery) →
//! settled; its idempotency key or id taken by another order → its units released; failed →
//! negatively acknowledged with a delay that doubles per delivery; failed on its
//! `max_deliveries`-th delivery (the broker's own count) → dead-lettered. A dead letter is decided
//! by PostgreSQL first ([`crate::fence::settle`]): an order an earlier delivery committed is
//! settled, a void one is copied to the dead-letter stream and its units go back on the shelf.
//! Every decision is made before the first acknowledgement, so an error leaves the whole batch in
//! hand to be tried again, and every step is idempotent.
//!
//! Crash behaviour: a consumer that dies holding messages (before or after its commit) leaves them
//! unacknowledged; the broker delivers them again after `ack_wait` (the worker's `claim_idle`), and
//! the redelivery writes nothing twice. A database that does not answer is no message's fault: the
//! batch stays in hand and is retried with backoff, without counting a delivery.
//!
//! Orphans: an order reserved in Redis whose publish never reached the broker (the server died in
//! between, or the PubAck was lost) is pending in Redis and in no stream. When the broker's stream
//! is empty, every pending order older than [`orphan_age`] is such an orphan, and is published
//! again under its own id; de-duplication and the idempotent insert make a mistaken one harmless.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use bytes::Bytes;
use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::broker::{NatsBackend, PublishFailure};
use super::{KIND, finish};
use crate::backends::{Backends, RedisBackend};
use crate::error::StrategyError;
use crate::fence::{self, Doubt};
use crate::order::{OrderLines, OrderStatus};
use crate::pg_driver::SqlPool;
use crate::redis_stream::persist::{self, ToWrite, Written};
use crate::redis_stream::{DrainReport, QueuedOrder, Step, WorkerSettings};
use crate::reservation::End;

/// First pause after an error; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// First redelivery delay of a failed message; it doubles per delivery up to [`BACKOFF_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(100);
/// How often a drain looks again while messages wait for redelivery or orders for their publish.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How often a running consumer looks for orphans.
const ORPHAN_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest the broker keeps a pull that does not wait. It answers one at once with what it has,
/// except one sent while messages acknowledged after their `ack_wait` are still due for
/// redelivery: that one it may hold and, with no expiry, never answer, which held the consumer
/// (and any drain deadline) forever.
const PULL_NOW_EXPIRES: Duration = Duration::from_secs(1);

/// Why a dead-lettered order was given up on, in its dead letter's headers.
const REASON_HEADER: &str = "Checkout-Reason";
const DELIVERIES_HEADER: &str = "Checkout-Deliveries";

/// How old a pending order must be before an empty broker makes it an orphan: well past the
/// longest purchase (connecting, creating the streams, publishing), so a purchase still waiting
/// for its PubAck is never taken for one.
pub fn orphan_age(nats: &NatsBackend) -> Duration {
    nats.settings.connect_timeout + nats.settings.publish_timeout * 4
}

/// One message as pulled, decoded once.
#[derive(Debug)]
struct Job {
    message: jetstream::Message,
    /// This delivery included.
    deliveries: u64,
    sequence: u64,
    order_id: Option<Uuid>,
    order: Result<QueuedOrder, String>,
}

impl Job {
    fn new(message: jetstream::Message) -> Self {
        let (deliveries, sequence) = message
            .info()
            .map(|info| (u64::try_from(info.delivered).unwrap_or(1).max(1), info.stream_sequence))
            .unwrap_or((1, 0));
        let order = QueuedOrder::decode(&message.payload);
        let order_id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .and_then(|id| Uuid::try_parse(id.as_str()).ok())
            .or_else(|| order.as_ref().ok().map(|order| order.order_id));
        Self { message, deliveries, sequence, order_id, order }
    }

    fn lines(&self) -> Option<&OrderLines> {
        self.order.as_ref().ok().map(|order| &order.lines)
    }
}

/// Messages pulled together.
#[derive(Debug)]
pub struct Batch {
    jobs: Vec<Job>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Order ids, where the message names one.
    pub fn order_ids(&self) -> Vec<Uuid> {
        self.jobs.iter().filter_map(|job| job.order_id).collect()
    }

    /// Deliveries of each message, this one included, in batch order.
    pub fn deliveries(&self) -> Vec<u64> {
        self.jobs.iter().map(|job| job.deliveries).collect()
    }
}

/// What became of one message in [`Consumer::persist`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    Written(Written),
    /// This attempt failed; the message is tried again until it reaches the delivery limit.
    Failed(String),
}

/// A batch written to PostgreSQL and not yet finished in Redis and the broker.
#[derive(Debug, Clone)]
pub struct Persisted {
    fates: Vec<Fate>,
}

impl Persisted {
    /// Messages whose order is now in PostgreSQL (written now or before).
    pub fn written(&self) -> usize {
        self.fates
            .iter()
            .filter(|fate| matches!(fate, Fate::Written(Written::Inserted | Written::AlreadyThere)))
            .count()
    }
}

/// What to do with one message once the batch is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Acknowledge it; its order ends in Redis this way first (when the message names one).
    Ack(Option<End>),
    /// Negatively acknowledge it: deliver it again after this delay.
    Retry(Duration),
}

/// A consumer of the `queue-nats` stream.
#[derive(Debug)]
pub struct Consumer {
    books: SqlPool,
    redis: RedisBackend,
    nats: NatsBackend,
    settings: WorkerSettings,
    pull: Option<consumer::Consumer<consumer::pull::Config>>,
    in_hand: Option<Batch>,
    next_orphan_check: Instant,
    report: DrainReport,
}

impl Consumer {
    /// A consumer with `settings`: `claim_idle` is the broker's `ack_wait` (how long a message a
    /// dead consumer held waits before it is delivered again), `block` the longest wait for a
    /// message. It connects on first use, so it starts while the broker is down.
    ///
    /// # Errors
    /// When the books are not in PostgreSQL.
    pub fn new(backends: &Backends, settings: WorkerSettings) -> Result<Self, StrategyError> {
        Ok(Self {
            books: backends.books.clone(),
            redis: backends.redis.clone(),
            nats: backends.nats.clone(),
            settings: WorkerSettings {
                batch: settings.batch.clamp(1, 10_000),
                block: settings.block.max(Duration::from_millis(1)),
                claim_idle: settings.claim_idle.max(Duration::from_millis(100)),
                max_deliveries: settings.max_deliveries.max(1),
            },
            pull: None,
            in_hand: None,
            next_orphan_check: Instant::now(),
            report: DrainReport::default(),
        })
    }

    /// Everything this consumer did so far.
    pub const fn report(&self) -> DrainReport {
        self.report
    }

    /// Works until `cancel` fires, then returns once the batch in hand is finished. Errors and
    /// panics are logged, counted and backed off from; they never end the loop.
    pub async fn run(mut self, cancel: CancellationToken) -> DrainReport {
        tracing::info!(strategy = %KIND, settings = ?self.settings, "broker consumer started");
        let mut backoff = BACKOFF_MIN;
        while !cancel.is_cancelled() {
            if Instant::now() >= self.next_orphan_check {
                self.next_orphan_check = Instant::now() + ORPHAN_CHECK_EVERY;
                if let Err(err) = self.republish_orphans().await {
                    tracing::debug!(strategy = %KIND, %err, "orphan check failed");
                }
            }
            match self.guarded_step(true).await {
                Ok(_) => backoff = BACKOFF_MIN,
                Err(err) => {
                    tracing::warn!(strategy = %KIND, %err, retry_in = ?backoff, "broker consumer step failed");
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        if let Some(batch) = &self.in_hand {
            tracing::warn!(
                strategy = %KIND,
                messages = batch.len(),
                "stopping with a batch that could not be persisted; the broker delivers it again"
            );
        }
        tracing::info!(strategy = %KIND, report = ?self.report, "broker consumer stopped");
        self.report
    }

    /// Works until the broker's stream is empty and no order is pending in Redis (orphans are
    /// published again on the way), and says what this call did.
    ///
    /// # Errors
    /// When that is not the case after `timeout`, with the last error seen.
    pub async fn run_until_idle(&mut self, timeout: Duration) -> Result<DrainReport, StrategyError> {
        let start = self.report;
        let deadline = Instant::now() + timeout;
        let mut backoff = BACKOFF_MIN;
        let mut last_error = None;
        loop {
            match self.guarded_step(false).await {
                Ok(Step::Worked(_)) => backoff = BACKOFF_MIN,
                Ok(Step::Idle) => match self.left().await {
                    Ok((0, 0)) => return Ok(self.report.since(start)),
                    Ok((0, _)) => {
                        if let Err(err) = self.republish_orphans().await {
                            last_error = Some(err);
                        }
                        tokio::time::sleep(DRAIN_POLL).await;
                    }
                    Ok(_) => tokio::time::sleep(DRAIN_POLL).await,
                    Err(err) => {
                        last_error = Some(err);
                        tokio::time::sleep(DRAIN_POLL).await;
                    }
                },
                Err(err) => {
                    tracing::warn!(strategy = %KIND, %err, "drain step failed");
                    last_error = Some(err);
                    tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            if Instant::now() >= deadline {
                let left = self.left().await.map_or_else(
                    |_| "unknown".to_owned(),
                    |(queued, pending)| format!("{queued} messages in the broker, {pending} orders pending"),
                );
                let why = last_error.map(|err| format!("; last error: {err}")).unwrap_or_default();
                return Err(StrategyError::Unavailable(format!(
                    "{KIND} not drained after {timeout:?}: {left}{why}"
                )));
            }
        }
    }

    /// Messages in the broker's stream, and orders pending in Redis.
    async fn left(&self) -> Result<(u64, u64), StrategyError> {
        let queued = self.nats.queued_messages().await?;
        let mut conn = self.redis.conn.clone();
        let pending: u64 =
            redis::cmd("HLEN").arg(self.redis.keys.pending(KIND.as_str())).query_async(&mut conn).await?;
        Ok((queued, pending))
    }

    async fn guarded_step(&mut self, wait: bool) -> Result<Step, StrategyError> {
        match AssertUnwindSafe(self.step(wait)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                self.report.panics += 1;
                let message = panic_message(panic.as_ref());
                tracing::error!(strategy = %KIND, panic = message, "broker consumer step panicked");
                Err(StrategyError::Internal(format!("broker consumer step panicked: {message}")))
            }
        }
    }

    /// One unit of work: the batch in hand (after an error), or the next one, persisted and
    /// finished. `wait` lets the pull wait up to `block` for a message.
    ///
    /// # Errors
    /// When a backend does not answer; the batch stays in hand for the next step.
    pub async fn step(&mut self, wait: bool) -> Result<Step, StrategyError> {
        let batch = match self.in_hand.take() {
            Some(batch) => batch,
            None => match self.next_batch(wait).await? {
                Some(batch) => batch,
                None => return Ok(Step::Idle),
            },
        };
        let outcome = match self.persist(&batch).await {
            Ok(persisted) => self.finish(&batch, &persisted).await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(()) => Ok(Step::Worked(batch.len())),
            Err(err) => {
                self.in_hand = Some(batch);
                Err(err)
            }
        }
    }

    /// The next messages: what the broker has now (up to `batch`), else, when `wait` is set, the
    /// first message within `block` and what the broker has after it. `None` when there are none.
    ///
    /// # Errors
    /// When the broker does not answer.
    pub async fn next_batch(&mut self, wait: bool) -> Result<Option<Batch>, StrategyError> {
        match self.pull_now(self.settings.batch).await {
            Ok(jobs) if !jobs.is_empty() => return Ok(Some(Batch { jobs })),
            Ok(_) if !wait => return Ok(None),
            Ok(_) => {}
            Err(err) => return Err(self.broker_failed(err)),
        }
        let first = match self.pull_waiting().await {
            Ok(Some(job)) => job,
            Ok(None) => return Ok(None),
            Err(err) => return Err(self.broker_failed(err)),
        };
        let mut jobs = vec![first];
        match self.pull_now(self.settings.batch - 1).await {
            Ok(more) => jobs.extend(more),
            // The first one is in hand; the rest waits for the next step.
            Err(err) => tracing::debug!(%err, "pulling the rest of a batch failed"),
        }
        Ok(Some(Batch { jobs }))
    }

    /// The pull consumer; `None` while the order stream does not exist (nothing was ever sold).
    async fn pull(&mut self) -> Result<Option<&consumer::Consumer<consumer::pull::Config>>, StrategyError> {
        if self.pull.is_none() {
            self.pull = self.nats.consumer(self.settings.claim_idle).await?;
        }
        Ok(self.pull.as_ref())
    }

    /// Up to `max` messages the broker has now, without waiting.
    async fn pull_now(&mut self, max: usize) -> Result<Vec<Job>, StrategyError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let Some(pull) = self.pull().await? else { return Ok(Vec::new()) };
        let mut messages = pull
            .fetch()
            .max_messages(max)
            .expires(PULL_NOW_EXPIRES)
            .messages()
            .await
            .map_err(|err| fetch_failed(&err))?;
        let mut jobs = Vec::new();
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => jobs.push(Job::new(message)),
                Err(err) if jobs.is_empty() => return Err(fetch_failed(&err)),
                Err(err) => {
                    tracing::debug!(%err, "a pull ended early");
                    break;
                }
            }
        }
        Ok(jobs)
    }

    /// One message, waiting up to `block` for it. One only: a wider request left open would have
    /// the broker deliver messages nobody reads, each then waiting `ack_wait` for redelivery.
    async fn pull_waiting(&mut self) -> Result<Option<Job>, StrategyError> {
        let block = self.settings.block;
        let Some(pull) = self.pull().await? else {
            tokio::time::sleep(block).await;
            return Ok(None);
        };
        let mut messages =
            pull.batch().max_messages(1).expires(block).messages().await.map_err(|err| fetch_failed(&err))?;
        match messages.next().await {
            Some(Ok(message)) => Ok(Some(Job::new(message))),
            Some(Err(err)) => Err(fetch_failed(&err)),
            None => Ok(None),
        }
    }

    /// Writes a batch to PostgreSQL: one transaction, or one per order if the batch fails for a
    /// reason of its own. Nothing is acknowledged yet: see [`Consumer::finish`].
    ///
    /// # Errors
    /// When PostgreSQL does not answer (or writes conflict): nothing is decided then, and the same
    /// batch can be persisted again.
    pub async fn persist(&mut self, batch: &Batch) -> Result<Persisted, StrategyError> {
        let mut fates: Vec<Option<Fate>> = batch
            .jobs
            .iter()
            .map(|job| job.order.as_ref().err().map(|err| Fate::Failed(err.clone())))
            .collect();
        let todo: Vec<usize> = (0..fates.len()).filter(|&i| fates[i].is_none()).collect();
        let to_write: Vec<ToWrite<'_>> = todo
            .iter()
            .filter_map(|&i| batch.jobs[i].order.as_ref().ok())
            .map(|order| ToWrite { order, status: OrderStatus::Confirmed, reason: None })
            .collect();
        match persist::write(&self.books, &to_write).await {
            Ok(written) => {
                for (&i, written) in todo.iter().zip(written) {
                    fates[i] = Some(Fate::Written(written));
                }
            }
            Err(err) if err.transient => return Err(err.into()),
            Err(err) => {
                tracing::warn!(strategy = %KIND, %err, orders = to_write.len(), "batch write failed: writing orders one by one");
                for (&i, w) in todo.iter().zip(&to_write) {
                    fates[i] = Some(match persist::write(&self.books, std::slice::from_ref(w)).await {
                        Ok(written) => Fate::Written(written[0]),
                        Err(err) if err.transient => return Err(err.into()),
                        Err(err) => Fate::Failed(err.to_string()),
                    });
                }
            }
        }
        Ok(Persisted {
            fates: fates.into_iter().map(|fate| fate.expect("every message has a fate")).collect(),
        })
    }

    /// Finishes a persisted batch: decides each message (settle, release, dead-letter or retry),
    /// copies the dead letters to the dead-letter stream, ends the orders in Redis, and only then
    /// acknowledges the messages.
    ///
    /// # Errors
    /// When a backend does not answer before the first acknowledgement; persisting and finishing
    /// the batch again is harmless.
    pub async fn finish(&mut self, batch: &Batch, persisted: &Persisted) -> Result<(), StrategyError> {
        let mut report = DrainReport { batches: 1, ..DrainReport::default() };
        let mut decisions = Vec::with_capacity(batch.len());
        for (job, fate) in batch.jobs.iter().zip(&persisted.fates) {
            let decision = match fate {
                Fate::Written(Written::Inserted) => {
                    report.persisted += 1;
                    Decision::Ack(Some(End::Settle))
                }
                Fate::Written(Written::AlreadyThere) => {
                    report.redelivered += 1;
                    Decision::Ack(Some(End::Settle))
                }
                Fate::Written(Written::KeyTaken) => {
                    tracing::warn!(strategy = %KIND, order = ?job.order_id, "another order holds this order's idempotency key, or its id is void: not written, units released");
                    report.duplicates += 1;
                    Decision::Ack(Some(End::Release))
                }
                Fate::Failed(reason) => {
                    report.failed_attempts += 1;
                    if job.deliveries < self.settings.max_deliveries {
                        tracing::warn!(strategy = %KIND, sequence = job.sequence, deliveries = job.deliveries, %reason, "message failed; it will be delivered again");
                        let pause = RETRY_MIN
                            .saturating_mul(1 << job.deliveries.saturating_sub(1).min(16))
                            .min(BACKOFF_MAX);
                        Decision::Retry(pause)
                    } else {
                        self.dead_letter(job, reason, &mut report).await?
                    }
                }
            };
            decisions.push(decision);
        }
        let ends: Vec<(Uuid, &OrderLines, End)> = batch
            .jobs
            .iter()
            .zip(&decisions)
            .filter_map(|(job, decision)| match decision {
                Decision::Ack(Some(end)) => Some((job.order_id?, job.lines()?, *end)),
                _ => None,
            })
            .collect();
        finish(&self.books, &self.redis, &ends).await?;
        for (job, decision) in batch.jobs.iter().zip(&decisions) {
            let acked = match decision {
                Decision::Ack(_) => job.message.ack().await,
                Decision::Retry(pause) => job.message.ack_with(AckKind::Nak(Some(*pause))).await,
            };
            // A lost acknowledgement only means a redelivery, which writes nothing twice.
            if let Err(err) = acked {
                tracing::warn!(strategy = %KIND, sequence = job.sequence, %err, "acknowledgement not sent");
            }
        }
        let r = &mut self.report;
        r.batches += report.batches;
        r.persisted += report.persisted;
        r.redelivered += report.redelivered;
        r.duplicates += report.duplicates;
        r.dead_lettered += report.dead_lettered;
        r.failed_attempts += report.failed_attempts;
        tracing::debug!(strategy = %KIND, ?report, "batch finished");
        Ok(())
    }

    /// Gives up on a message: an order an earlier delivery committed is settled instead; any
    /// other is voided for good, copied to the dead-letter stream, and its units released.
    async fn dead_letter(
        &self,
        job: &Job,
        reason: &str,
        report: &mut DrainReport,
    ) -> Result<Decision, StrategyError> {
        if let Some(id) = job.order_id
            && fence::settle_on(&self.books, KIND, id, "dead_lettered").await? == Doubt::Committed
        {
            tracing::warn!(strategy = %KIND, order = %id, "a message given up on was written before: settled, not dead-lettered");
            report.redelivered += 1;
            return Ok(Decision::Ack(Some(End::Settle)));
        }
        let js = self.nats.jetstream().await?;
        let id = job.order_id.map_or_else(|| format!("sequence-{}", job.sequence), |id| id.to_string());
        let deliveries = job.deliveries.to_string();
        let headers = [(REASON_HEADER, reason), (DELIVERIES_HEADER, deliveries.as_str())];
        let payload = Bytes::copy_from_slice(&job.message.payload);
        self.nats.publish(&js, &self.nats.names.dead_subject, &id, &headers, payload).await.map_err(
            |failure| match failure {
                PublishFailure::NotStored(why) | PublishFailure::Unknown(why) => {
                    StrategyError::Unavailable(why)
                }
            },
        )?;
        tracing::error!(strategy = %KIND, order = %id, deliveries = job.deliveries, %reason, "message moved to the dead-letter stream");
        report.dead_lettered += 1;
        Ok(Decision::Ack(Some(End::Release)))
    }

    /// Publishes again every order pending in Redis for longer than [`orphan_age`], when the
    /// broker's stream is empty (then none of them is in it). Returns how many were published.
    ///
    /// # Errors
    /// When a backend does not answer or a publish fails; the rest waits for the next check.
    pub async fn republish_orphans(&mut self) -> Result<u64, StrategyError> {
        if self.nats.queued_messages().await? != 0 {
            return Ok(0);
        }
        let mut conn = self.redis.conn.clone();
        let pending: HashMap<String, Vec<u8>> =
            redis::cmd("HGETALL").arg(self.redis.keys.pending(KIND.as_str())).query_async(&mut conn).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let age = chrono::Duration::from_std(orphan_age(&self.nats)).unwrap_or(chrono::Duration::MAX);
        let cutoff = Utc::now() - age;
        let js = self.nats.jetstream().await?;
        let mut published = 0;
        for (id, payload) in pending {
            match QueuedOrder::decode(&payload) {
                Ok(order) if order.created_at <= cutoff => {}
                Ok(_) => continue,
                Err(err) => {
                    tracing::error!(strategy = %KIND, order = %id, %err, "unreadable pending order left in place");
                    continue;
                }
            }
            self.nats.publish(&js, &self.nats.names.subject, &id, &[], Bytes::from(payload)).await.map_err(
                |failure| match failure {
                    PublishFailure::NotStored(why) | PublishFailure::Unknown(why) => {
                        StrategyError::Unavailable(why)
                    }
                },
            )?;
            published += 1;
        }
        if published > 0 {
            tracing::warn!(strategy = %KIND, orders = published, "published pending orders the broker did not hold");
        }
        self.report.republished += published;
        Ok(published)
    }

    /// Forgets the consumer handle after a broker error: the next pull looks it up (and the
    /// streams) again, in case the broker came back without them.
    fn broker_failed(&mut self, err: StrategyError) -> StrategyError {
        self.pull = None;
        self.nats.forget_streams();
        err
    }
}

fn fetch_failed(err: &dyn std::fmt::Display) -> StrategyError {
    StrategyError::Unavailable(format!("pulling from NATS failed: {err}"))
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic payload")
}

/// Runs until the broker's stream is empty and nothing is pending, with
/// [`WorkerSettings::draining`]: for tests and the load generator, after the buyers stopped.
///
/// # Errors
/// When that is not the case after `timeout`.
pub async fn drain(backends: &Backends, timeout: Duration) -> Result<DrainReport, StrategyError> {
    Consumer::new(backends, WorkerSettings::draining())?.run_until_idle(timeout).await
}
