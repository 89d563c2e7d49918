//! A TCP proxy in front of the disposable Redis, in this process: the server under test talks to
//! Redis only through it, so bench can hold Redis's replies back while every connection stays
//! open — a Redis that stops answering without closing anything, which only a response timeout
//! notices.
//!
//! Requests always flow to Redis; only replies are held. When the hold ends, what was held is
//! delivered late, in order, as a slow network would.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// Replies are held (not read from Redis, not forwarded) until this turns false.
    hold_replies: bool,
    /// The proxy is gone: every connection closes.
    closed: bool,
}

/// The proxy; dropping it closes every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    accept_loop: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`. A connection
    /// whose upstream cannot be reached (Redis is down) is closed at once.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, watcher) = watch::channel(State { hold_replies: false, closed: false });
        let accept_loop = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, watcher.clone()));
            }
        });
        Ok(Self { addr, state, accept_loop })
    }

    /// The address the server under test should use as its Redis.
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops delivering Redis's replies; connections stay open and requests still reach Redis.
    pub fn hold_replies(&self) {
        self.state.send_modify(|state| state.hold_replies = true);
    }

    /// Delivers replies again, the held ones first.
    pub fn release_replies(&self) {
        self.state.send_modify(|state| state.hold_replies = false);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.send_modify(|state| state.closed = true);
        self.accept_loop.abort();
    }
}

/// Copies both ways between `client` and a new connection to `upstream` until either side closes
/// or the proxy does.
async fn forward(client: TcpStream, upstream: SocketAddr, mut closed: watch::Receiver<State>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let gate = closed.clone();
    tokio::select! {
        () = pump(client_read, server_write, None) => {}
        () = pump(server_read, client_write, Some(gate)) => {}
        _ = closed.wait_for(|state| state.closed) => {}
    }
}

/// Copies `from` to `to` until either ends. With a `gate`, nothing is read while it holds
/// replies.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut gate: Option<watch::Receiver<State>>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if let Some(gate) = &mut gate
            && gate.wait_for(|state| !state.hold_replies || state.closed).await.is_err()
        {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        // Bytes read just before a hold began still go out late: the hold is checked again first.
        if let Some(gate) = &mut gate
            && gate.wait_for(|state| !state.hold_replies || state.closed).await.is_err()
        {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An echo server standing in for Redis: the proxy is plain TCP.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn read_some(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut buffer = [0u8; 64];
        match tokio::time::timeout(within, stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => Some(buffer[..read].to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn held_replies_arrive_after_the_release_on_the_same_connection() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        client.write_all(b"one").await.unwrap();
        assert_eq!(read_some(&mut client, Duration::from_secs(5)).await.as_deref(), Some(&b"one"[..]));

        proxy.hold_replies();
        client.write_all(b"two").await.unwrap();
        assert_eq!(read_some(&mut client, Duration::from_millis(300)).await, None, "held: no reply");

        proxy.release_replies();
        assert_eq!(
            read_some(&mut client, Duration::from_secs(5)).await.as_deref(),
            Some(&b"two"[..]),
            "the held reply comes late, on the connection that asked"
        );
    }

    #[tokio::test]
    async fn an_unreachable_upstream_closes_the_connection() {
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let proxy = FaultProxy::start(dead).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buffer = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed, not left hanging: {read:?}");
    }
}
