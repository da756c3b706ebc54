//! What a client and its collections hand to JavaScript over the shared state: listener
//! registration (returning the function that removes it) and `ready()` promises. Both
//! `client` and `collection` use these; neither uses the other.

use std::rc::Rc;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;

use crate::engine::status::State;
use crate::error::ClientError;
use crate::listeners::EventKind;
use crate::shell::Shared;

/// Registers a listener of the client (`None`) or of a collection (stream and view id) and
/// returns the function that removes it.
pub(crate) fn add_listener(
    shared: &Rc<Shared>,
    collection: Option<(&str, u32)>,
    kind: EventKind,
    callback: Function,
) -> JsValue {
    let id = shared
        .listeners
        .borrow_mut()
        .add(collection, kind, callback);
    let weak = Rc::downgrade(shared);
    Closure::<dyn FnMut()>::new(move || {
        if let Some(shared) = weak.upgrade() {
            shared.listeners.borrow_mut().remove(id);
        }
    })
    .into_js_value()
}

/// A promise resolved when the collection `view` (or, with `None`, the client) is live.
pub(crate) fn ready_promise(shared: &Rc<Shared>, view: Option<u32>) -> Promise {
    Promise::new(&mut |resolve, reject| {
        let (closed, live) = match shared.inner.try_borrow() {
            Ok(inner) => (
                inner.engine.is_closed(),
                match view {
                    Some(view) => inner.engine.is_view_live(view),
                    None => inner.engine.status().state == State::Live,
                },
            ),
            Err(_) => (false, false),
        };
        if closed {
            let _ = reject.call1(&JsValue::UNDEFINED, &ClientError::Closed.into());
        } else if live {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        } else {
            shared
                .listeners
                .borrow_mut()
                .ready
                .push((view, resolve, reject));
        }
    })
}
