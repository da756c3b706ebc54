//! The event model: one committed change (or ephemeral message) on a stream.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::KeyError;
use crate::stream::StreamName;

/// Longest record key in bytes (UTF-8).
pub const MAX_KEY_LEN: usize = 512;

/// What an event does to the record at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Replace the record's value with `data` (creating it if missing).
    Upsert,
    /// Remove the record; `data` is ignored (`null` on the wire).
    Delete,
    /// Merge the fields of the object `data` into the record, each field last-writer-wins.
    Patch,
    /// An ephemeral message: fanned out to current subscribers, never stored.
    Message,
}

impl Op {
    /// The lowercase wire name (`"upsert"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
            Op::Patch => "patch",
            Op::Message => "message",
        }
    }

    /// Parses the lowercase wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "upsert" => Op::Upsert,
            "delete" => Op::Delete,
            "patch" => Op::Patch,
            "message" => Op::Message,
            _ => return None,
        })
    }
}

/// A position in a stream: the epoch (life of the stream) and the last sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The stream's epoch. A different epoch means the history the position refers to is gone.
    pub epoch: u64,
    /// The last sequence number applied (0 = nothing yet).
    pub seq: u64,
}

/// One event of a stream.
///
/// Durable events have `seq >= 1`, gap-free and in commit order per stream. Ephemeral
/// messages (`op == Message`) have `seq == 0` and are never stored.
///
/// # Examples
///
/// ```
/// use tidewire_shared::{Event, Op, StreamName};
/// let event = Event {
///     stream: StreamName::new("todos")?,
///     epoch: 7,
///     seq: 1,
///     key: "a".into(),
///     op: Op::Upsert,
///     data: serde_json::json!({"title": "milk"}),
///     prev: None,
///     ts: None,
/// };
/// assert!(event.is_durable());
/// # Ok::<(), tidewire_shared::NameError>(())
/// ```
///
/// The data is a `serde_json::Value` by default (the relay); the clients keep it as its text
/// ([`Json`](crate::Json)), which their collections store as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de> + Default"))]
pub struct Event<D = Value> {
    /// The stream the event belongs to.
    pub stream: StreamName,
    /// The stream's epoch when the event committed.
    pub epoch: u64,
    /// Sequence number within the stream's epoch (0 for ephemeral messages).
    pub seq: u64,
    /// The record key (1 to [`MAX_KEY_LEN`] bytes).
    pub key: String,
    /// What the event does.
    pub op: Op,
    /// The value (upsert), fields (patch), payload (message) or `null` (delete).
    #[serde(default)]
    pub data: D,
    /// On a filtered subscription only: the seq of the previous event sent on it, or the
    /// position it started from. A client that has applied exactly up to `prev` has missed
    /// nothing; seqs between `prev` and `seq` did not concern its view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<u64>,
    /// Commit time in microseconds since the Unix epoch, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
}

impl<D> Event<D> {
    /// True for events that are stored and sequenced (everything but [`Op::Message`]).
    pub fn is_durable(&self) -> bool {
        self.op != Op::Message
    }

    /// The event's position.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// The same event with its data converted (for example to its [`Json`](crate::Json)
    /// text, as the clients' collections take it).
    pub fn map_data<E>(self, convert: impl FnOnce(D) -> E) -> Event<E> {
        Event {
            stream: self.stream,
            epoch: self.epoch,
            seq: self.seq,
            key: self.key,
            op: self.op,
            data: convert(self.data),
            prev: self.prev,
            ts: self.ts,
        }
    }
}

/// Checks a record key: 1 to [`MAX_KEY_LEN`] bytes of UTF-8 with no NUL.
///
/// # Errors
///
/// A [`KeyError`] naming the failed rule.
///
/// # Examples
///
/// ```
/// use tidewire_shared::event::validate_key;
/// assert!(validate_key("todo:1").is_ok());
/// assert!(validate_key("").is_err());
/// ```
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(key.len()));
    }
    if key.contains('\0') {
        return Err(KeyError::Nul);
    }
    Ok(())
}

/// True if `value` holds a string (or object key) with a NUL character, which PostgreSQL's
/// `jsonb` cannot store. Publishers check this before writing.
pub fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map
            .iter()
            .any(|(name, item)| name.contains('\0') || contains_nul(item)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn op_names_round_trip() {
        for op in [Op::Upsert, Op::Delete, Op::Patch, Op::Message] {
            assert_eq!(Op::parse(op.as_str()), Some(op));
            let json = serde_json::to_string(&op).expect("serializes");
            assert_eq!(json, format!("\"{}\"", op.as_str()));
        }
        assert_eq!(Op::parse("UPSERT"), None);
    }

    #[test]
    fn key_rule() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert_eq!(validate_key(&"k".repeat(513)), Err(KeyError::TooLong(513)));
        assert_eq!(validate_key("a\0"), Err(KeyError::Nul));
        assert!(validate_key(&"é".repeat(256)).is_ok());
    }

    #[test]
    fn finds_nul_anywhere() {
        assert!(contains_nul(&json!({"a": ["x", "y\u{0}"]})));
        assert!(contains_nul(&json!({"a\u{0}": 1})));
        assert!(!contains_nul(&json!({"a": [1, "b", null]})));
    }
}
