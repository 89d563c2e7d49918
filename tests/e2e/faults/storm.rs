//! Concurrent buyers that keep buying through a fault, and a tally of what each was told.
//!
//! A buyer told 503 tries again after a pause, the way a client honouring `Retry-After` does, so
//! the sale goes on across the fault and resumes after it. Every loop is bounded in attempts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use checkout_strategies::StrategyKind;
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{Answer, TestApp};

/// How the buyers behave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Storm {
    pub(crate) buyers: usize,
    /// Delay between one buyer's first request and the next one's, so the sale is still going
    /// when the fault hits.
    pub(crate) stagger: Duration,
    /// Requests per buyer at most: a buyer stops at the first answer that is not a 503.
    pub(crate) attempts: usize,
    /// Pause after a 503 before trying again.
    pub(crate) pause: Duration,
}

impl Default for Storm {
    fn default() -> Self {
        Self {
            buyers: 60,
            stagger: Duration::from_millis(10),
            attempts: 40,
            pause: Duration::from_millis(50),
        }
    }
}

/// One request and its answer.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) answer: Answer,
    pub(crate) took: Duration,
}

/// A storm under way.
#[derive(Debug)]
pub(crate) struct Running {
    buyers: Vec<tokio::task::JoinHandle<Vec<Attempt>>>,
    created: Arc<AtomicUsize>,
}

impl Running {
    /// Orders created (201 or 202) so far.
    pub(crate) fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` orders were created.
    pub(crate) async fn wait_for_sales(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.created() < n {
            assert!(Instant::now() < deadline, "fewer than {n} sales within {within:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Every attempt of every buyer, once all of them stopped.
    pub(crate) async fn finish(self) -> Vec<Attempt> {
        let mut all = Vec::new();
        for buyer in self.buyers {
            all.extend(buyer.await.expect("buyer task"));
        }
        all
    }
}

/// Starts `storm.buyers` buyers, each sending `body` through `kind`.
pub(crate) fn start(app: &Arc<TestApp>, kind: StrategyKind, body: &Value, storm: Storm) -> Running {
    let created = Arc::new(AtomicUsize::new(0));
    let buyers = (0..storm.buyers)
        .map(|i| {
            let (app, body, created) = (Arc::clone(app), body.clone(), Arc::clone(&created));
            let start = storm.stagger * u32::try_from(i).expect("a few buyers");
            tokio::spawn(async move {
                tokio::time::sleep(start).await;
                let mut attempts = Vec::new();
                for _ in 0..storm.attempts {
                    let sent = Instant::now();
                    let answer = app.buy(kind, &body, None).await;
                    let status = answer.status;
                    attempts.push(Attempt { answer, took: sent.elapsed() });
                    if matches!(status, 201 | 202) {
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                    if status != 503 {
                        break;
                    }
                    tokio::time::sleep(storm.pause).await;
                }
                attempts
            })
        })
        .collect();
    Running { buyers, created }
}

/// What the buyers were told, by kind of answer.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Orders answered 201 (or 202 for queueing strategies).
    pub(crate) created: BTreeSet<Uuid>,
    /// Orders answered 503 `outcome_unknown`: they may exist.
    pub(crate) unknown: BTreeSet<Uuid>,
    /// 503 `backend_unavailable`: nothing was sold.
    pub(crate) unavailable: usize,
    pub(crate) sold_out: usize,
    pub(crate) gate_conflicts: usize,
}

impl Tally {
    /// Sorts `attempts`, failing the test on any answer a fault must not produce (a 500, a hang
    /// past `bound`, an error without its contract fields).
    #[track_caller]
    pub(crate) fn of(kind: StrategyKind, attempts: &[Attempt], bound: Duration) -> Self {
        let mut tally = Self::default();
        let created_status = if kind.spec().queued { 202 } else { 201 };
        for Attempt { answer, took } in attempts {
            assert!(
                *took <= bound,
                "{kind}: an answer took {took:?}, past the {bound:?} bound: {}",
                answer.body
            );
            let body = &answer.body;
            match (answer.status, body["error"].as_str()) {
                (status, None) if status == created_status => {
                    let id = order_id(body)
                        .unwrap_or_else(|| panic!("{kind}: a receipt without an order id: {body}"));
                    assert!(tally.created.insert(id), "{kind}: order {id} created twice");
                }
                (409, Some("sold_out")) => tally.sold_out += 1,
                (409, Some("inventory_gate_conflict")) => tally.gate_conflicts += 1,
                (503, Some("backend_unavailable")) => tally.unavailable += 1,
                (503, Some("outcome_unknown")) => {
                    let id = order_id(body)
                        .unwrap_or_else(|| panic!("{kind}: an unknown outcome must name the order: {body}"));
                    tally.unknown.insert(id);
                }
                (status, _) => panic!("{kind}: a fault must not produce {status}: {body}"),
            }
        }
        tally
    }

    /// 503 answers of either kind.
    pub(crate) fn refused_for_faults(&self) -> usize {
        self.unavailable + self.unknown.len()
    }
}

fn order_id(body: &Value) -> Option<Uuid> {
    body["order_id"].as_str().and_then(|id| Uuid::parse_str(id).ok())
}
