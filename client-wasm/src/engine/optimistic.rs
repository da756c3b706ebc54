//! Optimistic state: a stream's writes not yet applied from the relay, shown over its records.
//!
//! A durable write joins its stream's [`Overlay`] when the application makes it, so reads see
//! it at once. It stays until the event at its acknowledged seq has been applied (the
//! collection's `applied` reached it), and is then dropped in the same step that applies the
//! event: the record goes from the optimistic value to the committed one without showing the
//! older committed value in between. Remote events that arrive first change the committed
//! record under the overlay, and the write is applied again on top (the shared merge rule,
//! [`tidewire_shared::view::after`]), so a patch keeps its fields over someone else's newer
//! record. A write the relay refuses is dropped and the record shows its committed value
//! again.
//!
//! The overlay keeps, for each key some pending write touches, the value the application
//! sees (`None`: deleted), so reads cost one map lookup more than without writes.

use litemap::LiteMap;

use serde_json::Value;
use tidewire_shared::message::Publish;
use tidewire_shared::view::after;
use tidewire_shared::{Change, Collection, Json, Op};

/// One durable write not yet settled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    /// The operation id the application's promise waits on.
    pub(crate) op_id: String,
    pub(crate) key: String,
    pub(crate) op: Op,
    pub(crate) data: Value,
    /// The seq the relay acknowledged, with the epoch the collection had then.
    pub(crate) acked: Option<(u64, u64)>,
}

impl Pending {
    /// The pending form of write `op_id`.
    pub(crate) fn of(op_id: String, publish: &Publish) -> Self {
        Pending {
            op_id,
            key: publish.key.clone(),
            op: publish.op,
            data: publish.data.clone(),
            acked: None,
        }
    }
}

/// A visible value changed because of the overlay: `(key, old, new)`.
pub(crate) type Shift = (String, Option<Json>, Option<Json>);

/// The pending writes of one stream and the values they show.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    writes: Vec<Pending>,
    visible: LiteMap<String, Option<Json>>,
}

impl Overlay {
    /// The value the application sees for `key` if a pending write touches it: `Some(None)`
    /// for a key deleted optimistically; `None` when only the committed record counts.
    pub(crate) fn get(&self, key: &str) -> Option<Option<&Json>> {
        self.visible.get(key).map(Option::as_ref)
    }

    /// The keys pending writes touch, with the value each shows.
    pub(crate) fn visible(&self) -> &LiteMap<String, Option<Json>> {
        &self.visible
    }

    /// Whether no write is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Adds a write; returns the visible change it makes, if any.
    pub(crate) fn add(&mut self, committed: &Collection, write: Pending) -> Option<Shift> {
        let key = write.key.clone();
        let old = self.value(committed, &key);
        self.writes.push(write);
        self.refresh(committed, &key);
        let new = self.value(committed, &key);
        (old != new).then_some((key, old, new))
    }

    /// Records the relay's acknowledgement of `op_id` at `seq` (in the collection's epoch).
    /// Returns false when no such write is pending.
    pub(crate) fn ack(&mut self, op_id: &str, epoch: u64, seq: u64) -> bool {
        match self.writes.iter_mut().find(|write| write.op_id == op_id) {
            Some(write) => {
                write.acked = Some((epoch, seq));
                true
            }
            None => false,
        }
    }

    /// Drops the write `op_id` (refused); returns the visible change, if any.
    pub(crate) fn remove(&mut self, committed: &Collection, op_id: &str) -> Option<Shift> {
        let index = self.writes.iter().position(|write| write.op_id == op_id)?;
        let key = self.writes[index].key.clone();
        let old = self.value(committed, &key);
        self.writes.remove(index);
        self.refresh(committed, &key);
        let new = self.value(committed, &key);
        (old != new).then_some((key, old, new))
    }

    /// Drops and returns the acknowledged writes the collection has caught up with (or that
    /// belong to an older epoch), oldest first. The values their keys show stay the old ones
    /// until [`Overlay::refresh_keys`].
    pub(crate) fn settle(&mut self, committed: &Collection) -> Vec<Pending> {
        let epoch = committed.epoch();
        let applied = committed.applied();
        let (settled, kept) = std::mem::take(&mut self.writes)
            .into_iter()
            .partition(|write| {
                write
                    .acked
                    .is_some_and(|(at, seq)| at != epoch || seq <= applied)
            });
        self.writes = kept;
        settled
    }

    /// Recomputes the visible values of `keys` over `committed`; returns those that changed
    /// (a key given twice changes once).
    pub(crate) fn refresh_keys<'a>(
        &mut self,
        committed: &Collection,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Shift> {
        let mut shifts = Vec::new();
        for key in keys {
            let old = self.value(committed, key);
            self.refresh(committed, key);
            let new = self.value(committed, key);
            if old != new {
                shifts.push((key.to_owned(), old, new));
            }
        }
        shifts
    }

    /// Turns changes of the committed records (already applied to `committed`) into the
    /// changes the application sees: a key under a pending write shows the write applied
    /// over its new committed value, and nothing when that is what it showed before.
    pub(crate) fn translate(
        &mut self,
        committed: &Collection,
        changes: Vec<Change>,
    ) -> Vec<Change> {
        if self.visible.is_empty() {
            return changes;
        }
        let mut seen = Vec::with_capacity(changes.len());
        for change in changes {
            let Some(shown) = self.visible.get(&change.key).cloned() else {
                seen.push(change);
                continue;
            };
            self.refresh(committed, &change.key);
            let now = self.value(committed, &change.key);
            if now != shown {
                seen.push(shift_change((change.key.clone(), shown, now), change.seq));
            }
        }
        seen
    }

    /// The value the application sees for `key`.
    fn value(&self, committed: &Collection, key: &str) -> Option<Json> {
        match self.visible.get(key) {
            Some(value) => value.clone(),
            None => committed.get(key),
        }
    }

    /// Folds the pending writes of `key` over its committed value.
    fn refresh(&mut self, committed: &Collection, key: &str) {
        let mut touched = false;
        // Pending writes are few: their values are folded as trees, and the result kept as
        // text like every record.
        let mut value = committed.get(key).map(|value| value.to_value());
        for write in self.writes.iter().filter(|write| write.key == key) {
            touched = true;
            value = after(write.op, value.as_ref(), &write.data);
        }
        if touched {
            self.visible.insert(key.to_owned(), value.map(Json::from));
        } else {
            self.visible.remove(key);
        }
    }
}

/// The change the application sees for a visible shift, at `seq` (0: not committed yet).
pub(crate) fn shift_change((key, old, new): Shift, seq: u64) -> Change {
    Change {
        key,
        op: if new.is_some() {
            Op::Upsert
        } else {
            Op::Delete
        },
        seq,
        old,
        new,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tidewire_shared::{Event, Snapshot};

    use super::*;

    fn collection() -> Collection {
        Collection::from_snapshot(Snapshot {
            epoch: 1,
            seq: 1,
            records: vec![tidewire_shared::Record {
                key: "a".into(),
                seq: 1,
                data: Json::from(json!({"n": 1, "k": "x"})),
            }],
        })
    }

    fn ids(writes: &[Pending]) -> Vec<&str> {
        writes.iter().map(|write| write.op_id.as_str()).collect()
    }

    fn keys(writes: &[Pending]) -> impl Iterator<Item = &str> {
        writes.iter().map(|write| write.key.as_str())
    }

    fn write(op_id: &str, key: &str, op: Op, data: Value) -> Pending {
        Pending {
            op_id: op_id.into(),
            key: key.into(),
            op,
            data,
            acked: None,
        }
    }

    fn event(seq: u64, key: &str, op: Op, data: Value) -> Event<Json> {
        Event {
            key: key.into(),
            op,
            data,
            ..tidewire_shared::fixtures::event("s", 1, seq)
        }
        .map_data(Json::from)
    }

    #[test]
    fn a_write_shows_at_once_and_gives_way_to_its_event_without_a_change() {
        let mut committed = collection();
        let mut overlay = Overlay::default();
        let shift = overlay.add(&committed, write("w1", "a", Op::Patch, json!({"n": 2})));
        assert_eq!(
            shift,
            Some((
                "a".into(),
                Some(Json::from(json!({"n": 1, "k": "x"}))),
                Some(Json::from(json!({"n": 2, "k": "x"})))
            ))
        );
        assert_eq!(
            overlay.get("a"),
            Some(Some(&Json::from(json!({"n": 2, "k": "x"}))))
        );
        assert!(overlay.ack("w1", 1, 2));
        let tidewire_shared::Outcome::Applied {
            change: Some(change),
            ..
        } = committed.apply(&event(2, "a", Op::Patch, json!({"n": 2})))
        else {
            panic!("applied");
        };
        let settled = overlay.settle(&committed);
        assert_eq!(ids(&settled), vec!["w1"]);
        // The event shows nothing new: the application saw this value already.
        assert!(overlay.translate(&committed, vec![change]).is_empty());
        assert!(overlay.refresh_keys(&committed, keys(&settled)).is_empty());
        assert!(overlay.is_empty());
        assert_eq!(overlay.get("a"), None);
    }

    #[test]
    fn remote_events_before_the_ack_are_shown_under_the_write() {
        let mut committed = collection();
        let mut overlay = Overlay::default();
        overlay.add(&committed, write("w1", "a", Op::Patch, json!({"n": 2})));
        let tidewire_shared::Outcome::Applied {
            change: Some(change),
            ..
        } = committed.apply(&event(2, "a", Op::Upsert, json!({"n": 9, "k": "y"})))
        else {
            panic!("applied");
        };
        let seen = overlay.translate(&committed, vec![change]);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].old, Some(Json::from(json!({"n": 2, "k": "x"}))));
        assert_eq!(seen[0].new, Some(Json::from(json!({"n": 2, "k": "y"}))));
        // A refused write rolls back to the committed value.
        let shift = overlay.remove(&committed, "w1").expect("a change");
        assert_eq!(shift.2, Some(Json::from(json!({"n": 9, "k": "y"}))));
        assert_eq!(overlay.get("a"), None);
    }

    #[test]
    fn deletes_and_epochs() {
        let committed = collection();
        let mut overlay = Overlay::default();
        overlay.add(&committed, write("w1", "a", Op::Delete, Value::Null));
        assert_eq!(overlay.get("a"), Some(None));
        overlay.ack("w1", 0, 7);
        // Acknowledged in another epoch: settled whatever the seq.
        let settled = overlay.settle(&committed);
        assert_eq!(ids(&settled), vec!["w1"]);
        let shifts = overlay.refresh_keys(&committed, keys(&settled));
        assert_eq!(shifts.len(), 1);
        assert_eq!(shifts[0].2, Some(Json::from(json!({"n": 1, "k": "x"}))));
    }
}
