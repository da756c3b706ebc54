//! What the PostgreSQL side hands up and the bus fans out: one server-to-client message for
//! one stream, encoded once, with its position. Plain data at the bottom of the relay, so the
//! listener can produce it without knowing the bus (see `pg::listener::Fanout`).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tidewire_shared::stored::StoredEvent;
use tidewire_shared::{Op, ServerMessage};

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

/// A record change, kept beside the encoded message of its event: what a filtered
/// subscription is judged on (`tidewire_shared::view::judge`) without parsing the message
/// again. Also carried by ephemeral messages (op `message`, no prior), whose `data` a filter
/// judges.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The record key.
    pub key: String,
    /// What the event does.
    pub op: Op,
    /// The event's data (upsert value, patch fields, message payload; null for a delete).
    pub data: Value,
    /// The key's value before the event; `None` when it had no record.
    pub prior: Option<Value>,
    /// Commit time in microseconds since the Unix epoch, when known.
    pub ts: Option<i64>,
}

/// One server-to-client message for one stream, shared by every subscriber as `Arc<Delivery>`.
#[derive(Debug, Clone, PartialEq)]
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
    /// The record change of a durable event or message, for filtered subscriptions.
    pub change: Option<Arc<Change>>,
}

impl Delivery {
    /// A copy whose JSON is its own, not shared: for a delivery thread (`bus::shard`), so
    /// that the references its connections take and drop count on a cache line of its own.
    pub fn own_copy(&self) -> Self {
        Self {
            json: Bytes::copy_from_slice(&self.json),
            ..self.clone()
        }
    }

    /// An event at `seq` of `epoch`.
    pub fn event(stream: Arc<str>, epoch: u64, seq: u64, json: Bytes) -> Self {
        Self {
            stream,
            epoch,
            seq,
            kind: DeliveryKind::Event,
            json,
            committed_at_micros: None,
            change: None,
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
            change: None,
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
            change: None,
        }
    }

    /// Sets the commit time.
    pub fn with_committed_at(mut self, micros: i64) -> Self {
        self.committed_at_micros = Some(micros);
        self
    }

    /// A durable event read from NOTIFY or the outbox: encoded once for every subscriber,
    /// with its record change kept for filtered ones.
    pub fn stored(stored: StoredEvent) -> Self {
        let StoredEvent { event, prior } = stored;
        let stream = Arc::clone(event.stream.as_arc());
        let (epoch, seq, ts) = (event.epoch, event.seq, event.ts);
        let json = Bytes::from(ServerMessage::encode_event(&event));
        let change = Change {
            key: event.key,
            op: event.op,
            data: event.data,
            prior,
            ts,
        };
        let mut delivery = Self::event(stream, epoch, seq, json).with_change(change);
        if let Some(ts) = ts {
            delivery = delivery.with_committed_at(ts);
        }
        delivery
    }

    /// Attaches the record change.
    pub fn with_change(mut self, change: Change) -> Self {
        self.change = Some(Arc::new(change));
        self
    }

    /// The delivery's `(epoch, seq)`.
    pub fn position(&self) -> Position {
        Position::new(self.epoch, self.seq)
    }
}
