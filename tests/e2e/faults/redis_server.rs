//! A `redis-server` of the test's own ([`Disposable`]): the shared Redis is never stopped.

use std::path::Path;
use std::process::Command;

use super::disposable::{Disposable, ServerKind};

/// A `redis-server` child process, killed (and its directory removed) on drop.
pub(crate) type DisposableRedis = Disposable<RedisServer>;

/// How a disposable `redis-server` runs.
#[derive(Debug)]
pub(crate) struct RedisServer {
    aof: bool,
    /// Started with `--cluster-enabled yes`, waiting to be joined into a cluster.
    cluster: bool,
}

impl ServerKind for RedisServer {
    const PROGRAM: &'static str = "redis-server";
    const PROBE: &'static [u8] = b"PING\r\n";
    /// A server still loading its AOF answers `-LOADING`.
    const READY: &'static [u8] = b"+PONG\r\n";

    fn command(&self, port: u16, dir: &Path) -> Command {
        let mut command = Command::new(Self::PROGRAM);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir);
        if self.cluster {
            command.args(["--cluster-enabled", "yes", "--cluster-config-file"]);
            command.arg(dir.join(format!("nodes-{port}.conf")));
        }
        if self.aof {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        command
    }
}

impl DisposableRedis {
    /// A Redis that keeps nothing on disk: a restart loses everything.
    pub(crate) async fn start() -> Self {
        Self::launch(RedisServer { aof: false, cluster: false }).await
    }

    /// A Redis that appends every write to its AOF and fsyncs it before answering
    /// (`--appendfsync always`): a restart replays everything it acknowledged.
    pub(crate) async fn start_with_aof() -> Self {
        Self::launch(RedisServer { aof: true, cluster: false }).await
    }

    /// A cluster-enabled Redis that keeps nothing on disk, owning no slot until a cluster is
    /// created over it (see [`crate::redis_cluster::RedisCluster`]).
    pub(crate) async fn start_cluster_node() -> Self {
        Self::launch(RedisServer { aof: false, cluster: true }).await
    }

    /// `redis://127.0.0.1:port`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }
}
