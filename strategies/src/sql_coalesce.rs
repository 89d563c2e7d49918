//! `sql-coalesce` — application-level group commit: purchases join a batch, and one PostgreSQL
//! transaction sells the whole batch.
//!
//! Guarantee: never oversells, and answers nobody before the commit. One transaction per batch:
//! 1. Without any lock, it reads the batch's products and refuses what their committed stock
//!    already refuses (a line larger than what is left; stock only shrinks until a reset), and
//!    answers replayed idempotency keys.
//! 2. It inserts every other order in one multi-row statement (`order_store::insert_batch`).
//! 3. It locks the products (`SELECT … FOR UPDATE`, in product-id order, the order every writer
//!    locks rows in) and, first come first served, keeps each written order whose every line
//!    still fits (multi-item orders stay all-or-nothing); the others are deleted again and
//!    refused.
//! 4. It takes the kept units with a decrement that checks the stock again
//!    (`order_store::take_stock` with `StockTake::Checked`) and commits.
//!
//! Refusals read as in `sql-atomic`: 404 for an unknown product, 409 `inventory_gate_conflict`
//! for one the Redis gate or a unit pool sells, 409 sold out otherwise; a sale claims
//! `products.gate = 'postgres'`.
//!
//! Crash behaviour: before COMMIT, PostgreSQL rolls the whole batch back; after it, every accepted
//! order and its units are there. The server holds nothing of its own: the queue into the batcher
//! lives in memory, and its purchases were answered nothing yet. A batch that fails before COMMIT
//! answers every buyer in it 503 and leaves nothing behind. A COMMIT whose reply was lost is
//! settled by voiding every order id of the batch ([`crate::fence::settle_all`]): each buyer hears
//! 201 if the batch committed, 503 if not.
//!
//! Why this shape: every safe SQL strategy holds the hot row's lock from its UPDATE to the end of
//! its COMMIT, so one row sells one order per commit. Here one commit (one fsync, one lock window)
//! sells a whole batch. The batcher ([`crate::coalescer`]) has no timer: a lone purchase commits at
//! once, and under load the next batch gathers while the current ones commit, so batches grow
//! with the load up to `Tuning::coalesce_max_batch`. Two batches run at once: the inserts (the
//! slow part) come before the locks, so the next batch writes its orders while the previous one
//! holds the locks and commits, and the lock window holds only the decision, the decrement and
//! the commit. Each batch takes its place for the inserts and for the locks in the order batches
//! formed (`coalescer::Turns`), so purchases are served in arrival order across batches too, and
//! an earlier batch never waits in PostgreSQL on an idempotency key a later one inserted. One
//! batcher serves every product; a batch that mixes products locks each of them once.
//!
//! A batch can stall only when another process (a replica, or `sql-atomic`) inserts the same
//! idempotency key while holding the hot row's lock, as this batch waits for that lock behind an
//! earlier one: [`BATCH_DEADLINE`](crate::order_store) then gives the batch up, settles its order
//! ids and answers 503.
//!
//! The batcher starts on the first purchase and belongs to this strategy. A graceful shutdown
//! ([`Strategy::shutdown`], once the server stops taking requests) closes its queue and waits
//! while it commits and answers every purchase already queued.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use sqlx::{Acquire, FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::coalescer::{Answer, BatchSizeSummary, CoalescerSettings, LazyBatcher, Refused, Turn, Turns};
use crate::error::StrategyError;
use crate::fence::{self, Doubt};
use crate::kind::{Gate, StrategyKind};
use crate::order::{OrderStatus, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::{
    Abandoned, BatchError, BatchFailure, BatchOrder, StockTake, Written, commit_or_doubt, insert_batch,
    receipt_for_key, settle_batch, take_stock, within_deadline,
};
use crate::plan::StockPlan;
use crate::strategy::Strategy;

const KIND: StrategyKind = StrategyKind::SqlCoalesce;

/// Batches in flight at once: the next one writes its orders while the previous one holds the
/// row locks and commits. More would only queue on the same locks.
const IN_FLIGHT: usize = 2;

const LOCK_PRODUCTS: &str = "SELECT id, stock, gate FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE";

const READ_PRODUCTS: &str = "SELECT id, stock, gate FROM products WHERE id = ANY($1)";

/// Takes back orders written before the locks showed their units were gone; their lines go with
/// them (`ON DELETE CASCADE`).
const UNDO_ORDERS: &str = "DELETE FROM orders WHERE id = ANY($1)";

const RECEIPTS_BY_KEY: &str = "SELECT idempotency_key, id, status, strategy FROM orders \
                               WHERE idempotency_key = ANY($1) AND status <> 'void'";

type Reply = Result<PurchaseOutcome, StrategyError>;

/// The group-commit strategy.
#[derive(Debug)]
pub struct SqlCoalesce {
    pg: PgPool,
    batcher: LazyBatcher<PurchaseRequest, Reply>,
}

impl SqlCoalesce {
    /// A strategy whose batches hold at most `max_batch` purchases. Its batcher starts on the
    /// first purchase.
    pub fn new(pg: PgPool, max_batch: usize) -> Self {
        Self {
            pg,
            batcher: LazyBatcher::new(CoalescerSettings {
                in_flight: IN_FLIGHT,
                ..CoalescerSettings::for_batch_cap(max_batch)
            }),
        }
    }
}

#[async_trait]
impl Strategy for SqlCoalesce {
    fn kind(&self) -> StrategyKind {
        KIND
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        let batcher = self.batcher.running(|| {
            let pg = self.pg.clone();
            let lines = TurnLines::default();
            move |batch| {
                let (pg, turns) = (pg.clone(), lines.next());
                async move { commit_batch(&pg, batch, turns).await }
            }
        });
        match batcher.submit(request.clone()).await {
            Ok(Answer::Done(reply)) => reply,
            Ok(Answer::Lost) => settle_lost(&self.pg, request.order_id).await,
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
async fn settle_lost(pg: &PgPool, id: Uuid) -> Reply {
    match fence::settle(pg, KIND, id, "batch_lost").await {
        Ok(Doubt::Committed) => Ok(PurchaseOutcome::Placed(Receipt::confirmed(id, KIND))),
        Ok(Doubt::Void) => Err(StrategyError::Internal("the batch holding this purchase failed".into())),
        Err(asked) => Err(StrategyError::InDoubt(format!(
            "order {id}: its batch failed and PostgreSQL could not be asked whether it committed ({asked})"
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
async fn commit_batch(pg: &PgPool, batch: Vec<PurchaseRequest>, turns: BatchTurns) -> Vec<Reply> {
    let ids = batch.iter().map(|request| request.order_id);
    within_deadline(pg, KIND, ids, sell(pg, &batch, turns), |id, fate| match fate {
        Abandoned::Committed => Ok(PurchaseOutcome::Placed(Receipt::confirmed(id, KIND))),
        Abandoned::NotCommitted(detail) => Err(StrategyError::Unavailable(detail)),
        Abandoned::Unknown(detail) => Err(StrategyError::InDoubt(detail)),
    })
    .await
}

/// The batch's transaction, from taking a connection to answering after COMMIT.
async fn sell(pg: &PgPool, batch: &[PurchaseRequest], turns: BatchTurns) -> Vec<Reply> {
    // A connection that cannot be had sent nothing: that failure is certain.
    let mut conn = match pg.acquire().await {
        Ok(conn) => conn,
        Err(err) => return fail_all(batch, &BatchError::from(err)),
    };
    let attempt = write(&mut conn, batch, turns).await;
    drop(conn);
    match attempt {
        Ok(Committed { verdicts, written }) => answer(pg, batch, verdicts, &written).await,
        // COMMIT was never sent, or PostgreSQL answered it with an error: nothing was committed.
        Err(Failure::NotCommitted(err)) => fail_all(batch, &err),
        Err(Failure::CommitInDoubt(Committed { verdicts, written }, err)) => {
            settle_commit(pg, batch, verdicts, written, &err).await
        }
    }
}

/// A COMMIT whose reply was lost: the batch is one transaction, so its inserted orders all
/// committed or none did. Voiding their ids settles which, for good.
async fn settle_commit(
    pg: &PgPool,
    batch: &[PurchaseRequest],
    verdicts: Vec<Verdict>,
    written: HashMap<Uuid, Written>,
    err: &BatchError,
) -> Vec<Reply> {
    let inserted: Vec<Uuid> =
        written.iter().filter(|(_, fate)| **fate == Written::Inserted).map(|(id, _)| *id).collect();
    match settle_batch(pg, KIND, &inserted, "commit_in_doubt").await {
        Some(settled) if settled.values().any(|doubt| *doubt == Doubt::Committed) => {
            tracing::warn!(%err, orders = inserted.len(), "a batch whose COMMIT reply was lost had committed");
            answer(pg, batch, verdicts, &written).await
        }
        Some(_) => fail_all(batch, err),
        None => batch
            .iter()
            .zip(verdicts)
            .map(|(request, verdict)| {
                Err(match verdict {
                    Verdict::Take => StrategyError::InDoubt(format!(
                        "order {}: the batch's COMMIT failed ({err}) and PostgreSQL could not be asked whether it committed",
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
/// right move whatever PostgreSQL said.
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
    pg: &PgPool,
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
                Some(Written::KeyTaken) | None => replay_by_key(pg, request).await,
            },
            Verdict::SameKey => replay_by_key(pg, request).await,
        });
    }
    replies
}

/// A purchase whose key another order holds hears that order; without one it may retry.
async fn replay_by_key(pg: &PgPool, request: &PurchaseRequest) -> Reply {
    match receipt_for_key(pg, request).await? {
        Some(first) => Ok(PurchaseOutcome::Replayed(first)),
        None => Err(StrategyError::Unavailable(
            "another purchase of this batch held the same order id or idempotency key and placed nothing; retry"
                .into(),
        )),
    }
}

/// Where each batch's turns come from: one line for the inserts, one for the row locks.
#[derive(Default)]
struct TurnLines {
    insert: Turns,
    lock: Turns,
}

/// One batch's places in both lines, handed out where batches are formed (in arrival order).
struct BatchTurns {
    insert: Turn,
    lock: Turn,
}

impl TurnLines {
    fn next(&self) -> BatchTurns {
        BatchTurns { insert: self.insert.ticket(), lock: self.lock.ticket() }
    }
}

/// A batch written and committed.
struct Committed {
    verdicts: Vec<Verdict>,
    written: HashMap<Uuid, Written>,
}

type Failure = BatchFailure<Committed>;

/// Decides, writes and commits the batch on `conn`. The slow part (the inserts) runs before the
/// batch takes its row locks, so it overlaps the previous batch's commit; the locks are taken in
/// `turn` order, so purchases are served first come, first served across batches too.
///
/// # Errors
/// [`Failure`]: certain when COMMIT was not sent or PostgreSQL refused it, in doubt otherwise.
async fn write(
    conn: &mut PgConnection,
    batch: &[PurchaseRequest],
    turns: BatchTurns,
) -> Result<Committed, Failure> {
    let BatchTurns { mut insert, mut lock } = turns;
    let mut tx = conn.begin().await?;
    let mut verdicts = screen(&mut tx, batch).await?;
    let now = chrono::Utc::now();
    let candidates: Vec<BatchOrder<'_>> = batch
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
    if candidates.is_empty() {
        // Refusals and replays only: nothing to write, nothing locked.
        tx.rollback().await?;
        return Ok(Committed { verdicts, written: HashMap::new() });
    }
    // Inserts go in batch order too: an earlier batch never waits in PostgreSQL on a key a later
    // one inserted while the later one waits for the earlier one's turn at the lock.
    insert.wait().await;
    let fates = insert_batch(&mut tx, &candidates, StockTake::Checked).await?.fates;
    insert.pass();
    let written: HashMap<Uuid, Written> = candidates.iter().map(|order| order.order_id).zip(fates).collect();

    lock.wait().await;
    let mut shelves = lock_products(&mut tx, batch, &written).await?;
    lock.pass();
    // Under the locks, first come first served: each written order keeps its units if they still
    // fit, else it is taken back out and refused as `sql-atomic` would.
    let (mut units, mut undone) = (BTreeMap::new(), Vec::new());
    for (request, verdict) in batch.iter().zip(verdicts.iter_mut()) {
        if !matches!(verdict, Verdict::Take) || written.get(&request.order_id) != Some(&Written::Inserted) {
            continue;
        }
        match take_if_it_fits(&mut shelves, request) {
            Verdict::Take => {
                for line in &request.lines {
                    *units.entry(line.product_id.get()).or_insert(0) += i64::from(line.quantity.get());
                }
            }
            refused => {
                undone.push(request.order_id);
                *verdict = refused;
            }
        }
    }
    if !undone.is_empty() {
        sqlx::query(UNDO_ORDERS).bind(&undone).execute(&mut *tx).await?;
    }
    take_stock(&mut tx, &units, StockTake::Checked).await?;
    commit_or_doubt(tx, Committed { verdicts, written }).await
}

/// Locks the products of the batch's written orders, in product-id order.
async fn lock_products(
    conn: &mut PgConnection,
    batch: &[PurchaseRequest],
    written: &HashMap<Uuid, Written>,
) -> Result<HashMap<i64, Shelf>, BatchError> {
    let products: Vec<i64> = batch
        .iter()
        .filter(|request| written.get(&request.order_id) == Some(&Written::Inserted))
        .flat_map(|request| request.lines.iter().map(|line| line.product_id.get()))
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .collect();
    Ok(shelves(sqlx::query_as::<_, Shelf>(LOCK_PRODUCTS).bind(&products).fetch_all(&mut *conn).await?))
}

fn shelves(rows: Vec<Shelf>) -> HashMap<i64, Shelf> {
    rows.into_iter().map(|shelf| (shelf.id, shelf)).collect()
}

/// Without any lock: answers the replays, and refuses what the committed stock already refuses
/// (a line larger than what is left cannot fit later: stock only shrinks until a reset). Every
/// other purchase is a candidate, decided under the row locks once written.
async fn screen(conn: &mut PgConnection, batch: &[PurchaseRequest]) -> Result<Vec<Verdict>, BatchError> {
    let products: Vec<i64> = batch
        .iter()
        .flat_map(|request| request.lines.iter().map(|line| line.product_id.get()))
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .collect();
    let shelves =
        shelves(sqlx::query_as::<_, Shelf>(READ_PRODUCTS).bind(&products).fetch_all(&mut *conn).await?);
    let keys: Vec<&str> =
        batch.iter().filter_map(|request| request.idempotency_key.as_ref().map(|key| key.as_str())).collect();
    let mut replays: HashMap<String, Receipt> = HashMap::new();
    if !keys.is_empty() {
        let rows: Vec<KeyedReceipt> =
            sqlx::query_as(RECEIPTS_BY_KEY).bind(&keys).fetch_all(&mut *conn).await?;
        for row in rows {
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
            // Each purchase against the committed stock alone: two that fit one at a time but not
            // together are both written, and the locks decide between them.
            refusal(&shelves, request).map_or(Verdict::Take, Verdict::Refuse)
        })
        .collect())
}

/// Why `request` cannot be sold from `shelves`, if it cannot: the first line that does not fit
/// names the refusal, as `sql-atomic` does.
fn refusal(shelves: &HashMap<i64, Shelf>, request: &PurchaseRequest) -> Option<PurchaseOutcome> {
    request.lines.iter().find_map(|line| {
        let product = line.product_id;
        let Some(shelf) = shelves.get(&product.get()) else {
            return Some(PurchaseOutcome::UnknownProduct(product));
        };
        if let Some(other @ (Gate::Redis | Gate::Units)) = crate::gates::parse_gate(shelf.gate.as_deref()) {
            return Some(PurchaseOutcome::GateConflict { product, gate: other });
        }
        (shelf.stock < i64::from(line.quantity.get())).then_some(PurchaseOutcome::SoldOut(product))
    })
}

/// Takes every line of `request` off `shelves`, or none.
fn take_if_it_fits(shelves: &mut HashMap<i64, Shelf>, request: &PurchaseRequest) -> Verdict {
    if let Some(refused) = refusal(shelves, request) {
        return Verdict::Refuse(refused);
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
