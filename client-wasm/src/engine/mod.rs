//! The sans-IO sync engine: every decision of the browser client, with no browser in sight.
//!
//! The shell (`client.rs`) feeds it inputs (connection opened or closed, message text,
//! timers, online/visibility changes, application writes) and executes the [`Effect`]s it
//! returns. Because nothing here touches the network, the rules are tested natively:
//!
//! * reconnection: exponential backoff with full jitter, forever, reset once live; paused
//!   while the browser is offline (or the page hidden, by default) and resumed at once when
//!   it comes back; stopped after an authentication refusal until a new token is set;
//! * transports: WebSocket first; in `auto` mode a WebSocket that cannot even open is
//!   followed at once by SSE, which is then kept (writes go over HTTP POST);
//! * resume: each stream resubscribes with `since` = its last applied `(epoch, seq)`;
//!   `resync` or an epoch change reloads a snapshot (reported as a resync plus changes); a
//!   gap asks for a replay; events at or below the applied seq are dropped by the shared
//!   [`Collection`](tidewire_shared::Collection), so a change is never reported twice.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`arrival`] | the values a message brought, for the shell to hand on as parsed |
//! | [`effect`] | what the shell must do |
//! | [`status`] | the status shown to the application |
//! | `stream` | one stream's state |
//! | [`view`] | the collections of a stream: one subscription for the union of their filters |
//! | `backoff` | reconnection delays |
//! | `link` | connecting, closing, retrying, keepalive |
//! | `receive` | handling the relay's messages |
//! | [`fetch`] | snapshots over HTTP pages (`snapshot: "http"`), then a resume with `since` |
//! | [`writes`] | a write's life: optimistic, sent again until answered, confirmed or refused |
//! | `optimistic` | the values pending writes show over a stream's records |
//! | `sharing` | guest and host roles of one connection per browser |

pub mod arrival;
pub mod effect;
pub mod fetch;
pub mod status;
pub mod view;
pub mod writes;

mod backoff;
mod link;
mod optimistic;
mod receive;
mod sharing;
mod stream;

use std::collections::BTreeMap;

use litemap::LiteMap;

use serde_json::Value;
use tidewire_shared::ending::Reconnect;
use tidewire_shared::message::ClientMessage;
use tidewire_shared::{Json, Position, Snapshot, StreamName};

use self::backoff::Backoff;
use self::effect::{Effect, Origin};
use self::status::{State, Status, TransportKind};
use self::stream::{Phase, StreamState};
use self::view::{Scope, View, ViewRead};
use self::writes::{Inflight, Queue};
use crate::error::ClientError;

/// Which transports the client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// WebSocket, falling back to SSE when a WebSocket cannot open. Default.
    #[default]
    Auto,
    /// WebSocket only.
    WebSocket,
    /// SSE only (writes over HTTP).
    Sse,
    /// No network (tests and benchmarks inject messages).
    Manual,
}

/// How a stream that has nothing to resume from gets its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotVia {
    /// In its subscription (`snapshot` messages on the WebSocket or SSE). Default.
    #[default]
    Socket,
    /// Over HTTP pages (`GET /v1/streams/{s}/snapshot`), then a subscription with `since`
    /// (see [`fetch`]).
    Http,
}

/// Engine settings. Every field has a default (see [`Config::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Transports allowed. Default: auto.
    pub transport: TransportChoice,
    /// How snapshots are loaded. Default: in the subscription.
    pub snapshot: SnapshotVia,
    /// Whether collections are persisted and restored. Default: false.
    pub persist: bool,
    /// Cap of the first reconnect delay, ms. Default: 500.
    pub backoff_initial_ms: f64,
    /// Largest reconnect delay, ms. Default: 15 000.
    pub backoff_max_ms: f64,
    /// Whether reconnect attempts wait while the page is hidden. Default: true. A live
    /// connection is kept while hidden either way.
    pub pause_when_hidden: bool,
    /// Keepalive interval, ms: a ping is sent after this much silence on a WebSocket, and
    /// a connection silent for 2.5 times as long (3 times on SSE) is replaced. Default: 20 000.
    pub keepalive_ms: f64,
    /// How long a connection attempt may take before it counts as failed, ms. Default: 10 000.
    pub connect_timeout_ms: f64,
    /// Most writes unanswered at once; more fail with `queue_full`. Default: 1 000.
    pub max_pending_writes: usize,
    /// The prefix of this client's write ids: unique per client instance (the shell uses 16
    /// random bytes). Default: derived from the jitter seed.
    pub writer: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            transport: TransportChoice::Auto,
            snapshot: SnapshotVia::Socket,
            persist: false,
            backoff_initial_ms: backoff::DEFAULT_INITIAL_MS,
            backoff_max_ms: backoff::DEFAULT_MAX_MS,
            pause_when_hidden: true,
            keepalive_ms: 20_000.0,
            connect_timeout_ms: 10_000.0,
            max_pending_writes: writes::DEFAULT_MAX_PENDING_WRITES,
            writer: None,
        }
    }
}

/// The state of the connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    /// No connection; a retry may be scheduled.
    Down,
    /// An attempt is under way since `since_ms`.
    Connecting { kind: TransportKind, since_ms: f64 },
    /// Open.
    Open { kind: TransportKind },
}

/// The last failure, shown in the status while reconnecting.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    reason: String,
    code: Option<String>,
    close_code: Option<u16>,
}

/// The relay refused this client: it does not reconnect until the application gives it a new
/// token (`NewToken`), or ever (`Never`).
#[derive(Debug, Clone)]
struct Refused {
    failure: Failure,
    reconnect: Reconnect,
}

/// Counters for tests and diagnostics (`client.stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events dropped because their seq was already applied.
    pub duplicates: u64,
    /// Gaps detected (each triggers a replay).
    pub gaps: u64,
    /// Snapshot reloads after the first snapshot of a stream.
    pub resyncs: u64,
    /// Connections opened.
    pub connections: u64,
    /// Messages that could not be decoded (ignored).
    pub malformed: u64,
}

/// How a connection ended, as the shell observed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloseInfo {
    /// Whether the connection had opened.
    pub opened: bool,
    /// The WebSocket close code, if one was received.
    pub close_code: Option<u16>,
    /// The HTTP status of a failed SSE request, if any.
    pub http_status: Option<u16>,
    /// An error code from the response body, if any.
    pub code: Option<String>,
    /// Human-readable reason.
    pub reason: String,
}

/// The sync engine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    streams: LiteMap<String, StreamState>,
    link: Link,
    online: bool,
    visible: bool,
    /// Set when the relay refused us (the shared `ending` rule): no retry until
    /// `token_changed` when a new token can help, never otherwise.
    refused: Option<Refused>,
    /// The last ending asked to come back later: the next retry waits at least
    /// `LATER_MIN_MS`.
    retry_later: bool,
    /// Set while the relay reports it lost PostgreSQL.
    degraded: Option<String>,
    last_failure: Option<Failure>,
    backoff: Backoff,
    retry_in: Option<u32>,
    /// In auto mode, the last WebSocket attempt failed before opening: the next attempt of
    /// this round is SSE.
    ws_failed_this_round: bool,
    /// In auto mode, how many rounds in a row a WebSocket could not open but SSE could.
    ws_fallbacks: u32,
    /// In auto mode, SSE worked twice in a row after a WebSocket could not open: stay on SSE.
    ws_blocked: bool,
    /// Another tab or a worker holds the connection: connect to it ([`TransportKind::Shared`]).
    guest: bool,
    /// This engine's connection is shared with other tabs: report what it applies
    /// ([`Effect::Tap`]).
    hosting: bool,
    /// Writes not sent yet, in order.
    queued: Queue,
    inflight: Inflight,
    /// A write failed in a way that may pass: the queue waits for the next tick.
    writes_held: bool,
    /// The prefix of write ids.
    writer: String,
    /// Writes made for a guest tab (see [`Engine::write_with`]), not shown here.
    unshown: Vec<String>,
    next_op: u64,
    status: Status,
    closed: bool,
    effects: Vec<Effect>,
    rng: u64,
    last_received_ms: f64,
    now_ms: f64,
    presence_id: Option<String>,
    stats: Stats,
    next_view: u32,
    /// The id of the last HTTP snapshot load started (see [`fetch`]).
    next_fetch: u32,
    /// Whether to note the values messages bring ([`arrival`]).
    noting: bool,
    /// The values noted since the shell last took them.
    arrived: Vec<arrival::Arrival>,
}

impl Engine {
    /// A new engine; `seed` feeds the jitter (any value; the shell uses `Math.random`).
    pub fn new(config: Config, seed: u64) -> Self {
        let backoff = backoff::from_ms(config.backoff_initial_ms, config.backoff_max_ms);
        let writer = config
            .writer
            .clone()
            .unwrap_or_else(|| format!("{:016x}", (seed | 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        Self {
            config,
            streams: LiteMap::new(),
            link: Link::Down,
            online: true,
            visible: true,
            refused: None,
            retry_later: false,
            degraded: None,
            last_failure: None,
            backoff,
            retry_in: None,
            ws_failed_this_round: false,
            ws_fallbacks: 0,
            ws_blocked: false,
            guest: false,
            hosting: false,
            queued: Queue::new(),
            inflight: Inflight::default(),
            writes_held: false,
            writer,
            unshown: Vec::new(),
            next_op: 0,
            status: Status::connecting(),
            closed: false,
            effects: Vec::new(),
            rng: seed | 1,
            last_received_ms: 0.0,
            now_ms: 0.0,
            presence_id: None,
            stats: Stats::default(),
            next_view: 0,
            next_fetch: 0,
            noting: false,
            arrived: Vec::new(),
        }
    }

    /// Takes the effects produced so far, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The current status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The relay's presence id for this connection, once connected.
    pub fn presence_id(&self) -> Option<&str> {
        self.presence_id.as_deref()
    }

    /// The transport of the open connection or the attempt under way.
    pub fn transport(&self) -> Option<TransportKind> {
        match self.link {
            Link::Down => None,
            Link::Connecting { kind, .. } | Link::Open { kind } => Some(kind),
        }
    }

    /// Starts connecting (call once, after construction).
    pub fn start(&mut self, now_ms: f64) {
        self.now_ms = now_ms;
        self.connect_now();
        self.update_status();
    }

    /// Adds a stream (idempotent) with its unfiltered view. With persistence, its stored
    /// state is read first.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadStream`] for an invalid name; [`ClientError::Closed`] after `close`.
    pub fn open_stream(&mut self, name: &str) -> Result<(), ClientError> {
        self.open_view(name, None).map(drop)
    }

    /// The view of `stream` with `filter` (`None`: every record), added if new; returns its
    /// id (the same for the same stream and filter, in any key order). A new filter widens
    /// the stream's subscription to the union of its views' filters, from a fresh snapshot.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadStream`] for an invalid name; [`ClientError::BadFilter`] for a
    /// filter the relay would refuse, a filter on a raw channel, or a union of filters over
    /// the bounds; [`ClientError::Closed`] after `close`.
    pub fn open_view(&mut self, name: &str, filter: Option<&Value>) -> Result<u32, ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let stream = StreamName::new(name).map_err(|error| ClientError::BadStream {
            stream: name.chars().take(80).collect(),
            reason: error.to_string(),
        })?;
        let parsed = match filter {
            Some(value) => view::canonical(value)?,
            None => None,
        };
        if parsed.is_some() && stream.kind() == tidewire_shared::StreamKind::Raw {
            return Err(ClientError::BadFilter(format!(
                "bad filter at where: {name} is a raw channel, which has no records to filter"
            )));
        }
        let (key, filter) = parsed.unzip();
        if let Some(state) = self.streams.get(name) {
            if let Some(view) = state.views.iter().find(|view| view.key == key) {
                return Ok(view.id);
            }
        }
        self.next_view += 1;
        let view = View {
            id: self.next_view,
            key,
            filter,
            loaded: false,
        };
        let id = view.id;
        let Some(state) = self.streams.get_mut(name) else {
            let phase = if self.config.persist {
                Phase::Loading
            } else {
                Phase::Idle
            };
            let mut state = StreamState::new(stream, phase);
            state.views.push(view);
            state.scope = state.union();
            self.streams.insert(name.to_owned(), state);
            self.overlay_pending(name);
            if self.config.persist {
                self.effects.push(Effect::Restore(name.to_owned()));
            } else {
                self.subscribe_added(name);
            }
            self.update_status();
            return Ok(id);
        };
        let covered = state.has_baseline && state.data.covers(view.key.as_deref());
        state.views.push(view);
        let union = state.union();
        if let Err(error) = view::check_union(name, &union) {
            state.views.pop();
            self.next_view -= 1;
            return Err(error);
        }
        if covered {
            // Shown from the records already here, once the application had a chance to
            // listen (the shell answers with `attach_view`).
            self.effects.push(Effect::Attach(id));
        }
        if union != state.scope {
            state.scope = union;
            self.scope_changed(name);
        }
        self.update_status();
        Ok(id)
    }

    /// The union of `stream`'s filters changed: subscribe again for it, from a snapshot.
    fn scope_changed(&mut self, stream: &str) {
        let Some(state) = self.streams.get(stream) else {
            return;
        };
        match (self.link, state.phase) {
            (
                Link::Open {
                    kind: TransportKind::Sse,
                }
                | Link::Connecting {
                    kind: TransportKind::Sse,
                    ..
                },
                Phase::Idle | Phase::Subscribing | Phase::Live,
            ) => self.reconnect_now(),
            // A snapshot under way (or the subscription is live): ask for the new union now,
            // and ignore what the older subscription still sends until its snapshot.
            (Link::Open { .. }, Phase::Live) => self.subscribe(stream),
            (Link::Open { .. }, Phase::Subscribing) if state.fresh_in_flight => {
                self.subscribe(stream);
            }
            // A resume under way: it may or may not bring a snapshot, so the new union is
            // asked for once it is live (`on_subscribed`). Otherwise the next subscription
            // asks for the new union anyway.
            _ => {}
        }
    }

    /// A view made over records already here can be shown: its records arrive as `snapshot`
    /// changes. (Answer to [`Effect::Attach`].)
    pub fn attach_view(&mut self, id: u32) {
        let Some(state) = self
            .streams
            .iter_mut()
            .map(|(_, value)| value)
            .find(|state| state.views.iter().any(|view| view.id == id))
        else {
            return;
        };
        let name = state.name.to_string();
        let Some(view) = state.views.iter_mut().find(|view| view.id == id) else {
            return;
        };
        if view.loaded || !state.has_baseline || !state.data.covers(view.key.as_deref()) {
            return;
        }
        view.loaded = true;
        self.show_whole(&name, &[id], Origin::Snapshot);
    }

    /// Read access to view `id` (`None` if there is no such view). A view not shown yet reads
    /// as empty.
    pub fn view(&self, id: u32) -> Option<ViewRead<'_>> {
        self.streams.values().find_map(|state| {
            let view = state.views.iter().find(|view| view.id == id)?;
            let collection = view.loaded.then_some(&state.collection);
            // Optimistic values are judged by the view's own filter.
            let filter = if state.overlay.visible().is_empty() {
                view.narrowing(&state.data)
            } else {
                view.filter.as_ref()
            };
            Some(ViewRead::new(collection, Some(&state.overlay), filter))
        })
    }

    /// Whether view `id` is subscribed and up to date.
    pub fn is_view_live(&self, id: u32) -> bool {
        self.streams.values().any(|state| {
            state
                .views
                .iter()
                .any(|view| view.id == id && state.view_live(view))
        })
    }

    /// The filter (the canonical text) of view `id`, if it has one.
    pub fn view_filter(&self, id: u32) -> Option<&str> {
        self.streams
            .values()
            .flat_map(|state| state.views.iter())
            .find(|view| view.id == id)
            .and_then(|view| view.key.as_deref())
    }

    /// The persisted state of `stream` was read (`None`: nothing stored or unreadable), with
    /// the scope it was stored for: it shows the views that scope covers, and is resumed from
    /// only if the stream's union is still that scope.
    pub fn restored(&mut self, stream: &str, stored: Option<(Scope, Snapshot<Json>)>) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        if state.phase != Phase::Loading || state.fetch.is_some() {
            return;
        }
        state.phase = Phase::Idle;
        if let Some((scope, snapshot)) = stored {
            self.load(stream, snapshot, scope, Origin::Restore);
        }
        self.subscribe_added(stream);
        self.update_status();
    }

    /// Subscribes a stream that just became ready, on whatever connection is open.
    fn subscribe_added(&mut self, stream: &str) {
        match self.link {
            // The SSE request names its streams: restart it to add this one.
            Link::Open {
                kind: TransportKind::Sse,
            }
            | Link::Connecting {
                kind: TransportKind::Sse,
                ..
            } => self.reconnect_now(),
            Link::Open { .. } => self.subscribe(stream),
            Link::Down if self.retry_in.is_none() => self.connect_now(),
            _ => {}
        }
    }

    /// Whether `stream` is subscribed and up to date.
    pub fn is_live(&self, stream: &str) -> bool {
        self.streams
            .get(stream)
            .is_some_and(|state| state.phase == Phase::Live && state.resyncing.is_none())
    }

    /// Names of the streams, in order.
    pub fn stream_names(&self) -> impl Iterator<Item = &str> {
        self.streams.keys().map(String::as_str)
    }

    /// The collection of `stream`: the records of the union of its views.
    pub fn collection(&self, stream: &str) -> Option<&tidewire_shared::Collection> {
        self.streams.get(stream).map(|state| &state.collection)
    }

    /// The presence set of `stream`: `(presence id, state)` pairs.
    pub fn presence(&self, stream: &str) -> Option<&BTreeMap<String, Value>> {
        self.streams.get(stream).map(|state| &state.presence)
    }

    /// The state of `stream` to persist, if it is complete, with the scope it is of.
    pub fn persistable(&self, stream: &str) -> Option<(Scope, Snapshot<Json>)> {
        self.streams.get(stream).and_then(StreamState::persistable)
    }

    /// Streams, resume positions and filters for an SSE request (streams still loading a
    /// snapshot (from storage or over HTTP) or refused are left out; `None` asks for a
    /// snapshot, and for every record).
    pub fn sse_streams(&self) -> Vec<(String, Option<Position>, Option<Value>)> {
        self.streams
            .values()
            .filter(|state| !matches!(state.phase, Phase::Loading | Phase::Failed))
            .map(|state| (state.name.to_string(), state.since(), state.scope.filter()))
            .collect()
    }

    /// Sets (or with `Value::Null` clears) our presence state on `stream`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] after `close`; [`ClientError::Invalid`] for NUL in strings.
    pub fn set_presence(&mut self, stream: &str, data: Value) -> Result<(), ClientError> {
        self.presence_of(stream, None, data)
    }

    /// Sets the presence of `member` (`None`: this client's own) on `stream`, kept and sent
    /// again after every (re)subscription.
    pub(super) fn presence_of(
        &mut self,
        stream: &str,
        member: Option<String>,
        data: Value,
    ) -> Result<(), ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let Some(state) = self.streams.get_mut(stream) else {
            return Ok(());
        };
        let message = ClientMessage::Presence {
            stream: state.name.clone(),
            data: data.clone(),
            member: member.clone(),
        };
        message.validate().map_err(ClientError::from)?;
        let kept = (!data.is_null()).then_some(data);
        match member {
            None => state.my_presence = kept,
            Some(member) => match kept {
                Some(data) => {
                    state.members.insert(member, data);
                }
                None => {
                    if state.members.remove(&member).is_none() {
                        // A member that never set presence (a guest tab leaving): nothing
                        // to clear, and the relay would tell every subscriber it left.
                        return Ok(());
                    }
                }
            },
        }
        let live = state.phase == Phase::Live;
        let socket = self.link_is(TransportKind::WebSocket) || self.link_is(TransportKind::Shared);
        if (live && socket) || self.link_is(TransportKind::Manual) {
            self.effects.push(Effect::Send(message.encode()));
        }
        Ok(())
    }

    pub(super) fn link_is(&self, wanted: TransportKind) -> bool {
        matches!(self.link, Link::Open { kind } if kind == wanted)
    }

    /// The token changed: re-authenticate the open WebSocket, or retry at once after an
    /// authentication failure.
    pub fn token_changed(&mut self, token: &str) {
        if self.closed {
            return;
        }
        if self.link_is(TransportKind::WebSocket) && !token.is_empty() {
            let auth = ClientMessage::Auth {
                token: token.to_owned(),
            };
            self.effects.push(Effect::Send(auth.encode()));
            // Streams refused with the old token get another chance.
            let failed: Vec<String> = self
                .streams
                .values()
                .filter(|state| state.phase == Phase::Failed)
                .map(|state| state.name.to_string())
                .collect();
            for stream in failed {
                if let Some(state) = self.streams.get_mut(&stream) {
                    state.phase = Phase::Idle;
                }
                self.subscribe(&stream);
            }
        }
        let waits_for_token = self
            .refused
            .as_ref()
            .is_some_and(|refused| refused.reconnect == Reconnect::NewToken);
        if waits_for_token {
            self.refused = None;
            for state in self.streams.iter_mut().map(|(_, value)| value) {
                if state.phase == Phase::Failed {
                    state.phase = Phase::Idle;
                }
            }
            self.backoff.reset();
            if self.link == Link::Down {
                self.connect_now();
            }
        }
        self.update_status();
    }

    /// The browser went online or offline.
    pub fn set_online(&mut self, online: bool, now_ms: f64) {
        self.now_ms = now_ms;
        if self.online == online {
            return;
        }
        self.online = online;
        if online && self.link == Link::Down {
            self.backoff.reset();
            self.connect_now();
        } else if !online && self.link == Link::Down && self.retry_in.take().is_some() {
            self.effects.push(Effect::CancelRetry);
        }
        self.update_status();
    }

    /// The page became visible or hidden.
    pub fn set_visible(&mut self, visible: bool, now_ms: f64) {
        self.now_ms = now_ms;
        if self.visible == visible {
            return;
        }
        self.visible = visible;
        if visible && self.link == Link::Down {
            // Coming back to the page is a good moment to retry without waiting.
            self.backoff.reset();
            self.connect_now();
        }
        self.update_status();
    }

    /// Closes the client for good: disconnects, cancels timers, fails pending writes.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.link != Link::Down {
            self.effects.push(Effect::Disconnect);
            self.link = Link::Down;
        }
        if self.retry_in.take().is_some() {
            self.effects.push(Effect::CancelRetry);
        }
        self.fail_all_writes();
        self.update_status();
    }

    /// Recomputes the status and emits it if it changed.
    fn update_status(&mut self) {
        let status = self.compute_status();
        if status != self.status {
            self.status = status.clone();
            self.effects.push(Effect::Status(status));
        }
    }

    fn compute_status(&self) -> Status {
        let mut status = Status {
            state: State::Connecting,
            reason: String::new(),
            code: None,
            close_code: None,
            transport: self.transport(),
            attempt: self.backoff.attempts(),
            retry_in_ms: None,
        };
        let failure = |status: &mut Status, failure: &Failure| {
            status.reason.clone_from(&failure.reason);
            status.code.clone_from(&failure.code);
            status.close_code = failure.close_code;
        };
        if self.closed {
            status.state = State::Closed;
            status.reason = "closed by the application".into();
            return status;
        }
        if let Some(refused) = &self.refused {
            status.state = State::Offline;
            failure(&mut status, &refused.failure);
            return status;
        }
        match self.link {
            Link::Down | Link::Connecting { .. } => {
                if !self.online {
                    status.state = State::Offline;
                    status.reason = "the browser is offline".into();
                    status.code = Some("offline".into());
                } else if let Some(last) = &self.last_failure {
                    failure(&mut status, last);
                } else {
                    status.reason = "connecting".into();
                }
                if self.link == Link::Down && self.online && self.paused_hidden() {
                    status.state = State::Offline;
                    status.reason = "the page is hidden; reconnects when it is visible".into();
                    status.code = Some("hidden".into());
                }
                status.retry_in_ms = self.retry_in;
            }
            Link::Open { .. } => {
                if let Some(reason) = &self.degraded {
                    status.reason.clone_from(reason);
                    status.code = Some("unavailable".into());
                } else if let Some(reason) = self
                    .streams
                    .values()
                    .find_map(|state| state.resyncing.as_ref())
                {
                    status.state = State::Resyncing;
                    status.reason.clone_from(reason);
                } else if self
                    .streams
                    .values()
                    .all(|state| matches!(state.phase, Phase::Live | Phase::Failed))
                {
                    status.state = State::Live;
                    status.attempt = 0;
                } else {
                    status.reason = "subscribing".into();
                }
            }
        }
        status
    }

    fn paused_hidden(&self) -> bool {
        self.config.pause_when_hidden && !self.visible
    }

    /// A uniform random number in `[0, 1)` (xorshift64*; quality is plenty for jitter).
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let value = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (value >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests;
