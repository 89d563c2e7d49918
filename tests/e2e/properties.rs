//! Properties of the purchase routes over generated bodies: random JSON shapes, huge, negative,
//! zero, float and string quantities, deep nesting, invalid UTF-8, thousands of items, missing and
//! extra fields, unknown products, wrong content types, with well-formed orders mixed in; and the
//! same for the seed's form endpoint in PHP bracket notation.
//!
//! For every request, whatever it holds:
//! - the answer is never a 5xx: a 4xx error (JSON with `error` and `message`, or text on the seed
//!   endpoint) or a placed order (201/202, or 200 on the seed endpoint) with its order id;
//! - a refused request (any 4xx, sold out included) leaves PostgreSQL, the Redis mirror, the
//!   queues and the memory ledger exactly as they were;
//! - a placed order exists (`GET /orders/{id}`) and took exactly its lines from the books its
//!   strategy sells from, and nothing else;
//! - a well-formed order is placed or sold out, never refused as bad input, and a body known to
//!   be bad is never placed.
//!
//! Each test runs one server and a bounded number of cases against one strategy of each family.
//! proptest drives the cases from a blocking thread, each case run on the test's runtime, which
//! keeps serving meanwhile; a failure is shrunk against the same server, case by case.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use checkout_strategies::{StockPlan, StrategyKind};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{Setup, Snapshot, TestApp, plan_of, spawn_app};

/// Cases per test: enough to meet every generator many times, few enough that the module runs in
/// seconds.
const CASES: u32 = 96;
/// Products 1..=8 have plenty of stock; [`SCARCE`] has three units, so some orders sell out.
const PLENTIFUL: i64 = 8;
const SCARCE: i64 = 9;
/// Every product in the catalogue.
const CATALOGUE: std::ops::RangeInclusive<i64> = 1..=SCARCE;
const FORM: &str = "application/x-www-form-urlencoded";

fn setup() -> Setup {
    let mut products: Vec<(i64, i64)> = (1..=PLENTIFUL).map(|id| (id, 100_000)).collect();
    products.push((SCARCE, 3));
    let plan: StockPlan = plan_of(&products);
    Setup { plan, ..Setup::default() }
}

/// The body names its buyer at the top level (an extra field may hold a nested `"user"` too).
fn names_buyer(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|body| body.get("user").is_some_and(Value::is_string))
}

// ---------------------------------------------------------------------------------------------
// What a case expects, and what each request sends
// ---------------------------------------------------------------------------------------------

/// What a generated request must get, beyond the properties every request has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Must {
    /// A well-formed order: placed, or refused as sold out only.
    Place,
    /// Known to be bad: refused, with any 4xx.
    Refuse,
    /// Anything the contract allows.
    Either,
}

/// A body as bytes, shown short when a case fails.
#[derive(Clone)]
struct Body(Vec<u8>);

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 400;
        let text = String::from_utf8_lossy(&self.0[..self.0.len().min(SHOWN)]);
        let more = if self.0.len() > SHOWN { format!("… ({} bytes)", self.0.len()) } else { String::new() };
        write!(f, "{text:?}{more}")
    }
}

/// How a JSON purchase names its strategy.
#[derive(Debug, Clone)]
enum Route {
    /// `POST /strategies/{name}/purchase`.
    Path,
    /// `POST /purchase` with `X-Strategy`, the name padded with spaces or not.
    Header { padded: bool },
    /// `POST /purchase` with an `X-Strategy` that names no strategy.
    UnknownStrategy(String),
}

/// One request to a JSON purchase route.
#[derive(Debug, Clone)]
struct JsonCase {
    what: &'static str,
    must: Must,
    route: Route,
    content_type: Option<&'static str>,
    skip_auth: bool,
    body: Body,
}

/// One request to the seed's `POST /index.php?action=purchase`.
#[derive(Debug, Clone)]
struct FormCase {
    what: &'static str,
    must: Must,
    /// A `mode` naming no strategy instead of the test's.
    unknown_mode: bool,
    content_type: Option<&'static str>,
    skip_auth: bool,
    body: Body,
}

// ---------------------------------------------------------------------------------------------
// Well-formed orders
// ---------------------------------------------------------------------------------------------

/// A well-formed order: distinct catalogue products, small quantities, delivery filled in.
#[derive(Debug, Clone)]
struct Order {
    lines: Vec<(i64, i64)>,
    address: String,
    phone: String,
    email: String,
    user: Option<String>,
}

/// Printable, non-blank text, Cyrillic included.
fn text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9А-Яа-яІіЇїЄє][A-Za-z0-9А-Яа-яІіЇїЄє ,.+@'/-]{0,30}"
}

fn order() -> impl Strategy<Value = Order> {
    let products = proptest::sample::subsequence(CATALOGUE.collect::<Vec<_>>(), 1..=5).prop_shuffle();
    (products, proptest::collection::vec(1..=5_i64, 5), text(), text(), text(), proptest::option::of(text()))
        .prop_map(|(products, quantities, address, phone, email, user)| Order {
            lines: products.into_iter().zip(quantities).collect(),
            address,
            phone,
            email,
            user,
        })
}

impl Order {
    fn json(&self) -> Value {
        let items: Vec<Value> = self
            .lines
            .iter()
            .map(|(id, quantity)| json!({ "product_id": id, "quantity": quantity }))
            .collect();
        let mut body = json!({
            "items": items,
            "delivery": { "address": self.address, "phone": self.phone, "email": self.email },
        });
        if let Some(user) = &self.user {
            body["user"] = json!(user);
        }
        body
    }

    /// The seed's form fields, items at the given indices.
    fn form_fields(&self, indices: &[u32]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        for ((product, count), index) in self.lines.iter().zip(indices) {
            fields.push((format!("items[{index}][product_id]"), product.to_string()));
            fields.push((format!("items[{index}][count]"), count.to_string()));
        }
        fields.push(("delivery[address]".into(), self.address.clone()));
        fields.push(("delivery[phone]".into(), self.phone.clone()));
        fields.push(("delivery[email]".into(), self.email.clone()));
        if let Some(user) = &self.user {
            fields.push(("username".into(), user.clone()));
        }
        fields
    }
}

// ---------------------------------------------------------------------------------------------
// JSON bodies
// ---------------------------------------------------------------------------------------------

fn serialise(body: &Value) -> Vec<u8> {
    serde_json::to_vec(body).expect("a Value serialises")
}

/// Numbers and non-numbers that no quantity or product id may be.
fn bad_number() -> impl Strategy<Value = Value> {
    select(vec![
        json!(0),
        json!(-1),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e300),
        json!(-1e300),
        json!(1.5),
        json!(1.0),
        json!(-0.0),
        json!(1e-7),
        json!("1"),
        json!(""),
        Value::Null,
        json!(true),
        json!([1]),
        json!({ "value": 1 }),
    ])
}

/// Delivery text no order may carry.
fn bad_text() -> impl Strategy<Value = Value> {
    select(vec![
        json!(""),
        json!("   "),
        json!("\t"),
        json!("a\u{0}b"),
        json!("line\nbreak"),
        json!("esc\u{1b}[31m"),
        json!("é".repeat(300)),
        json!(5),
        Value::Null,
        json!([]),
        json!({}),
    ])
}

/// Any JSON value, nested a few levels; keys often the contract's own.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        (1..=SCARCE + 2).prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec!["items", "delivery", "user", "product_id", "quantity", "address", "phone", "email"])
            .prop_map(str::to_owned),
        "[a-z_]{1,8}",
    ]
}

/// A JSON body and what it must get.
type Shaped = (&'static str, Must, Body);

fn valid_json() -> impl Strategy<Value = Shaped> {
    order().prop_map(|order| ("well-formed order", Must::Place, Body(serialise(&order.json()))))
}

/// One change to a well-formed order.
#[derive(Debug, Clone)]
enum Edit {
    /// Replaces the value at a JSON pointer.
    Set(&'static str, Value),
    /// Removes the field at a JSON pointer.
    Remove(&'static str),
    /// Adds a field no one reads at a JSON pointer's object: ignored.
    Extra(&'static str, String, Value),
    /// Repeats the first item.
    DuplicateItem,
    /// Puts the whole body inside an array.
    Wrap,
}

fn edit() -> impl Strategy<Value = (&'static str, Must, Edit)> {
    let quantity =
        bad_number().prop_map(|v| ("bad quantity", Must::Refuse, Edit::Set("/items/0/quantity", v)));
    let big_quantity = (101..=i64::MAX)
        .prop_map(|v| ("quantity above the cap", Must::Refuse, Edit::Set("/items/0/quantity", json!(v))));
    let product =
        bad_number().prop_map(|v| ("bad product id", Must::Refuse, Edit::Set("/items/0/product_id", v)));
    let unknown = (SCARCE + 1..=i64::MAX)
        .prop_map(|id| ("unknown product", Must::Refuse, Edit::Set("/items/0/product_id", json!(id))));
    let delivery = (select(vec!["/delivery/address", "/delivery/phone", "/delivery/email"]), bad_text())
        .prop_map(|(at, v)| ("bad delivery field", Must::Refuse, Edit::Set(at, v)));
    let user = prop_oneof![
        bad_text().prop_filter("null is no user, not a bad one", |v| !v.is_null()),
        Just(json!("u".repeat(513))),
        Just(json!(42)),
    ]
    .prop_map(|v| ("bad user", Must::Refuse, Edit::Set("/user", v)));
    let items =
        select(vec![json!([]), json!({}), json!("x"), Value::Null, json!(1), json!([[]]), json!([1])])
            .prop_map(|v| ("bad items", Must::Refuse, Edit::Set("/items", v)));
    let missing = select(vec![
        "/items",
        "/delivery",
        "/delivery/address",
        "/delivery/phone",
        "/delivery/email",
        "/items/0/product_id",
        "/items/0/quantity",
    ])
    .prop_map(|at| ("missing field", Must::Refuse, Edit::Remove(at)));
    let extra = (select(vec!["", "/delivery", "/items/0"]), "x_[a-z]{1,8}", any_json())
        .prop_map(|(at, name, v)| ("extra field", Must::Place, Edit::Extra(at, name, v)));
    prop_oneof![
        quantity,
        big_quantity,
        product,
        unknown,
        delivery,
        user,
        items,
        missing,
        extra,
        Just(("product twice", Must::Refuse, Edit::DuplicateItem)),
        Just(("body in an array", Must::Refuse, Edit::Wrap)),
        Just((NO_BUYER, Must::Refuse, Edit::Remove("/user"))),
    ]
}

/// An order that names no buyer, sent without a session or `skip_auth`: 401.
const NO_BUYER: &str = "no buyer, no session";

fn apply(mut body: Value, edit: Edit) -> Value {
    let split = |at: &'static str| at.rsplit_once('/').expect("a pointer");
    match edit {
        Edit::Set(at, value) => {
            // `/user` may be absent from a well-formed order: make room for it.
            if at == "/user" {
                body["user"] = Value::Null;
            }
            *body.pointer_mut(at).expect("the pointer names a field") = value;
        }
        Edit::Remove(at) => {
            let (parent, name) = split(at);
            body.pointer_mut(parent).and_then(Value::as_object_mut).expect("an object").remove(name);
        }
        Edit::Extra(at, name, value) => {
            body.pointer_mut(at).and_then(Value::as_object_mut).expect("an object").insert(name, value);
        }
        Edit::DuplicateItem => {
            let items = body["items"].as_array_mut().expect("items");
            let first = items[0].clone();
            items.push(first);
        }
        Edit::Wrap => body = json!([body]),
    }
    body
}

fn edited_json() -> impl Strategy<Value = Shaped> {
    (order(), edit())
        .prop_map(|(order, (what, must, edit))| (what, must, Body(serialise(&apply(order.json(), edit)))))
}

/// More items than an order holds: 400, or 413 past the body limit.
fn many_items_json() -> impl Strategy<Value = Shaped> {
    (51..=4_000_usize, order()).prop_map(|(count, order)| {
        let mut body = order.json();
        body["items"] = (1..=count).map(|id| json!({ "product_id": id, "quantity": 1 })).collect();
        ("thousands of items", Must::Refuse, Body(serialise(&body)))
    })
}

/// Arrays or objects nested up to 40,000 deep, as the body or inside one of its fields.
fn deep_json() -> impl Strategy<Value = Shaped> {
    (1..=40_000_usize, any::<bool>(), select(vec!["", "items", "user", "quantity"]), order()).prop_map(
        |(depth, arrays, place, order)| {
            let (open, close) = if arrays { ("[", "]") } else { (r#"{"a":"#, "}") };
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let body = match place {
                "" => nested,
                "quantity" => {
                    let mut body = order.json();
                    body["items"][0]["quantity"] = json!("@");
                    serde_json::to_string(&body).expect("serialise").replace(r#""@""#, &nested)
                }
                field => {
                    let mut body = order.json();
                    body[field] = json!("@");
                    serde_json::to_string(&body).expect("serialise").replace(r#""@""#, &nested)
                }
            };
            ("deep nesting", Must::Refuse, Body(body.into_bytes()))
        },
    )
}

/// A well-formed order with bytes in one of its strings that are not UTF-8, or an escape that is
/// no character.
fn bad_utf8_json() -> impl Strategy<Value = Shaped> {
    let bad: Vec<&'static [u8]> = vec![
        b"\xff",
        b"\xfe\xff",
        b"\xc3\x28",
        b"\xed\xa0\x80",
        b"\xf8\x88\x80\x80\x80",
        b"\x80",
        b"\xe2\x82",
        br"\ud800",
        br"\udc00x",
    ];
    (order(), select(vec!["address", "phone", "email"]), select(bad)).prop_map(|(order, field, bytes)| {
        let mut body = order.json();
        body["delivery"][field] = json!("@@");
        let text = serde_json::to_vec(&body).expect("serialise");
        let at = text.windows(2).position(|w| w == b"@@").expect("the placeholder");
        let mut spliced = text[..at].to_vec();
        spliced.extend_from_slice(b"ok ");
        spliced.extend_from_slice(bytes);
        spliced.extend_from_slice(&text[at + 2..]);
        ("invalid UTF-8 in a string", Must::Refuse, Body(spliced))
    })
}

fn any_json_body() -> impl Strategy<Value = Shaped> {
    prop_oneof![
        any_json().prop_map(|v| ("random JSON", Must::Either, Body(serialise(&v)))),
        // An object whose fields are the contract's, holding anything.
        proptest::collection::btree_map(key(), any_json(), 0..5).prop_map(|fields| {
            let body = Value::Object(fields.into_iter().collect());
            ("random JSON object", Must::Either, Body(serialise(&body)))
        }),
        proptest::collection::vec(any::<u8>(), 0..1_024).prop_map(|bytes| (
            "random bytes",
            Must::Either,
            Body(bytes)
        )),
    ]
}

fn json_case() -> impl Strategy<Value = JsonCase> {
    let shaped = prop_oneof![
        3 => valid_json(),
        8 => edited_json(),
        1 => many_items_json(),
        1 => deep_json(),
        1 => bad_utf8_json(),
        2 => any_json_body(),
    ];
    let route = prop_oneof![
        4 => Just(Route::Path),
        2 => any::<bool>().prop_map(|padded| Route::Header { padded }),
        1 => "[a-z-]{0,12}"
            .prop_filter("names no strategy", |name| name.parse::<StrategyKind>().is_err())
            .prop_map(Route::UnknownStrategy),
    ];
    let content_type = prop_oneof![
        8 => Just(Some("application/json")),
        1 => Just(Some("application/json; charset=utf-8")),
        1 => select(vec![None, Some("text/plain"), Some(FORM), Some("application/xml")]),
    ];
    (shaped, route, content_type, any::<bool>()).prop_map(
        |((what, must, body), route, content_type, skip_auth)| {
            let mut case = JsonCase { what, must, route, content_type, skip_auth, body };
            if matches!(case.route, Route::UnknownStrategy(_)) {
                case.must = Must::Refuse;
                case.what = "unknown strategy";
            }
            if !matches!(content_type, Some("application/json" | "application/json; charset=utf-8")) {
                case.must = Must::Refuse;
                case.what = "not JSON";
            }
            // A well-formed order names its buyer or says skip_auth; without either it is refused 401.
            if case.what == NO_BUYER {
                case.skip_auth = false;
            } else if case.must == Must::Place && !names_buyer(&case.body.0) {
                case.skip_auth = true;
            }
            case
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Form bodies
// ---------------------------------------------------------------------------------------------

/// Encodes fields as a browser or `requests` does: brackets percent-encoded, spaces as `+`.
fn encode(fields: &[(String, String)], raw_brackets: bool) -> Vec<u8> {
    let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let encoded = if raw_brackets { encoded.replace("%5B", "[").replace("%5D", "]") } else { encoded };
    encoded.into_bytes()
}

/// A well-formed order's fields at sparse, shuffled indices.
fn order_fields() -> impl Strategy<Value = (Order, Vec<(String, String)>)> {
    (order(), proptest::sample::subsequence((0..1_000).collect::<Vec<u32>>(), 5).prop_shuffle()).prop_map(
        |(order, indices)| {
            let fields = order.form_fields(&indices);
            (order, fields)
        },
    )
}

/// A form body and what it must get.
type Form = (&'static str, Must, Vec<(String, String)>);

fn valid_form() -> impl Strategy<Value = Form> {
    (order_fields(), any::<bool>(), any::<bool>()).prop_map(|((_, mut fields), extra, repeated)| {
        if extra {
            fields.push(("coupon".into(), "SALE".into()));
            fields.push(("mark[a][b]".into(), "1".into()));
            let (product_id, _) = fields.first().expect("an item").clone();
            fields.insert(0, (product_id.replace("[product_id]", "[price]"), "9".into()));
        }
        if repeated {
            // As in PHP, a repeated field keeps its last value.
            let (name, _) =
                fields.iter().find(|(name, _)| name.ends_with("[count]")).expect("a count").clone();
            fields.insert(0, (name, "not a number".into()));
        }
        ("well-formed form", Must::Place, fields)
    })
}

/// One change to a well-formed form that makes it bad.
fn edited_form() -> impl Strategy<Value = Form> {
    let count =
        select(vec!["0", "-1", "101", "1.5", "abc", "", "99999999999999999999", "4294967297", "1e2", "0x10"]);
    let product = prop_oneof![
        select(vec!["0", "-3", "x", "", "1.0", "99999999999999999999"]).prop_map(str::to_owned),
        (SCARCE + 1..=i64::MAX).prop_map(|id| id.to_string()),
    ];
    let delivery_value = select(vec!["", " ", "\t", "a\u{0}b", "line\nbreak"]).prop_map(str::to_owned);
    let bad_name = select(vec![
        "items[0",
        "[0]",
        "items[0]x",
        "a[b[c]]",
        "items]0[",
        "items[0][count][x]",
        "a[b][c][d]",
        "items[x][count]",
        "items[01][count]",
        "items[-1][count]",
        "items",
        "delivery",
        "items[0]",
    ]);
    let edit = prop_oneof![
        count.prop_map(|v| ("bad count", Some(("[count]", v.to_owned())), None)),
        product.prop_map(|v| ("bad product id", Some(("[product_id]", v)), None)),
        (select(vec!["delivery[address]", "delivery[phone]", "delivery[email]"]), delivery_value)
            .prop_map(|(name, v)| ("bad delivery field", Some((name, v)), None)),
        Just(("long username", Some(("username", "u".repeat(513))), None)),
        bad_name.prop_map(|name| ("bad field name", None, Some(name))),
        Just(("missing count", Some(("[count]", "@remove".to_owned())), None)),
        Just(("missing product id", Some(("[product_id]", "@remove".to_owned())), None)),
        Just(("missing delivery field", Some(("delivery[phone]", "@remove".to_owned())), None)),
        Just(("product twice", Some(("@twice", String::new())), None)),
    ];
    (order_fields(), edit).prop_map(|((order, mut fields), (what, change, added))| {
        match (change, added) {
            (Some(("@twice", _)), _) => {
                let product = order.lines[0].0;
                fields.push(("items[1000][product_id]".into(), product.to_string()));
                fields.push(("items[1000][count]".into(), "1".into()));
            }
            (Some((suffix, value)), _) => {
                if suffix == "username" && !fields.iter().any(|(name, _)| name == "username") {
                    fields.push(("username".into(), String::new()));
                }
                let at = fields.iter().position(|(name, _)| name.ends_with(suffix)).expect("the field");
                if value == "@remove" {
                    fields.remove(at);
                } else {
                    fields[at].1 = value;
                }
            }
            (None, Some(name)) => fields.push((name.to_owned(), "1".to_owned())),
            (None, None) => unreachable!("every edit changes something"),
        }
        (what, Must::Refuse, fields)
    })
}

/// More fields than a form may hold, or more items than an order holds.
fn many_fields_form() -> impl Strategy<Value = Form> {
    (order_fields(), 1_001..=3_000_usize, 51..=600_u32, any::<bool>()).prop_map(
        |((_, mut fields), extra, items, by_fields)| {
            if by_fields {
                fields.extend((0..extra).map(|i| (format!("f{i}"), "1".to_owned())));
                ("thousands of fields", Must::Refuse, fields)
            } else {
                for i in 0..items {
                    fields.push((format!("items[{}][product_id]", 2_000 + i), (i + 1).to_string()));
                    fields.push((format!("items[{}][count]", 2_000 + i), "1".to_owned()));
                }
                ("thousands of items", Must::Refuse, fields)
            }
        },
    )
}

/// Random names (bracketed or not) and values, percent-encoding that decodes to no UTF-8
/// included.
fn random_form() -> impl Strategy<Value = Form> {
    let name = prop_oneof![
        key(),
        (key(), "[a-z0-9]{0,4}", "[a-z0-9]{0,6}").prop_map(|(base, a, b)| format!("{base}[{a}][{b}]")),
        ".{0,10}",
    ];
    let value =
        prop_oneof![".{0,16}", (1..=SCARCE + 2).prop_map(|n| n.to_string()), Just("\u{fffd}".to_owned())];
    proptest::collection::vec((name, value), 0..30).prop_map(|fields| ("random form", Must::Either, fields))
}

fn form_case() -> impl Strategy<Value = FormCase> {
    let fields =
        prop_oneof![3 => valid_form(), 6 => edited_form(), 1 => many_fields_form(), 2 => random_form()];
    let raw = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..1_024).prop_map(|bytes| (
            "random bytes",
            Must::Either,
            Body(bytes)
        )),
        // Percent escapes that decode to bytes that are not UTF-8, in names and values.
        (order_fields(), select(vec!["%FF", "%FE%FF", "%C3%28", "%ED%A0%80", "%80", "%", "%G1"])).prop_map(
            |((_, fields), bad)| {
                let mut body = encode(&fields, false);
                body.extend_from_slice(format!("&delivery[address]=x{bad}y&na{bad}me=1").as_bytes());
                ("bad percent-encoding", Must::Either, Body(body))
            }
        ),
    ];
    let body = prop_oneof![
        8 => (fields, any::<bool>()).prop_map(|((what, must, fields), raw)| (what, must, Body(encode(&fields, raw)))),
        1 => raw,
    ];
    let content_type = prop_oneof![
        9 => Just(Some(FORM)),
        1 => Just(Some("application/x-www-form-urlencoded; charset=UTF-8")),
        1 => select(vec![None, Some("application/json"), Some("text/plain"), Some("multipart/form-data")]),
    ];
    (body, content_type, prop::bool::weighted(0.9), prop::bool::weighted(0.05)).prop_map(
        |((what, must, body), content_type, skip_auth, unknown_mode)| {
            let mut case = FormCase { what, must, unknown_mode, content_type, skip_auth, body };
            if unknown_mode {
                (case.what, case.must) = ("unknown mode", Must::Refuse);
            }
            if !matches!(content_type, Some(FORM | "application/x-www-form-urlencoded; charset=UTF-8")) {
                (case.what, case.must) = ("not a form", Must::Refuse);
            }
            if !skip_auth && case.must == Must::Place {
                // The seed's username is no login: without skip_auth or a session, 401.
                (case.what, case.must) = ("no session", Must::Refuse);
            }
            case
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Sending, and the books before and after
// ---------------------------------------------------------------------------------------------

/// An answer read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    retry_after: bool,
    text: String,
}

async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let header = |name| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
    let retry_after = header(reqwest::header::RETRY_AFTER).is_some();
    let text = response.text().await.expect("read the body");
    Reply { status, content_type, retry_after, text }
}

impl JsonCase {
    async fn send(&self, app: &TestApp, kind: StrategyKind) -> Reply {
        let query = if self.skip_auth { "?skip_auth=1" } else { "" };
        let mut request = match &self.route {
            Route::Path => app.client.post(format!("{}/strategies/{kind}/purchase{query}", app.url)),
            Route::Header { padded } => {
                let name = if *padded { format!("  {kind} ") } else { kind.to_string() };
                app.client.post(format!("{}/purchase{query}", app.url)).header("X-Strategy", name)
            }
            Route::UnknownStrategy(name) => {
                app.client.post(format!("{}/purchase{query}", app.url)).header("X-Strategy", name.as_str())
            }
        };
        if let Some(content_type) = self.content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        read(request.body(self.body.0.clone()).send().await.expect("the server answers")).await
    }

    /// The order id of a placed order, after checking the answer is one the contract allows.
    fn order_id(&self, kind: StrategyKind, reply: &Reply) -> Result<Option<String>, TestCaseError> {
        let body: Value = serde_json::from_str(&reply.text)
            .map_err(|err| TestCaseError::fail(format!("a JSON route answered non-JSON {reply:?}: {err}")))?;
        prop_assert!(reply.content_type.starts_with("application/json"), "JSON declared: {reply:?}");
        if (200..300).contains(&reply.status) {
            let expected = if kind.spec().queued { (202, "pending") } else { (201, "confirmed") };
            prop_assert_eq!(
                (reply.status, body["status"].as_str().unwrap_or_default()),
                expected,
                "{:?}",
                reply
            );
            prop_assert_eq!(&body["strategy"], kind.as_str(), "the receipt names the strategy: {:?}", reply);
            let order_id = body["order_id"].as_str().unwrap_or_default();
            prop_assert!(uuid::Uuid::parse_str(order_id).is_ok(), "a UUID order id: {:?}", reply);
            return Ok(Some(order_id.to_owned()));
        }
        prop_assert!((400..500).contains(&reply.status), "a 4xx or a placed order, got {reply:?}");
        let message = body["message"].as_str().unwrap_or_default();
        prop_assert!(body["error"].is_string() && !message.is_empty(), "error and message: {reply:?}");
        Ok(None)
    }
}

impl FormCase {
    async fn send(&self, app: &TestApp, mode: &str) -> Reply {
        let mode = if self.unknown_mode { "&mode=no-such-mode" } else { mode };
        let auth = if self.skip_auth { "&skip_auth=1" } else { "" };
        let mut request = app.client.post(format!("{}/index.php?action=purchase{mode}{auth}", app.url));
        if let Some(content_type) = self.content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        read(request.body(self.body.0.clone()).send().await.expect("the server answers")).await
    }

    /// The order id of a placed order, after checking the answer is one the seed endpoint allows.
    fn order_id(reply: &Reply) -> Result<Option<String>, TestCaseError> {
        prop_assert!(reply.content_type.starts_with("text/plain"), "the seed answers text: {reply:?}");
        prop_assert!(!reply.text.trim().is_empty(), "a message says what happened: {reply:?}");
        if reply.status == 200 {
            let order_id = reply
                .text
                .strip_prefix("Purchase successful: order ")
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_default();
            prop_assert!(uuid::Uuid::parse_str(order_id).is_ok(), "the seed's success text: {reply:?}");
            return Ok(Some(order_id.to_owned()));
        }
        prop_assert!((400..500).contains(&reply.status), "a 4xx or a placed order, got {reply:?}");
        Ok(None)
    }
}

/// Everything a purchase could touch: PostgreSQL, the Redis mirror, the queue of the strategy
/// under test and, for `memory`, its ledger.
#[derive(Debug, Clone, PartialEq)]
struct World {
    pg: Snapshot,
    redis_stock: BTreeMap<i64, Option<i64>>,
    queued: usize,
    ledger: Value,
}

async fn world(app: &TestApp, kind: StrategyKind) -> World {
    let pg = app.snapshot().await;
    let mut redis = app.redis.conn.clone();
    let keys: Vec<String> = CATALOGUE.map(|id| app.redis.keys.stock(id)).collect();
    let stock: Vec<Option<i64>> =
        redis::cmd("MGET").arg(&keys).query_async(&mut redis).await.expect("Redis answers");
    let queued = if kind.spec().queued {
        redis::cmd("HLEN")
            .arg(app.redis.keys.pending(kind.as_str()))
            .query_async(&mut redis)
            .await
            .expect("Redis answers")
    } else {
        0
    };
    let ledger = if kind == StrategyKind::Memory {
        app.audit().await["ledgers"][kind.as_str()].clone()
    } else {
        Value::Null
    };
    World { pg, redis_stock: CATALOGUE.zip(stock).collect(), queued, ledger }
}

/// Stock per product in each of the books `kind` takes units from when it places an order.
fn shelves(world: &World, kind: StrategyKind) -> Vec<BTreeMap<i64, i64>> {
    let pg = || world.pg.products.iter().copied().collect();
    let redis = || {
        let mirrored =
            |(id, stock): (&i64, &Option<i64>)| (*id, stock.expect("a reset mirrors every product"));
        world.redis_stock.iter().map(mirrored).collect()
    };
    match kind {
        StrategyKind::Memory => vec![
            world.ledger["products"]
                .as_array()
                .expect("the ledger lists products")
                .iter()
                .map(|row| {
                    (row["product_id"].as_i64().expect("id"), row["final_stock"].as_i64().expect("stock"))
                })
                .collect(),
        ],
        StrategyKind::SqlNaive
        | StrategyKind::SqlForUpdate
        | StrategyKind::SqlAtomic
        | StrategyKind::SqlCoalesce
        | StrategyKind::SqlOptimistic => vec![pg()],
        // Reserved in Redis, committed to PostgreSQL before the answer: both move.
        StrategyKind::RedisDecr | StrategyKind::RedisLua => vec![pg(), redis()],
        // Only Redis's shelf moves before the answer: `stream` and `queue-nats` queue the order,
        // `redis-orderlog` commits it insert-only and the stock row follows by the stock sync.
        StrategyKind::RedisOrderlog | StrategyKind::Stream | StrategyKind::QueueNats => vec![redis()],
        // `stream-deferred` checks the stock only, and the worker takes it later; `sql-skip-locked`'s
        // books are its unit pool, which this snapshot does not read (the stock row stays).
        StrategyKind::StreamDeferred | StrategyKind::SqlSkipLocked => vec![],
    }
}

/// Orders held in the books `kind` places its orders in.
fn orders_held(world: &World, kind: StrategyKind) -> i64 {
    match kind {
        StrategyKind::Memory => world.ledger["total"]["orders"].as_i64().expect("the ledger counts orders"),
        StrategyKind::Stream | StrategyKind::StreamDeferred | StrategyKind::QueueNats => {
            i64::try_from(world.queued).expect("small")
        }
        StrategyKind::SqlNaive
        | StrategyKind::SqlForUpdate
        | StrategyKind::SqlAtomic
        | StrategyKind::SqlCoalesce
        | StrategyKind::SqlSkipLocked
        | StrategyKind::SqlOptimistic
        | StrategyKind::RedisDecr
        | StrategyKind::RedisLua
        | StrategyKind::RedisOrderlog => world.pg.orders,
    }
}

/// Checks the properties of one case: the answer, then the books.
async fn check(
    app: &TestApp,
    kind: StrategyKind,
    must: Must,
    before: World,
    reply: &Reply,
    order_id: Option<String>,
) -> Result<(), TestCaseError> {
    let after = world(app, kind).await;
    let Some(order_id) = order_id else {
        let sold_out = reply.status == 409 || reply.status == 418;
        prop_assert!(must != Must::Place || sold_out, "a well-formed order was refused: {reply:?}");
        prop_assert_eq!(before, after, "a refused request changed the books: {:?}", reply);
        return Ok(());
    };
    prop_assert!(must != Must::Refuse, "a bad request was placed: {reply:?}");
    let view = app.get(&format!("/orders/{order_id}")).await;
    prop_assert_eq!(view.status, 200, "a placed order can be looked up: {}", view.body);
    prop_assert_eq!(&view.body["strategy"], kind.as_str(), "{}", view.body);
    let lines: BTreeMap<i64, i64> = view.body["items"]
        .as_array()
        .expect("an order lists its items")
        .iter()
        .map(|item| (item["product_id"].as_i64().expect("id"), item["quantity"].as_i64().expect("quantity")))
        .collect();
    prop_assert_eq!(orders_held(&after, kind), orders_held(&before, kind) + 1, "one order more: {:?}", reply);
    for (shelf_before, shelf_after) in shelves(&before, kind).into_iter().zip(shelves(&after, kind)) {
        let expected: BTreeMap<i64, i64> = shelf_before
            .iter()
            .map(|(id, stock)| (*id, stock - lines.get(id).copied().unwrap_or(0)))
            .collect();
        prop_assert_eq!(shelf_after, expected, "the order took exactly its lines {:?}", lines);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

fn config() -> Config {
    Config {
        cases: CASES,
        // Shrinking reruns cases against the same server: bounded, so a failure ends quickly.
        max_shrink_iters: 512,
        max_shrink_time: 60_000,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `property` over cases of `strategy` on a blocking thread, each case on this test's
/// runtime, which goes on serving the app meanwhile. Fails the test with the smallest failing case.
async fn for_all<S, F, Fut>(strategy: fn() -> S, property: F)
where
    S: Strategy + 'static,
    S::Value: fmt::Debug,
    F: Fn(S::Value) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), TestCaseError>>,
{
    let runtime = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        TestRunner::new(config())
            .run(&strategy(), |case| runtime.block_on(property(case)))
            .map_err(|failure| failure.to_string())
    })
    .await
    .expect("the property runner");
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// Answers by case and status, so a run shows what it covered and a generator that stopped
/// producing orders (or refusals) fails.
#[derive(Debug, Default)]
struct Tally(std::sync::Mutex<BTreeMap<(&'static str, u16), usize>>);

impl Tally {
    fn count(&self, what: &'static str, status: u16) {
        *self.0.lock().expect("tally").entry((what, status)).or_default() += 1;
    }

    #[track_caller]
    fn assert_covered(&self, kind: StrategyKind, placed: u16) {
        let tally = self.0.lock().expect("tally");
        eprintln!("{kind}: answers by case and status: {tally:?}");
        let with = |wanted: &dyn Fn(u16) -> bool| tally.iter().filter(|((_, s), _)| wanted(*s)).count();
        assert!(with(&|status| status == placed) > 0, "{kind}: no case placed an order: {tally:?}");
        assert!(with(&|status| status == 400) > 0, "{kind}: no case was refused as bad input: {tally:?}");
    }
}

async fn json_purchases(connect: PgConnectOptions, kind: StrategyKind) {
    let app = Arc::new(spawn_app(connect, setup()).await);
    let tally = Arc::new(Tally::default());
    let (probe, counted) = (Arc::clone(&app), Arc::clone(&tally));
    for_all(json_case, move |case: JsonCase| {
        let (app, tally) = (Arc::clone(&probe), Arc::clone(&counted));
        async move {
            let before = world(&app, kind).await;
            let reply = case.send(&app, kind).await;
            tally.count(case.what, reply.status);
            prop_assert!(reply.status < 500, "never a 5xx: {reply:?}");
            let order_id = case.order_id(kind, &reply)?;
            check(&app, kind, case.must, before, &reply, order_id).await
        }
    })
    .await;
    tally.assert_covered(kind, if kind.spec().queued { 202 } else { 201 });
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{kind}: the books are clean after every case: {audit}");
}

async fn form_purchases(connect: PgConnectOptions, mode: &'static str, kind: StrategyKind) {
    assert_eq!(checkout_bench::http::seed::strategy_name((!mode.is_empty()).then_some(mode)), kind.as_str());
    let app = Arc::new(spawn_app(connect, setup()).await);
    let tally = Arc::new(Tally::default());
    let (probe, counted) = (Arc::clone(&app), Arc::clone(&tally));
    let mode = if mode.is_empty() { String::new() } else { format!("&mode={mode}") };
    for_all(form_case, move |case: FormCase| {
        let (app, tally, mode) = (Arc::clone(&probe), Arc::clone(&counted), mode.clone());
        async move {
            let before = world(&app, kind).await;
            let reply = case.send(&app, &mode).await;
            tally.count(case.what, reply.status);
            prop_assert!(reply.status < 500, "never a 5xx: {reply:?}");
            prop_assert!(!reply.retry_after, "nothing here is a 503: {reply:?}");
            let order_id = FormCase::order_id(&reply)?;
            check(&app, kind, case.must, before, &reply, order_id).await
        }
    })
    .await;
    tally.assert_covered(kind, 200);
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{kind}: the books are clean after every case: {audit}");
}

macro_rules! json_properties {
    ($($name:ident => $kind:expr),* $(,)?) => {
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $name(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                json_purchases(connect, $kind).await;
            }
        )*
    };
}

macro_rules! form_properties {
    ($($name:ident => $mode:expr, $kind:expr),* $(,)?) => {
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $name(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                form_purchases(connect, $mode, $kind).await;
            }
        )*
    };
}

// One strategy of each family: in-process, PostgreSQL, Redis then PostgreSQL, queued in Redis,
// queued in a broker.
json_properties! {
    json_purchase_bodies_memory => StrategyKind::Memory,
    json_purchase_bodies_sql_atomic => StrategyKind::SqlAtomic,
    json_purchase_bodies_sql_coalesce => StrategyKind::SqlCoalesce,
    json_purchase_bodies_redis_lua => StrategyKind::RedisLua,
    json_purchase_bodies_stream => StrategyKind::Stream,
    json_purchase_bodies_queue_nats => StrategyKind::QueueNats,
}

// The seed's own modes, plus the baseline by name; no mode is the seed's default.
form_properties! {
    seed_form_bodies_memory => "memory", StrategyKind::Memory,
    seed_form_bodies_simple => "simple", StrategyKind::SqlNaive,
    seed_form_bodies_redis => "redis", StrategyKind::RedisDecr,
    seed_form_bodies_default_stream => "", StrategyKind::StreamDeferred,
}
