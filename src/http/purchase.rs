//! `POST /strategies/{name}/purchase` and `POST /purchase` (with `X-Strategy`), and [`place`], the
//! one way any front end (these JSON routes, the seed's form endpoint) hands a purchase to a
//! strategy.
//!
//! Once validated, a purchase runs in its own task: a client that disconnects drops the handler,
//! not the purchase, so no order is ever half-written because someone closed a tab. The handler
//! waits for the task up to the request timeout and then answers 503 with the order id, which the
//! client can look up later.
//!
//! Before the task starts, the purchase takes a place among its backend's purchases in flight
//! ([`crate::admission`]); when there is none, it is answered 503 `overloaded` at once, having
//! touched nothing. The place moves into the task and is given back when the purchase ends.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use checkout_strategies::{
    IdempotencyKey, OrderStatus, PurchaseOutcome, PurchaseRequest, StrategyError, StrategyKind,
};
use uuid::Uuid;

use crate::admission::Admission;
use crate::app::AppState;
use crate::http::auth::Credentials;
use crate::http::error::ApiError;
use crate::http::extract::{
    ApiJson, IdempotencyHeader, PurchaseBody, StrategyHeader, StrategyPath, ValidPurchase,
};

/// `POST /strategies/{name}/purchase`.
pub(super) async fn by_route(
    State(state): State<AppState>,
    Extension(admission): Extension<Admission>,
    StrategyPath(kind): StrategyPath,
    IdempotencyHeader(key): IdempotencyHeader,
    credentials: Credentials,
    ApiJson(body): ApiJson<PurchaseBody>,
) -> Result<Response, ApiError> {
    purchase(Front { state, admission }, kind, key, credentials, body).await
}

/// `POST /purchase` with `X-Strategy: {name}`.
pub(super) async fn by_header(
    State(state): State<AppState>,
    Extension(admission): Extension<Admission>,
    StrategyHeader(kind): StrategyHeader,
    IdempotencyHeader(key): IdempotencyHeader,
    credentials: Credentials,
    ApiJson(body): ApiJson<PurchaseBody>,
) -> Result<Response, ApiError> {
    purchase(Front { state, admission }, kind, key, credentials, body).await
}

/// What every purchase front end hands to [`place`]: the application and the in-flight gates.
#[derive(Debug, Clone)]
pub(super) struct Front {
    pub(super) state: AppState,
    pub(super) admission: Admission,
}

/// Checks come in the contract's order: strategy and idempotency key (extractors), body, session,
/// room on the backend.
async fn purchase(
    front: Front,
    kind: StrategyKind,
    idempotency_key: Option<IdempotencyKey>,
    credentials: Credentials,
    body: PurchaseBody,
) -> Result<Response, ApiError> {
    let valid = body.validate()?;
    let names_buyer = valid.user.is_some();
    Ok(match place(&front, kind, valid, idempotency_key, credentials, names_buyer).await? {
        PurchaseOutcome::Placed(receipt) => {
            let status = match receipt.status {
                OrderStatus::Pending => StatusCode::ACCEPTED,
                OrderStatus::Confirmed | OrderStatus::Cancelled => StatusCode::CREATED,
            };
            let location = format!("/orders/{}", receipt.order_id);
            (status, [(header::LOCATION, location)], Json(receipt)).into_response()
        }
        PurchaseOutcome::Replayed(receipt) => (StatusCode::OK, Json(receipt)).into_response(),
        refused => return Err(refusal(refused)),
    })
}

/// The error for an outcome that placed nothing. Each front end renders placed orders its own way;
/// refusals read the same everywhere.
pub(super) fn refusal(outcome: PurchaseOutcome) -> ApiError {
    match outcome {
        PurchaseOutcome::SoldOut(product) => ApiError::SoldOut(product),
        PurchaseOutcome::UnknownProduct(product) => ApiError::UnknownProduct(product),
        PurchaseOutcome::GateConflict { product, gate } => ApiError::GateConflict(product, gate),
        PurchaseOutcome::KeyReused(first) => ApiError::KeyReused(first),
        PurchaseOutcome::Contention(product) => ApiError::OutOfRetries(product),
        PurchaseOutcome::Placed(receipt) | PurchaseOutcome::Replayed(receipt) => {
            ApiError::Internal(format!("order {} was placed, not refused", receipt.order_id))
        }
    }
}

/// Authorises a validated purchase (`user_is_login`: a buyer named in the body needs no session),
/// runs it, then ends the session when asked to. Each front end renders the outcome its own way.
///
/// # Errors
/// 401/503 from the session check, or whatever [`run`] returns.
pub(super) async fn place(
    front: &Front,
    kind: StrategyKind,
    valid: ValidPurchase,
    idempotency_key: Option<IdempotencyKey>,
    credentials: Credentials,
    user_is_login: bool,
) -> Result<PurchaseOutcome, ApiError> {
    let state = &front.state;
    let session_user = credentials.authorize(state, user_is_login).await?;
    let request = PurchaseRequest {
        order_id: Uuid::new_v4(),
        lines: valid.lines,
        delivery: valid.delivery,
        user: valid.user.or(session_user),
        idempotency_key,
    };
    let outcome = run(front, kind, request).await?;
    credentials.finish(state).await;
    Ok(outcome)
}

/// Runs a validated, authorised purchase with `kind`'s strategy in a task of its own and waits for
/// it up to the request timeout. The task holds the purchase's place on its backend until it ends.
///
/// # Errors
/// [`ApiError::Overloaded`] at once when the backend has no room, the strategy's error, or
/// [`ApiError::Timeout`] (with the order id) when the purchase outlived the request timeout; it
/// keeps running then.
async fn run(
    front: &Front,
    kind: StrategyKind,
    request: PurchaseRequest,
) -> Result<PurchaseOutcome, ApiError> {
    let Front { state, admission } = front;
    let strategy = state
        .registry
        .try_get(kind)
        .ok_or_else(|| ApiError::StrategyNotOnDatabase(kind, state.database()))?
        .clone();
    let admitted = admission.admit(kind).inspect_err(|_| state.stats.record_shed(kind))?;
    let order_id = request.order_id;
    let pass = state.purchase_pass();
    let task = tokio::spawn(async move {
        let _admitted = admitted;
        let _pass = pass.await;
        strategy.purchase(&request).await
    });
    let timeout = state.config.request_timeout;
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Err(StrategyError::InDoubt(detail)))) => Err(ApiError::InDoubt(detail, order_id)),
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(join_error)) => Err(ApiError::Internal(format!("purchase task failed: {join_error}"))),
        Err(_) => Err(ApiError::Timeout(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX), order_id)),
    }
}
