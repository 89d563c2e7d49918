//! The closed set of strategy names: one table drives the `X-Strategy` header, routes, CLI values,
//! CSV rows, chart legends and Locust tags, so a name can never mean two things.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every purchase strategy the server hosts.
///
/// Adding one means a variant here, a row in [`StrategyKind::spec`] and an arm in
/// [`crate::registry::build`]; the compiler points at each place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StrategyKind {
    Memory,
    SqlNaive,
    SqlForUpdate,
    SqlAtomic,
    SqlCoalesce,
    SqlSkipLocked,
    SqlOptimistic,
    RedisDecr,
    RedisLua,
    RedisOrderlog,
    Stream,
    StreamDeferred,
    QueueNats,
}

/// Where a strategy takes stock first: the books its purchases are exact against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    /// Its own books in this process (the baseline).
    InProcess,
    /// PostgreSQL's stock row, inside the transaction that writes the order.
    Postgres,
    /// The Redis mirror, before PostgreSQL sees the order.
    Redis,
    /// PostgreSQL's unit pool (`inventory_units`, one row per unit): its own books, apart from the
    /// stock row.
    Units,
}

impl Guarantees {
    /// Orders and stock live in PostgreSQL (every strategy but the in-process baseline).
    pub const fn persists_to_postgres(&self) -> bool {
        !matches!(self.gate, Gate::InProcess)
    }
}

impl Gate {
    /// The spelling kept in `products.gate`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "in-process",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Units => "units",
        }
    }
}

/// What carries a queueing strategy's accepted orders to the worker that persists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Queue {
    /// A Redis stream under the key prefix, read by a consumer group
    /// ([`crate::redis_stream::Worker`]).
    RedisStream,
    /// A NATS JetStream stream, read by a durable pull consumer ([`crate::queue_nats::Consumer`]).
    NatsJetstream,
}

/// What a strategy promises, read by the HTTP listing, the README table and the behaviour suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Guarantees {
    /// Where stock and orders live, for people (`gate` and `queued` say it for code).
    pub backend: &'static str,
    /// Where stock is taken first.
    pub gate: Gate,
    /// Its books live in one server process: several replicas would each sell the whole stock.
    pub single_process: bool,
    /// A queued order holds its units from the moment it is accepted (else the worker takes them
    /// later, and an accepted order can still be refused).
    pub reserves_before_accepting: bool,
    /// Never sells more than the stock, loses no order and never duplicates one, under contention.
    pub safe: bool,
    /// A confirmed order survives a crash of the server.
    pub durable: bool,
    /// Clients get `202 pending` and a worker confirms the order later.
    #[serde(rename = "async")]
    pub queued: bool,
    /// What carries the accepted orders of a queueing strategy (`None` for the others).
    pub queue: Option<Queue>,
    /// One line for listings.
    pub description: &'static str,
}

impl StrategyKind {
    /// Every kind, in the order listings show them.
    pub const ALL: [Self; 13] = [
        Self::Memory,
        Self::SqlNaive,
        Self::SqlForUpdate,
        Self::SqlAtomic,
        Self::SqlCoalesce,
        Self::SqlSkipLocked,
        Self::SqlOptimistic,
        Self::RedisDecr,
        Self::RedisLua,
        Self::RedisOrderlog,
        Self::Stream,
        Self::StreamDeferred,
        Self::QueueNats,
    ];

    /// The one name used everywhere (kebab-case).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::SqlNaive => "sql-naive",
            Self::SqlForUpdate => "sql-for-update",
            Self::SqlAtomic => "sql-atomic",
            Self::SqlCoalesce => "sql-coalesce",
            Self::SqlSkipLocked => "sql-skip-locked",
            Self::SqlOptimistic => "sql-optimistic",
            Self::RedisDecr => "redis-decr",
            Self::RedisLua => "redis-lua",
            Self::RedisOrderlog => "redis-orderlog",
            Self::Stream => "stream",
            Self::StreamDeferred => "stream-deferred",
            Self::QueueNats => "queue-nats",
        }
    }

    /// What the seed's `/index.php` endpoint runs without a `mode`: its `stream` mode.
    pub const SEED_DEFAULT: Self = Self::StreamDeferred;

    /// The strategy a `mode` of the seed's endpoint stands for: its three modes map to the
    /// strategies that reproduce them, any other mode is read as a strategy name.
    pub fn of_seed_mode(mode: &str) -> Option<Self> {
        match mode {
            "simple" => Some(Self::SqlNaive),
            "redis" => Some(Self::RedisDecr),
            "stream" => Some(Self::StreamDeferred),
            name => name.parse().ok(),
        }
    }

    /// Whether this strategy's purchase runs on the client `PG_DRIVER` picks
    /// ([`crate::pg_driver`]): the per-sale SQL strategies. `sql-coalesce` commits batches on sqlx.
    pub const fn runs_on_pg_driver(self) -> bool {
        matches!(
            self,
            Self::SqlNaive | Self::SqlForUpdate | Self::SqlAtomic | Self::SqlSkipLocked | Self::SqlOptimistic
        )
    }

    /// What this strategy promises.
    pub const fn spec(self) -> Guarantees {
        match self {
            Self::Memory => Guarantees {
                backend: "in-process",
                gate: Gate::InProcess,
                single_process: true,
                reserves_before_accepting: true,
                safe: true,
                durable: false,
                queued: false,
                queue: None,
                description: "Baseline: one in-process mutex-guarded counter per product, no \
                              database. Measures the server's own overhead; loses everything on restart.",
            },
            Self::SqlNaive => Guarantees {
                backend: "postgres",
                gate: Gate::Postgres,
                single_process: false,
                reserves_before_accepting: true,
                safe: false,
                durable: true,
                queued: false,
                queue: None,
                description: "Unsafe by design (the seed's `simple` mode): read the stock, check it in \
                              the application, then decrement unconditionally. Oversells under contention.",
            },
            Self::SqlForUpdate => Guarantees {
                backend: "postgres",
                gate: Gate::Postgres,
                single_process: false,
                reserves_before_accepting: true,
                safe: true,
                durable: true,
                queued: false,
                queue: None,
                description: "Pessimistic: SELECT ... FOR UPDATE on the order's products in id order, \
                              check, decrement and insert the order in one transaction.",
            },
            Self::SqlAtomic => Guarantees {
                backend: "postgres",
                gate: Gate::Postgres,
                single_process: false,
                reserves_before_accepting: true,
                safe: true,
                durable: true,
                queued: false,
                queue: None,
                description: "One conditional UPDATE ... WHERE stock >= quantity per item and the order \
                              insert in one transaction (one statement for single-item orders).",
            },
            Self::SqlCoalesce => Guarantees {
                backend: "postgres",
                gate: Gate::Postgres,
                single_process: false,
                reserves_before_accepting: true,
                safe: true,
                durable: true,
                queued: false,
                queue: None,
                description: "Group commit: purchases join a batch, and one transaction locks the batch's \
                              products, accepts orders in arrival order while they fit, inserts them in one \
                              statement and commits; each buyer hears 201 or 409 after that COMMIT.",
            },
            Self::SqlSkipLocked => Guarantees {
                backend: "postgres",
                gate: Gate::Units,
                single_process: false,
                reserves_before_accepting: true,
                safe: true,
                durable: true,
                queued: false,
                queue: None,
                description: "One row per unit: claim `quantity` free unit rows with FOR UPDATE SKIP \
                              LOCKED, mark them with the order and insert it in one transaction; buyers \
                              of one product never wait for each other's row locks.",
            },
            Self::SqlOptimistic => Guarantees {
                backend: "postgres",
                gate: Gate::Postgres,
                single_process: false,
                reserves_before_accepting: true,
                safe: true,
                durable: true,
                queued: false,
                queue: None,
                description: "Version-column compare-and-swap: read stock and version, then UPDATE ... \
                              WHERE version = read AND stock >= quantity, and insert the order, in one \
                              transaction; bounded retries with jitter, then 409 contention. Never \
                              oversells; may undersell under contention.",
            },
            Self::RedisDecr => Guarantees {
                backend: "redis+postgres",
                gate: Gate::Redis,
                single_process: false,
                reserves_before_accepting: true,
                safe: true,
                durable: true,
                queued: false,
                queue: None,
                description: "The seed's `redis` mode: DECRBY every line in Redis, INCRBY back when one \
                              went negative; the order and the same decrement are committed to \
                              PostgreSQL before 201. Never oversells; may undersell transiently.",
            },
            Self::RedisLua => Guarantees {
                backend: "redis+postgres",
                gate: Gate::Redis,
                single_process: false,
                reserves_before_accepting: true,
                safe: true,
                durable: true,
                queued: false,
                queue: None,
                description: "One Lua script checks and reserves every line atomically in Redis; the order \
                              and the same decrement are committed to PostgreSQL before 201.",
            },
            Self::RedisOrderlog => Guarantees {
                backend: "redis+postgres",
                gate: Gate::Redis,
                single_process: false,
                reserves_before_accepting: true,
                safe: true,
                durable: true,
                queued: false,
                queue: None,
                description: "The same atomic Lua reservation as `redis-lua`, then an insert-only commit of \
                              the order before 201 (no update of the product row); a stock sync applies \
                              committed orders to PostgreSQL's stock in one transaction per interval.",
            },
            Self::Stream => Guarantees {
                backend: "redis+postgres",
                gate: Gate::Redis,
                single_process: false,
                reserves_before_accepting: true,
                safe: true,
                durable: true,
                queued: true,
                queue: Some(Queue::RedisStream),
                description: "One Lua script reserves every line and appends the order to a Redis stream \
                              atomically; the client hears 202 pending and a worker commits the order to \
                              PostgreSQL. Never oversells; an accepted order survives a server or worker \
                              crash, but not a restart of a Redis that keeps nothing on disk.",
            },
            Self::StreamDeferred => Guarantees {
                backend: "redis+postgres",
                gate: Gate::Redis,
                single_process: false,
                reserves_before_accepting: false,
                safe: false,
                durable: true,
                queued: true,
                queue: Some(Queue::RedisStream),
                description: "Unsafe by design (the seed's `stream` mode): checks the stock with MGET, \
                              appends the order to a stream and answers 202; the worker takes the stock \
                              later and cancels what no longer fits, so clients told 202 can end up with a \
                              cancelled order.",
            },
            Self::QueueNats => Guarantees {
                backend: "redis+nats+postgres",
                gate: Gate::Redis,
                single_process: false,
                reserves_before_accepting: true,
                safe: true,
                durable: true,
                queued: true,
                queue: Some(Queue::NatsJetstream),
                description: "`stream`'s atomic Lua reservation, then a publish to a NATS JetStream \
                              stream (file storage, `Nats-Msg-Id` = order id); 202 pending only after \
                              the broker's PubAck. A durable pull consumer commits the orders to \
                              PostgreSQL and acknowledges them after the commit.",
            },
        }
    }

    /// Every known name, comma-separated, for error messages and `--help`.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|kind| kind.as_str()).collect()
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name matched no strategy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {name:?}; known strategies: {}", StrategyKind::names().join(", "))]
pub struct UnknownStrategy {
    pub name: String,
}

impl FromStr for StrategyKind {
    type Err = UnknownStrategy;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownStrategy { name: name.to_owned() })
    }
}

impl Serialize for StrategyKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StrategyKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_modes_name_the_strategies_that_reproduce_them() {
        assert_eq!(StrategyKind::of_seed_mode("simple"), Some(StrategyKind::SqlNaive));
        assert_eq!(StrategyKind::of_seed_mode("redis"), Some(StrategyKind::RedisDecr));
        assert_eq!(StrategyKind::of_seed_mode("stream"), Some(StrategyKind::StreamDeferred));
        assert_eq!(StrategyKind::SEED_DEFAULT, StrategyKind::StreamDeferred, "the seed's default mode");
        for kind in StrategyKind::ALL.into_iter().filter(|kind| kind.as_str() != "stream") {
            assert_eq!(StrategyKind::of_seed_mode(kind.as_str()), Some(kind), "a strategy name is a mode");
        }
        assert_eq!(StrategyKind::of_seed_mode("nope"), None);
    }

    #[test]
    fn every_name_round_trips_through_from_str_and_serde() {
        for kind in StrategyKind::ALL {
            assert_eq!(kind.as_str().parse::<StrategyKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<StrategyKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn names_are_unique_and_kebab_case() {
        let mut names = StrategyKind::names();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), StrategyKind::ALL.len(), "two strategies share a name");
    }

    #[test]
    fn queued_strategies_name_their_queue() {
        for kind in StrategyKind::ALL {
            let spec = kind.spec();
            assert_eq!(spec.queued, spec.queue.is_some(), "{kind}: `async` and `queue` disagree");
        }
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = "sql-magic".parse::<StrategyKind>().unwrap_err();
        let message = err.to_string();
        for name in StrategyKind::names() {
            assert!(message.contains(name), "{message} does not list {name}");
        }
    }
}
