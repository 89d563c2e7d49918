//! Read-only routes: strategies, products, orders, statistics, metrics and health.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use checkout_strategies::catalog::BooksOn;
use checkout_strategies::{PgDriver, ProductId, SqlBackend, StrategyKind, order_store};
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
    /// The SQL server holding the books (`DATABASE_URL`'s), the same for every entry.
    database: SqlBackend,
    /// Whether it sells on that database; the others answer 501 `not_on_this_database`.
    available: bool,
}

/// `GET /strategies`: every strategy, each saying whether it runs on the server's database.
pub(super) async fn strategies(State(state): State<AppState>) -> Json<Vec<StrategyInfo>> {
    let database = state.database();
    Json(
        StrategyKind::ALL
            .into_iter()
            .map(|kind| {
                let built = state.registry.try_get(kind);
                StrategyInfo {
                    name: kind,
                    guarantees: built.map_or_else(|| kind.spec(), |s| s.guarantees()),
                    pg_driver: (kind.runs_on_pg_driver() && database == SqlBackend::Postgres)
                        .then_some(state.pg_driver),
                    database,
                    available: built.is_some(),
                }
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
    let stock = BooksOn(&state.books).stock_of(id).await?.ok_or(ApiError::UnknownProduct(id))?;
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
    match (order_store::fetch_order_on(&state.books, id).await?, unavailable) {
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
        line.batches = state.registry.try_get(line.strategy).and_then(|s| s.batch_sizes());
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
    let (database, redis) = tokio::join!(
        probe(limit, state.books.ping()),
        probe(limit, async { ping.query_async::<String>(&mut redis).await.map(drop) }),
    );
    let healthy = database["status"] == "up" && redis["status"] == "up";
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    // The database is named by its kind (`postgres`, `mysql`), as `GET /strategies` names it.
    let mut backends = serde_json::Map::new();
    backends.insert(state.database().as_str().to_owned(), database);
    backends.insert("redis".to_owned(), redis);
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "backends": backends,
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
