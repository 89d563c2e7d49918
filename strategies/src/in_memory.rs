//! `memory` — the baseline: stock and orders in this process, behind one mutex.
//!
//! Guarantee: exact under any concurrency inside one server process (the mutex makes every
//! purchase check-and-take atomic, all-or-nothing across lines). Not durable: a crash or restart
//! forgets every order and restores the plan's stock. Several replicas would each sell the whole
//! stock.
//!
//! Why it exists: it measures what the server itself costs per request (HTTP, JSON, validation,
//! metrics) with no backend in the way, the denominator of every same-run throughput ratio. The
//! critical section is a few hash lookups and never awaits, so one mutex outruns any sharding on
//! two cores.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::order::{OrderStatus, OrderView, PurchaseOutcome, PurchaseRequest, Receipt};
use crate::plan::StockPlan;
use crate::strategy::{OrderEntry, OwnLedger, ProductLedger, Strategy};

/// The in-process baseline strategy.
#[derive(Debug, Default)]
pub struct InMemory {
    books: Mutex<Books>,
}

#[derive(Debug, Default)]
struct Books {
    plan: StockPlan,
    shelves: HashMap<i64, Shelf>,
    orders: HashMap<Uuid, OrderView>,
    by_key: HashMap<String, Uuid>,
}

#[derive(Debug, Clone, Copy)]
struct Shelf {
    initial: i64,
    stock: i64,
}

impl InMemory {
    pub fn new() -> Self {
        Self::default()
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // A panic mid-purchase leaves no half-applied state (checks run before any write), so the
        // books are still consistent after a poisoning.
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Books {
    fn shelf(&mut self, id: crate::order::ProductId) -> Option<&mut Shelf> {
        if !self.shelves.contains_key(&id.get()) {
            let initial = self.plan.stock_of(id)?;
            self.shelves.insert(id.get(), Shelf { initial, stock: initial });
        }
        self.shelves.get_mut(&id.get())
    }
}

#[async_trait]
impl Strategy for InMemory {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Memory
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, StrategyError> {
        let mut books = self.books();
        if let Some(key) = &request.idempotency_key
            && let Some(order) = books.by_key.get(key.as_str()).and_then(|id| books.orders.get(id))
        {
            return Ok(PurchaseOutcome::Replayed(Receipt {
                order_id: order.order_id,
                status: order.status,
                strategy: order.strategy,
            }));
        }
        for line in &request.lines {
            match books.shelf(line.product_id) {
                None => return Ok(PurchaseOutcome::UnknownProduct(line.product_id)),
                Some(shelf) if shelf.stock < i64::from(line.quantity.get()) => {
                    return Ok(PurchaseOutcome::SoldOut(line.product_id));
                }
                Some(_) => {}
            }
        }
        for line in &request.lines {
            if let Some(shelf) = books.shelves.get_mut(&line.product_id.get()) {
                shelf.stock -= i64::from(line.quantity.get());
            }
        }
        let receipt = Receipt::confirmed(request.order_id, self.kind());
        if let Some(key) = &request.idempotency_key {
            books.by_key.insert(key.as_str().to_owned(), request.order_id);
        }
        books.orders.insert(
            request.order_id,
            OrderView {
                order_id: request.order_id,
                strategy: self.kind(),
                status: OrderStatus::Confirmed,
                items: request.lines.iter().copied().collect(),
                delivery: request.delivery.clone(),
                user: request.user.clone(),
                idempotency_key: request.idempotency_key.as_ref().map(|key| key.as_str().to_owned()),
                reason: None,
                created_at: chrono::Utc::now(),
            },
        );
        Ok(PurchaseOutcome::Placed(receipt))
    }

    async fn prepare(&self, plan: &StockPlan) -> Result<(), StrategyError> {
        *self.books() = Books { plan: plan.clone(), ..Books::default() };
        Ok(())
    }

    async fn own_ledger(&self) -> Result<Option<OwnLedger>, StrategyError> {
        let mut books = self.books();
        for product in books.plan.products.clone() {
            books.shelf(product.id);
        }
        let mut ledger: HashMap<i64, ProductLedger> = books
            .shelves
            .iter()
            .map(|(&id, shelf)| {
                let row = ProductLedger {
                    product_id: id,
                    initial_stock: shelf.initial,
                    final_stock: shelf.stock,
                    units_in_orders: 0,
                    orders: 0,
                    duplicated: 0,
                };
                (id, row)
            })
            .collect();
        let mut keys_seen: HashMap<(i64, &str), ()> = HashMap::new();
        for order in books.orders.values() {
            for line in &order.items {
                let row = ledger.get_mut(&line.product_id.get()).ok_or_else(|| {
                    StrategyError::Internal(format!(
                        "order {} holds product {} with no shelf",
                        order.order_id, line.product_id
                    ))
                })?;
                row.units_in_orders += i64::from(line.quantity.get());
                row.orders += 1;
                if let Some(key) = &order.idempotency_key
                    && keys_seen.insert((line.product_id.get(), key), ()).is_some()
                {
                    row.duplicated += 1;
                }
            }
        }
        let mut products: Vec<ProductLedger> = ledger.into_values().collect();
        products.sort_unstable_by_key(|row| row.product_id);
        let keyed = books.orders.values().filter(|order| order.idempotency_key.is_some()).count();
        let distinct_keys = books.by_key.len();
        Ok(Some(OwnLedger {
            products,
            orders: i64::try_from(books.orders.len()).unwrap_or(i64::MAX),
            duplicated: i64::try_from(keyed.saturating_sub(distinct_keys)).unwrap_or(i64::MAX),
        }))
    }

    async fn own_order(&self, id: Uuid) -> Result<Option<OrderView>, StrategyError> {
        Ok(self.books().orders.get(&id).cloned())
    }

    async fn own_orders(&self) -> Result<Vec<OrderEntry>, StrategyError> {
        Ok(self
            .books()
            .orders
            .values()
            .map(|order| OrderEntry {
                order_id: order.order_id,
                strategy: order.strategy,
                status: order.status,
            })
            .collect())
    }
}
