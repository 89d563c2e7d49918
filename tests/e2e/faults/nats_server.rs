//! A `nats-server -js` of the test's own, on a free loopback port with its own store directory,
//! that the test may kill and start again: the shared broker is never stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a fresh `nats-server` (or one recovering its JetStream store) may take to greet.
const STARTUP: Duration = Duration::from_secs(10);
/// Debian's package installs it here, outside a regular user's PATH.
const BINARY: &str = "/usr/sbin/nats-server";

/// A `nats-server` child process with JetStream on, killed (and its store removed) on drop.
#[derive(Debug)]
pub(crate) struct DisposableNats {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl DisposableNats {
    pub(crate) async fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("checkout-faults-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the JetStream store directory");
        // A port taken between the probe and the bind makes the server exit: try another one.
        for _ in 0..5 {
            let mut nats = Self { port: super::free_port(), dir: dir.clone(), child: None };
            if nats.spawn_and_wait().await {
                return nats;
            }
        }
        panic!("could not start a disposable nats-server ({BINARY})");
    }

    /// `nats://127.0.0.1:port`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `kill -9`: the server gets no chance to flush or say goodbye.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store, and returns once it greets.
    pub(crate) async fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again after kill");
        for _ in 0..20 {
            if self.spawn_and_wait().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nats-server did not come back on port {}", self.port);
    }

    /// Spawns the server; `false` if it exited before greeting.
    async fn spawn_and_wait(&mut self) -> bool {
        let child = Command::new(BINARY)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {BINARY}: {err}"));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + STARTUP;
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().expect("poll nats-server").is_some()
            {
                self.child = None;
                return false;
            }
            if greets(self.addr()).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        false
    }
}

impl Drop for DisposableNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a NATS server at `addr` sends its `INFO` greeting.
async fn greets(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let mut greeting = [0_u8; 4];
        stream.read_exact(&mut greeting).await.ok()?;
        Some(&greeting == b"INFO")
    };
    tokio::time::timeout(Duration::from_millis(500), attempt).await.ok().flatten().unwrap_or(false)
}
