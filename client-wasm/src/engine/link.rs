//! The connection's life: choosing a transport, opening, subscribing, closing, retrying with
//! backoff, and the keepalive watchdog.

use tidewire_shared::ending::{ending, Closed, Ending, Reconnect, LATER_MIN_MS};
use tidewire_shared::message::{ClientMessage, Subscribe};

use super::effect::Effect;
use super::status::TransportKind;
use super::stream::Phase;
use super::{CloseInfo, Engine, Failure, Link, Refused, TransportChoice};

impl Engine {
    /// Opens a connection now, unless closed, refused, offline or paused while hidden.
    pub(super) fn connect_now(&mut self) {
        if self.closed || self.refused.is_some() || !self.online {
            return;
        }
        if self.retry_in.take().is_some() {
            self.effects.push(Effect::CancelRetry);
        }
        if self.paused_hidden() && self.link == Link::Down && self.stats.connections > 0 {
            // Reconnect when the page is visible again (`set_visible`). The very first
            // connection is made even in a background tab.
            return;
        }
        let kind = match self.config.transport {
            _ if self.guest => TransportKind::Shared,
            TransportChoice::Manual => TransportKind::Manual,
            TransportChoice::WebSocket => TransportKind::WebSocket,
            TransportChoice::Sse => TransportKind::Sse,
            TransportChoice::Auto if self.ws_blocked || self.ws_failed_this_round => {
                TransportKind::Sse
            }
            TransportChoice::Auto => TransportKind::WebSocket,
        };
        if self.link != Link::Down {
            self.effects.push(Effect::Disconnect);
            self.link = Link::Down;
        }
        if kind == TransportKind::Sse {
            // The request names the streams it subscribes: those about to load their
            // snapshot over HTTP are left out until it is loaded.
            self.start_due_fetches();
        }
        if kind == TransportKind::Sse && self.sse_streams().is_empty() {
            // An SSE request must name a stream: wait for the first collection
            // (`subscribe_added` connects then).
            return;
        }
        self.link = Link::Connecting {
            kind,
            since_ms: self.now_ms,
        };
        self.effects.push(Effect::Connect(kind));
        if kind == TransportKind::Manual {
            self.on_open(self.now_ms);
        }
    }

    /// The connection opened (WebSocket `open`, or a 200 answer to the SSE request).
    pub fn on_open(&mut self, now_ms: f64) {
        self.now_ms = now_ms;
        let Link::Connecting { kind, .. } = self.link else {
            return;
        };
        self.link = Link::Open { kind };
        self.stats.connections += 1;
        self.last_received_ms = now_ms;
        if kind == TransportKind::Sse && self.ws_failed_this_round {
            // Twice in a row a WebSocket could not open while SSE could: something between
            // us and the relay blocks WebSockets, so stop trying them first.
            self.ws_fallbacks += 1;
            self.ws_blocked = self.ws_fallbacks >= 2;
        } else if kind == TransportKind::WebSocket {
            self.ws_fallbacks = 0;
        }
        self.ws_failed_this_round = false;
        match kind {
            TransportKind::Sse => {
                // The request named every ready stream with its position and filter.
                for state in self.streams.iter_mut().map(|(_, value)| value) {
                    if state.phase == Phase::Idle {
                        state.phase = Phase::Subscribing;
                        state.force_snapshot = false;
                        state.sent = state.scope.clone();
                    }
                }
            }
            TransportKind::WebSocket | TransportKind::Manual | TransportKind::Shared => {
                self.subscribe_idle();
            }
        }
        // A new connection is also the moment to try again writes held after a failure.
        self.writes_held = false;
        self.flush_writes();
        self.update_status();
    }

    /// Subscribes every stream waiting for a subscription on this connection.
    fn subscribe_idle(&mut self) {
        let idle: Vec<String> = self
            .streams
            .values()
            .filter(|state| state.wants_subscription())
            .map(|state| state.name.to_string())
            .collect();
        for stream in idle {
            self.subscribe(&stream);
        }
    }

    /// Sends `subscribe` for `stream` with the union of its views' filters (resuming from
    /// its position when it has one of that union).
    pub(super) fn subscribe(&mut self, stream: &str) {
        if self.fetch_due(stream) {
            // Loaded over HTTP first; subscribed with `since` once loaded.
            self.start_fetch(stream);
            return;
        }
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        let since = state.since();
        if since.is_none() {
            // The relay answers a subscribe without `since` with a snapshot then `subscribed`;
            // what an older subscription of this connection still sends comes first.
            let older = matches!(state.phase, Phase::Live | Phase::Subscribing);
            if older && state.fresh_in_flight {
                state.skip_snapshots += 1;
            }
            state.awaiting_fresh |= older;
            state.fresh_in_flight = true;
        } else {
            state.forget_subscribes();
        }
        let message = ClientMessage::Subscribe(Subscribe {
            stream: state.name.clone(),
            since,
            filter: state.scope.filter(),
            snapshot: true,
        });
        state.sent = state.scope.clone();
        state.tail_replay = None;
        state.force_snapshot = false;
        state.phase = Phase::Subscribing;
        state.reset_assembler();
        self.effects.push(Effect::Send(message.encode()));
    }

    /// Replaces the connection now: reopens the SSE request (to add a stream, replay or
    /// resync: its URL carries them), or switches between the network and a shared link.
    pub(super) fn reconnect_now(&mut self) {
        if self.closed {
            return;
        }
        for state in self.streams.iter_mut().map(|(_, value)| value) {
            state.connection_lost();
        }
        self.requeue_socket_writes();
        self.effects.push(Effect::Disconnect);
        self.link = Link::Down;
        self.connect_now();
    }

    /// Asks the relay to replay `stream` from its applied position.
    pub(super) fn request_replay(&mut self, stream: &str) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        if state.replay_requested {
            return;
        }
        state.replay_requested = true;
        self.stats.gaps += 1;
        self.resubscribe(stream);
    }

    /// Asks the relay for a fresh snapshot of `stream`.
    pub(super) fn request_resync(&mut self, stream: &str, reason: &str) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        if state.force_snapshot {
            return;
        }
        state.force_snapshot = true;
        state.resyncing = Some(reason.to_owned());
        state.reset_assembler();
        self.resubscribe(stream);
    }

    fn resubscribe(&mut self, stream: &str) {
        match self.link {
            Link::Open {
                kind: TransportKind::Sse,
            } => self.reconnect_now(),
            Link::Open { .. } => {
                let replay_requested = self
                    .streams
                    .get(stream)
                    .is_some_and(|state| state.replay_requested);
                self.subscribe(stream);
                if let Some(state) = self.streams.get_mut(stream) {
                    state.replay_requested = replay_requested;
                }
            }
            _ => {}
        }
    }

    /// The connection closed or could not open. Ignored unless a connection was current.
    pub fn on_closed(&mut self, mut info: CloseInfo, now_ms: f64) {
        self.now_ms = now_ms;
        info.opened |= matches!(self.link, Link::Open { .. });
        let kind = match self.link {
            Link::Down => return,
            Link::Connecting { kind, .. } | Link::Open { kind } => kind,
        };
        self.link = Link::Down;
        self.degraded = None;
        self.requeue_socket_writes();
        for state in self.streams.iter_mut().map(|(_, value)| value) {
            state.connection_lost();
        }
        let verdict = verdict(&info);
        let failure = describe(&info, kind, verdict);
        match verdict.reconnect {
            Reconnect::NewToken | Reconnect::Never => {
                self.refused = Some(Refused {
                    failure,
                    reconnect: verdict.reconnect,
                });
                self.update_status();
                return;
            }
            Reconnect::Later => self.retry_later = true,
            Reconnect::Resume => {}
        }
        self.last_failure = Some(failure);
        if self.closed {
            return;
        }
        let fallback = self.config.transport == TransportChoice::Auto
            && kind == TransportKind::WebSocket
            && !info.opened
            && !self.ws_blocked;
        if fallback {
            // The WebSocket could not even open (blocked by a proxy, or the relay is down):
            // try SSE right away; the backoff applies to the round as a whole.
            self.ws_failed_this_round = true;
            self.connect_now();
        } else {
            self.ws_failed_this_round = false;
            if kind == TransportKind::WebSocket && !info.opened {
                // Forced WebSocket: find out whether the token was the reason.
                if let Some(stream) = self.streams.keys().next() {
                    self.effects.push(Effect::Probe(stream.clone()));
                }
            }
            self.schedule_retry();
        }
        self.update_status();
    }

    /// The answer to an [`Effect::Probe`]: the HTTP status and error code, if any.
    pub fn on_probe(&mut self, http_status: Option<u16>, code: Option<String>, reason: String) {
        if self.closed || self.link != Link::Down {
            return;
        }
        let info = CloseInfo {
            http_status,
            code,
            reason,
            ..CloseInfo::default()
        };
        let verdict = verdict(&info);
        if matches!(verdict.reconnect, Reconnect::NewToken | Reconnect::Never) {
            if self.retry_in.take().is_some() {
                self.effects.push(Effect::CancelRetry);
            }
            self.refused = Some(Refused {
                failure: describe(&info, TransportKind::WebSocket, verdict),
                reconnect: verdict.reconnect,
            });
            self.update_status();
        }
    }

    fn schedule_retry(&mut self) {
        if self.closed || !self.online || self.refused.is_some() {
            return;
        }
        let random = self.random();
        let mut delay = super::backoff::next_delay_ms(&mut self.backoff, random);
        if std::mem::take(&mut self.retry_later) {
            delay = delay.max(u32::try_from(LATER_MIN_MS).unwrap_or(u32::MAX));
        }
        self.retry_in = Some(delay);
        self.effects.push(Effect::RetryIn(delay));
    }

    /// The reconnect timer fired.
    pub fn on_retry_timer(&mut self, now_ms: f64) {
        self.now_ms = now_ms;
        if self.retry_in.take().is_none() || self.link != Link::Down {
            return;
        }
        self.connect_now();
        self.update_status();
    }

    /// Periodic check (every few seconds): pings a quiet WebSocket, replaces a dead or stuck
    /// connection, and retries subscriptions the relay could not serve.
    pub fn tick(&mut self, now_ms: f64) {
        self.now_ms = now_ms;
        let keepalive = self.config.keepalive_ms.max(1000.0);
        match self.link {
            Link::Connecting { kind, since_ms }
                if !matches!(kind, TransportKind::Manual)
                    && now_ms - since_ms > self.config.connect_timeout_ms =>
            {
                self.effects.push(Effect::Disconnect);
                let info = CloseInfo {
                    reason: "connection attempt timed out".into(),
                    code: Some("timeout".into()),
                    ..CloseInfo::default()
                };
                self.on_closed(info, now_ms);
            }
            Link::Open { kind }
                if !matches!(kind, TransportKind::Manual | TransportKind::Shared) =>
            {
                let quiet = now_ms - self.last_received_ms;
                let limit = if kind == TransportKind::Sse {
                    keepalive * 3.0
                } else {
                    keepalive * 2.5
                };
                if quiet > limit {
                    self.effects.push(Effect::Disconnect);
                    let info = CloseInfo {
                        opened: true,
                        reason: "the connection went silent".into(),
                        code: Some("keepalive_timeout".into()),
                        ..CloseInfo::default()
                    };
                    self.on_closed(info, now_ms);
                    return;
                }
                let idle = self
                    .streams
                    .values()
                    .any(|state| state.wants_subscription());
                if kind == TransportKind::Sse && idle {
                    // A stream the relay could not serve: the SSE request must be made again.
                    self.reconnect_now();
                } else if kind == TransportKind::WebSocket {
                    if quiet > keepalive {
                        self.effects
                            .push(Effect::Send(ClientMessage::Ping { id: None }.encode()));
                    }
                    self.subscribe_idle();
                }
            }
            // The host answers retryable refusals like the relay: subscribe again.
            Link::Open {
                kind: TransportKind::Shared,
            } => self.subscribe_idle(),
            _ => {}
        }
        self.release_writes();
        self.update_status();
    }
}

/// What the shared rule says about this ending.
fn verdict(info: &CloseInfo) -> Ending {
    ending(&Closed {
        close_code: info.close_code,
        http_status: info.http_status,
        error_code: info.code.as_deref(),
        opened: info.opened,
    })
}

fn describe(info: &CloseInfo, kind: TransportKind, verdict: Ending) -> Failure {
    let code = Some(info.code.clone().unwrap_or_else(|| verdict.name.to_owned()));
    let mut reason = info.reason.clone();
    if reason.is_empty() {
        reason = match (info.opened, info.close_code, info.http_status) {
            (_, _, Some(status)) => format!("{} request answered {status}", kind.as_str()),
            (true, Some(close), _) => format!("{} closed with code {close}", kind.as_str()),
            (true, None, _) => format!("{} connection lost", kind.as_str()),
            (false, _, _) => format!("{} connection could not open", kind.as_str()),
        };
    }
    Failure {
        reason,
        code,
        close_code: info.close_code,
    }
}
