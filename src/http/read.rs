//! Read-only routes: strategies, products, orders, statistics, metrics and health.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use checkout_strategies::{PgDriver, ProductId, StrategyKind, catalog, order_store};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::stats::StrategyStats;

/// One entry of `GET /strategies`.
#[derive(Debug, Serialize)]
pub(super) struct StrategyInfo {
    name: StrategyKind,
    #[serde(flatten)]
    guarantees: checkout_strategies::Guarantees,
    /// The PostgreSQL client its purchases run on, for the strategies `PG_DRIVER` switches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pg_driver: Option<PgDriver>,
}

/// `GET /strategies`.
pub(super) async fn strategies(State(state): State<AppState>) -> Json<Vec<StrategyInfo>> {
    Json(
        state
            .registry
            .iter()
            .map(|s| StrategyInfo {
                name: s.kind(),
                guarantees: s.guarantees(),
                pg_driver: s.kind().runs_on_pg_driver().then_some(state.pg_driver),
            })
            .collect(),
    )
}

/// `GET /products/{id}`: what PostgreSQL has left to sell (`catalog::stock_of`).
pub(super) async fn product(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = id
        .parse::<i64>()
        .map_err(|_| ApiError::InvalidRequest(format!("product id must be an integer, got {id:?}")))
        .and_then(|id| Ok(ProductId::parse(id)?))?;
    let stock = catalog::stock_of(&state.pg, id).await?.ok_or(ApiError::UnknownProduct(id))?;
    Ok(Json(json!({ "id": id.get(), "stock": stock })).into_response())
}

/// `GET /orders/{id}`: strategies that keep orders of their own (in memory, cheap, and reachable
/// while PostgreSQL is down), then PostgreSQL.
pub(super) async fn order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::InvalidRequest(format!("order id must be a UUID, got {id:?}")))?;
    // A backend holding pending orders may be down while PostgreSQL has the order: ask
    // PostgreSQL before answering 503.
    let mut unavailable = None;
    for strategy in state.registry.iter() {
        match strategy.own_order(id).await {
            Ok(Some(order)) => return Ok(Json(order).into_response()),
            Ok(None) => {}
            Err(err) => unavailable = Some(err),
        }
    }
    match (order_store::fetch_order(&state.pg, id).await?, unavailable) {
        (Some(order), _) => Ok(Json(order).into_response()),
        (None, Some(err)) => Err(err.into()),
        (None, None) => Err(ApiError::UnknownOrder(id)),
    }
}

/// `GET /stats`: per-strategy counters and latency percentiles since the last reset, of this
/// process only: each replica counts what it answered (the audit is the view every replica shares).
pub(super) async fn stats(State(state): State<AppState>) -> Json<Vec<StrategyStats>> {
    let mut snapshot = state.stats.snapshot();
    for line in &mut snapshot {
        line.batches = state.registry.get(line.strategy).batch_sizes();
    }
    Json(snapshot)
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets(&[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0])
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus().render()).into_response()
}

/// A health probe answers within this, whatever the backends do.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 when every backend answers, 503 otherwise, with each backend's state.
/// Probes run side by side, each within half the request deadline, so the answer always beats it.
pub(super) async fn healthz(State(state): State<AppState>) -> Response {
    let limit = HEALTH_PROBE_TIMEOUT.min(state.config.request_timeout / 2);
    let mut redis = state.redis.conn.clone();
    let ping = redis::cmd("PING");
    let (postgres, redis) = tokio::join!(
        probe(limit, async { sqlx::query("SELECT 1").execute(&state.pg).await.map(drop) }),
        probe(limit, async { ping.query_async::<String>(&mut redis).await.map(drop) }),
    );
    let healthy = postgres["status"] == "up" && redis["status"] == "up";
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "backends": { "postgres": postgres, "redis": redis },
        "plan_id": state.plan_id(),
    });
    (status, Json(body)).into_response()
}

async fn probe<E: std::fmt::Display>(limit: Duration, check: impl Future<Output = Result<(), E>>) -> Value {
    match tokio::time::timeout(limit, check).await {
        Ok(Ok(())) => json!({ "status": "up" }),
        Ok(Err(err)) => json!({ "status": "down", "detail": err.to_string() }),
        Err(_) => json!({ "status": "down", "detail": format!("no answer within {} ms", limit.as_millis()) }),
    }
}
