//! Messages the relay sends to a client: snapshot, event, advisory, ack, error, presence, pong.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codes::ErrorCode;
use crate::event::Event;
use crate::snapshot::Record;
use crate::stream::StreamName;

/// A message from the relay to a client.
///
/// # Examples
///
/// ```
/// use tidewire_shared::message::{decode_server, ServerMessage};
/// use tidewire_shared::{DecodeLimits, Op};
/// let text = r#"{"type":"event","stream":"todos","epoch":7,"seq":42,"key":"a","op":"upsert","data":{"done":true}}"#;
/// let ServerMessage::Event(event) = decode_server(text.as_bytes(), &DecodeLimits::default())? else {
///     panic!("not an event")
/// };
/// assert_eq!((event.seq, event.op), (42, Op::Upsert));
/// # Ok::<(), tidewire_shared::DecodeError>(())
/// ```
///
/// Record and event data is a `serde_json::Value` by default (the relay, and
/// [`decode_server`](super::decode_server)); the clients decode it as its text
/// ([`Json`](crate::Json), [`decode_server_json`](super::decode_server_json)).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<D = Value> {
    /// One chunk of a snapshot. Chunks are numbered from 0; the one with `last: true` ends it.
    Snapshot {
        /// The stream.
        stream: StreamName,
        /// The stream's epoch.
        epoch: u64,
        /// The seq the snapshot is consistent at.
        seq: u64,
        /// Chunk number, from 0.
        chunk: u32,
        /// True on the final chunk.
        last: bool,
        /// The records in this chunk, ordered by seq.
        records: Vec<Record<D>>,
    },
    /// One event (durable, or ephemeral with `op: "message"` and `seq: 0`).
    Event(Event<D>),
    /// The subscription is live: everything up to `seq` has been sent.
    Subscribed {
        /// The stream.
        stream: StreamName,
        /// The stream's epoch.
        epoch: u64,
        /// The last seq sent before going live.
        seq: u64,
        /// True if the subscription resumed from the client's `since`; false if it started
        /// from a snapshot (or from the head, when no snapshot was asked for).
        resumed: bool,
    },
    /// The stream is no longer sent on this connection (answer to `unsubscribe`, or the
    /// stream was dropped or expired).
    Unsubscribed {
        /// The stream.
        stream: StreamName,
    },
    /// Supervisory information: see [`AdvisoryKind`].
    Advisory(Advisory),
    /// A publish committed.
    Ack {
        /// The client's operation id.
        id: String,
        /// The stream written.
        stream: StreamName,
        /// The committed seq (0 for ephemeral messages).
        seq: u64,
        /// The write id was seen before: `seq` is the original commit's, nothing was written
        /// again.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replayed: bool,
    },
    /// A request failed.
    Error {
        /// The client's operation id, when the error answers one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The stream concerned, when there is one, as the client named it: in a `bad_stream`
        /// answer this is the invalid name the client sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<String>,
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// Presence changes on a stream. `full: true` replaces the client's whole view.
    Presence {
        /// The stream.
        stream: StreamName,
        /// Present clients whose state is new or changed.
        #[serde(default)]
        present: Vec<PresenceEntry>,
        /// Clients that left.
        #[serde(default)]
        left: Vec<String>,
        /// True if `present` lists everyone (the first presence message of a subscription).
        #[serde(default)]
        full: bool,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// One client in a presence set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The presence id of the client (stable for a connection).
    pub client: String,
    /// The state the client published.
    pub data: Value,
}

/// Supervisory notifications: connection and subscription health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AdvisoryKind {
    /// Sent first on every connection: the relay id and connection id.
    Connect,
    /// The relay lost its PostgreSQL connection; live events pause (nothing durable is lost).
    Disconnect,
    /// The relay reconnected to PostgreSQL and is catching up.
    Reconnect,
    /// Events between `from` and `to` (inclusive) were lost on a raw channel and cannot be
    /// replayed; or, on a durable stream, the relay is replaying them.
    Gap,
    /// The client's position is unusable (other epoch, outside retention): a snapshot follows.
    Resync,
    /// The client fell behind and its queue overflowed; the relay resumes it from the outbox.
    Lagged,
    /// The relay is shutting down; reconnect and resume.
    Shutdown,
    /// The stream was dropped or a temp stream expired.
    Dropped,
}

impl AdvisoryKind {
    /// Every kind, in the order of the protocol's table.
    pub const ALL: [AdvisoryKind; 8] = [
        AdvisoryKind::Connect,
        AdvisoryKind::Disconnect,
        AdvisoryKind::Reconnect,
        AdvisoryKind::Gap,
        AdvisoryKind::Resync,
        AdvisoryKind::Lagged,
        AdvisoryKind::Shutdown,
        AdvisoryKind::Dropped,
    ];

    /// The wire name (`"connect"`, `"resync"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AdvisoryKind::Connect => "connect",
            AdvisoryKind::Disconnect => "disconnect",
            AdvisoryKind::Reconnect => "reconnect",
            AdvisoryKind::Gap => "gap",
            AdvisoryKind::Resync => "resync",
            AdvisoryKind::Lagged => "lagged",
            AdvisoryKind::Shutdown => "shutdown",
            AdvisoryKind::Dropped => "dropped",
        }
    }

    /// The kind with wire name `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// An advisory message's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    /// What happened.
    pub kind: AdvisoryKind,
    /// The stream concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamName>,
    /// The stream's epoch, if relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// First affected seq (gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Last affected seq (gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// Human-readable detail (`connect` carries `relay=<id> connection=<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Advisory {
    /// An advisory of `kind` with no other fields.
    pub fn new(kind: AdvisoryKind) -> Self {
        Self {
            kind,
            stream: None,
            epoch: None,
            from: None,
            to: None,
            reason: None,
        }
    }

    /// Sets the stream.
    #[must_use]
    pub fn stream(mut self, stream: StreamName) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Sets the epoch.
    #[must_use]
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Sets the affected range.
    #[must_use]
    pub fn range(mut self, from: u64, to: u64) -> Self {
        self.from = Some(from);
        self.to = Some(to);
        self
    }

    /// Sets the reason text.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

impl ServerMessage {
    /// Serialises the message to JSON text (one line, no newline characters: JSON escapes
    /// them inside strings, which also makes the text safe as SSE `data:`).
    pub fn encode(&self) -> String {
        // Serialising these plain data types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Encodes an `event` message from a borrowed event: the bytes of
    /// `ServerMessage::Event(event.clone()).encode()`, without the clone.
    pub fn encode_event(event: &Event) -> String {
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Borrowed<'a> {
            Event(&'a Event),
        }
        serde_json::to_string(&Borrowed::Event(event)).unwrap_or_default()
    }

    /// An `error` message.
    pub fn error(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            id,
            stream: None,
            code,
            message: message.into(),
        }
    }
}

/// Every server message `type`.
pub const SERVER_TYPES: &[&str] = &[
    "snapshot",
    "event",
    "subscribed",
    "unsubscribed",
    "advisory",
    "ack",
    "error",
    "presence",
    "pong",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use crate::limits::DecodeLimits;
    use crate::message::decode_server;
    use serde_json::json;

    #[test]
    fn a_borrowed_event_encodes_like_an_owned_one() {
        let event = Event {
            stream: StreamName::new("s").expect("valid"),
            epoch: 1,
            seq: 2,
            key: "k".into(),
            op: Op::Patch,
            data: json!({"a": 1}),
            prev: Some(1),
            ts: Some(5),
        };
        assert_eq!(
            ServerMessage::encode_event(&event),
            ServerMessage::Event(event).encode()
        );
    }

    #[test]
    fn encoded_text_has_no_newlines() {
        let message = ServerMessage::Event(Event {
            stream: StreamName::new("s").expect("valid"),
            epoch: 1,
            seq: 2,
            key: "k\n".into(),
            op: Op::Upsert,
            data: json!({"text": "line1\nline2\r\n\nid: 999"}),
            prev: None,
            ts: Some(5),
        });
        let text = message.encode();
        assert!(!text.contains('\n') && !text.contains('\r'));
        let back = decode_server(text.as_bytes(), &DecodeLimits::default()).expect("decodes");
        assert_eq!(back, message);
    }

    #[test]
    fn advisory_shape() {
        let advisory: ServerMessage = ServerMessage::Advisory(
            Advisory::new(AdvisoryKind::Gap)
                .stream(StreamName::new("raw:x").expect("valid"))
                .range(3, 9),
        );
        assert_eq!(
            serde_json::to_value(&advisory).expect("serializes"),
            json!({"type":"advisory","kind":"gap","stream":"raw:x","from":3,"to":9})
        );
    }
}
