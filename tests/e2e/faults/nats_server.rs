//! A `nats-server -js` of the test's own ([`Disposable`]) with its own store directory: the shared
//! broker is never stopped.

use std::path::Path;
use std::process::Command;

use super::disposable::{Disposable, ServerKind};

/// A `nats-server` child process with JetStream on, killed (and its store removed) on drop.
pub(crate) type DisposableNats = Disposable<NatsServer>;

/// How a disposable `nats-server` runs: JetStream on, its store in the server's directory.
#[derive(Debug)]
pub(crate) struct NatsServer;

impl ServerKind for NatsServer {
    /// Debian's package installs it here, outside a regular user's PATH.
    const PROGRAM: &'static str = "/usr/sbin/nats-server";
    /// It greets every connection with `INFO`.
    const PROBE: &'static [u8] = b"";
    const READY: &'static [u8] = b"INFO";

    fn command(&self, port: u16, dir: &Path) -> Command {
        let mut command = Command::new(Self::PROGRAM);
        command.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]).arg(dir);
        command
    }
}

impl DisposableNats {
    pub(crate) async fn start() -> Self {
        Self::launch(NatsServer).await
    }

    /// `nats://127.0.0.1:port`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }
}
