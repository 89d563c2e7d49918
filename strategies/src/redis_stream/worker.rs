//! The stream worker: reads accepted orders from a strategy's stream as one consumer of the
//! [`GROUP`] group, persists each batch in one PostgreSQL transaction, then settles it in Redis.
//!
//! One step: take a batch — entries that failed here before and are due for a retry (this
//! consumer's pending list), else entries idle too long on any consumer (`XAUTOCLAIM`, carrying its
//! cursor; at start and then every half `claim_idle`), else new ones (`XREADGROUP … >`, blocking up
//! to `block`). For `stream-deferred`, take the stock in Redis (one script per batch, decisions
//! recorded per order). Write the batch in one transaction; if it fails for a reason other than an
//! unavailable database, write the entries one by one, so one poison entry cannot hold back the
//! rest. After the commit, one script settles every finished entry: `XACK` + `XDEL`, drop it from
//! the pending hash, and move its in-flight units (settled, or released to the shelf for entries
//! given up on). An entry that failed `max_deliveries` deliveries goes to the dead-letter stream.
//!
//! Crash behaviour, step by step: dying while reading leaves the entries in this consumer's pending
//! list, where another consumer reclaims them once they are idle for `claim_idle`. Dying after the
//! stock take (deferred) leaves the decision recorded, so the redelivery does not take again. Dying
//! after the commit and before the settle gets the entry redelivered; the idempotent insert writes
//! nothing and the settle finishes it (its guard moves in-flight units once). A database that does
//! not answer is no entry's fault: the batch stays in hand and is retried, with backoff, without
//! counting a delivery.
//!
//! Loop shape (the crates.io worker's): work found → continue; nothing and draining → return;
//! error → log, back off (bounded exponential), continue. Each step runs under `catch_unwind`: a
//! panic is logged and counted, and the entries it held are retried like failed ones. A reset
//! deletes the stream and its group; the next read gets `NOGROUP` (or `UNBLOCKED` while blocked),
//! and the worker recreates the group from the start of the stream and carries on. Cancelling
//! stops the loop after the batch in hand is settled (at most one `block` of waiting for a read).
//!
//! The worker has its own Redis connection (on a cluster, its own cluster connection), with a reply
//! timeout above `block`: a blocking read on the shared connection would stall every request
//! pipelined behind it, and redis-rs's default 500 ms timeout fails `XREADGROUP … BLOCK 2000`
//! outright.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::persist::{self, ToWrite, Written};
use super::{GROUP, QueuedOrder, SOLD_OUT_AFTER_ACCEPTANCE, StreamKeys};
use crate::backends::{Backends, RedisBackend, RedisConn};
use crate::error::StrategyError;
use crate::fence::{self, Doubt};
use crate::kind::{Queue, StrategyKind};
use crate::order::{OrderStatus, ProductId};
use crate::pg_driver::SqlPool;
use crate::reservation;

static TAKE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/stream_take.lua")));
static SETTLE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/stream_settle.lua")));

/// How long a reply on the worker's connection may take beyond the read's BLOCK time.
const REPLY_MARGIN: Duration = Duration::from_secs(3);
/// First pause after an error; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// First pause before a failed entry is tried again; it doubles per delivery up to [`BACKOFF_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(100);
/// How often a drain looks again while entries are held elsewhere or wait for a retry.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// The `XAUTOCLAIM` cursor that starts (and, returned, ends) a pass over the pending list.
const CURSOR_START: &str = "0-0";
/// A consumer of the group idle for this many `claim_idle`s, with nothing pending, belongs to a
/// process that is gone: its name is dropped from the group. Were it alive after all, its next read
/// would add it back, so the only cost of a mistake is one line in `XINFO`.
const FORGET_AFTER_CLAIM_IDLES: u32 = 10;

/// How a worker behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Entries read, and persisted in one transaction, at a time.
    pub batch: usize,
    /// Longest a read waits for new entries. Cancelling waits for it at most this long.
    pub block: Duration,
    /// An entry delivered to a consumer and not settled for this long is taken over.
    pub claim_idle: Duration,
    /// Deliveries after which an entry that keeps failing goes to the dead-letter stream.
    pub max_deliveries: u64,
}

/// Entries per read and per transaction unless told otherwise. Each batch pays a fixed price —
/// the read, five statements with a commit's fsync, the settle script — so under a backlog (a
/// queued strategy accepts faster than one consumer persists) small batches spend the worker's
/// share of the machine on that price: draining a 40,000-order backlog here ran at 4,700-5,800
/// orders/s in batches of 100 and 5,900-12,400 in batches of 500. Larger batches hold Redis a
/// little longer in the settle script (hundreds of microseconds), well inside any request's budget.
pub const DEFAULT_BATCH: usize = 500;

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            batch: DEFAULT_BATCH,
            block: Duration::from_secs(2),
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
        }
    }
}

impl WorkerSettings {
    /// Settings for draining after a run: entries a worker took and did not settle within a
    /// second are taken over (settling twice is harmless, waiting is not).
    pub fn draining() -> Self {
        Self { claim_idle: Duration::from_secs(1), ..Self::default() }
    }

    fn sane(self) -> Self {
        Self {
            batch: self.batch.clamp(1, 10_000),
            block: self.block.max(Duration::from_millis(1)),
            claim_idle: self.claim_idle.max(Duration::from_millis(1)),
            max_deliveries: self.max_deliveries.max(1),
        }
    }

    fn claim_every(&self) -> Duration {
        (self.claim_idle / 2).max(Duration::from_millis(10))
    }
}

/// What a worker did: orders by what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Batches settled.
    pub batches: u64,
    /// Orders written as confirmed.
    pub persisted: u64,
    /// Orders written as cancelled (`stream-deferred` orders the stock no longer covered).
    pub cancelled: u64,
    /// Entries whose order an earlier delivery had already written: settled, not written again.
    pub redelivered: u64,
    /// Orders not written because another order holds their idempotency key; their units went
    /// back on the shelf.
    pub duplicates: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Attempts at an entry that failed (each one a delivery towards the dead-letter limit).
    pub failed_attempts: u64,
    /// Steps that panicked.
    pub panics: u64,
    /// Orders published to the broker again because it did not hold them (`queue-nats` only).
    pub republished: u64,
}

impl DrainReport {
    pub(crate) fn since(self, start: Self) -> Self {
        Self {
            batches: self.batches - start.batches,
            persisted: self.persisted - start.persisted,
            cancelled: self.cancelled - start.cancelled,
            redelivered: self.redelivered - start.redelivered,
            duplicates: self.duplicates - start.duplicates,
            dead_lettered: self.dead_lettered - start.dead_lettered,
            failed_attempts: self.failed_attempts - start.failed_attempts,
            panics: self.panics - start.panics,
            republished: self.republished - start.republished,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do right now.
    Idle,
    /// A batch of this many entries was handled.
    Worked(usize),
}

/// One stream entry as read, decoded once.
#[derive(Debug, Clone)]
struct Job {
    entry_id: String,
    order_id: Option<Uuid>,
    payload: Vec<u8>,
    deliveries: u64,
    order: Result<QueuedOrder, String>,
}

impl Job {
    fn new(entry_id: String, fields: Option<HashMap<String, Vec<u8>>>, deliveries: u64) -> Self {
        let mut fields = fields.unwrap_or_default();
        let payload = fields.remove("payload").unwrap_or_default();
        let order = if payload.is_empty() {
            Err("the entry has no payload".to_owned())
        } else {
            QueuedOrder::decode(&payload)
        };
        let order_id = fields
            .get("order_id")
            .and_then(|id| Uuid::try_parse_ascii(id).ok())
            .or_else(|| order.as_ref().ok().map(|order| order.order_id));
        Self { entry_id, order_id, payload, deliveries, order }
    }
}

/// Entries read together.
#[derive(Debug, Clone)]
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

    /// Stream entry ids, in stream order.
    pub fn entry_ids(&self) -> Vec<&str> {
        self.jobs.iter().map(|job| job.entry_id.as_str()).collect()
    }

    /// Order ids, where the entry names one.
    pub fn order_ids(&self) -> Vec<Uuid> {
        self.jobs.iter().filter_map(|job| job.order_id).collect()
    }
}

/// What became of one entry in [`Worker::persist`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    Written(Written, OrderStatus),
    /// This attempt failed; the entry is tried again until it reaches the delivery limit.
    Failed(String),
    /// Delivered more often than the limit before this attempt: not tried again.
    GaveUp(String),
}

/// A batch written to PostgreSQL and not yet settled in Redis.
#[derive(Debug, Clone)]
pub struct Persisted {
    fates: Vec<Fate>,
}

impl Persisted {
    /// Entries whose order is now in PostgreSQL (written now or before).
    pub fn written(&self) -> usize {
        self.fates
            .iter()
            .filter(|fate| matches!(fate, Fate::Written(Written::Inserted | Written::AlreadyThere, _)))
            .count()
    }
}

/// A consumer of one strategy's stream.
#[derive(Debug)]
pub struct Worker {
    kind: StrategyKind,
    books: SqlPool,
    redis: RedisBackend,
    keys: StreamKeys,
    settings: WorkerSettings,
    consumer: String,
    conn: Option<RedisConn>,
    group_ready: bool,
    claim_cursor: String,
    next_claim: Instant,
    retry_at: Option<Instant>,
    in_hand: Option<Batch>,
    report: DrainReport,
}

impl Worker {
    /// A worker for `kind`'s stream under a consumer name unique to this process. It connects on
    /// first use, so it starts while Redis is down and catches up once it is back.
    ///
    /// # Errors
    /// When `kind` does not queue.
    pub fn new(
        backends: &Backends,
        kind: StrategyKind,
        settings: WorkerSettings,
    ) -> Result<Self, StrategyError> {
        if kind.spec().queue != Some(Queue::RedisStream) {
            return Err(StrategyError::Internal(format!("{kind} has no Redis stream to work on")));
        }
        Ok(Self {
            kind,
            books: backends.books.clone(),
            redis: backends.redis.clone(),
            keys: StreamKeys::new(&backends.redis.keys, kind),
            settings: settings.sane(),
            consumer: consumer_name(),
            conn: None,
            group_ready: false,
            claim_cursor: CURSOR_START.to_owned(),
            next_claim: Instant::now(),
            retry_at: None,
            in_hand: None,
            report: DrainReport::default(),
        })
    }

    /// This worker's consumer name in the group: host, process id and a random suffix.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Everything this worker did so far.
    pub const fn report(&self) -> DrainReport {
        self.report
    }

    /// Works until `cancel` fires, then returns once the batch in hand is settled. Errors and
    /// panics are logged, counted and backed off from; they never end the loop.
    pub async fn run(mut self, cancel: CancellationToken) -> DrainReport {
        tracing::info!(strategy = %self.kind, consumer = %self.consumer, settings = ?self.settings, "stream worker started");
        let mut backoff = BACKOFF_MIN;
        while !cancel.is_cancelled() {
            match self.guarded_step(true).await {
                Ok(_) => backoff = BACKOFF_MIN,
                Err(err) => {
                    tracing::warn!(strategy = %self.kind, %err, retry_in = ?backoff, "stream worker step failed");
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
                strategy = %self.kind,
                entries = batch.len(),
                "stopping with a batch that could not be persisted; another consumer reclaims it"
            );
        }
        tracing::info!(strategy = %self.kind, consumer = %self.consumer, report = ?self.report, "stream worker stopped");
        self.report
    }

    /// Works until the stream holds no entry (none new, none pending on any consumer), and says
    /// what this call did. Entries another consumer holds are waited for, and taken over once
    /// idle for `claim_idle`.
    ///
    /// # Errors
    /// When the stream is not empty after `timeout`, with the last error seen.
    pub async fn run_until_idle(&mut self, timeout: Duration) -> Result<DrainReport, StrategyError> {
        let start = self.report;
        let deadline = Instant::now() + timeout;
        let mut backoff = BACKOFF_MIN;
        let mut last_error = None;
        loop {
            match self.guarded_step(false).await {
                Ok(Step::Worked(_)) => backoff = BACKOFF_MIN,
                Ok(Step::Idle) => match self.stream_len().await {
                    Ok(0) => return Ok(self.report.since(start)),
                    Ok(_) => tokio::time::sleep(DRAIN_POLL).await,
                    Err(err) => last_error = Some(err),
                },
                Err(err) => {
                    tracing::warn!(strategy = %self.kind, %err, "drain step failed");
                    last_error = Some(err);
                    tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            if Instant::now() >= deadline {
                let left = self.stream_len().await.map_or_else(|_| "unknown".to_owned(), |n| n.to_string());
                let why = last_error.map(|err| format!("; last error: {err}")).unwrap_or_default();
                return Err(StrategyError::Unavailable(format!(
                    "{} stream not drained after {timeout:?}: {left} entries left{why}",
                    self.kind
                )));
            }
        }
    }

    /// [`Worker::step`] under `catch_unwind`: a panic becomes an error, and the entries it held
    /// are retried from this consumer's pending list.
    async fn guarded_step(&mut self, wait: bool) -> Result<Step, StrategyError> {
        match AssertUnwindSafe(self.step(wait)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                self.report.panics += 1;
                self.retry_at = Some(Instant::now() + RETRY_MIN);
                let message = panic_message(panic.as_ref());
                tracing::error!(strategy = %self.kind, panic = message, "stream worker step panicked");
                Err(StrategyError::Internal(format!("stream worker step panicked: {message}")))
            }
        }
    }

    /// One unit of work: the batch in hand (after an error), or the next one, persisted and
    /// settled. `wait` lets the read block for new entries.
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
            Ok(persisted) => self.settle(&batch, &persisted).await,
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

    /// The next entries to work on: this consumer's failed entries once their retry is due, else
    /// entries idle on any consumer for `claim_idle`, else new ones. `None` when there are none
    /// (after blocking up to `block` when `wait` is set).
    ///
    /// # Errors
    /// When Redis does not answer. A missing group is recreated and reads as `None`.
    pub async fn next_batch(&mut self, wait: bool) -> Result<Option<Batch>, StrategyError> {
        match self.read(wait).await {
            Err(err) if is_missing_group(&err) => {
                tracing::info!(strategy = %self.kind, %err, "the consumer group is gone (a reset?): recreating it");
                self.group_ready = false;
                self.claim_cursor = CURSOR_START.to_owned();
                self.retry_at = None;
                Ok(None)
            }
            Err(err) => Err(self.redis_failed(err)),
            Ok(batch) => Ok(batch),
        }
    }

    async fn read(&mut self, wait: bool) -> Result<Option<Batch>, redis::RedisError> {
        if !self.group_ready {
            self.create_group().await?;
        }
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| at <= now) {
            let entries = self.read_group("0", None).await?;
            self.retry_at = None;
            if !entries.is_empty() {
                return self.with_deliveries(entries).await.map(Some);
            }
        }
        if self.claim_cursor != CURSOR_START || now >= self.next_claim {
            let (cursor, entries) = self.autoclaim().await?;
            if cursor == CURSOR_START {
                self.next_claim = now + self.settings.claim_every();
                // A full pass took over what dead consumers held: their names can go now.
                if let Err(err) = self.forget_dead_consumers().await {
                    tracing::warn!(strategy = %self.kind, %err, "could not forget dead consumers; trying again later");
                }
            }
            self.claim_cursor = cursor;
            if !entries.is_empty() {
                tracing::info!(strategy = %self.kind, entries = entries.len(), "reclaimed entries idle on another consumer");
                return self.with_deliveries(entries).await.map(Some);
            }
        }
        let block = wait
            .then(|| {
                let until = self.retry_at.map_or(self.next_claim, |at| at.min(self.next_claim));
                self.settings.block.min(until.saturating_duration_since(now))
            })
            .filter(|block| *block >= Duration::from_millis(1));
        let entries = self.read_group(">", block).await?;
        if entries.is_empty() {
            return Ok(None);
        }
        let jobs = entries.into_iter().map(|(id, fields)| Job::new(id, fields, 1)).collect();
        Ok(Some(Batch { jobs }))
    }

    async fn create_group(&mut self) -> Result<(), redis::RedisError> {
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(GROUP)
            // From the start: orders appended before the group existed (after a reset) are read too.
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(self.conn().await?)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(strategy = %self.kind, stream = %self.keys.stream, "created the consumer group")
            }
            Err(err) if err.code() == Some("BUSYGROUP") => {}
            Err(err) => return Err(err),
        }
        self.group_ready = true;
        Ok(())
    }

    async fn read_group(
        &mut self,
        from: &str,
        block: Option<Duration>,
    ) -> Result<Vec<RawEntry>, redis::RedisError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&self.consumer).arg("COUNT").arg(self.settings.batch);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS").arg(&self.keys.stream).arg(from);
        let reply: Option<Vec<(String, Vec<RawEntry>)>> = cmd.query_async(self.conn().await?).await?;
        Ok(reply.into_iter().flatten().flat_map(|(_, entries)| entries).collect())
    }

    async fn autoclaim(&mut self) -> Result<(String, Vec<RawEntry>), redis::RedisError> {
        let (cursor, entries, _deleted): (String, Vec<RawEntry>, Vec<String>) = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(u64::try_from(self.settings.claim_idle.as_millis()).unwrap_or(u64::MAX))
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(self.settings.batch)
            .query_async(self.conn().await?)
            .await?;
        Ok((cursor, entries))
    }

    /// Drops from the group every other consumer idle for [`FORGET_AFTER_CLAIM_IDLES`] ×
    /// `claim_idle` with no pending entry: replicas come and go under fresh names, and the group
    /// would otherwise list every process that ever ran. A consumer with pending entries is kept
    /// whatever its idle time (dropping it would drop them from the pending list); `XAUTOCLAIM`
    /// takes them over first. Returns the names dropped.
    ///
    /// # Errors
    /// When Redis does not answer.
    pub async fn forget_dead_consumers(&mut self) -> Result<Vec<String>, redis::RedisError> {
        let dead_after = self.settings.claim_idle.saturating_mul(FORGET_AFTER_CLAIM_IDLES);
        let consumers: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .query_async(self.conn().await?)
            .await?;
        let mut forgotten = Vec::new();
        for consumer in consumers {
            let field = |name: &str| consumer.get(name).cloned().unwrap_or(redis::Value::Nil);
            let name: String = redis::from_redis_value(field("name"))?;
            let pending: u64 = redis::from_redis_value(field("pending"))?;
            let idle_ms: u64 = redis::from_redis_value(field("idle"))?;
            if name == self.consumer || pending > 0 || Duration::from_millis(idle_ms) < dead_after {
                continue;
            }
            redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&self.keys.stream)
                .arg(GROUP)
                .arg(&name)
                .query_async::<u64>(self.conn().await?)
                .await?;
            tracing::info!(strategy = %self.kind, consumer = %name, idle_ms, "forgot a dead consumer");
            forgotten.push(name);
        }
        Ok(forgotten)
    }

    /// Builds a batch from entries delivered before, with their delivery counts from the pending
    /// list (the count includes this delivery).
    async fn with_deliveries(&mut self, entries: Vec<RawEntry>) -> Result<Batch, redis::RedisError> {
        let (first, last) = (entries[0].0.clone(), entries[entries.len() - 1].0.clone());
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(&first)
            .arg(&last)
            .arg(entries.len() * 4 + 16)
            .arg(&self.consumer)
            .query_async(self.conn().await?)
            .await?;
        let deliveries: HashMap<String, u64> =
            pending.into_iter().map(|(id, _, _, count)| (id, count)).collect();
        let jobs = entries
            .into_iter()
            .map(|(id, fields)| {
                let count = deliveries.get(&id).copied().unwrap_or(1);
                Job::new(id, fields, count)
            })
            .collect();
        Ok(Batch { jobs })
    }

    /// Writes a batch to PostgreSQL: takes the stock first for `stream-deferred`, then one
    /// transaction for the batch, or one per entry if the batch fails for a reason of its own.
    /// Nothing is acknowledged yet: see [`Worker::settle`].
    ///
    /// # Errors
    /// When a backend does not answer (or writes conflict): nothing is decided then, and the same
    /// batch can be persisted again.
    pub async fn persist(&mut self, batch: &Batch) -> Result<Persisted, StrategyError> {
        let mut fates: Vec<Option<Fate>> = batch
            .jobs
            .iter()
            .map(|job| {
                if job.deliveries > self.settings.max_deliveries {
                    Some(Fate::GaveUp(format!("delivered {} times", job.deliveries)))
                } else {
                    job.order.as_ref().err().map(|err| Fate::Failed(err.clone()))
                }
            })
            .collect();
        let todo: Vec<usize> = (0..fates.len()).filter(|&i| fates[i].is_none()).collect();
        let orders: Vec<&QueuedOrder> =
            todo.iter().filter_map(|&i| batch.jobs[i].order.as_ref().ok()).collect();
        let decisions = match self.kind {
            StrategyKind::StreamDeferred => self.take(&orders).await?,
            _ => vec![(OrderStatus::Confirmed, None); orders.len()],
        };
        let to_write: Vec<ToWrite<'_>> = orders
            .iter()
            .zip(&decisions)
            .map(|(&order, &(status, reason))| ToWrite { order, status, reason })
            .collect();
        match persist::write(&self.books, &to_write).await {
            Ok(written) => {
                for ((&i, written), w) in todo.iter().zip(written).zip(&to_write) {
                    fates[i] = Some(Fate::Written(written, w.status));
                }
            }
            Err(err) => {
                let err = StrategyError::from(err);
                if is_transient(&err) {
                    return Err(err);
                }
                tracing::warn!(strategy = %self.kind, %err, entries = to_write.len(), "batch write failed: writing entries one by one");
                for (&i, w) in todo.iter().zip(&to_write) {
                    fates[i] = Some(match persist::write(&self.books, std::slice::from_ref(w)).await {
                        Ok(written) => Fate::Written(written[0], w.status),
                        Err(err) => {
                            let err = StrategyError::from(err);
                            if is_transient(&err) {
                                return Err(err);
                            }
                            Fate::Failed(err.to_string())
                        }
                    });
                }
            }
        }
        Ok(Persisted { fates: fates.into_iter().map(|fate| fate.expect("every entry has a fate")).collect() })
    }

    /// `stream-deferred`'s decision per order, in stream order: confirmed when the worker took its
    /// stock, cancelled when the stock no longer covers it.
    async fn take(
        &mut self,
        orders: &[&QueuedOrder],
    ) -> Result<Vec<(OrderStatus, Option<&'static str>)>, StrategyError> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let products: Vec<i64> = orders
            .iter()
            .flat_map(|order| order.lines.iter().map(|line| line.product_id.get()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: HashMap<i64, usize> = products.iter().enumerate().map(|(j, &id)| (id, j + 1)).collect();
        // Each missing stock key costs one more run; decided orders answer from their record.
        for _ in 0..=products.len() {
            let mut invocation = TAKE.prepare_invoke();
            invocation.key(&self.keys.taken);
            for &id in &products {
                invocation.key(self.redis.keys.stock(id));
            }
            for &id in &products {
                invocation.key(self.redis.keys.inflight(id));
            }
            invocation.arg(products.len());
            for order in orders {
                invocation.arg(order.order_id.to_string()).arg(order.lines.len());
                for line in &order.lines {
                    invocation.arg(index[&line.product_id.get()]).arg(line.quantity.get());
                }
            }
            let reply: Result<Vec<String>, _> = invocation.invoke_async(self.conn().await?).await;
            let decisions = reply.map_err(|err| self.redis_failed(err))?;
            if let Some(missing) = decisions.last().and_then(|last| last.strip_prefix("missing:")) {
                let product = missing
                    .parse::<usize>()
                    .ok()
                    .and_then(|j| products.get(j.wrapping_sub(1)))
                    .copied()
                    .ok_or_else(|| {
                        StrategyError::Internal(format!("stream_take.lua answered {decisions:?}"))
                    })?;
                let product = ProductId::parse(product).map_err(|err| StrategyError::Internal(err.0))?;
                if reservation::recover(&self.books, &self.redis, product).await?.is_none() {
                    // The catalogue no longer has it: nothing can be taken, record the order as short.
                    let order = orders[decisions.len() - 1].order_id.to_string();
                    let recorded: Result<(), _> = redis::cmd("HSET")
                        .arg(&self.keys.taken)
                        .arg(order)
                        .arg("short")
                        .query_async(self.conn().await?)
                        .await;
                    recorded.map_err(|err| self.redis_failed(err))?;
                }
                continue;
            }
            if decisions.len() != orders.len() {
                return Err(StrategyError::Internal(format!("stream_take.lua answered {decisions:?}")));
            }
            return decisions
                .iter()
                .map(|decision| match decision.as_str() {
                    "taken" => Ok((OrderStatus::Confirmed, None)),
                    "short" => Ok((OrderStatus::Cancelled, Some(SOLD_OUT_AFTER_ACCEPTANCE))),
                    other => Err(StrategyError::Internal(format!("stream_take.lua decided {other:?}"))),
                })
                .collect();
        }
        Err(StrategyError::Unavailable("stock keys kept disappearing from Redis".into()))
    }

    /// Finishes a persisted batch in Redis, atomically per entry: written (or duplicate) entries
    /// are acknowledged and removed with their in-flight units settled (or released); entries
    /// that reached the delivery limit go to the dead-letter stream with their units released;
    /// the others stay pending on this consumer and are tried again after a pause.
    ///
    /// # Errors
    /// When Redis does not answer; persisting and settling the batch again is harmless.
    pub async fn settle(&mut self, batch: &Batch, persisted: &Persisted) -> Result<(), StrategyError> {
        let mut report = DrainReport { batches: 1, ..DrainReport::default() };
        let mut records: Vec<(&Job, &'static str, &str)> = Vec::new();
        let mut retry: Option<u64> = None;
        for (job, fate) in batch.jobs.iter().zip(&persisted.fates) {
            match fate {
                Fate::Written(Written::Inserted, OrderStatus::Cancelled) => {
                    report.cancelled += 1;
                    records.push((job, "settle", ""));
                }
                Fate::Written(Written::Inserted, _) => {
                    report.persisted += 1;
                    records.push((job, "settle", ""));
                }
                Fate::Written(Written::AlreadyThere, _) => {
                    report.redelivered += 1;
                    records.push((job, "settle", ""));
                }
                Fate::Written(Written::KeyTaken, _) => {
                    tracing::warn!(strategy = %self.kind, order = ?job.order_id, "another order holds this order's idempotency key: not written, units released");
                    report.duplicates += 1;
                    records.push((job, "release", ""));
                }
                Fate::Failed(reason) if job.deliveries >= self.settings.max_deliveries => {
                    report.failed_attempts += 1;
                    report.dead_lettered += 1;
                    records.push((job, "dead", reason));
                }
                Fate::GaveUp(reason) => {
                    report.dead_lettered += 1;
                    records.push((job, "dead", reason));
                }
                Fate::Failed(reason) => {
                    tracing::warn!(strategy = %self.kind, entry = %job.entry_id, deliveries = job.deliveries, %reason, "entry failed; it will be tried again");
                    report.failed_attempts += 1;
                    retry = Some(retry.map_or(job.deliveries, |d| d.min(job.deliveries)));
                }
            }
        }
        // An entry given up on may still have been written by an earlier delivery whose settle was
        // lost: settle the doubt in PostgreSQL before its units go back.
        for record in &mut records {
            if record.1 != "dead" {
                continue;
            }
            let Some(id) = record.0.order_id else { continue };
            if fence::settle_on(&self.books, self.kind, id, "dead_lettered").await? == Doubt::Committed {
                tracing::warn!(strategy = %self.kind, order = %id, "an entry given up on was written before: settled, not dead-lettered");
                report.dead_lettered -= 1;
                report.redelivered += 1;
                *record = (record.0, "settle", "");
            }
        }
        if !records.is_empty() {
            match self.run_settle(&records).await {
                Err(err) if !is_transient(&err) && records.len() > 1 => {
                    tracing::warn!(strategy = %self.kind, %err, "settling the batch failed: settling entries one by one");
                    for record in &records {
                        if let Err(err) = self.run_settle(std::slice::from_ref(record)).await {
                            if is_transient(&err) {
                                return Err(err);
                            }
                            self.set_aside(record.0, &err).await?;
                            report.dead_lettered += 1;
                        }
                    }
                }
                other => other?,
            }
        }
        for (job, action, reason) in &records {
            if *action == "dead" {
                tracing::error!(
                    strategy = %self.kind,
                    entry = %job.entry_id,
                    order = ?job.order_id,
                    deliveries = job.deliveries,
                    %reason,
                    "entry moved to the dead-letter stream"
                );
            }
        }
        if let Some(deliveries) = retry {
            let pause = RETRY_MIN.saturating_mul(1 << deliveries.saturating_sub(1).min(16)).min(BACKOFF_MAX);
            self.retry_at = Some(Instant::now() + pause);
        }
        let r = &mut self.report;
        r.batches += report.batches;
        r.persisted += report.persisted;
        r.cancelled += report.cancelled;
        r.redelivered += report.redelivered;
        r.duplicates += report.duplicates;
        r.dead_lettered += report.dead_lettered;
        r.failed_attempts += report.failed_attempts;
        tracing::debug!(strategy = %self.kind, ?report, "batch settled");
        Ok(())
    }

    async fn run_settle(&mut self, records: &[(&Job, &'static str, &str)]) -> Result<(), StrategyError> {
        let products: Vec<i64> = records
            .iter()
            .filter_map(|(job, _, _)| job.order.as_ref().ok())
            .flat_map(|order| order.lines.iter().map(|line| line.product_id.get()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: BTreeMap<i64, usize> = products.iter().enumerate().map(|(j, &id)| (id, j + 1)).collect();
        let mut invocation = SETTLE.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.pending)
            .key(&self.keys.taken)
            .key(&self.keys.dead_letter);
        for &id in &products {
            invocation.key(self.redis.keys.stock(id));
        }
        for &id in &products {
            invocation.key(self.redis.keys.inflight(id));
        }
        let guard = if self.kind == StrategyKind::StreamDeferred { "taken" } else { "reserved" };
        invocation.arg(GROUP).arg(guard).arg(products.len());
        for (job, action, reason) in records {
            let dead = *action == "dead";
            invocation
                .arg(&job.entry_id)
                .arg(job.order_id.map(|id| id.to_string()).unwrap_or_default())
                .arg(*action)
                .arg(if dead { job.payload.as_slice() } else { b"".as_slice() })
                .arg(*reason)
                .arg(job.deliveries);
            match &job.order {
                Ok(order) => {
                    invocation.arg(order.lines.len());
                    for line in &order.lines {
                        invocation.arg(index[&line.product_id.get()]).arg(line.quantity.get());
                    }
                }
                Err(_) => {
                    invocation.arg(0);
                }
            }
        }
        let settled: Result<i64, _> = invocation.invoke_async(self.conn().await?).await;
        let settled = settled.map_err(|err| self.redis_failed(err))?;
        if settled < 0 {
            let product = usize::try_from(-settled - 1)
                .ok()
                .and_then(|j| products.get(j))
                .and_then(|&id| ProductId::parse(id).ok())
                .ok_or_else(|| StrategyError::Internal(format!("stream_settle.lua answered {settled}")))?;
            reservation::recover(&self.books, &self.redis, product).await?;
            return Err(StrategyError::Unavailable(format!(
                "stock key of product {product} was missing while settling; recovered, settling again"
            )));
        }
        Ok(())
    }

    /// Takes an entry that cannot be settled out of the stream, so it no longer holds back the
    /// ones behind it: copied to the dead-letter stream and acknowledged. Its pending record and
    /// units stay where they are, so the audit keeps showing them until someone looks.
    async fn set_aside(&mut self, job: &Job, err: &StrategyError) -> Result<(), StrategyError> {
        tracing::error!(strategy = %self.kind, entry = %job.entry_id, order = ?job.order_id, %err, "entry cannot be settled: set aside in the dead-letter stream");
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&self.keys.dead_letter)
            .arg("*")
            .arg("entry_id")
            .arg(&job.entry_id)
            .arg("order_id")
            .arg(job.order_id.map(|id| id.to_string()).unwrap_or_default())
            .arg("payload")
            .arg(job.payload.as_slice())
            .arg("reason")
            .arg(format!("settle failed: {err}"))
            .arg("deliveries")
            .arg(job.deliveries)
            .ignore()
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(&job.entry_id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(&job.entry_id)
            .ignore();
        let done: Result<(), _> = pipe.query_async(self.conn().await?).await;
        done.map_err(|err| self.redis_failed(err))
    }

    /// Entries in the stream: new ones and ones delivered but not settled.
    async fn stream_len(&mut self) -> Result<u64, StrategyError> {
        let len: Result<u64, _> =
            redis::cmd("XLEN").arg(&self.keys.stream).query_async(self.conn().await?).await;
        len.map_err(|err| self.redis_failed(err))
    }

    async fn conn(&mut self) -> Result<&mut RedisConn, redis::RedisError> {
        if self.conn.is_none() {
            self.conn = Some(self.redis.dedicated(self.settings.block + REPLY_MARGIN).await?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Classifies a Redis error, dropping the connection when it may be broken: a plain
    /// multiplexed connection never recovers from a Redis restart, a fresh one does.
    fn redis_failed(&mut self, err: redis::RedisError) -> StrategyError {
        if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() || err.is_connection_refusal()
        {
            self.conn = None;
        }
        err.into()
    }
}

/// An entry as `XREADGROUP` and `XAUTOCLAIM` return it; fields are `None` for an entry deleted
/// while pending.
type RawEntry = (String, Option<HashMap<String, Vec<u8>>>);

/// The stream or its group is gone (a reset deleted them), or a blocked read was cut short by it.
fn is_missing_group(err: &redis::RedisError) -> bool {
    matches!(err.code(), Some("NOGROUP" | "UNBLOCKED"))
}

/// Failures that are no entry's fault: try the same batch again later.
const fn is_transient(err: &StrategyError) -> bool {
    matches!(err, StrategyError::Unavailable(_) | StrategyError::Conflict(_))
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic payload")
}

/// `host-pid-random`: unique per process, and telling which machine holds an entry.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let suffix = Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

/// Runs until the stream of `kind` holds no entry, with [`WorkerSettings::draining`]: for tests and
/// the load generator, after the buyers stopped.
///
/// # Errors
/// When the stream is not empty after `timeout`, or `kind` does not queue.
pub async fn drain(
    backends: &Backends,
    kind: StrategyKind,
    timeout: Duration,
) -> Result<DrainReport, StrategyError> {
    Worker::new(backends, kind, WorkerSettings::draining())?.run_until_idle(timeout).await
}

/// Runs one worker per queueing strategy until `cancel` fires, each finishing its batch in hand.
///
/// # Errors
/// When a worker task dies outside its own panic guard.
pub async fn run_workers(
    backends: &Backends,
    settings: WorkerSettings,
    cancel: CancellationToken,
) -> Result<(), StrategyError> {
    let mut workers = tokio::task::JoinSet::new();
    for kind in StrategyKind::ALL.into_iter().filter(|kind| kind.spec().queue == Some(Queue::RedisStream)) {
        workers.spawn(Worker::new(backends, kind, settings)?.run(cancel.clone()));
    }
    while let Some(finished) = workers.join_next().await {
        finished.map_err(|err| StrategyError::Internal(format!("a stream worker task died: {err}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_unique_per_worker() {
        let (a, b) = (consumer_name(), consumer_name());
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }

    #[test]
    fn settings_are_kept_sane() {
        let settings =
            WorkerSettings { batch: 0, block: Duration::ZERO, claim_idle: Duration::ZERO, max_deliveries: 0 }
                .sane();
        assert_eq!(settings.batch, 1);
        assert!(settings.block >= Duration::from_millis(1), "BLOCK 0 would wait forever");
        assert_eq!(settings.max_deliveries, 1);
    }

    #[test]
    fn an_entry_without_payload_is_a_failure_not_a_panic() {
        let job = Job::new("1-0".into(), None, 1);
        assert!(job.order.is_err());
        assert_eq!(job.order_id, None);
    }
}
