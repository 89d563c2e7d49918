//! The buyers of a chaos run: a bounded storm of concurrent clients, each buyer with an
//! `Idempotency-Key` of its own that it retries under (a 503 or a broken connection is worth a
//! retry; the key makes the retry safe), and what every buyer was told, as a [`RunRecord`] the
//! audit's join reads. Also the same-key storm: copies of one request sent at once to several
//! strategies.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::HeaderValue;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::loadgen::record::{Answer, latency_histogram};
use crate::loadgen::{Ack, AckStatus, Connection, Counts, Refused, RunRecord, Target};

/// The product everyone hunts.
pub const HOT: i64 = 100;
/// The other products on the shelf, with their stock: one buyer in ten buys one of them.
pub const REGULARS: [(i64, i64); 3] = [(1, 20), (2, 20), (3, 20)];
/// Tries per buyer: the first and two retries.
const ATTEMPTS: u32 = 3;
/// Pause before the n-th retry: n times this.
const BACKOFF: Duration = Duration::from_millis(250);
/// A buyer whose turn comes this long after the end of the spread is not sent at all (`unsent`).
const LATE_LIMIT: Duration = Duration::from_secs(10);

/// What the storm's clients did, in the table's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// HTTP requests sent, retries and hang-ups included.
    pub requests: u64,
    /// Answers that acknowledged an order: 201, 202, or 200 (a replay naming the first order).
    pub confirmed: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// Requests without an HTTP answer: refused or broken connections, client timeouts.
    pub connection_errors: u64,
    /// Requests whose client hung up on purpose (`client-abort`).
    pub aborted: u64,
    /// Buyers never sent because the storm's time was up.
    pub unsent: u64,
}

/// One storm against one strategy.
#[derive(Debug, Clone)]
pub struct Storm {
    pub strategy: String,
    pub hot_stock: i64,
    /// Buyers; each buys one unit.
    pub buyers: u64,
    /// Buyers in flight at once at most.
    pub clients: usize,
    /// Buyers start evenly spread over this long.
    pub spread: Duration,
    /// A request without an answer after this long is given up (and retried).
    pub timeout: Duration,
    /// Whether every other buyer in the middle half of the storm hangs up 1-8 ms after sending.
    pub hang_up: bool,
    /// Makes idempotency keys unique to this storm.
    pub tag: String,
}

impl Storm {
    /// The product buyer `index` buys: one in ten a regular product, the rest the hot one.
    fn product(index: u64) -> i64 {
        if index % 10 == 9 {
            REGULARS[usize::try_from(index / 10).unwrap_or(0) % REGULARS.len()].0
        } else {
            HOT
        }
    }

    /// How long buyer `index` waits for its answer before hanging up, when it is one who does.
    fn hangs_up_after(&self, index: u64) -> Option<Duration> {
        let middle = self.buyers / 4..self.buyers - self.buyers / 4;
        (self.hang_up && middle.contains(&index) && index % 2 == 1)
            .then(|| Duration::from_millis(1 + index % 8))
    }
}

/// What a storm recorded: the join's input and the table's counters.
#[derive(Debug)]
pub struct StormOutcome {
    pub record: RunRecord,
    pub tally: Tally,
}

/// Everything the clients write down, behind one lock: a chaos storm is a few hundred requests.
#[derive(Debug, Default)]
struct Book {
    tally: Tally,
    counts: Counts,
    acks: Vec<Ack>,
    /// Order ids 503 answers named: they may still complete.
    in_doubt: Vec<uuid::Uuid>,
    sold_out_by_product: HashMap<i64, Refused>,
    errors: BTreeMap<String, u64>,
}

/// One try of one request.
enum Try {
    Answered(StatusCode, Bytes),
    Broken(&'static str),
    TimedOut,
}

#[derive(Debug)]
struct Shared {
    storm: Storm,
    target: Target,
    path: String,
    start: Instant,
    next: AtomicU64,
    book: Mutex<Book>,
}

impl Shared {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Buyer `index`: sends, retries after a 503 or a broken connection, records what it was told.
    async fn buy(&self, index: u64, connection: &mut Option<Connection>) {
        let product = Storm::product(index);
        let body = purchase_body(product);
        let key = format!("{}-{index}", self.storm.tag);
        if let Some(after) = self.storm.hangs_up_after(index) {
            hang_up(&self.target, &self.path, &key, &body, after).await;
            let mut book = self.book();
            book.tally.requests += 1;
            book.counts.sent += 1;
            book.tally.aborted += 1;
            return;
        }
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(BACKOFF * attempt).await;
            }
            let outcome = self.send(connection, &key, &body).await;
            let mut book = self.book();
            book.tally.requests += 1;
            book.counts.sent += 1;
            let retry = match outcome {
                Try::Answered(status, body) => {
                    book.counts.answered += 1;
                    match Answer::of(status, &body) {
                        Answer::Acked(ack, order_id) => {
                            book.tally.confirmed += 1;
                            match ack {
                                AckStatus::Confirmed => book.counts.confirmed += 1,
                                AckStatus::Pending => book.counts.pending += 1,
                            }
                            book.acks.push(Ack { order_id, product_id: product, units: 1, status: ack });
                            false
                        }
                        Answer::SoldOut => {
                            book.counts.sold_out += 1;
                            // Every storm purchase is of one unit.
                            book.sold_out_by_product.entry(product).or_default().add(1, 1);
                            false
                        }
                        Answer::InDoubt(kind, order_id) => {
                            // The purchase may still complete: the retry with the same key
                            // replays it if it did.
                            book.in_doubt.push(order_id);
                            book.counts.errors += 1;
                            *book.errors.entry(kind).or_default() += 1;
                            book.tally.unavailable += 1;
                            true
                        }
                        Answer::Failed(kind) => {
                            book.counts.errors += 1;
                            *book.errors.entry(kind).or_default() += 1;
                            let unavailable = status == StatusCode::SERVICE_UNAVAILABLE;
                            book.tally.unavailable += u64::from(unavailable);
                            unavailable
                        }
                    }
                }
                Try::Broken(kind) => {
                    *connection = None;
                    book.counts.errors += 1;
                    book.tally.connection_errors += 1;
                    *book.errors.entry(kind.to_owned()).or_default() += 1;
                    true
                }
                Try::TimedOut => {
                    *connection = None;
                    book.counts.errors += 1;
                    book.tally.connection_errors += 1;
                    *book.errors.entry("timeout".to_owned()).or_default() += 1;
                    true
                }
            };
            if !retry {
                return;
            }
        }
    }

    async fn send(&self, connection: &mut Option<Connection>, key: &str, body: &Bytes) -> Try {
        let exchange = async {
            if connection.is_none() {
                *connection = Some(Connection::open(&self.target).await?);
            }
            let mut request = self.target.post(&self.path, body.clone());
            if let Ok(value) = HeaderValue::from_str(key) {
                request.headers_mut().insert("idempotency-key", value);
            }
            match connection.as_mut() {
                Some(open) => open.send(request).await,
                None => Err(crate::loadgen::Transport::Connect),
            }
        };
        match tokio::time::timeout(self.storm.timeout, exchange).await {
            Ok(Ok((status, body))) => Try::Answered(status, body),
            Ok(Err(failure)) => Try::Broken(failure.kind()),
            Err(_) => Try::TimedOut,
        }
    }
}

/// Runs `storm` against `target` and returns what its buyers were told. Bounded: buyers start
/// within the spread (or not at all, [`LATE_LIMIT`] after it), and each tries at most
/// [`ATTEMPTS`] times, each try bounded by the storm's timeout.
pub async fn run(target: Target, storm: Storm) -> StormOutcome {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        path: format!("/strategies/{}/purchase", storm.strategy),
        storm,
        target,
        start,
        next: AtomicU64::new(0),
        book: Mutex::default(),
    });
    let clients: Vec<_> = (0..shared.storm.clients.max(1))
        .map(|_| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut connection = None;
                let last_start = shared.start + shared.storm.spread + LATE_LIMIT;
                loop {
                    let index = shared.next.fetch_add(1, Ordering::Relaxed);
                    if index >= shared.storm.buyers {
                        break;
                    }
                    if Instant::now() > last_start {
                        shared.book().tally.unsent += 1;
                        continue;
                    }
                    let offset = shared.storm.spread.mul_f64(index as f64 / shared.storm.buyers as f64);
                    tokio::time::sleep_until((shared.start + offset).into()).await;
                    shared.buy(index, &mut connection).await;
                }
            })
        })
        .collect();
    for client in clients {
        // A client that panicked wrote down what it had; the others' records still count.
        if let Err(err) = client.await {
            tracing::error!(%err, "chaos client failed");
        }
    }
    let duration = start.elapsed();
    let hot_stock = shared.storm.hot_stock;
    let book = std::mem::take(&mut *shared.book());
    let record = RunRecord {
        started: start,
        counts: book.counts,
        unsent: book.tally.unsent,
        duration,
        success: latency_histogram(),
        sold_out_latency: latency_histogram(),
        failed_latency: latency_histogram(),
        censored_latency: latency_histogram(),
        dispatch: latency_histogram(),
        service_latency: latency_histogram(),
        errors: book.errors,
        acks: book.acks,
        in_doubt: book.in_doubt,
        sold_out_by_product: book.sold_out_by_product,
        windows: Vec::new(),
        hot_stock,
        time_to_sell_out: None,
        first_hot_sold_out: None,
        max_lag: Duration::ZERO,
        gave_up: None,
    };
    StormOutcome { record, tally: book.tally }
}

/// Sends a purchase on a connection of its own and closes it `after` the request went out,
/// whether or not an answer came: a client that gave up.
async fn hang_up(target: &Target, path: &str, key: &str, body: &Bytes, after: Duration) {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(target.addr())).await
    else {
        return;
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nIdempotency-Key: {key}\r\n\
         Content-Length: {}\r\n\r\n",
        target.host(),
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(body).await.is_err() {
        return;
    }
    let mut answer = [0u8; 1024];
    let _ = tokio::time::timeout(after, stream.read(&mut answer)).await;
}

/// A one-unit purchase of `product`, as the HTTP contract has it.
fn purchase_body(product: i64) -> Bytes {
    let body = serde_json::json!({
        "items": [{ "product_id": product, "quantity": 1 }],
        "delivery": { "address": "1 Main St, Kyiv", "phone": "+380441234567", "email": "chaos@example.com" },
        "user": "chaos",
    });
    Bytes::from(body.to_string())
}

/// Copies of one request sent at once, each to a different strategy.
#[derive(Debug, Clone)]
pub struct SameKey {
    /// Copy `c` of key `k` goes to `strategies[(k + c) % len]`.
    pub strategies: Vec<String>,
    pub keys: u64,
    pub copies: u64,
    /// Requests in flight at once at most.
    pub clients: usize,
    pub timeout: Duration,
    pub tag: String,
}

/// What one copy of a same-key request was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 200, 201 or 202 naming an order.
    Order { status: u16, order_id: Uuid },
    /// Any other HTTP answer.
    Refused { status: u16 },
    /// No HTTP answer.
    NoAnswer,
}

/// What the same-key storm recorded: the replies to each key's copies.
#[derive(Debug)]
pub struct SameKeyOutcome {
    pub tally: Tally,
    pub replies: Vec<Vec<Reply>>,
}

/// Runs the same-key storm: each key's copies leave together, on connections of their own.
pub async fn same_key(target: Target, plan: SameKey) -> SameKeyOutcome {
    let copies = usize::try_from(plan.copies).unwrap_or(1).max(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(plan.clients.max(copies)));
    let body = purchase_body(HOT);
    let keys: Vec<_> = (0..plan.keys)
        .map(|key| {
            let (target, plan, body, permits) =
                (target.clone(), plan.clone(), body.clone(), Arc::clone(&permits));
            tokio::spawn(async move {
                let _permits = permits.acquire_many_owned(u32::try_from(copies).unwrap_or(1)).await;
                let barrier = Arc::new(tokio::sync::Barrier::new(copies));
                let sends: Vec<_> = (0..plan.copies)
                    .map(|copy| {
                        let index = usize::try_from(key + copy).unwrap_or(0) % plan.strategies.len().max(1);
                        let path = format!("/strategies/{}/purchase", plan.strategies[index]);
                        let idempotency = format!("{}-key-{key}", plan.tag);
                        let (target, body, barrier) = (target.clone(), body.clone(), Arc::clone(&barrier));
                        let timeout = plan.timeout;
                        tokio::spawn(async move {
                            let connection = Connection::open(&target).await;
                            barrier.wait().await;
                            let mut connection = connection.ok()?;
                            let mut request = target.post(&path, body);
                            request
                                .headers_mut()
                                .insert("idempotency-key", HeaderValue::from_str(&idempotency).ok()?);
                            tokio::time::timeout(timeout, connection.send(request)).await.ok()?.ok()
                        })
                    })
                    .collect();
                let mut replies = Vec::with_capacity(copies);
                for send in sends {
                    replies.push(match send.await.ok().flatten() {
                        Some((status, body)) => reply_of(status, &body),
                        None => Reply::NoAnswer,
                    });
                }
                replies
            })
        })
        .collect();
    let mut outcome = SameKeyOutcome { tally: Tally::default(), replies: Vec::new() };
    for key in keys {
        let replies = key.await.unwrap_or_default();
        for reply in &replies {
            outcome.tally.requests += 1;
            match reply {
                Reply::Order { .. } => outcome.tally.confirmed += 1,
                Reply::Refused { status: 503 } => outcome.tally.unavailable += 1,
                Reply::Refused { .. } => {}
                Reply::NoAnswer => outcome.tally.connection_errors += 1,
            }
        }
        outcome.replies.push(replies);
    }
    outcome
}

fn reply_of(status: StatusCode, body: &Bytes) -> Reply {
    let order_id = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|body| {
        body.get("order_id").and_then(|id| id.as_str()).and_then(|id| Uuid::parse_str(id).ok())
    });
    match (status.as_u16(), order_id) {
        (status @ 200..=202, Some(order_id)) => Reply::Order { status, order_id },
        (status, _) => Reply::Refused { status },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storm(buyers: u64, hang_up: bool) -> Storm {
        Storm {
            strategy: "s".into(),
            hot_stock: 10,
            buyers,
            clients: 4,
            spread: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            hang_up,
            tag: "t".into(),
        }
    }

    #[test]
    fn one_buyer_in_ten_buys_a_regular_product_and_every_regular_is_bought() {
        let products: Vec<i64> = (0..300).map(Storm::product).collect();
        assert_eq!(products.iter().filter(|p| **p == HOT).count(), 270);
        for (regular, _) in REGULARS {
            assert!(products.contains(&regular), "product {regular} is bought");
        }
    }

    #[test]
    fn a_quarter_of_the_buyers_hang_up_and_only_in_the_middle_of_the_storm() {
        let storm = storm(400, true);
        let hang_ups: Vec<u64> = (0..400).filter(|i| storm.hangs_up_after(*i).is_some()).collect();
        assert_eq!(hang_ups.len(), 100);
        assert!(hang_ups.iter().all(|i| (100..300).contains(i)));
        assert!(
            (0..400).filter_map(|i| storm.hangs_up_after(i)).all(|after| after <= Duration::from_millis(8))
        );
        assert!((0..400).all(|i| self::storm(400, false).hangs_up_after(i).is_none()));
    }

    #[test]
    fn replies_name_their_order_only_on_success() {
        let id = Uuid::new_v4();
        let body = Bytes::from(format!(r#"{{"order_id":"{id}"}}"#));
        assert_eq!(reply_of(StatusCode::OK, &body), Reply::Order { status: 200, order_id: id });
        assert_eq!(reply_of(StatusCode::ACCEPTED, &body), Reply::Order { status: 202, order_id: id });
        assert_eq!(reply_of(StatusCode::SERVICE_UNAVAILABLE, &body), Reply::Refused { status: 503 });
        assert_eq!(reply_of(StatusCode::CREATED, &Bytes::from("{}")), Reply::Refused { status: 201 });
    }
}
