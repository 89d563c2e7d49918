//! Buyer sessions, kept in Redis as the seed kept its PHP sessions: a random token names a user
//! for a while, and purchases carry the token (cookie or header) instead of naming the user.
//!
//! Sessions live in their own Redis database (the seed's TODO: sessions apart from stock), on
//! their own connection, so a session burst neither shares a connection with stock traffic nor
//! shows up in the key space a reset clears. Keys still go under a prefix, so tests and several
//! servers can share one database. Expiry is sliding, as PHP's Redis session handler refreshes the
//! TTL on every request: a session ends after `ttl` without use, or when a purchase asks to end it.

use std::time::Duration;

use checkout_strategies::RedisSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionInfo, IntoConnectionInfo};
use serde::Serialize;

/// Name of the cookie that carries the session token.
pub const COOKIE: &str = "checkout_session";
/// Header that carries the session token for clients without a cookie jar.
pub const TOKEN_HEADER: &str = "x-session-token";

/// Where sessions live and the rules they follow.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The Redis server and database number holding sessions.
    pub connection: ConnectionInfo,
    /// Prefix of every session key.
    pub prefix: String,
    /// How long a session lives without use.
    pub ttl: Duration,
    /// Whether purchases that neither name their buyer nor say `skip_auth` need a session.
    pub required: bool,
    /// Timeouts of the session connection.
    pub redis: RedisSettings,
}

impl SessionConfig {
    /// Sessions in database `db` of the Redis server at `url`, the other settings at their
    /// defaults.
    ///
    /// # Errors
    /// When `url` is not a Redis URL.
    pub fn new(url: &str, db: i64) -> Result<Self, redis::RedisError> {
        let connection = url.into_connection_info()?;
        let settings = connection.redis_settings().clone().set_db(db);
        Ok(Self {
            connection: connection.set_redis_settings(settings),
            prefix: "checkout:".into(),
            ttl: Duration::from_secs(1800),
            required: true,
            redis: RedisSettings::default(),
        })
    }
}

impl Default for SessionConfig {
    /// Database 1 of a local Redis, 30 minutes, required: the server's defaults.
    fn default() -> Self {
        Self::new("redis://127.0.0.1:6379", 1).expect("the default Redis URL parses")
    }
}

/// The session store.
#[derive(Debug, Clone)]
pub struct Sessions {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
}

/// A session just opened, as `POST /auth` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub token: String,
    pub username: String,
    /// Seconds the session lives without use.
    pub expires_in: u64,
}

impl Sessions {
    /// A store that connects on first use, so a server whose session Redis is down still starts
    /// and answers 503 to the requests that need a session, and nothing else.
    ///
    /// # Errors
    /// When the connection settings are rejected.
    pub fn lazy(config: &SessionConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(config.connection.clone())?;
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.redis.response_timeout))
            .set_connection_timeout(Some(config.redis.connect_timeout))
            // A purchase waiting on its session fails fast while Redis is down, as stock calls do.
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, manager)?;
        Ok(Self { conn, prefix: config.prefix.clone(), ttl: config.ttl })
    }

    /// How long a session lives without use.
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The Redis key of a session.
    pub fn key(&self, token: &str) -> String {
        format!("{}session:{token}", self.prefix)
    }

    /// Opens a session for `username`, which the caller has validated.
    ///
    /// # Errors
    /// When Redis does not answer.
    pub async fn create(&self, username: &str) -> Result<Session, redis::RedisError> {
        let token = new_token();
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(&token))
            .arg(username)
            .arg("PX")
            .arg(self.ttl_millis())
            .query_async::<()>(&mut conn)
            .await?;
        Ok(Session { token, username: username.to_owned(), expires_in: self.ttl.as_secs() })
    }

    /// The user name of a live session, renewing its lease; `None` for a token that is malformed,
    /// unknown or expired (a malformed one never reaches Redis).
    ///
    /// # Errors
    /// When Redis does not answer.
    pub async fn find(&self, token: &str) -> Result<Option<String>, redis::RedisError> {
        if !is_token(token) {
            return Ok(None);
        }
        let mut conn = self.conn.clone();
        redis::cmd("GETEX").arg(self.key(token)).arg("PX").arg(self.ttl_millis()).query_async(&mut conn).await
    }

    /// Ends a session; ending one that is already gone is not an error.
    ///
    /// # Errors
    /// When Redis does not answer.
    pub async fn end(&self, token: &str) -> Result<(), redis::RedisError> {
        if !is_token(token) {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("DEL").arg(self.key(token)).query_async::<()>(&mut conn).await
    }

    fn ttl_millis(&self) -> u64 {
        // Redis refuses a zero expiry; a session lives at least a millisecond.
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }
}

/// 128 random bits from the thread's CSPRNG, as 32 lowercase hex digits.
fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether `text` has the shape of a token; anything else is refused before a Redis lookup, so
/// a client cannot make the server build arbitrary keys.
pub fn is_token(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_bit_hex_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert!(is_token(&a) && is_token(&b), "{a} {b}");
        assert_ne!(a, b);
    }

    #[test]
    fn only_token_shaped_text_is_a_token() {
        assert!(is_token("0123456789abcdef0123456789abcdef"));
        assert!(!is_token("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!is_token("0123456789abcdef0123456789abcde"));
        assert!(!is_token("0123456789abcdef0123456789abcdef0"));
        assert!(!is_token("0123456789abcdef0123456789abcde*"));
    }

    #[test]
    fn the_database_number_is_set_on_the_url() {
        let config = SessionConfig::new("redis://127.0.0.1:6379", 3).unwrap();
        assert_eq!(config.connection.redis_settings().db(), 3);
        let config = SessionConfig::new("redis://127.0.0.1:6379/5", 2).unwrap();
        assert_eq!(config.connection.redis_settings().db(), 2, "the session database wins over the URL's");
        assert!(SessionConfig::new("http://nope", 1).is_err());
        assert_eq!(SessionConfig::default().connection.redis_settings().db(), 1);
    }
}
