//! Handling the relay's messages: snapshots, events, `subscribed`, advisories, write
//! answers and presence.

use tidewire_shared::message::{decode_server_json, ServerMessage};
use tidewire_shared::{Change, Collection, DecodeLimits, Event, Json, Outcome, Record, Snapshot};

use super::effect::{Effect, Origin, Tap};
use super::stream::Phase;
use super::view::{judge_change, whole_view, Scope};
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
        self.arrived.clear();
        if self.closed {
            return;
        }
        match decode_server_json(text.as_bytes(), &SERVER_LIMITS) {
            Ok(message) => {
                self.note(&message);
                self.on_message(message);
            }
            Err(_) => self.stats.malformed += 1,
        }
        self.update_status();
    }

    /// Notes that bytes arrived (SSE comments and heartbeats keep the watchdog calm).
    pub fn on_activity(&mut self, now_ms: f64) {
        self.now_ms = now_ms;
        self.last_received_ms = now_ms;
    }

    fn on_message(&mut self, message: ServerMessage<Json>) {
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
                    // Subscribed again by the next tick (or reconnect), or once loaded.
                    if state.phase != Phase::Loading {
                        state.phase = Phase::Idle;
                        state.forget_subscribes();
                    }
                }
            }
            ServerMessage::Advisory(advisory) => self.on_advisory(
                advisory.kind.as_str(),
                advisory.stream.map(|stream| stream.as_str().to_owned()),
                advisory.reason,
            ),
            ServerMessage::Ack { id, seq, .. } => self.acknowledged(&id, seq),
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
        records: Vec<Record<Json>>,
    ) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        if state.phase == Phase::Loading {
            // An older subscription's: the one made after loading brings what it holds.
            return;
        }
        let snapshot = match state.push_chunk(epoch, seq, chunk, last, records) {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return,
            Err(()) => {
                self.request_resync(stream, "a snapshot arrived incomplete");
                return;
            }
        };
        if state.skip_snapshots > 0 {
            // The answer to a subscribe that a newer one replaced.
            state.skip_snapshots -= 1;
            return;
        }
        state.fresh_in_flight = false;
        state.awaiting_fresh = false;
        state.force_snapshot = false;
        state.replay_requested = false;
        let scope = state.sent.clone();
        self.accept_snapshot(stream, snapshot, scope);
    }

    /// A whole snapshot of `scope` arrived, in the subscription or over HTTP: it replaces the
    /// records, and a reload of the same scope is reported as a resync (one of another scope
    /// only widens or narrows the union, which the views do not see as such).
    pub(super) fn accept_snapshot(&mut self, stream: &str, snapshot: Snapshot<Json>, scope: Scope) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        let resync = state.has_baseline && state.data == scope;
        // `resyncing` stays set until `subscribed`: the status shows "resyncing" until the
        // stream is live again.
        let reason = state.resyncing.clone();
        if resync {
            self.stats.resyncs += 1;
            self.effects.push(Effect::Resync {
                stream: stream.to_owned(),
                reason: reason.unwrap_or_else(|| "the relay sent a fresh snapshot".into()),
            });
        }
        self.load(stream, snapshot, scope, Origin::Snapshot);
        self.persist(stream);
    }

    /// Replaces the stream's records with `snapshot`, of `scope`, and tells each view what
    /// changed for it; views that scope covers and that were not shown yet get all their
    /// records.
    pub(super) fn load(
        &mut self,
        stream: &str,
        snapshot: Snapshot<Json>,
        scope: Scope,
        origin: Origin,
    ) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        // Views shown for the first time get every record they see; the load's changes
        // tell only what differs from before, so they do for them only when there was
        // nothing before: no records, and no pending writes shown over them.
        let was_empty = state.collection.is_empty() && state.overlay.visible().is_empty();
        let changes = state.collection.load_snapshot(snapshot);
        state.has_baseline = true;
        state.socket_snapshot = false;
        state.data = scope;
        let mut fresh: Vec<u32> = Vec::new();
        for view in &mut state.views {
            if !view.loaded && state.data.covers(view.key.as_deref()) {
                view.loaded = true;
                if !was_empty {
                    fresh.push(view.id);
                }
            }
        }
        // Shown for the first time over records that were already here for other views:
        // every record of the view (the changes would tell only what differed).
        self.show_whole(stream, &fresh, origin);
        if self.hosting {
            self.effects
                .push(Effect::Tap(Tap::Loaded(stream.to_owned())));
        }
        self.emit(stream, changes, origin, &fresh);
        self.settle_writes(stream);
    }

    /// Tells views `ids` of `stream` every record they see, as changes with `origin`.
    pub(super) fn show_whole(&mut self, stream: &str, ids: &[u32], origin: Origin) {
        let Some(state) = self.streams.get(stream) else {
            return;
        };
        for &id in ids {
            let Some(view) = state.views.iter().find(|view| view.id == id) else {
                continue;
            };
            let whole = whole_view(&state.collection, &state.overlay, view.filter.as_ref());
            if !whole.is_empty() {
                self.effects.push(Effect::Changes {
                    stream: stream.to_owned(),
                    view: id,
                    changes: whole,
                    origin,
                });
            }
        }
    }

    /// Tells each view shown (but those in `except`) the changes of the union's committed
    /// records it sees, as the application sees them: through the stream's pending writes.
    pub(super) fn emit(
        &mut self,
        stream: &str,
        changes: Vec<Change>,
        origin: Origin,
        except: &[u32],
    ) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        let optimistic = !state.overlay.visible().is_empty();
        let changes = state.overlay.translate(&state.collection, changes);
        self.emit_visible(stream, changes, origin, except, optimistic);
    }

    /// Tells each view shown (but those in `except`) the changes of the union it sees.
    /// `optimistic`: the changes may hold values of pending writes, which only the views' own
    /// filters judge (the union's records all match the union, theirs may not).
    pub(super) fn emit_visible(
        &mut self,
        stream: &str,
        changes: Vec<Change>,
        origin: Origin,
        except: &[u32],
        optimistic: bool,
    ) {
        if changes.is_empty() {
            return;
        }
        let Some(state) = self.streams.get(stream) else {
            return;
        };
        // The effects of views that see every change, filled in at the end: the last one
        // takes `changes` itself (a 10,000-record snapshot is not copied for its one view).
        let mut whole: Vec<usize> = Vec::new();
        for view in &state.views {
            if !view.loaded || except.contains(&view.id) {
                continue;
            }
            let filter = if optimistic {
                view.filter.as_ref()
            } else {
                view.narrowing(&state.data)
            };
            let seen: Vec<Change> = match filter {
                None => {
                    whole.push(self.effects.len());
                    Vec::new()
                }
                Some(filter) => {
                    let seen: Vec<Change> = changes
                        .iter()
                        .filter_map(|change| judge_change(filter, change))
                        .collect();
                    if seen.is_empty() {
                        continue;
                    }
                    seen
                }
            };
            self.effects.push(Effect::Changes {
                stream: stream.to_owned(),
                view: view.id,
                changes: seen,
                origin,
            });
        }
        let mut changes = Some(changes);
        for (index, &at) in whole.iter().enumerate() {
            let all = if index + 1 == whole.len() {
                changes.take().unwrap_or_default()
            } else {
                changes.clone().unwrap_or_default()
            };
            if let Some(Effect::Changes { changes, .. }) = self.effects.get_mut(at) {
                *changes = all;
            }
        }
    }

    fn on_event(&mut self, event: &Event<Json>) {
        let stream = event.stream.as_str();
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        if !event.is_durable() {
            if self.hosting {
                self.effects
                    .push(Effect::Tap(Tap::Ephemeral(event.clone())));
            }
            for view in &state.views {
                let wanted = view
                    .narrowing(&state.data)
                    .is_none_or(|filter| filter.matches_json(&event.data));
                if wanted {
                    self.effects.push(Effect::Message {
                        stream: stream.to_owned(),
                        view: view.id,
                        key: event.key.clone(),
                        data: event.data.clone(),
                    });
                }
            }
            return;
        }
        if !state.has_baseline || state.force_snapshot || state.phase == Phase::Loading {
            // Before the snapshot (or while replacing it) events have nothing to apply to;
            // the snapshot covers them (a loading stream's subscription, with `since`,
            // brings them again).
            return;
        }
        state.saw_prev |= event.prev.is_some();
        let collection = &state.collection;
        let follows = event.epoch == collection.epoch()
            && (event.seq == collection.applied() + 1 || event.prev == Some(collection.applied()));
        let early = event.epoch == collection.epoch() && event.seq > collection.applied();
        if state.awaiting_fresh && !follows {
            // The older subscription's: only what follows what we hold is worth applying,
            // and the snapshot on its way settles the rest.
            return;
        }
        if early && !follows && event.prev.is_some() {
            // A view's event that does not follow ours: something was missed. Applying it
            // would leave a hole no replay fills (the replay repeats it, as a duplicate).
            self.request_replay(stream);
            return;
        }
        let newest = state.collection.is_newest(event.seq);
        match state.collection.apply(event) {
            Outcome::Applied { change, gap } => {
                if let Some(change) = &change {
                    self.note_change(change, newest);
                }
                if self.hosting {
                    self.effects.push(Effect::Tap(Tap::Applied {
                        event: event.clone(),
                        change: change.clone(),
                    }));
                }
                if let Some(change) = change {
                    self.emit(stream, vec![change], Origin::Event, &[]);
                }
                self.settle_writes(stream);
                if gap.is_some() {
                    self.request_replay(stream);
                }
                self.persist(stream);
            }
            Outcome::Unfollowed { .. } => self.request_replay(stream),
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
        if state.awaiting_fresh || state.phase == Phase::Loading {
            // The older subscription's: the newer one's snapshot is on its way (or is being
            // loaded, and a subscription with `since` follows).
            return;
        }
        state.phase = Phase::Live;
        state.resyncing = None;
        state.fresh_in_flight = false;
        state.socket_snapshot = false;
        let mut shown: Vec<u32> = Vec::new();
        if !state.has_baseline {
            // No snapshot was sent (an empty stream, or none asked for): start empty here.
            state.collection = Collection::new(epoch);
            state.has_baseline = true;
            state.data = state.sent.clone();
            for view in &mut state.views {
                if !view.loaded && state.data.covers(view.key.as_deref()) {
                    view.loaded = true;
                    shown.push(view.id);
                }
            }
        }
        let view = !matches!(state.sent, Scope::All) || state.saw_prev;
        let applied = state.collection.applied();
        let complete = state.collection.missing().is_empty();
        if state.collection.epoch() == epoch
            && complete
            && applied < seq
            && (view || state.tail_replay == Some(applied))
        {
            // A view (ours, or the token's grant) is complete up to `seq`: the seqs after
            // its last event did not concern it. Also taken as such when a replay from our
            // position brought nothing.
            state.collection.complete_to(seq);
        }
        let presence = state.my_presence.clone();
        let name = state.name.clone();
        let widen = state.sent != state.scope;
        if state.collection.epoch() != epoch {
            self.request_resync(stream, "the stream's epoch changed");
        } else if state.collection.applied() < seq || !state.collection.missing().is_empty() {
            // The relay says everything up to `seq` was sent, yet some of it is missing.
            let from = state.collection.applied();
            state.replay_requested = false;
            self.request_replay(stream);
            if let Some(state) = self.streams.get_mut(stream) {
                state.tail_replay = Some(from);
            }
        } else {
            state.replay_requested = false;
            if widen {
                // The union changed while a resume was under way.
                self.subscribe(stream);
            }
        }
        // Pending writes over the empty stream are all the views shown now have.
        self.show_whole(stream, &shown, Origin::Local);
        if !self.link_is(super::status::TransportKind::Sse) {
            let members = self
                .streams
                .get(stream)
                .map(|state| state.members.clone())
                .unwrap_or_default();
            let ours = presence.map(|data| (None, data));
            for (member, data) in ours.into_iter().chain(
                members
                    .into_iter()
                    .map(|(member, data)| (Some(member), data)),
            ) {
                let message = tidewire_shared::ClientMessage::Presence {
                    stream: name.clone(),
                    data,
                    member,
                };
                self.effects.push(Effect::Send(message.encode()));
            }
        }
        self.settle_writes(stream);
        if self.hosting {
            self.effects.push(Effect::Tap(Tap::Live(stream.to_owned())));
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
                if state.phase != Phase::Loading {
                    state.phase = Phase::Idle;
                    state.forget_subscribes();
                }
                if self.hosting {
                    self.effects.push(Effect::Tap(Tap::Dropped {
                        stream: name.clone(),
                        reason: reason.clone(),
                    }));
                }
                self.emit(&name, changes, Origin::Snapshot, &[]);
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
            self.write_failed(id, code, message);
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
            state.forget_subscribes();
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
