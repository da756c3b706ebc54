//! Moving values between Rust (`serde_json::Value`) and JavaScript.
//!
//! Values cross the boundary as JSON text: Rust serialises, JavaScript's native `JSON.parse`
//! builds the objects in one call. The benchmark (`scripts/bench.d/client-wasm`) compares
//! this with serde-wasm-bindgen, which builds objects one field at a time through the
//! boundary; JSON text won (1.7x for one record, 3.3x for a 100-record value; numbers in
//! client-wasm/README.md), so it is the only path in the package. Scalars skip JSON.

use std::borrow::Borrow;

use js_sys::JSON;
use serde_json::Value;
use tidewire_shared::json::objects;
use tidewire_shared::Change;
use wasm_bindgen::JsValue;

use crate::error::ClientError;

/// Parses JSON text made by `serde_json` (always valid) into a JavaScript value.
pub(crate) fn parse(text: &str) -> JsValue {
    JSON::parse(text).unwrap_or(JsValue::UNDEFINED)
}

/// A JavaScript value as a Rust value, through `JSON.stringify` (so `toJSON` methods and
/// dates behave as they do everywhere else in JavaScript).
///
/// # Errors
///
/// [`ClientError::NotJson`] for `undefined`, functions, symbols, cycles and BigInts.
pub(crate) fn from_js(value: &JsValue) -> Result<Value, ClientError> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    if let Some(text) = value.as_string() {
        return Ok(Value::String(text));
    }
    if let Some(flag) = value.as_bool() {
        return Ok(Value::Bool(flag));
    }
    let text = JSON::stringify(value)
        .map_err(|error| ClientError::NotJson(describe(&error)))?
        .as_string()
        .ok_or_else(|| ClientError::NotJson("undefined has no JSON form".into()))?;
    serde_json::from_str(&text).map_err(|error| ClientError::NotJson(error.to_string()))
}

fn describe(error: &JsValue) -> String {
    use wasm_bindgen::JsCast;
    error.dyn_ref::<js_sys::Error>().map_or_else(
        || "JSON.stringify failed".into(),
        |error| String::from(error.message()),
    )
}

/// The changes as one JSON array text: `[{key, op, seq, newValue?}]` (what `js/records.js`
/// takes; it adds `origin` and `oldValue`). Written by hand: each record's text is copied in
/// as it is, never parsed or serialised again.
pub(crate) fn changes_json<C: Borrow<Change>>(changes: &[C]) -> String {
    let bytes = |change: &C| {
        let change = change.borrow();
        change.key.len() + change.new.as_ref().map_or(0, |new| new.as_str().len())
    };
    objects(changes, bytes, |change, object| {
        let change = change.borrow();
        object
            .str("key", &change.key)
            .str("op", change.op.as_str())
            .u64("seq", change.seq);
        if let Some(new) = &change.new {
            object.raw("newValue", new.as_str());
        }
    })
}

/// A write's outcome for the `write` listeners: `{id, stream, key, op, status, seq}` when
/// confirmed, `{id, stream, key, op, status, code, message}` when refused.
pub(crate) fn write_outcome_json(outcome: &crate::engine::effect::WriteOutcome) -> String {
    let mut event = serde_json::json!({
        "id": outcome.id,
        "stream": outcome.stream,
        "key": outcome.key,
        "op": outcome.op.as_str(),
    });
    match &outcome.outcome {
        Ok(seq) => {
            event["status"] = "confirmed".into();
            event["seq"] = (*seq).into();
        }
        Err((code, message)) => {
            event["status"] = "refused".into();
            event["code"] = code.as_str().into();
            event["message"] = message.as_str().into();
        }
    }
    event.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidewire_shared::{Json, Op};

    #[test]
    fn change_json_omits_absent_values() {
        let changes = vec![Change {
            key: "a".into(),
            op: Op::Delete,
            seq: 3,
            old: Some(Json::from(json!({"x": 1}))),
            new: None,
        }];
        let value: Value = serde_json::from_str(&changes_json(&changes)).expect("json");
        assert_eq!(value, json!([{"key": "a", "op": "delete", "seq": 3}]));
    }

    /// Every record reaches JavaScript as the value the relay sent, through a snapshot, an
    /// upsert and a patch: the text is copied, so escapes, non-ASCII text, big and small
    /// numbers and deep nesting must come out as they went in.
    #[test]
    fn tricky_values_reach_javascript_exactly() {
        use crate::engine::effect::Effect;
        use crate::engine::{Config, Engine, TransportChoice};

        let tricky = json!({
            "quote\"and\\backslash": "line\nbreak\ttab \u{1} \u{e9}\u{1F600}",
            "numbers": [0, -0.5, 1e300, 1.5e-300, 18446744073709551615u64, -9223372036854775808i64],
            "nested": {"a": [[[{"b": [null, true, false]}]]]},
            "empty": {"o": {}, "a": [], "s": ""},
        });
        let mut engine = Engine::new(
            Config {
                transport: TransportChoice::WebSocket,
                ..Config::default()
            },
            7,
        );
        engine.start(0.0);
        engine.open_stream("todos").expect("valid");
        engine.on_open(1.0);
        let messages = [
            json!({"type": "snapshot", "stream": "todos", "epoch": 1, "seq": 1, "chunk": 0,
                   "last": true, "records": [{"key": "k\"1", "seq": 1, "data": tricky}]}),
            json!({"type": "subscribed", "stream": "todos", "epoch": 1, "seq": 1, "resumed": false}),
            json!({"type": "event", "stream": "todos", "epoch": 1, "seq": 2, "key": "k2",
                   "op": "upsert", "data": tricky}),
            json!({"type": "event", "stream": "todos", "epoch": 1, "seq": 3, "key": "k\"1",
                   "op": "patch", "data": {"numbers": "replaced", "\u{e9}": {"x": [1]}}}),
        ];
        let mut seen = Vec::new();
        let mut texts = String::new();
        for message in &messages {
            engine.on_text(&message.to_string(), 2.0);
            for effect in engine.take_effects() {
                if let Effect::Changes { changes, .. } = effect {
                    let text = changes_json(&changes);
                    let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
                    seen.extend(parsed.as_array().cloned().unwrap_or_default());
                    texts.push_str(&text);
                }
            }
        }
        // The relay's digits reach JavaScript as they are. (serde_json's own parser reads
        // 1.5e-300 as 1.4999999999999998e-300; the client used to hand that on.)
        assert!(texts.contains("1.5e-300"), "{texts}");
        // Compared as serde_json reads both sides.
        let read = |value: Value| -> Value {
            serde_json::from_str(&value.to_string()).expect("valid JSON")
        };
        let mut patched = tricky.clone();
        patched["numbers"] = json!("replaced");
        patched["\u{e9}"] = json!({"x": [1]});
        assert_eq!(
            seen,
            vec![
                read(json!({"key": "k\"1", "op": "upsert", "seq": 1, "newValue": tricky})),
                read(json!({"key": "k2", "op": "upsert", "seq": 2, "newValue": tricky})),
                read(json!({"key": "k\"1", "op": "patch", "seq": 3, "newValue": patched})),
            ]
        );
    }
}
