//! Each live collection's records as JavaScript objects (`js/records.js`): the shell applies
//! every batch of changes it reports to a collection's Map, and the collection's reads are
//! Map reads that never enter wasm.

use js_sys::{Array, Map};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

#[wasm_bindgen(module = "/js/records.js")]
extern "C" {
    /// Gives `collection` its record Map (returned) and its class the reads over it.
    #[wasm_bindgen(js_name = attachRecords)]
    pub(crate) fn attach_records(collection: &JsValue) -> Map;

    /// Applies `text` (`[{key, op, seq, newValue?}]`) to `records` and calls `callbacks`
    /// with each change, completed with `origin` and `oldValue`.
    #[wasm_bindgen(js_name = applyChanges)]
    pub(crate) fn apply_changes(records: &Map, text: &str, origin: &str, callbacks: &Array);
}
