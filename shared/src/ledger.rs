//! The merge rules without the values: which writes win, from seqs alone.
//!
//! A [`Ledger`] follows one durable stream's seqs: which it has seen (the gap and view rules),
//! and, for each key written while some seq below was missing, the seq of its last replace
//! (`upsert` or `delete`) and of each field patched since. Given an event's epoch, seq, `prev`, key and op (and, when it asks, a patch's
//! field names) it says whether the event is new, whether seqs are missing before it, and how
//! the write changes its key ([`How`]). It never sees a value: the caller keeps them, and
//! makes each new value from the old one:
//!
//! * [`How::Replaced`]: the write's data (nothing for a `delete`), with the current value of
//!   each [kept](How::Replaced::kept) field written over it (an object started from `{}` when
//!   the data is not one);
//! * [`How::Patched`]: the current value (`{}` unless it is an object), with the patch's
//!   [winning](Won) fields written over it.
//!
//! Only an early write can beat a later arrival: a write at or below `applied` is older than
//! anything still to come (which is above `applied`, or a duplicate). So the ledger keeps the
//! seqs of the keys written while something is missing below, and forgets them all once
//! nothing is. While events arrive in order it keeps nothing, and deciding an event takes no
//! lookup and no field names: every write wins whole.
//!
//! [`Collection`](crate::Collection) is a ledger with the values as JSON text. The rules are
//! in the [collection module docs](crate::collection) and PROTOCOL.md.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::collection::{Gap, Outcome};
use crate::event::{Op, Position};

/// What a ledger needs of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a, Q: ?Sized> {
    /// The event's epoch.
    pub epoch: u64,
    /// Its seq.
    pub seq: u64,
    /// On a view, the position before it (see [`Event::prev`](crate::Event::prev)).
    pub prev: Option<u64>,
    /// Its key.
    pub key: &'a Q,
    /// Its op.
    pub op: Op,
}

/// How a winning write's new value is made from the old one (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How<'a> {
    /// An `upsert` or `delete` replaced the key's value.
    Replaced {
        /// Fields patched with a later seq than the replace, sorted: their current values
        /// stay, written over the new one. Empty unless events arrived out of order.
        kept: &'a [String],
    },
    /// A `patch` wrote its fields, or some of them.
    Patched {
        /// Which.
        won: Won<'a>,
    },
}

/// The fields of a patch that won.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Won<'a> {
    /// Every one.
    All,
    /// These, by their index among the names given (in order; never empty, never all).
    Some(&'a [usize]),
}

/// The seqs of one key written while something was missing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Entry {
    /// Seq of the last upsert or delete (0: none since something went missing).
    base_seq: u64,
    /// Patched fields newer than `base_seq`, each with its seq, sorted by name. (A record has
    /// few fields; a `BTreeMap` here cost the browser package 3 KB.)
    fields: Vec<(String, u64)>,
}

impl Entry {
    fn seq(&self) -> u64 {
        self.fields
            .iter()
            .map(|(_, seq)| *seq)
            .fold(self.base_seq, u64::max)
    }
}

/// Which writes of one durable stream win (see the [module docs](self)).
///
/// # Examples
///
/// ```
/// use tidewire_shared::ledger::{Head, How, Ledger, Won};
/// use tidewire_shared::{Op, Outcome};
/// let mut ledger: Ledger = Ledger::new(1);
/// let head = |seq, op| Head { epoch: 1, seq, prev: None, key: "a", op };
/// // In order: the write wins whole, and the field names are not asked for.
/// let first = ledger.apply(head(1, Op::Patch), true, || -> Vec<&str> { unreachable!() });
/// assert_eq!(first, Outcome::Applied { change: Some(How::Patched { won: Won::All }), gap: None });
/// // Seq 3 arrives before 2: it is early, and its fields are noted.
/// ledger.apply(head(3, Op::Patch), true, || vec!["done"]);
/// // Seq 2, an upsert older than that patch, keeps the patched field over its data.
/// let late = ledger.apply(head(2, Op::Upsert), false, Vec::<&str>::new);
/// assert_eq!(late, Outcome::Applied { change: Some(How::Replaced { kept: &["done".to_owned()] }), gap: None });
/// assert_eq!(ledger.applied(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct Ledger<K = String> {
    epoch: u64,
    /// Every seq `<= applied` has been seen.
    applied: u64,
    /// Seen seqs above `applied` (arrived early), ascending. (Sorted queues rather than
    /// B-trees here: each B-tree type added about 9 KB to the browser package, twiggy.)
    early: VecDeque<u64>,
    /// The keys written while something was missing below, with their seqs: emptied when
    /// `early` empties. (A key whose seqs all fell to or below `applied` meanwhile stays
    /// until then, harmlessly: every write still to come is newer than all of them.)
    entries: HashMap<K, Entry>,
    /// The last answer's kept fields and winning indexes (kept to spare an allocation).
    kept: Vec<String>,
    won: Vec<usize>,
    /// How many names the last patch had.
    named: usize,
}

/// Equal when they follow the same seqs (the last answer aside).
impl<K: Hash + Eq> PartialEq for Ledger<K> {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch
            && self.applied == other.applied
            && self.early == other.early
            && self.entries == other.entries
    }
}

impl<K> Default for Ledger<K> {
    fn default() -> Self {
        Self {
            epoch: 0,
            applied: 0,
            early: VecDeque::new(),
            entries: HashMap::new(),
            kept: Vec::new(),
            won: Vec::new(),
            named: 0,
        }
    }
}

impl<K: Hash + Eq + Clone> Ledger<K> {
    /// An empty ledger at the start of `epoch`.
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch,
            ..Self::default()
        }
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
        let mut expected = self.applied.saturating_add(1);
        for &seq in &self.early {
            if seq > expected {
                gaps.push(Gap {
                    from: expected,
                    to: seq - 1,
                });
            }
            expected = seq.saturating_add(1);
        }
        gaps
    }

    /// Whether `seq` is above every seq seen here: a write with it wins over every field of
    /// every record (a patch's new value is the old one with all its fields written over it).
    pub fn is_newest(&self, seq: u64) -> bool {
        seq > self.early.back().copied().unwrap_or(self.applied)
    }

    /// Whether an event at `seq` (with `prev`, on a view) comes in order: it follows what was
    /// applied and nothing arrived early. Such an event wins whole, and
    /// [`apply`](Self::apply) asks for no field names.
    pub fn in_order(&self, seq: u64, prev: Option<u64>) -> bool {
        self.follows(seq, prev) && self.early.is_empty()
    }

    /// Keys whose seqs are kept (written while something was missing below): 0 whenever
    /// nothing is.
    pub fn remembered(&self) -> usize {
        self.entries.len()
    }

    /// Applies one event. For a patch, `object` says whether its data is an object (a patch
    /// of anything else changes nothing) and `names` lists its field names; they are asked
    /// for only when events came out of order. A write that changes its key is answered with
    /// how to make the new value (`change: Some`); one that lost to a newer write with
    /// `change: None`.
    pub fn apply<Q, N>(
        &mut self,
        head: Head<'_, Q>,
        object: bool,
        names: impl FnOnce() -> Vec<N>,
    ) -> Outcome<How<'_>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        N: AsRef<str>,
    {
        if head.op == Op::Message {
            return Outcome::Ephemeral;
        }
        if head.epoch != self.epoch {
            return Outcome::EpochMismatch {
                current: self.epoch,
                incoming: head.epoch,
            };
        }
        let seq = head.seq;
        if seq <= self.applied || self.early.binary_search(&seq).is_ok() {
            return Outcome::Duplicate;
        }
        // On a view, `prev` equal to what we have means the seqs in between did not concern
        // it: no gap.
        let follows = self.follows(seq, head.prev);
        let gap = (!follows).then(|| Gap {
            from: self.applied + 1,
            to: seq - 1,
        });
        if let (Some(gap), Some(_)) = (gap, head.prev) {
            return Outcome::Unfollowed { gap };
        }
        if head.op == Op::Patch && !object {
            self.mark_seen(seq, follows);
            return Outcome::Applied { change: None, gap };
        }
        if follows && self.early.is_empty() {
            // In order: nothing above `applied` can beat it, and nothing to come can lose to it.
            self.applied = seq;
            let how = match head.op {
                Op::Patch => How::Patched { won: Won::All },
                _ => How::Replaced { kept: &[] },
            };
            return Outcome::Applied {
                change: Some(how),
                gap: None,
            };
        }
        let won = self.write(head.key, head.op, seq, names);
        self.mark_seen(seq, follows);
        let change = won.then(|| match head.op {
            Op::Patch if self.won.len() == self.named => How::Patched { won: Won::All },
            Op::Patch => How::Patched {
                won: Won::Some(&self.won),
            },
            _ => How::Replaced { kept: &self.kept },
        });
        Outcome::Applied { change, gap }
    }

    /// Whether `seq` (with `prev`, on a view) comes right after `applied`. (Checked: a seq
    /// of `u64::MAX` from a broken relay must not overflow.)
    fn follows(&self, seq: u64, prev: Option<u64>) -> bool {
        self.applied.checked_add(1) == Some(seq) || prev == Some(self.applied)
    }

    fn mark_seen(&mut self, seq: u64, follows: bool) {
        if follows {
            self.applied = seq;
            while self
                .early
                .front()
                .is_some_and(|&early| self.follows(early, None))
            {
                self.early.pop_front();
                self.applied += 1;
            }
        } else if let Err(at) = self.early.binary_search(&seq) {
            self.early.insert(at, seq);
        }
        if self.early.is_empty() {
            // Nothing is missing: every write to come is newer than every one seen.
            self.entries.clear();
        }
    }

    /// Decides a write that came out of order against the key's seqs, notes it, and leaves
    /// what it keeps or won in `kept` or `won`. Returns whether it won.
    fn write<Q, N>(&mut self, key: &Q, op: Op, seq: u64, names: impl FnOnce() -> Vec<N>) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        N: AsRef<str>,
    {
        self.kept.clear();
        self.won.clear();
        if !self.entries.contains_key(key) {
            self.entries.insert(key.to_owned(), Entry::default());
        }
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        if seq <= entry.base_seq {
            return false;
        }
        match op {
            Op::Patch => {
                let names = names();
                self.named = names.len();
                for (index, name) in names.iter().enumerate() {
                    let name = name.as_ref();
                    match entry
                        .fields
                        .binary_search_by(|(known, _)| known.as_str().cmp(name))
                    {
                        Ok(at) => {
                            if let Some(field) = entry.fields.get_mut(at).filter(|f| f.1 < seq) {
                                field.1 = seq;
                                self.won.push(index);
                            }
                        }
                        Err(at) => {
                            entry.fields.insert(at, (name.to_owned(), seq));
                            self.won.push(index);
                        }
                    }
                }
            }
            _ => {
                entry.base_seq = seq;
                // Fields patched before the replace go; the later ones are kept over it.
                let fields = std::mem::take(&mut entry.fields);
                for (name, field_seq) in fields {
                    if field_seq > seq {
                        self.kept.push(name.clone());
                        entry.fields.push((name, field_seq));
                    }
                }
            }
        }
        if entry.seq() == 0 {
            // A patch with no field, to a key with no seqs: nothing to keep.
            self.entries.remove(key);
            return false;
        }
        op != Op::Patch || !self.won.is_empty()
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

    /// Starts over from a snapshot at `(epoch, seq)`: every write it holds is at or below
    /// `seq`, so none of them is kept.
    pub fn load(&mut self, epoch: u64, seq: u64) {
        self.epoch = epoch;
        self.applied = seq;
        self.early.clear();
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64, key: &str, op: Op) -> Head<'_, str> {
        Head {
            epoch: 1,
            seq,
            prev: None,
            key,
            op,
        }
    }

    /// What a write did, as text: the kept or won fields, `lost`, or the outcome.
    fn wrote(ledger: &mut Ledger, seq: u64, key: &str, op: Op, names: &[&str]) -> String {
        match ledger.apply(head(seq, key, op), true, || names.to_vec()) {
            Outcome::Applied {
                change: Some(How::Replaced { kept }),
                ..
            } => format!("replaced[{}]", kept.join(",")),
            Outcome::Applied {
                change: Some(How::Patched { won: Won::All }),
                ..
            } => "patched[*]".to_owned(),
            Outcome::Applied {
                change:
                    Some(How::Patched {
                        won: Won::Some(won),
                    }),
                ..
            } => {
                let won: Vec<&str> = won.iter().map(|&at| names[at]).collect();
                format!("patched[{}]", won.join(","))
            }
            Outcome::Applied { change: None, .. } => "lost".to_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn each_field_goes_to_its_newest_write() {
        let mut ledger = Ledger::new(1);
        assert_eq!(wrote(&mut ledger, 1, "a", Op::Upsert, &[]), "replaced[]");
        assert_eq!(wrote(&mut ledger, 5, "a", Op::Patch, &["x"]), "patched[*]");
        assert_eq!(
            wrote(&mut ledger, 4, "a", Op::Patch, &["x", "y"]),
            "patched[y]"
        );
        assert_eq!(wrote(&mut ledger, 3, "a", Op::Upsert, &[]), "replaced[x,y]");
        assert_eq!(wrote(&mut ledger, 7, "a", Op::Delete, &[]), "replaced[]");
        assert_eq!(wrote(&mut ledger, 6, "a", Op::Upsert, &[]), "lost");
        assert_eq!(wrote(&mut ledger, 9, "a", Op::Patch, &["z"]), "patched[*]");
        assert_eq!(wrote(&mut ledger, 8, "a", Op::Upsert, &[]), "replaced[z]");
        assert_eq!(ledger.missing(), vec![Gap { from: 2, to: 2 }]);
        assert_eq!(ledger.remembered(), 1);
        // Seq 2 fills the gap: everything is in order again and nothing is kept.
        assert_eq!(wrote(&mut ledger, 2, "b", Op::Upsert, &[]), "replaced[]");
        assert_eq!(ledger.applied(), 9);
        assert_eq!(ledger.remembered(), 0);
        assert_eq!(wrote(&mut ledger, 10, "a", Op::Patch, &["z"]), "patched[*]");
    }

    #[test]
    fn in_order_nothing_is_kept_and_no_names_are_asked() {
        let mut ledger: Ledger = Ledger::new(1);
        for seq in 1..=100 {
            let op = if seq % 2 == 0 { Op::Patch } else { Op::Upsert };
            let outcome = ledger.apply(head(seq, "a", op), true, || -> Vec<&str> {
                panic!("names asked for in order")
            });
            assert!(matches!(
                outcome,
                Outcome::Applied {
                    change: Some(_),
                    gap: None
                }
            ));
        }
        assert_eq!(ledger.remembered(), 0);
        assert_eq!(
            ledger.apply(head(50, "a", Op::Upsert), true, Vec::<&str>::new),
            Outcome::Duplicate
        );
    }

    #[test]
    fn older_writes_and_patches_of_non_objects_lose() {
        let mut ledger = Ledger::new(1);
        assert_eq!(wrote(&mut ledger, 3, "a", Op::Delete, &[]), "replaced[]");
        assert_eq!(wrote(&mut ledger, 2, "a", Op::Upsert, &[]), "lost");
        let outcome = ledger.apply(head(1, "b", Op::Patch), false, Vec::<&str>::new);
        assert_eq!(
            outcome,
            Outcome::Applied {
                change: None,
                gap: None
            }
        );
        assert_eq!(ledger.applied(), 3);
        assert_eq!(
            ledger.remembered(),
            0,
            "everything up to the delete is seen"
        );
    }

    #[test]
    fn a_snapshot_load_starts_over() {
        let mut ledger = Ledger::new(1);
        assert_eq!(wrote(&mut ledger, 3, "a", Op::Upsert, &[]), "replaced[]");
        ledger.load(2, 9);
        assert_eq!(ledger.position(), Position { epoch: 2, seq: 9 });
        assert!(ledger.missing().is_empty());
        assert_eq!(ledger.remembered(), 0);
        assert!(ledger.is_newest(10) && !ledger.is_newest(9));
    }

    #[test]
    fn the_largest_seqs_do_not_overflow() {
        let mut ledger = Ledger::new(1);
        // A gap up to the largest seq, then the seq just below it.
        assert_eq!(
            wrote(&mut ledger, u64::MAX, "a", Op::Upsert, &[]),
            "replaced[]"
        );
        assert_eq!(
            ledger.missing(),
            vec![Gap {
                from: 1,
                to: u64::MAX - 1
            }]
        );
        ledger.load(1, u64::MAX - 2);
        assert_eq!(
            wrote(&mut ledger, u64::MAX, "a", Op::Patch, &["x"]),
            "patched[*]"
        );
        assert_eq!(
            wrote(&mut ledger, u64::MAX - 1, "a", Op::Upsert, &[]),
            "replaced[x]"
        );
        assert_eq!(ledger.applied(), u64::MAX);
        assert!(ledger.missing().is_empty());
        assert!(!ledger.in_order(0, None) && !ledger.is_newest(u64::MAX));
        assert_eq!(
            wrote(&mut ledger, u64::MAX, "a", Op::Upsert, &[]),
            "Duplicate"
        );
    }

    #[test]
    fn numbered_keys_work_as_well() {
        let mut ledger: Ledger<u32> = Ledger::new(1);
        let upsert = |ledger: &mut Ledger<u32>, seq, key: &u32| {
            let head = Head {
                epoch: 1,
                seq,
                prev: None,
                key,
                op: Op::Upsert,
            };
            matches!(
                ledger.apply(head, false, Vec::<&str>::new),
                Outcome::Applied {
                    change: Some(_),
                    ..
                }
            )
        };
        assert!(upsert(&mut ledger, 2, &7));
        assert!(!upsert(&mut ledger, 1, &7));
        assert!(upsert(&mut ledger, 3, &7));
    }
}
