//! The one trait every purchase strategy implements, and the ledger it hands the audit.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

use crate::coalescer::BatchSizeSummary;
use crate::error::StrategyError;
use crate::kind::{Guarantees, StrategyKind};
use crate::order::{OrderStatus, OrderView, PurchaseOutcome, PurchaseRequest};
use crate::plan::StockPlan;

/// A way of selling stock. Implementations hold only the mechanism; timing, metrics and HTTP live
/// in layers around them.
#[async_trait]
pub trait Strategy: Send + Sync + fmt::Debug {
    /// Which strategy this is.
    fn kind(&self) -> StrategyKind;

    /// What it promises; by default what its kind declares.
    fn guarantees(&self) -> Guarantees {
        self.kind().spec()
    }

    /// Sells the whole order or nothing.
    ///
    /// # Errors
    /// [`StrategyError::Unavailable`] when a backend does not answer in time; nothing the client was
    /// told about is committed then, though a write may still land (the audit calls it phantom).
    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError>;

    /// Takes a new stock plan after PostgreSQL was reset; strategies keeping their own copy of the
    /// stock reload it here.
    async fn prepare(&self, _plan: &StockPlan) -> Result<(), StrategyError> {
        Ok(())
    }

    /// Stock and orders this strategy keeps outside PostgreSQL, for the audit. `None` when
    /// PostgreSQL holds everything.
    async fn own_ledger(&self) -> Result<Option<OwnLedger>, StrategyError> {
        Ok(None)
    }

    /// Orders accepted and not yet settled, for strategies that queue. `None` for the others.
    async fn backlog(&self) -> Result<Option<Backlog>, StrategyError> {
        Ok(None)
    }

    /// At a reset, once PostgreSQL and the Redis prefix were cleared: drops what the strategy
    /// queues elsewhere (a broker's stream), so no order of the old plan reaches the new books.
    async fn discard_queue(&self) -> Result<(), StrategyError> {
        Ok(())
    }

    /// An order this strategy keeps outside PostgreSQL.
    async fn own_order(&self, _id: Uuid) -> Result<Option<OrderView>, StrategyError> {
        Ok(None)
    }

    /// Stops the strategy's own background work once no purchase will come any more, after
    /// finishing what it took (the batcher answers what was queued). Most have none.
    async fn shutdown(&self) {}

    /// How many purchases each of its commits carried, for strategies that commit many at once.
    /// `None` for the others.
    fn batch_sizes(&self) -> Option<BatchSizeSummary> {
        None
    }

    /// Every order this strategy keeps outside PostgreSQL, for the load generator's join of what
    /// clients were told with what is held.
    async fn own_orders(&self) -> Result<Vec<OrderEntry>, StrategyError> {
        Ok(Vec::new())
    }
}

/// One order as the load generator's audit sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OrderEntry {
    pub order_id: Uuid,
    pub strategy: StrategyKind,
    pub status: OrderStatus,
}

/// Raw books of one product, before the audit derives anomalies from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProductLedger {
    pub product_id: i64,
    pub initial_stock: i64,
    pub final_stock: i64,
    /// Units in pending or confirmed orders.
    pub units_in_orders: i64,
    /// Pending or confirmed orders holding this product.
    pub orders: i64,
    /// Orders holding this product beyond the first for their idempotency key.
    pub duplicated: i64,
}

/// Books a strategy keeps outside PostgreSQL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OwnLedger {
    pub products: Vec<ProductLedger>,
    /// Live orders, each counted once.
    pub orders: i64,
    /// Orders beyond the first for their idempotency key.
    pub duplicated: i64,
}

/// What a queueing strategy still owes: accepted orders not yet persisted, and orders given up on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// Accepted (202) and not yet written to PostgreSQL.
    pub pending: i64,
    /// Units those orders hold.
    pub pending_units: i64,
    /// Messages the queue (Redis stream or broker) still holds: orders not yet persisted and
    /// acknowledged. Zero once the queue is drained.
    pub in_queue: i64,
    /// Moved to the dead-letter stream after failing too often; their stock was released.
    pub dead_lettered: i64,
}
