//! A TCP proxy in front of PostgreSQL that loses the reply to a commit: the commit happens, the
//! client sees its connection break.
//!
//! It reads the client's side of the wire protocol message by message. Armed with
//! [`Trigger::Commit`], it forwards the next `COMMIT` (sqlx sends it as a simple query), closes the
//! client's connection at once, and keeps the server's open until PostgreSQL has answered, so the
//! commit is not cut short. Armed with [`Trigger::Statement`], it does the same after the `Sync`
//! that runs a prepared statement whose text contains a marker: sqlx parses a statement once per
//! connection and then only binds it, so the proxy remembers which statement names carry the
//! marker. That reaches single-statement purchases (`sql-atomic`'s one-line order), which never
//! send `COMMIT`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which message's reply to lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// A `COMMIT` sent as a simple query.
    Commit,
    /// An extended-protocol execution of a statement whose text contains this marker.
    Statement(&'static str),
}

#[derive(Debug)]
struct Faults {
    trigger: Option<Trigger>,
    remaining: usize,
}

impl Faults {
    /// Takes one lost reply for `trigger`, if any is left.
    fn take(&mut self, trigger: Trigger) -> bool {
        let fire = self.trigger == Some(trigger) && self.remaining > 0;
        if fire {
            self.remaining -= 1;
        }
        fire
    }
}

/// The proxy; dropping it stops accepting (live connections end with their clients).
#[derive(Debug)]
pub(crate) struct PgFaultProxy {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    cuts: Arc<AtomicUsize>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl PgFaultProxy {
    /// Starts a proxy on a free loopback port forwarding to the server `backend` connects to.
    pub(crate) async fn start(backend: &PgConnectOptions) -> Self {
        let target = (backend.get_host().to_owned(), backend.get_port());
        assert!(!target.0.starts_with('/'), "the proxy forwards TCP, not a Unix socket: {}", target.0);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the PostgreSQL proxy");
        let addr = listener.local_addr().expect("proxy address");
        let faults = Arc::new(Mutex::new(Faults { trigger: None, remaining: 0 }));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (shared, counter) = (Arc::clone(&faults), Arc::clone(&cuts));
        let accept_loop = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect((target.0.as_str(), target.1)).await else { continue };
                tokio::spawn(relay(client, server, Arc::clone(&shared), Arc::clone(&counter)));
            }
        });
        Self { addr, faults, cuts, accept_loop }
    }

    /// `backend` reached through the proxy, in plain text so the proxy can read it.
    pub(crate) fn connect_options(&self, backend: &PgConnectOptions) -> PgConnectOptions {
        backend.clone().host("127.0.0.1").port(self.addr.port()).ssl_mode(PgSslMode::Disable)
    }

    /// Loses the reply to the next `times` messages matching `trigger`, on whichever connections
    /// send them.
    pub(crate) fn lose_replies(&self, trigger: Trigger, times: usize) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) =
            Faults { trigger: Some(trigger), remaining: times };
    }

    /// Replies lost so far.
    pub(crate) fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for PgFaultProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// `SSLRequest` and `GSSENCRequest` codes: the client sends its real startup message after them.
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

/// The client's side of one connection, read message by message.
#[derive(Debug, Default)]
struct ClientFrames {
    started: bool,
    pending: Vec<u8>,
    /// Text of each statement this connection prepared, by name.
    statements: HashMap<Vec<u8>, String>,
    /// A marked statement was bound: lose the reply to the next `Sync`.
    cut_at_sync: bool,
}

impl ClientFrames {
    /// Takes the complete messages out of `pending`: each with whether its reply must be lost.
    fn messages(&mut self, faults: &Mutex<Faults>) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        loop {
            let (header, typed) = if self.started { (5, true) } else { (4, false) };
            if self.pending.len() < header {
                return out;
            }
            let at = usize::from(typed);
            let len = i32::from_be_bytes(self.pending[at..at + 4].try_into().expect("four bytes"));
            let total = at + usize::try_from(len).expect("a message length is positive");
            if self.pending.len() < total {
                return out;
            }
            let message: Vec<u8> = self.pending.drain(..total).collect();
            let cut = if typed {
                self.inspect(&message, faults)
            } else {
                let code =
                    message.get(4..8).map(|code| i32::from_be_bytes(code.try_into().expect("four bytes")));
                self.started = !matches!(code, Some(SSL_REQUEST | GSSENC_REQUEST));
                false
            };
            out.push((message, cut));
            if cut {
                return out;
            }
        }
    }

    fn inspect(&mut self, message: &[u8], faults: &Mutex<Faults>) -> bool {
        let body = &message[5..];
        let mut faults = faults.lock().unwrap_or_else(PoisonError::into_inner);
        match message[0] {
            b'Q' => {
                let query = String::from_utf8_lossy(cstring(body));
                query.trim().eq_ignore_ascii_case("COMMIT") && faults.take(Trigger::Commit)
            }
            b'P' => {
                let name = cstring(body);
                let query = String::from_utf8_lossy(cstring(&body[name.len() + 1..])).into_owned();
                self.statements.insert(name.to_vec(), query);
                false
            }
            b'B' => {
                let portal = cstring(body);
                let statement = cstring(&body[portal.len() + 1..]);
                if let (Some(Trigger::Statement(marker)), Some(query)) =
                    (faults.trigger, self.statements.get(statement))
                {
                    self.cut_at_sync |= query.contains(marker);
                }
                false
            }
            b'S' if self.cut_at_sync => {
                self.cut_at_sync = false;
                match faults.trigger {
                    Some(trigger @ Trigger::Statement(_)) => faults.take(trigger),
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// The bytes up to the first NUL.
fn cstring(bytes: &[u8]) -> &[u8] {
    bytes.split(|&byte| byte == 0).next().unwrap_or_default()
}

/// Relays one connection; after a triggering message, closes the client and waits for the
/// server's answer (`ReadyForQuery`) before closing the server side.
async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Mutex<Faults>>, cuts: Arc<AtomicUsize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let replies = async {
        let mut buf = vec![0_u8; 16 * 1024];
        loop {
            match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let commands = async {
        let mut frames = ClientFrames::default();
        let mut buf = vec![0_u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            frames.pending.extend_from_slice(&buf[..n]);
            for (message, cut) in frames.messages(&faults) {
                if server_write.write_all(&message).await.is_err() {
                    return false;
                }
                if cut {
                    return true;
                }
            }
        }
    };
    // The reply to a triggering message must never reach the client: the loop that forwards
    // replies is dropped as soon as the trigger is forwarded (PostgreSQL cannot have answered yet).
    let cut = tokio::select! {
        biased;
        cut = commands => cut,
        () = replies => false,
    };
    if !cut {
        return;
    }
    cuts.fetch_add(1, Ordering::SeqCst);
    drop(client_write);
    drop(client_read);
    // Let PostgreSQL finish the statement: read its answer up to ReadyForQuery, then say goodbye.
    let _ = tokio::time::timeout(Duration::from_secs(5), until_ready(&mut server_read)).await;
    let _ = server_write.write_all(&[b'X', 0, 0, 0, 4]).await;
}

/// Reads server messages until a `ReadyForQuery`.
async fn until_ready(server: &mut tokio::net::tcp::OwnedReadHalf) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        while pending.len() >= 5 {
            let len = i32::from_be_bytes(pending[1..5].try_into().expect("four bytes"));
            let total = 1 + usize::try_from(len).unwrap_or(4);
            if pending.len() < total {
                break;
            }
            if pending[0] == b'Z' {
                return;
            }
            pending.drain(..total);
        }
        match server.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}
