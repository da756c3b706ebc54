//! The browser shell around the engine: executes its effects (sockets, fetch, snapshot pages,
//! timers, storage) and delivers its notifications to the application's callbacks.
//!
//! Every input goes through [`drive`]: borrow the state, feed the engine, run the I/O
//! effects, release the borrow, then call the application. Callbacks therefore run with no
//! borrow held and may call back into the client. Closures handed to the browser hold only a
//! `Weak` reference plus the connection's generation number, so a replaced connection's late
//! events are ignored and nothing keeps a closed client alive.

use litemap::LiteMap;
use std::cell::RefCell;
use std::rc::{Rc, Weak};

use js_sys::Array;
use wasm_bindgen::JsValue;

use crate::browser::{self, now, Listener, Timer};
use crate::convert;
use crate::engine::arrival::{Arrival, Place};
use crate::engine::effect::Effect;
use crate::engine::status::{State, TransportKind};
use crate::engine::{CloseInfo, Engine};
use crate::error::js_error;
use crate::listeners::{call, EventKind, Listeners};
use crate::parsed::Parsed;
use crate::pending;
use crate::persist::Store;
use crate::share::group::Group;
use crate::transport::pages::{self, PageReader};
use crate::transport::sse::{SseSignal, SseTransport};
use crate::transport::ws::{WsSignal, WsTransport};
use crate::transport::{http, Endpoints};

mod share;

/// How long writes to storage are delayed to batch bursts, in ms.
const PERSIST_DEBOUNCE_MS: u32 = 250;

/// State shared by the client object, its collections and the browser callbacks.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Engine and I/O handles. Borrowed only inside [`drive`] and for short reads; never
    /// while an application callback runs.
    pub(crate) inner: RefCell<Inner>,
    /// Application callbacks. Borrowed briefly; cloned out before calling.
    pub(crate) listeners: RefCell<Listeners>,
    /// The JavaScript `LiveCollection` objects handed out, by stream and canonical filter
    /// text (empty for none), so `collection(s, options)` returns the same object each time.
    /// Cleared on close (these hold the shared state strongly).
    pub(crate) collections: RefCell<LiteMap<(String, String), JsValue>>,
    /// Each collection's records as JavaScript objects (`js/records.js`), by view id.
    pub(crate) records: RefCell<LiteMap<u32, js_sys::Map>>,
    /// The messages of the input being handled, for JavaScript to parse once
    /// ([`crate::parsed`]).
    pub(crate) parsed: RefCell<Parsed>,
}

/// The current connection.
#[derive(Debug)]
enum Connection {
    None,
    WebSocket(WsTransport),
    /// Held for its `Drop`, which aborts the request.
    Sse {
        _request: SseTransport,
    },
    Manual,
    /// The link to the tab holding the browser's shared connection.
    Shared,
}

/// Engine plus the I/O it drives.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The sync engine.
    pub(crate) engine: Engine,
    endpoints: Endpoints,
    token: Option<String>,
    store: Option<Store>,
    connection: Connection,
    /// Incremented on every connect and disconnect; callbacks of older connections carry an
    /// older number and are ignored.
    generation: u32,
    retry: Option<Timer>,
    ticker: Option<Timer>,
    persist_timer: Option<Timer>,
    dirty: LiteMap<String, ()>,
    page: Vec<Listener>,
    /// Frames "sent" on the manual transport, for tests.
    pub(crate) sent: Vec<String>,
    /// The tabs sharing one connection, when sharing is on.
    group: Option<Group>,
    /// How this client shares, and its URL and options as JSON (for the shared worker).
    sharing: (Sharing, String),
    /// The refusal already passed on to the guests (a host's).
    told_refusal: bool,
}

impl Shared {
    /// Creates the shared state (not yet connected: call [`start`]).
    pub(crate) fn new(
        mut engine: Engine,
        endpoints: Endpoints,
        token: Option<String>,
        store: Option<Store>,
    ) -> Rc<Self> {
        engine.note_arrivals(true);
        Rc::new(Self {
            inner: RefCell::new(Inner {
                engine,
                endpoints,
                token,
                store,
                connection: Connection::None,
                generation: 0,
                retry: None,
                ticker: None,
                persist_timer: None,
                dirty: LiteMap::new(),
                page: Vec::new(),
                sent: Vec::new(),
                group: None,
                sharing: (Sharing::Off, String::new()),
                told_refusal: false,
            }),
            listeners: RefCell::new(Listeners::default()),
            collections: RefCell::new(LiteMap::new()),
            records: RefCell::new(LiteMap::new()),
            parsed: RefCell::new(Parsed::new()),
        })
    }
}

/// Feeds one input to the engine, runs the resulting I/O, then notifies the application.
/// Returns `None` if called re-entrantly (which the design prevents).
pub(crate) fn drive<R>(shared: &Rc<Shared>, input: impl FnOnce(&mut Inner) -> R) -> Option<R> {
    let (result, notes) = {
        let Ok(mut inner) = shared.inner.try_borrow_mut() else {
            return None;
        };
        let result = input(&mut inner);
        let notes = inner.run_effects(&Rc::downgrade(shared));
        (result, notes)
    };
    notify(shared, notes);
    if let Ok(mut parsed) = shared.parsed.try_borrow_mut() {
        parsed.end();
    }
    resolve_ready(shared);
    Some(result)
}

/// Hands the engine one message from the relay (`text`, at `time`), and notes the values it
/// brought for JavaScript to take from the message itself ([`crate::parsed`]). `message` is
/// the message as the JavaScript string it arrived as; without one, a string is made from
/// `text` only when the message brought values (that costs a decoding, as the changes' text
/// would). Not generic: one copy in the `.wasm`.
pub(crate) fn receive(
    shared: &Shared,
    engine: &mut Engine,
    text: &str,
    time: f64,
    message: Option<&JsValue>,
) {
    engine.on_text(text, time);
    let arrivals = engine.take_arrivals();
    if arrivals.len() == 0 {
        return;
    }
    if let Ok(mut parsed) = shared.parsed.try_borrow_mut() {
        match message {
            Some(message) => parsed.add(message, arrivals),
            None => parsed.add(&JsValue::from_str(text), arrivals),
        }
    }
}

/// Forgets the messages noted for JavaScript: the connection (or the host) that was sending
/// them is gone, so a snapshot they began will not be finished.
pub(crate) fn forget_messages(shared: &Shared) {
    if let Ok(mut parsed) = shared.parsed.try_borrow_mut() {
        parsed.clear();
    }
}

/// Notes the records of a snapshot read over HTTP pages, each page as the JavaScript string
/// it arrived as, for the input that loads it ([`crate::parsed`]).
fn note_pages(shared: &Rc<Shared>, loaded: &pages::Loaded) {
    let Ok(mut parsed) = shared.parsed.try_borrow_mut() else {
        return;
    };
    let mut records = loaded.snapshot.records.iter();
    for (page, count) in &loaded.pages {
        let arrivals = (0u32..)
            .zip(records.by_ref().take(*count))
            .map(|(index, record)| Arrival {
                value: record.data.clone(),
                place: Place::Record { index, last: true },
            });
        parsed.add(page, arrivals.collect::<Vec<_>>().into_iter());
    }
}

/// How a client shares its connection with the other tabs of its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// It does not (`share: false`, the manual transport, or the shared worker itself).
    Off,
    /// Through the package's shared worker, or an elected tab where there is none.
    Worker,
    /// Through an elected tab (`share: "tabs"`).
    Tabs,
}

/// Starts the client: page listeners, keepalive ticker, sharing, first connection.
/// `config` is the client's URL and options as JSON, for the shared worker.
pub(crate) fn start(
    shared: &Rc<Shared>,
    manual: bool,
    sharing: Sharing,
    config: &str,
    tick_ms: u32,
) {
    let weak = Rc::downgrade(shared);
    drive(shared, |inner| {
        inner.sharing = (sharing, config.to_owned());
        if sharing != Sharing::Off {
            inner.join_group(&weak);
        }
        inner.engine.set_online(browser::navigator_online(), now());
        inner.engine.set_visible(browser::page_visible(), now());
        if !manual {
            inner.listen_to_page(&weak);
            let tick = weak.clone();
            inner.ticker = Some(Timer::every(tick_ms, move || {
                if let Some(shared) = tick.upgrade() {
                    drive(&shared, |inner| inner.engine.tick(now()));
                }
            }));
        }
        inner.engine.start(now());
        inner.adopt_stored_writes(&weak);
    });
}

/// Closes the client: engine, connection, timers, listeners, persistence flush; then
/// notifies (status `closed`, rejected writes) and forgets every callback.
pub(crate) fn close(shared: &Rc<Shared>) {
    drive(shared, |inner| {
        inner.engine.close();
    });
    if let Ok(mut inner) = shared.inner.try_borrow_mut() {
        inner.flush_persist();
        inner.group = None;
        inner.connection = Connection::None;
        inner.retry = None;
        inner.ticker = None;
        inner.persist_timer = None;
        inner.page.clear();
    }
    let rejects = shared.listeners.borrow_mut().clear();
    let error = js_error("closed", "the client was closed");
    for reject in rejects {
        call(&reject, "reject", &error);
    }
    shared.collections.borrow_mut().clear();
}

impl Inner {
    /// The token in force.
    pub(crate) fn set_token(&mut self, token: Option<String>, weak: &Weak<Shared>) {
        self.token = token;
        if self.group.is_some() {
            // Tabs with another token share another connection.
            self.regroup(weak);
        }
        let token = self.token.clone().unwrap_or_default();
        self.engine.token_changed(&token);
    }

    fn listen_to_page(&mut self, weak: &Weak<Shared>) {
        if let Some(global) = browser::global_target() {
            for (kind, online) in [("online", true), ("offline", false)] {
                let weak = weak.clone();
                self.page.push(Listener::new(&global, kind, move |_| {
                    if let Some(shared) = weak.upgrade() {
                        drive(&shared, |inner| inner.engine.set_online(online, now()));
                    }
                }));
            }
            let weak_hide = weak.clone();
            self.page.push(Listener::new(&global, "pagehide", move |_| {
                if let Some(shared) = weak_hide.upgrade() {
                    drive(&shared, |inner| {
                        inner.flush_persist();
                        inner.leave_group();
                    });
                }
            }));
            // Back from the back/forward cache: join the tabs again.
            let weak_show = weak.clone();
            self.page
                .push(Listener::new(&global, "pageshow", move |event| {
                    let persisted = js_sys::Reflect::get(&event, &"persisted".into())
                        .ok()
                        .and_then(|value| value.as_bool())
                        .unwrap_or(false);
                    if let Some(shared) = weak_show.upgrade().filter(|_| persisted) {
                        let weak = Rc::downgrade(&shared);
                        drive(&shared, |inner| inner.rejoin_group(&weak));
                    }
                }));
        }
        if let Some(document) = browser::document() {
            let weak = weak.clone();
            self.page
                .push(Listener::new(&document, "visibilitychange", move |_| {
                    if let Some(shared) = weak.upgrade() {
                        drive(&shared, |inner| {
                            inner.engine.set_visible(browser::page_visible(), now())
                        });
                    }
                }));
        }
    }

    /// Runs I/O effects until the engine has nothing more to say; returns the notifications.
    fn run_effects(&mut self, weak: &Weak<Shared>) -> Vec<Effect> {
        let mut notes = Vec::new();
        loop {
            let effects = self.engine.take_effects();
            if effects.is_empty() {
                // Answering guests reads the engine only: no new effects.
                self.host_idle();
                return notes;
            }
            for effect in effects {
                let Some(effect) = self.host_effect(effect) else {
                    continue;
                };
                match effect {
                    Effect::Connect(kind) => self.connect(kind, weak),
                    Effect::Disconnect => {
                        self.generation = self.generation.wrapping_add(1);
                        if matches!(self.connection, Connection::Shared) {
                            self.disconnect_shared();
                        }
                        self.connection = Connection::None;
                    }
                    Effect::Send(text) => match &self.connection {
                        // A failed send means the socket is closing: its close event follows.
                        Connection::WebSocket(socket) => {
                            socket.send(&text);
                        }
                        Connection::Manual => self.sent.push(text),
                        Connection::Shared => self.send_shared(&text),
                        _ => {}
                    },
                    Effect::Post {
                        id,
                        stream,
                        body,
                        write_id,
                    } => self.post(id, &stream, body, write_id, weak),
                    Effect::RetryIn(milliseconds) => {
                        let weak = weak.clone();
                        self.retry = Some(Timer::once(milliseconds, move || {
                            if let Some(shared) = weak.upgrade() {
                                drive(&shared, |inner| inner.engine.on_retry_timer(now()));
                            }
                        }));
                    }
                    Effect::CancelRetry => self.retry = None,
                    Effect::Probe(stream) => self.probe(&stream, weak),
                    Effect::Restore(stream) => self.restore(stream, weak),
                    Effect::FetchSnapshot { stream, id, filter } => {
                        self.fetch_snapshot(stream, id, filter.as_ref(), weak);
                    }
                    Effect::Attach(view) => {
                        let weak = weak.clone();
                        // A microtask later, so listeners added right after `collection()`
                        // hear the view's first records.
                        wasm_bindgen_futures::spawn_local(async move {
                            if let Some(shared) = weak.upgrade() {
                                drive(&shared, |inner| inner.engine.attach_view(view));
                            }
                        });
                    }
                    Effect::Persist(stream) => {
                        self.dirty.insert(stream, ());
                        if self.persist_timer.is_none() {
                            let weak = weak.clone();
                            self.persist_timer =
                                Some(Timer::once(PERSIST_DEBOUNCE_MS, move || {
                                    if let Some(shared) = weak.upgrade() {
                                        if let Ok(mut inner) = shared.inner.try_borrow_mut() {
                                            inner.persist_timer = None;
                                            inner.flush_persist();
                                        }
                                    }
                                }));
                        }
                    }
                    Effect::PersistWrites => {
                        if let Some(store) = &self.store {
                            let text = pending::encode(self.engine.pending_writes());
                            store.save_writes(self.engine.writer(), &text);
                        }
                    }
                    note => notes.push(note),
                }
            }
        }
    }

    fn connect(&mut self, kind: TransportKind, weak: &Weak<Shared>) {
        self.generation = self.generation.wrapping_add(1);
        self.connection = Connection::None;
        let generation = self.generation;
        match kind {
            TransportKind::Manual => self.connection = Connection::Manual,
            TransportKind::Shared => self.connect_shared(),
            TransportKind::WebSocket => {
                let mut url = format!("{}/v1/ws", self.endpoints.ws);
                if let Some(token) = &self.token {
                    url.push_str("?access_token=");
                    url.push_str(&String::from(js_sys::encode_uri_component(token)));
                }
                let weak = weak.clone();
                let sink = move |signal: WsSignal| {
                    if let Some(shared) = weak.upgrade() {
                        on_ws_signal(&shared, generation, signal);
                    }
                };
                match WsTransport::open(&url, sink) {
                    Ok(socket) => self.connection = Connection::WebSocket(socket),
                    Err(reason) => {
                        let info = CloseInfo {
                            reason,
                            code: Some("connect_failed".into()),
                            ..CloseInfo::default()
                        };
                        self.engine.on_closed(info, now());
                    }
                }
            }
            TransportKind::Sse => {
                let streams = self.engine.sse_streams();
                let mut url = format!("{}/v1/sse", self.endpoints.http);
                let mut cursor = tidewire_shared::Cursor::default();
                for (index, (stream, position, filter)) in streams.iter().enumerate() {
                    let stream_param = String::from(js_sys::encode_uri_component(stream));
                    url.push(if index == 0 { '?' } else { '&' });
                    url.push_str("stream=");
                    url.push_str(&stream_param);
                    if let Some(filter) = filter {
                        url.push_str("&where.");
                        url.push_str(&stream_param);
                        url.push('=');
                        url.push_str(&String::from(js_sys::encode_uri_component(
                            &filter.to_string(),
                        )));
                    }
                    if let (Some(position), Ok(name)) =
                        (position, tidewire_shared::StreamName::new(stream))
                    {
                        cursor.set(&name, *position);
                    }
                }
                let cursor = (!cursor.entries.is_empty()).then(|| cursor.encode());
                let weak = weak.clone();
                let sink = move |signal: SseSignal| {
                    if let Some(shared) = weak.upgrade() {
                        on_sse_signal(&shared, generation, signal);
                    }
                };
                let transport = SseTransport::open(url, self.token.clone(), cursor, Rc::new(sink));
                self.connection = Connection::Sse {
                    _request: transport,
                };
            }
        }
    }

    fn post(
        &mut self,
        id: String,
        stream: &str,
        body: String,
        write_id: Option<String>,
        weak: &Weak<Shared>,
    ) {
        let url = format!(
            "{}/v1/streams/{}/events",
            self.endpoints.http,
            String::from(js_sys::encode_uri_component(stream))
        );
        let token = self.token.clone();
        let weak = weak.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let result = http::post_event(&url, token.as_deref(), &body, write_id.as_deref()).await;
            if let Some(shared) = weak.upgrade() {
                drive(&shared, |inner| inner.engine.on_post_result(&id, result));
            }
        });
    }

    fn probe(&mut self, stream: &str, weak: &Weak<Shared>) {
        let url = format!(
            "{}/v1/sse?stream={}",
            self.endpoints.http,
            String::from(js_sys::encode_uri_component(stream))
        );
        let token = self.token.clone();
        let weak = weak.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let (status, code, reason) = http::probe(&url, token.as_deref()).await;
            if let Some(shared) = weak.upgrade() {
                drive(&shared, |inner| inner.engine.on_probe(status, code, reason));
            }
        });
    }

    fn restore(&mut self, stream: String, weak: &Weak<Shared>) {
        let Some(store) = self.store.clone() else {
            self.engine.restored(&stream, None);
            return;
        };
        let weak = weak.clone();
        // Always asynchronous, even for localStorage, so the application can attach its
        // listeners right after `collection()` and still see the restored records.
        wasm_bindgen_futures::spawn_local(async move {
            let stored = store.load(&stream).await;
            if let Some(shared) = weak.upgrade() {
                drive(&shared, |inner| inner.engine.restored(&stream, stored));
            }
        });
    }

    /// Reads the write queues stored by earlier pages (or other tabs) of this relay, hands
    /// their writes to the engine, and removes the queues adopted (the engine stores them
    /// again under this client's own entry).
    fn adopt_stored_writes(&mut self, weak: &Weak<Shared>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let weak = weak.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let queues = store.load_writes().await;
            if queues.is_empty() {
                return;
            }
            let Some(shared) = weak.upgrade() else {
                return;
            };
            drive(&shared, |inner| {
                let own = inner.engine.writer().to_owned();
                let mut writes = Vec::new();
                for (writer, text) in &queues {
                    if *writer != own {
                        writes.extend(pending::decode(text));
                    }
                }
                inner.engine.restore_writes(writes);
                // The adopted writes are stored under this client's entry by now (storage
                // requests run in order); the old entries go.
                for (writer, _) in queues.iter().filter(|(writer, _)| *writer != own) {
                    store.save_writes(writer, "[]");
                }
            });
        });
    }

    /// Loads a snapshot over HTTP, page by page, and hands it to the engine (which subscribes
    /// from its position). Stops between pages once the engine no longer wants it.
    fn fetch_snapshot(
        &mut self,
        stream: String,
        id: u32,
        filter: Option<&serde_json::Value>,
        weak: &Weak<Shared>,
    ) {
        let reader = PageReader::new(&self.endpoints.http, &stream, filter);
        let token = self.token.clone();
        let weak = weak.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let wanted = || {
                weak.upgrade().is_some_and(|shared| {
                    shared
                        .inner
                        .try_borrow()
                        .is_ok_and(|inner| inner.engine.fetch_wanted(&stream, id))
                })
            };
            let result = pages::load(reader, token.as_deref(), wanted).await;
            if let Some(shared) = weak.upgrade() {
                let result = result.map(|loaded| {
                    note_pages(&shared, &loaded);
                    loaded.snapshot
                });
                drive(&shared, |inner| {
                    inner.engine.snapshot_fetched(&stream, id, result);
                });
            }
        });
    }

    /// Writes every changed stream to storage now.
    pub(crate) fn flush_persist(&mut self) {
        let Some(store) = &self.store else {
            self.dirty.clear();
            return;
        };
        for (stream, ()) in std::mem::take(&mut self.dirty) {
            if let Some((scope, snapshot)) = self.engine.persistable(&stream) {
                store.save(&stream, &scope, &snapshot);
            }
        }
    }
}

fn on_ws_signal(shared: &Rc<Shared>, generation: u32, signal: WsSignal) {
    drive(shared, |inner| {
        if inner.generation != generation {
            return;
        }
        match signal {
            WsSignal::Open => inner.engine.on_open(now()),
            WsSignal::Text(message) => {
                if let Some(text) = message.as_string() {
                    receive(shared, &mut inner.engine, &text, now(), Some(&message));
                }
            }
            WsSignal::Closed { code, reason } => {
                inner.connection = Connection::None;
                forget_messages(shared);
                let info = CloseInfo {
                    close_code: Some(code),
                    reason,
                    ..CloseInfo::default()
                };
                inner.engine.on_closed(info, now());
            }
        }
    });
}

fn on_sse_signal(shared: &Rc<Shared>, generation: u32, signal: SseSignal) {
    drive(shared, |inner| {
        if inner.generation != generation {
            return;
        }
        match signal {
            SseSignal::Open => inner.engine.on_open(now()),
            SseSignal::Messages(messages) => {
                let time = now();
                inner.engine.on_activity(time);
                for text in messages {
                    receive(shared, &mut inner.engine, &text, time, None);
                }
            }
            SseSignal::Closed(info) => {
                inner.connection = Connection::None;
                forget_messages(shared);
                inner.engine.on_closed(info, now());
            }
        }
    });
}

/// Delivers notifications to the application's callbacks (no state borrowed).
fn notify(shared: &Rc<Shared>, notes: Vec<Effect>) {
    for note in notes {
        match note {
            Effect::Changes {
                view,
                changes,
                origin,
                ..
            } => {
                // Views without a collection (a host's views for its guests) have no
                // records in JavaScript.
                let Some(records) = shared.records.borrow().get(&view).cloned() else {
                    continue;
                };
                let callbacks = shared.listeners.borrow_mut().change_array(view);
                let origin = crate::records::origin_js(origin);
                // (Never borrowed here in practice; if it were, every change goes as text.)
                let parsed = shared.parsed.try_borrow().ok();
                let (plan, text) = match parsed.as_ref().and_then(|parsed| parsed.plan(&changes)) {
                    Some(plan) => {
                        let text =
                            (!plan.text.is_empty()).then(|| convert::changes_json(&plan.text));
                        (plan.numbers, text)
                    }
                    None => (Vec::new(), Some(convert::changes_json(&changes))),
                };
                let messages = parsed.map_or_else(Array::new, |parsed| parsed.messages().clone());
                crate::records::apply_changes(
                    &records, text, &origin, &callbacks, &plan, &messages,
                );
            }
            Effect::Message {
                view, key, data, ..
            } => {
                let callbacks = shared
                    .listeners
                    .borrow()
                    .view_callbacks(view, EventKind::Message);
                if callbacks.is_empty() {
                    continue;
                }
                let mut text = tidewire_shared::json::ObjectWriter::new();
                text.str("key", &key).raw("data", data.as_str());
                let message = convert::parse(&text.finish());
                for callback in &callbacks {
                    call(callback, "message", &message);
                }
            }
            Effect::Presence(stream) => {
                let callbacks = shared
                    .listeners
                    .borrow()
                    .callbacks(Some(&stream), EventKind::Presence);
                if callbacks.is_empty() {
                    continue;
                }
                let members = presence_js(shared, &stream);
                for callback in &callbacks {
                    call(callback, "presence", &members);
                }
            }
            Effect::Resync { stream, reason } => {
                let callbacks = shared
                    .listeners
                    .borrow()
                    .callbacks(Some(&stream), EventKind::Resync);
                let event = convert::parse(&serde_json::json!({ "reason": reason }).to_string());
                for callback in &callbacks {
                    call(callback, "resync", &event);
                }
            }
            Effect::StreamError {
                stream,
                code,
                message,
            } => {
                let scope = (!stream.is_empty()).then_some(stream.as_str());
                let mut callbacks = shared.listeners.borrow().callbacks(scope, EventKind::Error);
                if callbacks.is_empty() && scope.is_some() {
                    callbacks = shared.listeners.borrow().callbacks(None, EventKind::Error);
                }
                let error = js_error(&code, &message);
                if let Some(name) = scope {
                    let _ = js_sys::Reflect::set(&error, &"stream".into(), &name.into());
                }
                if callbacks.is_empty() {
                    browser::report_unhandled(&error);
                }
                for callback in &callbacks {
                    call(callback, "error", &error);
                }
            }
            Effect::Status(status) => {
                let callbacks = shared.listeners.borrow().callbacks(None, EventKind::Status);
                if callbacks.is_empty() {
                    continue;
                }
                let info = convert::parse(&status.to_json());
                for callback in &callbacks {
                    call(callback, "status", &info);
                }
            }
            Effect::WriteSettled(outcome) => {
                let callbacks = shared.listeners.borrow().callbacks(None, EventKind::Write);
                if callbacks.is_empty() {
                    continue;
                }
                let event = convert::parse(&convert::write_outcome_json(&outcome));
                for callback in &callbacks {
                    call(callback, "write", &event);
                }
            }
            Effect::Resolve { id, seq } => {
                let pending = shared.listeners.borrow_mut().pending.remove(&id);
                if let Some((resolve, _)) = pending {
                    call(&resolve, "resolve", &JsValue::from_f64(seq as f64));
                }
            }
            Effect::Reject { id, code, message } => {
                let pending = shared.listeners.borrow_mut().pending.remove(&id);
                if let Some((_, reject)) = pending {
                    call(&reject, "reject", &js_error(&code, &message));
                }
            }
            _ => {}
        }
    }
}

/// Resolves the `ready()` promises whose stream (or client) is now live.
fn resolve_ready(shared: &Rc<Shared>) {
    if shared.listeners.borrow().ready.is_empty() {
        return;
    }
    let Ok(inner) = shared.inner.try_borrow() else {
        return;
    };
    let live = |scope: &Option<u32>| match scope {
        Some(view) => inner.engine.is_view_live(*view),
        None => inner.engine.status().state == State::Live,
    };
    let mut resolved = Vec::new();
    shared
        .listeners
        .borrow_mut()
        .ready
        .retain(|(scope, resolve, _)| {
            let done = live(scope);
            if done {
                resolved.push(resolve.clone());
            }
            !done
        });
    drop(inner);
    for resolve in resolved {
        call(&resolve, "ready", &JsValue::UNDEFINED);
    }
}

/// The presence set as `[{client, data, self}]`.
pub(crate) fn presence_js(shared: &Rc<Shared>, stream: &str) -> JsValue {
    let Ok(inner) = shared.inner.try_borrow() else {
        return Array::new().into();
    };
    let me = inner.engine.presence_id();
    let members: Vec<serde_json::Value> = inner
        .engine
        .presence(stream)
        .map(|members| {
            members
                .iter()
                .map(|(client, data)| {
                    serde_json::json!({ "client": client, "data": data, "self": Some(client.as_str()) == me })
                })
                .collect()
        })
        .unwrap_or_default();
    convert::parse(&serde_json::Value::Array(members).to_string())
}
