//! `TidewireClient`: the JavaScript entry point. A thin binding over the shell; see the
//! README for the API and `engine` for the rules.

use std::rc::Rc;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;

use crate::collection::LiveCollection;
use crate::convert;
use crate::engine::status::TransportKind;
use crate::engine::{Engine, TransportChoice};
use crate::error::ClientError;
use crate::handles::add_listener;
use crate::listeners::EventKind;
use crate::options::Options;
use crate::persist::Store;
use crate::shell::{self, drive, Shared};
use crate::transport::Endpoints;

#[wasm_bindgen(inline_js = "export function install_iterator(object) {
  const prototype = Object.getPrototypeOf(object);
  if (!Object.prototype.hasOwnProperty.call(prototype, Symbol.iterator)) {
    Object.defineProperty(prototype, Symbol.iterator, {
      value: function () { return this.entries(); },
      configurable: true,
      writable: true,
    });
  }
}")]
extern "C" {
    fn install_iterator(object: &JsValue);
}

/// A connection to a Tidewire relay, shared by any number of live collections.
///
/// ```js
/// const client = new TidewireClient("https://relay.example.com", { token });
/// const todos = client.collection("todos");
/// todos.subscribe(({ key, op, newValue }) => render(key, newValue));
/// await todos.set("a", { title: "milk" });
/// client.close();
/// ```
#[wasm_bindgen]
#[derive(Debug)]
pub struct TidewireClient {
    shared: Rc<Shared>,
}

#[wasm_bindgen]
impl TidewireClient {
    /// Connects to the relay at `url` (`http(s)://` or `ws(s)://`, absolute or relative to
    /// the page). Connecting, reconnecting and resuming happen in the background; watch
    /// `status` or the `"status"` event.
    ///
    /// Throws a `TidewireError` (code `bad_argument`) for an invalid URL or option.
    #[wasm_bindgen(constructor)]
    pub fn new(
        url: &str,
        #[wasm_bindgen(unchecked_param_type = "TidewireOptions")] options: JsValue,
    ) -> Result<TidewireClient, JsValue> {
        let options = Options::from_js(&options)?;
        let base = page_href();
        let endpoints = Endpoints::parse(url, base.as_deref()).map_err(ClientError::Argument)?;
        let store = options
            .persist
            .map(|kind| Store::new(kind, &endpoints.http));
        let seed = (js_sys::Math::random() * 9_007_199_254_740_991.0) as u64;
        let config = options.config.clone();
        let manual = config.transport == TransportChoice::Manual;
        let tick_ms = (config.keepalive_ms / 4.0).clamp(1000.0, 5000.0) as u32;
        let engine = Engine::new(config, seed);
        let shared = Shared::new(engine, endpoints, options.token, store);
        shell::start(&shared, manual, tick_ms);
        Ok(TidewireClient { shared })
    }

    /// Closes the connection, cancels timers, removes every listener and rejects pending
    /// writes (code `closed`). The status becomes `"closed"`. Idempotent.
    pub fn close(&self) {
        shell::close(&self.shared);
    }

    /// The connection state: `"connecting" | "live" | "resyncing" | "offline" | "closed"`.
    #[wasm_bindgen(getter, unchecked_return_type = "ConnectionState")]
    pub fn status(&self) -> String {
        self.shared
            .inner
            .try_borrow()
            .map(|inner| inner.engine.status().state.as_str().to_owned())
            .unwrap_or_else(|_| "connecting".into())
    }

    /// The full status: state, reason, code, close code, transport, attempt, retry delay.
    #[wasm_bindgen(getter, js_name = statusInfo, unchecked_return_type = "StatusInfo")]
    pub fn status_info(&self) -> JsValue {
        match self.shared.inner.try_borrow() {
            Ok(inner) => convert::parse(&inner.engine.status().to_json()),
            Err(_) => JsValue::UNDEFINED,
        }
    }

    /// The transport in use or being tried: `"websocket"`, `"sse"`, or `undefined`.
    #[wasm_bindgen(getter, unchecked_return_type = "\"websocket\" | \"sse\" | undefined")]
    pub fn transport(&self) -> JsValue {
        let kind = self
            .shared
            .inner
            .try_borrow()
            .ok()
            .and_then(|inner| inner.engine.transport());
        match kind {
            Some(TransportKind::Manual) | None => JsValue::UNDEFINED,
            Some(kind) => JsValue::from_str(kind.as_str()),
        }
    }

    /// This connection's id in presence sets (changes with each connection).
    #[wasm_bindgen(getter, js_name = presenceId)]
    pub fn presence_id(&self) -> Option<String> {
        let inner = self.shared.inner.try_borrow().ok()?;
        inner.engine.presence_id().map(str::to_owned)
    }

    /// Counters: `{ duplicates, gaps, resyncs, connections, malformed }`.
    #[wasm_bindgen(getter, unchecked_return_type = "ClientStats")]
    pub fn stats(&self) -> JsValue {
        let Ok(inner) = self.shared.inner.try_borrow() else {
            return JsValue::UNDEFINED;
        };
        let stats = inner.engine.stats();
        convert::parse(
            &serde_json::json!({
                "duplicates": stats.duplicates,
                "gaps": stats.gaps,
                "resyncs": stats.resyncs,
                "connections": stats.connections,
                "malformed": stats.malformed,
            })
            .to_string(),
        )
    }

    /// Replaces the token. On a WebSocket it is sent at once (`auth`); after an
    /// authentication failure the client reconnects with it right away.
    #[wasm_bindgen(js_name = setToken)]
    pub fn set_token(&self, token: Option<String>) {
        let token = token.filter(|token| !token.is_empty());
        drive(&self.shared, |inner| inner.set_token(token));
    }

    /// The live collection of `stream` (the same object on every call). Throws a
    /// `TidewireError` with code `bad_stream` for an invalid name, `closed` after `close()`.
    #[wasm_bindgen(unchecked_return_type = "LiveCollection")]
    pub fn collection(&self, stream: &str) -> Result<JsValue, JsValue> {
        if let Some(existing) = self.shared.collections.borrow().get(stream) {
            return Ok(existing.clone());
        }
        drive(&self.shared, |inner| inner.engine.open_stream(stream))
            .unwrap_or(Err(ClientError::Argument("re-entrant call".into())))?;
        let value = JsValue::from(LiveCollection::new(Rc::clone(&self.shared), stream));
        install_iterator(&value);
        self.shared
            .collections
            .borrow_mut()
            .insert(stream.to_owned(), value.clone());
        Ok(value)
    }

    /// Listens to `"status"` (argument: `StatusInfo`) or `"error"` (argument: a
    /// `TidewireError` the relay reported outside a write). Returns a function that removes
    /// the listener.
    #[wasm_bindgen(unchecked_return_type = "() => void")]
    pub fn on(
        &self,
        #[wasm_bindgen(unchecked_param_type = "\"status\" | \"error\"")] event: &str,
        callback: Function,
    ) -> Result<JsValue, JsValue> {
        let kind = EventKind::client(event).ok_or_else(|| {
            ClientError::Argument(format!(
                "unknown client event \"{event}\" (use \"status\" or \"error\")"
            ))
        })?;
        Ok(add_listener(&self.shared, None, kind, callback))
    }

    /// Resolves once the client is live (every collection subscribed and up to date);
    /// rejects with code `closed` if the client is closed first.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn ready(&self) -> Promise {
        crate::handles::ready_promise(&self.shared, None)
    }

    /// Test hook: handles `text` as if the relay had sent it (transport `"manual"`).
    #[wasm_bindgen(js_name = _inject, skip_typescript)]
    pub fn inject(&self, text: &str) {
        drive(&self.shared, |inner| {
            inner.engine.on_text(text, crate::browser::now())
        });
    }

    /// Test hook: the frames sent so far on the manual transport, emptied.
    #[wasm_bindgen(js_name = _takeSent, skip_typescript)]
    pub fn take_sent(&self) -> Vec<String> {
        self.shared
            .inner
            .try_borrow_mut()
            .map(|mut inner| std::mem::take(&mut inner.sent))
            .unwrap_or_default()
    }
}

/// The page's URL, to resolve a relative relay URL.
fn page_href() -> Option<String> {
    let global = js_sys::global();
    let location = js_sys::Reflect::get(&global, &"location".into()).ok()?;
    js_sys::Reflect::get(&location, &"href".into())
        .ok()?
        .as_string()
}
