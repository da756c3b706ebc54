//! `LiveCollection`: one stream's records as a read-mostly map, plus writes, change
//! listeners, ephemeral messages and presence.
//!
//! The merge rules run in wasm (the shared crate's `Collection`); JavaScript holds each
//! view's records as objects in a Map that every reported change updates (`js/records.js`),
//! so reads (`get`, `has`, `size`, iteration, `toJSON`) are Map reads defined there.

use std::rc::Rc;

use js_sys::{Function, Promise};
use serde_json::Value;
use tidewire_shared::Op;
use wasm_bindgen::prelude::*;

use crate::convert;
use crate::engine::view::ViewRead;
use crate::error::ClientError;
use crate::handles::{add_listener, ready_promise};
use crate::listeners::EventKind;
use crate::shell::{drive, presence_js, Shared};

/// The live collection of one stream, or of the records of a stream a filter matches. Get
/// it with `client.collection(stream)` or `client.collection(stream, { where })`.
#[wasm_bindgen]
#[derive(Debug)]
pub struct LiveCollection {
    shared: Rc<Shared>,
    stream: String,
    /// The engine's view this collection shows.
    view: u32,
    /// The filter's canonical JSON text, if it has one.
    filter: Option<String>,
}

impl LiveCollection {
    pub(crate) fn new(shared: Rc<Shared>, stream: &str, view: u32, filter: Option<String>) -> Self {
        Self {
            shared,
            stream: stream.to_owned(),
            view,
            filter,
        }
    }

    /// Runs `read` on the view (an empty one if the client is busy or closed).
    fn read<R>(&self, read: impl FnOnce(ViewRead<'_>) -> R) -> R {
        let empty = ViewRead::new(None, None, None);
        match self.shared.inner.try_borrow() {
            Ok(inner) => read(inner.engine.view(self.view).unwrap_or(empty)),
            Err(_) => read(empty),
        }
    }

    fn scope(&self) -> Option<(&str, u32)> {
        Some((&self.stream, self.view))
    }

    fn write(&self, key: &str, op: Op, value: Result<Value, ClientError>) -> Promise {
        let shared = Rc::clone(&self.shared);
        let stream = self.stream.clone();
        let mut value = Some(value);
        Promise::new(&mut |resolve, reject| {
            let Some(value) = value.take() else { return };
            let result = value.and_then(|data| {
                drive(&shared, |inner| {
                    let id = inner.engine.write(&stream, key, op, data)?;
                    shared
                        .listeners
                        .borrow_mut()
                        .pending
                        .insert(id, (resolve.clone(), reject.clone()));
                    Ok(())
                })
                .unwrap_or(Err(ClientError::Argument("re-entrant call".into())))
            });
            if let Err(error) = result {
                let _ = reject.call1(&JsValue::UNDEFINED, &error.into());
            }
        })
    }
}

#[wasm_bindgen]
impl LiveCollection {
    /// The stream's name.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.stream.clone()
    }

    /// The collection's filter (`undefined` for every record of the stream).
    #[wasm_bindgen(
        getter,
        js_name = "where",
        unchecked_return_type = "Filter | undefined"
    )]
    pub fn filter(&self) -> JsValue {
        self.filter
            .as_deref()
            .map_or(JsValue::UNDEFINED, convert::parse)
    }

    /// Test hook: the view's records as the engine holds them, as JSON text, so the browser
    /// tests can check that the JavaScript Map the reads use agrees.
    #[wasm_bindgen(js_name = _engineRecords, skip_typescript)]
    pub fn engine_records(&self) -> String {
        self.read(|view| {
            let mut text = String::from("{");
            for (key, value) in view.iter() {
                if text.len() > 1 {
                    text.push(',');
                }
                text.push_str(&Value::from(key).to_string());
                text.push(':');
                text.push_str(&value.to_string());
            }
            text.push('}');
            text
        })
    }

    /// The last applied seq: every event up to it is reflected (0 before the snapshot).
    #[wasm_bindgen(getter)]
    pub fn seq(&self) -> f64 {
        self.read(|view| view.applied() as f64)
    }

    /// The stream's epoch (changes when the stream is recreated or truncated).
    #[wasm_bindgen(getter)]
    pub fn epoch(&self) -> f64 {
        self.read(|view| view.epoch() as f64)
    }

    /// Whether the collection is subscribed and up to date.
    #[wasm_bindgen(getter)]
    pub fn live(&self) -> bool {
        self.shared
            .inner
            .try_borrow()
            .is_ok_and(|inner| inner.engine.is_view_live(self.view))
    }

    /// Replaces the value of `key`. Shown at once (a change with origin `local`); resolves
    /// with the committed seq once reads show the committed write; rejects with a
    /// `TidewireError` when the relay refuses it (`code`: `forbidden`, `bad_key`, `bad_data`,
    /// `too_large`, `rate_limited`, `conflict`, ...; the write is rolled back), with
    /// `queue_full` when `maxPendingWrites` writes are unanswered, or `closed`. A lost
    /// connection does not fail it: it is sent again, and committed once.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn set(
        &self,
        key: &str,
        #[wasm_bindgen(unchecked_param_type = "unknown")] value: JsValue,
    ) -> Promise {
        self.write(key, Op::Upsert, convert::from_js(&value))
    }

    /// Merges `fields` into the object at `key` (each field last-writer-wins).
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn patch(
        &self,
        key: &str,
        #[wasm_bindgen(unchecked_param_type = "Record<string, unknown>")] fields: JsValue,
    ) -> Promise {
        self.write(key, Op::Patch, convert::from_js(&fields))
    }

    /// Deletes `key`. Resolves with the committed seq.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn delete(&self, key: &str) -> Promise {
        self.write(key, Op::Delete, Ok(Value::Null))
    }

    /// Sends an ephemeral message to everyone subscribed now (not stored; delivered to
    /// `on("message")`, including our own). Resolves with 0 once the relay accepted it
    /// (messages have no seq).
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn send(
        &self,
        key: &str,
        #[wasm_bindgen(unchecked_param_type = "unknown")] data: JsValue,
    ) -> Promise {
        self.write(key, Op::Message, convert::from_js(&data))
    }

    /// Calls `callback` with every change (`{ key, op, seq, origin, oldValue, newValue }`).
    /// Returns a function that removes the callback.
    #[wasm_bindgen(unchecked_return_type = "() => void")]
    pub fn subscribe(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(change: Change) => void")] callback: Function,
    ) -> JsValue {
        add_listener(&self.shared, self.scope(), EventKind::Change, callback)
    }

    /// Listens to `"change"`, `"message"`, `"presence"`, `"resync"` or `"error"`. Returns a
    /// function that removes the listener.
    #[wasm_bindgen(unchecked_return_type = "() => void")]
    pub fn on(
        &self,
        #[wasm_bindgen(unchecked_param_type = "CollectionEvent")] event: &str,
        callback: Function,
    ) -> Result<JsValue, JsValue> {
        let kind = EventKind::stream(event).ok_or_else(|| {
            ClientError::Argument(format!(
                "unknown collection event \"{event}\" (use change, message, presence, resync or error)"
            ))
        })?;
        Ok(add_listener(&self.shared, self.scope(), kind, callback))
    }

    /// Sets our presence state on this stream (`null` leaves). Kept across reconnections.
    /// Presence needs the WebSocket transport.
    #[wasm_bindgen(js_name = setPresence)]
    pub fn set_presence(
        &self,
        #[wasm_bindgen(unchecked_param_type = "unknown")] data: JsValue,
    ) -> Result<(), JsValue> {
        let data = convert::from_js(&data)?;
        drive(&self.shared, |inner| {
            inner.engine.set_presence(&self.stream, data)
        })
        .unwrap_or(Ok(()))?;
        Ok(())
    }

    /// Who is present: `[{ client, data, self }]`.
    #[wasm_bindgen(getter, unchecked_return_type = "PresenceMember[]")]
    pub fn presence(&self) -> JsValue {
        presence_js(&self.shared, &self.stream)
    }

    /// Resolves once this collection is subscribed and up to date; rejects with code
    /// `closed` if the client is closed first.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn ready(&self) -> Promise {
        ready_promise(&self.shared, Some(self.view))
    }
}
