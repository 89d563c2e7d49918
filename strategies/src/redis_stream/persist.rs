//! Writing a batch of queued orders to PostgreSQL in one transaction: the orders, their lines, and
//! the decrement of PostgreSQL's stock for the confirmed ones.
//!
//! The insert is idempotent (`ON CONFLICT DO NOTHING`, on the id and on the idempotency key), and
//! only orders this transaction inserted move the stock, so a redelivered entry — its first commit
//! landed, its acknowledgement did not — writes nothing twice. The decrement is summed per product
//! and applied in product-id order, the order every other writer locks rows in, so two workers (or
//! a worker and a synchronous strategy) never deadlock.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::QueuedOrder;
use crate::order::OrderStatus;

const INSERT_ORDERS: &str = r#"
INSERT INTO orders (id, strategy, status, idempotency_key, user_name, address, phone, email, reason, created_at)
SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING id
"#;

const INSERT_ITEMS: &str = r#"
INSERT INTO order_items (order_id, product_id, quantity)
SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::int[])
"#;

const ALREADY_THERE: &str = "SELECT id FROM orders WHERE id = ANY($1)";

/// A worker sells through the Redis gate: the claim rides on the decrement for `stream-deferred`,
/// which does not claim before accepting (it is unsafe by design, and never refused).
const TAKE: &str =
    "UPDATE products SET stock = stock - $2::bigint, gate = COALESCE(gate, 'redis') WHERE id = $1";

/// One order to write, and how.
#[derive(Debug)]
pub(super) struct ToWrite<'a> {
    pub(super) order: &'a QueuedOrder,
    pub(super) status: OrderStatus,
    pub(super) reason: Option<&'static str>,
}

/// What became of one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// Inserted by this transaction (confirmed ones moved the stock).
    Inserted,
    /// The same order was committed before: a redelivery.
    AlreadyThere,
    /// Another order holds its idempotency key; this one was not written.
    KeyTaken,
}

/// Writes `orders` in one transaction and says what became of each, in order.
///
/// # Errors
/// The raw database error; nothing is committed then.
pub(super) async fn write(pg: &PgPool, orders: &[ToWrite<'_>]) -> Result<Vec<Written>, sqlx::Error> {
    let mut columns = Columns::default();
    for w in orders {
        columns.push(w);
    }
    let mut tx = pg.begin().await?;
    let inserted: HashSet<Uuid> = sqlx::query_scalar(INSERT_ORDERS)
        .bind(&columns.ids)
        .bind(&columns.strategies)
        .bind(&columns.statuses)
        .bind(&columns.keys)
        .bind(&columns.users)
        .bind(&columns.addresses)
        .bind(&columns.phones)
        .bind(&columns.emails)
        .bind(&columns.reasons)
        .bind(&columns.created)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let skipped: Vec<Uuid> = columns.ids.iter().copied().filter(|id| !inserted.contains(id)).collect();
    let already: HashSet<Uuid> = if skipped.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar(ALREADY_THERE).bind(&skipped).fetch_all(&mut *tx).await?.into_iter().collect()
    };

    let (mut item_orders, mut item_products, mut item_quantities) = (Vec::new(), Vec::new(), Vec::new());
    let mut taken: BTreeMap<i64, i64> = BTreeMap::new();
    for w in orders.iter().filter(|w| inserted.contains(&w.order.order_id)) {
        for line in &w.order.lines {
            item_orders.push(w.order.order_id);
            item_products.push(line.product_id.get());
            item_quantities.push(line.quantity.get().cast_signed());
            if w.status == OrderStatus::Confirmed {
                *taken.entry(line.product_id.get()).or_default() += i64::from(line.quantity.get());
            }
        }
    }
    if !item_orders.is_empty() {
        sqlx::query(INSERT_ITEMS)
            .bind(&item_orders)
            .bind(&item_products)
            .bind(&item_quantities)
            .execute(&mut *tx)
            .await?;
    }
    // BTreeMap iterates in product-id order: rows are locked in the order every writer uses.
    for (product, units) in taken {
        sqlx::query(TAKE).bind(product).bind(units).execute(&mut *tx).await?;
    }
    tx.commit().await?;

    Ok(columns
        .ids
        .iter()
        .map(|id| {
            if inserted.contains(id) {
                Written::Inserted
            } else if already.contains(id) {
                Written::AlreadyThere
            } else {
                Written::KeyTaken
            }
        })
        .collect())
}

/// Orders as the parallel arrays `UNNEST` takes.
#[derive(Default)]
struct Columns {
    ids: Vec<Uuid>,
    strategies: Vec<&'static str>,
    statuses: Vec<&'static str>,
    keys: Vec<Option<String>>,
    users: Vec<Option<String>>,
    addresses: Vec<String>,
    phones: Vec<String>,
    emails: Vec<String>,
    reasons: Vec<Option<&'static str>>,
    created: Vec<DateTime<Utc>>,
}

impl Columns {
    fn push(&mut self, w: &ToWrite<'_>) {
        let order = w.order;
        self.ids.push(order.order_id);
        self.strategies.push(order.strategy.as_str());
        self.statuses.push(w.status.as_str());
        self.keys.push(order.idempotency_key.clone());
        self.users.push(order.user.clone());
        self.addresses.push(order.delivery.address.clone());
        self.phones.push(order.delivery.phone.clone());
        self.emails.push(order.delivery.email.clone());
        self.reasons.push(w.reason);
        self.created.push(order.created_at);
    }
}
