//! The faults `bench chaos` injects: one closed enum, one function per fault. Each function
//! injects its fault and recovers from it before it returns, so the storm's last buyers and the
//! audit meet a working system again.

use std::time::Duration;

use anyhow::Context;
use checkout_strategies::SqlBackend;
use serde::Serialize;
use sqlx::Connection;

use super::Rig;
use crate::bench::server::StrategyInfo;

/// How long the proxy holds Redis's replies: well past the server's Redis response timeout.
pub const HOLD_REPLIES: Duration = Duration::from_millis(2_500);
/// How long the disposable Redis stays dead before it starts again.
const REDIS_DOWN: Duration = Duration::from_secs(1);
/// Rounds of ending the database's sessions, and the pause between them.
const PG_TERMINATIONS: u32 = 5;
const PG_TERMINATE_EVERY: Duration = Duration::from_millis(200);
/// How long a killed server stays dead before it starts again.
const SERVER_DOWN: Duration = Duration::from_millis(500);
/// Longest a server may take to finish its in-flight work after SIGTERM.
const SIGTERM_LIMIT: Duration = Duration::from_secs(20);

/// A fault scenario. Each runs mid-storm against each chosen strategy, except `same-key-mixed`,
/// which mixes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The proxy holds Redis's replies for 2.5 s (longer than the server's Redis response
    /// timeout), connections open, then delivers them late.
    RedisReplyTimeout,
    /// SIGKILL the disposable redis-server; 1 s later start it again, empty, on the same port.
    RedisRestart,
    /// End every session on the chaos database, 5 times, 200 ms apart: pg_terminate_backend on
    /// PostgreSQL, KILL CONNECTION on MariaDB (the name stays, so runs compare across databases).
    PgTerminate,
    /// SIGKILL the server; start it again with the same flags and let it recover.
    ServerCrash,
    /// A quarter of the buyers hang up 1-8 ms after sending: each purchase must end committed and
    /// visible, or absent.
    ClientAbort,
    /// SIGTERM the server: it must finish what is in flight and exit 0; then start it again.
    Sigterm,
    /// Copies of one request (same Idempotency-Key) sent at once to different strategies, queued
    /// and synchronous mixed: one order per key, and every answer names it.
    SameKeyMixed,
}

impl Fault {
    /// Every scenario, in the order a run goes through them.
    pub const ALL: [Self; 7] = [
        Self::RedisReplyTimeout,
        Self::RedisRestart,
        Self::PgTerminate,
        Self::ServerCrash,
        Self::ClientAbort,
        Self::Sigterm,
        Self::SameKeyMixed,
    ];

    /// The scenario's name on the command line and in the table.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RedisReplyTimeout => "redis-reply-timeout",
            Self::RedisRestart => "redis-restart",
            Self::PgTerminate => "pg-terminate",
            Self::ServerCrash => "server-crash",
            Self::ClientAbort => "client-abort",
            Self::Sigterm => "sigterm",
            Self::SameKeyMixed => "same-key-mixed",
        }
    }

    /// Why `strategy` sits this scenario out, if it does. A crash or a restart of the server
    /// empties a strategy whose books live in the server process: that is its declared nature
    /// (`durable: false`), not a fault to find.
    pub fn skip_reason(self, strategy: &StrategyInfo) -> Option<&'static str> {
        match self {
            Self::ServerCrash | Self::Sigterm if !strategy.durable => {
                Some("not durable by design: its books live in the server process")
            }
            _ => None,
        }
    }

    /// Whether buyers hang up early in this scenario (the fault is on the client side).
    pub const fn clients_abort(self) -> bool {
        matches!(self, Self::ClientAbort)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an injection did, and what it found wrong on its own (beyond the audit).
#[derive(Debug, Default)]
pub(super) struct Injected {
    /// For the progress line.
    pub(super) done: String,
    /// Broken promises the fault itself revealed, such as a non-zero exit after SIGTERM.
    pub(super) problems: Vec<String>,
    /// For the table's notes: what the fault did where its name does not say it.
    pub(super) note: Option<String>,
}

/// Injects `fault` into `rig` and recovers from it.
///
/// # Errors
/// When the rig cannot be brought back (Redis or the server does not start again): the run cannot
/// go on.
pub(super) async fn inject(fault: Fault, rig: &mut Rig) -> anyhow::Result<Injected> {
    match fault {
        Fault::RedisReplyTimeout => Ok(hold_redis_replies(rig).await),
        Fault::RedisRestart => restart_redis(rig).await,
        Fault::PgTerminate => end_database_sessions(rig).await,
        Fault::ServerCrash => crash_server(rig).await,
        Fault::Sigterm => sigterm_server(rig).await,
        // The buyers are the fault.
        Fault::ClientAbort | Fault::SameKeyMixed => Ok(Injected::default()),
    }
}

async fn hold_redis_replies(rig: &Rig) -> Injected {
    rig.proxy.hold_replies();
    tokio::time::sleep(HOLD_REPLIES).await;
    rig.proxy.release_replies();
    Injected { done: format!("Redis replies held {} ms", HOLD_REPLIES.as_millis()), ..Injected::default() }
}

async fn restart_redis(rig: &mut Rig) -> anyhow::Result<Injected> {
    rig.redis.kill().await?;
    tokio::time::sleep(REDIS_DOWN).await;
    rig.redis.restart().await.context("the disposable redis-server did not start again")?;
    Ok(Injected {
        done: format!("redis-server killed, started again empty after {} ms", REDIS_DOWN.as_millis()),
        ..Injected::default()
    })
}

/// Ends every other session on the chaos database, [`PG_TERMINATIONS`] rounds, from a session of
/// its own kept across the rounds.
async fn end_database_sessions(rig: &Rig) -> anyhow::Result<Injected> {
    let cannot_connect = || format!("cannot connect to {} to end its sessions", rig.database.name);
    let mut session = match rig.database.backend {
        SqlBackend::Postgres => Session::Postgres(
            sqlx::PgConnection::connect(&rig.database_url).await.with_context(cannot_connect)?,
        ),
        SqlBackend::MySql => Session::MySql(
            sqlx::MySqlConnection::connect(&rig.database_url).await.with_context(cannot_connect)?,
        ),
    };
    let mut ended = 0i64;
    for round in 0..PG_TERMINATIONS {
        if round > 0 {
            tokio::time::sleep(PG_TERMINATE_EVERY).await;
        }
        ended += match &mut session {
            Session::Postgres(connection) => terminate_pg_backends(connection, &rig.database.name).await?,
            Session::MySql(connection) => kill_mysql_connections(connection, &rig.database.name).await?,
        };
    }
    match session {
        Session::Postgres(connection) => {
            let _ = connection.close().await;
            Ok(Injected {
                done: format!("{ended} PostgreSQL backends terminated in {PG_TERMINATIONS} rounds"),
                ..Injected::default()
            })
        }
        Session::MySql(connection) => {
            let _ = connection.close().await;
            // The table names the fault `pg-terminate` on both databases; its note says what it
            // was on MariaDB.
            let done =
                format!("{ended} MariaDB sessions ended by KILL CONNECTION in {PG_TERMINATIONS} rounds");
            Ok(Injected { note: Some(done.clone()), done, ..Injected::default() })
        }
    }
}

/// The session `pg-terminate` ends the others from.
enum Session {
    Postgres(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
}

/// One round on PostgreSQL: `pg_terminate_backend` of every other backend on `database`.
async fn terminate_pg_backends(connection: &mut sqlx::PgConnection, database: &str) -> anyhow::Result<i64> {
    const TERMINATE: &str = r#"
        SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid))
        FROM pg_stat_activity
        WHERE datname = $1 AND pid <> pg_backend_pid()
    "#;
    sqlx::query_scalar(TERMINATE)
        .bind(database)
        .fetch_one(connection)
        .await
        .context("pg_terminate_backend failed")
}

/// One round on MariaDB: `KILL CONNECTION` of every other session whose current database is
/// `database` (MariaDB has no function that ends a session from a `SELECT`).
async fn kill_mysql_connections(
    connection: &mut sqlx::MySqlConnection,
    database: &str,
) -> anyhow::Result<i64> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
    )
    .bind(database)
    .fetch_all(&mut *connection)
    .await
    .context("cannot list the sessions in information_schema.PROCESSLIST")?;
    let mut killed = 0i64;
    for id in ids {
        // A session may have ended on its own since the list was read: not an error.
        let kill = format!("KILL CONNECTION {id}");
        if sqlx::raw_sql(sqlx::AssertSqlSafe(kill)).execute(&mut *connection).await.is_ok() {
            killed += 1;
        }
    }
    Ok(killed)
}

async fn crash_server(rig: &mut Rig) -> anyhow::Result<Injected> {
    rig.server.kill().await?;
    tokio::time::sleep(SERVER_DOWN).await;
    rig.server.restart().await.context("the server did not come back after SIGKILL")?;
    Ok(Injected { done: "server killed (SIGKILL) and started again".to_owned(), ..Injected::default() })
}

async fn sigterm_server(rig: &mut Rig) -> anyhow::Result<Injected> {
    let mut problems = Vec::new();
    let done = match rig.server.terminate(SIGTERM_LIMIT).await {
        Ok(status) if status.success() => "server stopped on SIGTERM, exit 0".to_owned(),
        Ok(status) => {
            problems.push(format!("SIGTERM exit {status}"));
            format!("server stopped on SIGTERM with {status}")
        }
        Err(err) => {
            problems.push(format!("SIGTERM: {err}"));
            format!("server did not stop cleanly: {err}")
        }
    };
    rig.server.restart().await.context("the server did not come back after SIGTERM")?;
    Ok(Injected { done: format!("{done}; started again"), problems, note: None })
}
