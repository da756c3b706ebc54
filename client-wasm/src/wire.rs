//! Decoding the relay's messages in the browser, lean on code size.
//!
//! The shared crate's `decode_server` uses serde's derived, internally tagged enums, which
//! compile to a large amount of wasm (every message type is instantiated for serde's
//! buffering deserializer). The client instead parses the text once into a
//! `serde_json::Value` (needed anyway for record data) and takes the fields out by hand,
//! moving the data rather than copying it. The wasm tests check this decoder against the
//! shared `server_messages.json` vectors and against `decode_server`.
//!
//! Measured (2026-12-06, `scripts/build-client`, release, wasm-opt -Oz): with this decoder
//! the package's `tidewire_bg.wasm` is 279,768 bytes (118,594 gzipped); decoding with
//! `decode_server` instead makes it 379,393 bytes (154,482 gzipped), +35,888 gzipped bytes
//! (+30%). It also reads unknown advisory kinds and error codes as text, so a newer relay's
//! additions do not make a message undecodable.

use serde_json::{Map, Value};
use tidewire_shared::limits::{check, DecodeLimits};
use tidewire_shared::{Event, Op, Record, Snapshot, StreamName};

/// Limits for the relay's messages. The relay is trusted more than a client is (snapshot
/// chunks can be large), but the depth bound still protects the stack.
const SERVER_LIMITS: DecodeLimits = DecodeLimits {
    max_bytes: 64 * 1024 * 1024,
    max_depth: 64,
};

/// A message from the relay, as far as the client cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// One snapshot chunk.
    Snapshot {
        stream: String,
        epoch: u64,
        seq: u64,
        chunk: u32,
        last: bool,
        records: Vec<Record>,
    },
    /// One event (durable or ephemeral).
    Event(Event),
    /// The subscription is live.
    Subscribed {
        stream: String,
        epoch: u64,
        seq: u64,
    },
    /// The stream is no longer sent.
    Unsubscribed { stream: String },
    /// An advisory; `kind` is kept as text so unknown kinds are simply ignored.
    Advisory {
        kind: String,
        stream: Option<String>,
        reason: Option<String>,
    },
    /// A write committed.
    Ack { id: String, seq: u64 },
    /// A request failed.
    Error {
        id: Option<String>,
        stream: Option<String>,
        code: String,
        message: String,
    },
    /// Presence changes.
    Presence {
        stream: String,
        present: Vec<(String, Value)>,
        left: Vec<String>,
        full: bool,
    },
    /// Answer to a ping.
    Pong,
}

fn take_string(object: &mut Map<String, Value>, name: &str) -> Option<String> {
    match object.remove(name)? {
        Value::String(text) => Some(text),
        _ => None,
    }
}

fn stream(object: &mut Map<String, Value>) -> Option<String> {
    let name = take_string(object, "stream")?;
    StreamName::new(&name).ok()?;
    Some(name)
}

fn number(object: &Map<String, Value>, name: &str) -> Option<u64> {
    object.get(name)?.as_u64()
}

fn record(value: Value) -> Option<Record> {
    let Value::Object(mut object) = value else {
        return None;
    };
    Some(Record {
        key: take_string(&mut object, "key")?,
        seq: number(&object, "seq")?,
        data: object.remove("data").unwrap_or(Value::Null),
    })
}

fn records(value: Option<Value>) -> Option<Vec<Record>> {
    match value? {
        Value::Array(items) => items.into_iter().map(record).collect(),
        _ => None,
    }
}

/// Decodes one message; `None` for anything malformed or unknown (the caller counts and
/// ignores it). Never panics, whatever the input.
pub(crate) fn decode(text: &str) -> Option<Incoming> {
    check(text.as_bytes(), &SERVER_LIMITS).ok()?;
    let Value::Object(mut object) = serde_json::from_str(text).ok()? else {
        return None;
    };
    let kind = take_string(&mut object, "type")?;
    Some(match kind.as_str() {
        "snapshot" => Incoming::Snapshot {
            stream: stream(&mut object)?,
            epoch: number(&object, "epoch")?,
            seq: number(&object, "seq")?,
            chunk: u32::try_from(number(&object, "chunk")?).ok()?,
            last: object.get("last")?.as_bool()?,
            records: records(object.remove("records"))?,
        },
        "event" => {
            let stream = StreamName::new(&take_string(&mut object, "stream")?).ok()?;
            Incoming::Event(Event {
                stream,
                epoch: number(&object, "epoch")?,
                seq: number(&object, "seq")?,
                key: take_string(&mut object, "key")?,
                op: Op::parse(object.get("op")?.as_str()?)?,
                data: object.remove("data").unwrap_or(Value::Null),
                ts: object.get("ts").and_then(Value::as_i64),
            })
        }
        "subscribed" => Incoming::Subscribed {
            stream: stream(&mut object)?,
            epoch: number(&object, "epoch")?,
            seq: number(&object, "seq")?,
        },
        "unsubscribed" => Incoming::Unsubscribed {
            stream: stream(&mut object)?,
        },
        "advisory" => Incoming::Advisory {
            kind: take_string(&mut object, "kind")?,
            stream: stream(&mut object),
            reason: take_string(&mut object, "reason"),
        },
        "ack" => Incoming::Ack {
            id: take_string(&mut object, "id")?,
            seq: number(&object, "seq")?,
        },
        "error" => Incoming::Error {
            id: take_string(&mut object, "id"),
            stream: stream(&mut object),
            code: take_string(&mut object, "code")?,
            message: take_string(&mut object, "message").unwrap_or_default(),
        },
        "presence" => {
            let present = match object.remove("present") {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(|item| {
                        let Value::Object(mut entry) = item else {
                            return None;
                        };
                        let client = take_string(&mut entry, "client")?;
                        Some((client, entry.remove("data").unwrap_or(Value::Null)))
                    })
                    .collect::<Option<Vec<_>>>()?,
                None => Vec::new(),
                Some(_) => return None,
            };
            let left = match object.remove("left") {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(|item| match item {
                        Value::String(client) => Some(client),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
                None => Vec::new(),
                Some(_) => return None,
            };
            Incoming::Presence {
                stream: stream(&mut object)?,
                present,
                left,
                full: object.get("full").and_then(Value::as_bool).unwrap_or(false),
            }
        }
        "pong" => Incoming::Pong,
        _ => return None,
    })
}

/// The persisted form of a snapshot: `{"v":1,"snapshot":{epoch,seq,records}}`.
pub(crate) fn decode_stored(text: &str) -> Option<Snapshot> {
    let Value::Object(mut object) = serde_json::from_str(text).ok()? else {
        return None;
    };
    if number(&object, "v")? != 1 {
        return None;
    }
    let Value::Object(mut snapshot) = object.remove("snapshot")? else {
        return None;
    };
    Some(Snapshot {
        epoch: number(&snapshot, "epoch")?,
        seq: number(&snapshot, "seq")?,
        records: records(snapshot.remove("records"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_kind() {
        let event = decode(
            r#"{"type":"event","stream":"todos","epoch":7,"seq":42,"key":"a","op":"patch","data":{"done":true}}"#,
        );
        assert!(
            matches!(event, Some(Incoming::Event(event)) if event.seq == 42 && event.op == Op::Patch)
        );
        let snapshot = decode(
            r#"{"type":"snapshot","stream":"todos","epoch":7,"seq":42,"chunk":0,"last":true,"records":[{"key":"a","seq":40,"data":1}]}"#,
        );
        assert!(matches!(snapshot, Some(Incoming::Snapshot { records, .. }) if records.len() == 1));
        assert_eq!(
            decode(r#"{"type":"ack","id":"w1","stream":"todos","seq":3}"#),
            Some(Incoming::Ack {
                id: "w1".into(),
                seq: 3
            })
        );
        assert_eq!(decode(r#"{"type":"pong"}"#), Some(Incoming::Pong));
    }

    /// Every valid message of the shared vectors decodes to the same content as the shared
    /// crate's `decode_server` gives.
    #[test]
    fn agrees_with_the_shared_decoder_on_the_vectors() {
        use tidewire_shared::message::{decode_server, ServerMessage};
        let cases: Vec<Value> =
            serde_json::from_str(include_str!("../../shared/vectors/server_messages.json"))
                .expect("vectors");
        for case in &cases {
            let input = case["input"].as_str().expect("input");
            let ours = decode(input);
            let Ok(theirs) = decode_server(input.as_bytes(), &DecodeLimits::default()) else {
                continue;
            };
            let ours = ours.unwrap_or_else(|| panic!("{input} was refused"));
            match (ours, theirs) {
                (Incoming::Event(ours), ServerMessage::Event(theirs)) => assert_eq!(ours, theirs),
                (
                    Incoming::Snapshot {
                        epoch,
                        seq,
                        chunk,
                        last,
                        records,
                        ..
                    },
                    ServerMessage::Snapshot {
                        epoch: e,
                        seq: s,
                        chunk: c,
                        last: l,
                        records: r,
                        ..
                    },
                ) => assert_eq!((epoch, seq, chunk, last, records), (e, s, c, l, r)),
                (
                    Incoming::Subscribed { epoch, seq, .. },
                    ServerMessage::Subscribed {
                        epoch: e, seq: s, ..
                    },
                ) => {
                    assert_eq!((epoch, seq), (e, s));
                }
                (Incoming::Advisory { kind, reason, .. }, ServerMessage::Advisory(advisory)) => {
                    let expected = serde_json::to_value(advisory.kind).expect("kind");
                    assert_eq!(Some(kind.as_str()), expected.as_str());
                    assert_eq!(reason, advisory.reason);
                }
                (Incoming::Ack { id, seq }, ServerMessage::Ack { id: i, seq: s, .. }) => {
                    assert_eq!((id, seq), (i, s));
                }
                (
                    Incoming::Error {
                        id, code, message, ..
                    },
                    ServerMessage::Error {
                        id: i,
                        code: c,
                        message: m,
                        ..
                    },
                ) => {
                    assert_eq!((id, code.as_str(), message), (i, c.as_str(), m));
                }
                (
                    Incoming::Presence {
                        present,
                        left,
                        full,
                        ..
                    },
                    ServerMessage::Presence {
                        present: p,
                        left: l,
                        full: f,
                        ..
                    },
                ) => {
                    let p: Vec<(String, Value)> = p
                        .into_iter()
                        .map(|entry| (entry.client, entry.data))
                        .collect();
                    assert_eq!((present, left, full), (p, l, f));
                }
                (Incoming::Pong, ServerMessage::Pong { .. }) => {}
                (ours, theirs) => panic!("{input}: {ours:?} vs {theirs:?}"),
            }
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"type":"bonus"}"#,
            r#"{"type":"event","stream":"a b","epoch":1,"seq":1,"key":"k","op":"upsert"}"#,
            r#"{"type":"event","stream":"s","epoch":-1,"seq":1,"key":"k","op":"upsert"}"#,
            r#"{"type":"snapshot","stream":"s","epoch":1,"seq":1,"chunk":0,"last":true,"records":[1]}"#,
            r#"{"type":"presence","stream":"s","present":{}}"#,
            &"[".repeat(100),
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
