//! `/admin`: a bearer token when one is configured, loopback clients only when none is; a reset
//! plan that does not validate changes nothing.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use checkout_bench::app::AppState;
use checkout_strategies::StrategyKind;
use serde_json::{Value, json};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use tower::ServiceExt;

use crate::helpers::{Answer, Setup, TestApp, order_body, plan_of, read_answer, spawn_app};

const TOKEN: &str = "s3cret";

fn with_token() -> Setup {
    Setup { plan: plan_of(&[(100, 10)]), admin_token: Some(TOKEN.to_owned()), ..Setup::default() }
}

/// `GET path`, or `POST path` with `post` as its body, with this `Authorization` header (if any).
async fn admin(app: &TestApp, post: Option<&Value>, path: &str, authorization: Option<&str>) -> Answer {
    let url = format!("{}{path}", app.url);
    let mut request = match post {
        Some(body) => app.client.post(url).json(body),
        None => app.client.get(url),
    };
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION.as_str(), value);
    }
    read_answer(request.send().await.expect("server answers")).await
}

/// One request straight into the router, with the client address the server would have seen
/// (`None`: no address known at all).
async fn oneshot(app: &TestApp, peer: Option<SocketAddr>, authorization: Option<&str>) -> (u16, Value) {
    let mut request = Request::builder().uri("/admin/audit");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let mut request = request.body(Body::empty()).expect("request");
    if let Some(peer) = peer {
        request.extensions_mut().insert(ConnectInfo(peer));
    }
    let router = checkout_bench::http::app(AppState(Arc::clone(&app.app)));
    let response = router.oneshot(request).await.expect("the router answers");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("read the body");
    (status, serde_json::from_slice(&bytes).expect("JSON body"))
}

fn peer(ip: impl Into<std::net::IpAddr>) -> Option<SocketAddr> {
    Some(SocketAddr::new(ip.into(), 40_000))
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn token_guards_admin_routes(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, with_token()).await;
    app.buy(StrategyKind::SqlAtomic, &order_body(&[(100, 1)]), None)
        .await
        .assert_placed(StrategyKind::SqlAtomic);
    let before = app.snapshot().await;
    let bearer = format!("Bearer {TOKEN}");
    let reset_plan = json!({ "products": [{ "id": 100, "stock": 50 }] });

    for authorization in
        [None, Some("Bearer nope"), Some(TOKEN), Some("Basic czNjcmV0"), Some("Bearer s3cret2")]
    {
        let what = format!("Authorization {authorization:?}");
        admin(&app, None, "/admin/audit", authorization).await.assert_error(401, "unauthorized");
        admin(&app, Some(&reset_plan), "/admin/reset", authorization).await.assert_error(401, "unauthorized");
        assert_eq!(app.snapshot().await, before, "{what}: an unauthorised reset changed the shop");
    }

    let audit = admin(&app, None, "/admin/audit", Some(&bearer)).await;
    assert_eq!(audit.status, 200, "the right token opens the audit: {}", audit.body);
    assert_eq!(audit.body["total"]["orders"], 1, "the audit sees the order: {}", audit.body);

    // Purchases and reads never need the token.
    app.buy(StrategyKind::Memory, &order_body(&[(100, 1)]), None).await.assert_placed(StrategyKind::Memory);
    app.get_json("/stats").await;

    let reset = admin(&app, Some(&reset_plan), "/admin/reset", Some(&bearer)).await;
    assert_eq!(reset.status, 200, "the right token resets: {}", reset.body);
    assert_eq!(app.order_count().await, 0, "an authorised reset deletes the orders");
    assert_eq!(app.stock(100).await, 50, "an authorised reset lays out the plan");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn invalid_reset_plans_change_nothing(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, with_token()).await;
    app.buy(StrategyKind::SqlAtomic, &order_body(&[(100, 2)]), None)
        .await
        .assert_placed(StrategyKind::SqlAtomic);
    app.buy(StrategyKind::Memory, &order_body(&[(100, 3)]), None).await.assert_placed(StrategyKind::Memory);
    let bearer = format!("Bearer {TOKEN}");
    let before = app.snapshot().await;
    let audit_before = admin(&app, None, "/admin/audit", Some(&bearer)).await.body;
    let stats_before = app.get_json("/stats").await;

    let plans = [
        ("negative stock", json!({ "products": [{ "id": 100, "stock": -1 }] }), "stock"),
        (
            "same product twice",
            json!({ "products": [{ "id": 100, "stock": 1 }, { "id": 100, "stock": 2 }] }),
            "twice",
        ),
        ("product id 0", json!({ "products": [{ "id": 0, "stock": 1 }] }), "positive"),
        ("string stock", json!({ "products": [{ "id": 100, "stock": "1" }] }), "stock"),
        (
            "min_stock above max_stock",
            json!({ "random_products": { "count": 10, "min_stock": 5, "max_stock": 4 } }),
            "min_stock",
        ),
        (
            "negative min_stock",
            json!({ "random_products": { "count": 10, "min_stock": -1, "max_stock": 4 } }),
            "min_stock",
        ),
        ("catalogue too large", json!({ "random_products": { "count": 50_000_001_u64 } }), "count"),
        ("missing count", json!({ "random_products": { "seed": 1 } }), "count"),
    ];
    for (name, plan, mention) in plans {
        let answer = admin(&app, Some(&plan), "/admin/reset", Some(&bearer)).await;
        answer.assert_error(400, "invalid_request");
        let detail = answer.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(mention),
            "{name}: detail names what is wrong ({mention:?}): {}",
            answer.body
        );
        assert_eq!(app.snapshot().await, before, "{name}: a refused reset changed PostgreSQL");
    }

    let raw = |content_type: &'static str, body: &'static str| {
        app.client
            .post(format!("{}/admin/reset", app.url))
            .header(header::AUTHORIZATION.as_str(), bearer.as_str())
            .header(header::CONTENT_TYPE.as_str(), content_type)
            .body(body)
            .send()
    };
    read_answer(raw("application/json", r#"{"products": ["#).await.expect("server answers"))
        .await
        .assert_error(400, "invalid_request");
    read_answer(raw("text/plain", r#"{"products": []}"#).await.expect("server answers"))
        .await
        .assert_error(415, "unsupported_media_type");

    assert_eq!(app.snapshot().await, before, "refused resets leave PostgreSQL as it was");
    let audit_after = admin(&app, None, "/admin/audit", Some(&bearer)).await.body;
    assert_eq!(audit_after, audit_before, "refused resets leave every ledger as it was, memory included");
    assert_eq!(app.get_json("/stats").await, stats_before, "refused resets do not clear the statistics");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn without_a_token_only_loopback_clients_get_in(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, 10)]), ..Setup::default() }).await;
    // Over the real socket, from loopback.
    let audit = admin(&app, None, "/admin/audit", None).await;
    assert_eq!(audit.status, 200, "a loopback client needs no token: {}", audit.body);

    let (status, body) = oneshot(&app, None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "an unknown client is refused: {body}"
    );
    for outside in [peer(Ipv4Addr::new(203, 0, 113, 7)), peer(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))]
    {
        let (status, body) = oneshot(&app, outside, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{outside:?} is refused: {body}"
        );
        let (status, body) = oneshot(&app, outside, Some("Bearer anything")).await;
        assert_eq!(status, 403, "{outside:?}: a token means nothing when none is configured: {body}");
    }
    for loopback in [peer(Ipv4Addr::LOCALHOST), peer(Ipv6Addr::LOCALHOST)] {
        let (status, body) = oneshot(&app, loopback, None).await;
        assert_eq!(status, 200, "{loopback:?} is a loopback client: {body}");
    }
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn ipv4_mapped_loopback_is_loopback(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    // A server bound to [::] sees IPv4 clients as IPv4-mapped IPv6 addresses.
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, 10)]), ..Setup::default() }).await;
    let mapped = peer(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    let (status, body) = oneshot(&app, mapped, None).await;
    assert_eq!(status, 200, "{mapped:?} is the loopback address of a dual-stack socket: {body}");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn with_a_token_any_client_that_presents_it_gets_in(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, with_token()).await;
    let bearer = format!("Bearer {TOKEN}");
    for client in [peer(Ipv4Addr::new(203, 0, 113, 7)), peer(Ipv4Addr::LOCALHOST), None] {
        let (status, body) = oneshot(&app, client, Some(&bearer)).await;
        assert_eq!(status, 200, "{client:?} with the token gets in: {body}");
        let (status, body) = oneshot(&app, client, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{client:?} without the token is refused, loopback or not: {body}"
        );
    }
}
