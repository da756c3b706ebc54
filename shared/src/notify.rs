//! The NOTIFY payload codec: what `tidewire.publish` (and the relay) put in `pg_notify`.
//!
//! NOTIFY is a doorbell, never the only copy of a durable event. PostgreSQL rejects payloads of
//! 8000 bytes or more, so an event whose inline form would not fit travels as a pointer
//! `(stream, epoch, seq)` and the relay reads the row from the outbox.
//!
//! | `t` | meaning | other fields |
//! |---|---|---|
//! | `ev` | a durable event, inline | `stream epoch seq key op data ts`, `prior` when the key had a value |
//! | `ptr` | a durable event too large to inline | `stream epoch seq` |
//! | `msg` | an ephemeral message (never stored) | `stream key data ts`, optional `origin` |
//! | `drop` | the stream was dropped or expired | `stream epoch` |
//! | `presence` | a relay's presence change for a client | `stream relay client data ttl_ms version` |

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DecodeError;
use crate::event::{Event, Op};
use crate::limits::{parse_tagged, DecodeLimits};
use crate::stored::StoredEvent;
use crate::stream::StreamName;

/// PostgreSQL's NOTIFY payload limit: a payload must be shorter than this many bytes.
pub const NOTIFY_LIMIT: usize = 8000;

/// One decoded NOTIFY payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum NotifyPayload {
    /// A durable event carried inline.
    #[serde(rename = "ev")]
    Event(StoredEvent),
    /// A durable event too large to inline: read it from the outbox.
    #[serde(rename = "ptr")]
    Pointer {
        /// The stream.
        stream: StreamName,
        /// The stream's epoch.
        epoch: u64,
        /// The event's seq.
        seq: u64,
    },
    /// An ephemeral message for current subscribers.
    #[serde(rename = "msg")]
    Message {
        /// The stream.
        stream: StreamName,
        /// The message key (the sender chooses it).
        key: String,
        /// The payload.
        #[serde(default)]
        data: Value,
        /// Send time in microseconds since the Unix epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<i64>,
        /// The relay that sent it, if a relay did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    /// The stream was dropped or expired; its epoch ended.
    #[serde(rename = "drop")]
    Dropped {
        /// The stream.
        stream: StreamName,
        /// The epoch that ended.
        epoch: u64,
    },
    /// A presence change, shared between relays.
    #[serde(rename = "presence")]
    Presence {
        /// The stream.
        stream: StreamName,
        /// The relay holding the client's connection.
        relay: String,
        /// The client's presence id.
        client: String,
        /// The client's state; `null` means it left.
        #[serde(default)]
        data: Value,
        /// How long the entry lives without a refresh, in milliseconds.
        ttl_ms: u64,
        /// Last-writer-wins version chosen by the sending relay (monotonic per relay).
        #[serde(default)]
        version: u64,
    },
}

impl NotifyPayload {
    /// The stream the payload concerns.
    pub fn stream(&self) -> &StreamName {
        match self {
            NotifyPayload::Event(stored) => &stored.event.stream,
            NotifyPayload::Pointer { stream, .. }
            | NotifyPayload::Message { stream, .. }
            | NotifyPayload::Dropped { stream, .. }
            | NotifyPayload::Presence { stream, .. } => stream,
        }
    }

    /// Serialises to JSON text.
    pub fn encode(&self) -> String {
        // Serialising these plain data types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Encodes a durable event for NOTIFY: inline if it fits under [`NOTIFY_LIMIT`], else a
/// pointer. The result is always shorter than the limit.
///
/// # Examples
///
/// ```
/// use tidewire_shared::notify::{encode_event, NOTIFY_LIMIT};
/// use tidewire_shared::{Event, Op, StreamName};
/// let mut event = Event {
///     stream: StreamName::new("s")?, epoch: 1, seq: 9, key: "k".into(),
///     op: Op::Upsert, data: serde_json::json!("x".repeat(10_000)), prev: None, ts: None,
/// };
/// let payload = encode_event(&event);
/// assert!(payload.len() < NOTIFY_LIMIT);
/// assert!(payload.contains(r#""t":"ptr""#));
/// # Ok::<(), tidewire_shared::NameError>(())
/// ```
pub fn encode_event(event: &Event) -> String {
    let inline = if event.op == Op::Message {
        NotifyPayload::Message {
            stream: event.stream.clone(),
            key: event.key.clone(),
            data: event.data.clone(),
            ts: event.ts,
            origin: None,
        }
    } else {
        NotifyPayload::Event(StoredEvent::new(event.clone()))
    }
    .encode();
    if inline.len() < NOTIFY_LIMIT {
        return inline;
    }
    NotifyPayload::Pointer {
        stream: event.stream.clone(),
        epoch: event.epoch,
        seq: event.seq,
    }
    .encode()
}

/// Every NOTIFY payload tag `t`.
pub const NOTIFY_TAGS: &[&str] = &["ev", "ptr", "msg", "drop", "presence"];

/// Decodes a NOTIFY payload from untrusted text.
///
/// # Errors
///
/// A [`DecodeError`] (too large, too deep, malformed, unknown `t`); never panics.
pub fn decode(input: &str) -> Result<NotifyPayload, DecodeError> {
    let limits = DecodeLimits {
        max_bytes: NOTIFY_LIMIT,
        max_depth: DecodeLimits::DEFAULT_MAX_DEPTH,
    };
    let payload: NotifyPayload = parse_tagged(input.as_bytes(), &limits, "t", NOTIFY_TAGS)?;
    if let NotifyPayload::Event(StoredEvent { event, .. }) = &payload {
        if event.op == Op::Message || event.seq == 0 {
            return Err(DecodeError::Invalid {
                field: "seq",
                reason: "an inline event must be durable with seq >= 1".into(),
            });
        }
        crate::event::validate_key(&event.key)?;
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(size: usize) -> Event {
        Event {
            stream: StreamName::new("s").expect("valid"),
            epoch: 1,
            seq: 3,
            key: "k".into(),
            op: Op::Upsert,
            data: json!("x".repeat(size)),
            prev: None,
            ts: Some(1),
        }
    }

    #[test]
    fn inline_up_to_the_limit_then_pointer() {
        let overhead = encode_event(&event(0)).len();
        let fits = event(NOTIFY_LIMIT - 1 - overhead);
        let encoded = encode_event(&fits);
        assert_eq!(encoded.len(), NOTIFY_LIMIT - 1);
        assert_eq!(
            decode(&encoded),
            Ok(NotifyPayload::Event(StoredEvent::new(fits)))
        );
        let too_big = event(NOTIFY_LIMIT - overhead);
        assert!(matches!(
            decode(&encode_event(&too_big)),
            Ok(NotifyPayload::Pointer { seq: 3, .. })
        ));
    }

    #[test]
    fn the_sql_format_decodes() {
        let text = r#"{"t":"ev","stream":"todos","epoch":5,"seq":1,"key":"a","op":"patch","data":{"x":1},"ts":1700000000000000}"#;
        assert!(matches!(decode(text), Ok(NotifyPayload::Event(e)) if e.event.op == Op::Patch));
        let text = r#"{"t":"ptr","stream":"todos","epoch":5,"seq":2}"#;
        assert!(matches!(
            decode(text),
            Ok(NotifyPayload::Pointer { seq: 2, .. })
        ));
        assert!(matches!(
            decode(r#"{"t":"boom"}"#),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(decode("not json").is_err());
        assert!(
            decode(r#"{"t":"ev","stream":"s","epoch":1,"seq":0,"key":"a","op":"upsert"}"#).is_err()
        );
    }

    #[test]
    fn prior_tells_no_record_from_a_null_value() {
        let prior = |text: &str| match decode(text) {
            Ok(NotifyPayload::Event(stored)) => stored.prior,
            other => panic!("not an event: {other:?}"),
        };
        let head = r#"{"t":"ev","stream":"s","epoch":1,"seq":2,"key":"k","op":"upsert","data":{}"#;
        assert_eq!(prior(&format!("{head}}}")), None);
        assert_eq!(
            prior(&format!(r#"{head},"prior":null}}"#)),
            Some(serde_json::Value::Null)
        );
        assert_eq!(
            prior(&format!(r#"{head},"prior":{{"owner":"u1"}}}}"#)),
            Some(json!({"owner": "u1"}))
        );
    }
}
