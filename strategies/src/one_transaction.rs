//! The purchase every strategy that sells in one PostgreSQL transaction on one pooled connection
//! shares (`sql-atomic`, `sql-skip-locked`, `sql-optimistic`): replay a known key, take a
//! connection, sell, and settle what a failure leaves — a taken key replays the order holding it,
//! and a write whose outcome is in doubt is fenced by its order id ([`crate::fence`]). The sale
//! runs on the connection of whichever driver `PG_DRIVER` picked ([`crate::pg_driver`]); replays
//! and fences stay on sqlx's pool of the same database (PostgreSQL or MySQL).

use async_trait::async_trait;

use crate::error::StrategyError;
use crate::fence::{self, Failed};
use crate::kind::StrategyKind;
use crate::order::{PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::{receipt_on, replay_on};
use crate::pg_driver::{Conn, DbError, PurchasePool, SqlPool};

/// How one strategy sells a request on a connection, all or nothing.
#[async_trait]
pub(crate) trait SellsOnOneConnection: Send + Sync {
    /// Sells `request` on `conn` in one transaction (or one statement). A raw database error is
    /// returned as is, for [`purchase`] to settle.
    async fn sell_on(&self, conn: &mut Conn, request: &PurchaseRequest) -> Result<PurchaseOutcome, DbError>;
}

/// Sells `request` through `seller` as strategy `kind`, on a connection of `purchases`.
///
/// # Errors
/// [`StrategyError::Unavailable`] when no connection could be had (nothing was sent) or the write
/// certainly did not commit; [`StrategyError::InDoubt`] when PostgreSQL cannot be asked whether it
/// did.
pub(crate) async fn purchase(
    seller: &(impl SellsOnOneConnection + ?Sized),
    purchases: &PurchasePool,
    books: &SqlPool,
    kind: StrategyKind,
    request: &PurchaseRequest,
) -> Result<PurchaseOutcome, StrategyError> {
    if let Some(first) = receipt_on(books, request).await? {
        return Ok(PurchaseOutcome::Replayed(first));
    }
    // A connection that cannot be had sent nothing: that failure is certain, unlike one after.
    let mut conn = purchases.acquire().await?;
    let attempt = seller.sell_on(&mut conn, request).await;
    drop(conn);
    match attempt {
        Ok(outcome) => Ok(outcome),
        Err(err) if err.is_duplicate_key() => Ok(PurchaseOutcome::Replayed(replay_on(books, request).await?)),
        Err(err) => match fence::after_failed_write(books, kind, request.order_id, err).await? {
            Failed::Committed => Ok(PurchaseOutcome::Placed(Receipt::confirmed(request.order_id, kind))),
            Failed::NotCommitted(err) => Err(err),
        },
    }
}
