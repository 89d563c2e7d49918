//! `redis-orderlog` — the atomic Lua reservation of `redis-lua`, then an insert-only group commit:
//! reserved purchases join a batch, and one transaction writes the batch's orders, their lines and
//! one `stock_unapplied` row per line (`order_store::write_batch` with `StockTake::Logged`),
//! before each buyer hears 201. PostgreSQL's `products.stock` follows through the stock sync
//! ([`crate::stock_sync`]), which applies committed orders per product in one transaction per
//! interval.
//!
//! Guarantee: never oversells while Redis keeps its data. The script checks and takes every line
//! atomically against the mirror, and the mirror never stands above what is left to sell:
//! it is loaded from PostgreSQL at reset, and rebuilt ([`crate::reservation::recover`]) or
//! rewritten (the sweeper's resync) from PostgreSQL's stock *minus the units awaiting sync* minus
//! the holds PostgreSQL does not have yet. Durable: 201 only after the batch holding the order
//! committed. The products it sells belong to the Redis gate (`crate::gates`), so no SQL
//! strategy takes the same units from the stock row.
//!
//! Unlike `redis-lua`, the commit does not re-check PostgreSQL's stock (there is no row update to
//! hang the condition on). If Redis loses its data while purchases are between their reservation
//! and their commit, the rebuilt mirror cannot know them, and those purchases can sell units twice;
//! the stock sync then drives the stock row below zero and the audit reports `negative_stock` and
//! `oversold`. `redis-lua` refuses such a sale at commit time instead.
//!
//! Crash behaviour: as `redis-lua` for the reservation (tied to the order id, settled or voided by
//! the sweeper after its deadline). A batch that fails before `COMMIT` gives every reservation of
//! it back and answers 503; a `COMMIT` whose reply was lost is settled by voiding the batch's order
//! ids ([`crate::fence::settle_all`]) before anything is given back. A crash after the commit and
//! before the sync leaves `stock_unapplied` rows; the next sync of any process applies them, and
//! until then the audit counts them as awaiting sync. The batcher's queue lives in memory: a
//! crash loses queued purchases that nobody was answered for, and their reservations end with the
//! sweeper.
//!
//! Why this shape: the hot product row is what caps every strategy that updates it per sale (its
//! lock is held across the commit's fsync). Redis already decided who gets a unit, so the database
//! only has to append orders, and appends batch without any lock between them: one commit (one
//! fsync) writes every order reserved while the previous commit was in flight. Per sale this waits
//! for two Lua scripts (reserve, settle) and its share of one insert-only commit. The batcher
//! ([`crate::coalescer`]) has no timer, as in `sql-coalesce`.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::backends::RedisBackend;
use crate::coalescer::{Answer, BatchSizeSummary, LazyBatcher, Refused};
use crate::error::StrategyError;
use crate::fence::{self, Doubt};
use crate::kind::StrategyKind;
use crate::order::{OrderStatus, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::{
    Abandoned, BatchConn, BatchError, BatchFailure, BatchOrder, StockTake, Written, receipt_on,
    settle_batch_on, within_deadline_on,
};
use crate::pg_driver::SqlPool;
use crate::plan::StockPlan;
use crate::redis_lua::RedisLua;
use crate::redis_persist::end;
use crate::reservation::End;
use crate::strategy::Strategy;

const KIND: StrategyKind = StrategyKind::RedisOrderlog;

/// What the batch did with one reserved purchase. The buyer's own task ends the reservation
/// accordingly, so the batcher never waits on Redis.
#[derive(Debug, Clone)]
enum Logged {
    /// The order is committed: settle the reservation, answer 201.
    Placed,
    /// The batch committed without this order: its idempotency key names another order, or the
    /// sweeper voided its id after the reservation's deadline. Nothing of it was written.
    NotWritten,
    /// Nothing of the batch was committed: give the units back, answer 503.
    Failed(BatchError),
    /// Whether the order committed is unknown: the reservation stays for the sweeper.
    InDoubt(String),
}

/// The Redis-gated, insert-only, group-committing strategy.
#[derive(Debug)]
pub struct RedisOrderlog {
    reserving: RedisLua,
    books: SqlPool,
    redis: RedisBackend,
    batcher: LazyBatcher<PurchaseRequest, Logged>,
}

impl RedisOrderlog {
    /// A strategy whose commits carry at most `max_batch` orders. Its batcher starts on the first
    /// reserved purchase.
    pub fn new(
        books: impl Into<SqlPool>,
        redis: RedisBackend,
        reservation_ttl: Duration,
        max_batch: usize,
    ) -> Self {
        let books = books.into();
        Self {
            reserving: RedisLua::reserving_for(books.clone(), redis.clone(), reservation_ttl, KIND),
            books,
            redis,
            batcher: LazyBatcher::new(max_batch),
        }
    }

    /// Ends the reservation as the batch decided and answers the buyer.
    async fn answer(
        &self,
        request: &PurchaseRequest,
        logged: Logged,
    ) -> Result<PurchaseOutcome, StrategyError> {
        match logged {
            Logged::Placed => {
                end(&self.books, &self.redis, request, End::Settle).await;
                Ok(PurchaseOutcome::Placed(Receipt::confirmed(request.order_id, KIND)))
            }
            Logged::NotWritten => {
                // Ending a reservation the sweeper already ended does nothing.
                end(&self.books, &self.redis, request, End::Release).await;
                match receipt_on(&self.books, request).await? {
                    Some(first) => Ok(PurchaseOutcome::Replayed(first)),
                    None => Err(StrategyError::Unavailable(
                        "the reservation expired before the order could be written; nothing was sold".into(),
                    )),
                }
            }
            Logged::Failed(err) => {
                end(&self.books, &self.redis, request, End::Release).await;
                Err(StrategyError::Unavailable(format!("the batch failed and was rolled back: {err}")))
            }
            Logged::InDoubt(detail) => Err(StrategyError::InDoubt(detail)),
        }
    }

    /// The batch step died without answering (a panic): the order id settles whether it committed.
    async fn settle_lost(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        let id = request.order_id;
        match fence::settle_on(&self.books, KIND, id, "batch_lost").await {
            Ok(Doubt::Committed) => self.answer(request, Logged::Placed).await,
            Ok(Doubt::Void) => {
                end(&self.books, &self.redis, request, End::Release).await;
                Err(StrategyError::Internal("the batch holding this purchase failed".into()))
            }
            Err(asked) => Err(StrategyError::InDoubt(format!(
                "order {id}: its batch failed and the database could not be asked whether it committed ({asked})"
            ))),
        }
    }
}

#[async_trait]
impl Strategy for RedisOrderlog {
    fn kind(&self) -> StrategyKind {
        KIND
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        if let Some(refusal) = self.reserving.reserve(request).await? {
            return Ok(refusal);
        }
        let batcher = self.batcher.running(|| {
            let books = self.books.clone();
            move |batch| {
                let books = books.clone();
                async move { log_batch(&books, batch).await }
            }
        });
        match batcher.submit(request.clone()).await {
            Ok(Answer::Done(logged)) => self.answer(request, logged).await,
            Ok(Answer::Lost) => self.settle_lost(request).await,
            Err(refused) => {
                end(&self.books, &self.redis, request, End::Release).await;
                Err(StrategyError::Unavailable(match refused {
                    Refused::Full => "redis-orderlog: too many purchases waiting for a batch".into(),
                    Refused::Closed => "redis-orderlog: the batcher has stopped".into(),
                }))
            }
        }
    }

    async fn prepare(&self, plan: &StockPlan) -> Result<(), StrategyError> {
        self.batcher.reset_sizes();
        self.reserving.prepare(plan).await
    }

    fn batch_sizes(&self) -> Option<BatchSizeSummary> {
        Some(self.batcher.sizes())
    }

    async fn shutdown(&self) {
        self.batcher.shutdown().await;
    }
}

/// Commits `batch`'s orders in one insert-only transaction and says what became of each, in order.
async fn log_batch(books: &SqlPool, batch: Vec<PurchaseRequest>) -> Vec<Logged> {
    let ids = batch.iter().map(|request| request.order_id);
    within_deadline_on(books, KIND, ids, write_and_settle(books, &batch), |_, fate| match fate {
        Abandoned::Committed => Logged::Placed,
        Abandoned::NotCommitted(detail) => Logged::Failed(BatchError { transient: true, message: detail }),
        Abandoned::Unknown(detail) => Logged::InDoubt(detail),
    })
    .await
}

async fn write_and_settle(books: &SqlPool, batch: &[PurchaseRequest]) -> Vec<Logged> {
    // A connection that cannot be had sent nothing: that failure is certain.
    let mut conn = match BatchConn::acquire(books).await {
        Ok(conn) => conn,
        Err(err) => return vec![Logged::Failed(err); batch.len()],
    };
    let attempt = write(&mut conn, batch).await;
    drop(conn);
    match attempt {
        Ok(fates) => fates.into_iter().map(placed_or_not).collect(),
        Err(BatchFailure::NotCommitted(err)) => {
            if !err.transient {
                tracing::error!(%err, batch = batch.len(), "an order batch failed and was rolled back");
            }
            vec![Logged::Failed(err); batch.len()]
        }
        Err(BatchFailure::CommitInDoubt(fates, err)) => {
            // One transaction: the orders it inserted all committed or none did.
            let inserted: Vec<Uuid> = batch
                .iter()
                .zip(&fates)
                .filter(|(_, fate)| **fate == Written::Inserted)
                .map(|(request, _)| request.order_id)
                .collect();
            match settle_batch_on(books, KIND, &inserted, "commit_in_doubt").await {
                Some(doubts) if doubts.values().any(|doubt| *doubt == Doubt::Committed) => {
                    tracing::warn!(%err, orders = inserted.len(), "an order batch whose COMMIT reply was lost had committed");
                    fates.into_iter().map(placed_or_not).collect()
                }
                Some(_) => vec![Logged::Failed(err); batch.len()],
                None => vec![
                    Logged::InDoubt(format!(
                        "the batch's COMMIT failed ({err}) and the database could not be asked whether it committed"
                    ));
                    batch.len()
                ],
            }
        }
    }
}

fn placed_or_not(fate: Written) -> Logged {
    match fate {
        Written::Inserted | Written::AlreadyThere => Logged::Placed,
        Written::KeyTaken => Logged::NotWritten,
    }
}

/// Writes and commits the batch on `conn`.
///
/// # Errors
/// [`BatchFailure`]: certain when `COMMIT` was not sent or PostgreSQL refused it, in doubt
/// otherwise.
async fn write(
    conn: &mut BatchConn,
    batch: &[PurchaseRequest],
) -> Result<Vec<Written>, BatchFailure<Vec<Written>>> {
    let mut tx = conn.begin().await?;
    let now = chrono::Utc::now();
    let orders: Vec<BatchOrder<'_>> = batch
        .iter()
        .map(|request| BatchOrder {
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
    let fates = tx.write(&orders, StockTake::Logged).await?;
    tx.commit_or_doubt(fates).await
}
