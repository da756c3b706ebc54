//! `TidewireClient`: the JavaScript entry point. A thin binding over the shell; see the
//! README for the API and `engine` for the rules.

use std::rc::Rc;

use js_sys::{Function, Promise};
use serde_json::Value;
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
use crate::shell::{self, drive, Shared, Sharing};
use crate::transport::Endpoints;

/// A connection to a Tidewire relay, shared by any number of live collections.
///
/// ```js
/// const client = new TidewireClient("https://relay.example.com", { token });
/// const todos = client.collection("todos");
/// todos.subscribe(({ key, op, newValue }) => render(key, newValue));
/// const mine = client.collection("todos", { where: { owner: "u1" } });
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
        #[wasm_bindgen(unchecked_optional_param_type = "TidewireOptions")] options: Option<JsValue>,
    ) -> Result<TidewireClient, JsValue> {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        let parsed = Options::from_js(&options)?;
        let sharing = match (parsed.share, parsed.share_tabs) {
            _ if parsed.config.transport == TransportChoice::Manual => Sharing::Off,
            (false, _) => Sharing::Off,
            (true, false) => Sharing::Worker,
            (true, true) => Sharing::Tabs,
        };
        // What the shared worker needs to open the same connection.
        let config = if sharing == Sharing::Off {
            String::new()
        } else {
            let config = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&config, &"url".into(), &url.into());
            let _ = js_sys::Reflect::set(&config, &"options".into(), &options);
            js_sys::JSON::stringify(&config)
                .ok()
                .and_then(|text| text.as_string())
                .unwrap_or_default()
        };
        let shared = build(url, &parsed)?;
        let manual = parsed.config.transport == TransportChoice::Manual;
        shell::start(&shared, manual, sharing, &config, tick_ms(&parsed));
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

    /// The transport in use or being tried: `"websocket"`, `"sse"`, `"shared"` (another tab's
    /// connection, see `sharing`), or `undefined`.
    #[wasm_bindgen(
        getter,
        unchecked_return_type = "\"websocket\" | \"sse\" | \"shared\" | undefined"
    )]
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

    /// This tab's part in the browser's shared connection: `{ role, guests, worker }` with
    /// role `"host"` (this tab holds the connection; `guests` other clients use it),
    /// `"guest"` (the shared worker holds it, `worker: true`, or another tab) or `"off"`
    /// (`share: false`, or the browser cannot share).
    #[wasm_bindgen(getter, unchecked_return_type = "SharingInfo")]
    pub fn sharing(&self) -> JsValue {
        let Ok(inner) = self.shared.inner.try_borrow() else {
            return JsValue::UNDEFINED;
        };
        let (role, guests, worker) = inner.sharing();
        let info = serde_json::json!({ "role": role, "guests": guests, "worker": worker });
        convert::parse(&info.to_string())
    }

    /// The writes the relay has not answered yet, oldest first:
    /// `[{ writeId, stream, key, op, data }]` (with `persist`, these survive a reload).
    #[wasm_bindgen(getter, js_name = pendingWrites, unchecked_return_type = "PendingWrite[]")]
    pub fn pending_writes(&self) -> JsValue {
        let Ok(inner) = self.shared.inner.try_borrow() else {
            return JsValue::UNDEFINED;
        };
        let list: Vec<serde_json::Value> = inner
            .engine
            .pending_writes()
            .map(|publish| {
                serde_json::json!({
                    "writeId": publish.write_id,
                    "stream": publish.stream.as_str(),
                    "key": publish.key,
                    "op": publish.op.as_str(),
                    "data": publish.data,
                })
            })
            .collect();
        convert::parse(&serde_json::Value::Array(list).to_string())
    }

    /// Replaces the token. On a WebSocket it is sent at once (`auth`); after an
    /// authentication failure the client reconnects with it right away.
    #[wasm_bindgen(js_name = setToken)]
    pub fn set_token(&self, token: Option<String>) {
        let token = token.filter(|token| !token.is_empty());
        let weak = Rc::downgrade(&self.shared);
        drive(&self.shared, |inner| inner.set_token(token, &weak));
    }

    /// The live collection of `stream`, or with `{ where }` the view of the records of
    /// `stream` that the filter matches (the same object on every call with the same stream
    /// and filter). Collections of one stream share one subscription, for the union of their
    /// filters. Throws a `TidewireError` with code `bad_stream` for an invalid name,
    /// `bad_filter` for an invalid filter (or one on a raw channel), `bad_argument` for an
    /// unknown option, `closed` after `close()`.
    #[wasm_bindgen(unchecked_return_type = "LiveCollection")]
    pub fn collection(
        &self,
        stream: &str,
        #[wasm_bindgen(unchecked_optional_param_type = "CollectionOptions")] options: Option<
            js_sys::Object,
        >,
    ) -> Result<JsValue, JsValue> {
        let filter = collection_filter(options.as_ref())?;
        let text = match &filter {
            Some(value) => crate::engine::view::canonical(value)?
                .map(|(text, _)| text)
                .unwrap_or_default(),
            None => String::new(),
        };
        let key = (stream.to_owned(), text);
        if let Some(existing) = self.shared.collections.borrow().get(&key) {
            return Ok(existing.clone());
        }
        let view = drive(&self.shared, |inner| {
            inner.engine.open_view(stream, filter.as_ref())
        })
        .unwrap_or(Err(ClientError::Argument("re-entrant call".into())))?;
        let filter = (!key.1.is_empty()).then(|| key.1.clone());
        let value = JsValue::from(LiveCollection::new(
            Rc::clone(&self.shared),
            stream,
            view,
            filter,
        ));
        let records = crate::records::attach_records(&value);
        self.shared.records.borrow_mut().insert(view, records);
        self.shared
            .collections
            .borrow_mut()
            .insert(key, value.clone());
        Ok(value)
    }

    /// Listens to `"status"` (argument: `StatusInfo`), `"error"` (argument: a
    /// `TidewireError` the relay reported outside a write) or `"write"` (argument:
    /// `WriteEvent`, for every write confirmed or refused, including writes restored from
    /// storage, which have no promise). Returns a function that removes the listener.
    #[wasm_bindgen(unchecked_return_type = "() => void")]
    pub fn on(
        &self,
        #[wasm_bindgen(unchecked_param_type = "\"status\" | \"error\" | \"write\"")] event: &str,
        callback: Function,
    ) -> Result<JsValue, JsValue> {
        let kind = EventKind::client(event).ok_or_else(|| {
            ClientError::Argument(format!(
                "unknown client event \"{event}\" (use \"status\", \"error\" or \"write\")"
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
    pub fn inject(&self, text: JsValue) {
        let Some(string) = text.as_string() else {
            return;
        };
        drive(&self.shared, |inner| {
            crate::shell::receive(
                &self.shared,
                &mut inner.engine,
                &string,
                crate::browser::now(),
                Some(&text),
            );
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

/// The filter of `collection()`'s options (`{ where }`), as JSON.
fn collection_filter(options: Option<&js_sys::Object>) -> Result<Option<Value>, ClientError> {
    let Some(options) = options else {
        return Ok(None);
    };
    for name in js_sys::Object::keys(options).iter() {
        let name = name.as_string().unwrap_or_default();
        if name != "where" {
            return Err(ClientError::Argument(format!(
                "unknown collection option \"{name}\" (the only option is \"where\")"
            )));
        }
    }
    let filter = js_sys::Reflect::get(options, &"where".into()).unwrap_or(JsValue::UNDEFINED);
    if filter.is_undefined() || filter.is_null() {
        return Ok(None);
    }
    if !filter.is_object() || js_sys::Array::is_array(&filter) {
        return Err(ClientError::BadFilter(
            "bad filter at where: expected an object".into(),
        ));
    }
    convert::from_js(&filter)
        .map(Some)
        .map_err(|error| ClientError::BadFilter(format!("bad filter at where: {error}")))
}

/// Whether `value` (a record's value) matches the filter `where`, with the rules the relay
/// uses for views. Throws a `TidewireError` with code `bad_filter` for an invalid filter.
///
/// ```js
/// matches({ owner: "u1", prio: { gt: 2 } }, { owner: "u1", prio: 3 }); // true
/// ```
#[wasm_bindgen]
pub fn matches(
    #[wasm_bindgen(js_name = "where", unchecked_param_type = "Filter")] filter: JsValue,
    #[wasm_bindgen(unchecked_param_type = "unknown")] value: JsValue,
) -> Result<bool, JsValue> {
    let filter = convert::from_js(&filter)
        .map_err(|error| ClientError::BadFilter(format!("bad filter at where: {error}")))?;
    let filter = tidewire_shared::Filter::parse(&filter)
        .map_err(|error| ClientError::BadFilter(error.to_string()))?;
    let value = convert::from_js(&value)?;
    Ok(filter.matches(&value))
}

/// The client's state for `url` and `options`, not started.
pub(crate) fn build(url: &str, options: &Options) -> Result<Rc<Shared>, JsValue> {
    let base = page_href();
    let endpoints = Endpoints::parse(url, base.as_deref()).map_err(ClientError::Argument)?;
    let store = options
        .persist
        .map(|kind| Store::new(kind, &endpoints.http));
    let seed = (js_sys::Math::random() * 9_007_199_254_740_991.0) as u64;
    let mut config = options.config.clone();
    // Write ids must not collide across tabs, reloads and browsers: 104 random bits.
    let random = || (js_sys::Math::random() * 4_503_599_627_370_496.0) as u64;
    config.writer = Some(format!("{:013x}{:013x}", random(), random()));
    let engine = Engine::new(config, seed);
    Ok(Shared::new(engine, endpoints, options.token.clone(), store))
}

/// How often the client's timer ticks (keepalive and retries): a quarter of the keepalive,
/// between 1 and 5 seconds.
pub(crate) fn tick_ms(options: &Options) -> u32 {
    (options.config.keepalive_ms / 4.0).clamp(1000.0, 5000.0) as u32
}

/// The page's URL, to resolve a relative relay URL.
fn page_href() -> Option<String> {
    let global = js_sys::global();
    let location = js_sys::Reflect::get(&global, &"location".into()).ok()?;
    js_sys::Reflect::get(&location, &"href".into())
        .ok()?
        .as_string()
}
