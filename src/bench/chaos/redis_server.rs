//! A disposable `redis-server` of bench's own, on a free loopback port, keeping nothing on disk: a
//! fault may kill it and start it again without touching the shared Redis on 6379.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a starting `redis-server` may take to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process; killed when dropped.
#[derive(Debug)]
pub struct DisposableRedis {
    exe: PathBuf,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl DisposableRedis {
    /// Starts `redis-server` (found on `PATH`) on a free loopback port, its log into `log` and any
    /// file it might write into `dir`, and waits until it answers `PING`.
    ///
    /// # Errors
    /// When `redis-server` is not on `PATH`, or does not start.
    pub async fn start(dir: &Path, log: &Path) -> anyhow::Result<Self> {
        let exe = on_path("redis-server").context(
            "redis-server is not on PATH: bench chaos starts a disposable Redis of its own \
             (install the redis-server package, or put its directory on PATH)",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("no free loopback port")?
            .port();
        let mut redis = Self { exe, port, dir: dir.to_owned(), log: log.to_owned(), child: None };
        redis.spawn(false).await?;
        Ok(redis)
    }

    pub const fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (SIGKILL: nothing saved, nothing flushed) and reaps it.
    ///
    /// # Errors
    /// When it is not running.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the disposable redis-server is not running")?;
        child.kill().await.context("cannot kill the disposable redis-server")
    }

    /// Starts it again on the same port, empty.
    ///
    /// # Errors
    /// When it is still running or does not come up.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the disposable redis-server is still running");
        self.spawn(true).await
    }

    /// Stops it for good.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    async fn spawn(&mut self, append: bool) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&self.log)
            .with_context(|| format!("cannot create {}", self.log.display()))?;
        let child = Command::new(&self.exe)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                anyhow::bail!(
                    "redis-server on port {} exited ({status}) before it was ready; see {}",
                    self.port,
                    self.log.display()
                );
            }
            if pong(self.port).await {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < READY_TIMEOUT,
                "redis-server on port {} did not answer PING within {}s; see {}",
                self.port,
                READY_TIMEOUT.as_secs(),
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether a Redis on `port` answers `PING`, within a second.
async fn pong(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), exchange).await, Ok(Ok(true)))
}

/// The first `name` in a directory of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|path| path.is_file())
}
