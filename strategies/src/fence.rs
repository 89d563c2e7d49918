//! Settling a purchase whose outcome is in doubt, by its order id.
//!
//! A commit whose reply was lost, a reservation that outlived its deadline, a queued entry given
//! up on: each time, somebody must decide whether the order exists before giving its units back,
//! and the order may still be on its way (a transaction PostgreSQL has not finished). Reading the
//! orders table cannot settle that; writing can. [`settle`] inserts a `void` row under the order's
//! id: if the insert goes through, the order can never commit afterwards (its own insert collides
//! with the primary key, see [`DbError::is_voided`]), so its units are free to go back; if the id is taken,
//! PostgreSQL holds the order (an insert of a key another transaction is writing waits for that
//! transaction to end, so an order in flight is waited for, not missed). Either answer is final.

use sqlx::PgPool;
use uuid::Uuid;

use crate::error::StrategyError;
use crate::kind::StrategyKind;
use crate::pg_driver::{DbError, SqlPool, Statements};

/// What PostgreSQL decided about an order whose outcome was in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doubt {
    /// The order is in PostgreSQL: it committed.
    Committed,
    /// The order is not, and never will be: its id is void.
    Void,
}

pub(crate) const VOID: &str = r#"
INSERT INTO orders (id, strategy, status, address, phone, email, reason)
VALUES ($1, $2, 'void', '', '', '', $3)
ON CONFLICT (id) DO NOTHING
"#;

pub(crate) const STATUS: &str = "SELECT status FROM orders WHERE id = $1";

/// Settles whether order `id` exists, for good. `why` is kept on the void row.
///
/// # Errors
/// When PostgreSQL does not answer: the doubt stays, and nothing may be released yet.
pub async fn settle(pg: &PgPool, kind: StrategyKind, id: Uuid, why: &str) -> Result<Doubt, StrategyError> {
    let voided = sqlx::query(VOID).bind(id).bind(kind.as_str()).bind(why).execute(pg).await?.rows_affected();
    if voided == 1 {
        return Ok(Doubt::Void);
    }
    let status: Option<String> = sqlx::query_scalar(STATUS).bind(id).fetch_optional(pg).await?;
    Ok(match status.as_deref() {
        Some("void") | None => Doubt::Void,
        Some(_) => Doubt::Committed,
    })
}

/// [`settle`] on the books of either dialect.
///
/// # Errors
/// As [`settle`].
pub async fn settle_on(
    books: &SqlPool,
    kind: StrategyKind,
    id: Uuid,
    why: &str,
) -> Result<Doubt, StrategyError> {
    if let SqlPool::Postgres(pg) = books {
        return settle(pg, kind, id, why).await;
    }
    let sql = &books.backend().sql().fence;
    let mut conn = books.acquire().await?;
    if conn.execute(sql.void, &[&id, &kind.as_str(), &why]).await? == 1 {
        return Ok(Doubt::Void);
    }
    let status: Option<String> =
        conn.fetch_optional(sql.status, &[&id]).await?.map(|row| row.get(0)).transpose()?;
    Ok(match status.as_deref() {
        Some("void") | None => Doubt::Void,
        Some(_) => Doubt::Committed,
    })
}

const VOID_ALL: &str = r#"
INSERT INTO orders (id, strategy, status, address, phone, email, reason)
SELECT id, $2, 'void', '', '', '', $3 FROM UNNEST($1::uuid[]) AS id
ON CONFLICT (id) DO NOTHING
"#;

const LIVE_AMONG: &str = "SELECT id FROM orders WHERE id = ANY($1) AND status <> 'void'";

/// [`settle`] for many order ids in two statements (a batch written by one transaction whose
/// `COMMIT` reply was lost): every id comes back [`Doubt::Committed`] or [`Doubt::Void`], for good.
///
/// # Errors
/// When PostgreSQL does not answer: the doubt stays for every id.
pub async fn settle_all(
    pg: &PgPool,
    kind: StrategyKind,
    ids: &[Uuid],
    why: &str,
) -> Result<std::collections::HashMap<Uuid, Doubt>, StrategyError> {
    // The insert waits for any transaction still writing one of these ids, so after it every id
    // is either void (ours) or an order that committed.
    sqlx::query(VOID_ALL).bind(ids).bind(kind.as_str()).bind(why).execute(pg).await?;
    let live: std::collections::HashSet<Uuid> =
        sqlx::query_scalar(LIVE_AMONG).bind(ids).fetch_all(pg).await?.into_iter().collect();
    Ok(ids.iter().map(|&id| (id, if live.contains(&id) { Doubt::Committed } else { Doubt::Void })).collect())
}

/// [`settle_all`] on the books of either dialect.
///
/// # Errors
/// As [`settle_all`].
pub async fn settle_all_on(
    books: &SqlPool,
    kind: StrategyKind,
    ids: &[Uuid],
    why: &str,
) -> Result<std::collections::HashMap<Uuid, Doubt>, StrategyError> {
    let live = match books {
        SqlPool::Postgres(pg) => return settle_all(pg, kind, ids, why).await,
        SqlPool::MySql(pool) => crate::dialect::mysql_batch::void_all(pool, kind, ids, why).await?,
    };
    Ok(ids.iter().map(|&id| (id, if live.contains(&id) { Doubt::Committed } else { Doubt::Void })).collect())
}

/// The statement or its `COMMIT` may have taken effect although the client saw an error: the
/// connection broke, or the server was told to stop, after the request left. An error PostgreSQL
/// answered with otherwise means the transaction rolled back.
pub fn may_have_committed(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_) => {
            true
        }
        sqlx::Error::Database(db) => {
            if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                return crate::dialect::mysql::may_have_committed(mysql.number());
            }
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

/// What became of a write of order `id` that failed with `err`.
#[derive(Debug)]
pub(crate) enum Failed {
    /// PostgreSQL holds the order after all.
    Committed,
    /// It does not and never will: the error stands, and nothing was sold.
    NotCommitted(StrategyError),
}

/// Settles a failed write of order `id` on the books of either dialect: errors the server
/// answered with roll back, and errors that may hide a commit are settled by voiding the id. When
/// the server cannot be asked either, the outcome stays unknown ([`StrategyError::InDoubt`]).
///
/// # Errors
/// [`StrategyError::InDoubt`] as above.
pub(crate) async fn after_failed_write(
    books: &SqlPool,
    kind: StrategyKind,
    id: Uuid,
    err: DbError,
) -> Result<Failed, StrategyError> {
    if !err.may_have_committed() {
        return Ok(Failed::NotCommitted(err.into()));
    }
    let server = match books.backend() {
        crate::dialect::SqlBackend::Postgres => "PostgreSQL",
        crate::dialect::SqlBackend::MySql => "MySQL",
    };
    settled(err, id, server, settle_on(books, kind, id, "commit_in_doubt").await)
}

fn settled(
    err: DbError,
    id: Uuid,
    server: &str,
    settled: Result<Doubt, StrategyError>,
) -> Result<Failed, StrategyError> {
    match settled {
        Ok(Doubt::Committed) => {
            tracing::warn!(%err, order = %id, "a commit whose reply was lost had gone through");
            Ok(Failed::Committed)
        }
        Ok(Doubt::Void) => Ok(Failed::NotCommitted(err.into())),
        Err(asked) => Err(StrategyError::InDoubt(format!(
            "order {id}: the write failed ({err}) and {server} could not be asked whether it committed ({asked})"
        ))),
    }
}
