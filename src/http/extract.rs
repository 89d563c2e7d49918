//! Extractors that turn raw requests into validated input, answering bad input with [`ApiError`]
//! before any handler or strategy runs.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use checkout_strategies::{
    Delivery, IdempotencyKey, OrderLine, OrderLines, ProductId, Quantity, StrategyKind, order::check_field,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;

/// `axum::Json`, with its rejections answered in our JSON shape: 400 for bad JSON or a wrong
/// field, 413 for an oversized body, 415 for a non-JSON content type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("send the body as JSON with Content-Type: application/json".into())
        }
        _ => ApiError::InvalidRequest(rejection.body_text()),
    }
}

/// The strategy named by the `X-Strategy` header.
#[derive(Debug, Clone, Copy)]
pub struct StrategyHeader(pub StrategyKind);

impl<S: Send + Sync> FromRequestParts<S> for StrategyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get("x-strategy").ok_or(ApiError::MissingStrategy)?;
        let name = value
            .to_str()
            .map_err(|_| ApiError::UnknownStrategy(String::from_utf8_lossy(value.as_bytes()).into()))?;
        name.trim().parse().map(Self).map_err(|_| ApiError::UnknownStrategy(name.to_owned()))
    }
}

/// The strategy named by the `{name}` path segment.
#[derive(Debug, Clone, Copy)]
pub struct StrategyPath(pub StrategyKind);

impl<S: Send + Sync> FromRequestParts<S> for StrategyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))?;
        name.parse().map(Self).map_err(|_| ApiError::UnknownStrategy(name))
    }
}

/// The optional `Idempotency-Key` header, validated.
#[derive(Debug, Clone)]
pub struct IdempotencyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else { return Ok(Self(None)) };
        let key = value
            .to_str()
            .map_err(|_| ApiError::InvalidRequest("Idempotency-Key must be printable ASCII".into()))?;
        Ok(Self(Some(IdempotencyKey::parse(key)?)))
    }
}

/// The purchase body as sent.
#[derive(Debug, Deserialize)]
pub struct PurchaseBody {
    items: Vec<ItemBody>,
    delivery: DeliveryBody,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ItemBody {
    product_id: i64,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
struct DeliveryBody {
    address: String,
    phone: String,
    email: String,
}

/// A purchase body that passed every check.
#[derive(Debug, Clone)]
pub struct ValidPurchase {
    pub lines: OrderLines,
    pub delivery: Delivery,
    pub user: Option<String>,
}

impl PurchaseBody {
    /// # Errors
    /// Names the first field that is wrong.
    pub fn validate(self) -> Result<ValidPurchase, ApiError> {
        let lines = self
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let prefix = |e: checkout_strategies::InvalidInput| {
                    ApiError::InvalidRequest(format!("items[{i}]: {}", e.0))
                };
                Ok(OrderLine {
                    product_id: ProductId::parse(item.product_id).map_err(prefix)?,
                    quantity: Quantity::parse(item.quantity).map_err(prefix)?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let lines = OrderLines::new(lines)?;
        let delivery = Delivery::new(self.delivery.address, self.delivery.phone, self.delivery.email)?;
        if let Some(user) = &self.user {
            check_field("user", user)?;
        }
        Ok(ValidPurchase { lines, delivery, user: self.user })
    }
}
