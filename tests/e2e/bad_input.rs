//! Every refusal of the contract, checked for its status, its JSON error body, and for leaving the
//! shop exactly as it was: no stock moved, no order written.
//!
//! Validation happens at the edge, before any strategy runs, so the table runs against one SQL
//! strategy; the memory strategy gets a shorter check that it refuses the same way. Every refused
//! body would otherwise be a purchase that fits the stock, so a check that lets one through shows
//! up as a changed snapshot, not only as a wrong status.

use checkout_strategies::{StrategyKind, order::MAX_FIELD_LEN};
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{Answer, Setup, TestApp, order_body, read_answer, spawn_app};

const KIND: StrategyKind = StrategyKind::SqlAtomic;
/// Plenty of stock: every refused request below would fit if it were let through.
const PLENTY: i64 = 100;
/// Little stock: four units do not fit.
const SCARCE: i64 = 200;
const UNKNOWN: i64 = 999;
/// The route that takes the strategy from `X-Strategy`.
const HEADER_ROUTE: &str = "/purchase";

/// Products 1..=60 from a random catalogue, plus the two named ones.
fn setup() -> Setup {
    let plan = serde_json::from_value(json!({
        "products": [{ "id": PLENTY, "stock": 10_000 }, { "id": SCARCE, "stock": 3 }],
        "random_products": { "count": 60, "min_stock": 1_000, "max_stock": 2_000, "seed": 1 },
    }))
    .expect("valid plan");
    Setup { plan, ..Setup::default() }
}

/// What a refusal must look like.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 400 `invalid_request` whose `detail` mentions this text.
    Invalid(&'static str),
    /// 400 `invalid_request` listing the strategies.
    MissingStrategy,
    /// 404 `unknown_strategy` listing the strategies.
    UnknownStrategy,
    /// 404 `unknown_product` naming this product.
    UnknownProduct(i64),
    /// 409 `sold_out` naming this product.
    SoldOut(i64),
    /// 413 `payload_too_large`.
    TooLarge,
    /// 415 `unsupported_media_type`.
    NotJson,
    /// 404 `not_found`.
    NoRoute,
    /// 405 `method_not_allowed`.
    WrongMethod,
}

#[derive(Debug)]
enum Payload {
    Json(Value),
    Raw { content_type: Option<&'static str>, bytes: Vec<u8> },
    Empty,
}

#[derive(Debug)]
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, HeaderValue)>,
    payload: Payload,
    expect: Expect,
}

impl Case {
    /// `POST /strategies/{KIND}/purchase` with `body`.
    fn body(name: &'static str, body: Value, expect: Expect) -> Self {
        Self {
            name,
            method: Method::POST,
            path: format!("/strategies/{KIND}/purchase"),
            headers: vec![],
            payload: Payload::Json(body),
            expect,
        }
    }

    /// `POST /strategies/{KIND}/purchase` with a body that fits and this `Idempotency-Key`.
    fn key(name: &'static str, key: HeaderValue) -> Self {
        let mut case = Self::body(name, order_body(&[(PLENTY, 1)]), Expect::Invalid("Idempotency-Key"));
        case.headers.push(("Idempotency-Key", key));
        case
    }

    fn raw(name: &'static str, content_type: Option<&'static str>, bytes: &[u8], expect: Expect) -> Self {
        let mut case = Self::body(name, Value::Null, expect);
        case.payload = Payload::Raw { content_type, bytes: bytes.to_vec() };
        case
    }

    fn at(mut self, method: Method, path: &str) -> Self {
        self.method = method;
        path.clone_into(&mut self.path);
        self
    }

    fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    async fn send(&self, app: &TestApp) -> Answer {
        let mut request = app.client.request(self.method.clone(), format!("{}{}", app.url, self.path));
        for (name, value) in &self.headers {
            request = request.header(*name, value.clone());
        }
        request = match &self.payload {
            Payload::Json(body) => request.json(body),
            Payload::Raw { content_type: Some(content_type), bytes } => {
                request.header(reqwest::header::CONTENT_TYPE, *content_type).body(bytes.clone())
            }
            Payload::Raw { content_type: None, bytes } => request.body(bytes.clone()),
            Payload::Empty => request,
        };
        read_answer(request.send().await.expect("server answers")).await
    }

    #[track_caller]
    fn check(&self, answer: &Answer) {
        let name = self.name;
        let body = &answer.body;
        match self.expect {
            Expect::Invalid(mention) => {
                answer.assert_error(400, "invalid_request");
                let detail = body["detail"].as_str().filter(|detail| !detail.is_empty());
                let detail =
                    detail.unwrap_or_else(|| panic!("{name}: invalid_request carries a detail: {body}"));
                assert!(detail.contains(mention), "{name}: detail names what is wrong ({mention:?}): {body}");
            }
            Expect::MissingStrategy => {
                answer.assert_error(400, "invalid_request");
                assert_eq!(body["strategies"], json!(StrategyKind::names()), "{name}: lists the strategies");
            }
            Expect::UnknownStrategy => {
                answer.assert_error(404, "unknown_strategy");
                assert_eq!(body["strategies"], json!(StrategyKind::names()), "{name}: lists the strategies");
            }
            Expect::UnknownProduct(id) => {
                answer.assert_error(404, "unknown_product");
                assert_eq!(body["product_id"], id, "{name}: names the unknown product: {body}");
            }
            Expect::SoldOut(id) => {
                answer.assert_error(409, "sold_out");
                assert_eq!(body["product_id"], id, "{name}: names the product that ran out: {body}");
            }
            Expect::TooLarge => answer.assert_error(413, "payload_too_large"),
            Expect::NotJson => answer.assert_error(415, "unsupported_media_type"),
            Expect::NoRoute => answer.assert_error(404, "not_found"),
            Expect::WrongMethod => {
                answer.assert_error(405, "method_not_allowed");
                let allow = answer.headers.get(reqwest::header::ALLOW).and_then(|value| value.to_str().ok());
                assert!(
                    allow.is_some_and(|allow| !allow.is_empty()),
                    "{name}: 405 names the allowed methods"
                );
            }
        }
    }
}

/// A purchase body with `field` of `items[0]` replaced by `value`.
fn with_item_field(field: &str, value: Value) -> Value {
    let mut body = order_body(&[(PLENTY, 1)]);
    body["items"][0][field] = value;
    body
}

/// A fitting purchase body without `field`.
fn without(field: &str) -> Value {
    let mut body = order_body(&[(PLENTY, 1)]);
    body.as_object_mut().expect("object").remove(field);
    body
}

fn with_delivery(field: &str, value: &str) -> Value {
    let mut body = order_body(&[(PLENTY, 1)]);
    body["delivery"][field] = json!(value);
    body
}

fn cases() -> Vec<Case> {
    let fifty_one: Vec<(i64, i64)> = (1..=51).map(|id| (id, 1)).collect();
    let mut oversized = order_body(&[(PLENTY, 1)]);
    oversized["user"] = json!("u".repeat(64 * 1024));
    let mut oversized_padding = order_body(&[(PLENTY, 1)]);
    oversized_padding["padding"] = json!("p".repeat(70 * 1024));
    let valid = serde_json::to_vec(&order_body(&[(PLENTY, 1)])).expect("serialise");
    vec![
        Case::raw(
            "malformed JSON",
            Some("application/json"),
            br#"{"items": [{"product_id": 100,"#,
            Expect::Invalid(""),
        ),
        Case::raw("empty body", Some("application/json"), b"", Expect::Invalid("")),
        Case::raw("JSON array instead of an object", Some("application/json"), b"[]", Expect::Invalid("")),
        Case::body(
            "empty items",
            json!({ "items": [], "delivery": order_body(&[])["delivery"] }),
            Expect::Invalid("items"),
        ),
        Case::body("quantity 0", order_body(&[(PLENTY, 0)]), Expect::Invalid("quantity")),
        Case::body("negative quantity", order_body(&[(PLENTY, -1)]), Expect::Invalid("quantity")),
        Case::body("quantity above the cap", order_body(&[(PLENTY, 101)]), Expect::Invalid("quantity")),
        Case::body(
            "quantity beyond u32",
            order_body(&[(PLENTY, i64::from(u32::MAX) + 1)]),
            Expect::Invalid("quantity"),
        ),
        Case::body("float quantity", with_item_field("quantity", json!(1.5)), Expect::Invalid("quantity")),
        Case::body("string quantity", with_item_field("quantity", json!("1")), Expect::Invalid("quantity")),
        Case::body("null quantity", with_item_field("quantity", Value::Null), Expect::Invalid("quantity")),
        Case::body("product_id 0", order_body(&[(0, 1)]), Expect::Invalid("product_id")),
        Case::body("negative product_id", order_body(&[(-PLENTY, 1)]), Expect::Invalid("product_id")),
        Case::body(
            "string product_id",
            with_item_field("product_id", json!("100")),
            Expect::Invalid("product_id"),
        ),
        Case::body(
            "duplicated product id",
            order_body(&[(PLENTY, 1), (PLENTY, 1)]),
            Expect::Invalid("appears twice"),
        ),
        Case::body("51 items", order_body(&fifty_one), Expect::Invalid("at most 50")),
        Case::body("missing items field", without("items"), Expect::Invalid("items")),
        Case::body(
            "items not a list",
            json!({ "items": {}, "delivery": order_body(&[])["delivery"] }),
            Expect::Invalid("items"),
        ),
        Case::body("missing delivery", without("delivery"), Expect::Invalid("delivery")),
        Case::body("blank phone", with_delivery("phone", "  "), Expect::Invalid("delivery.phone")),
        Case::body("empty address", with_delivery("address", ""), Expect::Invalid("delivery.address")),
        Case::body(
            "overlong email",
            with_delivery("email", &"e".repeat(MAX_FIELD_LEN + 1)),
            Expect::Invalid("delivery.email"),
        ),
        Case::body(
            "missing email",
            {
                let mut body = order_body(&[(PLENTY, 1)]);
                body["delivery"].as_object_mut().expect("object").remove("email");
                body
            },
            Expect::Invalid("email"),
        ),
        Case::body("unknown strategy by route", order_body(&[(PLENTY, 1)]), Expect::UnknownStrategy)
            .at(Method::POST, "/strategies/sql-magic/purchase"),
        Case::body("unknown strategy by header", order_body(&[(PLENTY, 1)]), Expect::UnknownStrategy)
            .at(Method::POST, HEADER_ROUTE)
            .with_header("X-Strategy", "sql-magic"),
        Case::body("missing X-Strategy header", order_body(&[(PLENTY, 1)]), Expect::MissingStrategy)
            .at(Method::POST, HEADER_ROUTE),
        Case::body("quantity 0 by header", order_body(&[(PLENTY, 0)]), Expect::Invalid("quantity"))
            .at(Method::POST, HEADER_ROUTE)
            .with_header("X-Strategy", KIND.as_str()),
        Case::key(
            "Idempotency-Key of 129 characters",
            HeaderValue::from_str(&"k".repeat(129)).expect("header"),
        ),
        Case::key("empty Idempotency-Key", HeaderValue::from_static("")),
        Case::key("Idempotency-Key with a control character", HeaderValue::from_static("retry\tone")),
        Case::key(
            "non-ASCII Idempotency-Key",
            HeaderValue::from_bytes("ключ".as_bytes()).expect("obs-text header"),
        ),
        Case::body("body over 64 KiB in a field", oversized, Expect::TooLarge),
        Case::body("body over 64 KiB in padding", oversized_padding, Expect::TooLarge),
        Case::raw("text/plain content type", Some("text/plain"), &valid, Expect::NotJson),
        Case::raw("no content type", None, &valid, Expect::NotJson),
        Case::body("unknown product", order_body(&[(UNKNOWN, 1)]), Expect::UnknownProduct(UNKNOWN)),
        Case::body(
            "unknown product beside a known one",
            order_body(&[(PLENTY, 1), (UNKNOWN, 1)]),
            Expect::UnknownProduct(UNKNOWN),
        ),
        Case::body("sold out", order_body(&[(SCARCE, 4)]), Expect::SoldOut(SCARCE)),
        Case::body(
            "sold out beside a product in stock",
            order_body(&[(PLENTY, 5), (SCARCE, 4)]),
            Expect::SoldOut(SCARCE),
        ),
        Case {
            payload: Payload::Empty,
            ..Case::body("unknown route", Value::Null, Expect::NoRoute).at(Method::GET, "/nope")
        },
        Case {
            payload: Payload::Empty,
            ..Case::body("unknown route under a known prefix", Value::Null, Expect::NoRoute)
                .at(Method::GET, "/strategies/sql-atomic")
        },
        Case {
            payload: Payload::Empty,
            ..Case::body("GET on a purchase route", Value::Null, Expect::WrongMethod)
                .at(Method::GET, &format!("/strategies/{KIND}/purchase"))
        },
        Case::body("PUT on /purchase", order_body(&[(PLENTY, 1)]), Expect::WrongMethod)
            .at(Method::PUT, HEADER_ROUTE),
        Case {
            payload: Payload::Empty,
            ..Case::body("DELETE /strategies", Value::Null, Expect::WrongMethod)
                .at(Method::DELETE, "/strategies")
        },
    ]
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn every_refusal_is_json_and_changes_nothing(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, setup()).await;
    let before = app.snapshot().await;
    assert_eq!(before.orders, 0, "a fresh shop holds no order");
    for case in cases() {
        let answer = case.send(&app).await;
        case.check(&answer);
        assert_eq!(app.snapshot().await, before, "{}: a refused request changed stock or orders", case.name);
    }
    let stats = app.stats_of(KIND).await;
    assert_eq!(stats["confirmed"], 0, "nothing refused is counted as confirmed: {stats}");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "refusals leave the books clean: {audit}");
    assert_eq!(audit["total"]["units_in_orders"], 0, "refusals sell nothing: {audit}");

    // The same shop still sells: the refusals above were about the requests, not the state.
    app.buy(KIND, &order_body(&[(PLENTY, 1)]), None).await.assert_placed(KIND);
    assert_eq!(app.stock(PLENTY).await, 9_999, "a valid purchase after the refusals takes its unit");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn memory_refuses_like_the_sql_strategies(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const MEMORY: StrategyKind = StrategyKind::Memory;
    let app = spawn_app(connect, setup()).await;
    let ledger_before = app.audit().await["ledgers"][MEMORY.as_str()].clone();
    let sql_before = app.snapshot().await;
    let refusals = [
        Case::body("quantity 0", order_body(&[(PLENTY, 0)]), Expect::Invalid("quantity")),
        Case::body(
            "duplicated product id",
            order_body(&[(PLENTY, 1), (PLENTY, 2)]),
            Expect::Invalid("twice"),
        ),
        Case::body("unknown product", order_body(&[(UNKNOWN, 1)]), Expect::UnknownProduct(UNKNOWN)),
        Case::body("sold out", order_body(&[(SCARCE, 4)]), Expect::SoldOut(SCARCE)),
        Case::body(
            "sold out beside a product in stock",
            order_body(&[(PLENTY, 5), (SCARCE, 4)]),
            Expect::SoldOut(SCARCE),
        ),
        Case::key(
            "Idempotency-Key of 129 characters",
            HeaderValue::from_str(&"k".repeat(129)).expect("header"),
        ),
    ];
    for case in refusals {
        let case = Case { path: format!("/strategies/{MEMORY}/purchase"), ..case };
        let answer = case.send(&app).await;
        case.check(&answer);
        let ledger = app.audit().await["ledgers"][MEMORY.as_str()].clone();
        assert_eq!(ledger, ledger_before, "{}: a refused request changed the memory ledger", case.name);
    }
    assert_eq!(ledger_before["total"]["orders"], 0, "memory starts without orders: {ledger_before}");
    assert_eq!(app.snapshot().await, sql_before, "memory refusals do not touch PostgreSQL");
}
