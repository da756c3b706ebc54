//! Messages a client sends to the relay: subscribe, unsubscribe, publish, presence, auth, ping.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DecodeError;
use crate::event::{contains_nul, validate_key, Op, Position};
use crate::filter::{Filter, FilterError};
use crate::limits::{parse_tagged, DecodeLimits};
use crate::stream::{StreamKind, StreamName};

/// A message from a client to the relay.
///
/// # Examples
///
/// ```
/// use tidewire_shared::message::{decode_client, ClientMessage};
/// use tidewire_shared::DecodeLimits;
/// let text = r#"{"type":"subscribe","stream":"todos","since":{"epoch":7,"seq":41}}"#;
/// let message = decode_client(text.as_bytes(), &DecodeLimits::default())?;
/// let ClientMessage::Subscribe(subscribe) = message else { panic!("not a subscribe") };
/// assert_eq!(subscribe.since.map(|p| p.seq), Some(41));
/// assert!(subscribe.snapshot);
/// # Ok::<(), tidewire_shared::DecodeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Start receiving a stream (snapshot-then-live, or resume from `since`).
    Subscribe(Subscribe),
    /// Stop receiving a stream.
    Unsubscribe {
        /// The stream to leave.
        stream: StreamName,
    },
    /// Write to a durable stream (or send an ephemeral message); answered by `ack` or `error`.
    Publish(Publish),
    /// Set (or clear, with `data: null`) this connection's presence state on a stream.
    Presence {
        /// The stream whose presence set to join or update.
        stream: StreamName,
        /// The state to show to others (`null` leaves the presence set).
        #[serde(default)]
        data: Value,
        /// One of several members behind this connection (the tabs sharing a browser's
        /// connection), by a name of the write id rule: each has its own entry, with presence
        /// id `<connection's>/<member>`. Absent: the connection's own entry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member: Option<String>,
    },
    /// Replace the connection's token (for example before the old one expires).
    Auth {
        /// The new bearer token.
        token: String,
    },
    /// Application-level ping; answered by `pong` with the same id.
    Ping {
        /// Optional correlation id echoed in the `pong`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// The `subscribe` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    /// The stream to receive.
    pub stream: StreamName,
    /// Resume after this position instead of starting from a snapshot. If the epoch differs
    /// from the stream's or the seq is outside the retained window, the relay answers with a
    /// `resync` advisory followed by a snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Position>,
    /// Whether to send a snapshot when starting fresh (no `since`). Default: true.
    #[serde(default = "default_true")]
    pub snapshot: bool,
    /// Only the records whose value matches this filter (durable streams only; see
    /// [`Filter`]). Positions stay the stream's; events carry `prev`.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
}

impl Subscribe {
    /// The parsed filter, if the subscription has one.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Filter`] if it is not a filter or is over its bounds, or is given for a
    /// raw channel (which has no records).
    pub fn parsed_filter(&self) -> Result<Option<Filter>, DecodeError> {
        parse_where(&self.stream, self.filter.as_ref())
    }
}

/// The filter a subscription to `stream` with `where` runs with: the relay's rule, which a
/// client checks before sending.
///
/// # Errors
///
/// [`DecodeError::Filter`] if it is not a filter or is over its bounds, or is given for a
/// raw channel (which has no records).
pub fn parse_where(
    stream: &StreamName,
    filter: Option<&Value>,
) -> Result<Option<Filter>, DecodeError> {
    let Some(value) = filter else {
        return Ok(None);
    };
    if stream.kind() == StreamKind::Raw {
        return Err(DecodeError::Filter(FilterError {
            path: "where".into(),
            reason: "raw channels have no records to filter".into(),
        }));
    }
    Filter::parse_bounded(value)
        .map(Some)
        .map_err(DecodeError::Filter)
}

/// The `publish` message: one write, answered by `ack { id, seq }` or `error { id, code }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    /// Client operation id, echoed in the answer (1 to 64 bytes).
    pub id: String,
    /// The durable stream to write to.
    pub stream: StreamName,
    /// The record key.
    pub key: String,
    /// The operation.
    pub op: Op,
    /// The value, fields, or message payload (`null` for delete).
    #[serde(default)]
    pub data: Value,
    /// The write's id (1 to 64 bytes of `[A-Za-z0-9._:-]`), unique per write and kept across
    /// reconnects and reloads: the relay answers a write id it has seen on this stream within
    /// its window with the original seq instead of committing again (exactly once). Ignored
    /// for ephemeral messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_id: Option<String>,
}

fn default_true() -> bool {
    true
}

impl ClientMessage {
    /// Serialises the message to JSON text.
    pub fn encode(&self) -> String {
        // Serialising these plain data types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks the rules serde cannot express (key and id lengths, NUL in data, patch shape).
    ///
    /// # Errors
    ///
    /// The first rule that fails.
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self {
            ClientMessage::Publish(publish) => publish.validate(),
            ClientMessage::Subscribe(subscribe) => subscribe.parsed_filter().map(drop),
            ClientMessage::Ping { id: Some(id) } => check_op_id(id),
            ClientMessage::Presence { data, .. } if contains_nul(data) => Err(nul_in_data()),
            ClientMessage::Presence {
                member: Some(member),
                ..
            } => check_write_id(member).map_err(|reason| DecodeError::Invalid {
                field: "member",
                reason,
            }),
            ClientMessage::Auth { token } if token.is_empty() => Err(DecodeError::Invalid {
                field: "token",
                reason: "empty".into(),
            }),
            _ => Ok(()),
        }
    }
}

impl Publish {
    /// Checks the publish rules: op id, key, NUL-free data, patch data is an object.
    ///
    /// # Errors
    ///
    /// The first rule that fails.
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_op_id(&self.id)?;
        if let Some(write_id) = &self.write_id {
            check_write_id(write_id).map_err(|reason| DecodeError::Invalid {
                field: "write_id",
                reason,
            })?;
        }
        validate_key(&self.key)?;
        if contains_nul(&self.data) {
            return Err(nul_in_data());
        }
        if self.op == Op::Patch && !self.data.is_object() {
            return Err(DecodeError::Invalid {
                field: "data",
                reason: "patch data must be an object".into(),
            });
        }
        Ok(())
    }
}

fn nul_in_data() -> DecodeError {
    DecodeError::Invalid {
        field: "data",
        reason: "strings may not contain NUL (\\u0000)".into(),
    }
}

/// The write id rule, shared by the `write_id` of a publish and the HTTP `Idempotency-Key`
/// header: 1 to [`MAX_OP_ID_LEN`](super::MAX_OP_ID_LEN) bytes of ASCII letters, digits and
/// `.`, `_`, `:`, `-`.
///
/// # Errors
///
/// Why the id breaks the rule.
pub fn check_write_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > super::MAX_OP_ID_LEN {
        return Err(format!("must be 1 to {} bytes", super::MAX_OP_ID_LEN));
    }
    if !id
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'))
    {
        return Err("may hold only ASCII letters, digits and . _ : -".into());
    }
    Ok(())
}

pub(super) fn check_op_id(id: &str) -> Result<(), DecodeError> {
    if id.is_empty() || id.len() > super::MAX_OP_ID_LEN {
        return Err(DecodeError::Invalid {
            field: "id",
            reason: format!("must be 1 to {} bytes", super::MAX_OP_ID_LEN),
        });
    }
    Ok(())
}

/// Every client message `type`.
pub const CLIENT_TYPES: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "auth",
    "ping",
];

/// Decodes and validates one client message from untrusted bytes.
///
/// # Errors
///
/// A [`DecodeError`]; never panics, whatever the input.
pub fn decode_client(input: &[u8], limits: &DecodeLimits) -> Result<ClientMessage, DecodeError> {
    let message: ClientMessage = parse_tagged(input, limits, "type", CLIENT_TYPES)?;
    message.validate()?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<ClientMessage, DecodeError> {
        decode_client(text.as_bytes(), &DecodeLimits::default())
    }

    #[test]
    fn unknown_type_is_named() {
        assert_eq!(
            decode(r#"{"type":"explode"}"#),
            Err(DecodeError::UnknownType("explode".into()))
        );
    }

    #[test]
    fn bad_fields_are_rejected() {
        assert!(matches!(
            decode(r#"{"type":"subscribe","stream":"a b"}"#),
            Err(DecodeError::Malformed(_))
        ));
        assert!(
            decode(r#"{"type":"publish","id":"1","stream":"s","key":"","op":"upsert"}"#).is_err()
        );
        assert!(decode(
            r#"{"type":"publish","id":"1","stream":"s","key":"k","op":"patch","data":[1]}"#
        )
        .is_err());
        assert!(decode(
            r#"{"type":"publish","id":"1","stream":"s","key":"k","op":"upsert","data":"\u0000"}"#
        )
        .is_err());
        assert!(
            decode(r#"{"type":"subscribe","stream":"s","since":{"epoch":-1,"seq":0}}"#).is_err()
        );
        assert!(decode("[]").is_err());
        assert!(decode("").is_err());
    }

    #[test]
    fn subscribe_defaults_to_snapshot() {
        let message = decode(r#"{"type":"subscribe","stream":"s"}"#).expect("valid");
        assert_eq!(
            message,
            ClientMessage::Subscribe(Subscribe {
                stream: StreamName::new("s").expect("valid"),
                since: None,
                filter: None,
                snapshot: true,
            })
        );
    }
}
