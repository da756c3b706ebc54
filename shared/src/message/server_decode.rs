//! Decoding the relay's messages: the one decoder of both clients (and of the relay's own
//! checks), written by hand over the message's fields, for code size.
//!
//! Measured (2026-12-06, `scripts/build-client`, release, wasm-opt -Oz), the browser
//! package's `tidewire_bg.wasm`: decoding with serde's derived, internally tagged enums made it
//! 379,393 bytes (154,482 gzipped); with this decoder it is 294,443 (123,218 gzipped), 31,264
//! gzipped bytes (20%) less. (The browser's former decoder of its own, which read only the
//! fields it used, gave 118,594; one decoder for both clients costs those 4,624 bytes.) Every
//! message type is instantiated for serde's buffering deserializer; here the text is parsed
//! once into its top-level fields, each kept as its text, and the fields are taken out one by
//! one.
//!
//! Record and event data is never built into a tree here: [`decode_server_json`] keeps it as
//! its text ([`Json`], what the clients' collections store), [`decode_server`] parses it into
//! a `Value` (the relay's checks).
//!
//! The rules match what the relay encodes: every required field present with its type, stream
//! names valid, unknown fields ignored. An error code this client does not know (from a newer
//! relay) decodes as [`ErrorCode::Unknown`], so the request it answers still fails.

use std::borrow::Cow;

use serde_json::Value;

use super::server::{Advisory, AdvisoryKind, PresenceEntry, ServerMessage};
use crate::codes::ErrorCode;
use crate::error::DecodeError;
use crate::event::{Event, Op};
use crate::json::scan::{self, ScanError};
use crate::json::Json;
use crate::limits::{check, DecodeLimits};
use crate::snapshot::{Record, Snapshot};
use crate::stream::StreamName;

/// Decodes one server message from untrusted bytes, with record and event data as `Value`
/// trees (the native client and the relay's checks; the browser client keeps the text, with
/// [`decode_server_json`]).
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
    decode(input, limits)
}

/// [`decode_server`], with record and event data kept as its text: what the clients' collections
/// store, without building a tree for every value.
///
/// # Errors
///
/// As [`decode_server`].
pub fn decode_server_json(
    input: &[u8],
    limits: &DecodeLimits,
) -> Result<ServerMessage<Json>, DecodeError> {
    decode(input, limits)
}

/// One page of a snapshot over HTTP (`GET /v1/streams/{s}/snapshot`, docs/PROTOCOL.md):
/// `{epoch, seq, next?, records: [{key, seq, data}]}`, with each record's data kept as its
/// text, and the `next` cursor (absent or `null` on the last page). The browser client's
/// stored snapshots have the same form without `next`. Read in one pass, like a snapshot
/// chunk (`scan::object_with_list`); nesting is bounded by the scanner's own limit.
///
/// # Errors
///
/// [`DecodeError::Malformed`] for a text that is not such a page.
pub fn decode_page(text: &str) -> Result<(Snapshot<Json>, Option<String>), DecodeError> {
    let (object, records) =
        scan::object_with_list(text, usize::MAX, "records").map_err(malformed)?;
    let fields = Fields {
        object,
        records,
        kind: "snapshot page",
    };
    let next = fields.optional_string("next")?;
    let snapshot = Snapshot {
        epoch: fields.u64("epoch")?,
        seq: fields.u64("seq")?,
        records: fields.records()?,
    };
    Ok((snapshot, next))
}

/// What record and event data decodes into.
trait Data: Sized {
    /// From a field's text (checked by the scanner); `None`: absent or `null`.
    fn from_text(text: Option<&str>) -> Result<Self, DecodeError>;
}

impl Data for Value {
    fn from_text(text: Option<&str>) -> Result<Self, DecodeError> {
        text.map_or(Ok(Value::Null), |text| {
            serde_json::from_str(text).map_err(|error| DecodeError::from_json(&error))
        })
    }
}

impl Data for Json {
    fn from_text(text: Option<&str>) -> Result<Self, DecodeError> {
        Ok(text.map_or_else(Json::null, Json::from_scanned))
    }
}

/// A JSON integer (the text of a scanned number) that fits `T`; fractions and exponents do
/// not.
fn number<T: std::str::FromStr>(raw: &str) -> Option<T> {
    raw.parse().ok()
}

fn boolean(raw: &str) -> Option<bool> {
    match raw {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn malformed(error: ScanError) -> DecodeError {
    DecodeError::Malformed(error.to_string())
}

fn decode<D: Data>(input: &[u8], limits: &DecodeLimits) -> Result<ServerMessage<D>, DecodeError> {
    // The scanner applies the depth limit in its own pass, so only a refused message is
    // walked again, by `check`, to tell "too large" or "too deep" from "malformed" as it
    // always has (a second walk of every message was 2% of the browser client's apply time).
    let refused = |error: DecodeError| check(input, limits).err().unwrap_or(error);
    if input.len() > limits.max_bytes {
        return Err(refused(DecodeError::Malformed("too large".into())));
    }
    let text = std::str::from_utf8(input)
        .map_err(|_| refused(DecodeError::Malformed("a message is UTF-8 text".into())))?;
    // A snapshot's records are read in the same pass (see `scan::object_with_list`).
    let (object, records) = scan::object_with_list(text, limits.max_depth, "records")
        .map_err(|error| refused(malformed(error)))?;
    let mut fields = Fields {
        object,
        records,
        kind: "",
    };
    let kind = fields.text("type")?;
    fields.kind = match kind.as_ref() {
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
struct Fields<'a> {
    object: scan::Fields<'a>,
    /// The fields of each item of `records`, when it is an array of objects.
    records: Option<Vec<scan::Fields<'a>>>,
    /// The message's `type`, for error texts.
    kind: &'static str,
}

impl<'a> Fields<'a> {
    fn message<D: Data>(self) -> Result<ServerMessage<D>, DecodeError> {
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
                op: Op::parse(&self.text("op")?).ok_or_else(|| self.bad("op"))?,
                data: D::from_text(self.raw("data"))?,
                prev: self.optional("prev", number)?,
                ts: self.optional("ts", number)?,
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
                kind: AdvisoryKind::parse(&self.text("kind")?).ok_or_else(|| self.bad("kind"))?,
                stream: self.optional_stream("stream")?,
                epoch: self.optional("epoch", number)?,
                from: self.optional("from", number)?,
                to: self.optional("to", number)?,
                reason: self.optional_string("reason")?,
            }),
            "ack" => ServerMessage::Ack {
                id: self.string("id")?,
                stream: self.stream("stream")?,
                seq: self.u64("seq")?,
                replayed: self.optional("replayed", boolean)?.unwrap_or(false),
            },
            "error" => ServerMessage::Error {
                id: self.optional_string("id")?,
                stream: self.optional_string("stream")?,
                code: ErrorCode::parse(&self.text("code")?),
                message: self.string("message")?,
            },
            "presence" => ServerMessage::Presence {
                stream: self.stream("stream")?,
                present: self.presence_entries()?,
                left: self.strings("left")?,
                full: self.optional("full", boolean)?.unwrap_or(false),
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

    /// The text of a field (the last one, if a name repeats), `None` if absent or `null`.
    fn raw(&self, field: &str) -> Option<&'a str> {
        scan::field(&self.object, field)
    }

    /// An optional field: absent or `null` is `None`, any other value must convert. Fields are
    /// read from their text (checked by the scanner): no tree, no typed parser per type.
    fn optional<T>(
        &self,
        field: &str,
        convert: impl Fn(&'a str) -> Option<T>,
    ) -> Result<Option<T>, DecodeError> {
        match self.raw(field) {
            None => Ok(None),
            Some(raw) => convert(raw).map(Some).ok_or_else(|| self.bad(field)),
        }
    }

    fn u64(&self, field: &str) -> Result<u64, DecodeError> {
        self.optional(field, number)?.ok_or_else(|| self.bad(field))
    }

    fn bool(&self, field: &str) -> Result<bool, DecodeError> {
        self.optional(field, boolean)?
            .ok_or_else(|| self.bad(field))
    }

    /// A string field, borrowed from the message unless it has escapes: for the fields only
    /// looked at (`type`, `op`, a stream name), where an owned copy was an allocation per
    /// message for nothing.
    fn optional_text(&self, field: &str) -> Result<Option<Cow<'a, str>>, DecodeError> {
        self.optional(field, scan::scanned_string)
    }

    fn text(&self, field: &str) -> Result<Cow<'a, str>, DecodeError> {
        self.optional_text(field)?.ok_or_else(|| self.bad(field))
    }

    fn optional_string(&self, field: &str) -> Result<Option<String>, DecodeError> {
        Ok(self.optional_text(field)?.map(Cow::into_owned))
    }

    fn string(&self, field: &str) -> Result<String, DecodeError> {
        self.optional_string(field)?.ok_or_else(|| self.bad(field))
    }

    fn optional_stream(&self, field: &str) -> Result<Option<StreamName>, DecodeError> {
        self.optional_text(field)?
            .map(|name| StreamName::new(&name).map_err(DecodeError::Name))
            .transpose()
    }

    fn stream(&self, field: &str) -> Result<StreamName, DecodeError> {
        self.optional_stream(field)?.ok_or_else(|| self.bad(field))
    }

    /// A list field: absent or `null` is empty (`present`, `left`), unless `required`.
    fn array(&self, field: &str, required: bool) -> Result<Vec<&'a str>, DecodeError> {
        match self.raw(field) {
            None if !required => Ok(Vec::new()),
            None => Err(self.bad(field)),
            Some(raw) => scan::array(raw).map_err(|_| self.bad(field)),
        }
    }

    fn records<D: Data>(mut self) -> Result<Vec<Record<D>>, DecodeError> {
        let Some(records) = self.records.take() else {
            return Err(self.bad("records"));
        };
        let kind = self.kind;
        records
            .into_iter()
            .map(|object| {
                let record = Fields {
                    object,
                    records: None,
                    kind,
                };
                Ok(Record {
                    key: record.string("key")?,
                    seq: record.u64("seq")?,
                    data: D::from_text(record.raw("data"))?,
                })
            })
            .collect()
    }

    fn presence_entries(&self) -> Result<Vec<PresenceEntry>, DecodeError> {
        self.array("present", false)?
            .into_iter()
            .map(|item| {
                let entry = self.nested(item, "present")?;
                Ok(PresenceEntry {
                    client: entry.string("client")?,
                    data: Value::from_text(entry.raw("data"))?,
                })
            })
            .collect()
    }

    fn strings(&self, field: &str) -> Result<Vec<String>, DecodeError> {
        self.array(field, false)?
            .into_iter()
            .map(|item| {
                scan::scanned_string(item)
                    .map(Cow::into_owned)
                    .ok_or_else(|| self.bad(field))
            })
            .collect()
    }

    /// An object inside a list field, with the same error texts.
    fn nested(&self, item: &'a str, field: &str) -> Result<Fields<'a>, DecodeError> {
        match scan::object(item) {
            Ok(object) => Ok(Fields {
                object,
                records: None,
                kind: self.kind,
            }),
            Err(_) => Err(self.bad(field)),
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

    /// The scanner applies the depth limit itself; `check` only names a refusal. Both give
    /// the same verdicts as `check` before the scan did: the limit counts brackets, strings
    /// do not count, and a message both too deep and broken (or too large) is "too deep" (or
    /// "too large").
    #[test]
    fn the_depth_limit_counts_brackets_in_one_pass() {
        let limits = DecodeLimits {
            max_bytes: 200,
            max_depth: 4,
        };
        let event = |data: &str| {
            format!(
                r#"{{"type":"event","stream":"s","epoch":1,"seq":1,"key":"k","op":"upsert","data":{data}}}"#
            )
        };
        let verdict = |text: &str| -> (Result<(), &str>, Result<(), &str>) {
            (
                decode_server(text.as_bytes(), &limits)
                    .map(drop)
                    .map_err(|error| error.kind()),
                decode_server_json(text.as_bytes(), &limits)
                    .map(drop)
                    .map_err(|error| error.kind()),
            )
        };
        for (text, expected) in [
            (event(r#"{"a":{"b":[1]}}"#), Ok(())),
            (event(r#"{"a":{"b":"[[[[{{{{"}}"#), Ok(())),
            (event(r#"{"a":{"b":[[1]]}}"#), Err("too_deep")),
            (event(r#"{"a":{"b":[[1,]]}}"#), Err("too_deep")),
            (event(r#"{"a":{"b":[1,]}}"#), Err("malformed")),
            (
                event(&format!(r#""{}""#, "x".repeat(200))),
                Err("too_large"),
            ),
        ] {
            assert_eq!(verdict(&text), (expected, expected), "{text}");
        }
        let mut broken = event(r#"{"a":{"b":[[1]]}}"#).into_bytes();
        broken.push(0xff);
        assert_eq!(
            decode_server_json(&broken, &limits)
                .map(drop)
                .map_err(|error| error.kind()),
            Err("too_deep")
        );
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

    /// A snapshot page: its records with their data as text, the `next` cursor (absent or
    /// `null` on the last page), and a clear refusal of anything else.
    #[test]
    fn snapshot_pages_decode_with_their_cursor() {
        let page = r#"{"epoch":7,"seq":9,"next":"c/1","records":[{"key":"a","seq":3,"data":{"x":[1]}},{"key":"b","seq":9}]}"#;
        let (snapshot, next) = decode_page(page).expect("a page");
        assert_eq!(
            (snapshot.epoch, snapshot.seq, next.as_deref()),
            (7, 9, Some("c/1"))
        );
        let records: Vec<(&str, u64, &str)> = snapshot
            .records
            .iter()
            .map(|record| (record.key.as_str(), record.seq, record.data.as_str()))
            .collect();
        assert_eq!(records, vec![("a", 3, r#"{"x":[1]}"#), ("b", 9, "null")]);
        for last in [
            r#"{"epoch":1,"seq":0,"records":[]}"#,
            r#"{"epoch":1,"seq":0,"next":null,"records":[]}"#,
        ] {
            assert_eq!(decode_page(last).expect("a page").1, None, "{last}");
        }
        for bad in [
            "[]",
            r#"{"epoch":1,"seq":0}"#,
            r#"{"epoch":1,"seq":0,"records":[1]}"#,
            r#"{"epoch":1,"seq":0,"records":[{"seq":1}]}"#,
            r#"{"epoch":1,"seq":0,"next":5,"records":[]}"#,
            r#"{"epoch":"1","seq":0,"records":[]}"#,
            r#"{"epoch":1,"seq":0,"records":[]"#,
        ] {
            assert!(
                matches!(decode_page(bad), Err(DecodeError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
