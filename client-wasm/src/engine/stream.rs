//! The client's state for one stream: the collection (the shared merge rules), its views,
//! snapshot reassembly, the subscription phase and the presence set.

use std::collections::BTreeMap;

use serde_json::Value;
use tidewire_shared::snapshot::{Assembled, SnapshotAssembler};
use tidewire_shared::{Collection, Json, Position, Record, Snapshot, StreamName};

use super::optimistic::Overlay;
use super::view::{Scope, View};

/// Where a stream's subscription stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Loading a snapshot: the persisted state, or over HTTP (then `fetch` is set); not
    /// subscribed until that finishes, and whatever an older subscription still sends is
    /// ignored (the subscription made afterwards, with `since`, brings it again).
    Loading,
    /// Not subscribed on this connection (yet).
    Idle,
    /// `subscribe` sent; snapshot or replay under way.
    Subscribing,
    /// `subscribed` received: live.
    Live,
    /// The relay refused the subscription for good (forbidden, bad stream); retried only
    /// after a new token.
    Failed,
}

/// One stream's state. Owned by the engine.
#[derive(Debug)]
pub(crate) struct StreamState {
    /// The stream's name.
    pub(crate) name: StreamName,
    /// The records, merged with the same rules the relay uses: those of `data`.
    pub(crate) collection: Collection,
    /// The application's collections of this stream.
    pub(crate) views: Vec<View>,
    /// The union of the views' filters: what the next subscription asks for.
    pub(crate) scope: Scope,
    /// What the subscription on this connection asked for.
    pub(crate) sent: Scope,
    /// What the records of `collection` are (the scope of the snapshot they came from). Only
    /// a collection of the scope asked for can be resumed with `since`.
    pub(crate) data: Scope,
    /// The last subscribe sent on this connection asked for a snapshot that has not arrived.
    pub(crate) fresh_in_flight: bool,
    /// A subscribe without `since` was sent while an older subscription of this stream was
    /// active on the connection: until its snapshot arrives, what arrives is the older one's
    /// (events are applied only when they follow, `subscribed` is ignored).
    pub(crate) awaiting_fresh: bool,
    /// Snapshots still to come from older subscribes, to discard.
    pub(crate) skip_snapshots: u32,
    /// The relay sent events with `prev`: the subscription is a view (by our filter or by
    /// the token's grant), whose position may move past seqs it never gets.
    pub(crate) saw_prev: bool,
    /// A replay was asked because `subscribed` named a seq past ours, from this position.
    pub(crate) tail_replay: Option<u64>,
    /// True once the collection holds a snapshot (received, or restored from storage): only
    /// then is its position worth resuming from and are events applied.
    pub(crate) has_baseline: bool,
    /// The subscription phase.
    pub(crate) phase: Phase,
    /// Chunks of the snapshot being received.
    assembler: SnapshotAssembler<Json>,
    /// Set while a snapshot reload is under way, with its reason.
    pub(crate) resyncing: Option<String>,
    /// A resync was requested: the next subscription must not resume from `since`.
    pub(crate) force_snapshot: bool,
    /// A replay was requested on this connection (to avoid asking again for each early event).
    pub(crate) replay_requested: bool,
    /// The HTTP snapshot load under way: its id and the scope it asks for.
    pub(crate) fetch: Option<(u32, Scope)>,
    /// How many times in a row the HTTP snapshot load started over after a 409 `resync`.
    pub(crate) fetch_restarts: u32,
    /// Loading the snapshot over HTTP failed: the next one comes in the subscription.
    pub(crate) socket_snapshot: bool,
    /// Other clients' presence states, by presence id (includes ours as the relay sees it).
    pub(crate) presence: BTreeMap<String, Value>,
    /// Our own presence state, re-sent after every (re)subscription.
    pub(crate) my_presence: Option<Value>,
    /// The presence states of the tabs this client hosts, by member name, re-sent likewise.
    pub(crate) members: BTreeMap<String, Value>,
    /// This client's writes not yet applied from the relay, shown over `collection`.
    pub(crate) overlay: Overlay,
}

impl StreamState {
    /// A stream with no state yet.
    pub(crate) fn new(name: StreamName, phase: Phase) -> Self {
        Self {
            name,
            collection: Collection::default(),
            views: Vec::new(),
            scope: Scope::All,
            sent: Scope::All,
            data: Scope::All,
            fresh_in_flight: false,
            awaiting_fresh: false,
            skip_snapshots: 0,
            saw_prev: false,
            tail_replay: None,
            has_baseline: false,
            phase,
            assembler: SnapshotAssembler::new(),
            resyncing: None,
            force_snapshot: false,
            replay_requested: false,
            fetch: None,
            fetch_restarts: 0,
            socket_snapshot: false,
            presence: BTreeMap::new(),
            my_presence: None,
            members: BTreeMap::new(),
            overlay: Overlay::default(),
        }
    }

    /// The position to resume from, if resuming is possible: positions of another scope
    /// say nothing about this one.
    pub(crate) fn since(&self) -> Option<Position> {
        (self.has_baseline && !self.force_snapshot && self.data == self.scope)
            .then(|| self.collection.position())
    }

    /// The union of the views' filters.
    pub(crate) fn union(&self) -> Scope {
        let mut members = std::collections::BTreeMap::new();
        for view in &self.views {
            match (&view.key, &view.filter) {
                (Some(key), Some(_)) => {
                    let value = serde_json::from_str(key).unwrap_or(Value::Null);
                    members.insert(key.clone(), value);
                }
                _ => return Scope::All,
            }
        }
        if members.is_empty() {
            Scope::All
        } else {
            Scope::Any(members)
        }
    }

    /// Whether a record with this value is one the stream's collections hold (some view's
    /// filter matches it).
    pub(crate) fn wants(&self, value: &Json) -> bool {
        self.views.iter().any(|view| {
            view.filter
                .as_ref()
                .is_none_or(|filter| filter.matches_json(value))
        })
    }

    /// Whether the stream should be part of the next subscription round.
    pub(crate) fn wants_subscription(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Forgets per-connection state after the connection closed.
    pub(crate) fn connection_lost(&mut self) {
        if matches!(self.phase, Phase::Subscribing | Phase::Live) {
            self.phase = Phase::Idle;
        }
        self.assembler.reset();
        self.replay_requested = false;
        self.forget_subscribes();
    }

    /// Forgets what was in flight for this stream on the connection.
    pub(crate) fn forget_subscribes(&mut self) {
        self.fresh_in_flight = false;
        self.awaiting_fresh = false;
        self.skip_snapshots = 0;
    }

    /// Whether a view is subscribed and current: loaded, and the stream live (or live a
    /// moment ago and widening its subscription for another view).
    pub(crate) fn view_live(&self, view: &View) -> bool {
        view.loaded
            && self.resyncing.is_none()
            && (self.phase == Phase::Live
                || (self.phase == Phase::Subscribing && self.awaiting_fresh))
    }

    /// Feeds one snapshot chunk; returns the whole snapshot once the last chunk arrived, and
    /// `Err(())` if the chunks do not fit together (the caller asks for a fresh snapshot).
    pub(crate) fn push_chunk(
        &mut self,
        epoch: u64,
        seq: u64,
        chunk: u32,
        last: bool,
        records: Vec<Record<Json>>,
    ) -> Result<Option<Snapshot<Json>>, ()> {
        match self.assembler.push(epoch, seq, chunk, last, records) {
            Assembled::Partial => Ok(None),
            Assembled::Complete(snapshot) => Ok(Some(snapshot)),
            Assembled::Mismatch => Err(()),
        }
    }

    /// Drops any partial snapshot.
    pub(crate) fn reset_assembler(&mut self) {
        self.assembler.reset();
    }

    /// The persisted form: the collection as a snapshot, if it is complete (no holes below
    /// the highest seq seen; a snapshot with holes could not be resumed from correctly).
    pub(crate) fn persistable(&self) -> Option<(Scope, Snapshot<Json>)> {
        (self.has_baseline && self.collection.missing().is_empty())
            .then(|| (self.data.clone(), self.collection.snapshot()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_needs_a_baseline() {
        let mut state = StreamState::new(StreamName::new("s").expect("valid"), Phase::Idle);
        assert_eq!(state.since(), None);
        state.has_baseline = true;
        assert_eq!(state.since(), Some(Position { epoch: 0, seq: 0 }));
        state.force_snapshot = true;
        assert_eq!(state.since(), None);
    }
}
