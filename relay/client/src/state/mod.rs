//! The client's protocol state, sans-IO: subscriptions and their positions, publishes
//! awaiting their answer, and what to send after a (re)connect.
//!
//! The [driver](super::driver) feeds it decoded server messages, commands from the handles
//! and connection changes; it answers with [`Output`]s (messages to write, retries to
//! schedule) and pushes [`SubscriptionEvent`]s to the subscriptions. Keeping the rules here,
//! away from sockets and timers, lets the unit tests replay any message sequence, reconnects
//! included.
//!
//! # Delivery rules
//!
//! * Each subscription remembers the position `(epoch, seq)` of the last event (or snapshot)
//!   it delivered. On every (re)connect the subscribe is sent again with `since` = that
//!   position, so the relay replays exactly what was missed.
//! * Durable events with `seq <= position` are dropped and counted (legal duplicates across
//!   a reconnect or re-subscribe): the application never sees a seq twice.
//! * A durable event with `seq > position + 1` is a gap: it is reported as
//!   [`SubscriptionEvent::Gap`] and dropped, and the subscribe is re-sent from the position
//!   (the relay replays the missing events). Until the relay answers, events that do not
//!   continue the position are dropped silently.
//! * An event of another epoch, or a `subscribed` claiming a head the client never received,
//!   also makes the client re-subscribe from its position (the relay then replays, or
//!   answers `resync` with a fresh snapshot).
//! * Raw channels (`raw:...`) are live only: events newer than the position are delivered,
//!   older ones dropped; losses are announced by the relay's `gap` advisories.
//! * Ephemeral messages (`op: message`, `seq: 0`) are always delivered.

mod writes;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidewire_shared::message::{Advisory, AdvisoryKind, Publish, Subscribe};
use tidewire_shared::snapshot::{Assembled, SnapshotAssembler};
use tidewire_shared::{
    ClientMessage, ErrorCode, Event, Op, Position, Record, ServerMessage, StreamKind, StreamName,
};
use tokio::sync::{mpsc, oneshot};

use self::writes::Writes;
use super::backoff::{self, Backoff, BackoffConfig};
use super::error::{ClientError, ServerError};
use super::stats::{bump, Counters};
use super::subscription::{SubscribeOptions, SubscriptionEvent};

/// What the state asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// Write this message to the relay.
    Send(ClientMessage),
    /// Call [`State::retry`] for subscription `id` of `stream` after `delay`.
    RetryLater {
        stream: StreamName,
        id: u64,
        delay: Duration,
    },
}

/// Where a publish's answer goes.
pub(crate) type PublishReply = oneshot::Sender<Result<u64, ClientError>>;

/// One subscription's state.
#[derive(Debug)]
struct Sub {
    /// Distinguishes this subscription from an earlier one on the same stream.
    id: u64,
    options: SubscribeOptions,
    kind: StreamKind,
    /// The application's end. A send fails only after the handle was dropped, and dropping
    /// the handle sends an unsubscribe command, so failed sends are ignored.
    events: mpsc::UnboundedSender<SubscriptionEvent>,
    /// Position of the last event or snapshot delivered; `None` before the first.
    position: Option<Position>,
    assembler: SnapshotAssembler,
    /// The relay answered `subscribed` on this connection.
    live: bool,
    /// A subscribe was re-sent to recover from a gap: events that do not continue
    /// `position` are dropped silently until the relay answers.
    recovering: bool,
    /// Paces retried subscribes after a transient error; reset when the subscription goes live.
    retry: Backoff,
}

impl Sub {
    fn emit(&self, event: SubscriptionEvent) {
        // Fails only when the handle is gone; its unsubscribe command is already queued.
        let _ = self.events.send(event);
    }

    fn subscribe_message(&self, stream: &StreamName) -> ClientMessage {
        ClientMessage::Subscribe(Subscribe {
            stream: stream.clone(),
            since: self.position.or(self.options.since),
            filter: self.options.filter.clone(),
            snapshot: self.options.snapshot,
        })
    }
}

/// The protocol state of one client, across connections.
#[derive(Debug)]
pub(crate) struct State {
    subscriptions: HashMap<StreamName, Sub>,
    /// Publishes waiting for their answer (or for a connection to be sent on).
    writes: Writes,
    /// Unsubscribes sent on this connection whose `unsubscribed` has not arrived yet: until
    /// it does, messages for the stream belong to the old subscription and are dropped.
    stale: HashMap<StreamName, u32>,
    connected: bool,
    next_id: u64,
    backoff: BackoffConfig,
    counters: Arc<Counters>,
}

impl State {
    /// An empty, disconnected state.
    pub(crate) fn new(backoff: BackoffConfig, counters: Arc<Counters>) -> Self {
        Self {
            subscriptions: HashMap::new(),
            writes: Writes::default(),
            stale: HashMap::new(),
            connected: false,
            next_id: 1,
            backoff,
            counters,
        }
    }

    /// Registers a subscription; sends the subscribe now if connected (else on connect).
    ///
    /// # Errors
    ///
    /// [`ClientError::AlreadySubscribed`] if the stream has a subscription already.
    pub(crate) fn subscribe(
        &mut self,
        stream: StreamName,
        options: SubscribeOptions,
        out: &mut Vec<Output>,
    ) -> Result<(u64, mpsc::UnboundedReceiver<SubscriptionEvent>), ClientError> {
        if self.subscriptions.contains_key(&stream) {
            return Err(ClientError::AlreadySubscribed(stream));
        }
        let id = self.next_id;
        self.next_id += 1;
        let (sender, receiver) = mpsc::unbounded_channel();
        let sub = Sub {
            id,
            position: options.since,
            options,
            kind: stream.kind(),
            events: sender,
            assembler: SnapshotAssembler::new(),
            live: false,
            recovering: false,
            retry: Backoff::from(self.backoff),
        };
        if self.connected {
            out.push(Output::Send(sub.subscribe_message(&stream)));
            bump(&self.counters.subscribes_sent);
        }
        self.subscriptions.insert(stream, sub);
        Ok((id, receiver))
    }

    /// Ends subscription `id` of `stream` (a later subscription on the stream is kept).
    pub(crate) fn unsubscribe(&mut self, stream: &StreamName, id: u64, out: &mut Vec<Output>) {
        if self
            .subscriptions
            .get(stream)
            .is_none_or(|sub| sub.id != id)
        {
            return;
        }
        self.subscriptions.remove(stream);
        if self.connected {
            *self.stale.entry(stream.clone()).or_default() += 1;
            out.push(Output::Send(ClientMessage::Unsubscribe {
                stream: stream.clone(),
            }));
        }
    }

    /// Re-sends the subscribe of subscription `id` (a retry scheduled by [`Output::RetryLater`]).
    pub(crate) fn retry(&mut self, stream: &StreamName, id: u64, out: &mut Vec<Output>) {
        if !self.connected {
            return;
        }
        let Some(sub) = self.subscriptions.get_mut(stream) else {
            return;
        };
        if sub.id != id || sub.live {
            return;
        }
        sub.assembler.reset();
        out.push(Output::Send(sub.subscribe_message(stream)));
        bump(&self.counters.subscribes_sent);
    }

    /// Sends `message` now if connected, else queues it for the next connection.
    pub(crate) fn publish(&mut self, message: Publish, reply: PublishReply, out: &mut Vec<Output>) {
        self.writes
            .publish(message, reply, self.connected, &self.counters, out);
    }

    /// A connection is up: re-sends every subscription from its position, then every queued
    /// publish whose caller still waits.
    pub(crate) fn on_connected(&mut self, out: &mut Vec<Output>) {
        self.connected = true;
        self.stale.clear();
        let mut streams: Vec<&StreamName> = self.subscriptions.keys().collect();
        streams.sort();
        for stream in streams {
            if let Some(sub) = self.subscriptions.get(stream) {
                out.push(Output::Send(sub.subscribe_message(stream)));
                bump(&self.counters.subscribes_sent);
            }
        }
        for sub in self.subscriptions.values_mut() {
            sub.assembler.reset();
            sub.live = false;
            sub.recovering = false;
        }
        self.writes.on_connected(&self.counters, out);
    }

    /// The connection dropped: publishes in flight that carry a write id are queued to be
    /// sent again, the rest fail with [`ClientError::ConnectionLost`] (see [`Writes`]).
    /// Subscriptions are told.
    pub(crate) fn on_disconnected(&mut self, reason: &str) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.stale.clear();
        self.writes.on_disconnected(&self.counters);
        for sub in self.subscriptions.values_mut() {
            sub.live = false;
            sub.recovering = false;
            sub.assembler.reset();
            sub.emit(SubscriptionEvent::Disconnected {
                reason: reason.to_owned(),
            });
        }
    }

    /// The client stops for good: every waiting publish fails with `error`, every
    /// subscription ends.
    pub(crate) fn close(&mut self, error: &ClientError) {
        self.connected = false;
        self.writes.close(error);
        self.subscriptions.clear();
    }

    /// Handles one message from the relay.
    pub(crate) fn on_message(&mut self, message: ServerMessage, out: &mut Vec<Output>) {
        match message {
            ServerMessage::Snapshot {
                stream,
                epoch,
                seq,
                chunk,
                last,
                records,
            } => self.on_snapshot(&stream, (epoch, seq, chunk, last), records, out),
            ServerMessage::Event(event) => self.on_event(event, out),
            ServerMessage::Subscribed {
                stream,
                epoch,
                seq,
                resumed,
            } => self.on_subscribed(&stream, Position { epoch, seq }, resumed, out),
            ServerMessage::Unsubscribed { stream } => self.on_unsubscribed(&stream, out),
            ServerMessage::Advisory(advisory) => self.on_advisory(advisory),
            ServerMessage::Ack { id, seq, .. } => {
                if let Some(reply) = self.writes.answered(&id) {
                    bump(&self.counters.acks);
                    let _ = reply.send(Ok(seq));
                }
            }
            ServerMessage::Error {
                id,
                stream,
                code,
                message,
            } => self.on_error(id, stream, ServerError { code, message }, out),
            // Presence is not surfaced by this client yet; pongs only prove liveness, which
            // the driver tracks for every message.
            ServerMessage::Presence { .. } | ServerMessage::Pong { .. } => {}
        }
    }

    /// The subscription messages for `stream` should go to, unless they belong to a
    /// subscription that was ended.
    fn routable(&mut self, stream: &StreamName) -> Option<&mut Sub> {
        if self.stale.contains_key(stream) {
            return None;
        }
        self.subscriptions.get_mut(stream)
    }

    fn on_snapshot(
        &mut self,
        stream: &StreamName,
        (epoch, seq, chunk, last): (u64, u64, u32, bool),
        records: Vec<Record>,
        out: &mut Vec<Output>,
    ) {
        let counters = Arc::clone(&self.counters);
        let connected = self.connected;
        let Some(sub) = self.routable(stream) else {
            return;
        };
        match sub.assembler.push(epoch, seq, chunk, last, records) {
            Assembled::Partial => {}
            Assembled::Complete(snapshot) => {
                bump(&counters.snapshots);
                sub.position = Some(Position {
                    epoch: snapshot.epoch,
                    seq: snapshot.seq,
                });
                sub.recovering = false;
                sub.emit(SubscriptionEvent::Snapshot(snapshot));
            }
            Assembled::Mismatch => {
                tracing::warn!(%stream, chunk, "snapshot chunk out of order; subscribing again");
                recover(sub, stream, connected, &counters, out);
            }
        }
    }

    fn on_event(&mut self, event: Event, out: &mut Vec<Output>) {
        let counters = Arc::clone(&self.counters);
        let connected = self.connected;
        let stream = event.stream.clone();
        let Some(sub) = self.routable(&stream) else {
            return;
        };
        if event.op == Op::Message && event.seq == 0 {
            bump(&counters.events);
            sub.emit(SubscriptionEvent::Event(event));
            return;
        }
        let incoming = event.position();
        let fresh = match (sub.kind, sub.position) {
            (_, None) => true,
            (StreamKind::Raw, Some(position)) => {
                position.epoch != incoming.epoch || incoming.seq > position.seq
            }
            (StreamKind::Durable, Some(position)) if position.epoch != incoming.epoch => {
                bump(&counters.out_of_order_dropped);
                if !sub.recovering {
                    recover(sub, &stream, connected, &counters, out);
                }
                return;
            }
            // On a view, `prev` equal to our position means the seqs between did not concern
            // it; anything else beyond the next seq is a gap.
            (StreamKind::Durable, Some(position))
                if incoming.seq > position.seq + 1 && event.prev != Some(position.seq) =>
            {
                if sub.recovering {
                    bump(&counters.out_of_order_dropped);
                } else {
                    bump(&counters.gaps);
                    sub.emit(SubscriptionEvent::Gap {
                        from: position.seq + 1,
                        to: Some(incoming.seq - 1),
                    });
                    recover(sub, &stream, connected, &counters, out);
                }
                return;
            }
            (StreamKind::Durable, Some(position)) => incoming.seq > position.seq,
        };
        if fresh {
            sub.position = Some(incoming);
            bump(&counters.events);
            sub.emit(SubscriptionEvent::Event(event));
        } else {
            bump(&counters.duplicates_dropped);
        }
    }

    fn on_subscribed(
        &mut self,
        stream: &StreamName,
        announced: Position,
        resumed: bool,
        out: &mut Vec<Output>,
    ) {
        let counters = Arc::clone(&self.counters);
        let connected = self.connected;
        let Some(sub) = self.routable(stream) else {
            return;
        };
        let position = match sub.position {
            Some(position) if position.epoch == announced.epoch => {
                if sub.kind == StreamKind::Durable
                    && announced.seq > position.seq
                    && sub.options.filter.is_none()
                {
                    // The relay believes we hold events we never received (an answer to an
                    // earlier subscribe, or a bug): ask again from what we really hold. A
                    // view is complete up to `subscribed` even past its last event.
                    if !sub.recovering {
                        recover(sub, stream, connected, &counters, out);
                    }
                    return;
                }
                Position {
                    seq: position.seq.max(announced.seq),
                    ..position
                }
            }
            _ => announced,
        };
        sub.position = Some(position);
        sub.live = true;
        sub.recovering = false;
        sub.retry.reset();
        sub.emit(SubscriptionEvent::Live {
            epoch: position.epoch,
            seq: position.seq,
            resumed,
        });
    }

    fn on_unsubscribed(&mut self, stream: &StreamName, out: &mut Vec<Output>) {
        if let Some(count) = self.stale.get_mut(stream) {
            *count -= 1;
            if *count == 0 {
                self.stale.remove(stream);
            }
            return;
        }
        let Some(sub) = self.subscriptions.get_mut(stream) else {
            return;
        };
        // Not asked for: the relay dropped the subscription (a failed catch-up, a dropped
        // stream). Subscribe again from the position after a pause.
        sub.live = false;
        sub.assembler.reset();
        self.schedule_retry(stream, out);
    }

    fn schedule_retry(&mut self, stream: &StreamName, out: &mut Vec<Output>) {
        let Some(sub) = self.subscriptions.get_mut(stream) else {
            return;
        };
        match backoff::next_delay(&mut sub.retry) {
            Some(delay) => out.push(Output::RetryLater {
                stream: stream.clone(),
                id: sub.id,
                delay,
            }),
            None => {
                tracing::warn!(%stream, "subscribe retries exhausted; ending the subscription");
                self.subscriptions.remove(stream);
            }
        }
    }

    fn on_advisory(&mut self, advisory: Advisory) {
        let Some(stream) = advisory.stream.clone() else {
            for sub in self.subscriptions.values() {
                sub.emit(SubscriptionEvent::Advisory(advisory.clone()));
            }
            return;
        };
        let counters = Arc::clone(&self.counters);
        let Some(sub) = self.routable(&stream) else {
            return;
        };
        match advisory.kind {
            AdvisoryKind::Resync => {
                bump(&counters.resyncs);
                sub.assembler.reset();
                sub.live = false;
                sub.emit(SubscriptionEvent::Resync {
                    reason: advisory.reason.unwrap_or_default(),
                });
            }
            AdvisoryKind::Gap if sub.kind == StreamKind::Raw => {
                bump(&counters.gaps);
                sub.emit(SubscriptionEvent::Gap {
                    from: advisory.from.unwrap_or_default(),
                    to: advisory.to,
                });
            }
            _ => sub.emit(SubscriptionEvent::Advisory(advisory)),
        }
    }

    fn on_error(
        &mut self,
        id: Option<String>,
        stream: Option<String>,
        error: ServerError,
        out: &mut Vec<Output>,
    ) {
        if let Some(id) = id {
            if let Some(reply) = self.writes.answered(&id) {
                bump(&self.counters.publish_errors);
                let _ = reply.send(Err(ClientError::Server(error)));
            }
            return;
        }
        // A name that breaks the rule (echoed in `bad_stream`) is none of ours: we only
        // subscribe with valid names.
        let Some(stream) = stream.and_then(|name| StreamName::new(&name).ok()) else {
            tracing::warn!(%error, "the relay reported an error");
            return;
        };
        if error.code == ErrorCode::NotSubscribed {
            // The answer to an unsubscribe of a subscription the relay never had.
            if let Some(count) = self.stale.get_mut(&stream) {
                *count -= 1;
                if *count == 0 {
                    self.stale.remove(&stream);
                }
                return;
            }
        }
        let Some(sub) = self.routable(&stream) else {
            return;
        };
        let answers_subscribe = !sub.live;
        let retryable = error.is_retryable();
        sub.emit(SubscriptionEvent::Error(error));
        if answers_subscribe {
            if retryable {
                self.schedule_retry(&stream, out);
            } else {
                // Forbidden, bad stream, too many subscriptions: retrying cannot help.
                self.subscriptions.remove(&stream);
            }
        }
    }
}

/// Re-sends the subscribe of `sub` from its position and drops events until the relay answers.
fn recover(
    sub: &mut Sub,
    stream: &StreamName,
    connected: bool,
    counters: &Counters,
    out: &mut Vec<Output>,
) {
    sub.recovering = true;
    sub.live = false;
    sub.assembler.reset();
    if connected {
        out.push(Output::Send(sub.subscribe_message(stream)));
        bump(&counters.subscribes_sent);
    }
}
