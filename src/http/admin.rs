//! `/admin`: reset the shop for a run and audit it afterwards. Guarded by a bearer token when
//! `ADMIN_TOKEN` is set, by the client's address (loopback only) when it is not.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use checkout_strategies::{StockPlan, catalog};
use serde_json::json;

use crate::app::AppState;
use crate::audit::{self, AuditReport};
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;

/// Lets a request through when it carries the admin token, or, with no token configured, when it
/// comes from a loopback address.
pub(super) async fn guard(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match &state.config.admin_token {
        Some(token) => {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            if !presented.is_some_and(|presented| constant_time_eq(presented.as_bytes(), token.as_bytes())) {
                return Err(ApiError::Unauthorized);
            }
        }
        None => {
            let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
            // A dual-stack socket reports IPv4 clients as `::ffff:127.0.0.1`.
            if !peer.is_some_and(|peer| peer.ip().to_canonical().is_loopback()) {
                return Err(ApiError::Forbidden);
            }
        }
    }
    Ok(next.run(request).await)
}

/// Compares without stopping at the first differing byte, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /admin/reset`: deletes every order (with `keep_catalogue`: the run's), lays out the plan,
/// clears statistics, and answers with the plan now in force.
pub(super) async fn reset(
    State(state): State<AppState>,
    ApiJson(plan): ApiJson<StockPlan>,
) -> Result<Response, ApiError> {
    plan.validate()?;
    let (summary, plan) = state.reset(plan).await?;
    tracing::info!(?summary, "reset");
    Ok(Json(json!({ "status": "reset", "summary": summary, "plan": plan })).into_response())
}

/// `POST /admin/reconcile`: repairs the Redis mirror from PostgreSQL and says what it changed.
pub(super) async fn reconcile(State(state): State<AppState>) -> Result<Response, ApiError> {
    let report = state.repair_redis().await?;
    tracing::info!(
        checked = report.products_checked,
        repaired = report.products_repaired,
        "reconciled Redis"
    );
    Ok(Json(report).into_response())
}

/// `GET /admin/audit`.
pub(super) async fn audit(State(state): State<AppState>) -> Result<Json<AuditReport>, ApiError> {
    Ok(Json(audit::reconcile(&state).await?))
}

/// Orders listed by `GET /admin/orders` unless `limit` says otherwise.
const DEFAULT_ORDER_LIMIT: i64 = 1_000_000;

/// `GET /admin/orders`: every order held since the reset — PostgreSQL's and those of strategies
/// that keep their own books — so a load generator can join them with what its clients were told.
pub(super) async fn orders(
    State(state): State<AppState>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let limit = order_limit(uri.query())?;
    let mut orders = catalog::BooksOn(&state.books).order_entries(limit.saturating_add(1)).await?;
    for strategy in state.registry.iter() {
        orders.extend(strategy.own_orders().await?);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let truncated = orders.len() > limit;
    orders.truncate(limit);
    Ok(Json(json!({ "count": orders.len(), "truncated": truncated, "orders": orders })).into_response())
}

/// `?limit=N`, a positive integer; anything else in the query is refused rather than ignored.
fn order_limit(query: Option<&str>) -> Result<i64, ApiError> {
    let mut limit = DEFAULT_ORDER_LIMIT;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name != "limit" {
            return Err(ApiError::InvalidRequest(format!("unknown query parameter {name:?}; only `limit`")));
        }
        limit = value.parse::<i64>().ok().filter(|limit| *limit >= 1).ok_or_else(|| {
            ApiError::InvalidRequest(format!("limit must be a positive integer, got {value:?}"))
        })?;
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"secret", b"secreT"), "last byte differs");
        assert!(!constant_time_eq(b"secret", b"Secret"), "first byte differs");
        assert!(!constant_time_eq(b"secret", b"secret2"), "a longer token with the same start");
        assert!(!constant_time_eq(b"secret", b"secre"), "a prefix of the token");
        assert!(!constant_time_eq(b"secret", b""), "nothing presented");
    }

    #[test]
    fn order_limit_takes_a_positive_integer_and_nothing_else() {
        assert_eq!(order_limit(None).unwrap(), DEFAULT_ORDER_LIMIT);
        assert_eq!(order_limit(Some("limit=5")).unwrap(), 5);
        for bad in ["limit=0", "limit=-3", "limit=x", "limit=", "since=1"] {
            assert!(
                matches!(order_limit(Some(bad)), Err(ApiError::InvalidRequest(_))),
                "{bad} must be refused"
            );
        }
    }
}
