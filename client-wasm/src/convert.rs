//! Moving values between Rust (`serde_json::Value`) and JavaScript.
//!
//! Values cross the boundary as JSON text: Rust serialises, JavaScript's native `JSON.parse`
//! builds the objects in one call. The benchmark (`scripts/bench.d/client-wasm`) compares
//! this with serde-wasm-bindgen, which builds objects one field at a time through the
//! boundary; JSON text won (1.7x for one record, 3.3x for a 100-record value; numbers in
//! client-wasm/README.md), so it is the only path in the package. Scalars skip JSON.

use js_sys::JSON;
use serde_json::Value;
use tidewire_shared::json::{array, ObjectWriter};
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
pub(crate) fn changes_json(changes: &[Change]) -> String {
    let texts: Vec<String> = changes
        .iter()
        .map(|change| {
            let size = change.key.len() + change.new.as_ref().map_or(0, |new| new.as_str().len());
            let mut object = ObjectWriter::with_capacity(size + 48);
            object
                .str("key", &change.key)
                .str("op", change.op.as_str())
                .u64("seq", change.seq);
            if let Some(new) = &change.new {
                object.raw("newValue", new.as_str());
            }
            object.finish()
        })
        .collect();
    array(texts.iter().map(String::as_str))
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
}
