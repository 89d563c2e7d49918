//! The NATS JetStream side of `queue-nats`: one connection per process, opened on first use; the
//! stream of accepted orders and its dead-letter stream, created when missing; publishing with the
//! order id as `Nats-Msg-Id`; and telling a publish that certainly stored nothing from one whose
//! outcome is unknown.
//!
//! The order stream uses work-queue retention (a message is deleted once the consumer acknowledges
//! it), so the messages it holds are exactly the accepted orders not yet persisted and acknowledged:
//! the audit's `in_queue`. File storage keeps them across a broker restart. The de-duplication
//! window (two minutes) drops a second publish of the same order id, which makes a retried or
//! recovered publish harmless.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, consumer};
use async_nats::{ConnectOptions, HeaderMap};
use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::error::StrategyError;

/// How long JetStream remembers a `Nats-Msg-Id` and drops a publish that repeats it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How the broker connection behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatsSettings {
    /// Longest wait for the connection to open.
    pub connect_timeout: Duration,
    /// Longest wait for the broker's PubAck (and for any other JetStream API reply).
    pub publish_timeout: Duration,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(1), publish_timeout: Duration::from_secs(2) }
    }
}

/// Stream, subject and consumer names under one prefix, so tests and several setups share a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerNames {
    /// The stream of accepted orders (work-queue retention).
    pub stream: String,
    pub subject: String,
    /// Orders given up on, with the reason (limits retention).
    pub dead_stream: String,
    pub dead_subject: String,
    /// The durable pull consumer every process's consumer shares.
    pub consumer: String,
}

impl BrokerNames {
    /// Names under `prefix` (the Redis key prefix): characters NATS names do not allow become `_`.
    pub fn new(prefix: &str) -> Self {
        let mut token: String = prefix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        if token.is_empty() {
            token.push_str("default");
        }
        Self {
            stream: format!("{token}orders"),
            subject: format!("{token}.orders"),
            dead_stream: format!("{token}orders-dead"),
            dead_subject: format!("{token}.orders-dead"),
            consumer: "persisters".to_owned(),
        }
    }
}

/// The broker, as the strategy and its consumer reach it.
#[derive(Clone)]
pub struct NatsBackend {
    url: String,
    pub names: BrokerNames,
    pub settings: NatsSettings,
    link: Arc<Link>,
}

struct Link {
    /// Set once the first connection opened; the client reconnects by itself afterwards.
    context: OnceCell<jetstream::Context>,
    /// Both streams were found or created on this connection. Cleared when a publish finds no
    /// stream (the broker lost its store), so the next use creates them again.
    streams_ready: AtomicBool,
}

impl fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBackend")
            .field("url", &self.url)
            .field("names", &self.names)
            .field("settings", &self.settings)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Why a publish did not end with a PubAck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublishFailure {
    /// The broker certainly did not store the message: it was never sent, or the broker answered
    /// with an error.
    NotStored(String),
    /// It was sent and no answer came: the broker may hold it.
    Unknown(String),
}

impl NatsBackend {
    /// A backend that connects on first use, so a server whose broker is down still starts and
    /// answers 503 for `queue-nats`.
    pub fn lazy(url: &str, prefix: &str, settings: NatsSettings) -> Self {
        Self {
            url: url.to_owned(),
            names: BrokerNames::new(prefix),
            settings,
            link: Arc::new(Link { context: OnceCell::new(), streams_ready: AtomicBool::new(false) }),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the connection is open right now (false before first use).
    pub fn is_connected(&self) -> bool {
        self.link
            .context
            .get()
            .is_some_and(|js| js.client().connection_state() == async_nats::connection::State::Connected)
    }

    /// Makes the next use look the streams up again (and create them when missing).
    pub(crate) fn forget_streams(&self) {
        self.link.streams_ready.store(false, Ordering::Release);
    }

    /// The JetStream context, connecting on first use and creating the streams when missing.
    ///
    /// # Errors
    /// [`StrategyError::Unavailable`] when the broker cannot be reached.
    pub async fn jetstream(&self) -> Result<jetstream::Context, StrategyError> {
        let js = self.connect().await?;
        if !self.link.streams_ready.load(Ordering::Acquire) {
            self.create_streams(&js).await?;
            self.link.streams_ready.store(true, Ordering::Release);
        }
        Ok(js)
    }

    /// The JetStream context, connecting on first use; the streams may not exist yet.
    async fn connect(&self) -> Result<jetstream::Context, StrategyError> {
        Ok(self
            .link
            .context
            .get_or_try_init(|| async {
                let options = ConnectOptions::new()
                    .connection_timeout(self.settings.connect_timeout)
                    .request_timeout(Some(self.settings.publish_timeout))
                    .max_reconnects(None)
                    .name("checkout-bench");
                let client = async_nats::connect_with_options(self.url.as_str(), options)
                    .await
                    .map_err(|err| unavailable(&self.url, &err))?;
                tracing::info!(url = %self.url, "connected to NATS");
                Ok::<_, StrategyError>(
                    jetstream::ContextBuilder::new().timeout(self.settings.publish_timeout).build(client),
                )
            })
            .await?
            .clone())
    }

    /// The JetStream context when the connection is open now: a publish on a closed connection
    /// would wait in the client's buffer and land, or not, after the buyer was answered.
    ///
    /// # Errors
    /// [`StrategyError::Unavailable`] when the broker cannot be reached or the connection is down.
    pub(crate) async fn connected(&self) -> Result<jetstream::Context, StrategyError> {
        let js = self.jetstream().await?;
        if js.client().connection_state() != async_nats::connection::State::Connected {
            return Err(StrategyError::Unavailable(format!(
                "the connection to NATS at {} is down (reconnecting)",
                self.url
            )));
        }
        Ok(js)
    }

    async fn create_streams(&self, js: &jetstream::Context) -> Result<(), StrategyError> {
        let orders = Config {
            name: self.names.stream.clone(),
            subjects: vec![self.names.subject.clone()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Config::default()
        };
        let dead = Config {
            name: self.names.dead_stream.clone(),
            subjects: vec![self.names.dead_subject.clone()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Config::default()
        };
        for config in [orders, dead] {
            let name = config.name.clone();
            js.get_or_create_stream(config).await.map_err(|err| {
                StrategyError::Unavailable(format!("cannot create JetStream stream {name}: {err}"))
            })?;
        }
        Ok(())
    }

    /// Publishes `payload` on `subject` with `Nats-Msg-Id` = `id` and waits for the PubAck.
    /// Returns whether the broker called it a duplicate (stored before, within the window).
    pub(crate) async fn publish(
        &self,
        js: &jetstream::Context,
        subject: &str,
        id: &str,
        headers: &[(&str, &str)],
        payload: Bytes,
    ) -> Result<bool, PublishFailure> {
        let mut map = HeaderMap::new();
        map.insert(async_nats::header::NATS_MESSAGE_ID, id);
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        let sent = js
            .publish_with_headers(subject.to_owned(), map, payload)
            .await
            .map_err(|err| self.classify(err.kind(), &err))?;
        let ack = sent.await.map_err(|err| self.classify(err.kind(), &err))?;
        Ok(ack.duplicate)
    }

    fn classify(&self, kind: PublishErrorKind, err: &dyn fmt::Display) -> PublishFailure {
        let detail = format!("publish to NATS at {}: {err}", self.url);
        match kind {
            // Sent (or queued in the client to be sent on reconnection), and no answer.
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => PublishFailure::Unknown(detail),
            PublishErrorKind::StreamNotFound => {
                // No responders: nothing listens on the subject, the broker lost its streams.
                self.link.streams_ready.store(false, Ordering::Release);
                PublishFailure::NotStored(detail)
            }
            _ => PublishFailure::NotStored(detail),
        }
    }

    /// The durable pull consumer of the order stream, created when missing; `None` while no
    /// purchase created the stream (a server that never sells through `queue-nats` leaves no
    /// trace on the broker).
    ///
    /// # Errors
    /// When the broker does not answer.
    pub(crate) async fn consumer(
        &self,
        ack_wait: Duration,
    ) -> Result<Option<consumer::Consumer<consumer::pull::Config>>, StrategyError> {
        let js = self.connect().await?;
        let Some(stream) = self.existing(&js, &self.names.stream).await? else { return Ok(None) };
        let config = consumer::pull::Config {
            durable_name: Some(self.names.consumer.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            // The consumer counts deliveries itself and dead-letters after its own limit: the
            // broker must never stop redelivering an order on its own.
            max_deliver: -1,
            ..consumer::pull::Config::default()
        };
        stream
            .get_or_create_consumer(&self.names.consumer, config)
            .await
            .map(Some)
            .map_err(|err| self.failed("create the consumer", &err))
    }

    /// Messages the order stream holds: accepted orders not yet persisted and acknowledged.
    ///
    /// # Errors
    /// When the broker does not answer.
    pub async fn queued_messages(&self) -> Result<u64, StrategyError> {
        self.messages_in(&self.names.stream).await
    }

    /// Orders in the dead-letter stream.
    ///
    /// # Errors
    /// When the broker does not answer.
    pub async fn dead_lettered(&self) -> Result<u64, StrategyError> {
        self.messages_in(&self.names.dead_stream).await
    }

    /// Messages in stream `name`; a stream nobody created yet holds none.
    async fn messages_in(&self, name: &str) -> Result<u64, StrategyError> {
        let js = self.connect().await?;
        let Some(mut stream) = self.existing(&js, name).await? else { return Ok(0) };
        let info = stream.info().await.map_err(|err| self.failed("read a stream's state", &err))?;
        Ok(info.state.messages)
    }

    async fn existing(
        &self,
        js: &jetstream::Context,
        name: &str,
    ) -> Result<Option<jetstream::stream::Stream>, StrategyError> {
        match js.get_stream(name).await {
            Ok(stream) => Ok(Some(stream)),
            Err(err) => match err.kind() {
                GetStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                    Ok(None)
                }
                _ => Err(self.failed("get a stream", &err)),
            },
        }
    }

    /// Drops every message of both streams: a reset starts the books again. Streams nobody
    /// created yet are left uncreated.
    ///
    /// # Errors
    /// When the broker does not answer.
    pub async fn purge(&self) -> Result<(), StrategyError> {
        let js = self.connect().await?;
        for name in [&self.names.stream, &self.names.dead_stream] {
            if let Some(stream) = self.existing(&js, name).await? {
                stream.purge().await.map_err(|err| self.failed("purge a stream", &err))?;
            }
        }
        Ok(())
    }

    /// Deletes both streams and their consumer, for a setup that goes away (a test's prefix).
    ///
    /// # Errors
    /// When the broker does not answer.
    pub async fn delete_streams(&self) -> Result<(), StrategyError> {
        let js = self.connect().await?;
        for name in [&self.names.stream, &self.names.dead_stream] {
            if self.existing(&js, name).await?.is_some() {
                js.delete_stream(name).await.map_err(|err| self.failed("delete a stream", &err))?;
            }
        }
        self.forget_streams();
        Ok(())
    }

    fn failed(&self, what: &str, err: &dyn fmt::Display) -> StrategyError {
        StrategyError::Unavailable(format!("cannot {what} on NATS at {}: {err}", self.url))
    }
}

fn unavailable(url: &str, err: &dyn fmt::Display) -> StrategyError {
    StrategyError::Unavailable(format!("NATS at {url} cannot be reached: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_stay_valid() {
        let names = BrokerNames::new("test-0a1b:");
        assert_eq!(names.stream, "test-0a1b_orders");
        assert_eq!(names.subject, "test-0a1b_.orders");
        assert_eq!(names.dead_stream, "test-0a1b_orders-dead");
        let odd = BrokerNames::new("a.b *>/c");
        assert!(odd.stream.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)), "{odd:?}");
        assert_eq!(BrokerNames::new("").subject, "default.orders");
    }
}
