//! Benchmark-only exports (cargo feature `bench`, never in the published package): compares
//! the two ways of handing a Rust `serde_json::Value` to JavaScript.

use serde::Serialize;
use serde_json::Value;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Converts the value in `json` to a JavaScript object `iterations` times with each method;
/// returns `{ jsonParseMs, serdeWasmBindgenMs, checksum }`.
#[wasm_bindgen(js_name = benchConvert)]
pub fn bench_convert(json: &str, iterations: u32) -> Result<JsValue, JsValue> {
    let value: Value =
        serde_json::from_str(json).map_err(|error| JsValue::from_str(&error.to_string()))?;
    let mut checksum = 0u32;
    let start = performance_now();
    for _ in 0..iterations {
        let object = crate::convert::parse(&value.to_string());
        checksum = checksum.wrapping_add(u32::from(object.is_object()));
    }
    let json_ms = performance_now() - start;
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    let start = performance_now();
    for _ in 0..iterations {
        let object = value
            .serialize(&serializer)
            .map_err(|error| JsValue::from_str(&error.to_string()))?;
        checksum = checksum.wrapping_add(u32::from(object.is_object()));
    }
    let swb_ms = performance_now() - start;
    let result = js_sys::Object::new();
    js_sys::Reflect::set(&result, &"jsonParseMs".into(), &json_ms.into())?;
    js_sys::Reflect::set(&result, &"serdeWasmBindgenMs".into(), &swb_ms.into())?;
    js_sys::Reflect::set(&result, &"checksum".into(), &checksum.into())?;
    Ok(result.into())
}
