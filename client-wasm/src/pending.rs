//! Persisted pending writes (with `persist`): the writes a page made that the relay has not
//! answered, stored so a reload or a browser restart sends them again.
//!
//! Each client stores its queue under `tidewire:v1:<relay http URL>:writes:<writer>` as a JSON
//! array of `{stream, key, op, data, write_id}`, rewritten whenever it changes (and removed
//! when it is empty). A new client reads every stored queue of its relay, adopts the writes
//! (shown at once, sent in order with their original write ids) and removes the queues it
//! adopted. A queue adopted while its own tab is still open is sent twice, which the write
//! ids make harmless: the relay answers the second with the first's seq.

use serde_json::{json, Map, Value};
use tidewire_shared::message::Publish;
use tidewire_shared::{Op, StreamName};

/// The stored form of a queue.
pub(crate) fn encode<'a>(writes: impl Iterator<Item = &'a Publish>) -> String {
    let list: Vec<Value> = writes
        .map(|publish| {
            json!({
                "stream": publish.stream.as_str(),
                "key": publish.key,
                "op": publish.op.as_str(),
                "data": publish.data,
                "write_id": publish.write_id,
            })
        })
        .collect();
    Value::Array(list).to_string()
}

/// The writes of a stored queue; entries that do not read back as writes are skipped, so
/// storage can never break the client.
pub(crate) fn decode(text: &str) -> Vec<Publish> {
    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|entry| match entry {
            Value::Object(fields) => write(fields),
            _ => None,
        })
        .collect()
}

fn write(mut fields: Map<String, Value>) -> Option<Publish> {
    let stream = StreamName::new(fields.get("stream")?.as_str()?).ok()?;
    let op = Op::parse(fields.get("op")?.as_str()?)?;
    let publish = Publish {
        id: "stored".into(),
        stream,
        key: fields.get("key")?.as_str()?.to_owned(),
        op,
        data: fields.remove("data").unwrap_or(Value::Null),
        write_id: Some(fields.get("write_id")?.as_str()?.to_owned()),
    };
    publish.validate().ok()?;
    Some(publish)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let publish = Publish {
            id: "w1".into(),
            stream: StreamName::new("todos").expect("valid"),
            key: "a".into(),
            op: Op::Patch,
            data: json!({"done": true}),
            write_id: Some("c0ffee.1".into()),
        };
        let decoded = decode(&encode([&publish].into_iter()));
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].write_id, publish.write_id);
        assert_eq!(decoded[0].data, publish.data);
        assert_eq!(decoded[0].op, Op::Patch);
        assert!(decode("nope").is_empty());
        assert!(
            decode(r#"[{"stream":"bad name!","key":"a","op":"upsert","write_id":"x"}]"#).is_empty()
        );
        assert_eq!(
            decode(r#"[1, {"stream":"s","key":"a","op":"delete","write_id":"x.1"}]"#).len(),
            1
        );
    }
}
