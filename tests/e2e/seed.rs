//! The seed's protocol, `POST /index.php?action=…`, as its Locust file speaks it: form bodies in
//! PHP bracket notation, text answers, 418 for sold out, a session cookie from `action=auth`.
//! Every refusal is checked for leaving the shop exactly as it was.

use std::fmt::Write as _;

use checkout_strategies::StrategyKind;
use reqwest::header::{CONTENT_TYPE, SET_COOKIE};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{Setup, TestApp, plan_of, spawn_app};

/// Plenty of stock.
const PLENTY: i64 = 100;
/// One unit.
const SCARCE: i64 = 200;
const UNKNOWN: i64 = 999;
const PURCHASE: &str = "action=purchase&mode=sql-atomic";
const FORM: &str = "application/x-www-form-urlencoded";

fn setup() -> Setup {
    Setup { plan: plan_of(&[(PLENTY, 1_000), (SCARCE, 1), (7, 50)]), ..Setup::default() }
}

/// A form body with these items (product id, count as sent) and a full delivery.
fn form(items: &[(i64, &str)]) -> String {
    let mut body = String::new();
    for (i, (product, count)) in items.iter().enumerate() {
        write!(body, "items[{i}][product_id]={product}&items[{i}][count]={count}&")
            .expect("write to a string");
    }
    body + "delivery[address]=Kyiv&delivery[phone]=%2B380441234567&delivery[email]=buyer%40example.com"
}

/// A text answer read whole.
#[derive(Debug)]
struct Plain {
    status: u16,
    content_type: String,
    text: String,
    cookie: Option<String>,
}

impl Plain {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers();
        let header = |name| headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let content_type = header(CONTENT_TYPE).unwrap_or_default();
        let cookie = header(SET_COOKIE);
        let text = response.text().await.expect("read the body");
        Self { status, content_type, text, cookie }
    }

    /// Asserts `status`, a text/plain content type and a non-empty message.
    #[track_caller]
    fn assert(&self, status: u16, what: &str) {
        assert_eq!(self.status, status, "{what}: status; body {:?}", self.text);
        assert!(
            self.content_type.starts_with("text/plain"),
            "{what}: text/plain, got {:?}",
            self.content_type
        );
        assert!(!self.text.trim().is_empty(), "{what}: a message says why");
    }

    /// Asserts a placed order and returns its id.
    #[track_caller]
    fn order_id(&self, what: &str) -> String {
        self.assert(200, what);
        let id = self
            .text
            .strip_prefix("Purchase successful: order ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{what}: the seed's success text, got {:?}", self.text));
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{what}: a UUID order id: {id}");
        id.to_owned()
    }
}

/// `POST /index.php?{query}` with a form body, through `client`.
async fn post(app: &TestApp, client: &reqwest::Client, query: &str, body: impl Into<String>) -> Plain {
    let request =
        client.post(format!("{}/index.php?{query}", app.url)).header(CONTENT_TYPE, FORM).body(body.into());
    Plain::read(request.send().await.expect("server answers")).await
}

/// A client that keeps cookies across requests, as Locust's `HttpUser` does.
fn cookie_client() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).build().expect("http client")
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn purchases_answer_text_and_sell(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    for (mode, kind) in [
        ("simple", StrategyKind::SqlNaive),
        ("sql-atomic", StrategyKind::SqlAtomic),
        ("memory", StrategyKind::Memory),
    ] {
        let before = app.stock_in(kind, PLENTY).await;
        let body = form(&[(PLENTY, "2")]) + "&username=ann";
        let answer = post(&app, &app.client, &format!("action=purchase&mode={mode}&skip_auth=1"), body).await;
        let order_id = answer.order_id(mode);
        assert_eq!(app.stock_in(kind, PLENTY).await, before - 2, "mode={mode}: two units taken");
        let order = app.get_json(&format!("/orders/{order_id}")).await;
        assert_eq!(order["strategy"], kind.as_str(), "mode={mode} runs {kind}: {order}");
        assert_eq!(order["status"], "confirmed", "mode={mode}: {order}");
        assert_eq!(order["user"], "ann", "mode={mode}: the form's username is the order's user: {order}");
        assert_eq!(order["items"][0]["quantity"], 2, "mode={mode}: {order}");
    }
    assert_eq!(app.order_count().await, 2, "the two SQL modes wrote one order each to PostgreSQL");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn sold_out_is_418_and_takes_nothing(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    let before = app.snapshot().await;
    let answer = post(&app, &app.client, &format!("{PURCHASE}&skip_auth=1"), form(&[(SCARCE, "2")])).await;
    answer.assert(418, "sold out");
    assert!(answer.text.contains(&SCARCE.to_string()), "names the product: {:?}", answer.text);
    assert_eq!(app.snapshot().await, before, "a sold-out order takes nothing");

    post(&app, &app.client, &format!("{PURCHASE}&skip_auth=1"), form(&[(SCARCE, "1")]))
        .await
        .order_id("last unit");
    let again = post(&app, &app.client, &format!("{PURCHASE}&skip_auth=1"), form(&[(SCARCE, "1")])).await;
    again.assert(418, "after the last unit");
    assert_eq!(app.stock(SCARCE).await, 0);
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn refusals_are_text_and_change_nothing(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    let before = app.snapshot().await;
    let skip = format!("{PURCHASE}&skip_auth=1");
    let fifty_one: Vec<(i64, &str)> = (1..=51).map(|id| (id, "1")).collect();
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        ("count 0", skip.clone(), form(&[(PLENTY, "0")]), 400, "count"),
        ("negative count", skip.clone(), form(&[(PLENTY, "-1")]), 400, "count"),
        ("non-numeric count", skip.clone(), form(&[(PLENTY, "two")]), 400, "count"),
        ("huge count", skip.clone(), form(&[(PLENTY, "99999999999999999999999")]), 400, "count"),
        ("count above the cap", skip.clone(), form(&[(PLENTY, "101")]), 400, "count"),
        (
            "missing count",
            skip.clone(),
            "items[0][product_id]=100&delivery[address]=a&delivery[phone]=b&delivery[email]=c".into(),
            400,
            "count",
        ),
        ("items not bracketed", skip.clone(), "items=100&delivery[address]=a".into(), 400, "items"),
        ("no items", skip.clone(), form(&[]), 400, "items"),
        ("51 items", skip.clone(), form(&fifty_one), 400, "at most 50"),
        ("product twice", skip.clone(), form(&[(PLENTY, "1"), (PLENTY, "1")]), 400, "twice"),
        (
            "blank delivery",
            skip.clone(),
            "items[0][product_id]=100&items[0][count]=1".into(),
            400,
            "delivery",
        ),
        ("too many fields", skip.clone(), form(&[(PLENTY, "1")]) + &"&x=1".repeat(1_000), 400, "fields"),
        ("nested too deep", skip.clone(), form(&[(PLENTY, "1")]) + "&items[0][count][x]=1", 400, "deeper"),
        ("malformed name", skip.clone(), form(&[(PLENTY, "1")]) + "&items[0=1", 400, "malformed"),
        ("unknown product", skip.clone(), form(&[(UNKNOWN, "1")]), 404, "999"),
        (
            "unknown mode",
            "action=purchase&mode=magic&skip_auth=1".into(),
            form(&[(PLENTY, "1")]),
            404,
            "known strategies: memory",
        ),
        ("missing action", "mode=sql-atomic&skip_auth=1".into(), form(&[(PLENTY, "1")]), 400, "action"),
        ("unknown action", "action=refund&skip_auth=1".into(), form(&[(PLENTY, "1")]), 400, "action"),
        ("no session", PURCHASE.into(), form(&[(PLENTY, "1")]), 401, "session"),
        ("username is no login", PURCHASE.into(), form(&[(PLENTY, "1")]) + "&username=ann", 401, "session"),
        ("skip_auth=0", format!("{PURCHASE}&skip_auth=0"), form(&[(PLENTY, "1")]), 401, "session"),
        (
            "body over 64 KiB",
            skip.clone(),
            form(&[(PLENTY, "1")]) + "&pad=" + &"p".repeat(65 * 1024),
            413,
            "bytes",
        ),
    ];
    for (name, query, body, status, mention) in cases {
        let answer = post(&app, &app.client, &query, body).await;
        answer.assert(status, name);
        assert!(answer.text.contains(mention), "{name}: the message mentions {mention:?}: {:?}", answer.text);
        assert_eq!(app.snapshot().await, before, "{name}: a refused request changed stock or orders");
    }

    for (name, content_type) in [("JSON content type", Some("application/json")), ("no content type", None)] {
        let mut request =
            app.client.post(format!("{}/index.php?{skip}", app.url)).body(form(&[(PLENTY, "1")]));
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let answer = Plain::read(request.send().await.expect("server answers")).await;
        answer.assert(415, name);
    }
    let unknown_session = app
        .client
        .post(format!("{}/index.php?{PURCHASE}", app.url))
        .header(CONTENT_TYPE, FORM)
        .header("Cookie", "checkout_session=0123456789abcdef0123456789abcdef")
        .body(form(&[(PLENTY, "1")]));
    let answer = Plain::read(unknown_session.send().await.expect("server answers")).await;
    answer.assert(401, "a cookie naming no session");
    assert!(answer.text.contains("unknown or expired"), "{:?}", answer.text);
    let bad_key = app
        .client
        .post(format!("{}/index.php?{skip}", app.url))
        .header(CONTENT_TYPE, FORM)
        .header("Idempotency-Key", "k".repeat(129))
        .body(form(&[(PLENTY, "1")]));
    Plain::read(bad_key.send().await.expect("server answers")).await.assert(400, "bad Idempotency-Key");
    assert_eq!(app.snapshot().await, before, "refusals changed stock or orders");
}

/// The body exactly as Python's `requests` (and so Locust) encodes
/// `data={"items[0][product_id]": 100, "items[0][count]": 1, "items[1][product_id]": 7, "items[1][count]": 2,
/// "delivery[address]": "Kyiv, Khreshchatyk 1", "delivery[phone]": "+380441234567",
/// "delivery[email]": "buyer@example.com", "username": "locust user"}`, with its headers.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_python_requests_body_byte_for_byte(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const BODY: &str = "items%5B0%5D%5Bproduct_id%5D=100&items%5B0%5D%5Bcount%5D=1&items%5B1%5D%5Bproduct_id%5D=7\
                        &items%5B1%5D%5Bcount%5D=2&delivery%5Baddress%5D=Kyiv%2C+Khreshchatyk+1\
                        &delivery%5Bphone%5D=%2B380441234567&delivery%5Bemail%5D=buyer%40example.com\
                        &username=locust+user";
    let app = spawn_app(connect, setup()).await;
    let request = app
        .client
        .post(format!("{}/index.php?action=purchase&mode=sql-atomic&skip_auth=1", app.url))
        .header("User-Agent", "python-requests/2.34.2")
        .header("Accept", "*/*")
        .header("Accept-Encoding", "gzip, deflate")
        .header(CONTENT_TYPE, FORM)
        .body(BODY);
    let answer = Plain::read(request.send().await.expect("server answers")).await;
    let order_id = answer.order_id("python body");
    let order = app.get_json(&format!("/orders/{order_id}")).await;
    assert_eq!(order["delivery"]["address"], "Kyiv, Khreshchatyk 1", "decoded: {order}");
    assert_eq!(order["delivery"]["phone"], "+380441234567", "`+` encoded as %2B stays a plus: {order}");
    assert_eq!(order["delivery"]["email"], "buyer@example.com", "{order}");
    assert_eq!(order["user"], "locust user", "`+` is a space: {order}");
    let items: Vec<(i64, i64)> = order["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| (item["product_id"].as_i64().expect("id"), item["quantity"].as_i64().expect("quantity")))
        .collect();
    assert_eq!(items, [(7, 2), (100, 1)], "both items, sorted: {order}");
    assert_eq!((app.stock(100).await, app.stock(7).await), (999, 48));
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn auth_sets_a_cookie_that_later_purchases_carry(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    let locust = cookie_client();
    let auth = post(&app, &locust, "action=auth", "username=alice").await;
    auth.assert(200, "auth");
    assert_eq!(auth.text, "Authenticated Successfully: alice");
    let cookie = auth.cookie.expect("auth sets a cookie");
    assert!(cookie.starts_with("checkout_session="), "the session cookie: {cookie}");

    let order_id = post(&app, &locust, PURCHASE, form(&[(PLENTY, "1")])).await.order_id("with the cookie");
    let order = app.get_json(&format!("/orders/{order_id}")).await;
    assert_eq!(order["user"], "alice", "the session's user is the order's: {order}");

    let named =
        post(&app, &locust, PURCHASE, form(&[(PLENTY, "1")]) + "&username=bob").await.order_id("named");
    let order = app.get_json(&format!("/orders/{named}")).await;
    assert_eq!(order["user"], "bob", "a form username is recorded over the session's: {order}");

    // The same session serves the JSON routes.
    let mut body = crate::helpers::order_body(&[(PLENTY, 1)]);
    body.as_object_mut().expect("object").remove("user");
    let json = locust
        .post(format!("{}/strategies/sql-atomic/purchase", app.url))
        .json(&body)
        .send()
        .await
        .expect("server answers");
    assert_eq!(json.status(), 201, "the seed's session works on the JSON routes");

    let stranger = post(&app, &app.client, PURCHASE, form(&[(PLENTY, "1")])).await;
    stranger.assert(401, "a client without the cookie");
    assert_eq!(app.stock(PLENTY).await, 997);
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn session_stop_ends_the_session(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    let locust = cookie_client();
    post(&app, &locust, "action=auth", "username=alice").await.assert(200, "auth");
    post(&app, &locust, &format!("{PURCHASE}&session_stop=0"), form(&[(PLENTY, "1")])).await.order_id("kept");
    post(&app, &locust, &format!("{PURCHASE}&session_stop=1&mark=1"), form(&[(PLENTY, "1")]))
        .await
        .order_id("the last purchase of the session");
    let before = app.snapshot().await;
    let after = post(&app, &locust, PURCHASE, form(&[(PLENTY, "1")])).await;
    after.assert(401, "the same cookie after session_stop=1");
    assert_eq!(app.snapshot().await, before, "a refused purchase takes nothing");
    post(&app, &locust, "action=auth", "username=alice").await.assert(200, "a new session");
    post(&app, &locust, PURCHASE, form(&[(PLENTY, "1")])).await.order_id("with the new session");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn auth_refusals_are_text(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    for (name, body) in [
        ("no username", String::new()),
        ("blank username", "username=+".into()),
        ("username too long", format!("username={}", "u".repeat(513))),
        ("username as a group", "username[a]=x".into()),
    ] {
        let answer = post(&app, &app.client, "action=auth", body).await;
        answer.assert(400, name);
        assert!(answer.cookie.is_none(), "{name}: no session without a name");
    }
    let json = app
        .client
        .post(format!("{}/index.php?action=auth", app.url))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"username":"alice"}"#);
    Plain::read(json.send().await.expect("server answers")).await.assert(415, "JSON to the form endpoint");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn an_idempotency_key_replays_the_first_order(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    let send = || async {
        let request = app
            .client
            .post(format!("{}/index.php?{PURCHASE}&skip_auth=1", app.url))
            .header(CONTENT_TYPE, FORM)
            .header("Idempotency-Key", "seed-retry-1")
            .body(form(&[(PLENTY, "3")]));
        Plain::read(request.send().await.expect("server answers")).await
    };
    let first = send().await.order_id("first");
    let again = send().await.order_id("replay");
    assert_eq!(first, again, "the replay names the first order");
    assert_eq!(app.order_count().await, 1, "one order for one key");
    assert_eq!(app.stock(PLENTY).await, 997, "three units taken once");
}
