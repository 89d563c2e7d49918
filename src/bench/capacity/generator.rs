//! The load generator's own ceiling: the same search against a server that does nothing but
//! answer 201, in this process, on the same cores. A strategy that passes at this rate is at
//! least this fast; its figure says nothing more.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

use super::probe::{ProbeShape, probe};
use super::search::{Found, SearchPlan, search};
use crate::loadgen::Target;

/// A server on a free loopback port that answers every purchase 201 with a fresh order id.
///
/// # Errors
/// When no port can be bound.
pub async fn null_server() -> anyhow::Result<Target> {
    let app = Router::new().route(
        "/strategies/{name}/purchase",
        post(|| async {
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({ "order_id": uuid::Uuid::new_v4(), "status": "confirmed" })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Target::resolve(&format!("http://{addr}")).await
}

/// Searches the highest rate the generator sustains against [`null_server`] under the same
/// objective, up to `plan.cap`.
///
/// # Errors
/// When the null server cannot start.
pub async fn ceiling(plan: &SearchPlan, shape: &ProbeShape) -> anyhow::Result<Found<()>> {
    let target = null_server().await?;
    search(plan, async |rate, _| {
        let label = format!("[capacity · load generator] {rate:.0}/s");
        let measured = probe(None, &target, "null", shape, rate, &label).await?;
        eprintln!("{label}: {}", measured.summary());
        Ok((measured.failure.is_none(), ()))
    })
    .await
}
