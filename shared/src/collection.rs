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
//! is computed once per change. Which write wins is the [`Ledger`]'s to say, from seqs
//! alone; this module makes the values.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::event::{Event, Op, Position};
use crate::json::{scan, Json};
use crate::ledger::{Head, How, Ledger, Won};
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

/// What applying one event did. `C` is the change reported: a [`Change`] for a
/// [`Collection`], how to make the new value for a [`Ledger`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<C = Change> {
    /// The event was new. `change` is `None` when it was superseded by a newer write to the
    /// same key (it still counts as seen). `gap` is set when seqs before it are missing.
    Applied {
        /// The visible change, if any.
        change: Option<C>,
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

impl<C> Outcome<C> {
    /// The same outcome with its change, if any, turned into another (or dropped).
    pub fn map_change<D>(self, change: impl FnOnce(C) -> Option<D>) -> Outcome<D> {
        match self {
            Outcome::Applied { change: made, gap } => Outcome::Applied {
                change: made.and_then(change),
                gap,
            },
            Outcome::Duplicate => Outcome::Duplicate,
            Outcome::Ephemeral => Outcome::Ephemeral,
            Outcome::Unfollowed { gap } => Outcome::Unfollowed { gap },
            Outcome::EpochMismatch { current, incoming } => {
                Outcome::EpochMismatch { current, incoming }
            }
        }
    }
}

/// The value a winning write makes of `old` (see the [ledger's module docs](crate::ledger)):
/// `data` is the event's, `patch` its fields when it is a patch.
fn made(
    old: Option<&Json>,
    op: Op,
    data: &Json,
    patch: &[(Cow<'_, str>, &str)],
    how: How<'_>,
) -> Option<Json> {
    match how {
        How::Replaced { kept: [] } => (op == Op::Upsert).then(|| data.clone()),
        How::Replaced { kept } => {
            // The kept fields' values are in the old value: it holds every patched field.
            let mut fields = old
                .and_then(|old| scan::object(old.as_str()).ok())
                .unwrap_or_default();
            fields.retain(|(name, _)| {
                kept.binary_search_by(|known| known.as_str().cmp(name))
                    .is_ok()
            });
            Some(Json::merged((op == Op::Upsert).then_some(data), &fields))
        }
        How::Patched { won: Won::All } => Some(Json::merged(old, patch)),
        How::Patched {
            won: Won::Some(won),
        } => {
            let won: Vec<_> = won
                .iter()
                .filter_map(|&at| patch.get(at).cloned())
                .collect();
            Some(Json::merged(old, &won))
        }
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
    /// Which writes win.
    ledger: Ledger,
    /// Each key with a value: the highest seq of the writes that won it, and the value (the
    /// last upsert with every field patched since written over it).
    records: HashMap<String, (u64, Json)>,
}

impl Collection {
    /// An empty collection at the start of `epoch`.
    pub fn new(epoch: u64) -> Self {
        Self {
            ledger: Ledger::new(epoch),
            records: HashMap::new(),
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
        self.ledger.epoch()
    }

    /// The contiguous high-water mark: every seq up to it has been applied.
    pub fn applied(&self) -> u64 {
        self.ledger.applied()
    }

    /// `(epoch, applied)`: where to resume from.
    pub fn position(&self) -> Position {
        self.ledger.position()
    }

    /// Seqs missing between `applied` and the highest early seq, as ranges.
    pub fn missing(&self) -> Vec<Gap> {
        self.ledger.missing()
    }

    /// Number of keys with a value.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if no key has a value.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<Json> {
        self.records.get(key).map(|(_, value)| value.clone())
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.records.contains_key(key)
    }

    /// The highest seq of the writes that made `key`'s value, while it has one.
    pub fn key_seq(&self, key: &str) -> Option<u64> {
        self.records.get(key).map(|(seq, _)| *seq)
    }

    /// Every `(key, value)` with a value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Json)> + '_ {
        self.records
            .iter()
            .map(|(key, (_, value))| (key.as_str(), value.clone()))
    }

    /// Keys with a value, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.records.keys().map(String::as_str)
    }

    /// Whether `seq` is above every seq seen here: a write with it wins over every field of
    /// every record (a patch's new value is the old one with all its fields written over it).
    pub fn is_newest(&self, seq: u64) -> bool {
        self.ledger.is_newest(seq)
    }

    /// Applies one event. See the module docs for the rules.
    pub fn apply(&mut self, event: &Event<Json>) -> Outcome {
        let head = Head {
            epoch: event.epoch,
            seq: event.seq,
            prev: event.prev,
            key: event.key.as_str(),
            op: event.op,
        };
        let object = event.data.is_object();
        let patch = match event.op {
            Op::Patch if object => scan::object(event.data.as_str()).unwrap_or_default(),
            _ => Vec::new(),
        };
        let names = || {
            patch
                .iter()
                .map(|(name, _)| name.as_ref())
                .collect::<Vec<&str>>()
        };
        let records = &mut self.records;
        self.ledger.apply(head, object, names).map_change(|how| {
            // One lookup for the usual change (a key that has a value and keeps one).
            let held = records.get_mut(&event.key);
            let old = held.as_deref().map(|(_, value)| value);
            let new = made(old, event.op, &event.data, &patch, how);
            let old = match (held, &new) {
                (Some(held), Some(new)) => {
                    let seq = event.seq.max(held.0);
                    Some(std::mem::replace(held, (seq, new.clone())).1)
                }
                (Some(_), None) => records.remove(&event.key).map(|(_, old)| old),
                (None, Some(new)) => {
                    records.insert(event.key.clone(), (event.seq, new.clone()));
                    None
                }
                (None, None) => None,
            };
            (old != new).then(|| Change {
                key: event.key.clone(),
                op: event.op,
                seq: event.seq,
                old,
                new,
            })
        })
    }

    /// On a view: the relay says the view is complete up to `seq` (its `subscribed` after a
    /// resume), so the next event names `seq` as its `prev`. Moves `applied` forward when
    /// nothing is waiting above it; never backwards. Not for unfiltered subscriptions, where
    /// a seq not applied is a seq missed.
    pub fn complete_to(&mut self, seq: u64) {
        self.ledger.complete_to(seq);
    }

    /// Replaces the state with `snapshot` and returns the visible changes (keys that appeared,
    /// disappeared or changed value), so a resync can be reported to the application.
    /// It takes the snapshot by value: the collection and the changes share each record's text.
    pub fn load_snapshot(&mut self, snapshot: Snapshot<Json>) -> Vec<Change> {
        let mut old_values = std::mem::take(&mut self.records);
        self.ledger.load(snapshot.epoch, snapshot.seq);
        self.records.reserve(snapshot.records.len());
        let mut changes = Vec::with_capacity(snapshot.records.len());
        for record in snapshot.records {
            self.records
                .insert(record.key.clone(), (record.seq, record.data.clone()));
            let old = old_values.remove(&record.key).map(|(_, old)| old);
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
            .map(|(key, (_, old))| Change {
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
            .records
            .iter()
            .map(|(key, (seq, data))| Record {
                key: key.clone(),
                seq: *seq,
                data: data.clone(),
            })
            .collect();
        records.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.key.cmp(&b.key)));
        let position = self.ledger.position();
        Snapshot {
            epoch: position.epoch,
            seq: position.seq,
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
        assert_eq!(collection.key_seq("a"), None);
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
