//! One keep-alive HTTP/1.1 connection to the server, straight on hyper: no pool, no redirects, no
//! retries, so every answer the load generator counts is exactly one request on the wire.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where requests go: the resolved address and the `Host` header.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    base: String,
}

impl Target {
    /// Resolves `url` (`http://host:port`, no path) once, so no request pays for DNS.
    ///
    /// # Errors
    /// When the URL is not plain `http://host[:port]` or the host does not resolve.
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "{url:?}: only plain http:// is supported (the server speaks HTTP/1.1 without TLS)"
        );
        anyhow::ensure!(
            uri.path() == "/" || uri.path().is_empty(),
            "{url:?}: give the server's base URL, without a path"
        );
        let authority = uri.authority().with_context(|| format!("{url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .with_context(|| format!("cannot resolve {}", authority.host()))?
            .next()
            .with_context(|| format!("{} resolves to no address", authority.host()))?;
        let host = HeaderValue::from_str(authority.as_str()).context("host is not a valid header")?;
        Ok(Self { addr, host, base: format!("http://{authority}") })
    }

    /// The resolved address requests go to.
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `Host` header requests carry.
    pub fn host(&self) -> &str {
        self.host.to_str().unwrap_or_default()
    }

    /// The base URL, `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A JSON `POST` to `path`.
    pub fn post(&self, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        self.request(Method::POST, path, body)
    }

    /// A `GET` of `path`.
    pub fn get(&self, path: &str) -> Request<Full<Bytes>> {
        self.request(Method::GET, path, Bytes::new())
    }

    fn request(&self, method: Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        request
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Transport {
    #[error("cannot connect")]
    /// The TCP connection could not be opened.
    Connect,
    /// The connection broke while the request was on it.
    #[error("the connection broke")]
    Io,
}

impl Transport {
    pub const fn kind(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Io => "io",
        }
    }
}

/// One open connection; requests on it go one at a time.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(target: &Target) -> Result<Self, Transport> {
        let stream = TcpStream::connect(target.addr).await.map_err(|_| Transport::Connect)?;
        // Requests are small and latency is the measurement: never wait for Nagle.
        stream.set_nodelay(true).map_err(|_| Transport::Connect)?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|_| Transport::Connect)?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or the sender is dropped; the request that
            // finds it broken reports the failure.
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), Transport> {
        self.sender.ready().await.map_err(|_| Transport::Io)?;
        let response = self.sender.send_request(request).await.map_err(|_| Transport::Io)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|_| Transport::Io)?.to_bytes();
        Ok((status, body))
    }
}
