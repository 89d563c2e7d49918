//! A TCP proxy in front of a Redis that loses replies on demand.
//!
//! [`RedisFaultProxy::mute_replies`] keeps forwarding commands but holds every reply: the commands
//! run, and the client's response timeout fires, so it cannot tell whether they did.
//! [`RedisFaultProxy::stall_after`] arms a trigger: the next command chunk containing a pattern
//! (a script's SHA) is forwarded, then the link forwards nothing either way, so that command ran
//! and nothing the client sends afterwards (its compensation) arrives. [`RedisFaultProxy::restore`]
//! cuts every connection opened so far (held bytes are dropped, never delivered late) and forwards
//! new ones.
//!
//! Two copy loops per connection instead of `copy_bidirectional`: each direction is held on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the link does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// Commands are forwarded; replies are held.
    MuteReplies,
    /// Nothing is forwarded.
    Stalled,
}

#[derive(Debug, Clone)]
struct State {
    link: Link,
    /// Bumped by `restore`: connections born under an older generation are cut.
    generation: u64,
    /// Stall right after forwarding a chunk that contains this.
    stall_after: Option<Arc<[u8]>>,
    /// How many times a trigger fired.
    triggered: u64,
}

/// The proxy; dropping it cuts every connection.
#[derive(Debug)]
pub(crate) struct RedisFaultProxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl RedisFaultProxy {
    /// Starts a proxy on a free loopback port in front of the Redis at `target`.
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the Redis proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (state, watcher) =
            watch::channel(State { link: Link::Up, generation: 0, stall_after: None, triggered: 0 });
        let shared = state.clone();
        let accept_loop = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                tokio::spawn(relay(client, server, shared.clone(), watcher.clone()));
            }
        });
        Self { addr, state, accept_loop }
    }

    /// The URL clients use to reach Redis through the proxy.
    pub(crate) fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Commands keep reaching Redis; their replies are held until [`RedisFaultProxy::restore`]
    /// drops them.
    pub(crate) fn mute_replies(&self) {
        self.state.send_modify(|state| state.link = Link::MuteReplies);
    }

    /// The next chunk a client sends that contains `pattern` reaches Redis; from then on nothing
    /// is forwarded either way until [`RedisFaultProxy::restore`].
    pub(crate) fn stall_after(&self, pattern: &str) {
        self.state.send_modify(|state| state.stall_after = Some(pattern.as_bytes().into()));
    }

    /// Waits until an armed trigger fired (the link is stalled then).
    pub(crate) async fn triggered(&self, within: Duration) {
        let mut watcher = self.state.subscribe();
        tokio::time::timeout(within, watcher.wait_for(|state| state.triggered > 0))
            .await
            .unwrap_or_else(|_| panic!("no command matched the stall trigger within {within:?}"))
            .expect("the proxy is alive");
    }

    /// Cuts every connection opened so far, dropping what it held, and forwards new ones.
    pub(crate) fn restore(&self) {
        self.state.send_modify(|state| {
            state.link = Link::Up;
            state.stall_after = None;
            state.generation += 1;
        });
    }
}

impl Drop for RedisFaultProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.state.send_modify(|state| state.generation += 1);
    }
}

/// Relays one connection until either side closes or a restore cuts it.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    state: watch::Sender<State>,
    watcher: watch::Receiver<State>,
) {
    let born = watcher.borrow().generation;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut cut = watcher.clone();
    let commands = async {
        let mut watcher = watcher.clone();
        let mut buf = vec![0_u8; 16 * 1024];
        // The end of the previous chunk, so a pattern split across two reads is still seen.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // A stall holds the command; only a cut (which ends this task) lets go of it.
            if watcher.wait_for(|now| now.link != Link::Stalled).await.is_err() {
                return;
            }
            let trigger = watcher.borrow().stall_after.clone();
            if let Some(pattern) = trigger {
                let mut seen = std::mem::take(&mut tail);
                seen.extend_from_slice(&buf[..n]);
                if contains(&seen, &pattern) {
                    state.send_if_modified(|now| {
                        let fire = now.stall_after.is_some();
                        if fire {
                            now.stall_after = None;
                            now.link = Link::Stalled;
                            now.triggered += 1;
                        }
                        fire
                    });
                } else {
                    tail = seen[seen.len().saturating_sub(pattern.len())..].to_vec();
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let replies = async {
        let mut buf = vec![0_u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if watcher.borrow().link != Link::Up {
                // Held for good: a restore cuts this connection and the bytes with it.
                std::future::pending::<()>().await;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // The cut is checked first: a restore also lifts the stall a held command waits on, and that
    // command must be dropped with the connection, not forwarded late.
    tokio::select! {
        biased;
        _ = cut.wait_for(|now| now.generation != born) => {}
        () = commands => {}
        () = replies => {}
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}
