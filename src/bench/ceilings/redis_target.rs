//! Which Redis the Redis ceilings measure: the server's one Redis, or on a Redis Cluster
//! (`REDIS_CLUSTER_NODES`) the master holding the ceilings' hash tag.
//!
//! On a cluster the strategies keep every key of a setup under one hash tag, so one master serves
//! all of them, the hot product included. The ceiling that bounds them is therefore one master
//! running the same commands on keys of one slot, which a plain `redis-benchmark` against that
//! master measures. `redis-benchmark --cluster` measures something else: it spreads its clients
//! over every master, each on keys of its own slot (`{tag}`), which is the throughput of stock
//! split into buckets across shards, not of one setup.

use anyhow::Context;
use redis::Value;

/// The tag every ceilings key carries: one slot, so the scripts' keys may be used together on a
/// cluster, and harmless braces on one Redis.
pub(super) const TAG: &str = "{ceilings}";

/// Where the Redis ceilings run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RedisTarget {
    pub(super) host: String,
    pub(super) port: u16,
    /// The cluster's master for [`TAG`]; `false` for a single Redis.
    pub(super) cluster_master: bool,
}

impl RedisTarget {
    /// A URL for a plain (non-cluster) connection to the target.
    pub(super) fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }

    /// What the measured rows say about where they ran.
    pub(super) fn describe(&self) -> String {
        if self.cluster_master {
            format!("on the Redis Cluster master of {TAG}, {}:{}", self.host, self.port)
        } else {
            format!("on {}:{}", self.host, self.port)
        }
    }
}

/// The Redis of `redis_url`, or, when `cluster_nodes` names any, the master of the cluster they
/// belong to that holds [`TAG`]'s slot.
///
/// # Errors
/// When an address is not a TCP Redis, no node answers, or no master holds the slot.
pub(super) async fn resolve(redis_url: &str, cluster_nodes: &[String]) -> anyhow::Result<RedisTarget> {
    let nodes: Vec<&str> =
        cluster_nodes.iter().map(|node| node.trim()).filter(|node| !node.is_empty()).collect();
    if nodes.is_empty() {
        let (host, port) = tcp_address(redis_url)?;
        return Ok(RedisTarget { host, port, cluster_master: false });
    }
    let mut failures = Vec::new();
    for node in nodes {
        match master_of_tag(node).await {
            Ok(target) => return Ok(target),
            Err(err) => failures.push(format!("{node}: {err:#}")),
        }
    }
    anyhow::bail!("no Redis Cluster node told where {TAG} lives: {}", failures.join("; "))
}

fn tcp_address(url: &str) -> anyhow::Result<(String, u16)> {
    let client = redis::Client::open(url).with_context(|| format!("{url:?} is not a Redis URL"))?;
    match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, port) => Ok((host.clone(), *port)),
        other => anyhow::bail!("redis-benchmark needs a TCP Redis, not {other:?}"),
    }
}

/// Asks the cluster node `node` (`host:port`, as `REDIS_CLUSTER_NODES` lists it) for the slot of
/// [`TAG`] and the master serving it.
async fn master_of_tag(node: &str) -> anyhow::Result<RedisTarget> {
    let url = if node.contains("://") { node.to_owned() } else { format!("redis://{node}") };
    let (asked_host, _) = tcp_address(&url)?;
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await.context("cannot connect")?;
    let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(TAG).query_async(&mut conn).await?;
    let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await?;
    let (host, port) = master_of(&slots, slot).with_context(|| format!("no master serves slot {slot}"))?;
    // A node that does not know its own address announces it empty: it is the one asked.
    let host = if host.is_empty() || host == "?" { asked_host } else { host };
    Ok(RedisTarget { host, port, cluster_master: true })
}

/// The master's address in a `CLUSTER SLOTS` reply for `slot`: each entry is
/// `[first, last, [host, port, id, …], replicas…]`.
fn master_of(slots: &Value, slot: i64) -> Option<(String, u16)> {
    let Value::Array(ranges) = slots else { return None };
    ranges.iter().find_map(|range| {
        let Value::Array(fields) = range else { return None };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        if !(*first..=*last).contains(&slot) {
            return None;
        }
        let host = match master.first()? {
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Value::SimpleString(text) => text.clone(),
            _ => return None,
        };
        let Value::Int(port) = master.get(1)? else { return None };
        Some((host, u16::try_from(*port).ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: i64, last: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(first),
            Value::Int(last),
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"node-id".to_vec()),
            ]),
        ])
    }

    #[test]
    fn the_master_is_the_one_whose_range_holds_the_slot() {
        let slots = Value::Array(vec![
            range(0, 5460, "127.0.0.1", 7000),
            range(5461, 10922, "127.0.0.1", 7001),
            range(10923, 16383, "127.0.0.2", 7002),
        ]);
        assert_eq!(master_of(&slots, 0), Some(("127.0.0.1".into(), 7000)));
        assert_eq!(master_of(&slots, 10922), Some(("127.0.0.1".into(), 7001)));
        assert_eq!(master_of(&slots, 16383), Some(("127.0.0.2".into(), 7002)));
        assert_eq!(master_of(&Value::Array(vec![range(0, 100, "h", 1)]), 101), None, "an unserved slot");
        assert_eq!(master_of(&Value::Nil, 0), None);
    }

    #[tokio::test]
    async fn without_cluster_nodes_the_target_is_the_redis_url() {
        let target = resolve("redis://127.0.0.1:6390", &[" ".into()]).await.unwrap();
        assert_eq!(target, RedisTarget { host: "127.0.0.1".into(), port: 6390, cluster_master: false });
        assert_eq!(target.url(), "redis://127.0.0.1:6390");
        let err = resolve("redis+unix:///tmp/redis.sock", &[]).await.unwrap_err().to_string();
        assert!(err.contains("TCP"), "{err}");
    }

    #[tokio::test]
    async fn cluster_nodes_that_do_not_answer_are_named_in_the_error() {
        // Port 1 on loopback: nothing listens there.
        let err = resolve("redis://127.0.0.1:6379", &["127.0.0.1:1".into()]).await.unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("127.0.0.1:1") && err.contains(TAG), "{err}");
    }
}
