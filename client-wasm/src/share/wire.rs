//! The protocol between guests and their host, taken apart and put together over
//! `serde_json::Value` by hand: the messages are the relay protocol's, but the derived serde
//! coders of `ClientMessage` and `ServerMessage` would add about 60 KB (gzipped) to the
//! package (measured: 197.6 KB with them, 138 KB without sharing).

use serde_json::{json, Map, Value};
use tidewire_shared::json::{objects, ObjectWriter};
use tidewire_shared::{ErrorCode, Event, Json, Op, Position, Record, StreamName};

/// What a guest asks of its host.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GuestMessage {
    Subscribe {
        stream: StreamName,
        since: Option<Position>,
        filter: Option<Value>,
    },
    Unsubscribe(StreamName),
    Publish {
        id: String,
        stream: StreamName,
        key: String,
        op: Op,
        data: Value,
        write_id: Option<String>,
    },
    Presence {
        stream: StreamName,
        data: Value,
    },
    Ping(Option<String>),
    /// `auth`, or a type the host ignores.
    Other,
}

/// Decodes a guest's message; `Err` says why it is not one.
pub(crate) fn decode(text: &str) -> Result<GuestMessage, String> {
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(text) else {
        return Err("not a JSON object".into());
    };
    let kind = string(&object, "type")?;
    Ok(match kind.as_str() {
        "subscribe" => GuestMessage::Subscribe {
            stream: stream(&object)?,
            since: match object.get("since") {
                Some(Value::Object(since)) => Some(Position {
                    epoch: since
                        .get("epoch")
                        .and_then(Value::as_u64)
                        .ok_or("bad since")?,
                    seq: since
                        .get("seq")
                        .and_then(Value::as_u64)
                        .ok_or("bad since")?,
                }),
                _ => None,
            },
            filter: object.remove("where").filter(|value| !value.is_null()),
        },
        "unsubscribe" => GuestMessage::Unsubscribe(stream(&object)?),
        "publish" => GuestMessage::Publish {
            id: string(&object, "id")?,
            stream: stream(&object)?,
            key: string(&object, "key")?,
            op: Op::parse(&string(&object, "op")?).ok_or("bad op")?,
            write_id: object
                .get("write_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            data: object.remove("data").unwrap_or(Value::Null),
        },
        "presence" => GuestMessage::Presence {
            stream: stream(&object)?,
            data: object.remove("data").unwrap_or(Value::Null),
        },
        "ping" => GuestMessage::Ping(object.get("id").and_then(Value::as_str).map(str::to_owned)),
        _ => GuestMessage::Other,
    })
}

fn string(object: &Map<String, Value>, field: &str) -> Result<String, String> {
    object
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{field} is missing"))
}

fn stream(object: &Map<String, Value>) -> Result<StreamName, String> {
    StreamName::new(&string(object, "stream")?).map_err(|error| error.to_string())
}

/// `event`.
pub(crate) fn event(event: &Event<Json>) -> String {
    let mut message = ObjectWriter::with_capacity(event.data.as_str().len() + 128);
    message
        .str("type", "event")
        .str("stream", event.stream.as_str())
        .u64("epoch", event.epoch)
        .u64("seq", event.seq)
        .str("key", &event.key)
        .str("op", event.op.as_str())
        .raw("data", event.data.as_str());
    if let Some(prev) = event.prev {
        message.u64("prev", prev);
    }
    if let Some(ts) = event.ts {
        message.i64("ts", ts);
    }
    message.finish()
}

/// One whole `snapshot` (chunk 0, last).
pub(crate) fn snapshot(stream: &str, at: Position, records: &[Record<Json>]) -> String {
    let mut message = ObjectWriter::new();
    message
        .str("type", "snapshot")
        .str("stream", stream)
        .u64("epoch", at.epoch)
        .u64("seq", at.seq)
        .u64("chunk", 0)
        .bool("last", true)
        .raw("records", &records_json(records));
    message.finish()
}

/// `[{key, seq, data}]`: records as the relay sends them (also their stored form, `persist`).
pub(crate) fn records_json(records: &[Record<Json>]) -> String {
    let bytes = |record: &Record<Json>| record.key.len() + record.data.as_str().len();
    objects(records, bytes, |record, object| {
        object
            .str("key", &record.key)
            .u64("seq", record.seq)
            .raw("data", record.data.as_str());
    })
}

/// `subscribed`.
pub(crate) fn subscribed(stream: &str, at: Position, resumed: bool) -> String {
    json!({"type": "subscribed", "stream": stream, "epoch": at.epoch, "seq": at.seq,
           "resumed": resumed})
    .to_string()
}

/// `unsubscribed`.
pub(crate) fn unsubscribed(stream: &str) -> String {
    json!({"type": "unsubscribed", "stream": stream}).to_string()
}

/// `ack`.
pub(crate) fn ack(id: &str, stream: &str, seq: u64) -> String {
    json!({"type": "ack", "id": id, "stream": stream, "seq": seq}).to_string()
}

/// `error`.
pub(crate) fn error(id: Option<&str>, stream: Option<&str>, code: &str, message: &str) -> String {
    let mut error = json!({"type": "error", "code": code, "message": message});
    if let Some(id) = id {
        error["id"] = id.into();
    }
    if let Some(stream) = stream {
        error["stream"] = stream.into();
    }
    error.to_string()
}

/// The code of a refusal as the relay would send it (a client-side code the protocol does
/// not know is sent as `bad_data`, so the guest fails the write rather than retrying it).
pub(crate) fn code(code: &str) -> &str {
    if ErrorCode::parse(code) == ErrorCode::Unknown {
        "bad_data"
    } else {
        code
    }
}

/// `advisory` of `kind`.
pub(crate) fn advisory(kind: &str, stream: Option<&str>, reason: Option<&str>) -> String {
    let mut advisory = json!({"type": "advisory", "kind": kind});
    if let Some(stream) = stream {
        advisory["stream"] = stream.into();
    }
    if let Some(reason) = reason {
        advisory["reason"] = reason.into();
    }
    advisory.to_string()
}

/// A whole presence set.
pub(crate) fn presence<'a>(
    stream: &str,
    members: impl Iterator<Item = (&'a String, &'a Value)>,
) -> String {
    let present: Vec<Value> = members
        .map(|(client, data)| json!({"client": client, "data": data}))
        .collect();
    json!({"type": "presence", "stream": stream, "present": present, "left": [], "full": true})
        .to_string()
}

/// `pong`.
pub(crate) fn pong(id: Option<&str>) -> String {
    match id {
        Some(id) => json!({"type": "pong", "id": id}),
        None => json!({"type": "pong"}),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use tidewire_shared::message::{decode_server, ClientMessage, Publish, Subscribe};
    use tidewire_shared::{DecodeLimits, ServerMessage};

    use super::*;

    /// What the engine sends decodes here; what is built here decodes as the relay's.
    #[test]
    fn agrees_with_the_protocol_coders() {
        let name = StreamName::new("todos").expect("valid");
        let subscribe = ClientMessage::Subscribe(Subscribe {
            stream: name.clone(),
            since: Some(Position { epoch: 2, seq: 9 }),
            snapshot: true,
            filter: Some(json!({"owner": "u1"})),
        })
        .encode();
        assert_eq!(
            decode(&subscribe),
            Ok(GuestMessage::Subscribe {
                stream: name.clone(),
                since: Some(Position { epoch: 2, seq: 9 }),
                filter: Some(json!({"owner": "u1"})),
            })
        );
        let publish = ClientMessage::Publish(Publish {
            id: "w1".into(),
            stream: name.clone(),
            key: "a".into(),
            op: Op::Patch,
            data: json!({"n": 1}),
            write_id: Some("t.1".into()),
        })
        .encode();
        assert!(matches!(decode(&publish),
            Ok(GuestMessage::Publish { write_id: Some(id), op: Op::Patch, .. }) if id == "t.1"));
        assert!(decode("[]").is_err());
        assert!(decode(r#"{"type":"subscribe","stream":"bad name"}"#).is_err());

        let limits = DecodeLimits::default();
        let at = Position { epoch: 2, seq: 9 };
        let record = Record {
            key: "a".into(),
            seq: 9,
            data: Json::from(json!(1)),
        };
        for text in [
            snapshot("todos", at, &[record]),
            subscribed("todos", at, true),
            unsubscribed("todos"),
            ack("w1", "todos", 9),
            error(Some("w1"), Some("todos"), "forbidden", "no"),
            advisory("connect", None, Some("relay=shared connection=c1")),
            presence("todos", [(&"c1".to_owned(), &json!({"x": 1}))].into_iter()),
            pong(Some("p")),
            event(&Event {
                stream: name.clone(),
                epoch: 2,
                seq: 10,
                key: "a".into(),
                op: Op::Delete,
                data: Json::null(),
                prev: Some(7),
                ts: None,
            }),
        ] {
            let decoded = decode_server(text.as_bytes(), &limits);
            assert!(decoded.is_ok(), "{text}: {decoded:?}");
        }
        assert!(matches!(
            decode_server(subscribed("todos", at, true).as_bytes(), &limits),
            Ok(ServerMessage::Subscribed {
                resumed: true,
                seq: 9,
                ..
            })
        ));
    }
}
