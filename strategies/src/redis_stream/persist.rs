//! Writing a batch of queued orders to the SQL books in one transaction, through the shared batch
//! writer ([`crate::order_store::write_batch_on`], on either dialect): the orders, their lines,
//! and the decrement of the books' stock for the confirmed ones. The insert is idempotent and only orders this
//! transaction inserted move the stock, so a redelivered entry — its first commit landed, its
//! acknowledgement did not — writes nothing twice.

use super::QueuedOrder;
use crate::order::OrderStatus;
pub(crate) use crate::order_store::Written;
use crate::order_store::{BatchError, BatchOrder, StockTake, write_batch_on};
use crate::pg_driver::SqlPool;

/// One order to write, and how.
#[derive(Debug)]
pub(crate) struct ToWrite<'a> {
    pub(crate) order: &'a QueuedOrder,
    pub(crate) status: OrderStatus,
    pub(crate) reason: Option<&'static str>,
}

impl ToWrite<'_> {
    fn batch_order(&self) -> BatchOrder<'_> {
        let order = self.order;
        BatchOrder {
            order_id: order.order_id,
            strategy: order.strategy,
            lines: &order.lines,
            delivery: &order.delivery,
            user: order.user.as_deref(),
            idempotency_key: order.idempotency_key.as_deref(),
            created_at: order.created_at,
            status: self.status,
            reason: self.reason,
        }
    }
}

/// Writes `orders` in one transaction and says what became of each, in order.
///
/// # Errors
/// The batch's error; nothing is committed then.
pub(crate) async fn write(books: &SqlPool, orders: &[ToWrite<'_>]) -> Result<Vec<Written>, BatchError> {
    let batch: Vec<BatchOrder<'_>> = orders.iter().map(ToWrite::batch_order).collect();
    write_batch_on(books, &batch, StockTake::Decided).await
}
