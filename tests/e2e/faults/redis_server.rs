//! A `redis-server` of the test's own, on a free loopback port, that the test may kill: the shared
//! Redis is never stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a fresh `redis-server` (or one replaying its AOF) may take to answer `PING`.
const STARTUP: Duration = Duration::from_secs(10);

/// A `redis-server` child process, killed (and its directory removed) on drop.
#[derive(Debug)]
pub(crate) struct DisposableRedis {
    port: u16,
    dir: PathBuf,
    aof: bool,
    /// Started with `--cluster-enabled yes`, waiting to be joined into a cluster.
    cluster: bool,
    child: Option<Child>,
}

impl DisposableRedis {
    /// A Redis that keeps nothing on disk: a restart loses everything.
    pub(crate) async fn start() -> Self {
        Self::launch(false, false).await
    }

    /// A Redis that appends every write to its AOF and fsyncs it before answering
    /// (`--appendfsync always`): a restart replays everything it acknowledged.
    pub(crate) async fn start_with_aof() -> Self {
        Self::launch(true, false).await
    }

    /// A cluster-enabled Redis that keeps nothing on disk, owning no slot until a cluster is
    /// created over it (see [`crate::redis_cluster::RedisCluster`]).
    pub(crate) async fn start_cluster_node() -> Self {
        Self::launch(false, true).await
    }

    async fn launch(aof: bool, cluster: bool) -> Self {
        let dir =
            std::env::temp_dir().join(format!("checkout-faults-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the Redis directory");
        // A port taken between the probe and the bind makes the server exit: try another one.
        for _ in 0..5 {
            let mut redis = Self { port: super::free_port(), dir: dir.clone(), aof, cluster, child: None };
            if redis.spawn_and_wait().await {
                return redis;
            }
        }
        panic!("could not start a disposable redis-server (is it on PATH?)");
    }

    /// `redis://127.0.0.1:port`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `kill -9`: the server gets no chance to write anything more.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, and returns once it answers `PING`.
    pub(crate) async fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again after kill");
        // The port may be briefly unavailable to a fresh bind; keep trying for a while.
        for _ in 0..20 {
            if self.spawn_and_wait().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not come back on port {}", self.port);
    }

    /// `kill -9`, then [`DisposableRedis::start_again`].
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.start_again().await;
    }

    /// Spawns the server; `false` if it exited before answering `PING`.
    async fn spawn_and_wait(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--daemonize", "no", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            command.args(["--cluster-enabled", "yes", "--cluster-config-file"]);
            command.arg(self.dir.join(format!("nodes-{}.conf", self.port)));
        }
        if self.aof {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child =
            command.spawn().unwrap_or_else(|err| panic!("spawn redis-server (is it on PATH?): {err}"));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + STARTUP;
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().expect("poll redis-server").is_some()
            {
                self.child = None;
                return false;
            }
            if pong(self.addr()).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        false
    }
}

impl Drop for DisposableRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a Redis at `addr` answers `PING` (a server still loading its AOF answers `-LOADING`).
async fn pong(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0_u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    tokio::time::timeout(Duration::from_millis(500), attempt).await.ok().flatten().unwrap_or(false)
}
