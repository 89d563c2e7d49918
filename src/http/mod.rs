//! The HTTP surface: the router and its layers. The contract is in the README; the load generator,
//! the Locust suite and outside checks rely on it.

mod admin;
mod auth;
pub mod error;
pub mod extract;
mod purchase;
pub mod read;
pub mod seed;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use tower_http::trace::TraceLayer;

use crate::admission::Admission;
use crate::app::AppState;
use crate::http::error::ApiError;
pub use read::prometheus;

/// Largest purchase body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest reset body accepted, in bytes (a plan may list many products).
pub const MAX_ADMIN_BODY: usize = 16 * 1024 * 1024;

/// The whole application router. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so admin routes can see the client.
pub fn app(state: AppState) -> Router {
    // Installed before the first purchase so no count is lost to a missing recorder.
    prometheus();
    let with_deadline = axum::middleware::from_fn_with_state(state.clone(), deadline);
    // One set of in-flight gates per server, shared by every purchase route.
    let admission = Admission::new(state.config.inflight);
    let purchases = Router::new()
        .route("/purchase", post(purchase::by_header))
        .route("/strategies/{name}/purchase", post(purchase::by_route))
        .route("/auth", post(auth::login))
        .route("/index.php", post(seed::index))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(Extension(admission));
    // A reset may COPY millions of rows: it is bounded by PostgreSQL, not by the request deadline.
    let admin = Router::new()
        .route("/admin/reset", post(admin::reset))
        .route("/admin/reconcile", post(admin::reconcile))
        .route("/admin/audit", get(admin::audit).route_layer(with_deadline.clone()))
        .route("/admin/orders", get(admin::orders).route_layer(with_deadline.clone()))
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admin::guard));
    let reads = Router::new()
        .route("/strategies", get(read::strategies))
        .route("/products/{id}", get(read::product))
        .route("/orders/{id}", get(read::order))
        .route("/stats", get(read::stats))
        .route("/metrics", get(read::metrics))
        .route("/healthz", get(read::healthz))
        .route_layer(with_deadline);
    Router::new()
        .merge(reads)
        .merge(purchases)
        .merge(admin)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Spans and response lines at DEBUG only: no access log on the hot path by default.
        .layer(TraceLayer::new_for_http().on_failure(()))
        .with_state(state)
}

/// Answers 503 when a non-purchase route outlives the request timeout. Purchases bound their own
/// wait (they must keep running after the deadline); reads have nothing to finish.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let limit = state.config.request_timeout;
    tokio::time::timeout(limit, next.run(request))
        .await
        .map_err(|_| ApiError::Unavailable(format!("no answer within {} ms", limit.as_millis())))
}
