//! Decoding the relay's messages: the one decoder of both clients (and of the relay's own
//! checks), written by hand over a parsed `serde_json::Value`, for code size.
//!
//! Measured (2026-12-06, `scripts/build-client`, release, wasm-opt -Oz), the browser
//! package's `tidewire_bg.wasm`: decoding with serde's derived, internally tagged enums made it
//! 379,393 bytes (154,482 gzipped); with this decoder it is 294,443 (123,218 gzipped), 31,264
//! gzipped bytes (20%) less. (The browser's former decoder of its own, which read only the
//! fields it used, gave 118,594; one decoder for both clients costs those 4,624 bytes.) Every
//! message type is instantiated for serde's buffering deserializer; here the text is parsed
//! once into a `Value` (needed anyway for record data) and the fields are taken out, moving
//! the data rather than copying it.
//!
//! The rules match what the relay encodes: every required field present with its type, stream
//! names valid, unknown fields ignored. An error code this client does not know (from a newer
//! relay) decodes as [`ErrorCode::Unknown`], so the request it answers still fails.

use serde_json::{Map, Value};

use super::server::{Advisory, AdvisoryKind, PresenceEntry, ServerMessage};
use crate::codes::ErrorCode;
use crate::error::DecodeError;
use crate::event::{Event, Op};
use crate::limits::{check, DecodeLimits};
use crate::snapshot::Record;
use crate::stream::StreamName;

/// Decodes one server message from untrusted bytes (clients use this).
///
/// # Errors
///
/// A [`DecodeError`]: [`DecodeError::UnknownType`] for a `type` no message has,
/// [`DecodeError::Malformed`] for a missing or mistyped field, [`DecodeError::Name`] for an
/// invalid stream name, or a limit. Never panics, whatever the input.
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
pub fn decode_server(input: &[u8], limits: &DecodeLimits) -> Result<ServerMessage, DecodeError> {
    check(input, limits)?;
    let value: Value =
        serde_json::from_slice(input).map_err(|error| DecodeError::from_json(&error))?;
    let Value::Object(object) = value else {
        return Err(DecodeError::Malformed("a message is a JSON object".into()));
    };
    let mut fields = Fields { object, kind: "" };
    let kind = fields.string("type")?;
    fields.kind = match kind.as_str() {
        "snapshot" => "snapshot",
        "event" => "event",
        "subscribed" => "subscribed",
        "unsubscribed" => "unsubscribed",
        "advisory" => "advisory",
        "ack" => "ack",
        "error" => "error",
        "presence" => "presence",
        "pong" => "pong",
        _ => return Err(DecodeError::UnknownType(kind.chars().take(64).collect())),
    };
    fields.message()
}

/// The fields of one message, taken out one by one.
struct Fields {
    object: Map<String, Value>,
    /// The message's `type`, for error texts.
    kind: &'static str,
}

impl Fields {
    fn message(mut self) -> Result<ServerMessage, DecodeError> {
        Ok(match self.kind {
            "snapshot" => ServerMessage::Snapshot {
                stream: self.stream("stream")?,
                epoch: self.u64("epoch")?,
                seq: self.u64("seq")?,
                chunk: u32::try_from(self.u64("chunk")?).map_err(|_| self.bad("chunk"))?,
                last: self.bool("last")?,
                records: self.records()?,
            },
            "event" => ServerMessage::Event(Event {
                stream: self.stream("stream")?,
                epoch: self.u64("epoch")?,
                seq: self.u64("seq")?,
                key: self.string("key")?,
                op: Op::parse(&self.string("op")?).ok_or_else(|| self.bad("op"))?,
                data: self.take("data"),
                prev: self.optional("prev", Value::as_u64)?,
                ts: self.optional("ts", Value::as_i64)?,
            }),
            "subscribed" => ServerMessage::Subscribed {
                stream: self.stream("stream")?,
                epoch: self.u64("epoch")?,
                seq: self.u64("seq")?,
                resumed: self.bool("resumed")?,
            },
            "unsubscribed" => ServerMessage::Unsubscribed {
                stream: self.stream("stream")?,
            },
            "advisory" => ServerMessage::Advisory(Advisory {
                kind: AdvisoryKind::parse(&self.string("kind")?).ok_or_else(|| self.bad("kind"))?,
                stream: self.optional_stream("stream")?,
                epoch: self.optional("epoch", Value::as_u64)?,
                from: self.optional("from", Value::as_u64)?,
                to: self.optional("to", Value::as_u64)?,
                reason: self.optional_string("reason")?,
            }),
            "ack" => ServerMessage::Ack {
                id: self.string("id")?,
                stream: self.stream("stream")?,
                seq: self.u64("seq")?,
                replayed: self.optional("replayed", Value::as_bool)?.unwrap_or(false),
            },
            "error" => ServerMessage::Error {
                id: self.optional_string("id")?,
                stream: self.optional_string("stream")?,
                code: ErrorCode::parse(&self.string("code")?),
                message: self.string("message")?,
            },
            "presence" => ServerMessage::Presence {
                stream: self.stream("stream")?,
                present: self.presence_entries()?,
                left: self.strings("left")?,
                full: self.optional("full", Value::as_bool)?.unwrap_or(false),
            },
            _ => ServerMessage::Pong {
                id: self.optional_string("id")?,
            },
        })
    }

    fn bad(&self, field: &str) -> DecodeError {
        DecodeError::Malformed(format!(
            "missing or invalid field `{field}` in `{}`",
            self.kind
        ))
    }

    fn take(&mut self, field: &str) -> Value {
        self.object.remove(field).unwrap_or(Value::Null)
    }

    /// An optional field: absent or `null` is `None`, any other value must convert.
    fn optional<T>(
        &mut self,
        field: &str,
        convert: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, DecodeError> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => convert(value).map(Some).ok_or_else(|| self.bad(field)),
        }
    }

    fn u64(&mut self, field: &str) -> Result<u64, DecodeError> {
        self.optional(field, Value::as_u64)?
            .ok_or_else(|| self.bad(field))
    }

    fn bool(&mut self, field: &str) -> Result<bool, DecodeError> {
        self.optional(field, Value::as_bool)?
            .ok_or_else(|| self.bad(field))
    }

    fn optional_string(&mut self, field: &str) -> Result<Option<String>, DecodeError> {
        match self.take(field) {
            Value::Null => Ok(None),
            Value::String(text) => Ok(Some(text)),
            _ => Err(self.bad(field)),
        }
    }

    fn string(&mut self, field: &str) -> Result<String, DecodeError> {
        self.optional_string(field)?.ok_or_else(|| self.bad(field))
    }

    fn optional_stream(&mut self, field: &str) -> Result<Option<StreamName>, DecodeError> {
        self.optional_string(field)?
            .map(|name| StreamName::new(&name).map_err(DecodeError::Name))
            .transpose()
    }

    fn stream(&mut self, field: &str) -> Result<StreamName, DecodeError> {
        self.optional_stream(field)?.ok_or_else(|| self.bad(field))
    }

    /// A list field: absent or `null` is empty (`present`, `left`), unless `required`.
    fn array(&mut self, field: &str, required: bool) -> Result<Vec<Value>, DecodeError> {
        match self.take(field) {
            Value::Null if !required => Ok(Vec::new()),
            Value::Array(items) => Ok(items),
            _ => Err(self.bad(field)),
        }
    }

    fn records(&mut self) -> Result<Vec<Record>, DecodeError> {
        self.array("records", true)?
            .into_iter()
            .map(|item| {
                let mut record = self.nested(item, "records")?;
                Ok(Record {
                    key: record.string("key")?,
                    seq: record.u64("seq")?,
                    data: record.take("data"),
                })
            })
            .collect()
    }

    fn presence_entries(&mut self) -> Result<Vec<PresenceEntry>, DecodeError> {
        self.array("present", false)?
            .into_iter()
            .map(|item| {
                let mut entry = self.nested(item, "present")?;
                Ok(PresenceEntry {
                    client: entry.string("client")?,
                    data: entry.take("data"),
                })
            })
            .collect()
    }

    fn strings(&mut self, field: &str) -> Result<Vec<String>, DecodeError> {
        self.array(field, false)?
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                _ => Err(self.bad(field)),
            })
            .collect()
    }

    /// An object inside a list field, with the same error texts.
    fn nested(&self, item: Value, field: &str) -> Result<Fields, DecodeError> {
        match item {
            Value::Object(object) => Ok(Fields {
                object,
                kind: self.kind,
            }),
            _ => Err(self.bad(field)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<ServerMessage, DecodeError> {
        decode_server(text.as_bytes(), &DecodeLimits::default())
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for (bad, kind) in [
            ("", "malformed"),
            ("[]", "malformed"),
            ("{}", "malformed"),
            (r#"{"type":"bonus"}"#, "unknown_type"),
            (
                r#"{"type":"event","stream":"a b","epoch":1,"seq":1,"key":"k","op":"upsert"}"#,
                "name",
            ),
            (
                r#"{"type":"event","stream":"s","epoch":-1,"seq":1,"key":"k","op":"upsert"}"#,
                "malformed",
            ),
            (
                r#"{"type":"event","stream":"s","epoch":1,"seq":1,"key":"k","op":"merge"}"#,
                "malformed",
            ),
            (
                r#"{"type":"snapshot","stream":"s","epoch":1,"seq":1,"chunk":0,"last":true,"records":[1]}"#,
                "malformed",
            ),
            (
                r#"{"type":"snapshot","stream":"s","epoch":1,"seq":1,"chunk":0,"last":true}"#,
                "malformed",
            ),
            (
                r#"{"type":"presence","stream":"s","present":{}}"#,
                "malformed",
            ),
            (r#"{"type":"ack","id":7,"stream":"s","seq":1}"#, "malformed"),
            (&"[".repeat(100), "too_deep"),
        ] {
            let error = decode(bad).expect_err(bad);
            assert_eq!(error.kind(), kind, "{bad}: {error}");
        }
    }

    #[test]
    fn optional_fields_may_be_absent_or_null_and_unknown_fields_are_ignored() {
        let message = decode(
            r#"{"type":"advisory","kind":"resync","stream":null,"reason":"old","extra":[1]}"#,
        )
        .expect("decodes");
        let ServerMessage::Advisory(advisory) = message else {
            panic!("an advisory")
        };
        assert_eq!(
            (advisory.kind, advisory.stream, advisory.reason.as_deref()),
            (AdvisoryKind::Resync, None, Some("old"))
        );
        let presence = decode(r#"{"type":"presence","stream":"s"}"#).expect("decodes");
        assert_eq!(
            presence,
            ServerMessage::Presence {
                stream: StreamName::new("s").expect("valid"),
                present: Vec::new(),
                left: Vec::new(),
                full: false,
            }
        );
    }

    #[test]
    fn every_error_code_and_advisory_kind_round_trips() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), code);
        }
        assert_eq!(ErrorCode::parse("from_the_future"), ErrorCode::Unknown);
        for kind in AdvisoryKind::ALL {
            assert_eq!(AdvisoryKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).expect("serializes"),
                kind.as_str()
            );
        }
    }
}
