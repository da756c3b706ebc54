//! A native tokio client for Tidewire relays: for backend services that follow or write
//! streams, for the end-to-end tests, and for the load generator.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tidewire_client::ClientError> {
//! use futures_util::StreamExt;
//! use tidewire_client::{Client, ClientConfig, SubscribeOptions, SubscriptionEvent};
//!
//! let client = Client::connect(ClientConfig::new("ws://127.0.0.1:7300")).await?;
//! let mut todos = client.subscribe("todos", SubscribeOptions::default()).await?;
//! let seq = client.upsert("todos", "1", serde_json::json!({"title": "milk"})).await?;
//! while let Some(event) = todos.next().await {
//!     if let SubscriptionEvent::Event(event) = event {
//!         println!("{} {} {}", event.seq, event.key, event.data);
//!         if event.seq == seq { break; }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | this file | [`Client`]: the cheap-clone handle |
//! | [`config`](ClientConfig) | settings and URL parsing |
//! | `driver` | the background task: socket ownership, reconnects, keepalive |
//! | `socket` | one WebSocket connection (fastwebsockets over hyper) |
//! | `state` | sans-IO protocol state: positions, dedupe, gap recovery, ack matching |
//! | [`subscription`](Subscription) | [`Subscription`] and [`SubscriptionEvent`] |
//! | [`collection`](LiveCollection) | [`LiveCollection`]: a live local copy of a stream |
//! | [`http`](HttpApi) | the HTTP snapshot and replay endpoints |
//! | [`backoff`](Backoff) | exponential backoff with full jitter |
//! | [`stats`](ClientStats) | counters for load generators |
//! | [`error`](ClientError) | [`ClientError`] |
//!
//! # Guarantees
//!
//! * A background task owns the socket; [`Client`] is a handle (clone it freely). The task
//!   lives while any handle, subscription or collection does, or until [`Client::close`].
//! * Reconnects use exponential backoff with full jitter, forever by default, reset after
//!   every successful connection (one that stayed up for a second: a relay that drops
//!   connections at once is not hammered). On reconnect every subscription is re-sent with `since` =
//!   the last position it delivered, so the relay replays what was missed; events already
//!   delivered are dropped client-side, so the application sees each seq once, in order.
//! * Publishes made while disconnected wait (up to the request timeout) and are sent after
//!   the next connect. Every durable write carries a write id (this client's random id and a
//!   counter), so a publish *in flight* when a connection drops is sent again after the next
//!   connect: the relay commits it once and answers a resend of a write that had committed
//!   with its original seq (exactly once, within the relay's `--write-id-window-ms`).
//!   Ephemeral messages have no write id: in flight, they fail with
//!   [`ClientError::ConnectionLost`] and are not resent (at most once).
//! * One subscription per stream per client (a [`LiveCollection`] counts as one).

mod backoff;
mod collection;
mod config;
mod driver;
mod error;
mod http;
mod socket;
mod state;
mod stats;
mod subscription;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tidewire_shared::message::{parse_where, Publish};
use tidewire_shared::{Event, Op, Snapshot, StreamName};
use tokio::sync::{mpsc, oneshot, watch};

pub use self::backoff::{Backoff, BackoffConfig};
pub use self::collection::{ChangeStream, CollectionEvent, CollectionStatus, LiveCollection};
pub use self::config::ClientConfig;
pub use self::driver::ConnectionStatus;
pub use self::error::{ClientError, ServerError};
pub use self::http::HttpApi;
pub use self::stats::ClientStats;
pub use self::subscription::{CallbackHandle, SubscribeOptions, Subscription, SubscriptionEvent};

use self::config::Endpoint;
use self::driver::{Command, Driver};
use self::stats::Counters;

/// A handle to a relay connection. Cheap to clone; every clone shares one connection.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<ClientConfig>,
    /// To the background task. Every handle holds a sender, so the task lives while any does.
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<ConnectionStatus>,
    counters: Arc<Counters>,
    http: HttpApi,
    /// Source of publish op ids (`p1`, `p2`, ...), unique for the client's lifetime.
    next_op: AtomicU64,
    /// This client's part of its write ids (random): `<writer>.<op number>`.
    writer: String,
}

impl Client {
    /// Connects to the relay and returns once the first connection is up; later drops are
    /// repaired in the background.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for an unusable configuration, [`ClientError::Connect`] or
    /// [`ClientError::Refused`] if the first attempt fails (use [`Client::connect_lazy`] to
    /// keep retrying instead).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let (first, connected) = oneshot::channel();
        let client = Self::start(config, Some(first))?;
        match connected.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Starts the client without waiting: it connects (and retries, per
    /// [`ClientConfig::reconnect`]) in the background; requests made meanwhile wait.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for an unusable configuration.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn connect_lazy(config: ClientConfig) -> Result<Self, ClientError> {
        Self::start(config, None)
    }

    fn start(
        config: ClientConfig,
        first: Option<oneshot::Sender<Result<(), ClientError>>>,
    ) -> Result<Self, ClientError> {
        let endpoint = Endpoint::parse(&config.url)?;
        let http = HttpApi::new(&config)?;
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        let (status_sender, status) = watch::channel(ConnectionStatus::Connecting);
        let driver = Driver::new(
            Arc::clone(&config),
            endpoint,
            receiver,
            status_sender,
            Arc::clone(&counters),
        );
        tokio::spawn(driver.run(first));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                commands,
                status,
                counters,
                http,
                next_op: AtomicU64::new(1),
                writer: format!("{:016x}", rand::random::<u64>()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The connection's current status.
    pub fn status(&self) -> ConnectionStatus {
        self.inner.status.borrow().clone()
    }

    /// Waits until the client is connected.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] if the client stopped instead.
    pub async fn wait_connected(&self) -> Result<(), ClientError> {
        let mut status = self.inner.status.clone();
        let reached = status
            .wait_for(|status| {
                matches!(
                    status,
                    ConnectionStatus::Connected | ConnectionStatus::Closed { .. }
                )
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        match *reached {
            ConnectionStatus::Connected => Ok(()),
            _ => Err(ClientError::Closed),
        }
    }

    /// A copy of the client's counters.
    pub fn stats(&self) -> ClientStats {
        self.inner.counters.snapshot()
    }

    /// Subscribes to `stream`.
    ///
    /// # Errors
    ///
    /// [`ClientError::StreamName`], [`ClientError::AlreadySubscribed`], or
    /// [`ClientError::Closed`]. Errors from the relay arrive on the subscription as
    /// [`SubscriptionEvent::Error`].
    pub async fn subscribe(
        &self,
        stream: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        let stream = StreamName::new(stream)?;
        // The relay's rule, checked before anything is sent (bad_filter otherwise).
        parse_where(&stream, options.filter.as_ref())?;
        let since = options.since;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Subscribe {
            stream: stream.clone(),
            options,
            reply,
        })?;
        let (id, receiver) = answer.await.map_err(|_| ClientError::Closed)??;
        Ok(Subscription::new(
            stream,
            id,
            receiver,
            self.inner.commands.clone(),
            since,
        ))
    }

    /// Subscribes to `stream` and hands every event to `callback` on a spawned task, until
    /// the returned handle is dropped.
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    pub async fn subscribe_with<F>(
        &self,
        stream: &str,
        options: SubscribeOptions,
        callback: F,
    ) -> Result<CallbackHandle, ClientError>
    where
        F: FnMut(SubscriptionEvent) + Send + 'static,
    {
        Ok(self.subscribe(stream, options).await?.on_event(callback))
    }

    /// A live local copy of the durable stream `stream` (snapshot, then events).
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    pub async fn collection(&self, stream: &str) -> Result<LiveCollection, ClientError> {
        let subscription = self.subscribe(stream, SubscribeOptions::default()).await?;
        Ok(LiveCollection::spawn(self.clone(), subscription))
    }

    /// A live local copy of the records of `stream` that match `filter` (a view: see
    /// `docs/PROTOCOL.md`, "Views"). Records moving into the view arrive whole, records
    /// moving out are deleted from it. One subscription per stream and client: a second
    /// view of the same stream needs another client.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tidewire_client::ClientError> {
    /// use serde_json::json;
    /// use tidewire_client::{Client, ClientConfig};
    /// let client = Client::connect(ClientConfig::new("ws://127.0.0.1:7300")).await?;
    /// let mine = client.collection_where("tasks", json!({"owner": "u1", "done": false})).await?;
    /// mine.wait_live().await?;
    /// println!("{} open tasks of u1", mine.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ClientError::Invalid`] for a filter the relay would refuse; as [`Client::subscribe`].
    pub async fn collection_where(
        &self,
        stream: &str,
        filter: Value,
    ) -> Result<LiveCollection, ClientError> {
        let subscription = self
            .subscribe(stream, SubscribeOptions::filtered(filter))
            .await?;
        Ok(LiveCollection::spawn(self.clone(), subscription))
    }

    /// Publishes one write and waits for the relay's answer; returns the committed seq (0
    /// for ephemeral messages). A durable write carries a write id and is sent again after a
    /// lost connection until it is answered or the request timeout passes: it commits once.
    ///
    /// # Errors
    ///
    /// * [`ClientError::StreamName`] or [`ClientError::Invalid`]: rejected locally, not sent.
    /// * [`ClientError::Server`]: the relay answered `error` (its [`ErrorCode`](tidewire_shared::ErrorCode)
    ///   says why; [`ClientError::is_retryable`] says whether trying again can help).
    /// * [`ClientError::Timeout`]: no answer in time (the write may have committed; it is not
    ///   sent again), or [`ClientError::ConnectionLost`] for an ephemeral message in flight
    ///   when the connection dropped.
    /// * [`ClientError::Closed`]: the client is closed.
    pub async fn publish(
        &self,
        stream: &str,
        key: &str,
        op: Op,
        data: Value,
    ) -> Result<u64, ClientError> {
        let number = self.inner.next_op.fetch_add(1, Ordering::Relaxed);
        let write_id = (op != Op::Message).then(|| format!("{}.{number}", self.inner.writer));
        let message = Publish {
            id: format!("p{number}"),
            stream: StreamName::new(stream)?,
            key: key.to_owned(),
            op,
            data,
            write_id,
        };
        message.validate()?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Publish { message, reply })?;
        let timeout = self.inner.config.request_timeout;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// Replaces the value of `key`. See [`Client::publish`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish`].
    pub async fn upsert(&self, stream: &str, key: &str, data: Value) -> Result<u64, ClientError> {
        self.publish(stream, key, Op::Upsert, data).await
    }

    /// Merges the fields of the object `fields` into `key`. See [`Client::publish`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish`]; [`ClientError::Invalid`] if `fields` is not an object.
    pub async fn patch(&self, stream: &str, key: &str, fields: Value) -> Result<u64, ClientError> {
        self.publish(stream, key, Op::Patch, fields).await
    }

    /// Deletes `key`. See [`Client::publish`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish`].
    pub async fn delete(&self, stream: &str, key: &str) -> Result<u64, ClientError> {
        self.publish(stream, key, Op::Delete, Value::Null).await
    }

    /// Sends an ephemeral message to the stream's current subscribers (never stored).
    ///
    /// # Errors
    ///
    /// As [`Client::publish`].
    pub async fn message(&self, stream: &str, key: &str, data: Value) -> Result<(), ClientError> {
        self.publish(stream, key, Op::Message, data).await.map(drop)
    }

    /// The current records of `stream`, over the HTTP API.
    ///
    /// # Errors
    ///
    /// See [`HttpApi::snapshot`].
    pub async fn snapshot(&self, stream: &str) -> Result<Snapshot, ClientError> {
        self.inner.http.snapshot(stream).await
    }

    /// The events of `stream` after seq `since`, over the HTTP API.
    ///
    /// # Errors
    ///
    /// See [`HttpApi::replay`].
    pub async fn replay(&self, stream: &str, since: u64) -> Result<Vec<Event>, ClientError> {
        self.inner.http.replay(stream, since).await
    }

    /// The HTTP API of the same relay.
    pub fn http(&self) -> &HttpApi {
        &self.inner.http
    }

    /// Closes the connection (close code 1000) and stops the client: publishes waiting for
    /// an answer fail with [`ClientError::Closed`], subscriptions end. Every clone is
    /// affected. Returns once the background task stopped.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.send(Command::Close { reply }).is_ok() {
            // An error only means the task is already gone.
            let _ = done.await;
        }
    }

    fn send(&self, command: Command) -> Result<(), ClientError> {
        self.inner
            .commands
            .send(command)
            .map_err(|_| ClientError::Closed)
    }
}
