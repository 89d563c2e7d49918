//! Persisting an order whose units Redis already reserved: the order, its lines and the same
//! decrement of the books' stock (PostgreSQL's or MariaDB's), in one transaction, then the
//! reservation's end in Redis.
//! (`redis-orderlog` group-commits its orders insert-only instead: [`crate::redis_orderlog`].)
//!
//! The books stay the authority: their decrement is conditional (`stock >= quantity`), so a
//! mirror that stands above the books (rebuilt after Redis lost purchases in flight, or left
//! behind by an unsafe strategy) can never make a Redis strategy confirm units the books do not
//! have. When the condition fails, the reservation goes back, the product is marked for a resync
//! and the buyer hears sold out.

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::fence::{self, Failed};
use crate::kind::StrategyKind;
use crate::order::{OrderStatus, ProductId, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::order_store::{insert_order_as, replay_on};
use crate::pg_driver::{Conn, DbError, SqlPool, Statements};
use crate::reservation::{self, End};

/// What the transaction did.
enum Written {
    Placed,
    /// The books' stock of this product does not cover the line: rolled back.
    Short(ProductId),
}

/// Writes `request` to the books as confirmed, moving their stock by the units Redis took, in
/// product-id order (the order every writer locks rows in).
async fn write_order(
    conn: &mut Conn,
    sql: &crate::dialect::DialectSql,
    kind: StrategyKind,
    request: &PurchaseRequest,
) -> Result<Written, DbError> {
    let mut tx = conn.begin().await?;
    for line in &request.lines {
        let taken = tx
            .execute(sql.redis.take_reserved, &[&line.product_id.get(), &i64::from(line.quantity.get())])
            .await?;
        if taken == 0 {
            tx.rollback().await?;
            return Ok(Written::Short(line.product_id));
        }
    }
    insert_order_as(&mut tx, &sql.orders, kind, OrderStatus::Confirmed, request).await?;
    tx.commit().await?;
    Ok(Written::Placed)
}

/// Persists a reserved order and ends its reservation: settled when PostgreSQL holds the order,
/// released when it certainly does not, left to the sweeper when that cannot be known now.
///
/// # Errors
/// [`StrategyError::Unavailable`] when PostgreSQL failed and the order certainly was not written
/// (the reservation is given back); [`StrategyError::InDoubt`] when it may have been.
pub(crate) async fn persist_reserved(
    books: &SqlPool,
    redis: &RedisBackend,
    kind: StrategyKind,
    request: &PurchaseRequest,
) -> Result<PurchaseOutcome, StrategyError> {
    let placed = || PurchaseOutcome::Placed(Receipt::confirmed(request.order_id, kind));
    // A connection that cannot be had sent nothing: the reservation can go back at once.
    let mut conn = match books.acquire().await {
        Ok(conn) => conn,
        Err(err) => {
            end(books, redis, request, End::Release).await;
            return Err(err.into());
        }
    };
    let written = write_order(&mut conn, books.backend().sql(), kind, request).await;
    drop(conn);
    match written {
        Ok(Written::Placed) => {
            end(books, redis, request, End::Settle).await;
            Ok(placed())
        }
        Ok(Written::Short(product)) => {
            end(books, redis, request, End::Release).await;
            tracing::warn!(%product, strategy = %kind, "Redis had units PostgreSQL does not: refused, mirror marked for resync");
            if let Err(err) = reservation::mark_for_resync(redis, product.get()).await {
                tracing::warn!(%err, %product, "could not mark a product for resync");
            }
            Ok(PurchaseOutcome::SoldOut(product))
        }
        // The sweeper voided this order after its reservation expired, and gave the units back.
        Err(err) if err.is_voided() => Err(StrategyError::Unavailable(
            "the reservation expired before the order could be written; nothing was sold".into(),
        )),
        Err(err) if err.is_duplicate_key() => {
            end(books, redis, request, End::Release).await;
            Ok(PurchaseOutcome::Replayed(replay_on(books, request).await?))
        }
        Err(err) => match fence::after_failed_write(books, kind, request.order_id, err).await? {
            Failed::Committed => {
                end(books, redis, request, End::Settle).await;
                Ok(placed())
            }
            Failed::NotCommitted(err) => {
                end(books, redis, request, End::Release).await;
                Err(err)
            }
        },
    }
}

/// Ends the request's reservation. A failure leaves it to the sweeper, which settles or releases
/// it after its deadline by asking PostgreSQL; the buyer's answer does not depend on it.
pub(crate) async fn end(books: &SqlPool, redis: &RedisBackend, request: &PurchaseRequest, how: End) {
    if let Err(err) = reservation::finish(books, redis, request.order_id, &request.lines, how).await {
        tracing::warn!(%err, order = %request.order_id, ?how, "could not end a reservation; the sweeper will");
    }
}
