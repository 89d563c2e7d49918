//! Sessions: `POST /auth` opens one in Redis (its own database, the test's own prefix), and a JSON
//! purchase needs one unless it names its buyer in `user`, says `skip_auth`, or the server does
//! not require sessions. A session store that is down answers 503 in bounded time, and only to the
//! purchases that need it.

use std::time::Duration;

use checkout_bench::sessions::SessionConfig;
use checkout_strategies::StrategyKind;
use serde_json::{Value, json};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{Answer, Setup, TestApp, order_body, plan_of, read_answer, spawn_app};

const KIND: StrategyKind = StrategyKind::SqlAtomic;
const HOT: i64 = 100;
/// Far above every timeout the servers below use: reaching it means a hang.
const HANG: Duration = Duration::from_secs(10);
/// Shaped like a token, naming no session.
const STRANGER: &str = "0123456789abcdef0123456789abcdef";

fn setup() -> Setup {
    Setup { plan: plan_of(&[(HOT, 100)]), ..Setup::default() }
}

/// A fitting purchase body that does not name its buyer.
fn anonymous() -> Value {
    let mut body = order_body(&[(HOT, 1)]);
    body.as_object_mut().expect("object").remove("user");
    body
}

/// `POST /auth`, read whole.
async fn login(app: &TestApp, client: &reqwest::Client, body: &Value) -> Answer {
    read_answer(client.post(format!("{}/auth", app.url)).json(body).send().await.expect("server answers"))
        .await
}

/// A purchase of `body` with `KIND`, adding `headers` and the `query`.
async fn buy_with(
    app: &TestApp,
    client: &reqwest::Client,
    query: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Answer {
    let mut request = client.post(format!("{}/strategies/{KIND}/purchase{query}", app.url)).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read_answer(request.send().await.expect("server answers")).await
}

/// `answer`, failing the test if it does not come within [`HANG`].
async fn bounded(what: &str, answer: impl Future<Output = Answer>) -> Answer {
    tokio::time::timeout(HANG, answer)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {HANG:?}; an outage must be answered"))
}

async fn user_of(app: &TestApp, order_id: &str) -> Value {
    app.get_json(&format!("/orders/{order_id}")).await["user"].clone()
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn auth_opens_a_session_for_cookie_and_header(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    let browser = reqwest::Client::builder().cookie_store(true).build().expect("http client");
    let session = login(&app, &browser, &json!({ "username": "ann" })).await;
    assert_eq!(session.status, 200, "{}", session.body);
    let token = session.body["token"].as_str().expect("a token").to_owned();
    assert!(
        token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "128 random bits as hex: {token}"
    );
    assert_eq!(session.body["username"], "ann");
    assert_eq!(session.body["expires_in"], 1800);
    let cookie =
        session.headers.get(reqwest::header::SET_COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(cookie.starts_with(&format!("checkout_session={token};")), "the token as a cookie: {cookie}");
    assert!(cookie.contains("HttpOnly"), "scripts cannot read it: {cookie}");

    let by_cookie = buy_with(&app, &browser, "", &[], &anonymous()).await.assert_placed(KIND);
    assert_eq!(user_of(&app, &by_cookie).await, "ann", "the session's user is the order's");
    let by_header = buy_with(&app, &app.client, "", &[("X-Session-Token", &token)], &anonymous()).await;
    assert_eq!(user_of(&app, &by_header.assert_placed(KIND)).await, "ann");
    let named = buy_with(&app, &browser, "", &[], &order_body(&[(HOT, 1)])).await.assert_placed(KIND);
    assert_eq!(user_of(&app, &named).await, "buyer", "a body's user wins over the session's");
    let by_route = browser
        .post(format!("{}/purchase", app.url))
        .header("X-Strategy", KIND.as_str())
        .json(&anonymous())
        .send()
        .await
        .expect("server answers");
    read_answer(by_route).await.assert_placed(KIND);

    // Sessions live in their own database, under the test's prefix, with a TTL.
    let key = app.app.sessions.key(&token);
    assert!(key.starts_with(app.redis.keys.prefix()), "{key} under the test's prefix");
    let session_db =
        redis::Client::open(SessionConfig::new(&Setup::default().redis_url, 1).expect("url").connection)
            .expect("client");
    let mut session_db = session_db.get_multiplexed_async_connection().await.expect("Redis answers");
    let stored: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut session_db).await.expect("GET");
    assert_eq!(stored.as_deref(), Some("ann"), "database 1 holds the session");
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut session_db).await.expect("PTTL");
    assert!(ttl > 0, "the session expires: PTTL {ttl}");
    let mut stock_db = app.redis.conn.clone();
    let in_stock_db: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut stock_db).await.expect("EXISTS");
    assert!(!in_stock_db, "the stock database holds no session");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn auth_refuses_bad_usernames(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    for (name, body) in [
        ("missing username", json!({})),
        ("blank username", json!({ "username": "  " })),
        ("username not a string", json!({ "username": 7 })),
        ("username over 512 bytes", json!({ "username": "u".repeat(513) })),
    ] {
        let answer = login(&app, &app.client, &body).await;
        answer.assert_error(400, "invalid_request");
        assert!(
            answer.body["message"].as_str().unwrap_or_default().contains("username"),
            "{name}: {}",
            answer.body
        );
        assert!(!answer.headers.contains_key(reqwest::header::SET_COOKIE), "{name}: no cookie");
    }
    let form = app
        .client
        .post(format!("{}/auth", app.url))
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("username=ann");
    read_answer(form.send().await.expect("server answers")).await.assert_error(415, "unsupported_media_type");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn purchases_without_credentials_are_refused(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    let before = app.snapshot().await;
    for (name, headers) in [
        ("no session", vec![]),
        ("unknown token", vec![("X-Session-Token", STRANGER)]),
        ("malformed token", vec![("X-Session-Token", "not-a-token")]),
        ("unknown cookie", vec![("Cookie", "checkout_session=0123456789abcdef0123456789abcdef")]),
        ("X-Skip-Auth: 0", vec![("X-Skip-Auth", "0")]),
    ] {
        let answer = buy_with(&app, &app.client, "", &headers, &anonymous()).await;
        answer.assert_error(401, "unauthenticated");
        assert_eq!(app.snapshot().await, before, "{name}: a refused purchase changed stock or orders");
    }

    // Strategy and body are checked before the session.
    let mut empty = anonymous();
    empty["items"] = json!([]);
    buy_with(&app, &app.client, "", &[], &empty).await.assert_error(400, "invalid_request");
    let unknown = app.client.post(format!("{}/strategies/sql-magic/purchase", app.url)).json(&anonymous());
    read_answer(unknown.send().await.expect("server answers")).await.assert_error(404, "unknown_strategy");
    let missing = app.client.post(format!("{}/purchase", app.url)).json(&anonymous());
    read_answer(missing.send().await.expect("server answers")).await.assert_error(400, "invalid_request");
    assert_eq!(app.snapshot().await, before);
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn skip_auth_or_a_named_buyer_needs_no_session(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    let by_query = buy_with(&app, &app.client, "?skip_auth=1", &[], &anonymous()).await.assert_placed(KIND);
    assert_eq!(user_of(&app, &by_query).await, Value::Null, "nobody to record");
    buy_with(&app, &app.client, "", &[("X-Skip-Auth", "1")], &anonymous()).await.assert_placed(KIND);
    let named = buy_with(&app, &app.client, "", &[], &order_body(&[(HOT, 1)])).await.assert_placed(KIND);
    assert_eq!(user_of(&app, &named).await, "buyer");
    // skip_auth skips the lookup: a dead token does not matter.
    buy_with(&app, &app.client, "?skip_auth=1", &[("X-Session-Token", STRANGER)], &anonymous())
        .await
        .assert_placed(KIND);
    assert_eq!(app.stock(HOT).await, 96);
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn an_expired_session_is_refused(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup { session_ttl: Duration::from_secs(1), ..setup() }).await;
    let session = login(&app, &app.client, &json!({ "username": "ann" })).await;
    let token = session.body["token"].as_str().expect("a token").to_owned();
    assert_eq!(session.body["expires_in"], 1);
    buy_with(&app, &app.client, "", &[("X-Session-Token", &token)], &anonymous()).await.assert_placed(KIND);
    // Unused for longer than its TTL: Redis has expired it, whatever the machine's speed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = app.snapshot().await;
    let answer = buy_with(&app, &app.client, "", &[("X-Session-Token", &token)], &anonymous()).await;
    answer.assert_error(401, "unauthenticated");
    assert_eq!(app.snapshot().await, before, "an expired session buys nothing");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn session_stop_ends_the_session(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    let session = login(&app, &app.client, &json!({ "username": "ann" })).await;
    let token = session.body["token"].as_str().expect("a token").to_owned();
    let with_token = [("X-Session-Token", token.as_str())];
    buy_with(&app, &app.client, "?session_stop=0", &with_token, &anonymous()).await.assert_placed(KIND);
    buy_with(&app, &app.client, "?session_stop=1", &with_token, &anonymous()).await.assert_placed(KIND);
    assert_eq!(app.app.sessions.find(&token).await.expect("Redis answers"), None, "the session is gone");
    buy_with(&app, &app.client, "", &with_token, &anonymous()).await.assert_error(401, "unauthenticated");
    assert_eq!(app.stock(HOT).await, 98);
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_dead_session_store_is_503_only_where_needed(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
        listener.local_addr().expect("bound address").port()
    };
    let setup = Setup { sessions_url: Some(format!("redis://127.0.0.1:{dead}")), ..setup() };
    let app = spawn_app(connect, setup).await;
    let before = app.snapshot().await;
    let with_token = bounded(
        "purchase with a session",
        buy_with(&app, &app.client, "", &[("X-Session-Token", STRANGER)], &anonymous()),
    )
    .await;
    with_token.assert_error(503, "backend_unavailable");
    assert!(with_token.headers.contains_key(reqwest::header::RETRY_AFTER), "503 says when to retry");
    assert_eq!(app.snapshot().await, before, "nothing sold without a session check");
    bounded("auth", login(&app, &app.client, &json!({ "username": "ann" })))
        .await
        .assert_error(503, "backend_unavailable");

    bounded("purchase naming its buyer", buy_with(&app, &app.client, "", &[], &order_body(&[(HOT, 1)])))
        .await
        .assert_placed(KIND);
    bounded("skip_auth purchase", buy_with(&app, &app.client, "?skip_auth=1", &[], &anonymous()))
        .await
        .assert_placed(KIND);
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn sessions_can_be_switched_off(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup { require_session: false, ..setup() }).await;
    buy_with(&app, &app.client, "", &[], &anonymous()).await.assert_placed(KIND);
    let seed = app
        .client
        .post(format!("{}/index.php?action=purchase&mode={KIND}", app.url))
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("items[0][product_id]=100&items[0][count]=1&delivery[address]=a&delivery[phone]=b&delivery[email]=c")
        .send()
        .await
        .expect("server answers");
    assert_eq!(seed.status(), 200, "the seed endpoint follows the switch too");
    assert_eq!(app.stock(HOT).await, 98);
}
