//! A server process of the test's own, on a free loopback port with a directory of its own, that
//! the test may `kill -9` and start again: the shared services are never stopped. What differs
//! between servers (the command line, how one says it is ready) is a [`ServerKind`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a fresh server (or one recovering what it keeps on disk) may take to be ready.
const STARTUP: Duration = Duration::from_secs(10);

/// One kind of disposable server.
pub(crate) trait ServerKind {
    /// Its program, for commands and messages.
    const PROGRAM: &'static str;

    /// Its command line, listening on `127.0.0.1:port` and keeping its files in `dir`.
    fn command(&self, port: u16, dir: &Path) -> Command;

    /// What to send a fresh connection to ask whether the server serves (nothing: it speaks first).
    const PROBE: &'static [u8];
    /// How its answer begins once it serves.
    const READY: &'static [u8];
}

/// A server child process, killed (and its directory removed) on drop.
#[derive(Debug)]
pub(crate) struct Disposable<K: ServerKind> {
    kind: K,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl<K: ServerKind> Disposable<K> {
    /// Starts a `kind` server on a free port, and returns once it is ready.
    pub(crate) async fn launch(kind: K) -> Self {
        let dir = std::env::temp_dir().join(format!("checkout-faults-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        let mut server = Self { kind, port: 0, dir, child: None };
        // A port taken between the probe and the bind makes the server exit: try another one.
        for _ in 0..5 {
            server.port = super::free_port();
            if server.spawn_and_wait().await {
                return server;
            }
        }
        panic!("could not start a disposable {} (is it installed?)", K::PROGRAM);
    }

    pub(crate) const fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `kill -9`: the server gets no chance to flush, write anything more or say goodbye.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory, and returns once it is ready.
    pub(crate) async fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again after kill");
        // The port may be briefly unavailable to a fresh bind; keep trying for a while.
        for _ in 0..20 {
            if self.spawn_and_wait().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} did not come back on port {}", K::PROGRAM, self.port);
    }

    /// `kill -9`, then [`Self::start_again`].
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.start_again().await;
    }

    /// Spawns the server; `false` if it exited before it was ready.
    async fn spawn_and_wait(&mut self) -> bool {
        let child = self
            .kind
            .command(self.port, &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {} (is it installed?): {err}", K::PROGRAM));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + STARTUP;
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().unwrap_or_else(|err| panic!("poll {}: {err}", K::PROGRAM)).is_some()
            {
                self.child = None;
                return false;
            }
            if answers(self.addr(), K::PROBE, K::READY).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        false
    }
}

impl<K: ServerKind> Drop for Disposable<K> {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the server at `addr` answers `probe` with `ready` within half a second.
async fn answers(addr: SocketAddr, probe: &[u8], ready: &[u8]) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(probe).await.ok()?;
        let mut reply = vec![0_u8; ready.len()];
        stream.read_exact(&mut reply).await.ok()?;
        Some(reply == ready)
    };
    tokio::time::timeout(Duration::from_millis(500), attempt).await.ok().flatten().unwrap_or(false)
}
