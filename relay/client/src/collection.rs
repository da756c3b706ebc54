//! [`LiveCollection`]: a local copy of a durable stream, kept up to date by a subscription
//! (snapshot, then events; a resync reloads the snapshot), so a Rust service can read a
//! stream's current records without a round trip.

use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use futures_util::Stream;
use serde_json::Value;
use tidewire_shared::{Change, Collection, Event, Json, Outcome, Position, Snapshot, StreamName};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::error::ClientError;
use super::subscription::{CallbackHandle, Subscription, SubscriptionEvent};
use super::Client;

/// Where a live collection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CollectionStatus {
    /// Waiting for the first snapshot.
    Loading,
    /// Up to date with the relay; events apply as they arrive.
    Live,
    /// The relay announced a resync; a fresh snapshot is on its way.
    Resyncing,
    /// The connection dropped; the client is reconnecting and will catch up.
    Offline,
    /// The subscription ended (the client closed or the relay refused it).
    Closed,
}

/// What a live collection reports to its watchers, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CollectionEvent {
    /// A key appeared, changed or disappeared (from an event or a snapshot load).
    Change(Change),
    /// A snapshot was loaded at this position (its changes were reported just before).
    Loaded(Position),
    /// The collection is live at this position.
    Live(Position),
    /// An ephemeral message on the stream (never stored in the collection).
    Message(Event),
}

/// State shared by the handle and the task applying events.
#[derive(Debug)]
struct Shared {
    stream: StreamName,
    /// The records. A std lock: held only to apply one event or read, never across an await.
    collection: RwLock<Collection>,
    /// Change streams; closed ones are pruned when the next event is sent.
    watchers: Mutex<Vec<mpsc::UnboundedSender<CollectionEvent>>>,
    /// Status and position, for waiters.
    state: watch::Sender<(CollectionStatus, Position)>,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Collection> {
        // A panic while applying cannot leave the map half-written in a way reads could
        // observe as unsound; serve what is there.
        self.collection
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Collection> {
        self.collection
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self, events: Vec<CollectionEvent>) {
        if events.is_empty() {
            return;
        }
        let mut watchers = self
            .watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        watchers.retain(|watcher| {
            events
                .iter()
                .all(|event| watcher.send(event.clone()).is_ok())
        });
    }

    fn set_status(&self, status: CollectionStatus) {
        let position = self.read().position();
        self.state.send_replace((status, position));
    }

    /// Applies one subscription event.
    fn apply(&self, event: SubscriptionEvent) {
        match event {
            SubscriptionEvent::Snapshot(snapshot) => self.load(snapshot),
            // Messages are not stored: they go to the listeners as they are.
            SubscriptionEvent::Event(event) if !event.is_durable() => {
                self.notify(vec![CollectionEvent::Message(event)]);
                let status = self.state.borrow().0;
                self.set_status(status);
            }
            SubscriptionEvent::Event(event) => {
                let outcome = self.write().apply(&event.map_data(Json::from));
                match outcome {
                    Outcome::Applied { change, .. } => {
                        self.notify(change.map(CollectionEvent::Change).into_iter().collect());
                    }
                    Outcome::Ephemeral | Outcome::Duplicate => {}
                    Outcome::Unfollowed { gap } => {
                        // The subscription recovers from such gaps before delivering.
                        tracing::warn!(stream = %self.stream, from = gap.from, to = gap.to, "view event after a gap ignored");
                    }
                    Outcome::EpochMismatch { current, incoming } => {
                        // The subscription re-subscribes on epoch changes before delivering.
                        tracing::warn!(stream = %self.stream, current, incoming, "event of another epoch ignored");
                    }
                }
                let status = self.state.borrow().0;
                self.set_status(status);
            }
            SubscriptionEvent::Live { seq, .. } => {
                // A view is complete up to `subscribed`, even past its last event.
                self.write().complete_to(seq);
                self.set_status(CollectionStatus::Live);
                let position = self.read().position();
                self.notify(vec![CollectionEvent::Live(position)]);
            }
            SubscriptionEvent::Resync { .. } => self.set_status(CollectionStatus::Resyncing),
            SubscriptionEvent::Disconnected { .. } => self.set_status(CollectionStatus::Offline),
            SubscriptionEvent::Error(error) => {
                tracing::warn!(stream = %self.stream, %error, "live collection subscription error");
            }
            _ => {}
        }
    }

    fn load(&self, snapshot: Snapshot) {
        let position = Position {
            epoch: snapshot.epoch,
            seq: snapshot.seq,
        };
        let changes = self.write().load_snapshot(snapshot.map_data(Json::from));
        let mut events: Vec<CollectionEvent> =
            changes.into_iter().map(CollectionEvent::Change).collect();
        events.push(CollectionEvent::Loaded(position));
        self.notify(events);
        let status = self.state.borrow().0;
        let status = if status == CollectionStatus::Live {
            status
        } else {
            CollectionStatus::Loading
        };
        self.set_status(status);
    }
}

/// A live local copy of one durable stream. Dropping it unsubscribes.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), tidewire_client::ClientError> {
/// use tidewire_client::{Client, ClientConfig};
/// let client = Client::connect(ClientConfig::new("ws://127.0.0.1:7300")).await?;
/// let todos = client.collection("todos").await?;
/// todos.wait_live().await?;
/// println!("{} todos, first: {:?}", todos.len(), todos.get("1"));
/// todos.upsert("2", serde_json::json!({"title": "milk"})).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LiveCollection {
    shared: Arc<Shared>,
    client: Client,
    /// Applies the subscription's events; aborted (unsubscribing) on drop.
    task: JoinHandle<()>,
}

impl LiveCollection {
    /// Starts applying `subscription` to a fresh collection.
    pub(crate) fn spawn(client: Client, mut subscription: Subscription) -> Self {
        let (state, _) = watch::channel((CollectionStatus::Loading, Position { epoch: 0, seq: 0 }));
        let shared = Arc::new(Shared {
            stream: subscription.stream().clone(),
            collection: RwLock::new(Collection::new(0)),
            watchers: Mutex::new(Vec::new()),
            state,
        });
        let applier = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Some(event) = subscription.recv().await {
                applier.apply(event);
            }
            applier.set_status(CollectionStatus::Closed);
        });
        Self {
            shared,
            client,
            task,
        }
    }

    /// The stream.
    pub fn stream(&self) -> &StreamName {
        &self.shared.stream
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.shared.read().get(key).map(|value| value.to_value())
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.shared.read().contains_key(key)
    }

    /// Number of keys with a value.
    pub fn len(&self) -> usize {
        self.shared.read().len()
    }

    /// True when no key has a value.
    pub fn is_empty(&self) -> bool {
        self.shared.read().is_empty()
    }

    /// Every `(key, value)`, in no particular order (a copy).
    pub fn entries(&self) -> Vec<(String, Value)> {
        self.shared
            .read()
            .iter()
            .map(|(key, value)| (key.to_owned(), value.to_value()))
            .collect()
    }

    /// Runs `read` on the collection under its read lock (no copy). Keep it short: events
    /// wait while it runs.
    pub fn with<R>(&self, read: impl FnOnce(&Collection) -> R) -> R {
        read(&self.shared.read())
    }

    /// The records as a snapshot at the applied position, ordered by seq (comparable with
    /// the relay's snapshot at the same position).
    pub fn snapshot(&self) -> Snapshot {
        self.shared
            .read()
            .snapshot()
            .map_data(|value| value.to_value())
    }

    /// `(epoch, applied seq)`: every event up to it is in the collection.
    pub fn position(&self) -> Position {
        self.shared.read().position()
    }

    /// Where the collection stands.
    pub fn status(&self) -> CollectionStatus {
        self.shared.state.borrow().0
    }

    /// Waits until the collection is live (loaded and caught up).
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] if the subscription ended first.
    pub async fn wait_live(&self) -> Result<(), ClientError> {
        self.wait(|status, _| status == CollectionStatus::Live)
            .await
    }

    /// Waits until every event up to `seq` is applied.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] if the subscription ended first.
    pub async fn wait_for_seq(&self, seq: u64) -> Result<(), ClientError> {
        self.wait(|_, position| position.seq >= seq).await
    }

    async fn wait(
        &self,
        done: impl Fn(CollectionStatus, Position) -> bool,
    ) -> Result<(), ClientError> {
        let mut state = self.shared.state.subscribe();
        let reached = state
            .wait_for(|(status, position)| {
                done(*status, *position) || *status == CollectionStatus::Closed
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        let (status, position) = *reached;
        if done(status, position) {
            Ok(())
        } else {
            Err(ClientError::Closed)
        }
    }

    /// A stream of what happens to the collection from now on: changes, loads, live
    /// transitions, ephemeral messages. Unbounded: read it or drop it.
    pub fn changes(&self) -> ChangeStream {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.shared
            .watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(sender);
        ChangeStream { receiver }
    }

    /// Calls `callback` with every [`CollectionEvent`] from now on, on a spawned task, until
    /// the handle is dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn on_change<F>(&self, mut callback: F) -> CallbackHandle
    where
        F: FnMut(CollectionEvent) + Send + 'static,
    {
        let mut changes = self.changes();
        let shared = Arc::clone(&self.shared);
        let position = Arc::new(Mutex::new(Some(self.position())));
        let reached = Arc::clone(&position);
        let task = tokio::spawn(async move {
            while let Some(event) = changes.recv().await {
                callback(event);
                *reached
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(shared.read().position());
            }
        });
        CallbackHandle::new(self.shared.stream.clone(), position, task)
    }

    /// Upserts `key` on this stream; returns the committed seq. See [`Client::upsert`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish`].
    pub async fn upsert(&self, key: &str, data: Value) -> Result<u64, ClientError> {
        self.client
            .upsert(self.shared.stream.as_str(), key, data)
            .await
    }

    /// Patches fields of `key` on this stream. See [`Client::patch`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish`].
    pub async fn patch(&self, key: &str, fields: Value) -> Result<u64, ClientError> {
        self.client
            .patch(self.shared.stream.as_str(), key, fields)
            .await
    }

    /// Deletes `key` on this stream. See [`Client::delete`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish`].
    pub async fn delete(&self, key: &str) -> Result<u64, ClientError> {
        self.client.delete(self.shared.stream.as_str(), key).await
    }
}

impl Drop for LiveCollection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a [`LiveCollection`] reports, as a [`Stream`]. See [`LiveCollection::changes`].
#[derive(Debug)]
pub struct ChangeStream {
    receiver: mpsc::UnboundedReceiver<CollectionEvent>,
}

impl ChangeStream {
    /// The next event; `None` once the collection is gone.
    pub async fn recv(&mut self) -> Option<CollectionEvent> {
        self.receiver.recv().await
    }
}

impl Stream for ChangeStream {
    type Item = CollectionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}
