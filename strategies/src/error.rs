//! Errors a strategy can return, classified by what the caller should do about them.
//!
//! Sold out and unknown products are not errors: they are [`crate::PurchaseOutcome`]s. What is
//! left is a backend that did not answer (retry later: 503), contention that outlasted the retries
//! (retry later: 503), and bugs (500).

/// Why a strategy could not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    /// A backend refused, timed out or dropped the connection. Nothing is known to be committed.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Serialization failures or deadlocks outlasted the bounded retries.
    #[error("gave up after repeated write conflicts: {0}")]
    Conflict(String),
    /// A backend failed after the order may have been written, and asking PostgreSQL again
    /// failed too: the order may exist. Its units stay reserved until the sweeper settles the
    /// doubt; the client should look the order up later.
    #[error("outcome unknown: {0}")]
    InDoubt(String),
    /// What was asked exists on another SQL server but not on the one holding the books (a
    /// strategy or an admin step not ported to its dialect). Nothing was done.
    #[error("not available on this database: {0}")]
    NotOnDatabase(String),
    /// A bug or an unexpected backend answer.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StrategyError {
    /// The `error` code clients see for this failure.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "backend_unavailable",
            Self::Conflict(_) => "contention",
            Self::InDoubt(_) => "outcome_unknown",
            Self::NotOnDatabase(_) => "not_on_this_database",
            Self::Internal(_) => "internal",
        }
    }

    /// The failed purchase may still have placed its order.
    pub const fn may_have_taken_effect(&self) -> bool {
        matches!(self, Self::InDoubt(_))
    }
}

/// SQLSTATEs that mean "the server is there but cannot serve right now".
const UNAVAILABLE_STATES: &[&str] = &[
    "57014", // query_canceled: statement_timeout fired
    "57P01", // admin_shutdown
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now
    "53300", // too_many_connections
    "55P03", // lock_not_available
];

impl From<sqlx::Error> for StrategyError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Self::Unavailable(err.to_string()),
            sqlx::Error::Database(db) => match db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                Some(mysql) => crate::dialect::mysql::strategy_error(mysql.number(), err.to_string()),
                None => from_sqlstate(&db.code().unwrap_or_default(), err.to_string()),
            },
            _ => Self::Internal(err.to_string()),
        }
    }
}

/// The error a failure PostgreSQL answered with SQLSTATE `code` is, whichever driver carried it.
pub(crate) fn from_sqlstate(code: &str, message: String) -> StrategyError {
    if UNAVAILABLE_STATES.contains(&code) || code.starts_with("08") {
        StrategyError::Unavailable(message)
    } else if matches!(code, "40001" | "40P01") {
        StrategyError::Conflict(message)
    } else {
        StrategyError::Internal(message)
    }
}

impl From<redis::RedisError> for StrategyError {
    fn from(err: redis::RedisError) -> Self {
        if redis_unavailable(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Internal(err.to_string())
        }
    }
}

/// Redis could not take the command: unreachable, or (on a cluster) no master for the slot, the
/// cluster down or a slot moving. None of these is the caller's mistake or a bug, so 503.
fn redis_unavailable(err: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::ClusterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::BusyLoading
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                )
        )
}
