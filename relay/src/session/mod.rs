//! A client session: the transport-independent half of a WebSocket or SSE connection.
//!
//! The transport feeds client messages in ([`Session::handle`]) and writes what
//! [`Session::next`] yields out. The session owns the connection's bus queue and its dedupe
//! [`LastSent`], runs the race-free subscribe (register, ensure LISTEN, read snapshot or replay,
//! then flush the queue through the cursor), turns lags and gaps into outbox replays (durable)
//! or `gap` advisories (raw), turns epoch changes into `resync` + snapshot, and reports
//! PostgreSQL outages as `disconnect` / `reconnect` advisories.
//!
//! # Cancel safety
//!
//! [`Session::next`] is cancel safe: a transport may `select!` on it together with reading
//! the socket. Work that awaits PostgreSQL is only removed from the to-do list after it
//! completed, and its output is queued all at once.

mod outbound;
mod publish;
mod rate;
mod subscribe;
mod view;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tidewire_shared::message::{Advisory, AdvisoryKind};
use tidewire_shared::{
    ClientMessage, CloseCode, DecodeLimits, ErrorCode, Filter, Position, ServerMessage, StreamKind,
    StreamName,
};
use tokio::sync::watch;

pub(crate) use self::publish::{commit, publish_error};
pub use self::rate::TokenBucket;
pub(crate) use self::subscribe::snapshot_start;
use crate::auth::Grant;
use crate::bus::registry::ConnId;
use crate::bus::{
    self, Admit, ConnReceiver, Delivery, DeliveryKind, Lagged, LastSent, Received, StreamMap,
};
use crate::hub::Hub;
use crate::metrics::DeliveryClock;
use crate::pg::listener::PgStatus;

/// The encoded JSON of an outgoing message: bytes of its own, or a bus delivery, whose bytes
/// every subscriber shares. Handing the delivery on (instead of a clone of its bytes) spares
/// one atomic increment and decrement per delivery on a counter all connections share.
#[derive(Debug, Clone)]
pub enum Json {
    /// A message of this session only (or a replayed page's frame).
    Own(Bytes),
    /// A bus delivery, as received from the connection's queue.
    Delivery(Arc<Delivery>),
}

impl Json {
    /// The delivery, if this is one.
    pub fn delivery(&self) -> Option<&Delivery> {
        match self {
            Json::Own(_) => None,
            Json::Delivery(delivery) => Some(delivery),
        }
    }
}

impl std::ops::Deref for Json {
    type Target = Bytes;

    fn deref(&self) -> &Bytes {
        match self {
            Json::Own(bytes) => bytes,
            Json::Delivery(delivery) => &delivery.json,
        }
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl From<Bytes> for Json {
    fn from(bytes: Bytes) -> Self {
        Json::Own(bytes)
    }
}

/// One message for the transport to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A JSON server message. `position` is set on events and `subscribed` messages: the SSE
    /// transport uses it to advance its `id:` cursor.
    Frame {
        /// The encoded message (shared with other connections for bus deliveries).
        json: Json,
        /// The stream and the position this frame brings the client to, if any.
        position: Option<(StreamName, Position)>,
        /// Commit time of the event (microseconds since the Unix epoch), if it is one; the
        /// session records the delivery latency when it hands the frame over.
        committed_at: Option<i64>,
    },
    /// Close the connection with this code.
    Close {
        /// The close code.
        code: CloseCode,
        /// Human-readable detail.
        reason: String,
    },
}

impl Outgoing {
    /// An event of `stream` that brings the client to `(epoch, seq)`.
    fn event(
        json: Json,
        stream: &StreamName,
        epoch: u64,
        seq: u64,
        committed_at: Option<i64>,
    ) -> Self {
        Outgoing::Frame {
            json,
            position: Some((stream.clone(), Position { epoch, seq })),
            committed_at,
        }
    }

    fn message(message: &ServerMessage) -> Self {
        Outgoing::Frame {
            json: Json::Own(Bytes::from(message.encode())),
            position: None,
            committed_at: None,
        }
    }
}

/// State of one subscription.
#[derive(Debug, Clone)]
struct SubscriptionState {
    kind: StreamKind,
    /// Raw channels only: the cursor starts at the first delivery (its seq is only known
    /// then). `Some(since)` if the client resumes and wants to know about missed seqs.
    raw_pending: Option<RawStart>,
    /// Raw channels after a lag: deliveries for the channel still queued from before the
    /// drop. The `gap` is announced after the last of them, where the hole starts.
    raw_gap_after: usize,
    /// The `where` the client asked for, kept to recompute the view when the grant changes.
    asked: Option<Filter>,
    /// Durable streams with a filter (asked or granted) only.
    view: Option<view::View>,
}

#[derive(Debug, Clone, Copy)]
enum RawStart {
    /// Subscribed without `since`; `head` was the channel's seq then.
    Fresh {
        head: u64,
    },
    Since(Position),
    /// After a `gap` the client was sent: start at the next delivery, announcing nothing.
    AfterLag,
}

/// Work that reads PostgreSQL, done by [`Session::next`] before it reads the queue.
#[derive(Debug, Clone)]
enum Work {
    /// Send events after `after` until `until` (or until a short page), then announce.
    Replay {
        stream: StreamName,
        epoch: u64,
        after: u64,
        until: Option<u64>,
        announce: Option<bool>,
    },
    /// Send a `resync` advisory and a fresh snapshot.
    Resync { stream: StreamName, reason: String },
    /// Send the next page of a snapshot.
    Snapshot(SnapshotWork),
}

/// The next page of a snapshot to send: as of `at` in `epoch`, keys after `after`, as chunk
/// number `chunk`; once it is sent, replay up to `head`.
#[derive(Debug, Clone)]
struct SnapshotWork {
    stream: StreamName,
    epoch: u64,
    at: u64,
    head: u64,
    after: Option<Arc<str>>,
    chunk: u32,
}

impl Work {
    fn stream(&self) -> &StreamName {
        match self {
            Work::Replay { stream, .. } | Work::Resync { stream, .. } => stream,
            Work::Snapshot(snapshot) => &snapshot.stream,
        }
    }

    /// The first page of a snapshot of `stream` as of `at`, then a replay up to `head`.
    fn snapshot(stream: StreamName, epoch: u64, at: u64, head: u64) -> Self {
        Work::Snapshot(SnapshotWork {
            stream,
            epoch,
            at,
            head,
            after: None,
            chunk: 0,
        })
    }
}

/// The state of one client connection. Dropping it unregisters the connection.
#[derive(Debug)]
pub struct Session {
    hub: Arc<Hub>,
    receiver: ConnReceiver,
    cursor: LastSent,
    /// Looked up for every delivery (bounded by `--max-subscriptions`).
    subscriptions: StreamMap<StreamName, SubscriptionState>,
    grant: Grant,
    pending: VecDeque<Work>,
    out: outbound::Outbound,
    status: watch::Receiver<PgStatus>,
    was_down: bool,
    rate: TokenBucket,
    limits: DecodeLimits,
    closed: bool,
    latency: DeliveryClock,
}

impl Session {
    /// Registers a new connection with `grant` and queues the `connect` advisory.
    pub fn open(hub: Arc<Hub>, grant: Grant) -> Self {
        let receiver = hub.bus.registry().register();
        let options = &hub.config.options;
        let rate = TokenBucket::new(options.publish_rate, options.publish_burst);
        let limits = DecodeLimits {
            max_bytes: options.max_message_bytes,
            max_depth: DecodeLimits::DEFAULT_MAX_DEPTH,
        };
        let mut status = hub.listener.status();
        let was_down = matches!(*status.borrow_and_update(), PgStatus::Down { .. });
        let connect = Advisory::new(AdvisoryKind::Connect).reason(format!(
            "relay={} connection={}",
            hub.relay_id,
            receiver.id()
        ));
        let mut session = Self {
            hub,
            receiver,
            cursor: LastSent::new(),
            subscriptions: StreamMap::default(),
            grant,
            pending: VecDeque::new(),
            out: outbound::Outbound::default(),
            status,
            was_down,
            rate,
            limits,
            closed: false,
            latency: DeliveryClock::default(),
        };
        session.push(&ServerMessage::Advisory(connect));
        session
    }

    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.receiver.id()
    }

    /// The grant in force.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Replaces the grant (after an `auth` message with a fresh token).
    pub fn set_grant(&mut self, grant: Grant) {
        self.grant = grant;
    }

    /// This connection's id in presence sets: `<relay id>-<connection number>`.
    pub fn presence_id(&self) -> String {
        format!("{}-{}", self.hub.relay_id, self.receiver.id().get())
    }

    async fn set_presence(
        &mut self,
        stream: StreamName,
        data: serde_json::Value,
        member: Option<String>,
    ) {
        if !self.subscriptions.contains_key(&stream) {
            self.push_error(
                None,
                Some(stream.clone()),
                ErrorCode::NotSubscribed,
                format!("subscribe to {stream} before setting presence"),
            );
            return;
        }
        let size = serde_json::to_vec(&data).map_or(usize::MAX, |bytes| bytes.len());
        if size > crate::presence::MAX_PRESENCE_BYTES {
            self.push_error(
                None,
                Some(stream),
                ErrorCode::TooLarge,
                format!(
                    "presence state is {size} bytes, the limit is {}",
                    crate::presence::MAX_PRESENCE_BYTES
                ),
            );
            return;
        }
        let client = match member {
            Some(member) => format!("{}/{member}", self.presence_id()),
            None => self.presence_id(),
        };
        if let Err(error) = self.hub.presence.set(&stream, &client, data).await {
            self.push_error(
                None,
                Some(stream),
                ErrorCode::Unavailable,
                format!("presence not sent: {error}"),
            );
        }
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The streams subscribed, with the last position sent on each (for SSE cursors).
    pub fn positions(&self) -> Vec<(StreamName, Position)> {
        self.subscriptions
            .keys()
            .filter_map(|stream| {
                self.cursor.position(stream.as_str()).map(|position| {
                    (
                        stream.clone(),
                        Position {
                            epoch: position.epoch,
                            seq: position.seq,
                        },
                    )
                })
            })
            .collect()
    }

    fn push(&mut self, message: &ServerMessage) {
        self.out.push(Outgoing::message(message));
    }

    fn push_error(
        &mut self,
        id: Option<String>,
        stream: Option<StreamName>,
        code: ErrorCode,
        message: impl Into<String>,
    ) {
        self.push(&ServerMessage::Error {
            id,
            stream: stream.map(|stream| stream.as_str().to_owned()),
            code,
            message: message.into(),
        });
    }

    /// Queues a close; nothing else is yielded after it.
    pub fn close(&mut self, code: CloseCode, reason: impl Into<String>) {
        self.out.push(Outgoing::Close {
            code,
            reason: reason.into(),
        });
    }

    /// Decodes and handles one client text message; a bad one is answered with an `error`
    /// (the connection stays open).
    pub async fn handle_text(&mut self, text: &[u8]) {
        match tidewire_shared::message::decode_or_refuse(text, &self.limits) {
            Ok(message) => self.handle(message).await,
            Err(refusal) => self.push(&refusal.to_message()),
        }
    }

    /// Handles one decoded client message.
    pub async fn handle(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::Subscribe(subscribe) => self.subscribe(subscribe).await,
            ClientMessage::Unsubscribe { stream } => self.unsubscribe(&stream, true),
            ClientMessage::Publish(publish) => self.publish(publish).await,
            ClientMessage::Ping { id } => self.push(&ServerMessage::Pong { id }),
            ClientMessage::Presence {
                stream,
                data,
                member,
            } => self.set_presence(stream, data, member).await,
            ClientMessage::Auth { token } => match self.hub.auth.verify(&token) {
                Ok(grant) => self.regrant(grant),
                Err(error) => {
                    self.push_error(None, None, ErrorCode::Unauthorized, error.to_string())
                }
            },
        }
    }

    /// The next message to write, or `None` once the session is closed. Cancel safe.
    pub async fn next(&mut self) -> Option<Outgoing> {
        loop {
            if self.closed {
                return None;
            }
            if let Some(outgoing) = self.ready_from_out() {
                return Some(outgoing);
            }
            if let Some(work) = self.pending.front().cloned() {
                if self.receiver.take_nudge() {
                    // Shutdown does not wait for a long replay to end.
                    self.on_received(Received::Nudged);
                    continue;
                }
                // Boxed: a replay's queries are a large future that would otherwise be part
                // of every connection's future, idle or not.
                Box::pin(self.do_work(work)).await;
                continue;
            }
            // Out of work: the burst is over. An idle session keeps no empty queues.
            self.latency.flush(&self.hub.metrics);
            self.out.release_if_empty();
            outbound::release_if_empty(&mut self.pending);
            // PostgreSQL's status and shutdown are looked at here, and a change of either
            // nudges the queue (`nudger.rs`): waiting on the status channel itself put every
            // connection's waiter in one shared list at each wait, and took it out again
            // (5% of the relay's samples at 1,000 subscribers x 200 events/s).
            match self.status.has_changed() {
                Err(_) => {
                    self.close(CloseCode::GoingAway, "relay shutting down");
                    continue;
                }
                Ok(true) => {
                    self.on_status();
                    continue;
                }
                Ok(false) => {}
            }
            match self.receiver.recv().await {
                Some(received) => self.on_received(received),
                None => self.close(CloseCode::InternalError, "connection unregistered"),
            }
        }
    }

    fn on_received(&mut self, received: Received) {
        match received {
            Received::Delivery(delivery) => self.on_delivery(delivery),
            Received::Lagged(streams) => self.on_lagged(&streams),
            // The status is looked at before the next wait.
            Received::Nudged if self.hub.token.is_cancelled() => {
                self.close(CloseCode::GoingAway, "relay shutting down");
            }
            Received::Nudged => {}
        }
    }

    /// Takes every message that is ready without waiting (to coalesce a burst into one write).
    pub fn ready(&mut self) -> Option<Outgoing> {
        if self.closed {
            return None;
        }
        if let Some(outgoing) = self.ready_from_out() {
            return Some(outgoing);
        }
        if !self.pending.is_empty() {
            return None;
        }
        let received = self.receiver.try_recv()?;
        self.on_received(received);
        self.ready_from_out()
    }

    fn ready_from_out(&mut self) -> Option<Outgoing> {
        let outgoing = self.out.pop()?;
        match &outgoing {
            Outgoing::Close { .. } => self.closed = true,
            Outgoing::Frame {
                committed_at: Some(micros),
                ..
            } => {
                self.latency.observe(&self.hub.metrics, *micros);
            }
            Outgoing::Frame { .. } => {}
        }
        Some(outgoing)
    }

    fn on_status(&mut self) {
        let status = self.status.borrow_and_update().clone();
        match status {
            PgStatus::Down { reason } if !self.was_down => {
                self.was_down = true;
                self.push(&ServerMessage::Advisory(
                    Advisory::new(AdvisoryKind::Disconnect).reason(format!(
                        "the relay lost PostgreSQL ({reason}); live events pause, nothing durable is lost"
                    )),
                ));
            }
            PgStatus::Up if self.was_down => {
                self.was_down = false;
                self.push(&ServerMessage::Advisory(
                    Advisory::new(AdvisoryKind::Reconnect)
                        .reason("the relay reconnected to PostgreSQL and is catching up"),
                ));
            }
            _ => {}
        }
    }

    fn on_delivery(&mut self, delivery: Arc<Delivery>) {
        // The subscription's own key: no per-delivery validation or allocation.
        let Some((stream, kind, raw_pending, viewed, gap_after)) = self
            .subscriptions
            .get_key_value(&*delivery.stream)
            .map(|(stream, subscription)| {
                (
                    stream.clone(),
                    subscription.kind,
                    subscription.raw_pending,
                    subscription.view.is_some(),
                    subscription.raw_gap_after,
                )
            })
        else {
            return;
        };
        if gap_after == 0 {
            self.deliver(stream, kind, raw_pending, viewed, delivery);
            return;
        }
        // One of the raw deliveries queued before a drop.
        if let Some(subscription) = self.subscriptions.get_mut(&stream) {
            subscription.raw_gap_after = gap_after - 1;
        }
        self.deliver(stream.clone(), kind, raw_pending, viewed, delivery);
        if gap_after == 1 {
            self.announce_raw_drop(&stream);
        }
    }

    /// [`on_delivery`](Self::on_delivery) once the subscription is found.
    fn deliver(
        &mut self,
        stream: StreamName,
        kind: StreamKind,
        raw_pending: Option<RawStart>,
        viewed: bool,
        delivery: Arc<Delivery>,
    ) {
        if viewed && delivery.kind != DeliveryKind::Advisory {
            self.on_view_delivery(&stream, &delivery);
            return;
        }
        let raw = kind == StreamKind::Raw;
        if let Some(start) = raw_pending {
            if delivery.kind != DeliveryKind::Event {
                self.forward(delivery, None);
                return;
            }
            if let Some(subscription) = self.subscriptions.get_mut(&stream) {
                subscription.raw_pending = None;
            }
            self.start_raw(&stream, start, &delivery);
        }
        match self.cursor.admit(&delivery) {
            Admit::Send => {
                if delivery.kind == DeliveryKind::Advisory && self.on_advisory(&stream, &delivery) {
                    return;
                }
                if delivery.kind == DeliveryKind::Advisory && raw {
                    // A raw gap advisory stands for its seq (the listener skipped it): the
                    // next notification continues from there without a second advisory.
                    self.cursor.advance(&delivery);
                }
                let position = (delivery.kind == DeliveryKind::Event).then(|| {
                    (
                        stream,
                        Position {
                            epoch: delivery.epoch,
                            seq: delivery.seq,
                        },
                    )
                });
                self.forward(delivery, position);
            }
            Admit::Duplicate | Admit::Untracked => {}
            Admit::Gap { last_sent, got } => {
                match self.subscriptions.get(&stream).map(|s| s.kind) {
                    Some(StreamKind::Raw) => {
                        self.push(&ServerMessage::Advisory(
                            Advisory::new(AdvisoryKind::Gap)
                                .stream(stream.clone())
                                .epoch(last_sent.epoch)
                                .range(last_sent.seq + 1, got - 1),
                        ));
                        self.cursor.start(
                            Arc::clone(&delivery.stream),
                            bus::Position::new(delivery.epoch, got - 1),
                        );
                        self.deliver(stream, kind, None, viewed, delivery);
                    }
                    _ => {
                        tracing::debug!(
                            connection = %self.receiver.id(),
                            %stream,
                            last_sent = last_sent.seq,
                            got,
                            "delivery skips seqs; replaying the gap"
                        );
                        self.schedule_replay(&stream, last_sent.epoch, last_sent.seq, Some(got))
                    }
                }
            }
            Admit::EpochChanged { .. } => {
                self.schedule_resync(&stream, "the stream's epoch changed")
            }
        }
    }

    /// An event or message for a filtered subscription: judged for its view. Events the view
    /// does not get still move the cursor (the view is complete up to them); `prev` on the
    /// ones it gets names the last position the client was told.
    fn on_view_delivery(&mut self, stream: &StreamName, delivery: &Arc<Delivery>) {
        if delivery.kind == DeliveryKind::Message {
            let wanted = self
                .subscriptions
                .get(stream)
                .and_then(|s| s.view.as_ref())
                .is_some_and(|view| view::wants_message(&view.filter, delivery.change.as_deref()));
            if wanted {
                self.forward(Arc::clone(delivery), None);
            }
            return;
        }
        let Some(covered) = self.cursor.position(stream.as_str()) else {
            return;
        };
        if delivery.epoch != covered.epoch {
            self.schedule_resync(stream, "the stream's epoch changed");
            return;
        }
        // Covered already, or a replay in progress will read it in order.
        if delivery.seq <= covered.seq || self.pending.iter().any(|work| work.stream() == stream) {
            return;
        }
        let Some(change) = delivery.change.as_deref() else {
            // Never for a durable event; read it from the outbox rather than guess.
            self.schedule_replay(stream, covered.epoch, covered.seq, Some(delivery.seq));
            return;
        };
        self.cursor.advance(delivery);
        let Some(view) = self
            .subscriptions
            .get_mut(stream)
            .and_then(|s| s.view.as_mut())
        else {
            return;
        };
        let at = view::At {
            stream,
            epoch: delivery.epoch,
            seq: delivery.seq,
        };
        if let Some(json) = view::event_frame(&view.filter, &at, &delivery.json, change, view.sent)
        {
            view.sent = delivery.seq;
            self.out.push(Outgoing::event(
                Json::Own(json),
                stream,
                delivery.epoch,
                delivery.seq,
                delivery.committed_at_micros,
            ));
        }
    }

    /// Handles an advisory from the listener; true if it was consumed (not forwarded).
    fn on_advisory(&mut self, stream: &StreamName, delivery: &Delivery) -> bool {
        let limits = DecodeLimits::default();
        let Ok(ServerMessage::Advisory(advisory)) =
            tidewire_shared::message::decode_server(&delivery.json, &limits)
        else {
            return false;
        };
        if advisory.kind == AdvisoryKind::Resync {
            let reason = advisory.reason.unwrap_or_else(|| "resync".into());
            self.schedule_resync(stream, &reason);
            return true;
        }
        false
    }

    fn forward(&mut self, delivery: Arc<Delivery>, position: Option<(StreamName, Position)>) {
        let committed_at = delivery.committed_at_micros;
        self.out.push(Outgoing::Frame {
            json: Json::Delivery(delivery),
            position,
            committed_at,
        });
    }

    fn start_raw(&mut self, stream: &StreamName, start: RawStart, delivery: &Delivery) {
        let previous = delivery.seq.saturating_sub(1);
        let missed = match start {
            RawStart::Since(since) if since.epoch != delivery.epoch => Some((
                1,
                previous,
                "the relay restarted since your position; raw notifications sent meanwhile are gone",
            )),
            RawStart::Since(since) if since.seq < previous => {
                Some((since.seq + 1, previous, "raw notifications sent while you were away are gone"))
            }
            RawStart::AfterLag => Some((0, 0, "")),
            _ => None,
        };
        if let Some((from, to, reason)) = missed {
            if from > 0 && from <= to {
                self.push(&ServerMessage::Advisory(
                    Advisory::new(AdvisoryKind::Gap)
                        .stream(stream.clone())
                        .epoch(delivery.epoch)
                        .range(from, to)
                        .reason(reason),
                ));
            }
        }
        self.cursor.start(
            Arc::clone(&delivery.stream),
            bus::Position::new(delivery.epoch, previous),
        );
    }

    fn on_lagged(&mut self, lags: &[Lagged]) {
        for lag in lags {
            let Ok(stream) = StreamName::new(&lag.stream) else {
                continue;
            };
            let Some(subscription) = self.subscriptions.get_mut(&stream) else {
                continue;
            };
            let kind = subscription.kind;
            let position = self.cursor.position(&lag.stream);
            let epoch = position.map_or(self.hub.boot_epoch, |position| position.epoch);
            tracing::debug!(
                connection = %self.receiver.id(),
                %stream,
                seq = position.map(|position| position.seq),
                queued = lag.queued,
                "queue overflowed; resuming from the position"
            );
            match kind {
                StreamKind::Durable => {
                    // Not started yet: the subscribe's own flush reads from its baseline.
                    let Some(position) = position else {
                        continue;
                    };
                    self.push_lagged(&stream, epoch);
                    self.schedule_replay(&stream, position.epoch, position.seq, None);
                }
                StreamKind::Raw => {
                    self.push_lagged(&stream, epoch);
                    if lag.queued == 0 {
                        self.announce_raw_drop(&stream);
                    } else if let Some(subscription) = self.subscriptions.get_mut(&stream) {
                        // Those come first; the hole starts after the last of them.
                        subscription.raw_gap_after = lag.queued;
                    }
                }
            }
        }
    }

    fn push_lagged(&mut self, stream: &StreamName, epoch: u64) {
        self.out.push(Outgoing::message(&ServerMessage::Advisory(
            Advisory::new(AdvisoryKind::Lagged)
                .stream(stream.clone())
                .epoch(epoch)
                .reason("your queue overflowed; resuming"),
        )));
    }

    /// A raw channel dropped deliveries after everything it has sent (or, before its first
    /// delivery, after the position it started from): sends a `gap` from there, open-ended (the
    /// next delivery closes it), and starts the cursor again at that next delivery.
    fn announce_raw_drop(&mut self, stream: &StreamName) {
        let Some(subscription) = self.subscriptions.get_mut(stream) else {
            return;
        };
        let from = match (
            self.cursor.position(stream.as_str()),
            subscription.raw_pending,
        ) {
            (Some(position), None) => Some((position.epoch, position.seq + 1)),
            (_, Some(RawStart::Fresh { head })) => Some((self.hub.boot_epoch, head + 1)),
            (_, Some(RawStart::Since(since))) => Some((since.epoch, since.seq + 1)),
            // A gap from before is still open: it covers this drop too.
            (_, Some(RawStart::AfterLag)) | (None, None) => None,
        };
        subscription.raw_pending = Some(RawStart::AfterLag);
        let Some((epoch, from)) = from else {
            return;
        };
        let gap = Advisory::new(AdvisoryKind::Gap)
            .stream(stream.clone())
            .epoch(epoch)
            .reason("your queue overflowed; raw notifications were dropped");
        self.push(&ServerMessage::Advisory(Advisory {
            from: Some(from),
            ..gap
        }));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.latency.flush(&self.hub.metrics);
        let presence_id = self.presence_id();
        self.hub
            .presence
            .leave(&presence_id, None, &self.hub.tracker);
        if let Some(emptied) = self.hub.bus.registry().unregister(self.receiver.id()) {
            for stream in emptied {
                if let Ok(stream) = StreamName::new(&stream) {
                    self.hub.listener.release(&stream);
                }
            }
        }
    }
}
