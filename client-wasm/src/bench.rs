//! Benchmark-only exports (cargo feature `bench`, never in the published package): compares
//! the two ways of handing a Rust `serde_json::Value` to JavaScript, and measures the floor of
//! a client whose wasm decides from keys and seqs alone: a per-key check ([`BenchSeqs`]) and
//! the merge rules themselves ([`BenchLedger`]).

use serde::Serialize;
use serde_json::Value;
use tidewire_shared::ledger::{Head, How, Ledger, Won};
use tidewire_shared::{Op, Outcome};
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

/// The shared merge rules ([`Ledger`]) with the values kept in JavaScript: what the
/// redesigned client's wasm would do per message, keys numbered by JavaScript. Each event's
/// answer tells JavaScript how to make the new value (see [`BenchLedger::event`]).
#[wasm_bindgen(js_name = BenchLedger)]
#[derive(Debug, Default)]
pub struct BenchLedger {
    ledger: Ledger<u32>,
    /// The last event's kept or winning field names, when JavaScript needs them.
    fields: Vec<String>,
}

#[wasm_bindgen(js_class = BenchLedger)]
impl BenchLedger {
    /// An empty ledger.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot at `(epoch, seq)` was loaded (its records are JavaScript's).
    pub fn load(&mut self, epoch: f64, seq: f64) {
        self.ledger.load(whole(epoch), whole(seq));
    }

    /// One event (`op`: its index in `js/records.js`'s `OPS`; `object`: a patch's data is an object;
    /// `names`: its field names, which JavaScript lists only after an answer of 3). Returns -1
    /// when nothing changes, 0 when the new value is the event's data (none for a delete), 1
    /// when it is the old value with every field of the patch written over it, 2 otherwise
    /// ([`fields`](Self::fields) then names the fields a replace keeps from the old value,
    /// or the patch's fields that won), and 3 when the ledger needs a patch's names (the
    /// event came out of order): call again with them.
    pub fn event(
        &mut self,
        epoch: f64,
        seq: f64,
        id: u32,
        op: u8,
        object: bool,
        names: Option<Vec<String>>,
    ) -> i32 {
        let op = crate::parsed::OPS
            .get(usize::from(op))
            .copied()
            .unwrap_or(Op::Message);
        let head = Head {
            epoch: whole(epoch),
            seq: whole(seq),
            prev: None,
            key: &id,
            op,
        };
        if op == Op::Patch && object && names.is_none() && !self.ledger.in_order(head.seq, None) {
            return 3;
        }
        let names = names.unwrap_or_default();
        self.fields.clear();
        let listed = || names.iter().map(String::as_str).collect::<Vec<_>>();
        let how = match self.ledger.apply(head, object, listed) {
            Outcome::Applied {
                change: Some(how), ..
            } => how,
            _ => return -1,
        };
        match how {
            How::Replaced { kept: [] } => 0,
            How::Patched { won: Won::All } => 1,
            How::Replaced { kept } => {
                self.fields.extend(kept.iter().cloned());
                2
            }
            How::Patched {
                won: Won::Some(won),
            } => {
                self.fields
                    .extend(won.iter().filter_map(|&at| names.get(at)).cloned());
                2
            }
        }
    }

    /// The field names of the last event that answered 2.
    pub fn fields(&self) -> Vec<String> {
        self.fields.clone()
    }
}

/// A JavaScript number as a seq or epoch (0 for one that is not a whole number >= 0).
fn whole(number: f64) -> u64 {
    if number.is_finite() && number >= 0.0 && number.fract() == 0.0 {
        // In range: JavaScript's whole numbers stop at 2^53.
        number as u64
    } else {
        0
    }
}
