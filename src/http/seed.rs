//! `POST /index.php?action=…`: the PHP proof of concept's protocol, so a Locust file written for
//! it runs against this server unchanged.
//!
//! - `action=purchase&mode=simple|redis|stream` (or any strategy name; no mode means the seed's
//!   default, `stream`) with a form body in PHP bracket notation:
//!   `items[0][product_id]=100&items[0][count]=1&delivery[address]=…&delivery[phone]=…&delivery[email]=…`
//!   and an optional `username`, recorded as the order's user. A form `username` is not a
//!   login: as in the seed, a purchase needs a session or `skip_auth=1`.
//! - `action=auth` with a form `username`: opens a session and sets its cookie.
//!
//! Answers are `text/plain`, as the seed's were: 200 for a placed order (confirmed or pending),
//! 418 when sold out (the seed's way to tell an exhausted product from every other failure), and
//! otherwise the status the JSON contract gives the same failure. Validation is the JSON routes'
//! (the `checkout_strategies::order` types), and the purchase runs through the same
//! `purchase::run`.

use std::collections::BTreeMap;
use std::num::IntErrorKind;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use checkout_strategies::order::{MAX_LINES, check_field};
use checkout_strategies::{
    Delivery, InvalidInput, OrderLine, OrderLines, ProductId, PurchaseOutcome, Quantity, StrategyKind,
    UnknownStrategy,
};

use crate::admission::Admission;
use crate::app::AppState;
use crate::http::auth::{self, Credentials};
use crate::http::error::ApiError;
use crate::http::extract::{IdempotencyHeader, ValidPurchase};
use crate::http::purchase::{self, Front};

/// Most fields a form body may hold; a full order of [`MAX_LINES`] items needs about a hundred.
pub const MAX_FIELDS: usize = 1_000;
/// Deepest field name accepted: `items[0][count]` is three levels.
pub const MAX_DEPTH: usize = 3;

/// The strategy name a seed `mode` stands for. The seed's three modes map to the strategies that
/// reproduce them; any other mode is taken as a strategy name, and no mode is the seed's default.
pub fn strategy_name(mode: Option<&str>) -> &str {
    match mode {
        None => StrategyKind::SEED_DEFAULT.as_str(),
        Some(mode) => StrategyKind::of_seed_mode(mode).map_or(mode, |kind| kind.as_str()),
    }
}

/// `POST /index.php`: dispatches on `action` and renders every answer as text.
pub(super) async fn index(
    State(state): State<AppState>,
    Extension(admission): Extension<Admission>,
    request: Request,
) -> Response {
    let query = SeedQuery::parse(request.uri().query());
    let answer = match query.action.as_deref() {
        Some("purchase") => purchase(&Front { state, admission }, query.mode.as_deref(), request).await,
        Some("auth") => auth(&state, request).await,
        Some(other) => Err(ApiError::InvalidRequest(format!(
            "unknown action {}: use action=purchase or action=auth",
            shown(other)
        ))),
        None => Err(ApiError::InvalidRequest("missing action: use action=purchase or action=auth".into())),
    };
    answer.unwrap_or_else(plain_error)
}

/// The query parameters this endpoint reads itself; `skip_auth` and `session_stop` are read by
/// [`Credentials`], and the seed's `mark` is accepted and ignored. A repeated parameter keeps its
/// last value, as PHP does.
#[derive(Debug, Default)]
struct SeedQuery {
    action: Option<String>,
    mode: Option<String>,
}

impl SeedQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match name.as_ref() {
                "action" => parsed.action = Some(value.into_owned()),
                "mode" => parsed.mode = Some(value.into_owned()),
                _ => {}
            }
        }
        parsed
    }
}

/// `action=purchase`. Checks come in the JSON routes' order: strategy, idempotency key, body,
/// session.
async fn purchase(front: &Front, mode: Option<&str>, request: Request) -> Result<Response, ApiError> {
    let state = &front.state;
    let name = strategy_name(mode);
    let kind = name.parse::<StrategyKind>().map_err(|_| ApiError::UnknownStrategy(name.to_owned()))?;
    let (mut parts, body) = request.into_parts();
    let IdempotencyHeader(idempotency_key) = IdempotencyHeader::from_request_parts(&mut parts, state).await?;
    let Ok(credentials) = Credentials::from_request_parts(&mut parts, state).await;
    let form = read_form(state, Request::from_parts(parts, body)).await?;
    let valid = purchase_from(&form)?;
    // The form's username names the buyer but, as in the seed, is no login.
    match purchase::place(front, kind, valid, idempotency_key, credentials, false).await? {
        PurchaseOutcome::Placed(receipt) | PurchaseOutcome::Replayed(receipt) => Ok((
            StatusCode::OK,
            format!("Purchase successful: order {} ({})", receipt.order_id, receipt.status.as_str()),
        )
            .into_response()),
        refused => Err(purchase::refusal(refused)),
    }
}

/// `action=auth`: the same session `POST /auth` opens, answered the seed's way.
async fn auth(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let form = read_form(state, request).await?;
    let username = match form.get("username") {
        Some(Field::Value(name)) => name.as_str(),
        // Missing or not a plain field: `check_field` refuses it as blank.
        _ => "",
    };
    let (session, cookie) = auth::open_session(state, username).await?;
    Ok(([(SET_COOKIE, cookie)], format!("Authenticated Successfully: {}", session.username)).into_response())
}

/// Reads and parses a form body: 415 for another content type, 413 past the body limit.
async fn read_form(state: &AppState, request: Request) -> Result<Form, ApiError> {
    if !is_form(request.headers()) {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as a form with Content-Type: application/x-www-form-urlencoded".into(),
        ));
    }
    let body = Bytes::from_request(request, state).await.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::InvalidRequest(rejection.body_text()),
    })?;
    parse_form(&body)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// An error as the seed answered it: plain text, and 418 for sold out.
fn plain_error(err: ApiError) -> Response {
    err.log();
    let status = match err {
        ApiError::SoldOut(_) => StatusCode::IM_A_TEAPOT,
        _ => err.status_code(),
    };
    let text = match &err {
        ApiError::UnknownStrategy(name) => UnknownStrategy { name: name.clone() }.to_string(),
        ApiError::Timeout(millis, order_id) => format!(
            "no answer within {millis} ms; the purchase may still complete: check GET /orders/{order_id}"
        ),
        _ => err.to_string(),
    };
    let mut response = (status, text).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A form field as PHP's `$_POST` holds it: a value, or a group of fields by key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Value(String),
    Group(Form),
}

/// Top-level form fields by name.
type Form = BTreeMap<String, Field>;

/// Parses a form body into PHP's nested shape: `a[b][c]=v` becomes `a → b → c → v`.
///
/// The body is percent-decoded first (`%5B` is `[`, `+` is a space), then each name is split at
/// its brackets. As in PHP, a later field overwrites an earlier one at the same place, and `[]`
/// appends after the highest integer key. Work is bounded: at most [`MAX_FIELDS`] fields, each at
/// most [`MAX_DEPTH`] levels deep.
///
/// # Errors
/// Too many fields, too deep a name, or a malformed one (`items[0`, `[0]`, `a[b]c`).
fn parse_form(body: &[u8]) -> Result<Form, ApiError> {
    let mut form = Form::new();
    for (seen, (name, value)) in form_urlencoded::parse(body).enumerate() {
        if seen == MAX_FIELDS {
            return Err(ApiError::InvalidRequest(format!("a form may hold at most {MAX_FIELDS} fields")));
        }
        // PHP drops fields without a name, and so do we.
        if name.is_empty() {
            continue;
        }
        let path = split_name(&name)?;
        insert(&mut form, &path, value.into_owned());
    }
    Ok(form)
}

/// `items[0][count]` → `["items", "0", "count"]`.
fn split_name(name: &str) -> Result<Vec<&str>, ApiError> {
    let malformed = || ApiError::InvalidRequest(format!("malformed field name {}", shown(name)));
    let Some(open) = name.find('[') else { return Ok(vec![name]) };
    let (base, mut rest) = name.split_at(open);
    if base.is_empty() {
        return Err(malformed());
    }
    let mut path = vec![base];
    while !rest.is_empty() {
        let (segment, after) =
            rest.strip_prefix('[').and_then(|rest| rest.split_once(']')).ok_or_else(malformed)?;
        path.push(segment);
        if path.len() > MAX_DEPTH {
            return Err(ApiError::InvalidRequest(format!(
                "field name {} nests deeper than {MAX_DEPTH} levels",
                shown(name)
            )));
        }
        rest = after;
    }
    Ok(path)
}

fn insert(group: &mut Form, path: &[&str], value: String) {
    let Some((first, rest)) = path.split_first() else { return };
    let key = if first.is_empty() { next_index(group).to_string() } else { (*first).to_owned() };
    if rest.is_empty() {
        group.insert(key, Field::Value(value));
        return;
    }
    let entry = group.entry(key).or_insert_with(|| Field::Group(Form::new()));
    if !matches!(entry, Field::Group(_)) {
        *entry = Field::Group(Form::new());
    }
    if let Field::Group(inner) = entry {
        insert(inner, rest, value);
    }
}

/// Where PHP's `[]` appends: after the highest integer key.
fn next_index(group: &Form) -> u64 {
    group.keys().filter_map(|key| index_of(key)).max().map_or(0, |last| last.saturating_add(1))
}

/// A key PHP would treat as an integer: decimal digits without a leading zero.
fn index_of(key: &str) -> Option<u64> {
    let canonical = key == "0" || (!key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit()));
    if canonical { key.parse().ok() } else { None }
}

/// The purchase a parsed form describes, checked as the JSON body is.
fn purchase_from(form: &Form) -> Result<ValidPurchase, ApiError> {
    let invalid = |message: String| ApiError::InvalidRequest(message);
    let items = match form.get("items") {
        Some(Field::Group(items)) => items,
        Some(Field::Value(_)) => {
            return Err(invalid("items must be sent as items[N][product_id] and items[N][count]".into()));
        }
        None => &Form::new(),
    };
    if items.len() > MAX_LINES {
        return Err(invalid(format!("at most {MAX_LINES} items per order, got {}", items.len())));
    }
    let mut indexed = items
        .iter()
        .map(|(key, item)| {
            let index = index_of(key).ok_or_else(|| {
                invalid(format!("items[{}]: the index must be a non-negative integer", shown(key)))
            })?;
            Ok((index, key, item))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    indexed.sort_unstable_by_key(|(index, ..)| *index);
    let lines = indexed.into_iter().map(|(_, key, item)| line(key, item)).collect::<Result<Vec<_>, _>>()?;
    let lines = OrderLines::new(lines)?;

    let delivery = match form.get("delivery") {
        Some(Field::Group(fields)) => fields,
        Some(Field::Value(_)) => {
            return Err(invalid(
                "delivery must be sent as delivery[address], delivery[phone] and delivery[email]".into(),
            ));
        }
        None => &Form::new(),
    };
    let text = |name: &str| match delivery.get(name) {
        Some(Field::Value(value)) => value.clone(),
        _ => String::new(),
    };
    let delivery = Delivery::new(text("address"), text("phone"), text("email"))?;

    // An empty form field is how HTML forms send nothing: a blank username is no username.
    let user = match form.get("username") {
        Some(Field::Value(name)) if !name.trim().is_empty() => {
            check_field("username", name)?;
            Some(name.clone())
        }
        _ => None,
    };
    Ok(ValidPurchase { lines, delivery, user })
}

fn line(index: &str, item: &Field) -> Result<OrderLine, ApiError> {
    let Field::Group(fields) = item else {
        return Err(ApiError::InvalidRequest(format!("items[{index}] must have [product_id] and [count]")));
    };
    let at =
        |name: &str, err: InvalidInput| ApiError::InvalidRequest(format!("items[{index}][{name}]: {err}"));
    Ok(OrderLine {
        product_id: ProductId::parse(integer(fields, index, "product_id")?)
            .map_err(|err| at("product_id", err))?,
        quantity: Quantity::parse(integer(fields, index, "count")?).map_err(|err| at("count", err))?,
    })
}

fn integer(fields: &Form, index: &str, name: &str) -> Result<i64, ApiError> {
    let field = format!("items[{index}][{name}]");
    let text = match fields.get(name) {
        Some(Field::Value(text)) => text,
        Some(Field::Group(_)) => return Err(ApiError::InvalidRequest(format!("{field} must be a number"))),
        None => return Err(ApiError::InvalidRequest(format!("{field} is missing"))),
    };
    text.trim().parse::<i64>().map_err(|err| {
        ApiError::InvalidRequest(match err.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => {
                format!("{field} is out of range, got {}", shown(text))
            }
            _ => format!("{field} must be an integer, got {}", shown(text)),
        })
    })
}

/// Client text quoted in a message, cut short: a message never echoes a whole body back.
fn shown(text: &str) -> String {
    const LIMIT: usize = 40;
    match text.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Form {
        parse_form(body.as_bytes()).unwrap_or_else(|err| panic!("{body:?} parses: {err}"))
    }

    fn value(text: &str) -> Field {
        Field::Value(text.to_owned())
    }

    fn group<const N: usize>(fields: [(&str, Field); N]) -> Field {
        Field::Group(fields.into_iter().map(|(key, field)| (key.to_owned(), field)).collect())
    }

    fn refusal(body: &str) -> String {
        match parse_form(body.as_bytes()).and_then(|form| purchase_from(&form)) {
            Ok(purchase) => panic!("{body:?} should be refused, got {purchase:?}"),
            Err(ApiError::InvalidRequest(message)) => message,
            Err(other) => panic!("{body:?} should be invalid_request, got {other:?}"),
        }
    }

    const DELIVERY: &str = "delivery[address]=Kyiv&delivery[phone]=%2B380&delivery[email]=a%40b.c";

    fn order(items: &str) -> ValidPurchase {
        let body = format!("{items}&{DELIVERY}");
        purchase_from(&form(&body)).unwrap_or_else(|err| panic!("{body:?} is a valid purchase: {err}"))
    }

    fn columns(purchase: &ValidPurchase) -> (Vec<i64>, Vec<i32>) {
        purchase.lines.columns()
    }

    #[test]
    fn modes_map_to_strategy_names() {
        assert_eq!(strategy_name(Some("simple")), "sql-naive");
        assert_eq!(strategy_name(Some("redis")), "redis-decr");
        assert_eq!(strategy_name(Some("stream")), "stream-deferred");
        assert_eq!(strategy_name(None), "stream-deferred", "the seed's default mode");
        assert_eq!(strategy_name(Some("sql-atomic")), "sql-atomic", "strategy names pass through");
        assert_eq!(strategy_name(Some("nope")), "nope", "unknown modes are left to the strategy lookup");
        assert_eq!(strategy_name(Some("simple")).parse(), Ok(StrategyKind::SqlNaive));
    }

    #[test]
    fn brackets_nest() {
        let parsed = form("items[0][product_id]=100&items[0][count]=1&delivery[address]=Kyiv&username=ann");
        let expected = Form::from([
            (
                "items".to_owned(),
                group([("0", group([("product_id", value("100")), ("count", value("1"))]))]),
            ),
            ("delivery".to_owned(), group([("address", value("Kyiv"))])),
            ("username".to_owned(), value("ann")),
        ]);
        assert_eq!(parsed, expected);
    }

    #[test]
    fn names_and_values_are_percent_decoded_before_splitting() {
        let parsed = form("items%5B0%5D%5Bcount%5D=1&delivery%5Baddress%5D=Kyiv%2C+Khreshchatyk+1");
        assert_eq!(parsed["items"], group([("0", group([("count", value("1"))]))]));
        assert_eq!(parsed["delivery"], group([("address", value("Kyiv, Khreshchatyk 1"))]));
    }

    #[test]
    fn later_fields_win_and_empty_brackets_append() {
        assert_eq!(form("a=1&a=2")["a"], value("2"));
        assert_eq!(form("a=1&a[x]=2")["a"], group([("x", value("2"))]), "a group replaces a value");
        assert_eq!(form("a[x]=2&a=1")["a"], value("1"), "a value replaces a group");
        assert_eq!(
            form("a[]=x&a[]=y&a[7]=z&a[]=w")["a"],
            group([("0", value("x")), ("1", value("y")), ("7", value("z")), ("8", value("w"))])
        );
        assert!(!form("=orphan&&b=1").contains_key(""), "nameless fields are dropped");
    }

    #[test]
    fn several_items_sparse_and_out_of_order() {
        let purchase = order(
            "items[5][count]=2&items[5][product_id]=7&items[0][product_id]=3&items[0][count]=1\
             &items[12][product_id]=100&items[12][count]=4",
        );
        assert_eq!(columns(&purchase), (vec![3, 7, 100], vec![1, 2, 4]));
        assert_eq!(purchase.delivery.phone, "+380");
        assert_eq!(purchase.user, None);
    }

    #[test]
    fn a_repeated_index_keeps_the_last_value() {
        let purchase = order("items[0][product_id]=1&items[0][count]=1&items[0][count]=3");
        assert_eq!(columns(&purchase), (vec![1], vec![3]));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let purchase =
            order("items[0][product_id]=1&items[0][count]=1&items[0][price]=9&coupon=x&mark[a][b]=1");
        assert_eq!(columns(&purchase), (vec![1], vec![1]));
    }

    #[test]
    fn username_names_the_buyer_and_blank_is_none() {
        assert_eq!(
            order("items[0][product_id]=1&items[0][count]=1&username=ann").user.as_deref(),
            Some("ann")
        );
        assert_eq!(order("items[0][product_id]=1&items[0][count]=1&username=+").user, None);
        let long =
            format!("items[0][product_id]=1&items[0][count]=1&username={}&{DELIVERY}", "u".repeat(513));
        assert!(refusal(&long).contains("username"));
    }

    #[test]
    fn bad_counts_are_refused() {
        for (count, mention) in [
            ("0", "between 1 and 100"),
            ("-1", "between 1 and 100"),
            ("101", "between 1 and 100"),
            ("abc", "must be an integer"),
            ("1.5", "must be an integer"),
            ("", "must be an integer"),
            ("99999999999999999999", "out of range"),
            ("4294967297", "between 1 and 100"),
        ] {
            let message = refusal(&format!("items[0][product_id]=1&items[0][count]={count}&{DELIVERY}"));
            assert!(message.contains("items[0][count]"), "count {count:?}: names the field: {message}");
            assert!(message.contains(mention), "count {count:?}: says {mention:?}: {message}");
        }
        let missing = refusal(&format!("items[0][product_id]=1&{DELIVERY}"));
        assert_eq!(missing, "items[0][count] is missing");
    }

    #[test]
    fn bad_items_are_refused() {
        assert!(refusal(DELIVERY).contains("items must not be empty"));
        assert!(refusal(&format!("items=1&{DELIVERY}")).contains("items[N]"));
        assert!(refusal(&format!("items[0]=1&{DELIVERY}")).contains("items[0]"));
        assert!(refusal(&format!("items[x][product_id]=1&items[x][count]=1&{DELIVERY}")).contains("index"));
        assert!(refusal(&format!("items[01][product_id]=1&items[01][count]=1&{DELIVERY}")).contains("index"));
        assert!(
            refusal(&format!("items[0][product_id]=0&items[0][count]=1&{DELIVERY}")).contains("product_id")
        );
        assert!(
            refusal(&format!("items[0][product_id]=x&items[0][count]=1&{DELIVERY}")).contains("product_id")
        );
        let twice = "items[0][product_id]=1&items[0][count]=1&items[1][product_id]=1&items[1][count]=1";
        assert!(refusal(&format!("{twice}&{DELIVERY}")).contains("appears twice"));
        // PHP gives each `[]` its own element, so these are two half items.
        assert!(refusal(&format!("items[][product_id]=1&items[][count]=1&{DELIVERY}")).contains("missing"));
    }

    #[test]
    fn more_items_than_an_order_holds_are_refused() {
        let items: String = (0..=MAX_LINES)
            .map(|i| format!("items[{i}][product_id]={}&items[{i}][count]=1&", i + 1))
            .collect();
        let message = refusal(&format!("{items}{DELIVERY}"));
        assert!(message.contains(&format!("at most {MAX_LINES} items")), "{message}");
        let fifty: String = (0..MAX_LINES)
            .map(|i| format!("items[{i}][product_id]={}&items[{i}][count]=1&", i + 1))
            .collect();
        assert_eq!(order(fifty.trim_end_matches('&')).lines.len(), MAX_LINES);
    }

    #[test]
    fn bad_delivery_is_refused() {
        let items = "items[0][product_id]=1&items[0][count]=1";
        assert!(refusal(items).contains("delivery.address"));
        assert!(refusal(&format!("{items}&delivery=x")).contains("delivery[address]"));
        let blank = format!("{items}&delivery[address]=Kyiv&delivery[phone]=+&delivery[email]=a%40b.c");
        assert_eq!(refusal(&blank), "delivery.phone must not be blank");
    }

    #[test]
    fn work_is_bounded() {
        let many = "a=1&".repeat(MAX_FIELDS + 1);
        assert!(parse_form(many.as_bytes()).is_err(), "more than {MAX_FIELDS} fields");
        assert!(parse_form("a=1&".repeat(MAX_FIELDS).as_bytes()).is_ok(), "exactly {MAX_FIELDS} fields");
        assert!(parse_form(b"a[b][c]=1").is_ok());
        let deep = refusal("items[0][count][x]=1");
        assert!(deep.contains("deeper than 3"), "{deep}");
    }

    #[test]
    fn malformed_names_are_refused() {
        for name in ["items[0", "[0]=1", "items[0]x", "items]0[", "a[b[c]]"] {
            let body = format!("{name}=1");
            let message = refusal(&body);
            assert!(message.starts_with("malformed field name"), "{name}: {message}");
        }
    }

    #[test]
    fn quoted_client_text_is_cut_short() {
        assert_eq!(shown("abc"), "\"abc\"");
        let long = shown(&"ж".repeat(100));
        assert!(long.chars().count() < 50, "{long}");
    }
}
