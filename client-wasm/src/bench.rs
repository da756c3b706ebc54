//! Benchmark-only exports (cargo feature `bench`, never in the published package): compares
//! the two ways of handing a Rust `serde_json::Value` to JavaScript, and measures the floor of
//! a client whose wasm decides from keys and seqs alone ([`BenchSeqs`]).

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

/// The floor of a redesign in which JavaScript parses each message once and keeps the
/// values, and wasm decides what changes from keys and seqs alone: the merge rules' per-key
/// check (a write applies when its seq is newer than everything its key had), with the key as
/// a string or as a number JavaScript gives each key. Not the merge rules themselves (no
/// per-field seqs, no gaps, no views): what such a design could not go below.
#[wasm_bindgen(js_name = BenchSeqs)]
#[derive(Debug, Default)]
pub struct BenchSeqs {
    by_key: std::collections::HashMap<String, u64>,
    by_id: Vec<u64>,
}

#[wasm_bindgen(js_class = BenchSeqs)]
impl BenchSeqs {
    /// An empty table.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a write at `seq` to `key` applies (and notes it if so).
    pub fn decide(&mut self, key: &str, seq: u32) -> bool {
        if let Some(last) = self.by_key.get_mut(key) {
            return newer(last, seq);
        }
        self.by_key.insert(key.to_owned(), u64::from(seq));
        true
    }

    /// The same, for the key JavaScript numbered `id`.
    #[wasm_bindgen(js_name = decideId)]
    pub fn decide_id(&mut self, id: u32, seq: u32) -> bool {
        let Ok(at) = usize::try_from(id) else {
            return false;
        };
        if at >= self.by_id.len() {
            self.by_id.resize(at.saturating_add(1), 0);
        }
        self.by_id.get_mut(at).is_some_and(|last| newer(last, seq))
    }
}

/// Whether `seq` is newer than `last`, which then becomes it.
fn newer(last: &mut u64, seq: u32) -> bool {
    let seq = u64::from(seq);
    let newer = seq > *last;
    if newer {
        *last = seq;
    }
    newer
}
