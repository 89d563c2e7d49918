//! Which SQL server holds the books, read from the database URL, and each dialect's statements.
//!
//! Strategies keep their logic and ask their pool's [`SqlBackend`] for the statements of their
//! steps ([`DialectSql`]); every statement takes its parameters in the same order in every
//! dialect (`$1`, `$2`, … as PostgreSQL numbers them; the MySQL driver rewrites them to `?`), so a
//! strategy binds the same values whichever server runs them. A third dialect is one more module
//! with its [`DialectSql`], one more [`SqlBackend`] variant and its migrations.

use std::fmt;

pub mod ceiling;
pub(crate) mod mysql;
pub(crate) mod mysql_batch;
pub(crate) mod mysql_mirror;
pub(crate) mod mysql_stock_sync;
pub(crate) mod postgres;

/// The SQL server the database URL names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlBackend {
    #[default]
    Postgres,
    /// MySQL or MariaDB (InnoDB); MariaDB 10.11 is the one tested.
    MySql,
}

/// A database URL whose scheme names no supported server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported database URL scheme {scheme:?}: use postgres:// or postgresql:// (PostgreSQL), mysql:// or mariadb:// (MariaDB/MySQL)"
)]
pub struct UnsupportedDatabase {
    pub scheme: String,
}

impl SqlBackend {
    pub const ALL: [Self; 2] = [Self::Postgres, Self::MySql];

    /// The backend of `url`, from its scheme alone.
    ///
    /// # Errors
    /// When the scheme is none of `postgres`, `postgresql`, `mysql`, `mariadb`.
    pub fn from_url(url: &str) -> Result<Self, UnsupportedDatabase> {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::MySql),
            _ => Err(UnsupportedDatabase { scheme: scheme.to_owned() }),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }

    /// Whether `kind` sells on this backend. Every strategy runs on both dialects today; a dialect
    /// added later lists here the strategies whose statements it has, and the server answers 501
    /// `not_on_this_database` for the others.
    pub const fn runs(self, kind: crate::kind::StrategyKind) -> bool {
        let _ = kind;
        match self {
            Self::Postgres | Self::MySql => true,
        }
    }

    /// The statements of this dialect.
    pub(crate) const fn sql(self) -> &'static DialectSql {
        match self {
            Self::Postgres => &postgres::SQL,
            Self::MySql => &mysql::SQL,
        }
    }

    /// The schema migrations of this dialect.
    pub fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Self::Postgres => &crate::MIGRATOR,
            Self::MySql => &crate::MYSQL_MIGRATOR,
        }
    }
}

impl fmt::Display for SqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dialect's statements for every step the ported strategies and their books take.
#[derive(Debug)]
pub(crate) struct DialectSql {
    pub(crate) atomic: AtomicSql,
    pub(crate) for_update: ForUpdateSql,
    pub(crate) naive: NaiveSql,
    pub(crate) optimistic: OptimisticSql,
    pub(crate) skip_locked: SkipLockedSql,
    pub(crate) contention: ContentionSql,
    pub(crate) orders: OrderSql,
    pub(crate) fence: FenceSql,
    pub(crate) claims: ClaimSql,
    pub(crate) redis: RedisSql,
}

/// Rows of `products` by id, for a list of ids.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ByIds {
    /// One statement, the ids bound as one array parameter (`$1`).
    Array(&'static str),
    /// One statement per id (`$1`), run in id order. For servers where a list parameter would
    /// leave the row lookups (and so the rows a locking read locks) to the optimizer.
    EachId(&'static str),
}

/// `sql-atomic`.
#[derive(Debug)]
pub(crate) struct AtomicSql {
    /// Decrement, order and line in one statement; `None` where the dialect has no data-modifying
    /// CTE, and a single line goes through the multi-line transaction.
    pub(crate) buy_one_line: Option<&'static str>,
    /// `$1` product, `$2` quantity: the conditional decrement, claiming the SQL gate.
    pub(crate) take_line: &'static str,
    /// `$1` product: its gate, to tell a refusal's reason.
    pub(crate) why_not: &'static str,
}

/// `sql-for-update`.
#[derive(Debug)]
pub(crate) struct ForUpdateSql {
    /// `id, stock, gate` of the order's products, locked, in id order.
    pub(crate) lock_products: ByIds,
    /// `$1` product, `$2` quantity: the decrement under the lock, claiming the SQL gate.
    pub(crate) take: &'static str,
}

/// `sql-naive`.
#[derive(Debug)]
pub(crate) struct NaiveSql {
    /// `id, stock` of the order's products, unlocked, in id order.
    pub(crate) read_stock: ByIds,
    /// `$1` product, `$2` quantity: the unchecked decrement.
    pub(crate) take_unconditionally: &'static str,
}

/// `sql-optimistic`.
#[derive(Debug)]
pub(crate) struct OptimisticSql {
    /// `id, stock, version, gate` of the order's products, unlocked, in id order.
    pub(crate) read: ByIds,
    /// `$1` product, `$2` quantity, `$3` the version read: the compare-and-swap, claiming the SQL
    /// gate.
    pub(crate) swap: &'static str,
}

/// `sql-skip-locked`.
#[derive(Debug)]
pub(crate) struct SkipLockedSql {
    /// Claims product `$1` for the unit pool and lays its pool out from its stock row when no gate
    /// sells it yet.
    pub(crate) lay_out: LayOutPool,
    /// `$1` product: its gate.
    pub(crate) gate_of: &'static str,
    /// Marks up to `$2` free units of product `$1` with order `$3`, skipping units other buyers
    /// hold; how many it marked is the affected-row count.
    pub(crate) claim_units: ClaimUnits,
}

/// How a dialect lays a unit pool out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LayOutPool {
    /// One statement: `claimed` (bool), `units` (bigint).
    OneStatement(&'static str),
    /// In one transaction: `lock` reads `stock, gate` of `$1` locked; when the gate is empty,
    /// `claim` sets it and `fill` (`$1` product, `$2` units) inserts the unit rows.
    Steps { lock: &'static str, claim: &'static str, fill: &'static str },
}

/// How a dialect marks free units.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClaimUnits {
    /// One `UPDATE` over a `SKIP LOCKED` sub-select: `$1` product, `$2` units, `$3` order.
    OneStatement(&'static str),
    /// Where `SKIP LOCKED` exists for locking reads only: `pick` (`$1` product, `$2` units) reads
    /// `unit_no` of free units it locked, skipping locked ones; `mark` (`$1` product, `$2` the
    /// unit numbers as a JSON array, `$3` order) marks them.
    PickThenMark { pick: &'static str, mark: &'static str },
}

/// The Redis strategies' writes of an order whose units Redis reserved ([`crate::redis_persist`]).
#[derive(Debug)]
pub(crate) struct RedisSql {
    /// `$1` product, `$2` quantity: the decrement Redis's reservation already decided, still
    /// conditional, so a mirror above the books costs a refusal, never an oversell.
    pub(crate) take_reserved: &'static str,
}

/// Buyers refused for contention, counted per product under the plan in force
/// ([`crate::contention`]).
#[derive(Debug)]
pub(crate) struct ContentionSql {
    /// `$1` product: one more refusal.
    pub(crate) record: &'static str,
    /// `product_id, refusals` under the plan in force.
    pub(crate) of_current_plan: &'static str,
    /// Drops the counts of earlier plans.
    pub(crate) forget_earlier: &'static str,
}

/// Orders every SQL strategy writes and reads.
#[derive(Debug)]
pub(crate) struct OrderSql {
    /// Run in turn with the same parameters: `$1` id, `$2` strategy, `$3` status, `$4` key,
    /// `$5` user, `$6` address, `$7` phone, `$8` email, `$9` product ids, `$10` quantities.
    pub(crate) insert: &'static [&'static str],
    /// `$1` idempotency key: `id, status, strategy` of the live order holding it.
    pub(crate) receipt_by_key: &'static str,
}

/// Settling an order in doubt ([`crate::fence`]).
#[derive(Debug)]
pub(crate) struct FenceSql {
    /// `$1` id, `$2` strategy, `$3` reason: a void row unless the id is taken (0 rows then).
    pub(crate) void: &'static str,
    /// `$1` id: its status.
    pub(crate) status: &'static str,
}

/// The shared idempotency claim ([`crate::idempotency`]).
#[derive(Debug)]
pub(crate) struct ClaimSql {
    /// `$1` key, `$2` order id, `$3` strategy, `$4` fingerprint.
    pub(crate) claim: ClaimStep,
    /// `$1` key, `$2` order id: frees the key if that order still holds it.
    pub(crate) unclaim: &'static str,
    /// `$1` order id: `status, strategy` of the live order.
    pub(crate) receipt: &'static str,
}

/// How a dialect claims a key and learns who holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClaimStep {
    /// One statement returning the claim row, ours or the holder's:
    /// `order_id, strategy, fingerprint, age_secs, mine`.
    Returning(&'static str),
    /// An insert that takes a free key (one row affected), then, when it was taken, a read of the
    /// holder (`$1` key): `order_id, strategy, fingerprint, age_secs`.
    InsertThenRead { insert: &'static str, holder: &'static str },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_backend() {
        for (url, backend) in [
            ("postgres://postgres@127.0.0.1:5432/checkout", SqlBackend::Postgres),
            ("postgresql://127.0.0.1/checkout", SqlBackend::Postgres),
            ("mysql://root@127.0.0.1:3306/checkout", SqlBackend::MySql),
            ("mariadb://root@127.0.0.1:3306/checkout", SqlBackend::MySql),
            ("MySQL://root@127.0.0.1/checkout", SqlBackend::MySql),
        ] {
            assert_eq!(SqlBackend::from_url(url), Ok(backend), "{url}");
        }
    }

    #[test]
    fn another_scheme_is_refused_naming_the_accepted_ones() {
        for url in ["sqlite://checkout.db", "127.0.0.1:5432/checkout", "redis://127.0.0.1"] {
            let err = SqlBackend::from_url(url).unwrap_err().to_string();
            for accepted in ["postgres://", "postgresql://", "mysql://", "mariadb://"] {
                assert!(err.contains(accepted), "{url}: {err}");
            }
        }
    }
}
