//! The application's callbacks: event listeners per client or stream, pending write
//! promises and `ready()` waiters. Kept apart from the engine state so a callback may call
//! back into the client (read a collection, write, close) while others are being notified.

use std::collections::HashMap;

use js_sys::{Array, Function};
use litemap::LiteMap;
use wasm_bindgen::JsValue;

use crate::browser::report_callback_error;

/// The events an application can listen to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// Client: the status changed.
    Status,
    /// Client or stream: an error the relay reported outside a write.
    Error,
    /// Stream: a record changed.
    Change,
    /// Stream: an ephemeral message arrived.
    Message,
    /// Stream: the presence set changed.
    Presence,
    /// Stream: a snapshot replaced the collection.
    Resync,
    /// Client: a write was confirmed or refused.
    Write,
}

impl EventKind {
    /// Parses a client event name.
    pub(crate) fn client(name: &str) -> Option<Self> {
        match name {
            "status" => Some(EventKind::Status),
            "error" => Some(EventKind::Error),
            "write" => Some(EventKind::Write),
            _ => None,
        }
    }

    /// Parses a collection event name.
    pub(crate) fn stream(name: &str) -> Option<Self> {
        match name {
            "change" => Some(EventKind::Change),
            "message" => Some(EventKind::Message),
            "presence" => Some(EventKind::Presence),
            "resync" => Some(EventKind::Resync),
            "error" => Some(EventKind::Error),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: u32,
    /// `None` for client events.
    stream: Option<String>,
    /// The collection (the engine's view) listened to; `None` for client events.
    view: Option<u32>,
    kind: EventKind,
    callback: Function,
}

/// Everything the application handed us to call later. Cleared on `close()`.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    next_id: u32,
    entries: Vec<Entry>,
    /// Write promises by operation id: `(resolve, reject)`.
    pub(crate) pending: HashMap<String, (Function, Function)>,
    /// `ready()` promises by collection (the engine's view id; `None`: the whole client):
    /// `(resolve, reject)`.
    pub(crate) ready: Vec<(Option<u32>, Function, Function)>,
    /// Each collection's change callbacks as the array `js/records.js` calls, made once
    /// until a listener comes or goes (made per batch, it was 3% of applying a live event).
    /// Never changed in place: a batch being applied keeps the callbacks it started with.
    change_arrays: LiteMap<u32, Array>,
}

impl Listeners {
    /// Adds a listener of the client (`None`) or of a collection (its stream and view) and
    /// returns its id.
    pub(crate) fn add(
        &mut self,
        collection: Option<(&str, u32)>,
        kind: EventKind,
        callback: Function,
    ) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.change_arrays.clear();
        self.entries.push(Entry {
            id: self.next_id,
            stream: collection.map(|(stream, _)| stream.to_owned()),
            view: collection.map(|(_, view)| view),
            kind,
            callback,
        });
        self.next_id
    }

    /// Removes a listener (no-op if already removed).
    pub(crate) fn remove(&mut self, id: u32) {
        self.change_arrays.clear();
        self.entries.retain(|entry| entry.id != id);
    }

    /// The change callbacks of one collection (view), in registration order, as an array.
    pub(crate) fn change_array(&mut self, view: u32) -> Array {
        if let Some(array) = self.change_arrays.get(&view) {
            return array.clone();
        }
        let array: Array = self
            .view_callbacks(view, EventKind::Change)
            .into_iter()
            .collect();
        self.change_arrays.insert(view, array.clone());
        array
    }

    /// The callbacks for `kind` on every collection of `stream` (or on the client), in
    /// registration order.
    pub(crate) fn callbacks(&self, stream: Option<&str>, kind: EventKind) -> Vec<Function> {
        self.entries
            .iter()
            .filter(|entry| entry.kind == kind && entry.stream.as_deref() == stream)
            .map(|entry| entry.callback.clone())
            .collect()
    }

    /// The callbacks for `kind` on one collection (view), in registration order.
    pub(crate) fn view_callbacks(&self, view: u32, kind: EventKind) -> Vec<Function> {
        self.entries
            .iter()
            .filter(|entry| entry.kind == kind && entry.view == Some(view))
            .map(|entry| entry.callback.clone())
            .collect()
    }

    /// Forgets everything (after `close()`), returning the promises still pending so the
    /// caller can reject them.
    pub(crate) fn clear(&mut self) -> Vec<Function> {
        self.entries.clear();
        self.change_arrays.clear();
        let mut rejects: Vec<Function> = self
            .pending
            .drain()
            .map(|(_, (_, reject))| reject)
            .collect();
        rejects.extend(self.ready.drain(..).map(|(_, _, reject)| reject));
        rejects
    }
}

/// Calls an application callback; an exception is logged, not propagated.
pub(crate) fn call(callback: &Function, what: &str, argument: &JsValue) {
    if let Err(error) = callback.call1(&JsValue::UNDEFINED, argument) {
        report_callback_error(what, &error);
    }
}
