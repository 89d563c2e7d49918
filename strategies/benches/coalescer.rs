//! The batcher's own overhead ([`checkout_strategies::coalescer`]), with its "commit a batch" step
//! replaced by a no-op: queue a request, have it taken into a batch, get its answer. Beside it, in
//! the same group, a bare tokio round trip (an `mpsc` request carrying a `oneshot` reply to a task
//! that answers it), so the ratio comes from one run. This measures the batching mechanism only,
//! never PostgreSQL: `sql-coalesce`'s cost per sale is its commit.

use std::hint::black_box;
use std::sync::Arc;

use checkout_strategies::coalescer::{Answer, Coalescer, CoalescerSettings};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

const SETTINGS: CoalescerSettings = CoalescerSettings { max_batch: 256, queue: 4096 };

/// A task answering each request on its own `oneshot`: the least any request/answer hand-off costs.
fn bare_round_trip(runtime: &Runtime) -> mpsc::Sender<(u64, oneshot::Sender<u64>)> {
    let (sender, mut receiver) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(SETTINGS.queue);
    runtime.spawn(async move {
        while let Some((request, answer)) = receiver.recv().await {
            let _ = answer.send(request);
        }
    });
    sender
}

/// A batcher whose step answers every request with itself and commits nothing.
fn noop_batcher(runtime: &Runtime) -> Arc<Coalescer<u64, u64>> {
    let _entered = runtime.enter();
    Arc::new(Coalescer::spawn(SETTINGS, Arc::default(), |batch: Vec<u64>| async move { batch }))
}

async fn via_bare(sender: &mpsc::Sender<(u64, oneshot::Sender<u64>)>, request: u64) -> u64 {
    let (answer, receiver) = oneshot::channel();
    sender.send((request, answer)).await.expect("the answering task runs");
    receiver.await.expect("answered")
}

async fn via_batcher(batcher: &Coalescer<u64, u64>, request: u64) -> u64 {
    match batcher.submit(request).await {
        Ok(Answer::Done(answer)) => answer,
        other => panic!("the no-op step answers every request: {other:?}"),
    }
}

fn round_trip(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let bare = bare_round_trip(&runtime);
    let batcher = noop_batcher(&runtime);

    let mut group = c.benchmark_group("batcher_mechanism_round_trip");
    for callers in [1_u64, 64] {
        group.throughput(Throughput::Elements(callers));
        group.bench_with_input(BenchmarkId::new("bare_mpsc_oneshot", callers), &callers, |b, &callers| {
            b.to_async(&runtime).iter(|| async {
                black_box(join_all((0..callers).map(|n| via_bare(&bare, n))).await);
            });
        });
        group.bench_with_input(BenchmarkId::new("coalescer_noop_step", callers), &callers, |b, &callers| {
            b.to_async(&runtime).iter(|| async {
                black_box(join_all((0..callers).map(|n| via_batcher(&batcher, n))).await);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
