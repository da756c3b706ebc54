//! Each live collection's records as JavaScript objects (`js/records.js`): the shell applies
//! every batch of changes it reports to a collection's Map, and the collection's reads are
//! Map reads that never enter wasm.

use js_sys::{Array, Map};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::engine::effect::Origin;

#[wasm_bindgen(module = "/js/records.js")]
extern "C" {
    /// Gives `collection` its record Map (returned) and its class the reads over it.
    #[wasm_bindgen(js_name = attachRecords)]
    pub(crate) fn attach_records(collection: &JsValue) -> Map;

    /// Applies a batch of changes to `records` and calls `callbacks` with each, completed
    /// with `origin` and `oldValue`. The changes are `text` (`[{key, op, seq, newValue?}]`)
    /// when `plan` is empty; otherwise `plan` says how each is made, from a message of
    /// `messages` or the next one of `text` ([`crate::parsed`]).
    #[wasm_bindgen(js_name = applyChanges)]
    pub(crate) fn apply_changes(
        records: &Map,
        text: Option<String>,
        origin: &JsValue,
        callbacks: &Array,
        plan: &[f64],
        messages: &Array,
    );
}

thread_local! {
    /// Each origin's name as a JavaScript string, made once: a `&str` argument is decoded
    /// again on every call (`TextDecoder`, about 0.7 µs in Chromium 156 however short the
    /// string), and a batch of changes is often a single event.
    static ORIGINS: Vec<JsValue> = {
        let all = [
            Origin::Event,
            Origin::Snapshot,
            Origin::Restore,
            Origin::Local,
            Origin::Rollback,
        ];
        let mut names = vec![JsValue::UNDEFINED; all.len()];
        for origin in all {
            if let Some(name) = names.get_mut(origin as usize) {
                *name = JsValue::from_str(origin.as_str());
            }
        }
        names
    };
}

/// `origin`'s name as a JavaScript string.
pub(crate) fn origin_js(origin: Origin) -> JsValue {
    ORIGINS
        .with(|names| names.get(origin as usize).cloned())
        .unwrap_or_else(|| JsValue::from_str(origin.as_str()))
}
