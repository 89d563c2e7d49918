//! `POST /auth`, and the session check every purchase goes through.
//!
//! A purchase is let through when it names its buyer (JSON `user`), says `skip_auth` (query
//! `skip_auth=1` or header `X-Skip-Auth: 1`, the seed's switch for load tests that measure the
//! strategy and not the login), when sessions are not required, or when it carries a live session
//! (cookie `checkout_session` or header `X-Session-Token`). Only the last needs Redis, so the
//! others keep selling while the session store is down.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use checkout_strategies::order::check_field;
use serde::Deserialize;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::sessions::{self, Session};

const NO_SESSION: &str = "this purchase needs a session: POST /auth and send its token as the \
                          checkout_session cookie or the X-Session-Token header, or add skip_auth=1";
const DEAD_SESSION: &str = "the session is unknown or expired: POST /auth for a new one";

/// The `POST /auth` body.
#[derive(Debug, Deserialize)]
pub(super) struct AuthBody {
    username: String,
}

/// `POST /auth`: opens a session, answers its token in JSON and sets it as a cookie.
pub(super) async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AuthBody>,
) -> Result<Response, ApiError> {
    let (session, cookie) = open_session(&state, &body.username).await?;
    Ok(([(SET_COOKIE, cookie)], Json(session)).into_response())
}

/// Validates `username`, opens its session and builds the `Set-Cookie` value that carries it.
pub(super) async fn open_session(
    state: &AppState,
    username: &str,
) -> Result<(Session, HeaderValue), ApiError> {
    check_field("username", username)?;
    let session = state.sessions.create(username).await?;
    // No Max-Age: the browser keeps the cookie for its own session, and Redis decides how long
    // the session itself lives (its expiry slides with use).
    let cookie = HeaderValue::try_from(format!(
        "{}={}; Path=/; HttpOnly; SameSite=Lax",
        sessions::COOKIE,
        session.token
    ))
    .map_err(|err| ApiError::Internal(format!("session cookie: {err}")))?;
    Ok((session, cookie))
}

/// What a request says about its session: the token it carries and the `skip_auth` and
/// `session_stop` switches. Extracting never fails; [`Credentials::authorize`] decides.
#[derive(Debug, Clone, Default)]
pub(super) struct Credentials {
    token: Option<String>,
    skip_auth: bool,
    stop: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Credentials {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::read(&parts.headers, parts.uri.query()))
    }
}

impl Credentials {
    fn read(headers: &HeaderMap, query: Option<&str>) -> Self {
        let mut credentials = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match name.as_ref() {
                "skip_auth" => credentials.skip_auth = is_set(&value),
                "session_stop" => credentials.stop = is_set(&value),
                _ => {}
            }
        }
        credentials.skip_auth |=
            headers.get("x-skip-auth").and_then(|value| value.to_str().ok()).is_some_and(is_set);
        credentials.token = headers
            .get(sessions::TOKEN_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(|token| token.trim().to_owned())
            .or_else(|| cookie_token(headers));
        credentials
    }

    /// The session's user name when the purchase needs a session, `None` when it is let through
    /// without one (`named` says whether the purchase names its buyer itself).
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`] without a live session, [`ApiError::Unavailable`] when the
    /// session store does not answer.
    pub(super) async fn authorize(&self, state: &AppState, named: bool) -> Result<Option<String>, ApiError> {
        if named || self.skip_auth || !state.config.sessions.required {
            return Ok(None);
        }
        let token = self.token.as_deref().ok_or(ApiError::Unauthenticated(NO_SESSION))?;
        let user = state.sessions.find(token).await?;
        user.map(Some).ok_or(ApiError::Unauthenticated(DEAD_SESSION))
    }

    /// Ends the session when the request asked for it (`session_stop=1`). The purchase has been
    /// answered by then, so a failure here is logged rather than turned into an error.
    pub(super) async fn finish(&self, state: &AppState) {
        let (true, Some(token)) = (self.stop, self.token.as_deref()) else { return };
        if let Err(err) = state.sessions.end(token).await {
            tracing::warn!(%err, "could not end a session after its purchase");
        }
    }
}

/// The seed's truthy spellings of a switch.
fn is_set(value: &str) -> bool {
    matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

/// The session token from the `Cookie` headers, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == sessions::COOKIE)
        .map(|(_, token)| token.trim().trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_cookie() {
        let cookie = headers(&[("cookie", "a=1; checkout_session=abc; b=2")]);
        assert_eq!(Credentials::read(&cookie, None).token.as_deref(), Some("abc"));
        let split = headers(&[("cookie", "a=1"), ("cookie", "checkout_session=\"def\"")]);
        assert_eq!(Credentials::read(&split, None).token.as_deref(), Some("def"));
        let both = headers(&[("cookie", "checkout_session=abc"), ("x-session-token", "xyz")]);
        assert_eq!(Credentials::read(&both, None).token.as_deref(), Some("xyz"), "the header wins");
        assert_eq!(Credentials::read(&headers(&[("cookie", "other=1")]), None).token, None);
    }

    #[test]
    fn switches_come_from_the_query_and_the_header() {
        let none = HeaderMap::new();
        let read = |query| Credentials::read(&none, Some(query));
        assert!(read("action=purchase&skip_auth=1").skip_auth);
        assert!(read("skip_auth=true&session_stop=1").stop);
        assert!(!read("skip_auth=0&session_stop=0").skip_auth);
        assert!(!read("session_stop=0").stop);
        assert!(!read("skip_auth=").skip_auth);
        assert!(Credentials::read(&headers(&[("x-skip-auth", "1")]), None).skip_auth);
        assert!(!Credentials::read(&headers(&[("x-skip-auth", "0")]), None).skip_auth);
    }
}
