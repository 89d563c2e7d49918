//! Group commit for any "commit a batch" step: callers queue a request and wait for its answer;
//! one task takes everything queued (up to a cap), runs the step once for all of it, then answers
//! each caller.
//!
//! There is no timer. An idle batcher waits for the first request and starts at once; while a
//! batch is being committed, the next one gathers in the queue, so batches grow exactly as fast as
//! the step is slow (PostgreSQL's own group commit works the same way). The queue is bounded:
//! [`Coalescer::submit`] refuses at once when it is full rather than letting callers hang.
//!
//! The batcher owns a request from the moment it is queued: a caller that stops waiting changes
//! nothing about what the step does with it. Shutting down ([`Coalescer::shutdown`]) lets the
//! batcher commit what is already queued, answer it, and stop. A step that panics drops its
//! batch's answer channels (callers see [`Answer::Lost`] and must settle the outcome themselves);
//! the batcher carries on with the next batch.
//!
//! This module knows nothing about PostgreSQL, so its mechanism is tested and benchmarked with a
//! step that does nothing.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// One queued request and where its answer goes.
struct Waiter<Req, Resp> {
    request: Req,
    answer: oneshot::Sender<Resp>,
}

/// The queue into a running batcher.
pub struct Coalescer<Req, Resp> {
    queue: mpsc::Sender<Waiter<Req, Resp>>,
    sizes: Arc<BatchSizes>,
    /// Asks the batcher to stop taking requests.
    stop: CancellationToken,
    /// Fires once the batcher has answered everything it took and returned.
    stopped: CancellationToken,
}

impl<Req, Resp> fmt::Debug for Coalescer<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalescer")
            .field("queued", &(self.queue.max_capacity() - self.queue.capacity()))
            .field("sizes", &self.sizes)
            .finish_non_exhaustive()
    }
}

/// How a batcher is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescerSettings {
    /// Most requests one step call handles.
    pub max_batch: usize,
    /// Most requests waiting for a batch; beyond it [`Coalescer::submit`] refuses.
    pub queue: usize,
}

/// Why a request got no answer from the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The queue was full: nothing was queued.
    #[error("the batch queue is full")]
    Full,
    /// The batcher has stopped: nothing was queued.
    #[error("the batcher has stopped")]
    Closed,
}

/// What became of a queued request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<Resp> {
    /// The step's answer for it.
    Done(Resp),
    /// The step failed without answering (it panicked, or the runtime is going away): whatever it
    /// did with the request is unknown to the caller.
    Lost,
}

impl<Req, Resp> Coalescer<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts a batcher on the current runtime, counting its batches in `sizes`. `step` gets each
    /// batch, in arrival order, and must return one answer per request, in the same order.
    pub fn spawn<Step, Fut>(settings: CoalescerSettings, sizes: Arc<BatchSizes>, step: Step) -> Self
    where
        Step: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let max_batch = settings.max_batch.max(1);
        let (queue, receiver) = mpsc::channel(settings.queue.max(1));
        let (stop, stopped) = (CancellationToken::new(), CancellationToken::new());
        let batcher = Batcher { max_batch, sizes: Arc::clone(&sizes), stop: stop.clone() };
        let done = stopped.clone();
        tokio::spawn(async move {
            let _done = done.drop_guard();
            batcher.run(receiver, step).await;
        });
        Self { queue, sizes, stop, stopped }
    }

    /// Queues `request` and waits for its answer.
    ///
    /// # Errors
    /// [`Refused`] when the request was not queued: the queue is full, or the batcher stopped.
    pub async fn submit(&self, request: Req) -> Result<Answer<Resp>, Refused> {
        let receiver = self.enqueue(request)?;
        Ok(receiver.await.map_or(Answer::Lost, Answer::Done))
    }

    /// Queues `request` without waiting: the receiver yields its answer (an error means
    /// [`Answer::Lost`]).
    ///
    /// # Errors
    /// As [`Self::submit`].
    pub fn enqueue(&self, request: Req) -> Result<oneshot::Receiver<Resp>, Refused> {
        if self.stop.is_cancelled() {
            return Err(Refused::Closed);
        }
        let (answer, receiver) = oneshot::channel();
        self.queue.try_send(Waiter { request, answer }).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => Refused::Full,
            mpsc::error::TrySendError::Closed(_) => Refused::Closed,
        })?;
        Ok(receiver)
    }

    /// Batch sizes seen so far.
    pub fn sizes(&self) -> &Arc<BatchSizes> {
        &self.sizes
    }

    /// Stops taking requests (later ones are [`Refused::Closed`]), lets the batcher commit and
    /// answer everything already queued, and waits for it to finish. Dropping the last handle
    /// does the same without waiting.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.stopped.cancelled().await;
    }
}

/// Requests allowed to wait for a batch, per unit of the batch cap: enough to keep the next
/// batches full while one commits, bounded so an overloaded server answers at once instead of
/// queueing forever.
pub const QUEUE_PER_BATCH: usize = 16;

impl CoalescerSettings {
    /// Batches of at most `max_batch` requests, and [`QUEUE_PER_BATCH`] times as many waiting.
    pub fn for_batch_cap(max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        Self { max_batch, queue: max_batch.saturating_mul(QUEUE_PER_BATCH) }
    }
}

/// A batcher a strategy owns but starts only on its first request (a strategy is built before
/// any runtime work is wanted, and many are never used in a run), with the batch sizes it formed
/// kept across restarts of the counting.
pub struct LazyBatcher<Req, Resp> {
    settings: CoalescerSettings,
    sizes: Arc<BatchSizes>,
    running: OnceLock<Coalescer<Req, Resp>>,
}

impl<Req, Resp> fmt::Debug for LazyBatcher<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyBatcher")
            .field("settings", &self.settings)
            .field("running", &self.running.get())
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> LazyBatcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// A batcher of at most `max_batch` requests per step ([`CoalescerSettings::for_batch_cap`]).
    pub fn new(max_batch: usize) -> Self {
        Self {
            settings: CoalescerSettings::for_batch_cap(max_batch),
            sizes: Arc::default(),
            running: OnceLock::new(),
        }
    }

    /// The running batcher, started with the step `start` builds if this is the first request.
    pub fn running<Step, Fut>(&self, start: impl FnOnce() -> Step) -> &Coalescer<Req, Resp>
    where
        Step: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        self.running.get_or_init(|| Coalescer::spawn(self.settings, Arc::clone(&self.sizes), start()))
    }

    /// Forgets the batch sizes seen so far (a reset starts a new run).
    pub fn reset_sizes(&self) {
        self.sizes.reset();
    }

    /// The batch sizes formed since the last reset.
    pub fn sizes(&self) -> BatchSizeSummary {
        self.sizes.summary()
    }

    /// [`Coalescer::shutdown`], if the batcher ever started.
    pub async fn shutdown(&self) {
        if let Some(batcher) = self.running.get() {
            batcher.shutdown().await;
        }
    }
}

/// The batcher task's settings.
struct Batcher {
    max_batch: usize,
    sizes: Arc<BatchSizes>,
    stop: CancellationToken,
}

impl Batcher {
    async fn run<Req, Resp, Step, Fut>(self, mut receiver: mpsc::Receiver<Waiter<Req, Resp>>, mut step: Step)
    where
        Step: FnMut(Vec<Req>) -> Fut,
        Fut: Future<Output = Vec<Resp>>,
    {
        let Self { max_batch, sizes, stop } = self;
        let mut waiters = Vec::with_capacity(max_batch);
        loop {
            // `recv_many` waits for the first request, then takes whatever else is queued, up to
            // the cap; it returns 0 only once the queue is closed (or every sender gone) and empty.
            let taken = tokio::select! {
                taken = receiver.recv_many(&mut waiters, max_batch) => taken,
                () = stop.cancelled(), if !receiver.is_closed() => {
                    receiver.close();
                    continue;
                }
            };
            if taken == 0 {
                break;
            }
            commit(&mut step, &mut waiters, &sizes).await;
        }
    }
}

/// Runs `step` once for `waiters` (emptied) and answers each of them.
async fn commit<Req, Resp, Step, Fut>(
    step: &mut Step,
    waiters: &mut Vec<Waiter<Req, Resp>>,
    sizes: &BatchSizes,
) where
    Step: FnMut(Vec<Req>) -> Fut,
    Fut: Future<Output = Vec<Resp>>,
{
    sizes.record(waiters.len());
    let (requests, answers): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
        waiters.drain(..).map(|waiter| (waiter.request, waiter.answer)).unzip();
    let expected = answers.len();
    match AssertUnwindSafe(step(requests)).catch_unwind().await {
        Ok(responses) => {
            if responses.len() != expected {
                tracing::error!(expected, got = responses.len(), "a batch step answered the wrong count");
            }
            // A caller that stopped waiting is not the step's concern: its answer is dropped.
            for (answer, response) in answers.into_iter().zip(responses) {
                let _ = answer.send(response);
            }
        }
        // The answers drop with the batch: every caller of it hears `Answer::Lost`.
        Err(_) => tracing::error!(batch = expected, "a batch step panicked"),
    }
}

/// Upper bounds of the batch-size buckets; the last bucket takes everything above.
pub const BUCKET_BOUNDS: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// How many batches of each size a batcher has formed: cheap to record (one atomic add) and to
/// read.
#[derive(Debug, Default)]
pub struct BatchSizes {
    batches: AtomicU64,
    requests: AtomicU64,
    largest: AtomicU64,
    /// `buckets[i]` counts batches of size in `(BUCKET_BOUNDS[i-1], BUCKET_BOUNDS[i]]`; the extra
    /// last one those above 512.
    buckets: [AtomicU64; BUCKET_BOUNDS.len() + 1],
}

/// A copy of [`BatchSizes`], as `GET /stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchSizeSummary {
    /// Batches committed (or attempted).
    pub batches: u64,
    /// Requests in them.
    pub requests: u64,
    /// The largest batch.
    pub largest: u64,
    /// `(upper bound, batches)` per bucket with batches in it, smallest first; `None` is "above
    /// the last bound".
    pub by_size: Vec<SizeBucket>,
}

/// Batches whose size was at most `up_to` (and above the previous bucket's bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SizeBucket {
    /// `None` for the bucket above the largest bound.
    pub up_to: Option<u64>,
    pub batches: u64,
}

impl BatchSizes {
    /// Counts one batch of `size` requests.
    pub fn record(&self, size: usize) {
        let size64 = u64::try_from(size).unwrap_or(u64::MAX);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(size64, Ordering::Relaxed);
        self.largest.fetch_max(size64, Ordering::Relaxed);
        let bucket = BUCKET_BOUNDS.iter().position(|&bound| size <= bound).unwrap_or(BUCKET_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets every batch (a reset starts a new run).
    pub fn reset(&self) {
        for counter in [&self.batches, &self.requests, &self.largest].into_iter().chain(&self.buckets) {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// A copy of the counts.
    pub fn summary(&self) -> BatchSizeSummary {
        let by_size = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, count)| SizeBucket {
                up_to: BUCKET_BOUNDS.get(i).map(|&bound| bound as u64),
                batches: count.load(Ordering::Relaxed),
            })
            .filter(|bucket| bucket.batches > 0)
            .collect();
        BatchSizeSummary {
            batches: self.batches.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            largest: self.largest.load(Ordering::Relaxed),
            by_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    const SETTINGS: CoalescerSettings = CoalescerSettings { max_batch: 4, queue: 64 };

    /// A step that records each batch and holds it until the test lets it go.
    #[derive(Clone)]
    struct HeldStep {
        batches: Arc<Mutex<Vec<Vec<u32>>>>,
        release: Arc<Semaphore>,
    }

    impl Default for HeldStep {
        fn default() -> Self {
            Self { batches: Arc::default(), release: Arc::new(Semaphore::new(0)) }
        }
    }

    impl HeldStep {
        fn spawn(&self, settings: CoalescerSettings) -> Coalescer<u32, u32> {
            let gate = self.clone();
            Coalescer::spawn(settings, Arc::default(), move |batch: Vec<u32>| {
                let gate = gate.clone();
                async move {
                    gate.batches.lock().unwrap().push(batch.clone());
                    gate.release.acquire().await.unwrap().forget();
                    batch.iter().map(|n| n * 10).collect()
                }
            })
        }

        fn batches(&self) -> Vec<Vec<u32>> {
            self.batches.lock().unwrap().clone()
        }

        async fn until_batches(&self, count: usize) {
            tokio::time::timeout(Duration::from_secs(5), async {
                while self.batches.lock().unwrap().len() < count {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the batcher formed the batch");
        }
    }

    #[tokio::test]
    async fn batches_form_while_a_commit_is_in_flight() {
        let gate = HeldStep::default();
        let coalescer = gate.spawn(SETTINGS);
        let first = coalescer.enqueue(1).unwrap();
        gate.until_batches(1).await;
        // The first batch is held in its step: these queue behind it and form the next batches.
        let rest: Vec<_> = (2..=7).map(|n| coalescer.enqueue(n).unwrap()).collect();
        gate.release.add_permits(3);
        assert_eq!(first.await, Ok(10));
        let mut answers = Vec::new();
        for receiver in rest {
            answers.push(receiver.await.unwrap());
        }
        assert_eq!(answers, [20, 30, 40, 50, 60, 70], "every waiter gets its own answer, in order");
        assert_eq!(
            gate.batches(),
            [vec![1], vec![2, 3, 4, 5], vec![6, 7]],
            "requests queued during a commit form the next batch, FIFO, capped at max_batch"
        );
        let summary = coalescer.sizes().summary();
        assert_eq!((summary.batches, summary.requests, summary.largest), (3, 7, 4));
        assert_eq!(
            summary.by_size,
            [
                SizeBucket { up_to: Some(1), batches: 1 },
                SizeBucket { up_to: Some(2), batches: 1 },
                SizeBucket { up_to: Some(4), batches: 1 },
            ]
        );
    }

    #[tokio::test]
    async fn every_waiter_is_answered_exactly_once_and_batches_respect_the_cap() {
        let settings = CoalescerSettings { max_batch: 8, queue: 1024 };
        let calls = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (counter, sizes) = (Arc::clone(&calls), Arc::clone(&seen));
        let coalescer = Arc::new(Coalescer::spawn(settings, Arc::default(), move |batch: Vec<u32>| {
            counter.fetch_add(1, Ordering::Relaxed);
            sizes.lock().unwrap().push(batch.len());
            async move {
                tokio::task::yield_now().await;
                batch
            }
        }));
        let callers: Vec<_> = (0..500)
            .map(|n| {
                let coalescer = Arc::clone(&coalescer);
                tokio::spawn(async move { coalescer.submit(n).await })
            })
            .collect();
        for (n, caller) in (0..500).zip(callers) {
            assert_eq!(caller.await.unwrap(), Ok(Answer::Done(n)), "caller {n} hears its own answer");
        }
        let sizes = seen.lock().unwrap().clone();
        assert!(sizes.iter().all(|&size| (1..=8).contains(&size)), "a batch broke the cap: {sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 500, "every request in exactly one batch");
        assert_eq!(coalescer.sizes().summary().requests, 500);
        assert_eq!(calls.load(Ordering::Relaxed) as usize, sizes.len());
    }

    #[tokio::test]
    async fn shutdown_answers_what_was_queued() {
        let gate = HeldStep::default();
        let coalescer = gate.spawn(SETTINGS);
        let receivers: Vec<_> = (1..=10).map(|n| coalescer.enqueue(n).unwrap()).collect();
        gate.release.add_permits(100);
        coalescer.shutdown().await;
        assert_eq!(
            coalescer.enqueue(11).unwrap_err(),
            Refused::Closed,
            "a stopped batcher takes nothing more"
        );
        let mut answers = Vec::new();
        for receiver in receivers {
            answers.push(receiver.await.expect("answered before the batcher stopped"));
        }
        assert_eq!(answers, (1..=10).map(|n| n * 10).collect::<Vec<_>>());
        assert_eq!(
            gate.batches().concat(),
            (1..=10).collect::<Vec<_>>(),
            "every queued request committed once"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let gate = HeldStep::default();
        let coalescer = gate.spawn(CoalescerSettings { max_batch: 1, queue: 2 });
        let held = coalescer.enqueue(1).unwrap();
        gate.until_batches(1).await;
        let queued = [coalescer.enqueue(2).unwrap(), coalescer.enqueue(3).unwrap()];
        assert_eq!(coalescer.enqueue(4).unwrap_err(), Refused::Full, "beyond the queue: refused, not parked");
        gate.release.add_permits(3);
        assert_eq!(held.await, Ok(10));
        for (receiver, expected) in queued.into_iter().zip([20, 30]) {
            assert_eq!(receiver.await, Ok(expected));
        }
        assert_eq!(gate.batches().concat(), [1, 2, 3], "the refused request never reached the step");
    }

    #[tokio::test]
    async fn a_panicking_step_loses_its_batch_and_the_batcher_goes_on() {
        let coalescer = Coalescer::spawn(SETTINGS, Arc::default(), |batch: Vec<u32>| async move {
            assert!(!batch.contains(&13), "unlucky batch");
            batch
        });
        assert_eq!(coalescer.submit(13).await, Ok(Answer::Lost), "the panicking batch's caller hears Lost");
        assert_eq!(coalescer.submit(7).await, Ok(Answer::Done(7)), "the next batch is served");
    }

    #[tokio::test]
    async fn a_caller_that_leaves_does_not_stop_its_request() {
        let gate = HeldStep::default();
        let coalescer = gate.spawn(SETTINGS);
        let blocker = coalescer.enqueue(1).unwrap();
        gate.until_batches(1).await;
        drop(coalescer.enqueue(2).unwrap()); // the caller gave up waiting
        let last = coalescer.enqueue(3).unwrap();
        gate.release.add_permits(2);
        assert_eq!(blocker.await, Ok(10));
        assert_eq!(last.await, Ok(30));
        assert_eq!(gate.batches(), [vec![1], vec![2, 3]], "the abandoned request was still committed");
    }

    #[test]
    fn batch_sizes_land_in_their_buckets() {
        let sizes = BatchSizes::default();
        for size in [1, 3, 4, 5, 256, 257, 600] {
            sizes.record(size);
        }
        let summary = sizes.summary();
        assert_eq!(summary.largest, 600);
        let by_bound: Vec<(Option<u64>, u64)> =
            summary.by_size.iter().map(|bucket| (bucket.up_to, bucket.batches)).collect();
        assert_eq!(
            by_bound,
            [(Some(1), 1), (Some(4), 2), (Some(8), 1), (Some(256), 1), (Some(512), 1), (None, 1)]
        );
        sizes.reset();
        assert_eq!(
            sizes.summary(),
            BatchSizeSummary { batches: 0, requests: 0, largest: 0, by_size: vec![] }
        );
    }
}
