//! Client counters: connection churn, delivery and dedupe, publishes. Cheap relaxed atomics
//! shared by the background task and every handle; read them with
//! [`Client::stats`](super::Client::stats) (a load generator samples them).

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters. Each is only ever incremented.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connects: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) malformed_messages: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) duplicates_dropped: AtomicU64,
    pub(crate) out_of_order_dropped: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) subscribes_sent: AtomicU64,
    pub(crate) publishes_sent: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) publishes_lost: AtomicU64,
    pub(crate) publishes_resent: AtomicU64,
}

/// Increments `counter` by one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `amount` to `counter`.
pub(crate) fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

/// A point-in-time copy of a client's counters (all totals since the client was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Successful WebSocket handshakes, the first one included.
    pub connects: u64,
    /// Successful handshakes after the first one.
    pub reconnects: u64,
    /// Failed connection attempts (refused, handshake error, timeout).
    pub connect_failures: u64,
    /// Established connections that ended (lost, closed by the relay, keepalive timeout).
    pub disconnects: u64,
    /// Messages received from the relay.
    pub messages_received: u64,
    /// Messages from the relay that could not be decoded (skipped).
    pub malformed_messages: u64,
    /// Events delivered to subscriptions (durable, raw and ephemeral).
    pub events: u64,
    /// Events dropped because their seq was already applied (legal across reconnects and
    /// re-subscribes; never delivered twice to the application).
    pub duplicates_dropped: u64,
    /// Events dropped while the client was re-requesting a replay after a gap.
    pub out_of_order_dropped: u64,
    /// Gaps seen: detected by the client or announced by the relay.
    pub gaps: u64,
    /// `resync` advisories received.
    pub resyncs: u64,
    /// Complete snapshots received.
    pub snapshots: u64,
    /// `subscribe` messages sent (first subscribes, resumes and retries).
    pub subscribes_sent: u64,
    /// `publish` messages sent.
    pub publishes_sent: u64,
    /// Publishes acknowledged.
    pub acks: u64,
    /// Publishes answered with an `error`.
    pub publish_errors: u64,
    /// Publishes without a write id (ephemeral messages) in flight when a connection
    /// dropped (failed with [`ClientError::ConnectionLost`](super::ClientError::ConnectionLost)).
    pub publishes_lost: u64,
    /// Publishes with a write id in flight when a connection dropped, queued to be sent again
    /// on the next connection (the relay answers a resend of a committed write with its seq).
    pub publishes_resent: u64,
}

impl Counters {
    /// Reads every counter.
    pub(crate) fn snapshot(&self) -> ClientStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ClientStats {
            connects: read(&self.connects),
            reconnects: read(&self.reconnects),
            connect_failures: read(&self.connect_failures),
            disconnects: read(&self.disconnects),
            messages_received: read(&self.messages_received),
            malformed_messages: read(&self.malformed_messages),
            events: read(&self.events),
            duplicates_dropped: read(&self.duplicates_dropped),
            out_of_order_dropped: read(&self.out_of_order_dropped),
            gaps: read(&self.gaps),
            resyncs: read(&self.resyncs),
            snapshots: read(&self.snapshots),
            subscribes_sent: read(&self.subscribes_sent),
            publishes_sent: read(&self.publishes_sent),
            acks: read(&self.acks),
            publish_errors: read(&self.publish_errors),
            publishes_lost: read(&self.publishes_lost),
            publishes_resent: read(&self.publishes_resent),
        }
    }
}
