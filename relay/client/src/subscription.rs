//! [`Subscription`]: one stream's events as a [`futures_util::Stream`] of
//! [`SubscriptionEvent`]s (or through a callback), with the position the application has
//! reached.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use serde_json::Value;
use tidewire_shared::message::Advisory;
use tidewire_shared::{Event, Position, Snapshot, StreamName};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::driver::Command;
use super::error::ServerError;

/// How to start a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeOptions {
    /// Resume after this position (replay of what came after it) instead of starting fresh.
    /// If the relay cannot resume from it (other epoch, outside retention) it answers
    /// [`SubscriptionEvent::Resync`] followed by a snapshot. Default: `None`.
    pub since: Option<Position>,
    /// When starting fresh (no `since`): send a snapshot first (`true`), or start at the
    /// head without history (`false`). Default: `true`.
    pub snapshot: bool,
    /// Only the records matching this filter (a view; see `docs/PROTOCOL.md`, "Views"):
    /// records moving in arrive as upserts of the whole record, moving out as deletes.
    /// Checked locally before anything is sent. Default: `None` (every record).
    pub filter: Option<Value>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            since: None,
            snapshot: true,
            filter: None,
        }
    }
}

impl SubscribeOptions {
    /// The default options with a filter: a view of the stream.
    pub fn filtered(filter: Value) -> Self {
        Self {
            filter: Some(filter),
            ..Self::default()
        }
    }
}

/// What a subscription yields.
///
/// A fresh subscription yields `Snapshot` (if asked for), then `Live`, then `Event`s. After
/// a reconnect it yields `Disconnected`, later `Live { resumed: true, .. }` after the relay
/// replayed what was missed (as `Event`s), so the application sees every seq exactly once.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// The stream's records at one position (reassembled from the relay's chunks). Replace
    /// any state held for the stream with it: it is also how a resync arrives.
    Snapshot(Snapshot),
    /// The subscription is live: everything up to `seq` has been delivered.
    Live {
        /// The stream's epoch.
        epoch: u64,
        /// The position the subscription is live from.
        seq: u64,
        /// True when the relay resumed from the client's position (replay, no snapshot).
        resumed: bool,
    },
    /// One event, never a seq already delivered. Ephemeral messages have `op: message` and
    /// `seq: 0`; raw channels have relay-local seqs.
    Event(Event),
    /// The client's position could not be resumed (another epoch, outside retention): a
    /// fresh [`SubscriptionEvent::Snapshot`] follows.
    Resync {
        /// The relay's explanation.
        reason: String,
    },
    /// Seqs `from..=to` are missing. On a durable stream the client detected it and is
    /// asking the relay for a replay (the events follow). On a raw channel the relay
    /// announced a loss that cannot be replayed; `to` is `None` when the end is unknown.
    Gap {
        /// First missing seq.
        from: u64,
        /// Last missing seq, if known.
        to: Option<u64>,
    },
    /// A supervisory advisory from the relay (connect, relay-side PostgreSQL disconnect or
    /// reconnect, lagged, shutdown, dropped).
    Advisory(Advisory),
    /// The relay answered the subscription with an error. A transient one (for example
    /// `unavailable`) is retried with backoff; any other ends the subscription.
    Error(ServerError),
    /// The connection to the relay dropped; the client reconnects and resumes on its own.
    Disconnected {
        /// Why the connection ended.
        reason: String,
    },
}

/// The events of one stream. Dropping it unsubscribes.
///
/// Events are buffered without bound until the application reads them, so the relay and
/// the other subscriptions are never held up by a slow reader; read it promptly (or drop it).
/// One client holds at most one subscription per stream.
#[derive(Debug)]
pub struct Subscription {
    stream: StreamName,
    /// Distinguishes this subscription from a later one on the same stream (for unsubscribe).
    id: u64,
    receiver: mpsc::UnboundedReceiver<SubscriptionEvent>,
    /// Keeps the client's background task alive and carries the unsubscribe on drop.
    commands: mpsc::UnboundedSender<Command>,
    /// The position of the last event or snapshot handed to the application. Shared with
    /// [`CallbackHandle`]; a std mutex held only to copy the value, never across an await.
    position: Arc<Mutex<Option<Position>>>,
}

impl Subscription {
    pub(crate) fn new(
        stream: StreamName,
        id: u64,
        receiver: mpsc::UnboundedReceiver<SubscriptionEvent>,
        commands: mpsc::UnboundedSender<Command>,
        since: Option<Position>,
    ) -> Self {
        Self {
            stream,
            id,
            receiver,
            commands,
            position: Arc::new(Mutex::new(since)),
        }
    }

    /// The stream.
    pub fn stream(&self) -> &StreamName {
        &self.stream
    }

    /// The position of the last event or snapshot this subscription yielded (where a new
    /// subscription would resume); `None` before the first.
    pub fn position(&self) -> Option<Position> {
        read_position(&self.position)
    }

    /// The next event; `None` once the subscription ended (the client closed, or the relay
    /// refused the subscription for good).
    pub async fn recv(&mut self) -> Option<SubscriptionEvent> {
        self.next().await
    }

    /// Hands every event to `callback` on a spawned task, in order, until the returned
    /// handle is dropped (which unsubscribes) or the subscription ends.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn on_event<F>(mut self, mut callback: F) -> CallbackHandle
    where
        F: FnMut(SubscriptionEvent) + Send + 'static,
    {
        let stream = self.stream.clone();
        let position = Arc::clone(&self.position);
        let task = tokio::spawn(async move {
            while let Some(event) = self.next().await {
                callback(event);
            }
        });
        CallbackHandle {
            stream,
            position,
            task,
        }
    }
}

fn read_position(position: &Mutex<Option<Position>>) -> Option<Position> {
    // A poisoned lock still holds a valid position (plain Copy data).
    *position
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Stream for Subscription {
    type Item = SubscriptionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.receiver.poll_recv(cx);
        if let Poll::Ready(Some(event)) = &polled {
            let reached = match event {
                SubscriptionEvent::Snapshot(snapshot) => Some(Position {
                    epoch: snapshot.epoch,
                    seq: snapshot.seq,
                }),
                SubscriptionEvent::Live { epoch, seq, .. } => Some(Position {
                    epoch: *epoch,
                    seq: *seq,
                }),
                SubscriptionEvent::Event(event) if event.seq > 0 => Some(event.position()),
                _ => None,
            };
            if let Some(reached) = reached {
                *self
                    .position
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reached);
            }
        }
        polled
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Fails only when the client's task is gone, and then there is nothing to leave.
        let _ = self.commands.send(Command::Unsubscribe {
            stream: self.stream.clone(),
            id: self.id,
        });
    }
}

/// A callback fed by a spawned task ([`Subscription::on_event`],
/// [`LiveCollection::on_change`](super::LiveCollection::on_change)). Dropping it stops the
/// task (and unsubscribes, for a subscription).
#[derive(Debug)]
pub struct CallbackHandle {
    stream: StreamName,
    position: Arc<Mutex<Option<Position>>>,
    task: JoinHandle<()>,
}

impl CallbackHandle {
    pub(crate) fn new(
        stream: StreamName,
        position: Arc<Mutex<Option<Position>>>,
        task: JoinHandle<()>,
    ) -> Self {
        Self {
            stream,
            position,
            task,
        }
    }

    /// The stream.
    pub fn stream(&self) -> &StreamName {
        &self.stream
    }

    /// The position of the last event or snapshot handed to the callback, when known.
    pub fn position(&self) -> Option<Position> {
        read_position(&self.position)
    }

    /// True once the source ended (the client closed or the subscription was refused).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for CallbackHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
