//! The few browser services the shell needs, wrapped so that dropping the wrapper releases
//! the JavaScript side: timers that clear themselves, event listeners that remove
//! themselves, the clock, and console reporting.
//!
//! Timers are gloo's (`gloo-timers`) behind the small API the shell uses; listeners are our
//! own. Every closure handed to JavaScript lives in one of these values, so closing the
//! client frees all of them.

use gloo_timers::callback::{Interval, Timeout};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::EventTarget;

use wasm_bindgen::prelude::wasm_bindgen;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error2(message: &str, detail: &JsValue);
}

/// Milliseconds since the Unix epoch (the engine only needs differences).
pub(crate) fn now() -> f64 {
    js_sys::Date::now()
}

/// Logs an exception thrown by an application callback; the client carries on.
pub(crate) fn report_callback_error(what: &str, error: &JsValue) {
    console_error2(&format!("tidewire: {what} callback threw"), error);
}

/// Logs an error nobody listens to (no `"error"` listener on the collection or client).
pub(crate) fn report_unhandled(error: &JsValue) {
    console_error2(
        "tidewire: unhandled error (add an \"error\" listener)",
        error,
    );
}

/// The longest delay `setTimeout`/`setInterval` honour (gloo passes it on as an `i32`).
const MAX_DELAY_MS: u32 = i32::MAX as u32;

/// A one-shot or repeating timer; dropping it cancels it and frees its closure.
#[derive(Debug)]
pub(crate) enum Timer {
    /// A `setTimeout` (held only to be dropped).
    Once { _timeout: Timeout },
    /// A `setInterval` (held only to be dropped).
    Every { _interval: Interval },
}

impl Timer {
    /// Calls `callback` once after `milliseconds`.
    pub(crate) fn once(milliseconds: u32, callback: impl FnOnce() + 'static) -> Self {
        Self::Once {
            _timeout: Timeout::new(milliseconds.min(MAX_DELAY_MS), callback),
        }
    }

    /// Calls `callback` every `milliseconds`.
    pub(crate) fn every(milliseconds: u32, callback: impl FnMut() + 'static) -> Self {
        Self::Every {
            _interval: Interval::new(milliseconds.min(MAX_DELAY_MS), callback),
        }
    }
}

/// An event listener; dropping it removes it and frees its closure.
///
/// Not `gloo-events` (measured 2026-12: it would add 0.3 KB gzipped, and the code
/// wasm-bindgen generates for its by-reference event argument uses `table.fill`, which
/// Debian's binaryen 108 in `scripts/build-client` cannot read, so the package would not build).
#[derive(Debug)]
pub(crate) struct Listener {
    target: EventTarget,
    kind: &'static str,
    closure: Closure<dyn FnMut(JsValue)>,
}

impl Listener {
    /// Adds `callback` as a listener for `kind` events on `target`.
    pub(crate) fn new(
        target: &EventTarget,
        kind: &'static str,
        callback: impl FnMut(JsValue) + 'static,
    ) -> Self {
        let closure = Closure::<dyn FnMut(JsValue)>::new(callback);
        // Adding a listener only fails for a non-callable argument, which this is not.
        let _ = target.add_event_listener_with_callback(kind, closure.as_ref().unchecked_ref());
        Self {
            target: target.clone(),
            kind,
            closure,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self
            .target
            .remove_event_listener_with_callback(self.kind, self.closure.as_ref().unchecked_ref());
    }
}

/// Whether the browser reports being online (true where it cannot tell).
pub(crate) fn navigator_online() -> bool {
    let global = js_sys::global();
    if let Some(window) = global.dyn_ref::<web_sys::Window>() {
        return window.navigator().on_line();
    }
    if let Some(worker) = global.dyn_ref::<web_sys::WorkerGlobalScope>() {
        return worker.navigator().on_line();
    }
    true
}

/// The window's document, if there is one (not in workers).
pub(crate) fn document() -> Option<web_sys::Document> {
    js_sys::global()
        .dyn_ref::<web_sys::Window>()
        .and_then(web_sys::Window::document)
}

/// Whether the page is visible (true without a document).
pub(crate) fn page_visible() -> bool {
    document()
        .is_none_or(|document| document.visibility_state() != web_sys::VisibilityState::Hidden)
}

/// The global object as an event target (window or worker scope).
pub(crate) fn global_target() -> Option<EventTarget> {
    js_sys::global().dyn_into::<EventTarget>().ok()
}
