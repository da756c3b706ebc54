//! The life of a write: pending (shown optimistically, queued or sent), confirmed (the relay
//! acknowledged it and its event has been applied here) or refused (rolled back).
//!
//! * Every durable write carries a write id (`<writer>.<n>`) that it keeps across
//!   reconnects and reloads. A write whose connection closed before its answer is sent again
//!   with that id: the relay answers an id it has seen with the original seq, so a write
//!   commits exactly once and the application never has to guess. Ephemeral messages have no
//!   seq to answer with; they are sent at most once and fail with `connection_lost`.
//! * A failure the relay may get over (`unavailable`, `internal`, `overloaded`, or a network
//!   error of an HTTP post) holds the write back until the next tick or the next connection;
//!   any other refusal rolls it back.
//! * The promise resolves once reads show the write's committed event (or something newer),
//!   so `await collection.set(...)` followed by `collection.get(...)` sees the write.
//! * Unanswered writes are bounded (`max_pending_writes`); with persistence the shell stores
//!   them so they survive a reload ([`Effect::PersistWrites`], [`Engine::restore_writes`]).

use std::collections::VecDeque;

use serde_json::Value;
use tidewire_shared::message::{ClientMessage, Publish};
use tidewire_shared::{Json, Op, StreamName};

use super::effect::{Effect, Origin, WriteOutcome};
use super::optimistic::{shift_change, Pending, Shift};
use super::status::TransportKind;
use super::stream::Phase;
use super::{Engine, Link};
use crate::error::ClientError;

/// Default bound of unanswered writes.
pub const DEFAULT_MAX_PENDING_WRITES: usize = 1000;

/// A write not yet answered.
#[derive(Debug, Clone)]
pub(super) struct Write {
    publish: Publish,
    /// Sent on the current WebSocket (lost with it) rather than queued or posted.
    on_socket: bool,
}

/// Writes awaiting their answer, in the order they were made (few at a time, so a vector
/// beats a map in code size and speed).
#[derive(Debug, Default)]
pub(super) struct Inflight(Vec<(String, Write)>);

impl Inflight {
    fn insert(&mut self, id: String, write: Write) {
        self.0.push((id, write));
    }

    fn remove(&mut self, id: &str) -> Option<Write> {
        let index = self.0.iter().position(|(pending, _)| pending == id)?;
        Some(self.0.remove(index).1)
    }

    /// Removes and returns the writes matching `lost`, oldest first.
    fn take_where(&mut self, lost: impl Fn(&Write) -> bool) -> Vec<(String, Write)> {
        let (taken, kept) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(_, write)| lost(write));
        self.0 = kept;
        taken
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Writes not sent yet: `(operation id, publish)`, in order.
pub(super) type Queue = VecDeque<(String, Publish)>;

/// Codes after which a write is tried again rather than refused: the relay lost PostgreSQL
/// or is overloaded, or an HTTP post never got an answer. (A write tried again after such a
/// failure may commit after writes made later that did not fail.)
fn retryable(code: &str) -> bool {
    matches!(code, "unavailable" | "internal" | "overloaded" | "network")
}

impl Engine {
    /// Queues a write, shows it in the stream's collections at once (changes with origin
    /// `local`), and returns its operation id; the answer arrives as [`Effect::Resolve`] or
    /// [`Effect::Reject`] with that id.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] after `close`; [`ClientError::Invalid`] for a write the relay
    /// would refuse (bad key, patch that is not an object, NUL in strings);
    /// [`ClientError::QueueFull`] with `max_pending_writes` writes unanswered.
    pub fn write(
        &mut self,
        stream: &str,
        key: &str,
        op: Op,
        data: Value,
    ) -> Result<String, ClientError> {
        self.write_with(stream, key, op, data, None)
    }

    /// [`Engine::write`] with a given write id (`None`: a new one): a host makes a guest
    /// tab's write with the guest's id, so it commits once whichever tab sends it. Such a
    /// write is not shown optimistically here (the guest shows it; this client's collections
    /// show it when its event arrives, like anyone else's).
    ///
    /// # Errors
    ///
    /// As [`Engine::write`].
    pub fn write_with(
        &mut self,
        stream: &str,
        key: &str,
        op: Op,
        data: Value,
        write_id: Option<String>,
    ) -> Result<String, ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let stream_name = StreamName::new(stream).map_err(|error| ClientError::BadStream {
            stream: stream.chars().take(80).collect(),
            reason: error.to_string(),
        })?;
        if self.unanswered() >= self.config.max_pending_writes {
            return Err(ClientError::QueueFull(self.config.max_pending_writes));
        }
        self.next_op += 1;
        let for_guest = write_id.is_some();
        let publish = Publish {
            id: format!("w{}", self.next_op),
            stream: stream_name,
            key: key.to_owned(),
            op,
            data,
            write_id: (op != Op::Message)
                .then(|| write_id.unwrap_or_else(|| format!("{}.{}", self.writer, self.next_op))),
        };
        publish.validate().map_err(ClientError::from)?;
        let id = publish.id.clone();
        if for_guest {
            self.unshown.push(id.clone());
        }
        self.enqueue(id.clone(), publish);
        self.persist_writes();
        Ok(id)
    }

    /// Writes stored by an earlier page (or tab) of this origin: shown at once and sent in
    /// order, with their write ids (so one already committed is not committed again). No
    /// promise waits for them: their outcomes arrive as [`Effect::WriteSettled`]. Writes
    /// without a write id, or whose id is already pending here, are skipped.
    pub fn restore_writes(&mut self, writes: Vec<Publish>) {
        for mut publish in writes {
            let known = self
                .pending_writes()
                .any(|pending| pending.write_id == publish.write_id);
            if self.closed || known || publish.write_id.is_none() || publish.op == Op::Message {
                continue;
            }
            if publish.validate().is_err() {
                continue;
            }
            self.next_op += 1;
            publish.id = format!("w{}", self.next_op);
            self.enqueue(publish.id.clone(), publish);
        }
        self.persist_writes();
        self.update_status();
    }

    /// Shows a new write optimistically and sends or queues it.
    fn enqueue(&mut self, id: String, publish: Publish) {
        if publish.op != Op::Message && !self.unshown.contains(&id) {
            if let Some(state) = self.streams.get_mut(publish.stream.as_str()) {
                let shift = state
                    .overlay
                    .add(&state.collection, Pending::of(id.clone(), &publish));
                let stream = publish.stream.to_string();
                self.emit_shifts(&stream, shift.into_iter().collect(), Origin::Local, 0);
            }
        }
        self.queued.push_back((id, publish));
        self.flush_writes();
    }

    /// Shows the unanswered writes to a stream whose state was just made (writes made before
    /// its first collection, or restored from storage before it).
    pub(super) fn overlay_pending(&mut self, stream: &str) {
        let writes: Vec<(String, Publish)> = self
            .inflight
            .0
            .iter()
            .map(|(id, write)| (id.clone(), write.publish.clone()))
            .chain(self.queued.iter().cloned())
            .filter(|(id, publish)| {
                publish.stream.as_str() == stream
                    && publish.op != Op::Message
                    && !self.unshown.contains(id)
            })
            .collect();
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        for (id, publish) in writes {
            state
                .overlay
                .add(&state.collection, Pending::of(id, &publish));
        }
    }

    /// The prefix of this client's write ids.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Writes neither answered nor settled: queued or sent.
    fn unanswered(&self) -> usize {
        self.inflight.len() + self.queued.len()
    }

    /// The unanswered durable writes, in the order they were made (what persistence stores).
    pub fn pending_writes(&self) -> impl Iterator<Item = &Publish> {
        self.inflight
            .0
            .iter()
            .map(|(_, write)| &write.publish)
            .chain(self.queued.iter().map(|(_, publish)| publish))
            .filter(|publish| publish.write_id.is_some())
    }

    pub(super) fn send_write(&mut self, id: String, publish: Publish) {
        let on_socket = !self.link_is(TransportKind::Sse);
        if on_socket {
            self.effects.push(Effect::Send(
                ClientMessage::Publish(publish.clone()).encode(),
            ));
        } else {
            let body = serde_json::json!({
                "key": publish.key,
                "op": publish.op,
                "data": publish.data,
            })
            .to_string();
            self.effects.push(Effect::Post {
                id: id.clone(),
                stream: publish.stream.to_string(),
                body,
                write_id: publish.write_id.clone(),
            });
        }
        self.inflight.insert(id, Write { publish, on_socket });
    }

    /// Sends the queued writes, in order (the connection opened, a post was answered, or the
    /// hold expired). Over a WebSocket they are pipelined (the relay commits one connection's
    /// writes in order); over HTTP one post is in flight at a time, since concurrent requests
    /// may commit in any order.
    pub(super) fn flush_writes(&mut self) {
        if !matches!(self.link, Link::Open { .. }) || self.writes_held {
            return;
        }
        while !self.queued.is_empty() {
            let posting = self.inflight.0.iter().any(|(_, write)| !write.on_socket);
            if posting && self.link_is(TransportKind::Sse) {
                return;
            }
            if let Some((id, publish)) = self.queued.pop_front() {
                self.send_write(id, publish);
            }
        }
    }

    /// The connection closed: writes sent on it are sent again on the next one (their write
    /// ids make that safe); ephemeral messages fail.
    pub(super) fn requeue_socket_writes(&mut self) {
        let lost = self.inflight.take_where(|write| write.on_socket);
        let mut again = Vec::new();
        for (id, write) in lost {
            if write.publish.write_id.is_some() {
                again.push((id, write.publish));
            } else {
                self.effects.push(Effect::Reject {
                    id,
                    code: "connection_lost".into(),
                    message: format!(
                        "the connection closed before the relay accepted the message to {}; \
                         messages are sent at most once",
                        write.publish.stream
                    ),
                });
            }
        }
        for entry in again.into_iter().rev() {
            self.queued.push_front(entry);
        }
    }

    /// Releases writes held back after a retryable failure (called by `tick`).
    pub(super) fn release_writes(&mut self) {
        if self.writes_held {
            self.writes_held = false;
            self.flush_writes();
        }
    }

    /// The answer to an [`Effect::Post`].
    pub fn on_post_result(&mut self, id: &str, result: Result<u64, (String, String)>) {
        match result {
            Ok(seq) => self.acknowledged(id, seq),
            Err((code, message)) => self.write_failed(id.to_owned(), code, message),
        }
        self.flush_writes();
    }

    /// The relay committed write `id` at `seq`.
    pub(super) fn acknowledged(&mut self, id: &str, seq: u64) {
        let Some(write) = self.inflight.remove(id) else {
            return;
        };
        self.persist_writes();
        let stream = write.publish.stream.as_str();
        let tracked = match self.streams.get_mut(stream) {
            Some(state) => {
                let epoch = state.collection.epoch();
                state.overlay.ack(id, epoch, seq)
            }
            None => false,
        };
        if !tracked {
            self.settle_one(id.to_owned(), &write.publish, Ok(seq));
            return;
        }
        if self.never_shown(stream, &write.publish.key) {
            // No event at that seq will come here: the write is settled now.
            self.drop_pending(stream, id, Origin::Event);
            self.settle_one(id.to_owned(), &write.publish, Ok(seq));
            return;
        }
        self.settle_writes(stream);
    }

    /// Whether the event of a write to `key` will not reach this client: the stream's
    /// subscription was refused, or its filters match the record neither as committed nor as
    /// the write shows it (the relay sends an event to a filtered subscription only when the
    /// record matches before or after it).
    fn never_shown(&self, stream: &str, key: &str) -> bool {
        let Some(state) = self.streams.get(stream) else {
            return true;
        };
        if state.phase == Phase::Failed {
            return true;
        }
        let committed = state.collection.get(key);
        let shown = state
            .overlay
            .get(key)
            .map_or_else(|| committed.clone(), |value| value.cloned());
        let wanted = |value: &Option<Json>| value.as_ref().is_some_and(|v| state.wants(v));
        state.has_baseline && !wanted(&committed) && !wanted(&shown)
    }

    /// A write failed: held for another try, or refused and rolled back.
    pub(super) fn write_failed(&mut self, id: String, code: String, message: String) {
        let Some(write) = self.inflight.remove(&id) else {
            return;
        };
        if write.publish.write_id.is_some() && retryable(&code) {
            self.queued.push_front((id, write.publish));
            self.writes_held = true;
            return;
        }
        let stream = write.publish.stream.to_string();
        self.drop_pending(&stream, &id, Origin::Rollback);
        self.persist_writes();
        self.settle_one(id, &write.publish, Err((code, message)));
    }

    /// Removes a write from its stream's overlay, telling the views what that shows.
    fn drop_pending(&mut self, stream: &str, id: &str, origin: Origin) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        let seq = state.collection.applied();
        let shift = state.overlay.remove(&state.collection, id);
        self.emit_shifts(stream, shift.into_iter().collect(), origin, seq);
    }

    /// Settles the acknowledged writes of `stream` whose events have been applied (call
    /// after applying events or a snapshot): resolves them and shows their keys' committed
    /// values where those differ from what the writes showed.
    pub(super) fn settle_writes(&mut self, stream: &str) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        if state.overlay.is_empty() {
            return;
        }
        let settled = state.overlay.settle(&state.collection);
        if settled.is_empty() {
            return;
        }
        let seq = state.collection.applied();
        let keys = settled.iter().map(|write| write.key.as_str());
        let shifts = state.overlay.refresh_keys(&state.collection, keys);
        self.emit_shifts(stream, shifts, Origin::Event, seq);
        for write in settled {
            let seq = write.acked.map_or(0, |(_, seq)| seq);
            self.settled(write.op_id, stream, &write.key, write.op, Ok(seq));
        }
    }

    /// [`Engine::settled`] for a write still at hand.
    fn settle_one(
        &mut self,
        id: String,
        publish: &Publish,
        outcome: Result<u64, (String, String)>,
    ) {
        self.settled(
            id,
            publish.stream.as_str(),
            &publish.key,
            publish.op,
            outcome,
        );
    }

    /// Reports a write's outcome: the write event, then its promise (a restored write has
    /// none).
    fn settled(
        &mut self,
        id: String,
        stream: &str,
        key: &str,
        op: Op,
        outcome: Result<u64, (String, String)>,
    ) {
        self.unshown.retain(|unshown| *unshown != id);
        self.effects.push(Effect::WriteSettled(WriteOutcome {
            id: id.clone(),
            stream: stream.to_owned(),
            key: key.to_owned(),
            op,
            outcome: outcome.clone(),
        }));
        self.effects.push(match outcome {
            Ok(seq) => Effect::Resolve { id, seq },
            Err((code, message)) => Effect::Reject { id, code, message },
        });
    }

    /// Tells the views what optimistic state shows now.
    fn emit_shifts(&mut self, stream: &str, shifts: Vec<Shift>, origin: Origin, seq: u64) {
        let changes: Vec<_> = shifts
            .into_iter()
            .map(|shift| shift_change(shift, seq))
            .collect();
        self.emit_visible(stream, changes, origin, &[], true);
    }

    /// Asks the shell to store the unanswered writes (with persistence only).
    fn persist_writes(&mut self) {
        if self.config.persist {
            self.effects.push(Effect::PersistWrites);
        }
    }

    /// Fails every unanswered write for good (`close`).
    pub(super) fn fail_all_writes(&mut self) {
        let mut ids: Vec<(String, Publish)> = self
            .inflight
            .take_where(|_| true)
            .into_iter()
            .map(|(id, write)| (id, write.publish))
            .collect();
        ids.extend(self.queued.drain(..));
        for (id, _) in ids {
            self.effects.push(Effect::Reject {
                id,
                code: "closed".into(),
                message: "the client was closed before the write was acknowledged".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
