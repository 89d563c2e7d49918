//! Which PostgreSQL client runs the per-sale SQL strategies' purchase (`PG_DRIVER`): sqlx's pool
//! (the default) or tokio-postgres behind deadpool-postgres with statements prepared once per
//! connection (`prepare_cached`).
//!
//! Both speak the same protocol to the same server, and the strategies' statements, transactions
//! and outcomes are the same on either. What differs is the client's own work per purchase: sqlx
//! parses and plans through its statement cache behind an async pool whose checkout measured
//! 25–40 µs of CPU here, deadpool hands out a connection for a few, and a cached prepared statement
//! is one Bind/Execute. On two cores that CPU is taken from PostgreSQL itself, so the lighter
//! client can sell more per second; `bench compare --pg-driver sqlx,tokio-postgres` measures it.
//!
//! The seam is small on purpose: a strategy asks its [`PurchasePool`] for a `Conn`, runs
//! `&'static str` statements with `Param`s through `Statements`, reads `Row` columns by
//! index, and gets one [`DbError`] whose classification (duplicate key, retryable, may have
//! committed, and the [`StrategyError`] it answers) matches sqlx's for either driver. Everything
//! that is not a purchase (replays, fences, the audit, resets, the batch writer) stays on sqlx.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::Serialize;
use sqlx::mysql::{MySqlArguments, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlRow};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};
use sqlx::{Acquire, MySql, PgConnection, PgPool, Postgres};
use tokio_postgres::NoTls;
use tokio_postgres::types::{FromSql, ToSql};

use crate::backends::PgSettings;
use crate::dialect::{ByIds, SqlBackend, mysql};
use crate::error::{StrategyError, from_sqlstate};

/// The PostgreSQL client of the per-sale SQL strategies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgDriver {
    /// sqlx's `PgPool`, as every other part of the server.
    #[default]
    Sqlx,
    /// tokio-postgres on a deadpool-postgres pool, statements prepared once per connection.
    TokioPostgres,
}

impl PgDriver {
    pub const ALL: [Self; 2] = [Self::Sqlx, Self::TokioPostgres];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sqlx => "sqlx",
            Self::TokioPostgres => "tokio-postgres",
        }
    }
}

impl fmt::Display for PgDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PgDriver {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|driver| driver.as_str() == name.trim()).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|driver| driver.as_str()).collect();
            format!("unknown PostgreSQL driver {name:?}; one of: {}", known.join(", "))
        })
    }
}

/// Where the per-sale SQL strategies take their connection.
#[derive(Debug, Clone)]
pub enum PurchasePool {
    Sqlx(PgPool),
    TokioPostgres(Pool),
    /// MySQL or MariaDB through sqlx ([`crate::dialect::mysql`]).
    MySql(MySqlPool),
}

/// Where the ported SQL strategies read and write their books outside a purchase (replays of an
/// idempotency key, fences of an order in doubt): sqlx's pool of the server's database.
#[derive(Debug, Clone)]
pub enum SqlPool {
    Postgres(PgPool),
    MySql(MySqlPool),
}

impl From<PgPool> for SqlPool {
    fn from(pool: PgPool) -> Self {
        Self::Postgres(pool)
    }
}

impl From<MySqlPool> for SqlPool {
    fn from(pool: MySqlPool) -> Self {
        Self::MySql(pool)
    }
}

impl SqlPool {
    pub const fn backend(&self) -> SqlBackend {
        match self {
            Self::Postgres(_) => SqlBackend::Postgres,
            Self::MySql(_) => SqlBackend::MySql,
        }
    }

    /// A lazily connecting pool for the database `url` names (its scheme picks the server), sized
    /// and bounded by `settings`.
    ///
    /// # Errors
    /// When `url` names no supported server or does not parse.
    pub fn open(url: &str, settings: PgSettings) -> Result<Self, sqlx::Error> {
        match SqlBackend::from_url(url).map_err(|err| sqlx::Error::Configuration(Box::new(err)))? {
            SqlBackend::Postgres => Ok(Self::Postgres(crate::backends::pg_pool(url, settings)?)),
            SqlBackend::MySql => Ok(Self::MySql(crate::backends::mysql_pool(url, settings)?)),
        }
    }

    /// One trivial statement, to tell whether the server answers.
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Self::MySql(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
    }

    /// The pool, when the books are in PostgreSQL.
    pub const fn postgres(&self) -> Option<&PgPool> {
        match self {
            Self::Postgres(pool) => Some(pool),
            Self::MySql(_) => None,
        }
    }

    /// A connection for a few statements.
    ///
    /// # Errors
    /// When none is free in time or none can be opened: nothing was sent.
    pub(crate) async fn acquire(&self) -> Result<Conn, DbError> {
        Ok(match self {
            Self::Postgres(pool) => Conn::Sqlx(pool.acquire().await?),
            Self::MySql(pool) => Conn::MySql(pool.acquire().await?),
        })
    }
}

impl PurchasePool {
    /// The pool of `driver` for a server on `url`: `pg` itself for sqlx; for tokio-postgres a pool
    /// of its own to the same database, sized and bounded like `pg` (`settings`).
    ///
    /// # Errors
    /// When `url` is not a PostgreSQL URL tokio-postgres reads.
    pub fn open(driver: PgDriver, pg: &PgPool, url: &str, settings: PgSettings) -> Result<Self, DbError> {
        Ok(match driver {
            PgDriver::Sqlx => Self::Sqlx(pg.clone()),
            PgDriver::TokioPostgres => Self::tokio_postgres(url.parse()?, settings),
        })
    }

    /// [`PurchasePool::open`] from sqlx's options (tests and benches hold these); a password does
    /// not carry over, since sqlx does not give it back.
    pub fn with_options(
        driver: PgDriver,
        pg: &PgPool,
        options: &PgConnectOptions,
        settings: PgSettings,
    ) -> Self {
        match driver {
            PgDriver::Sqlx => Self::Sqlx(pg.clone()),
            PgDriver::TokioPostgres => Self::tokio_postgres(config_of(options), settings),
        }
    }

    /// A deadpool-postgres pool on `config`: at most `settings.connections` connections (as many
    /// as sqlx's), each opened on first use, a checkout waiting at most `acquire_timeout` for a
    /// free one and as long again to open one, every statement bounded by `statement_timeout`.
    pub fn tokio_postgres(mut config: tokio_postgres::Config, settings: PgSettings) -> Self {
        config
            .options(format!("-c statement_timeout={}", settings.statement_timeout.as_millis()))
            .connect_timeout(settings.acquire_timeout);
        // `Fast` reuses a connection unless its socket is known closed: no round trip per
        // checkout, like sqlx's `test_before_acquire(false)`.
        let manager =
            Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(usize::try_from(settings.connections).unwrap_or(usize::MAX))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.acquire_timeout))
            .create_timeout(Some(settings.acquire_timeout))
            .recycle_timeout(Some(settings.acquire_timeout))
            .build()
            .expect("a runtime and a size are all a pool needs");
        Self::TokioPostgres(pool)
    }

    pub const fn driver(&self) -> PgDriver {
        match self {
            Self::Sqlx(_) | Self::MySql(_) => PgDriver::Sqlx,
            Self::TokioPostgres(_) => PgDriver::TokioPostgres,
        }
    }

    /// The SQL server the purchases run on, and so the dialect of their statements.
    pub const fn backend(&self) -> SqlBackend {
        match self {
            Self::Sqlx(_) | Self::TokioPostgres(_) => SqlBackend::Postgres,
            Self::MySql(_) => SqlBackend::MySql,
        }
    }

    /// Connections open and idle in the pool right now.
    pub fn idle_connections(&self) -> usize {
        match self {
            Self::Sqlx(pool) => pool.num_idle(),
            Self::TokioPostgres(pool) => pool.status().available,
            Self::MySql(pool) => pool.num_idle(),
        }
    }

    /// A connection for one purchase.
    ///
    /// # Errors
    /// When none is free in time or none can be opened: nothing was sent.
    pub(crate) async fn acquire(&self) -> Result<Conn, DbError> {
        Ok(match self {
            Self::Sqlx(pool) => Conn::Sqlx(pool.acquire().await?),
            Self::TokioPostgres(pool) => Conn::TokioPostgres(pool.get().await?),
            Self::MySql(pool) => Conn::MySql(pool.acquire().await?),
        })
    }
}

/// sqlx's connect options as tokio-postgres's: host or socket, port, user and database.
pub fn config_of(options: &PgConnectOptions) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    match options.get_socket() {
        Some(socket) => config.host_path(socket),
        None => config.host(options.get_host()),
    };
    config.port(options.get_port()).user(options.get_username());
    if let Some(database) = options.get_database() {
        config.dbname(database);
    }
    config
}

/// A pooled connection of either driver, returned to its pool on drop.
pub(crate) enum Conn {
    Sqlx(PoolConnection<Postgres>),
    TokioPostgres(deadpool_postgres::Object),
    MySql(PoolConnection<MySql>),
}

impl Conn {
    /// Starts a transaction, rolled back when dropped uncommitted.
    pub(crate) async fn begin(&mut self) -> Result<Tx<'_>, DbError> {
        Ok(match self {
            Self::Sqlx(conn) => Tx::Sqlx(conn.begin().await?),
            Self::TokioPostgres(client) => Tx::TokioPostgres(client.transaction().await?),
            Self::MySql(conn) => Tx::MySql(conn.begin().await?),
        })
    }
}

/// A transaction of either driver.
pub(crate) enum Tx<'c> {
    Sqlx(sqlx::Transaction<'c, Postgres>),
    TokioPostgres(deadpool_postgres::Transaction<'c>),
    MySql(sqlx::Transaction<'c, MySql>),
}

impl Tx<'_> {
    pub(crate) async fn commit(self) -> Result<(), DbError> {
        match self {
            Self::Sqlx(tx) => tx.commit().await?,
            Self::TokioPostgres(tx) => tx.commit().await?,
            Self::MySql(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub(crate) async fn rollback(self) -> Result<(), DbError> {
        match self {
            Self::Sqlx(tx) => tx.rollback().await?,
            Self::TokioPostgres(tx) => tx.rollback().await?,
            Self::MySql(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

/// A statement parameter either driver can send: the Rust types the strategies bind (integers,
/// text, UUIDs, arrays, and optional text).
pub(crate) trait Param: Sync {
    fn to_sql(&self) -> &(dyn ToSql + Sync);
    fn bind_to<'q>(&self, query: SqlxQuery<'q>) -> SqlxQuery<'q>;
    fn bind_to_mysql<'q>(&self, query: MySqlQuery<'q>) -> MySqlQuery<'q>;
}

type SqlxQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;
type MySqlQuery<'q> = sqlx::query::Query<'q, MySql, MySqlArguments>;

macro_rules! params {
    ($($ty:ty),* $(,)?) => {
        $(impl Param for $ty {
            fn to_sql(&self) -> &(dyn ToSql + Sync) {
                self
            }

            fn bind_to<'q>(&self, query: SqlxQuery<'q>) -> SqlxQuery<'q> {
                query.bind(self)
            }

            fn bind_to_mysql<'q>(&self, query: MySqlQuery<'q>) -> MySqlQuery<'q> {
                query.bind(self)
            }
        })*
    };
}

params!(i64, i32, bool, uuid::Uuid, String);

/// Arrays: MySQL has none, so its statements take a list as JSON text (`JSON_TABLE`).
macro_rules! array_params {
    ($($ty:ty),* $(,)?) => {
        $(impl Param for $ty {
            fn to_sql(&self) -> &(dyn ToSql + Sync) {
                self
            }

            fn bind_to<'q>(&self, query: SqlxQuery<'q>) -> SqlxQuery<'q> {
                query.bind(self)
            }

            fn bind_to_mysql<'q>(&self, query: MySqlQuery<'q>) -> MySqlQuery<'q> {
                query.bind(sqlx::types::Json(self))
            }
        })*
    };
}

array_params!(Vec<i64>, Vec<i32>);

// Borrowed text binds by value: sqlx ties an `Option`'s encoding to its content's lifetime.
impl Param for &str {
    fn to_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }

    fn bind_to<'q>(&self, query: SqlxQuery<'q>) -> SqlxQuery<'q> {
        query.bind(*self)
    }

    fn bind_to_mysql<'q>(&self, query: MySqlQuery<'q>) -> MySqlQuery<'q> {
        query.bind(*self)
    }
}

impl Param for Option<&str> {
    fn to_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }

    fn bind_to<'q>(&self, query: SqlxQuery<'q>) -> SqlxQuery<'q> {
        query.bind(*self)
    }

    fn bind_to_mysql<'q>(&self, query: MySqlQuery<'q>) -> MySqlQuery<'q> {
        query.bind(*self)
    }
}

/// A column type either driver can read.
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
    + for<'r> FromSql<'r>
    + for<'r> sqlx::Decode<'r, MySql>
    + sqlx::Type<MySql>
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
        + for<'r> FromSql<'r>
        + for<'r> sqlx::Decode<'r, MySql>
        + sqlx::Type<MySql>
{
}

/// A result row of either driver.
pub(crate) enum Row {
    Sqlx(PgRow),
    TokioPostgres(tokio_postgres::Row),
    MySql(MySqlRow),
}

impl Row {
    /// Column `index` (0-based) as `T`.
    pub(crate) fn get<T: Column>(&self, index: usize) -> Result<T, DbError> {
        Ok(match self {
            Self::Sqlx(row) => sqlx::Row::try_get(row, index)?,
            Self::TokioPostgres(row) => row.try_get(index)?,
            Self::MySql(row) => sqlx::Row::try_get(row, index)?,
        })
    }
}

/// Statements on a connection or in a transaction, of either driver. Statements are `'static`
/// text, so tokio-postgres prepares each once per connection and reuses it.
#[async_trait]
pub(crate) trait Statements: Send {
    /// Runs `sql` and returns the rows it affected.
    async fn execute(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<u64, DbError>;

    /// Runs `sql` and returns every row.
    async fn fetch_all(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<Vec<Row>, DbError>;

    /// Runs `sql`, which returns at most one row.
    async fn fetch_optional(
        &mut self,
        sql: &'static str,
        params: &[&dyn Param],
    ) -> Result<Option<Row>, DbError> {
        Ok(self.fetch_all(sql, params).await?.into_iter().next())
    }

    /// Runs `sql`, which returns exactly one row.
    async fn fetch_one(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<Row, DbError> {
        self.fetch_optional(sql, params).await?.ok_or(DbError::NoRow(sql))
    }
}

fn sqlx_query(sql: &'static str, params: &[&dyn Param]) -> SqlxQuery<'static> {
    params.iter().fold(sqlx::query(sql), |query, param| param.bind_to(query))
}

/// `sql` with PostgreSQL's numbered placeholders (`$1`, reused as often as the statement needs)
/// as MySQL's positional `?`, each bound to the parameter its number names: every dialect's
/// statements take the same parameters in the same order. A `$` not followed by a digit (a JSON
/// path) is kept.
fn mysql_query(sql: &'static str, params: &[&dyn Param]) -> Result<MySqlQuery<'static>, DbError> {
    let mut text = String::with_capacity(sql.len());
    let mut order = Vec::with_capacity(params.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        text.push_str(&rest[..at]);
        if digits == 0 {
            text.push('$');
        } else {
            let number: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
            let param =
                number.checked_sub(1).and_then(|index| params.get(index)).ok_or(DbError::Parameter(sql))?;
            order.push(*param);
            text.push('?');
        }
        rest = &rest[at + 1 + digits..];
    }
    text.push_str(rest);
    Ok(order
        .into_iter()
        .fold(sqlx::query(sqlx::AssertSqlSafe(text)), |query, param| param.bind_to_mysql(query)))
}

/// The rows `by_ids` reads for `ids`, in id order: one statement, or one per id.
pub(crate) async fn fetch_by_ids(
    conn: &mut (impl Statements + ?Sized),
    by_ids: ByIds,
    ids: &Vec<i64>,
) -> Result<Vec<Row>, DbError> {
    match by_ids {
        ByIds::Array(sql) => conn.fetch_all(sql, &[ids]).await,
        ByIds::EachId(sql) => {
            let mut rows = Vec::with_capacity(ids.len());
            for id in ids {
                rows.extend(conn.fetch_optional(sql, &[id]).await?);
            }
            Ok(rows)
        }
    }
}

fn to_sql<'p>(params: &'p [&'p dyn Param]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|param| param.to_sql()).collect()
}

async fn tokio_execute(
    client: &(impl GenericClient + ?Sized),
    sql: &'static str,
    params: &[&dyn Param],
) -> Result<u64, DbError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.execute(&statement, &to_sql(params)).await?)
}

async fn tokio_fetch_all(
    client: &(impl GenericClient + ?Sized),
    sql: &'static str,
    params: &[&dyn Param],
) -> Result<Vec<Row>, DbError> {
    let statement = client.prepare_cached(sql).await?;
    let rows = client.query(&statement, &to_sql(params)).await?;
    Ok(rows.into_iter().map(Row::TokioPostgres).collect())
}

#[async_trait]
impl Statements for PgConnection {
    async fn execute(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<u64, DbError> {
        Ok(sqlx_query(sql, params).execute(self).await?.rows_affected())
    }

    async fn fetch_all(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<Vec<Row>, DbError> {
        Ok(sqlx_query(sql, params).fetch_all(self).await?.into_iter().map(Row::Sqlx).collect())
    }
}

#[async_trait]
impl Statements for MySqlConnection {
    async fn execute(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<u64, DbError> {
        Ok(mysql_query(sql, params)?.execute(self).await?.rows_affected())
    }

    async fn fetch_all(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<Vec<Row>, DbError> {
        Ok(mysql_query(sql, params)?.fetch_all(self).await?.into_iter().map(Row::MySql).collect())
    }
}

#[async_trait]
impl Statements for Conn {
    async fn execute(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<u64, DbError> {
        match self {
            Self::Sqlx(conn) => conn.execute(sql, params).await,
            Self::TokioPostgres(client) => tokio_execute(&*client, sql, params).await,
            Self::MySql(conn) => conn.execute(sql, params).await,
        }
    }

    async fn fetch_all(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<Vec<Row>, DbError> {
        match self {
            Self::Sqlx(conn) => conn.fetch_all(sql, params).await,
            Self::TokioPostgres(client) => tokio_fetch_all(&*client, sql, params).await,
            Self::MySql(conn) => conn.fetch_all(sql, params).await,
        }
    }
}

#[async_trait]
impl Statements for Tx<'_> {
    async fn execute(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<u64, DbError> {
        match self {
            Self::Sqlx(tx) => (**tx).execute(sql, params).await,
            Self::TokioPostgres(tx) => tokio_execute(tx, sql, params).await,
            Self::MySql(tx) => (**tx).execute(sql, params).await,
        }
    }

    async fn fetch_all(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<Vec<Row>, DbError> {
        match self {
            Self::Sqlx(tx) => (**tx).fetch_all(sql, params).await,
            Self::TokioPostgres(tx) => tokio_fetch_all(tx, sql, params).await,
            Self::MySql(tx) => (**tx).fetch_all(sql, params).await,
        }
    }
}

/// A database failure of either driver, classified the same way whichever reported it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    TokioPostgres(#[from] tokio_postgres::Error),
    /// No connection could be had: nothing was sent.
    #[error("no PostgreSQL connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement that returns one row returned none (a bug in the statement).
    #[error("statement returned no row: {0}")]
    NoRow(&'static str),
    /// A statement names a parameter it was not given (a bug in the statement).
    #[error("statement names a parameter it was not given: {0}")]
    Parameter(&'static str),
}

impl DbError {
    /// The SQLSTATE PostgreSQL answered with, if it answered.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            Self::Sqlx(sqlx::Error::Database(db)) => db.code().map(|code| code.into_owned()),
            Self::TokioPostgres(err) => err.code().map(|state| state.code().to_owned()),
            _ => None,
        }
    }

    fn constraint(&self) -> Option<&str> {
        match self {
            Self::Sqlx(sqlx::Error::Database(db)) => db.constraint(),
            Self::TokioPostgres(err) => {
                err.as_db_error().and_then(tokio_postgres::error::DbError::constraint)
            }
            _ => None,
        }
    }

    fn unique_violation_of(&self, constraint: &str) -> bool {
        self.sqlstate().as_deref() == Some("23505") && self.constraint() == Some(constraint)
    }

    /// The MySQL error the server answered with, if it was a MySQL server: its number and message.
    fn mysql(&self) -> Option<&MySqlDatabaseError> {
        match self {
            Self::Sqlx(sqlx::Error::Database(db)) => db.try_downcast_ref::<MySqlDatabaseError>(),
            _ => None,
        }
    }

    fn mysql_duplicate_of(&self, key: &str) -> bool {
        self.mysql().and_then(|err| mysql::duplicate_key(err.number(), err.message())) == Some(key)
    }

    /// The idempotency key is already taken by another order.
    pub fn is_duplicate_key(&self) -> bool {
        self.unique_violation_of("orders_idempotency_key")
            || self.mysql_duplicate_of("orders_idempotency_key")
    }

    /// The order's insert collided with its own id: somebody voided it while it was in doubt
    /// ([`crate::fence`]), and its units were (or are being) given back. Nothing was sold.
    pub fn is_voided(&self) -> bool {
        // MySQL names every primary key `PRIMARY`; an order's insert is the only one that can
        // collide on it (its lines' keys start with the order's own id).
        self.unique_violation_of("orders_pkey") || self.mysql_duplicate_of("PRIMARY")
    }

    /// A serialization failure or deadlock: the transaction may succeed if run again.
    pub fn is_retryable(&self) -> bool {
        matches!(self.sqlstate().as_deref(), Some("40001" | "40P01"))
            || self.mysql().is_some_and(|err| mysql::is_retryable(err.number()))
    }

    /// The statement or its `COMMIT` may have taken effect although the client saw an error
    /// ([`crate::fence::may_have_committed`]).
    pub fn may_have_committed(&self) -> bool {
        match self {
            Self::Sqlx(err) => crate::fence::may_have_committed(err),
            // A connection that could not be had sent nothing.
            Self::Pool(_) | Self::NoRow(_) | Self::Parameter(_) => false,
            Self::TokioPostgres(err) => match err.code() {
                Some(state) => {
                    let code = state.code();
                    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
                }
                // No answer from PostgreSQL (the connection broke or the reply was garbled): the
                // statement may have run. Settling a write that did not happen costs one void row.
                None => true,
            },
        }
    }
}

/// The I/O failure under a tokio-postgres error, when that is what it is.
fn is_io(err: &tokio_postgres::Error) -> bool {
    err.is_closed()
        || std::error::Error::source(err)
            .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some())
}

impl From<DbError> for StrategyError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Sqlx(err) => err.into(),
            DbError::Pool(deadpool_postgres::PoolError::NoRuntimeSpecified) => {
                Self::Internal(err.to_string())
            }
            DbError::Pool(_) => Self::Unavailable(err.to_string()),
            DbError::NoRow(_) | DbError::Parameter(_) => Self::Internal(err.to_string()),
            DbError::TokioPostgres(ref inner) => match inner.code() {
                Some(state) => from_sqlstate(state.code(), err.to_string()),
                None if is_io(inner) => Self::Unavailable(err.to_string()),
                None => Self::Internal(err.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_parse_from_their_names_and_nothing_else() {
        for driver in PgDriver::ALL {
            assert_eq!(driver.as_str().parse::<PgDriver>(), Ok(driver));
            assert_eq!(serde_json::to_value(driver).unwrap(), driver.as_str());
        }
        let err = "diesel".parse::<PgDriver>().unwrap_err();
        assert!(err.contains("sqlx, tokio-postgres"), "the error lists the drivers: {err}");
        assert_eq!(PgDriver::default(), PgDriver::Sqlx, "sqlx unless asked");
    }

    #[test]
    fn connect_options_carry_over() {
        let options: PgConnectOptions = "postgres://buyer@127.0.0.9:6543/shop".parse().expect("a valid URL");
        let config = config_of(&options);
        assert_eq!(config.get_hosts(), [tokio_postgres::config::Host::Tcp("127.0.0.9".into())]);
        assert_eq!(config.get_ports(), [6543]);
        assert_eq!(config.get_user(), Some("buyer"));
        assert_eq!(config.get_dbname(), Some("shop"));
    }
}
