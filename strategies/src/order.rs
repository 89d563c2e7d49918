//! The validated vocabulary of a purchase. Everything here is checked once, at the edge, so a
//! strategy never sees a zero quantity, an empty order or the same product twice.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::kind::StrategyKind;

/// Most units of one product a single order may ask for.
pub const MAX_QUANTITY: u32 = 100;
/// Most distinct products in one order.
pub const MAX_LINES: usize = 50;
/// Longest accepted delivery field or user name, in bytes.
pub const MAX_FIELD_LEN: usize = 512;

/// Input that no strategy should ever see; the message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

fn invalid(message: impl Into<String>) -> InvalidInput {
    InvalidInput(message.into())
}

/// A product identifier: positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct ProductId(i64);

impl TryFrom<i64> for ProductId {
    type Error = InvalidInput;

    fn try_from(id: i64) -> Result<Self, Self::Error> {
        Self::parse(id)
    }
}

impl From<ProductId> for i64 {
    fn from(id: ProductId) -> Self {
        id.0
    }
}

impl ProductId {
    /// # Errors
    /// When `id` is zero or negative.
    pub fn parse(id: i64) -> Result<Self, InvalidInput> {
        if id > 0 { Ok(Self(id)) } else { Err(invalid(format!("product_id must be positive, got {id}"))) }
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Units of one product in one order: 1 to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Quantity(u32);

impl TryFrom<i64> for Quantity {
    type Error = InvalidInput;

    fn try_from(quantity: i64) -> Result<Self, Self::Error> {
        Self::parse(quantity)
    }
}

impl From<Quantity> for u32 {
    fn from(quantity: Quantity) -> Self {
        quantity.0
    }
}

impl Quantity {
    /// # Errors
    /// When `quantity` is below 1 or above [`MAX_QUANTITY`].
    pub fn parse(quantity: i64) -> Result<Self, InvalidInput> {
        match u32::try_from(quantity) {
            Ok(q @ 1..=MAX_QUANTITY) => Ok(Self(q)),
            _ => Err(invalid(format!("quantity must be between 1 and {MAX_QUANTITY}, got {quantity}"))),
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

/// One product and how many units of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// The lines of one order: 1 to [`MAX_LINES`], sorted by product id, each product once.
///
/// Sorting here is what lets lock-taking strategies lock rows in one global order (no deadlocks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OrderLines(Vec<OrderLine>);

impl OrderLines {
    /// # Errors
    /// When the order is empty, too long, or names a product twice.
    pub fn new(mut lines: Vec<OrderLine>) -> Result<Self, InvalidInput> {
        if lines.is_empty() {
            return Err(invalid("items must not be empty"));
        }
        if lines.len() > MAX_LINES {
            return Err(invalid(format!("at most {MAX_LINES} items per order, got {}", lines.len())));
        }
        lines.sort_unstable_by_key(|line| line.product_id);
        if let Some(pair) = lines.windows(2).find(|pair| pair[0].product_id == pair[1].product_id) {
            return Err(invalid(format!(
                "product_id {} appears twice; put the total quantity on one item",
                pair[0].product_id
            )));
        }
        Ok(Self(lines))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, OrderLine> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Product ids and quantities as parallel arrays, the shape `UNNEST` takes.
    pub fn columns(&self) -> (Vec<i64>, Vec<i32>) {
        self.0.iter().map(|line| (line.product_id.get(), line.quantity.get().cast_signed())).unzip()
    }
}

impl<'a> IntoIterator for &'a OrderLines {
    type Item = &'a OrderLine;
    type IntoIter = std::slice::Iter<'a, OrderLine>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Where the order goes. All three fields are required and non-blank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub address: String,
    pub phone: String,
    pub email: String,
}

impl Delivery {
    /// # Errors
    /// When a field is blank or longer than [`MAX_FIELD_LEN`].
    pub fn new(address: String, phone: String, email: String) -> Result<Self, InvalidInput> {
        for (name, value) in [("address", &address), ("phone", &phone), ("email", &email)] {
            check_field(&format!("delivery.{name}"), value)?;
        }
        Ok(Self { address, phone, email })
    }
}

/// Checks a free-text field: non-blank, at most [`MAX_FIELD_LEN`] bytes, no control characters
/// (PostgreSQL refuses NUL in text, and no address or name needs a tab or a newline).
///
/// # Errors
/// Names the field and what is wrong with it.
pub fn check_field(name: &str, value: &str) -> Result<(), InvalidInput> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{name} must not be blank")));
    }
    if value.len() > MAX_FIELD_LEN {
        return Err(invalid(format!("{name} is longer than {MAX_FIELD_LEN} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("{name} must not contain control characters")));
    }
    Ok(())
}

/// A client-chosen key that makes a purchase safe to retry: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Longest accepted key.
    pub const MAX_LEN: usize = 128;

    /// # Errors
    /// When the key is empty, too long, or holds anything but printable ASCII.
    pub fn parse(key: &str) -> Result<Self, InvalidInput> {
        if key.is_empty() || key.len() > Self::MAX_LEN {
            return Err(invalid(format!("Idempotency-Key must be 1 to {} characters", Self::MAX_LEN)));
        }
        if !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(invalid("Idempotency-Key must be printable ASCII"));
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated purchase, with its order id chosen before any strategy runs so that a timed-out or
/// abandoned request can still be traced in the database.
#[derive(Debug, Clone)]
pub struct PurchaseRequest {
    pub order_id: Uuid,
    pub lines: OrderLines,
    pub delivery: Delivery,
    pub user: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the database spelling.
    pub fn from_db(status: &str) -> Option<Self> {
        match status {
            "pending" => Some(Self::Pending),
            "confirmed" => Some(Self::Confirmed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// What a client is told about its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub strategy: StrategyKind,
}

impl Receipt {
    /// The receipt of an order `strategy` has confirmed.
    pub const fn confirmed(order_id: Uuid, strategy: StrategyKind) -> Self {
        Self { order_id, status: OrderStatus::Confirmed, strategy }
    }
}

/// How a purchase ended when nothing failed. Sold out is an answer, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseOutcome {
    /// A new order: confirmed, or pending for queueing strategies.
    Placed(Receipt),
    /// The idempotency key was seen before: this is the first order, unchanged.
    Replayed(Receipt),
    /// The stock of this product does not cover the order; nothing was taken.
    SoldOut(ProductId),
    /// No such product; nothing was taken.
    UnknownProduct(ProductId),
    /// Another gate sells this product since the reset (see `crate::gates`); nothing was taken.
    GateConflict { product: ProductId, gate: crate::kind::Gate },
    /// The idempotency key names another purchase (a different body): this is that order's id;
    /// nothing was taken.
    KeyReused(Uuid),
    /// Other buyers kept changing this product's row until the retries ran out (`sql-optimistic`);
    /// nothing was taken, and the product may still have stock.
    Contention(ProductId),
}

/// An order as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderView {
    pub order_id: Uuid,
    pub strategy: StrategyKind,
    pub status: OrderStatus,
    pub items: Vec<OrderLine>,
    pub delivery: Delivery,
    pub user: Option<String>,
    pub idempotency_key: Option<String>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: i64, q: i64) -> OrderLine {
        OrderLine { product_id: ProductId::parse(id).unwrap(), quantity: Quantity::parse(q).unwrap() }
    }

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert!(Quantity::parse(i64::from(MAX_QUANTITY) + 1).is_err());
        assert!(Quantity::parse(i64::MAX).is_err());
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(i64::from(MAX_QUANTITY)).unwrap().get(), MAX_QUANTITY);
    }

    #[test]
    fn product_id_must_be_positive() {
        assert!(ProductId::parse(0).is_err());
        assert!(ProductId::parse(-1).is_err());
        assert_eq!(ProductId::parse(100).unwrap().get(), 100);
    }

    #[test]
    fn lines_are_sorted_and_unique() {
        let lines = OrderLines::new(vec![line(7, 1), line(3, 2)]).unwrap();
        assert_eq!(lines.columns(), (vec![3, 7], vec![2, 1]));
        let err = OrderLines::new(vec![line(3, 1), line(3, 1)]).unwrap_err();
        assert!(err.0.contains("appears twice"), "{err}");
        assert!(OrderLines::new(vec![]).is_err());
        assert!(OrderLines::new((1..=51).map(|id| line(id, 1)).collect()).is_err());
    }

    #[test]
    fn idempotency_key_rules() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(IdempotencyKey::parse("ключ").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        assert!(IdempotencyKey::parse("order-42 retry").is_ok());
    }

    #[test]
    fn delivery_fields_must_not_be_blank() {
        let err = Delivery::new("Kyiv".into(), " ".into(), "a@b.c".into()).unwrap_err();
        assert_eq!(err.0, "delivery.phone must not be blank");
        assert!(Delivery::new("Kyiv".into(), "+380".into(), "a@b.c".into()).is_ok());
        let err = Delivery::new("Kyiv\u{0}".into(), "+380".into(), "a@b.c".into()).unwrap_err();
        assert_eq!(err.0, "delivery.address must not contain control characters");
        assert!(Delivery::new("Kyiv\nflat 2".into(), "+380".into(), "a@b.c".into()).is_err());
    }
}
