//! The merge rules: a keyed collection that applies a stream's events idempotently.
//!
//! # Rules
//!
//! * Per stream, every durable event has a unique seq. The collection remembers which seqs it
//!   has seen (a contiguous high-water mark `applied` plus the out-of-order ones above it), so
//!   a repeated event is a no-op.
//! * Writes to a key are ordered by seq, not by arrival: `upsert` replaces the value,
//!   `delete` removes it, both only if newer than the key's last replace; `patch` merges the
//!   fields of an object, each field last-writer-wins by seq. A patch of a missing or
//!   non-object value starts from `{}` (the relay's `records` table does the same).
//! * Hence any permutation and duplication of a set of events converges to the state that
//!   applying them once in seq order gives (a property test checks this).
//! * `seq > applied + 1` reveals a gap: the outcome reports the missing range so the caller
//!   can ask for a replay; the event is still applied. On a view (a filtered subscription),
//!   an event whose `prev` equals `applied` follows it: the seqs in between did not concern
//!   the view, so there is no gap and `applied` moves to its seq.
//! * A snapshot sets the state at `(epoch, seq)`; afterwards only greater seqs apply. An event
//!   of another epoch is refused with [`Outcome::EpochMismatch`]: the caller must resync.
//!
//! Values are kept as their JSON text ([`Json`]): the clients decode, store and hand them on
//! without building a tree (see `json.rs` for the measurement), and a patched record's text
//! is computed once per change.

use std::collections::{HashMap, VecDeque};

use crate::event::{Event, Op, Position};
use crate::json::Json;
use crate::snapshot::{Record, Snapshot};

/// One change to a key, as seen by the application.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The key.
    pub key: String,
    /// The op of the event that caused the change (a snapshot load reports upsert/delete).
    pub op: Op,
    /// The seq of that event.
    pub seq: u64,
    /// The value before (`None` if absent).
    pub old: Option<Json>,
    /// The value after (`None` if absent).
    pub new: Option<Json>,
}

/// Missing seqs `from..=to` detected when an event arrived early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// First missing seq.
    pub from: u64,
    /// Last missing seq.
    pub to: u64,
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The event was new. `change` is `None` when it was superseded by a newer write to the
    /// same key (it still counts as seen). `gap` is set when seqs before it are missing.
    Applied {
        /// The visible change, if any.
        change: Option<Change>,
        /// Seqs still missing below this one, if any.
        gap: Option<Gap>,
    },
    /// The seq was already seen; nothing changed.
    Duplicate,
    /// An ephemeral message: collections do not store messages.
    Ephemeral,
    /// A view's event whose `prev` is not the collection's position: something before it was
    /// missed. Not applied (its seq, marked seen, would leave a hole that no replay could
    /// fill: the replay repeats it as a duplicate); replay from the position.
    Unfollowed {
        /// The seqs between the position and the event.
        gap: Gap,
    },
    /// The event belongs to another epoch: reload a snapshot.
    EpochMismatch {
        /// The collection's epoch.
        current: u64,
        /// The event's epoch.
        incoming: u64,
    },
}

/// The state of one key.
#[derive(Debug, Clone, PartialEq, Default)]
struct Entry {
    /// Seq of the last upsert or delete.
    base_seq: u64,
    /// Value of the last upsert (`None` after a delete).
    base: Option<Json>,
    /// Patched fields newer than `base_seq`, each with its seq, sorted by name. (A record has
    /// few fields; a `BTreeMap` here cost the browser package 3 KB.)
    fields: Vec<(String, Json, u64)>,
    /// The value: `base` with `fields` written over it (kept, so reading it is a clone of a
    /// reference, and a patch merges once).
    value: Option<Json>,
}

impl Entry {
    fn value(&self) -> Option<Json> {
        self.value.clone()
    }

    fn merge(&mut self) {
        self.value = if self.fields.is_empty() {
            self.base.clone()
        } else {
            let fields = self
                .fields
                .iter()
                .map(|(name, value, _)| (name.as_str(), value));
            Some(Json::merged(self.base.as_ref(), fields))
        };
    }

    fn seq(&self) -> u64 {
        self.fields
            .iter()
            .map(|(_, _, seq)| *seq)
            .fold(self.base_seq, u64::max)
    }

    /// Applies one write; returns whether the entry changed.
    fn apply(&mut self, op: Op, seq: u64, data: &Json) -> bool {
        match op {
            Op::Upsert | Op::Delete => {
                if seq <= self.base_seq {
                    return false;
                }
                self.base_seq = seq;
                self.base = (op == Op::Upsert).then(|| data.clone());
                self.fields.retain(|(_, _, field_seq)| *field_seq > seq);
                self.merge();
                true
            }
            Op::Patch => {
                if seq <= self.base_seq || !data.is_object() {
                    return false;
                }
                let mut changed = false;
                for (name, value) in data.fields() {
                    let at = self
                        .fields
                        .binary_search_by(|(known, _, _)| known.as_str().cmp(name.as_ref()));
                    match at {
                        Ok(at) if self.fields[at].2 < seq => {
                            self.fields[at] = (name.into_owned(), value, seq);
                            changed = true;
                        }
                        Ok(_) => {}
                        Err(at) => {
                            self.fields.insert(at, (name.into_owned(), value, seq));
                            changed = true;
                        }
                    }
                }
                if changed {
                    self.merge();
                }
                changed
            }
            Op::Message => false,
        }
    }

    fn is_tombstone(&self) -> bool {
        self.base.is_none() && self.fields.is_empty()
    }
}

/// A live keyed collection of one durable stream.
///
/// # Examples
///
/// ```
/// use tidewire_shared::{Collection, Event, Json, Op, StreamName};
/// use serde_json::json;
/// let stream = StreamName::new("todos")?;
/// let event = |seq, key: &str, op, data| Event {
///     stream: stream.clone(), epoch: 1, seq, key: key.into(), op, data: Json::from(data),
///     prev: None, ts: None,
/// };
/// let mut todos = Collection::new(1);
/// todos.apply(&event(2, "a", Op::Patch, json!({"done": true})));
/// todos.apply(&event(1, "a", Op::Upsert, json!({"title": "milk", "done": false})));
/// todos.apply(&event(1, "a", Op::Upsert, json!({"title": "milk", "done": false})));
/// assert_eq!(todos.get("a"), Some(Json::from(json!({"title": "milk", "done": true}))));
/// assert_eq!(todos.applied(), 2);
/// # Ok::<(), tidewire_shared::NameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Collection {
    epoch: u64,
    /// Every seq `<= applied` has been seen.
    applied: u64,
    /// Seen seqs above `applied` (arrived early), ascending. (Sorted queues rather than
    /// B-trees here: each B-tree type added about 9 KB to the browser package, twiggy.)
    early: VecDeque<u64>,
    entries: HashMap<String, Entry>,
    /// Deleted keys by the seq of their delete, pruned once `applied` passes it (no older
    /// write can arrive after that: it would be a duplicate).
    /// Ascending by seq.
    tombstones: VecDeque<(u64, String)>,
    /// Number of keys with a value.
    live: usize,
}

impl Collection {
    /// An empty collection at the start of `epoch`.
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch,
            ..Self::default()
        }
    }

    /// A collection holding `snapshot`.
    pub fn from_snapshot(snapshot: Snapshot<Json>) -> Self {
        let mut collection = Self::default();
        collection.load_snapshot(snapshot);
        collection
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The contiguous high-water mark: every seq up to it has been applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// `(epoch, applied)`: where to resume from.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.applied,
        }
    }

    /// Seqs missing between `applied` and the highest early seq, as ranges.
    pub fn missing(&self) -> Vec<Gap> {
        let mut gaps = Vec::new();
        let mut expected = self.applied + 1;
        for &seq in &self.early {
            if seq > expected {
                gaps.push(Gap {
                    from: expected,
                    to: seq - 1,
                });
            }
            expected = seq + 1;
        }
        gaps
    }

    /// Number of keys with a value.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True if no key has a value.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<Json> {
        self.entries.get(key).and_then(Entry::value)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries
            .get(key)
            .is_some_and(|entry| !entry.is_tombstone())
    }

    /// The seq that last changed `key` (also for deleted keys still remembered).
    pub fn key_seq(&self, key: &str) -> Option<u64> {
        self.entries.get(key).map(Entry::seq)
    }

    /// Every `(key, value)` with a value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Json)> + '_ {
        self.entries
            .iter()
            .filter_map(|(key, entry)| entry.value().map(|value| (key.as_str(), value)))
    }

    /// Keys with a value, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries
            .iter()
            .filter(|(_, entry)| !entry.is_tombstone())
            .map(|(key, _)| key.as_str())
    }

    /// Whether `seq` is above every seq seen here: a write with it wins over every field of
    /// every record (a patch's new value is the old one with all its fields written over it).
    pub fn is_newest(&self, seq: u64) -> bool {
        seq > self.early.back().copied().unwrap_or(self.applied)
    }

    /// Applies one event. See the module docs for the rules.
    pub fn apply(&mut self, event: &Event<Json>) -> Outcome {
        if event.op == Op::Message {
            return Outcome::Ephemeral;
        }
        if event.epoch != self.epoch {
            return Outcome::EpochMismatch {
                current: self.epoch,
                incoming: event.epoch,
            };
        }
        let seq = event.seq;
        if seq <= self.applied || self.early.binary_search(&seq).is_ok() {
            return Outcome::Duplicate;
        }
        // On a view, `prev` equal to what we have means the seqs in between did not concern
        // it: no gap.
        let follows = seq == self.applied + 1 || event.prev == Some(self.applied);
        let gap = (!follows).then(|| Gap {
            from: self.applied + 1,
            to: seq - 1,
        });
        if let (Some(gap), Some(_)) = (gap, event.prev) {
            return Outcome::Unfollowed { gap };
        }
        self.mark_seen(seq, follows);
        let change = self.write(&event.key, event.op, seq, &event.data);
        self.prune_tombstones();
        Outcome::Applied { change, gap }
    }

    fn mark_seen(&mut self, seq: u64, follows: bool) {
        if follows {
            self.applied = seq;
            while self.early.front() == Some(&(self.applied + 1)) {
                self.early.pop_front();
                self.applied += 1;
            }
        } else if let Err(at) = self.early.binary_search(&seq) {
            self.early.insert(at, seq);
        }
    }

    fn write(&mut self, key: &str, op: Op, seq: u64, data: &Json) -> Option<Change> {
        let entry = self.entries.entry(key.to_owned()).or_default();
        let old = entry.value();
        if !entry.apply(op, seq, data) {
            if entry.base_seq == 0 && entry.is_tombstone() {
                self.entries.remove(key);
            }
            return None;
        }
        let new = entry.value();
        if entry.is_tombstone() {
            let seq = entry.base_seq;
            match self.tombstones.binary_search_by_key(&seq, |(seq, _)| *seq) {
                Ok(at) => {
                    if let Some(tombstone) = self.tombstones.get_mut(at) {
                        tombstone.1 = key.to_owned();
                    }
                }
                Err(at) => self.tombstones.insert(at, (seq, key.to_owned())),
            }
        }
        match (old.is_some(), new.is_some()) {
            (false, true) => self.live += 1,
            (true, false) => self.live -= 1,
            _ => {}
        }
        if old == new {
            return None;
        }
        Some(Change {
            key: key.to_owned(),
            op,
            seq,
            old,
            new,
        })
    }

    fn prune_tombstones(&mut self) {
        while let Some(&(seq, _)) = self.tombstones.front() {
            if seq > self.applied {
                break;
            }
            let Some((_, key)) = self.tombstones.pop_front() else {
                break;
            };
            // A key deleted, revived and deleted again has several tombstone entries: only
            // remove it once its *latest* delete is at or below the high-water mark.
            let applied = self.applied;
            let prunable = |entry: &Entry| entry.is_tombstone() && entry.base_seq <= applied;
            if self.entries.get(&key).is_some_and(prunable) {
                self.entries.remove(&key);
            }
        }
    }

    /// On a view: the relay says the view is complete up to `seq` (its `subscribed` after a
    /// resume), so the next event names `seq` as its `prev`. Moves `applied` forward when
    /// nothing is waiting above it; never backwards. Not for unfiltered subscriptions, where
    /// a seq not applied is a seq missed.
    pub fn complete_to(&mut self, seq: u64) {
        if seq > self.applied && self.early.is_empty() {
            self.applied = seq;
        }
    }

    /// Replaces the state with `snapshot` and returns the visible changes (keys that appeared,
    /// disappeared or changed value), so a resync can be reported to the application.
    /// It takes the snapshot by value: the collection and the changes share each record's text.
    pub fn load_snapshot(&mut self, snapshot: Snapshot<Json>) -> Vec<Change> {
        let mut old_values: HashMap<String, Json> = self
            .iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        self.epoch = snapshot.epoch;
        self.applied = snapshot.seq;
        self.early.clear();
        self.tombstones.clear();
        self.entries.clear();
        self.live = 0;
        let mut changes = Vec::with_capacity(snapshot.records.len());
        for record in snapshot.records {
            let entry = Entry {
                base_seq: record.seq,
                base: Some(record.data.clone()),
                fields: Vec::new(),
                value: Some(record.data.clone()),
            };
            if self.entries.insert(record.key.clone(), entry).is_none() {
                self.live += 1;
            }
            let old = old_values.remove(&record.key);
            if old.as_ref() != Some(&record.data) {
                changes.push(Change {
                    key: record.key,
                    op: Op::Upsert,
                    seq: record.seq,
                    old,
                    new: Some(record.data),
                });
            }
        }
        let mut removed: Vec<Change> = old_values
            .into_iter()
            .map(|(key, old)| Change {
                key,
                op: Op::Delete,
                seq: snapshot.seq,
                old: Some(old),
                new: None,
            })
            .collect();
        removed.sort_by(|a, b| a.key.cmp(&b.key));
        changes.extend(removed);
        changes
    }

    /// The collection as a snapshot at `applied`: every live record, ordered by seq (then
    /// key, for determinism).
    pub fn snapshot(&self) -> Snapshot<Json> {
        let mut records: Vec<Record<Json>> = self
            .entries
            .iter()
            .filter_map(|(key, entry)| {
                entry.value().map(|data| Record {
                    key: key.clone(),
                    seq: entry.seq(),
                    data,
                })
            })
            .collect();
        records.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.key.cmp(&b.key)));
        Snapshot {
            epoch: self.epoch,
            seq: self.applied,
            records,
        }
    }

    /// Forgets everything and starts `epoch` empty (for a dropped and recreated stream).
    pub fn reset(&mut self, epoch: u64) -> Vec<Change> {
        self.load_snapshot(Snapshot {
            epoch,
            seq: 0,
            records: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamName;
    use serde_json::{json, Value};

    fn event(seq: u64, key: &str, op: Op, data: Value) -> Event<Json> {
        Event {
            stream: StreamName::new("s").expect("valid"),
            epoch: 1,
            seq,
            key: key.into(),
            op,
            data: Json::from(data),
            prev: None,
            ts: None,
        }
    }

    fn value(collection: &Collection, key: &str) -> Option<Value> {
        collection.get(key).map(|json| json.to_value())
    }

    #[test]
    fn duplicates_are_no_ops() {
        let mut collection = Collection::new(1);
        let first = event(1, "a", Op::Upsert, json!(1));
        assert!(matches!(
            collection.apply(&first),
            Outcome::Applied {
                change: Some(_),
                gap: None
            }
        ));
        assert_eq!(collection.apply(&first), Outcome::Duplicate);
        assert_eq!(collection.len(), 1);
    }

    #[test]
    fn gap_is_reported_and_filled() {
        let mut collection = Collection::new(1);
        collection.apply(&event(1, "a", Op::Upsert, json!(1)));
        let outcome = collection.apply(&event(4, "b", Op::Upsert, json!(4)));
        assert!(matches!(
            outcome,
            Outcome::Applied {
                gap: Some(Gap { from: 2, to: 3 }),
                ..
            }
        ));
        assert_eq!(collection.missing(), vec![Gap { from: 2, to: 3 }]);
        collection.apply(&event(3, "c", Op::Upsert, json!(3)));
        collection.apply(&event(2, "d", Op::Upsert, json!(2)));
        assert_eq!(collection.applied(), 4);
        assert!(collection.missing().is_empty());
    }

    #[test]
    fn delete_then_late_upsert_stays_deleted() {
        let mut collection = Collection::new(1);
        collection.apply(&event(2, "a", Op::Delete, Value::Null));
        let outcome = collection.apply(&event(1, "a", Op::Upsert, json!(1)));
        assert!(matches!(outcome, Outcome::Applied { change: None, .. }));
        assert_eq!(value(&collection, "a"), None);
        assert!(collection.is_empty());
        // Once everything up to the delete is seen, the tombstone is pruned.
        assert!(collection.entries.is_empty());
    }

    #[test]
    fn patch_merges_fields_last_writer_wins() {
        let mut collection = Collection::new(1);
        collection.apply(&event(1, "a", Op::Upsert, json!({"x": 1, "y": 1})));
        collection.apply(&event(3, "a", Op::Patch, json!({"x": 3})));
        collection.apply(&event(2, "a", Op::Patch, json!({"x": 2, "z": 2})));
        assert_eq!(
            value(&collection, "a"),
            Some(json!({"x": 3, "y": 1, "z": 2}))
        );
        collection.apply(&event(4, "a", Op::Upsert, json!("scalar")));
        assert_eq!(value(&collection, "a"), Some(json!("scalar")));
        collection.apply(&event(5, "a", Op::Patch, json!({"w": 5})));
        assert_eq!(value(&collection, "a"), Some(json!({"w": 5})));
    }

    #[test]
    fn epoch_mismatch_is_refused() {
        let mut collection = Collection::new(2);
        assert_eq!(
            collection.apply(&event(1, "a", Op::Upsert, json!(1))),
            Outcome::EpochMismatch {
                current: 2,
                incoming: 1
            }
        );
    }

    #[test]
    fn snapshot_load_reports_the_difference() {
        let mut collection = Collection::new(1);
        collection.apply(&event(1, "a", Op::Upsert, json!(1)));
        collection.apply(&event(2, "b", Op::Upsert, json!(2)));
        let snapshot = Snapshot {
            epoch: 9,
            seq: 5,
            records: vec![
                Record {
                    key: "b".into(),
                    seq: 2,
                    data: Json::from(json!(2)),
                },
                Record {
                    key: "c".into(),
                    seq: 5,
                    data: Json::from(json!(5)),
                },
            ],
        };
        let changes = collection.load_snapshot(snapshot.clone());
        let keys: Vec<(&str, Op)> = changes.iter().map(|c| (c.key.as_str(), c.op)).collect();
        assert_eq!(keys, vec![("c", Op::Upsert), ("a", Op::Delete)]);
        assert_eq!(collection.epoch(), 9);
        assert_eq!(collection.snapshot(), snapshot);
        assert_eq!(
            collection.apply(&event(5, "x", Op::Upsert, json!(0))),
            Outcome::EpochMismatch {
                current: 9,
                incoming: 1
            }
        );
    }

    #[test]
    fn a_view_event_whose_prev_is_applied_follows_it() {
        let mut collection = Collection::new(1);
        collection.complete_to(4);
        let view_event = |seq, prev| Event {
            prev: Some(prev),
            ..event(seq, "k", Op::Upsert, json!({"n": seq}))
        };
        // Seqs 5 and 6 did not concern the view.
        match collection.apply(&view_event(7, 4)) {
            Outcome::Applied { gap: None, .. } => {}
            other => panic!("applied without a gap, got {other:?}"),
        }
        assert_eq!(collection.applied(), 7);
        // A prev that is not what we have is a gap: not applied, so the replay can fill it.
        match collection.apply(&view_event(12, 9)) {
            Outcome::Unfollowed { gap } => assert_eq!((gap.from, gap.to), (8, 11)),
            other => panic!("unfollowed, got {other:?}"),
        }
        assert_eq!(collection.applied(), 7);
        assert_eq!(value(&collection, "k"), Some(json!({"n": 7})));
        assert!(matches!(
            collection.apply(&view_event(12, 7)),
            Outcome::Applied { gap: None, .. }
        ));
    }
}
