//! Units taken in Redis, each tied to the order that took them.
//!
//! A synchronous Redis strategy takes units before PostgreSQL has the order. A bare in-flight
//! counter cannot say which orders those units belong to, so a purchase that died between the two
//! left them off the shelf for good while the books still balanced. Here every reservation is a
//! record (order id → strategy and lines) with a deadline, written in the same script that takes
//! the units; the per-product in-flight counter moves only in the scripts that add or remove a
//! record, so it always equals the sum of the records and never goes below zero.
//!
//! - The owner ends its reservation with [`finish`]: `settle` once PostgreSQL holds the order,
//!   `release` when it certainly never will.
//! - The [`Sweeper`] ends reservations past their deadline: it settles each order's doubt in
//!   PostgreSQL ([`crate::fence::settle`]: committed, or void for good) and then settles or
//!   releases it. It never releases an order that committed.
//! - [`recover`] rebuilds a missing stock key from the same per-order truth: what is left to sell
//!   in PostgreSQL (its stock row less the units `redis-orderlog` committed that the stock sync has
//!   not applied yet) minus the units of every hold (reservation or queued order) PostgreSQL does
//!   not hold yet. The sweeper's resync reads the same "left to sell".
//! - Products whose mirror may stand *above* PostgreSQL (rebuilt after Redis lost purchases in
//!   flight, or refused by PostgreSQL's conditional decrement) go into a resync set; the sweeper
//!   rewrites each one from PostgreSQL once nothing of it is in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backends::RedisBackend;
use crate::error::StrategyError;
use crate::fence::{self, Doubt};
use crate::kind::StrategyKind;
use crate::order::{OrderLine, OrderLines, ProductId, Quantity};
use crate::pg_driver::SqlPool;

static RESERVE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/reserve.lua")));
static FINISH: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/finish.lua")));
static EXPIRED: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/expired.lua")));
static RECOVER: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/recover.lua")));
static RESYNC: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/resync.lua")));

/// How a reservation takes its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// All lines or none, checked first (`redis-lua`).
    Check,
    /// Decrement without looking; the caller gives the units back if a counter went negative
    /// (`redis-decr`, the seed's way).
    Decrement,
}

/// What [`reserve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// Taken: units left on each line's shelf afterwards (negative when a decrement overshot).
    Taken(Vec<i64>),
    /// Line `i` (0-based) is short of stock; nothing was taken.
    Short(usize),
    /// Line `i`'s stock key is missing; nothing was taken.
    Missing(usize),
}

/// Takes `lines` for order `id` of `kind` and records the reservation, expiring after `ttl`.
///
/// # Errors
/// When Redis does not answer. The reservation may then exist or not: the owner must not commit
/// the order, and either releases it or leaves it to the sweeper.
pub(crate) async fn reserve(
    redis: &RedisBackend,
    kind: StrategyKind,
    id: Uuid,
    lines: &OrderLines,
    take: Take,
    ttl: Duration,
) -> Result<Reserved, StrategyError> {
    let mut invocation = RESERVE.prepare_invoke();
    invocation.key(redis.keys.reservations()).key(redis.keys.reservation_deadlines());
    push_line_keys(&mut invocation, redis, lines);
    invocation
        .arg(id.to_string())
        .arg(record(kind, lines))
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        .arg(match take {
            Take::Check => "check",
            Take::Decrement => "decr",
        });
    for line in lines {
        invocation.arg(line.quantity.get());
    }
    let mut conn = redis.conn.clone();
    let reply: Vec<i64> = invocation.invoke_async(&mut conn).await?;
    let line = |at: i64| {
        usize::try_from(at - 1)
            .ok()
            .filter(|&i| i < lines.len())
            .ok_or_else(|| StrategyError::Internal(format!("reserve.lua answered {reply:?}")))
    };
    match reply.as_slice() {
        [0, left @ ..] if left.len() == lines.len() => Ok(Reserved::Taken(left.to_vec())),
        [1, at] => Ok(Reserved::Short(line(*at)?)),
        [2, at] => Ok(Reserved::Missing(line(*at)?)),
        // Order ids are fresh per request: a second reservation for one is a bug, never a retry.
        _ => Err(StrategyError::Internal(format!("reserve.lua answered {reply:?}"))),
    }
}

/// How a reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// PostgreSQL holds the order: the units stop being in flight.
    Settle,
    /// It never will: the units go back on the shelf.
    Release,
}

/// Ends order `id`'s reservation of `lines`. Ending one that is gone (ended before, or lost with
/// Redis) does nothing. A stock key that went missing is recovered first.
///
/// # Errors
/// When a backend does not answer; the reservation then stays, and the sweeper ends it after its
/// deadline.
pub(crate) async fn finish(
    books: &SqlPool,
    redis: &RedisBackend,
    id: Uuid,
    lines: &OrderLines,
    end: End,
) -> Result<(), StrategyError> {
    for _ in 0..=lines.len() {
        let mut invocation = FINISH.prepare_invoke();
        invocation.key(redis.keys.reservations()).key(redis.keys.reservation_deadlines());
        push_line_keys(&mut invocation, redis, lines);
        invocation.arg(id.to_string()).arg(match end {
            End::Settle => "settle",
            End::Release => "release",
        });
        for line in lines {
            invocation.arg(line.quantity.get());
        }
        let mut conn = redis.conn.clone();
        let moved: i64 = invocation.invoke_async(&mut conn).await?;
        if moved >= 0 {
            return Ok(());
        }
        let missing = usize::try_from(-moved - 1)
            .ok()
            .and_then(|i| lines.iter().nth(i))
            .ok_or_else(|| StrategyError::Internal(format!("finish.lua answered {moved}")))?;
        recover(books, redis, missing.product_id).await?;
    }
    Err(StrategyError::Unavailable("stock keys kept disappearing from Redis".into()))
}

/// `strategy;id:qty;id:qty`: what the sweeper needs to end a reservation whose owner is gone.
fn record(kind: StrategyKind, lines: &OrderLines) -> String {
    let mut out = kind.as_str().to_owned();
    for line in lines {
        out.push_str(&format!(";{}:{}", line.product_id, line.quantity.get()));
    }
    out
}

fn parse_record(record: &str) -> Option<(StrategyKind, OrderLines)> {
    let mut parts = record.split(';');
    let kind = parts.next()?.parse().ok()?;
    let lines = parts
        .map(|part| {
            let (id, quantity) = part.split_once(':')?;
            Some(OrderLine {
                product_id: ProductId::parse(id.parse().ok()?).ok()?,
                quantity: Quantity::parse(quantity.parse().ok()?).ok()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((kind, OrderLines::new(lines).ok()?))
}

/// Stock keys, then in-flight keys, of `lines`.
pub(crate) fn push_line_keys(
    invocation: &mut redis::ScriptInvocation<'_>,
    redis: &RedisBackend,
    lines: &OrderLines,
) {
    for line in lines {
        invocation.key(redis.keys.stock(line.product_id.get()));
    }
    for line in lines {
        invocation.key(redis.keys.inflight(line.product_id.get()));
    }
}

/// Units held in Redis for one order PostgreSQL may not have yet: a synchronous reservation, or a
/// queued order that holds its units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub order_id: Uuid,
    pub strategy: StrategyKind,
    /// The hash whose field `order_id` keeps the hold alive.
    pub(crate) hash: String,
    pub lines: OrderLines,
    /// Deadline in Redis milliseconds, for synchronous reservations.
    pub deadline_ms: Option<i64>,
}

/// Every hold in Redis: synchronous reservations and the queued orders that hold units.
///
/// # Errors
/// When Redis does not answer.
pub async fn holds(redis: &RedisBackend) -> Result<Vec<Hold>, StrategyError> {
    let mut conn = redis.conn.clone();
    let hash = redis.keys.reservations();
    let records: HashMap<String, String> = redis::cmd("HGETALL").arg(&hash).query_async(&mut conn).await?;
    let deadlines: HashMap<String, i64> = redis::cmd("ZRANGE")
        .arg(redis.keys.reservation_deadlines())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await?;
    let mut out = Vec::with_capacity(records.len());
    for (order, record) in records {
        let (Ok(order_id), Some((strategy, lines))) = (Uuid::try_parse(&order), parse_record(&record)) else {
            tracing::error!(%order, %record, "unreadable reservation record");
            continue;
        };
        let deadline_ms = deadlines.get(&order).copied();
        out.push(Hold { order_id, strategy, hash: hash.clone(), lines, deadline_ms });
    }
    out.extend(crate::redis_stream::queued_holds(redis).await?);
    Ok(out)
}

/// The current time on Redis's clock, in milliseconds (deadlines are on that clock).
///
/// # Errors
/// When Redis does not answer.
pub async fn redis_now_ms(redis: &RedisBackend) -> Result<i64, StrategyError> {
    let mut conn = redis.conn.clone();
    // The clock of the master the scripts run on, on a cluster too.
    let (secs, micros): (i64, i64) =
        conn.query_on_master_of(&redis::cmd("TIME"), redis.keys.prefix()).await?;
    Ok(secs * 1_000 + micros / 1_000)
}

/// Of `ids`, the orders the books hold (pending or confirmed).
///
/// # Errors
/// When the database does not answer.
pub async fn committed(books: &SqlPool, ids: &[Uuid]) -> Result<HashSet<Uuid>, StrategyError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let pg = match books {
        SqlPool::Postgres(pg) => pg,
        SqlPool::MySql(pool) => return crate::dialect::mysql_mirror::committed(pool, ids).await,
    };
    let found: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM orders WHERE id = ANY($1) AND status IN ('pending', 'confirmed')")
            .bind(ids)
            .fetch_all(pg)
            .await?;
    Ok(found.into_iter().collect())
}

/// What is left to sell (the stock row less the units awaiting the stock sync) and which holds
/// PostgreSQL has, in one snapshot: an order committed, or synced, in between is counted exactly
/// once.
const STOCK_AND_COMMITTED: &str = concat!(
    "SELECT ",
    crate::catalog::left_to_sell!(),
    " AS stock, ARRAY(SELECT id FROM orders WHERE id = ANY($2) AND status IN ('pending', 'confirmed')) AS committed"
);

/// What is left to sell of `product` and which of `ids` the books hold, in one snapshot.
async fn stock_and_committed(
    books: &SqlPool,
    product: i64,
    ids: &[Uuid],
) -> Result<(Option<i64>, HashSet<Uuid>), StrategyError> {
    match books {
        SqlPool::Postgres(pg) => {
            let (stock, committed): (Option<i64>, Vec<Uuid>) =
                sqlx::query_as(STOCK_AND_COMMITTED).bind(product).bind(ids).fetch_one(pg).await?;
            Ok((stock, committed.into_iter().collect()))
        }
        SqlPool::MySql(pool) => crate::dialect::mysql_mirror::stock_and_committed(pool, product, ids).await,
    }
}

/// How often a recovery starts again when a hold it counted ended under it.
const RECOVERY_ATTEMPTS: usize = 3;

/// Puts a missing stock key back from PostgreSQL: what is left to sell (the stock row less the
/// units awaiting the stock sync) minus the units of every hold of the
/// product whose order PostgreSQL does not hold, both read in one snapshot, so an order committed
/// in between is counted exactly once. Returns the stock now in Redis, or `None` for a product
/// PostgreSQL does not know.
///
/// # Errors
/// When a backend does not answer.
pub async fn recover(
    books: &SqlPool,
    redis: &RedisBackend,
    product: ProductId,
) -> Result<Option<i64>, StrategyError> {
    let id = product.get();
    for _ in 0..RECOVERY_ATTEMPTS {
        let holds: Vec<(Hold, i64)> = holds(redis)
            .await?
            .into_iter()
            .filter_map(|hold| {
                let units = hold.lines.iter().find(|line| line.product_id == product)?.quantity.get();
                Some((hold, i64::from(units)))
            })
            .collect();
        let ids: Vec<Uuid> = holds.iter().map(|(hold, _)| hold.order_id).collect();
        let (stock, committed) = stock_and_committed(books, id, &ids).await?;
        let Some(stock) = stock else { return Ok(None) };
        let held: i64 = holds.iter().map(|(_, units)| units).sum();
        let uncommitted: i64 = holds
            .iter()
            .filter(|(hold, _)| !committed.contains(&hold.order_id))
            .map(|(_, units)| units)
            .sum();
        let mut invocation = RECOVER.prepare_invoke();
        invocation.key(redis.keys.stock(id)).key(redis.keys.inflight(id)).key(redis.keys.resync());
        for (hold, _) in &holds {
            invocation.key(&hold.hash);
        }
        invocation.arg(stock - uncommitted).arg(held).arg(id);
        for (hold, _) in &holds {
            invocation.arg(hold.order_id.to_string());
        }
        let mut conn = redis.conn.clone();
        let reply: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        match reply.as_slice() {
            [1, now] => {
                tracing::info!(
                    product = id,
                    sql_stock = stock,
                    held,
                    uncommitted,
                    now,
                    "recovered a missing Redis stock key"
                );
                return Ok(Some(*now));
            }
            [0, now] => return Ok(Some(*now)),
            [-1] => continue,
            _ => return Err(StrategyError::Internal(format!("recover.lua answered {reply:?}"))),
        }
    }
    Err(StrategyError::Unavailable("holds kept changing while a stock key was recovered".into()))
}

/// Marks `product`'s mirror for a rewrite from PostgreSQL once it is quiet.
///
/// # Errors
/// When Redis does not answer.
pub(crate) async fn mark_for_resync(redis: &RedisBackend, product: i64) -> Result<(), StrategyError> {
    let mut conn = redis.conn.clone();
    redis::cmd("SADD").arg(redis.keys.resync()).arg(product).query_async::<i64>(&mut conn).await?;
    Ok(())
}

/// Products waiting for a resync.
///
/// # Errors
/// When Redis does not answer.
pub async fn awaiting_resync(redis: &RedisBackend) -> Result<Vec<i64>, StrategyError> {
    let mut conn = redis.conn.clone();
    Ok(redis::cmd("SMEMBERS").arg(redis.keys.resync()).query_async(&mut conn).await?)
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Expired reservations whose order PostgreSQL holds: settled.
    pub settled: u64,
    /// Expired reservations whose order never committed: voided and released.
    pub released: u64,
    /// Products whose mirror was rewritten from PostgreSQL.
    pub resynced: u64,
    /// Products still waiting for a quiet moment.
    pub resync_waiting: u64,
}

/// How the sweeper behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweeperSettings {
    /// Pause between sweeps.
    pub every: Duration,
    /// Expired reservations handled per sweep.
    pub batch: usize,
}

impl Default for SweeperSettings {
    fn default() -> Self {
        Self { every: Duration::from_millis(250), batch: 200 }
    }
}

/// Ends reservations past their deadline and resyncs products marked for it.
#[derive(Debug, Clone)]
pub struct Sweeper {
    books: SqlPool,
    redis: RedisBackend,
    settings: SweeperSettings,
}

impl Sweeper {
    pub fn new(books: impl Into<SqlPool>, redis: RedisBackend, settings: SweeperSettings) -> Self {
        Self { books: books.into(), redis, settings }
    }

    /// Sweeps until `cancel` fires. Errors are logged and retried at the next sweep.
    pub async fn run(self, cancel: CancellationToken) {
        tracing::info!(settings = ?self.settings, "reservation sweeper started");
        while !cancel.is_cancelled() {
            match self.sweep().await {
                Ok(report)
                    if report
                        != SweepReport {
                            resync_waiting: report.resync_waiting,
                            ..SweepReport::default()
                        } =>
                {
                    tracing::info!(?report, "swept reservations");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "reservation sweep failed; trying again"),
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(self.settings.every) => {}
            }
        }
        tracing::info!("reservation sweeper stopped");
    }

    /// One pass: every expired reservation (up to the batch) is settled or released, then every
    /// product waiting for a resync is rewritten if it is quiet.
    ///
    /// # Errors
    /// When a backend does not answer; what was done so far stays done.
    pub async fn sweep(&self) -> Result<SweepReport, StrategyError> {
        let mut report = SweepReport::default();
        let mut conn = self.redis.conn.clone();
        let due: Vec<String> = EXPIRED
            .key(self.redis.keys.reservations())
            .key(self.redis.keys.reservation_deadlines())
            .arg(self.settings.batch)
            .invoke_async(&mut conn)
            .await?;
        for pair in due.chunks_exact(2) {
            let (Ok(id), Some((kind, lines))) = (Uuid::try_parse(&pair[0]), parse_record(&pair[1])) else {
                tracing::error!(order = %pair[0], record = %pair[1], "unreadable reservation record left in place");
                continue;
            };
            match fence::settle_on(&self.books, kind, id, "reservation_expired").await? {
                Doubt::Committed => {
                    finish(&self.books, &self.redis, id, &lines, End::Settle).await?;
                    report.settled += 1;
                }
                Doubt::Void => {
                    finish(&self.books, &self.redis, id, &lines, End::Release).await?;
                    report.released += 1;
                }
            }
        }
        for product in awaiting_resync(&self.redis).await? {
            if self.resync(product).await? {
                report.resynced += 1;
            } else {
                report.resync_waiting += 1;
            }
        }
        Ok(report)
    }

    /// Takes `product` out of the resync set: there is no mirror (or no product) to rewrite.
    async fn forget_resync(&self, product: i64) -> Result<bool, StrategyError> {
        let mut conn = self.redis.conn.clone();
        redis::cmd("SREM").arg(self.redis.keys.resync()).arg(product).query_async::<i64>(&mut conn).await?;
        Ok(true)
    }

    /// Rewrites `product`'s shelf from PostgreSQL if nothing of it is in flight and nothing moved
    /// between the two reads. Returns whether it is done.
    async fn resync(&self, product: i64) -> Result<bool, StrategyError> {
        let mut conn = self.redis.conn.clone();
        let (stock, inflight): (Option<String>, Option<i64>) = redis::pipe()
            .get(self.redis.keys.stock(product))
            .get(self.redis.keys.inflight(product))
            .query_async(&mut conn)
            .await?;
        let Some(stock) = stock else {
            // A missing key is rebuilt exactly on first use; nothing to rewrite.
            return self.forget_resync(product).await;
        };
        if inflight.unwrap_or(0) != 0 {
            return Ok(false);
        }
        let id = ProductId::parse(product).map_err(|err| StrategyError::Internal(err.0))?;
        let Some(sql) = crate::catalog::BooksOn(&self.books).stock_of(id).await? else {
            return self.forget_resync(product).await;
        };
        let written: i64 = RESYNC
            .key(self.redis.keys.stock(product))
            .key(self.redis.keys.inflight(product))
            .key(self.redis.keys.resync())
            .arg(&stock)
            .arg(sql)
            .arg(product)
            .invoke_async(&mut conn)
            .await?;
        if written == 1 && stock.parse::<i64>().ok() != Some(sql) {
            tracing::info!(product, redis_before = %stock, postgres = sql, "resynced a Redis stock key from PostgreSQL");
        }
        Ok(written == 1)
    }
}

/// Units per product held by `holds`, split by whether PostgreSQL holds the order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldUnits {
    pub held: i64,
    pub uncommitted: i64,
    /// Units of synchronous reservations past their deadline whose order PostgreSQL lacks.
    pub expired_uncommitted: i64,
}

/// Sums `holds` per product.
pub fn units_by_product(holds: &[Hold], committed: &HashSet<Uuid>, now_ms: i64) -> BTreeMap<i64, HeldUnits> {
    let mut out: BTreeMap<i64, HeldUnits> = BTreeMap::new();
    for hold in holds {
        let is_committed = committed.contains(&hold.order_id);
        let expired = hold.deadline_ms.is_some_and(|deadline| deadline <= now_ms);
        for line in &hold.lines {
            let units = i64::from(line.quantity.get());
            let entry = out.entry(line.product_id.get()).or_default();
            entry.held += units;
            if !is_committed {
                entry.uncommitted += units;
                if expired {
                    entry.expired_uncommitted += units;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(items: &[(i64, i64)]) -> OrderLines {
        OrderLines::new(
            items
                .iter()
                .map(|&(id, q)| OrderLine {
                    product_id: ProductId::parse(id).unwrap(),
                    quantity: Quantity::parse(q).unwrap(),
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn records_round_trip() {
        let order = lines(&[(7, 2), (3, 1)]);
        let text = record(StrategyKind::RedisLua, &order);
        assert_eq!(text, "redis-lua;3:1;7:2");
        assert_eq!(parse_record(&text), Some((StrategyKind::RedisLua, order)));
    }

    #[test]
    fn unreadable_records_are_refused() {
        for bad in ["", "redis-lua", "nope;1:1", "redis-lua;1:0", "redis-lua;x:1", "redis-lua;1:1;1:1"] {
            assert_eq!(parse_record(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn units_split_by_commit_and_deadline() {
        let a = Hold {
            order_id: Uuid::new_v4(),
            strategy: StrategyKind::RedisLua,
            hash: "h".into(),
            lines: lines(&[(1, 2)]),
            deadline_ms: Some(10),
        };
        let b = Hold { order_id: Uuid::new_v4(), deadline_ms: Some(100), ..a.clone() };
        let c = Hold { order_id: Uuid::new_v4(), deadline_ms: None, ..a.clone() };
        let committed: HashSet<Uuid> = [b.order_id].into();
        let units = units_by_product(&[a, b, c], &committed, 50);
        assert_eq!(units[&1], HeldUnits { held: 6, uncommitted: 4, expired_uncommitted: 2 });
    }
}
