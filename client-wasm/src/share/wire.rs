//! The protocol between guests and their host, taken apart and put together over
//! `serde_json::Value` by hand: the messages are the relay protocol's, but the derived serde
//! coders of `ClientMessage` and `ServerMessage` would add about 60 KB (gzipped) to the
//! package (measured: 197.6 KB with them, 138 KB without sharing).

use serde_json::{json, Map, Value};
use tidewire_shared::{ErrorCode, Event, Op, Position, Record, StreamName};

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
pub(crate) fn event(event: &Event) -> String {
    let mut message = json!({
        "type": "event",
        "stream": event.stream.as_str(),
        "epoch": event.epoch,
        "seq": event.seq,
        "key": event.key,
        "op": event.op.as_str(),
        "data": event.data,
    });
    if let Some(prev) = event.prev {
        message["prev"] = prev.into();
    }
    if let Some(ts) = event.ts {
        message["ts"] = ts.into();
    }
    message.to_string()
}

/// One whole `snapshot` (chunk 0, last).
pub(crate) fn snapshot(stream: &str, at: Position, records: &[Record]) -> String {
    let records: Vec<Value> = records
        .iter()
        .map(|record| json!({"key": record.key, "seq": record.seq, "data": record.data}))
        .collect();
    json!({"type": "snapshot", "stream": stream, "epoch": at.epoch, "seq": at.seq, "chunk": 0,
           "last": true, "records": records})
    .to_string()
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
            data: json!(1),
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
                data: Value::Null,
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
