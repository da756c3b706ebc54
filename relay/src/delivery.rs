//! What the PostgreSQL side hands up and the bus fans out: one server-to-client message for
//! one stream, encoded once, with its position. Plain data at the bottom of the relay, so the
//! listener can produce it without knowing the bus (see `pg::listener::Fanout`).

use std::sync::Arc;

use bytes::Bytes;

/// A point in a stream's history: its epoch and the last seq covered.
///
/// Seqs only compare within one epoch; a different epoch means the stream was dropped,
/// recreated or truncated and the client has to resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The stream's epoch.
    pub epoch: u64,
    /// The last seq covered (0 before the first event of the epoch).
    pub seq: u64,
}

impl Position {
    /// Builds a position from an epoch and a seq.
    pub fn new(epoch: u64, seq: u64) -> Self {
        Self { epoch, seq }
    }
}

/// What a [`Delivery`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryKind {
    /// A durable or raw-channel event with a stream seq; deduped by the bus (`LastSent::admit`).
    Event,
    /// An ephemeral message (seq 0), never stored and never deduped.
    Message,
    /// A supervisory notice (gap, resync, shutdown, ...), never deduped.
    Advisory,
}

/// One server-to-client message for one stream, shared by every subscriber as `Arc<Delivery>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The stream it belongs to.
    pub stream: Arc<str>,
    /// The stream's epoch when it was produced.
    pub epoch: u64,
    /// The stream seq for an [`DeliveryKind::Event`]; 0 for a message.
    pub seq: u64,
    /// What it is.
    pub kind: DeliveryKind,
    /// The complete JSON message sent to clients, encoded once and shared by every subscriber.
    pub json: Bytes,
    /// Commit time in microseconds since the Unix epoch, when known, for latency metrics.
    pub committed_at_micros: Option<i64>,
}

impl Delivery {
    /// An event at `seq` of `epoch`.
    pub fn event(stream: Arc<str>, epoch: u64, seq: u64, json: Bytes) -> Self {
        Self {
            stream,
            epoch,
            seq,
            kind: DeliveryKind::Event,
            json,
            committed_at_micros: None,
        }
    }

    /// An ephemeral message (epoch and seq 0).
    pub fn message(stream: Arc<str>, json: Bytes) -> Self {
        Self {
            stream,
            epoch: 0,
            seq: 0,
            kind: DeliveryKind::Message,
            json,
            committed_at_micros: None,
        }
    }

    /// An advisory about the stream, stamped with the position it refers to.
    pub fn advisory(stream: Arc<str>, epoch: u64, seq: u64, json: Bytes) -> Self {
        Self {
            stream,
            epoch,
            seq,
            kind: DeliveryKind::Advisory,
            json,
            committed_at_micros: None,
        }
    }

    /// Sets the commit time.
    pub fn with_committed_at(mut self, micros: i64) -> Self {
        self.committed_at_micros = Some(micros);
        self
    }

    /// The delivery's `(epoch, seq)`.
    pub fn position(&self) -> Position {
        Position::new(self.epoch, self.seq)
    }
}
