//! Handling the relay's messages: snapshots, events, `subscribed`, advisories, write
//! answers and presence.

use tidewire_shared::message::{decode_server, ServerMessage};
use tidewire_shared::{Collection, DecodeLimits, Event, Outcome, Record};

use super::effect::{Effect, Origin};
use super::stream::Phase;
use super::Engine;

/// Limits for the relay's messages. The relay is trusted more than a client is (snapshot
/// chunks can be large), but the depth bound still protects the stack.
const SERVER_LIMITS: DecodeLimits = DecodeLimits {
    max_bytes: 64 * 1024 * 1024,
    max_depth: 64,
};

impl Engine {
    /// One message from the relay (WebSocket text frame or SSE `data`).
    pub fn on_text(&mut self, text: &str, now_ms: f64) {
        self.now_ms = now_ms;
        self.last_received_ms = now_ms;
        if self.closed {
            return;
        }
        match decode_server(text.as_bytes(), &SERVER_LIMITS) {
            Ok(message) => self.on_message(message),
            Err(_) => self.stats.malformed += 1,
        }
        self.update_status();
    }

    /// Notes that bytes arrived (SSE comments and heartbeats keep the watchdog calm).
    pub fn on_activity(&mut self, now_ms: f64) {
        self.now_ms = now_ms;
        self.last_received_ms = now_ms;
    }

    fn on_message(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Snapshot {
                stream,
                epoch,
                seq,
                chunk,
                last,
                records,
            } => self.on_snapshot(stream.as_str(), epoch, seq, chunk, last, records),
            ServerMessage::Event(event) => self.on_event(&event),
            ServerMessage::Subscribed {
                stream, epoch, seq, ..
            } => self.on_subscribed(stream.as_str(), epoch, seq),
            ServerMessage::Unsubscribed { stream } => {
                if let Some(state) = self.streams.get_mut(stream.as_str()) {
                    // Subscribed again by the next tick (or reconnect).
                    state.phase = Phase::Idle;
                }
            }
            ServerMessage::Advisory(advisory) => self.on_advisory(
                advisory.kind.as_str(),
                advisory.stream.map(|stream| stream.as_str().to_owned()),
                advisory.reason,
            ),
            ServerMessage::Ack { id, seq, .. } => {
                if self.inflight.remove(&id).is_some() {
                    self.effects.push(Effect::Resolve { id, seq });
                }
            }
            ServerMessage::Error {
                id,
                stream,
                code,
                message,
            } => self.on_error(id, stream, code.as_str().to_owned(), message),
            ServerMessage::Presence {
                stream,
                present,
                left,
                full,
            } => {
                let stream = stream.as_str().to_owned();
                let Some(state) = self.streams.get_mut(&stream) else {
                    return;
                };
                if full {
                    state.presence.clear();
                }
                for client in left {
                    state.presence.remove(&client);
                }
                for entry in present {
                    state.presence.insert(entry.client, entry.data);
                }
                self.effects.push(Effect::Presence(stream));
            }
            ServerMessage::Pong { .. } => {}
        }
    }

    fn on_snapshot(
        &mut self,
        stream: &str,
        epoch: u64,
        seq: u64,
        chunk: u32,
        last: bool,
        records: Vec<Record>,
    ) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        let snapshot = match state.push_chunk(epoch, seq, chunk, last, records) {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return,
            Err(()) => {
                self.request_resync(stream, "a snapshot arrived incomplete");
                return;
            }
        };
        let had_baseline = state.has_baseline;
        let changes = state.collection.load_snapshot(&snapshot);
        state.has_baseline = true;
        state.force_snapshot = false;
        state.replay_requested = false;
        // `resyncing` stays set until `subscribed`: the status shows "resyncing" until the
        // stream is live again.
        let reason = state.resyncing.clone();
        if had_baseline {
            self.stats.resyncs += 1;
            self.effects.push(Effect::Resync {
                stream: stream.to_owned(),
                reason: reason.unwrap_or_else(|| "the relay sent a fresh snapshot".into()),
            });
        }
        if !changes.is_empty() {
            self.effects.push(Effect::Changes {
                stream: stream.to_owned(),
                changes,
                origin: Origin::Snapshot,
            });
        }
        self.persist(stream);
    }

    fn on_event(&mut self, event: &Event) {
        let stream = event.stream.as_str();
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        if !event.is_durable() {
            self.effects.push(Effect::Message {
                stream: stream.to_owned(),
                key: event.key.clone(),
                data: event.data.clone(),
            });
            return;
        }
        if !state.has_baseline || state.force_snapshot {
            // Before the snapshot (or while replacing it) events have nothing to apply to;
            // the snapshot covers them.
            return;
        }
        match state.collection.apply(event) {
            Outcome::Applied { change, gap } => {
                if let Some(change) = change {
                    self.effects.push(Effect::Changes {
                        stream: stream.to_owned(),
                        changes: vec![change],
                        origin: Origin::Event,
                    });
                }
                if gap.is_some() {
                    self.request_replay(stream);
                }
                self.persist(stream);
            }
            Outcome::Duplicate => self.stats.duplicates += 1,
            Outcome::Ephemeral => {}
            Outcome::EpochMismatch { .. } => {
                self.request_resync(stream, "the stream's epoch changed");
            }
        }
    }

    fn on_subscribed(&mut self, stream: &str, epoch: u64, seq: u64) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        state.phase = Phase::Live;
        state.resyncing = None;
        if !state.has_baseline {
            // No snapshot was sent (an empty stream, or none asked for): start empty here.
            state.collection = Collection::new(epoch);
            state.has_baseline = true;
        }
        let presence = state.my_presence.clone();
        let name = state.name.clone();
        if state.collection.epoch() != epoch {
            self.request_resync(stream, "the stream's epoch changed");
        } else if state.collection.applied() < seq || !state.collection.missing().is_empty() {
            // The relay says everything up to `seq` was sent, yet some of it is missing.
            state.replay_requested = false;
            self.request_replay(stream);
        } else {
            state.replay_requested = false;
        }
        if let Some(data) = presence {
            let message = tidewire_shared::ClientMessage::Presence { stream: name, data };
            if !self.link_is(super::status::TransportKind::Sse) {
                self.effects.push(Effect::Send(message.encode()));
            }
        }
        let all_live = self
            .streams
            .values()
            .all(|state| matches!(state.phase, Phase::Live | Phase::Failed));
        if all_live {
            self.backoff.reset();
            self.last_failure = None;
        }
    }

    fn on_advisory(&mut self, kind: &str, stream: Option<String>, reason: Option<String>) {
        match kind {
            "connect" => {
                self.presence_id = reason.as_deref().and_then(presence_id);
                if self.streams.is_empty() {
                    self.backoff.reset();
                    self.last_failure = None;
                }
            }
            "disconnect" => {
                self.degraded =
                    Some(reason.unwrap_or_else(|| "the relay lost its database connection".into()));
            }
            "reconnect" => self.degraded = None,
            "resync" => {
                if let Some(state) = stream.as_deref().and_then(|s| self.streams.get_mut(s)) {
                    state.resyncing =
                        Some(reason.unwrap_or_else(|| "the relay asked for a resync".into()));
                    state.reset_assembler();
                }
            }
            "dropped" => {
                let Some(name) = stream else { return };
                let Some(state) = self.streams.get_mut(&name) else {
                    return;
                };
                let changes = state.collection.reset(0);
                state.has_baseline = false;
                state.phase = Phase::Idle;
                if !changes.is_empty() {
                    self.effects.push(Effect::Changes {
                        stream: name.clone(),
                        changes,
                        origin: Origin::Snapshot,
                    });
                }
                self.effects.push(Effect::StreamError {
                    stream: name.clone(),
                    code: "dropped".into(),
                    message: reason.unwrap_or_else(|| "the stream was dropped".into()),
                });
                self.persist(&name);
            }
            "shutdown" => {
                // The relay is going away on purpose: reconnect without growing the backoff.
                self.backoff.reset();
            }
            // Gap (the relay replays durable streams by itself), lagged (same) and kinds
            // added later need nothing from the client.
            _ => {}
        }
    }

    fn on_error(
        &mut self,
        id: Option<String>,
        stream: Option<String>,
        code: String,
        message: String,
    ) {
        if let Some(id) = id {
            if self.inflight.remove(&id).is_some() {
                self.effects.push(Effect::Reject { id, code, message });
            }
            return;
        }
        let Some(name) = stream else {
            self.effects.push(Effect::StreamError {
                stream: String::new(),
                code,
                message,
            });
            return;
        };
        let Some(state) = self.streams.get_mut(&name) else {
            return;
        };
        let retryable = matches!(code.as_str(), "unavailable" | "internal" | "overloaded");
        if state.phase == Phase::Subscribing {
            // Retryable failures are subscribed again by the next tick.
            state.phase = if retryable {
                Phase::Idle
            } else {
                Phase::Failed
            };
        }
        self.effects.push(Effect::StreamError {
            stream: name,
            code,
            message,
        });
    }

    /// Notes that `stream` changed, for persistence.
    fn persist(&mut self, stream: &str) {
        if self.config.persist {
            let already = self
                .effects
                .iter()
                .any(|effect| matches!(effect, Effect::Persist(name) if name == stream));
            if !already {
                self.effects.push(Effect::Persist(stream.to_owned()));
            }
        }
    }
}

/// The presence id from a `connect` advisory's reason: `relay=R connection=C` → `R-C`.
fn presence_id(reason: &str) -> Option<String> {
    let mut relay = None;
    let mut connection = None;
    for part in reason.split_whitespace() {
        if let Some(value) = part.strip_prefix("relay=") {
            relay = Some(value);
        } else if let Some(value) = part.strip_prefix("connection=") {
            // The relay prints connection ids as `conn-N`; presence ids use the bare number.
            connection = Some(value.strip_prefix("conn-").unwrap_or(value));
        }
    }
    Some(format!("{}-{}", relay?, connection?))
}
