//! `sql-coalesce` — application-level group commit: purchases join a batch, and one SQL
//! transaction sells the whole batch, on PostgreSQL or MariaDB ([`batch_tx`]).
//!
//! Guarantee: never oversells, and answers nobody before the commit. The transaction locks every
//! product the batch names (`SELECT … FOR UPDATE`, in product-id order, the order every writer
//! locks rows in), accepts orders greedily in arrival order while every line still fits
//! (multi-item orders stay all-or-nothing), inserts the accepted ones in one multi-row statement
//! and takes their units with a decrement that checks the stock again
//! (`order_store::write_batch` with `StockTake::Checked`). Refusals read as in
//! `sql-atomic`: 404 for an unknown product, 409 `inventory_gate_conflict` for one the Redis gate
//! or a unit pool sells, 409 sold out otherwise; a sale claims `products.gate = 'postgres'`.
//!
//! Crash behaviour: before COMMIT, the database rolls the whole batch back; after it, every accepted
//! order and its units are there. The server holds nothing of its own: the queue into the batcher
//! lives in memory, and its purchases were answered nothing yet. A batch that fails before COMMIT
//! answers every buyer in it 503 and leaves nothing behind. A COMMIT whose reply was lost is
//! settled by voiding every order id of the batch ([`crate::fence::settle_all`]): each buyer hears
//! 201 if the batch committed, 503 if not.
//!
//! Why this shape: every safe SQL strategy holds the hot row's lock from its UPDATE to the end of
//! its COMMIT, so one row sells one order per commit. Here one commit (one fsync, one lock window)
//! sells a whole batch. The batcher ([`crate::coalescer`]) has no timer: a lone purchase commits at
//! once, and under load the next batch gathers while the current one commits, so batches grow
//! with the load up to `Tuning::coalesce_max_batch`. One batcher serves every product; a batch
//! that mixes products locks each of them once.
//!
//! The batcher starts on the first purchase and belongs to this strategy. A graceful shutdown
//! ([`Strategy::shutdown`], once the server stops taking requests) closes its queue and waits
//! while it commits and answers every purchase already queued.
//!
//! On MariaDB the steps are the same and so are the answers; what differs is in [`batch_tx`] and
//! the shared batch writer ([`crate::dialect::mysql_batch`]): the products are locked one locking
//! read per id (in id order), and without `RETURNING` the batch's ids are read before and after
//! the insert to tell which orders this transaction wrote.

mod batch_tx;

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use sqlx::FromRow;
use uuid::Uuid;

use crate::coalescer::{Answer, BatchSizeSummary, LazyBatcher, Refused};
use crate::error::StrategyError;
use crate::fence::{self, Doubt};
use crate::kind::{Gate, StrategyKind};
use crate::order::{OrderStatus, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::{
    Abandoned, BatchConn, BatchError, BatchFailure, BatchOrder, BatchTx, StockTake, Written, receipt_on,
    settle_batch_on, within_deadline_on,
};
use crate::pg_driver::SqlPool;
use crate::plan::StockPlan;
use crate::strategy::Strategy;

const KIND: StrategyKind = StrategyKind::SqlCoalesce;

const LOCK_PRODUCTS: &str = "SELECT id, stock, gate FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE";

const RECEIPTS_BY_KEY: &str = "SELECT idempotency_key, id, status, strategy FROM orders \
                               WHERE idempotency_key = ANY($1) AND status <> 'void'";

type Reply = Result<PurchaseOutcome, StrategyError>;

/// The group-commit strategy.
#[derive(Debug)]
pub struct SqlCoalesce {
    books: SqlPool,
    batcher: LazyBatcher<PurchaseRequest, Reply>,
}

impl SqlCoalesce {
    /// A strategy whose batches hold at most `max_batch` purchases. Its batcher starts on the
    /// first purchase. Its batches and their orders are in `books`, either dialect.
    pub fn new(books: SqlPool, max_batch: usize) -> Self {
        Self { books, batcher: LazyBatcher::new(max_batch) }
    }
}

#[async_trait]
impl Strategy for SqlCoalesce {
    fn kind(&self) -> StrategyKind {
        KIND
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        let batcher = self.batcher.running(|| {
            let books = self.books.clone();
            move |batch| {
                let books = books.clone();
                async move { commit_batch(&books, batch).await }
            }
        });
        match batcher.submit(request.clone()).await {
            Ok(Answer::Done(reply)) => reply,
            Ok(Answer::Lost) => settle_lost(&self.books, request.order_id).await,
            Err(Refused::Full) => {
                Err(StrategyError::Unavailable("sql-coalesce: too many purchases waiting for a batch".into()))
            }
            Err(Refused::Closed) => {
                Err(StrategyError::Unavailable("sql-coalesce: the batcher has stopped".into()))
            }
        }
    }

    async fn prepare(&self, _plan: &StockPlan) -> Result<(), StrategyError> {
        self.batcher.reset_sizes();
        Ok(())
    }

    fn batch_sizes(&self) -> Option<BatchSizeSummary> {
        Some(self.batcher.sizes())
    }

    async fn shutdown(&self) {
        self.batcher.shutdown().await;
    }
}

/// The batch step died without answering (a panic): whether its transaction committed is
/// settled by the order id.
async fn settle_lost(books: &SqlPool, id: Uuid) -> Reply {
    match fence::settle_on(books, KIND, id, "batch_lost").await {
        Ok(Doubt::Committed) => Ok(PurchaseOutcome::Placed(Receipt::confirmed(id, KIND))),
        Ok(Doubt::Void) => Err(StrategyError::Internal("the batch holding this purchase failed".into())),
        Err(asked) => Err(StrategyError::InDoubt(format!(
            "order {id}: its batch failed and the database could not be asked whether it committed ({asked})"
        ))),
    }
}

/// What the batch's transaction decided for one purchase before writing anything.
#[derive(Debug)]
enum Verdict {
    /// Every line fits: the order is written and its units taken.
    Take,
    /// Refused (sold out, unknown product, other gate): nothing written.
    Refuse(PurchaseOutcome),
    /// Its idempotency key already names a committed order.
    Replay(Receipt),
    /// An earlier purchase of this batch holds the same idempotency key: it is answered with
    /// that one's order once the batch committed.
    SameKey,
}

#[derive(FromRow)]
struct Shelf {
    id: i64,
    stock: i64,
    gate: Option<String>,
}

#[derive(FromRow)]
struct KeyedReceipt {
    idempotency_key: String,
    id: Uuid,
    status: String,
    strategy: String,
}

/// Sells `batch` in one transaction and answers each purchase, in order.
async fn commit_batch(books: &SqlPool, batch: Vec<PurchaseRequest>) -> Vec<Reply> {
    let ids = batch.iter().map(|request| request.order_id);
    within_deadline_on(books, KIND, ids, sell(books, &batch), |id, fate| match fate {
        Abandoned::Committed => Ok(PurchaseOutcome::Placed(Receipt::confirmed(id, KIND))),
        Abandoned::NotCommitted(detail) => Err(StrategyError::Unavailable(detail)),
        Abandoned::Unknown(detail) => Err(StrategyError::InDoubt(detail)),
    })
    .await
}

/// The batch's transaction, from taking a connection to answering after COMMIT.
async fn sell(books: &SqlPool, batch: &[PurchaseRequest]) -> Vec<Reply> {
    // A connection that cannot be had sent nothing: that failure is certain.
    let mut conn = match BatchConn::acquire(books).await {
        Ok(conn) => conn,
        Err(err) => return fail_all(batch, &err),
    };
    let attempt = write(&mut conn, batch).await;
    drop(conn);
    match attempt {
        Ok(Committed { verdicts, written }) => answer(books, batch, verdicts, &written).await,
        // COMMIT was never sent, or the database answered it with an error: nothing was committed.
        Err(Failure::NotCommitted(err)) => fail_all(batch, &err),
        Err(Failure::CommitInDoubt(Committed { verdicts, written }, err)) => {
            settle_commit(books, batch, verdicts, written, &err).await
        }
    }
}

/// A COMMIT whose reply was lost: the batch is one transaction, so its inserted orders all
/// committed or none did. Voiding their ids settles which, for good.
async fn settle_commit(
    books: &SqlPool,
    batch: &[PurchaseRequest],
    verdicts: Vec<Verdict>,
    written: HashMap<Uuid, Written>,
    err: &BatchError,
) -> Vec<Reply> {
    let inserted: Vec<Uuid> =
        written.iter().filter(|(_, fate)| **fate == Written::Inserted).map(|(id, _)| *id).collect();
    match settle_batch_on(books, KIND, &inserted, "commit_in_doubt").await {
        Some(settled) if settled.values().any(|doubt| *doubt == Doubt::Committed) => {
            tracing::warn!(%err, orders = inserted.len(), "a batch whose COMMIT reply was lost had committed");
            answer(books, batch, verdicts, &written).await
        }
        Some(_) => fail_all(batch, err),
        None => batch
            .iter()
            .zip(verdicts)
            .map(|(request, verdict)| {
                Err(match verdict {
                    Verdict::Take => StrategyError::InDoubt(format!(
                        "order {}: the batch's COMMIT failed ({err}) and the database could not be asked whether it committed",
                        request.order_id
                    )),
                    _ => StrategyError::Unavailable(format!("the batch's COMMIT failed: {err}")),
                })
            })
            .collect(),
    }
}

/// The whole batch failed with `err`, nothing committed: every purchase hears 503. A buyer is
/// never the cause of its batch's failure, and nothing of it was written, so a retry is the
/// right move whatever the database said.
fn fail_all(batch: &[PurchaseRequest], err: &BatchError) -> Vec<Reply> {
    if !err.transient {
        tracing::error!(%err, batch = batch.len(), "a batch failed and was rolled back");
    }
    batch
        .iter()
        .map(|_| Err(StrategyError::Unavailable(format!("the batch failed and was rolled back: {err}"))))
        .collect()
}

/// Each purchase's answer once its batch committed.
async fn answer(
    books: &SqlPool,
    batch: &[PurchaseRequest],
    verdicts: Vec<Verdict>,
    written: &HashMap<Uuid, Written>,
) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(batch.len());
    for (request, verdict) in batch.iter().zip(verdicts) {
        replies.push(match verdict {
            Verdict::Refuse(outcome) => Ok(outcome),
            Verdict::Replay(receipt) => Ok(PurchaseOutcome::Replayed(receipt)),
            Verdict::Take => match written.get(&request.order_id) {
                Some(Written::Inserted | Written::AlreadyThere) => {
                    Ok(PurchaseOutcome::Placed(Receipt::confirmed(request.order_id, KIND)))
                }
                // Another order took the key between the look-up and the insert, or the id was
                // voided: nothing of this purchase was written.
                Some(Written::KeyTaken) | None => replay_by_key(books, request).await,
            },
            Verdict::SameKey => replay_by_key(books, request).await,
        });
    }
    replies
}

/// A purchase whose key another order holds hears that order; without one it may retry.
async fn replay_by_key(books: &SqlPool, request: &PurchaseRequest) -> Reply {
    match receipt_on(books, request).await? {
        Some(first) => Ok(PurchaseOutcome::Replayed(first)),
        None => Err(StrategyError::Unavailable(
            "another purchase of this batch held the same order id or idempotency key and placed nothing; retry"
                .into(),
        )),
    }
}

/// A batch written and committed.
struct Committed {
    verdicts: Vec<Verdict>,
    written: HashMap<Uuid, Written>,
}

type Failure = BatchFailure<Committed>;

/// Decides, writes and commits the batch on `conn`.
///
/// # Errors
/// [`Failure`]: certain when COMMIT was not sent or the database refused it, in doubt otherwise.
async fn write(conn: &mut BatchConn, batch: &[PurchaseRequest]) -> Result<Committed, Failure> {
    let mut tx = conn.begin().await?;
    let verdicts = decide(&mut tx, batch).await?;
    let now = chrono::Utc::now();
    let accepted: Vec<BatchOrder<'_>> = batch
        .iter()
        .zip(&verdicts)
        .filter(|(_, verdict)| matches!(verdict, Verdict::Take))
        .map(|(request, _)| BatchOrder {
            order_id: request.order_id,
            strategy: KIND,
            lines: &request.lines,
            delivery: &request.delivery,
            user: request.user.as_deref(),
            idempotency_key: request.idempotency_key.as_ref().map(|key| key.as_str()),
            created_at: now,
            status: OrderStatus::Confirmed,
            reason: None,
        })
        .collect();
    if accepted.is_empty() {
        // Refusals and replays only: nothing to write, and the row locks go with the rollback.
        tx.rollback().await?;
        return Ok(Committed { verdicts, written: HashMap::new() });
    }
    let fates = tx.write(&accepted, StockTake::Checked).await?;
    let written: HashMap<Uuid, Written> = accepted.iter().map(|order| order.order_id).zip(fates).collect();
    tx.commit_or_doubt(Committed { verdicts, written }).await
}

/// Locks the batch's products and takes its purchases in order while they fit.
async fn decide(tx: &mut BatchTx<'_>, batch: &[PurchaseRequest]) -> Result<Vec<Verdict>, BatchError> {
    let products: Vec<i64> = batch
        .iter()
        .flat_map(|request| request.lines.iter().map(|line| line.product_id.get()))
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .collect();
    let mut shelves: HashMap<i64, Shelf> =
        tx.lock_products(&products).await?.into_iter().map(|shelf| (shelf.id, shelf)).collect();
    let keys: Vec<&str> =
        batch.iter().filter_map(|request| request.idempotency_key.as_ref().map(|key| key.as_str())).collect();
    let mut replays: HashMap<String, Receipt> = HashMap::new();
    if !keys.is_empty() {
        for row in tx.receipts_by_key(&keys).await? {
            let receipt =
                row.receipt().map_err(|err| BatchError { transient: false, message: err.to_string() })?;
            replays.insert(row.idempotency_key, receipt);
        }
    }
    let mut keys_seen: HashSet<&str> = HashSet::new();
    Ok(batch
        .iter()
        .map(|request| {
            if let Some(key) = &request.idempotency_key {
                if let Some(first) = replays.get(key.as_str()) {
                    return Verdict::Replay(first.clone());
                }
                if !keys_seen.insert(key.as_str()) {
                    return Verdict::SameKey;
                }
            }
            take_if_it_fits(&mut shelves, request)
        })
        .collect())
}

/// Takes every line of `request` off `shelves`, or none: the first line that does not fit names
/// the refusal, as `sql-atomic` does.
fn take_if_it_fits(shelves: &mut HashMap<i64, Shelf>, request: &PurchaseRequest) -> Verdict {
    for line in &request.lines {
        let product = line.product_id;
        let Some(shelf) = shelves.get(&product.get()) else {
            return Verdict::Refuse(PurchaseOutcome::UnknownProduct(product));
        };
        if let Some(other @ (Gate::Redis | Gate::Units)) = crate::gates::parse_gate(shelf.gate.as_deref()) {
            return Verdict::Refuse(PurchaseOutcome::GateConflict { product, gate: other });
        }
        if shelf.stock < i64::from(line.quantity.get()) {
            return Verdict::Refuse(PurchaseOutcome::SoldOut(product));
        }
    }
    for line in &request.lines {
        if let Some(shelf) = shelves.get_mut(&line.product_id.get()) {
            shelf.stock -= i64::from(line.quantity.get());
        }
    }
    Verdict::Take
}

impl KeyedReceipt {
    fn receipt(&self) -> Result<Receipt, StrategyError> {
        let status = OrderStatus::from_db(&self.status).ok_or_else(|| {
            StrategyError::Internal(format!("order {} has status {:?}", self.id, self.status))
        })?;
        let strategy = self.strategy.parse().map_err(|_| {
            StrategyError::Internal(format!("order {} names strategy {:?}", self.id, self.strategy))
        })?;
        Ok(Receipt { order_id: self.id, status, strategy })
    }
}
