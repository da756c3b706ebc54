//! Snapshots over HTTP (`snapshot: "http"`): a stream with nothing to resume from loads its
//! snapshot page by page (`GET /v1/streams/{s}/snapshot`, shell-side) instead of in its
//! subscription, then subscribes with `since` = the snapshot's position, exactly like a
//! stream restored from storage (phase `Loading`, then `subscribe_added`).
//!
//! Rules:
//!
//! * only a durable stream whose subscription on this connection is not active (phase
//!   `Idle`) loads over HTTP: the first load, a load after the connection was lost or the
//!   stream dropped, an SSE resync (which restarts the request anyway). A resync on a live
//!   WebSocket subscription stays in the subscription, whose older messages would otherwise
//!   race the pages;
//! * while it loads, whatever an older subscription still sends for the stream is ignored:
//!   the subscription with `since` replays it;
//! * the pages are applied at once, when the last one arrived, as one snapshot (change
//!   origin `snapshot`, a `resync` when it replaces records of the same scope);
//! * 409 `resync` (the snapshot's position can no longer be read) starts over, at most
//!   [`MAX_RESTARTS`] times in a row; any other failure falls back to the snapshot in the
//!   subscription, for that load. Nothing is applied from a load that did not finish, so no
//!   change is lost or reported twice either way.

use tidewire_shared::{Json, Snapshot, StreamKind};

use super::effect::Effect;
use super::stream::Phase;
use super::{Engine, SnapshotVia};

/// Times in a row a snapshot load starts over after 409 `resync` before the subscription's
/// snapshot is used instead.
pub const MAX_RESTARTS: u32 = 3;

/// Why loading a snapshot over HTTP failed (the shell's answer to
/// [`Effect::FetchSnapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// 409 with `resync: true`: the snapshot's position can no longer be read (retention, a
    /// dropped stream). Start over without a cursor.
    #[error("the snapshot's position can no longer be read")]
    Resync,
    /// Anything else: a network failure, a refusal, a page that is not one.
    #[error("{0}")]
    Failed(String),
}

impl Engine {
    /// Whether `stream` should load its snapshot over HTTP now instead of in a subscription
    /// (see the module docs).
    pub(super) fn fetch_due(&self, stream: &str) -> bool {
        let Some(state) = self.streams.get(stream) else {
            return false;
        };
        self.config.snapshot == SnapshotVia::Http
            && !self.closed
            && self.online
            && state.phase == Phase::Idle
            && state.name.kind() == StreamKind::Durable
            && !state.socket_snapshot
            && state.since().is_none()
    }

    /// Starts loading `stream`'s snapshot over HTTP, of the stream's current scope.
    pub(super) fn start_fetch(&mut self, stream: &str) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        self.next_fetch = self.next_fetch.wrapping_add(1);
        let id = self.next_fetch;
        state.phase = Phase::Loading;
        state.reset_assembler();
        state.forget_subscribes();
        state.fetch = Some((id, state.scope.clone()));
        self.effects.push(Effect::FetchSnapshot {
            stream: stream.to_owned(),
            id,
            filter: state.scope.filter(),
        });
    }

    /// Starts the HTTP loads due (before an SSE request, which names only the streams ready
    /// to subscribe).
    pub(super) fn start_due_fetches(&mut self) {
        let due: Vec<String> = self
            .streams
            .keys()
            .filter(|stream| self.fetch_due(stream))
            .cloned()
            .collect();
        for stream in due {
            self.start_fetch(&stream);
        }
    }

    /// Whether the HTTP load `id` of `stream` is still wanted: the shell stops reading pages
    /// when it is not (the client closed, or the load was replaced).
    pub fn fetch_wanted(&self, stream: &str, id: u32) -> bool {
        !self.closed
            && self
                .streams
                .get(stream)
                .is_some_and(|state| matches!(state.fetch, Some((current, _)) if current == id))
    }

    /// The answer to [`Effect::FetchSnapshot`] `id`: the whole snapshot, or why not. Stale
    /// answers (another load started since, or the client closed) are ignored.
    pub fn snapshot_fetched(
        &mut self,
        stream: &str,
        id: u32,
        result: Result<Snapshot<Json>, FetchError>,
    ) {
        if !self.fetch_wanted(stream, id) {
            return;
        }
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        let Some((_, scope)) = state.fetch.take() else {
            return;
        };
        match result {
            Ok(snapshot) => {
                state.phase = Phase::Idle;
                state.fetch_restarts = 0;
                // The snapshot is the one a resync asked for: resume from it.
                state.force_snapshot = false;
                self.accept_snapshot(stream, snapshot, scope);
            }
            Err(FetchError::Resync) if state.fetch_restarts < MAX_RESTARTS => {
                state.fetch_restarts += 1;
                self.start_fetch(stream);
                self.update_status();
                return;
            }
            Err(_) => {
                state.phase = Phase::Idle;
                state.fetch_restarts = 0;
                state.socket_snapshot = true;
            }
        }
        self.subscribe_added(stream);
        self.update_status();
    }
}

#[cfg(test)]
mod tests;
