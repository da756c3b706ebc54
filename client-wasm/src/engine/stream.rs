//! The client's state for one stream: the collection (the shared merge rules), snapshot
//! reassembly, the subscription phase and the presence set.

use std::collections::BTreeMap;

use serde_json::Value;
use tidewire_shared::snapshot::{Assembled, SnapshotAssembler};
use tidewire_shared::{Collection, Position, Record, Snapshot, StreamName};

/// Where a stream's subscription stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading the persisted state; not subscribed until that finishes.
    Restoring,
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
    /// The records, merged with the same rules the relay uses.
    pub(crate) collection: Collection,
    /// True once the collection holds a snapshot (received, or restored from storage): only
    /// then is its position worth resuming from and are events applied.
    pub(crate) has_baseline: bool,
    /// The subscription phase.
    pub(crate) phase: Phase,
    /// Chunks of the snapshot being received.
    assembler: SnapshotAssembler,
    /// Set while a snapshot reload is under way, with its reason.
    pub(crate) resyncing: Option<String>,
    /// A resync was requested: the next subscription must not resume from `since`.
    pub(crate) force_snapshot: bool,
    /// A replay was requested on this connection (to avoid asking again for each early event).
    pub(crate) replay_requested: bool,
    /// Other clients' presence states, by presence id (includes ours as the relay sees it).
    pub(crate) presence: BTreeMap<String, Value>,
    /// Our own presence state, re-sent after every (re)subscription.
    pub(crate) my_presence: Option<Value>,
}

impl StreamState {
    /// A stream with no state yet.
    pub(crate) fn new(name: StreamName, phase: Phase) -> Self {
        Self {
            name,
            collection: Collection::default(),
            has_baseline: false,
            phase,
            assembler: SnapshotAssembler::new(),
            resyncing: None,
            force_snapshot: false,
            replay_requested: false,
            presence: BTreeMap::new(),
            my_presence: None,
        }
    }

    /// The position to resume from, if resuming is possible.
    pub(crate) fn since(&self) -> Option<Position> {
        (self.has_baseline && !self.force_snapshot).then(|| self.collection.position())
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
    }

    /// Feeds one snapshot chunk; returns the whole snapshot once the last chunk arrived, and
    /// `Err(())` if the chunks do not fit together (the caller asks for a fresh snapshot).
    pub(crate) fn push_chunk(
        &mut self,
        epoch: u64,
        seq: u64,
        chunk: u32,
        last: bool,
        records: Vec<Record>,
    ) -> Result<Option<Snapshot>, ()> {
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
    pub(crate) fn persistable(&self) -> Option<Snapshot> {
        (self.has_baseline && self.collection.missing().is_empty())
            .then(|| self.collection.snapshot())
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
