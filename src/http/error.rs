//! The one error type handlers return, and how each variant reaches the client.
//!
//! Which error type goes where:
//! - strategies return `checkout_strategies::StrategyError` (backend trouble only; sold out is an
//!   outcome, not an error) and it converts into [`ApiError`] here;
//! - extractors turn bad input into [`ApiError::InvalidRequest`] and friends, so handlers never see
//!   it;
//! - binaries use `anyhow` with context.
//!
//! Every body is JSON with an `error` code and a human `message`; some carry more fields
//! (`product_id`, `strategies`). The seed-compatible endpoint renders the same errors as plain
//! text instead (`http::seed`). Internal detail is logged, never sent.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use checkout_strategies::{Gate, ProductId, SqlBackend, StrategyError, StrategyKind};
use serde_json::{Value, json};

use crate::admission::Overloaded;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the X-Strategy header is missing; name one of the strategies")]
    MissingStrategy,
    #[error("unknown strategy {0:?}")]
    UnknownStrategy(String),
    #[error("no product {0}")]
    UnknownProduct(ProductId),
    #[error("no order {0}")]
    UnknownOrder(uuid::Uuid),
    #[error("not enough stock of product {0} for this order")]
    SoldOut(ProductId),
    #[error("request body is larger than {} bytes", crate::http::MAX_BODY)]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("admin routes need Authorization: Bearer <ADMIN_TOKEN>")]
    Unauthorized,
    #[error("admin routes accept loopback clients only when ADMIN_TOKEN is unset")]
    Forbidden,
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("no route for this path")]
    NoRoute,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("a backend is unavailable; retry later")]
    Unavailable(String),
    #[error("no answer within {0} ms; the purchase may still complete: check GET /orders/{{order_id}}")]
    Timeout(u64, uuid::Uuid),
    #[error("too many concurrent writers on the same rows; retry later")]
    Contention(String),
    #[error("a backend failed after the order may have been written; check GET /orders/{{order_id}} later")]
    InDoubt(String, uuid::Uuid),
    #[error(
        "product {0} is sold through the {gate} gate since the last reset; strategies of one gate per product \
         (see README, \"Mixing strategies\"), or reset",
        gate = .1.as_str()
    )]
    GateConflict(ProductId, Gate),
    #[error("this Idempotency-Key was used for a different purchase (order {0}); use a new key")]
    KeyReused(uuid::Uuid),
    /// `sql-optimistic` lost its compare-and-swap on this product every time it tried.
    #[error("other buyers kept changing product {0} until the retries ran out; nothing was taken, retry")]
    OutOfRetries(ProductId),
    /// Refused before it started: its backend has as many purchases in flight as it may.
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// The strategy exists but does not run on the database holding the books (`GET /strategies`
    /// says which do).
    #[error("strategy {0} does not run on {1} yet; GET /strategies lists the ones that do")]
    StrategyNotOnDatabase(StrategyKind, SqlBackend),
    /// An admin step that exists on another database only.
    #[error("{0}")]
    NotOnDatabase(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// HTTP status of each variant.
    pub const fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) | Self::MissingStrategy => StatusCode::BAD_REQUEST,
            Self::UnknownStrategy(_) | Self::UnknownProduct(_) | Self::UnknownOrder(_) | Self::NoRoute => {
                StatusCode::NOT_FOUND
            }
            Self::SoldOut(_) | Self::GateConflict(..) | Self::OutOfRetries(_) => StatusCode::CONFLICT,
            Self::KeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized | Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable(_)
            | Self::Timeout(..)
            | Self::Contention(_)
            | Self::InDoubt(..)
            | Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::StrategyNotOnDatabase(..) | Self::NotOnDatabase(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `error` code.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::MissingStrategy => "invalid_request",
            Self::UnknownStrategy(_) => "unknown_strategy",
            Self::UnknownProduct(_) => "unknown_product",
            Self::UnknownOrder(_) => "unknown_order",
            Self::SoldOut(_) => "sold_out",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::NoRoute => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unavailable(_) | Self::Timeout(..) => "backend_unavailable",
            Self::Contention(_) | Self::OutOfRetries(_) => "contention",
            Self::InDoubt(..) => "outcome_unknown",
            Self::GateConflict(..) => "inventory_gate_conflict",
            Self::KeyReused(_) => "idempotency_key_reused",
            Self::Overloaded(_) => "overloaded",
            Self::StrategyNotOnDatabase(..) | Self::NotOnDatabase(_) => "not_on_this_database",
            Self::Internal(_) => "internal",
        }
    }

    fn body(&self) -> Value {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        match self {
            Self::InvalidRequest(detail) => body["detail"] = json!(detail),
            Self::MissingStrategy => {
                body["detail"] = json!(self.to_string());
                body["strategies"] = json!(StrategyKind::names());
            }
            Self::UnknownStrategy(_) => body["strategies"] = json!(StrategyKind::names()),
            Self::UnknownProduct(id) | Self::SoldOut(id) | Self::OutOfRetries(id) => {
                body["product_id"] = json!(id.get());
            }
            Self::GateConflict(id, gate) => {
                body["product_id"] = json!(id.get());
                body["gate"] = json!(gate);
            }
            Self::UnknownOrder(id) | Self::Timeout(_, id) | Self::InDoubt(_, id) | Self::KeyReused(id) => {
                body["order_id"] = json!(id);
            }
            Self::Overloaded(refusal) => body["backend"] = json!(refusal.class),
            Self::StrategyNotOnDatabase(kind, database) => {
                body["strategy"] = json!(kind);
                body["database"] = json!(database);
            }
            _ => {}
        }
        body
    }
}

impl From<StrategyError> for ApiError {
    fn from(err: StrategyError) -> Self {
        match err {
            StrategyError::Unavailable(detail) => Self::Unavailable(detail),
            StrategyError::Conflict(detail) => Self::Contention(detail),
            StrategyError::NotOnDatabase(detail) => Self::NotOnDatabase(detail),
            // Callers that know the order id answer with it (`http::purchase`).
            StrategyError::InDoubt(detail) | StrategyError::Internal(detail) => Self::Internal(detail),
        }
    }
}

impl From<checkout_strategies::InvalidInput> for ApiError {
    fn from(err: checkout_strategies::InvalidInput) -> Self {
        Self::InvalidRequest(err.0)
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> Self {
        StrategyError::from(err).into()
    }
}

impl ApiError {
    /// Logs what the client is not told. Every renderer of an error calls it once.
    pub fn log(&self) {
        match self {
            Self::Internal(detail) => tracing::error!(%detail, "internal error"),
            // An outage produces one of these per request: keep them out of the default log level.
            Self::Unavailable(detail) | Self::Contention(detail) => {
                tracing::debug!(code = self.code(), %detail)
            }
            Self::InDoubt(detail, order) => tracing::warn!(%detail, %order, "purchase outcome unknown"),
            _ => {}
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let mut response = (self.status_code(), Json(self.body())).into_response();
        if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}
