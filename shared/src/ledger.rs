//! The merge rules without the values: which writes win, from seqs alone.
//!
//! A [`Ledger`] keeps, for each key, the seq of its last replace (`upsert` or `delete`) and of
//! each field patched since, and for the stream which seqs it has seen. Given an event's
//! epoch, seq, `prev`, key, op and (for a patch) its field names, it says whether the event
//! is new, whether seqs are missing before it, and what the write does to its key
//! ([`Wrote`]). It never sees a value: each key carries one `V` of the caller's, handed to the
//! caller with the decision so it can make the new value from the old one.
//!
//! [`Collection`](crate::Collection) is a ledger whose `V` is the record's JSON text. A client
//! that keeps its values elsewhere (the browser client's JavaScript objects) keeps a ledger
//! with `V = ()` and builds each new value from the decision:
//!
//! * [`How::Replaced`]: the write's data (nothing for a `delete`), with the current value of
//!   each [kept](How::Replaced::kept) field written over it (an object started from `{}` when
//!   the data is not one);
//! * [`How::Patched`]: the current value (`{}` unless it is an object), with each
//!   [won](How::Patched::won) field of the patch written over it.
//!
//! The rules are in the [collection module docs](crate::collection).

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

/// What a write that won did to its key, for the caller to make the new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrote<'a> {
    /// The key had a value before.
    pub had: bool,
    /// The key has a value after.
    pub has: bool,
    /// How the new value is made.
    pub how: How<'a>,
}

/// How a write's new value is made from the old one (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How<'a> {
    /// An `upsert` or `delete` replaced the key's value.
    Replaced {
        /// Fields patched with a later seq than the replace: their current values stay,
        /// written over the new one. Usually empty.
        kept: Kept<'a>,
    },
    /// A `patch` wrote some of its fields.
    Patched {
        /// The indexes, among the field names given, of those newer than what the key had.
        won: &'a [usize],
    },
}

/// The names of the fields a replace keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept<'a>(&'a [(String, u64)]);

impl<'a> Kept<'a> {
    /// The names, sorted.
    pub fn names(self) -> impl Iterator<Item = &'a str> {
        self.0.iter().map(|(name, _)| name.as_str())
    }

    /// Whether `name` is one of them.
    pub fn contains(self, name: &str) -> bool {
        self.0
            .binary_search_by(|(known, _)| known.as_str().cmp(name))
            .is_ok()
    }

    /// Whether there is none.
    pub fn is_empty(self) -> bool {
        self.0.is_empty()
    }
}

/// The state of one key.
#[derive(Debug, Clone, PartialEq, Default)]
struct Entry<V> {
    /// Seq of the last upsert or delete.
    base_seq: u64,
    /// The last replace was an upsert (a delete, or none, otherwise).
    based: bool,
    /// Patched fields newer than `base_seq`, each with its seq, sorted by name. (A record has
    /// few fields; a `BTreeMap` here cost the browser package 3 KB.)
    fields: Vec<(String, u64)>,
    /// The caller's.
    value: V,
}

impl<V> Entry<V> {
    fn has_value(&self) -> bool {
        self.based || !self.fields.is_empty()
    }

    fn seq(&self) -> u64 {
        self.fields
            .iter()
            .map(|(_, seq)| *seq)
            .fold(self.base_seq, u64::max)
    }

    /// Applies one write; returns whether the entry changed. A patch's winning fields are
    /// left in `won`.
    fn apply<N: AsRef<str>>(
        &mut self,
        op: Op,
        seq: u64,
        names: Option<&[N]>,
        won: &mut Vec<usize>,
    ) -> bool {
        match op {
            Op::Upsert | Op::Delete => {
                if seq <= self.base_seq {
                    return false;
                }
                self.base_seq = seq;
                self.based = op == Op::Upsert;
                self.fields.retain(|(_, field_seq)| *field_seq > seq);
                true
            }
            Op::Patch => {
                won.clear();
                let Some(names) = names.filter(|_| seq > self.base_seq) else {
                    return false;
                };
                for (index, name) in names.iter().enumerate() {
                    let name = name.as_ref();
                    match self
                        .fields
                        .binary_search_by(|(known, _)| known.as_str().cmp(name))
                    {
                        Ok(at) => {
                            if let Some(field) = self.fields.get_mut(at).filter(|f| f.1 < seq) {
                                field.1 = seq;
                                won.push(index);
                            }
                        }
                        Err(at) => {
                            self.fields.insert(at, (name.to_owned(), seq));
                            won.push(index);
                        }
                    }
                }
                !won.is_empty()
            }
            Op::Message => false,
        }
    }
}

/// The seqs of one durable stream's keys, and a `V` per key for the caller.
///
/// # Examples
///
/// ```
/// use tidewire_shared::ledger::{Head, How, Ledger};
/// use tidewire_shared::{Op, Outcome};
/// let mut ledger: Ledger = Ledger::new(1);
/// let head = |seq, op| Head { epoch: 1, seq, prev: None, key: "a", op };
/// // A patch arriving before the upsert it follows: its field wins over the upsert's.
/// let patched = ledger.apply(head(2, Op::Patch), Some(&["done"]), |_, wrote| {
///     Some(matches!(wrote.how, How::Patched { won: [0] }))
/// });
/// assert!(matches!(patched, Outcome::Applied { change: Some(true), gap: Some(_) }));
/// let upserted = ledger.apply(head(1, Op::Upsert), None::<&[&str]>, |_, wrote| {
///     match wrote.how {
///         How::Replaced { kept } => Some(kept.names().collect::<Vec<_>>().join(",")),
///         How::Patched { .. } => None,
///     }
/// });
/// assert_eq!(upserted, Outcome::Applied { change: Some("done".to_owned()), gap: None });
/// assert_eq!(ledger.applied(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Ledger<K = String, V = ()> {
    epoch: u64,
    /// Every seq `<= applied` has been seen.
    applied: u64,
    /// Seen seqs above `applied` (arrived early), ascending. (Sorted queues rather than
    /// B-trees here: each B-tree type added about 9 KB to the browser package, twiggy.)
    early: VecDeque<u64>,
    entries: HashMap<K, Entry<V>>,
    /// Deleted keys by the seq of their delete, pruned once `applied` passes it (no older
    /// write can arrive after that: it would be a duplicate). Ascending by seq.
    tombstones: VecDeque<(u64, K)>,
    /// Number of keys with a value.
    live: usize,
    /// The last patch's winning fields (kept to spare an allocation per patch).
    won: Vec<usize>,
}

/// Equal when they hold the same state (the scratch buffer aside).
impl<K: Hash + Eq, V: PartialEq> PartialEq for Ledger<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch
            && self.applied == other.applied
            && self.early == other.early
            && self.entries == other.entries
            && self.tombstones == other.tombstones
            && self.live == other.live
    }
}

impl<K, V> Default for Ledger<K, V> {
    fn default() -> Self {
        Self {
            epoch: 0,
            applied: 0,
            early: VecDeque::new(),
            entries: HashMap::new(),
            tombstones: VecDeque::new(),
            live: 0,
            won: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Default> Ledger<K, V> {
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

    /// The caller's value of `key`, if the ledger knows the key (deleted keys it still
    /// remembers included).
    pub fn value<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).map(|entry| &entry.value)
    }

    /// Whether `key` has a value.
    pub fn has<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).is_some_and(Entry::has_value)
    }

    /// The seq that last changed `key` (also for deleted keys still remembered).
    pub fn key_seq<Q>(&self, key: &Q) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).map(Entry::seq)
    }

    /// Every key with a value, with its seq and the caller's value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, u64, &V)> + '_ {
        self.entries
            .iter()
            .filter(|(_, entry)| entry.has_value())
            .map(|(key, entry)| (key, entry.seq(), &entry.value))
    }

    /// Whether `seq` is above every seq seen here: a write with it wins over every field of
    /// every record (a patch's new value is the old one with all its fields written over it).
    pub fn is_newest(&self, seq: u64) -> bool {
        seq > self.early.back().copied().unwrap_or(self.applied)
    }

    /// Applies one event. `names` are a patch's field names, `None` when its data is not an
    /// object (such a patch changes nothing); other ops ignore them. When the write wins,
    /// `update` gets the key's value and what the write did, and says what change to report
    /// (`None`: none, for example when the new value equals the old).
    pub fn apply<Q, N, C>(
        &mut self,
        head: Head<'_, Q>,
        names: Option<&[N]>,
        update: impl FnOnce(&mut V, Wrote<'_>) -> Option<C>,
    ) -> Outcome<C>
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
        let follows = seq == self.applied + 1 || head.prev == Some(self.applied);
        let gap = (!follows).then(|| Gap {
            from: self.applied + 1,
            to: seq - 1,
        });
        if let (Some(gap), Some(_)) = (gap, head.prev) {
            return Outcome::Unfollowed { gap };
        }
        self.mark_seen(seq, follows);
        let change = self.write(head.key, head.op, seq, names, update);
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

    fn write<Q, N, C>(
        &mut self,
        key: &Q,
        op: Op,
        seq: u64,
        names: Option<&[N]>,
        update: impl FnOnce(&mut V, Wrote<'_>) -> Option<C>,
    ) -> Option<C>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        N: AsRef<str>,
    {
        if !self.entries.contains_key(key) {
            self.entries.insert(key.to_owned(), Entry::default());
        }
        let entry = self.entries.get_mut(key)?;
        let had = entry.has_value();
        if !entry.apply(op, seq, names, &mut self.won) {
            if entry.base_seq == 0 && !entry.has_value() {
                self.entries.remove(key);
            }
            return None;
        }
        let has = entry.has_value();
        if !has {
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
        match (had, has) {
            (false, true) => self.live += 1,
            (true, false) => self.live -= 1,
            _ => {}
        }
        let how = match op {
            Op::Patch => How::Patched { won: &self.won },
            _ => How::Replaced {
                kept: Kept(&entry.fields),
            },
        };
        update(&mut entry.value, Wrote { had, has, how })
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
            let prunable = |entry: &Entry<V>| !entry.has_value() && entry.base_seq <= applied;
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

    /// Replaces the state with a snapshot at `(epoch, seq)` holding `records`: each key with
    /// its seq and the caller's value.
    pub fn load(&mut self, epoch: u64, seq: u64, records: impl IntoIterator<Item = (K, u64, V)>) {
        self.epoch = epoch;
        self.applied = seq;
        self.early.clear();
        self.tombstones.clear();
        self.entries.clear();
        self.live = 0;
        for (key, seq, value) in records {
            let entry = Entry {
                base_seq: seq,
                based: true,
                fields: Vec::new(),
                value,
            };
            if self.entries.insert(key, entry).is_none() {
                self.live += 1;
            }
        }
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

    /// What a write did, as text: `+` or `-` for a value gained or lost, then the kept or won
    /// fields.
    fn wrote(ledger: &mut Ledger, seq: u64, key: &str, op: Op, names: &[&str]) -> String {
        let outcome = ledger.apply(head(seq, key, op), Some(names), |_, wrote| {
            let sign = match (wrote.had, wrote.has) {
                (false, true) => "+",
                (true, false) => "-",
                _ => "",
            };
            Some(match wrote.how {
                How::Replaced { kept } => {
                    format!(
                        "{sign}replaced[{}]",
                        kept.names().collect::<Vec<_>>().join(",")
                    )
                }
                How::Patched { won } => {
                    let won: Vec<&str> = won.iter().map(|&at| names[at]).collect();
                    format!("{sign}patched[{}]", won.join(","))
                }
            })
        });
        match outcome {
            Outcome::Applied { change, .. } => change.unwrap_or_else(|| "lost".to_owned()),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn each_field_goes_to_its_newest_write() {
        let mut ledger = Ledger::new(1);
        assert_eq!(wrote(&mut ledger, 3, "a", Op::Patch, &["x"]), "+patched[x]");
        assert_eq!(
            wrote(&mut ledger, 2, "a", Op::Patch, &["x", "y"]),
            "patched[y]"
        );
        assert_eq!(wrote(&mut ledger, 1, "a", Op::Upsert, &[]), "replaced[x,y]");
        assert_eq!(wrote(&mut ledger, 4, "a", Op::Upsert, &[]), "replaced[]");
        assert_eq!(wrote(&mut ledger, 5, "a", Op::Delete, &[]), "-replaced[]");
        assert_eq!(wrote(&mut ledger, 7, "a", Op::Patch, &["z"]), "+patched[z]");
        assert_eq!(wrote(&mut ledger, 6, "a", Op::Upsert, &[]), "replaced[z]");
        assert_eq!(wrote(&mut ledger, 8, "a", Op::Patch, &["z"]), "patched[z]");
        assert_eq!(ledger.key_seq("a"), Some(8));
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn older_writes_lose_and_leave_nothing_behind() {
        let mut ledger = Ledger::new(1);
        // A delete of a key never seen wins (and is remembered), but nothing had a value.
        assert_eq!(wrote(&mut ledger, 2, "a", Op::Delete, &[]), "replaced[]");
        assert_eq!(wrote(&mut ledger, 1, "a", Op::Upsert, &[]), "lost");
        // Everything up to the delete is seen: its tombstone is pruned.
        assert_eq!(ledger.key_seq("a"), None);
        let outcome = ledger.apply(head(3, "b", Op::Patch), None::<&[&str]>, |_, _| Some(()));
        assert_eq!(
            outcome,
            Outcome::Applied {
                change: None,
                gap: None
            }
        );
        assert_eq!(
            ledger.key_seq("b"),
            None,
            "a patch of a non-object keeps nothing"
        );
        assert!(ledger.is_empty());
        assert_eq!(ledger.applied(), 3);
    }

    #[test]
    fn a_snapshot_load_replaces_everything() {
        let mut ledger: Ledger<String, u32> = Ledger::new(1);
        let upsert = |ledger: &mut Ledger<String, u32>, seq, key: &str, value| {
            ledger.apply(head(seq, key, Op::Upsert), None::<&[&str]>, |held, _| {
                *held = value;
                Some(())
            })
        };
        upsert(&mut ledger, 1, "a", 10);
        upsert(&mut ledger, 3, "b", 30);
        ledger.load(2, 9, [("c".to_owned(), 9, 90)]);
        assert_eq!(ledger.position(), Position { epoch: 2, seq: 9 });
        assert_eq!(ledger.value("c"), Some(&90));
        assert!(!ledger.has("a") && ledger.value("b").is_none());
        assert!(ledger.missing().is_empty());
        assert_eq!(ledger.iter().count(), 1);
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn numbered_keys_work_as_well() {
        let mut ledger: Ledger<u32> = Ledger::new(1);
        let head = |seq, key: &'static u32| Head {
            epoch: 1,
            seq,
            prev: None,
            key,
            op: Op::Upsert,
        };
        let applied = |outcome: Outcome<()>| {
            matches!(
                outcome,
                Outcome::Applied {
                    change: Some(()),
                    ..
                }
            )
        };
        assert!(applied(ledger.apply(
            head(2, &7),
            None::<&[&str]>,
            |_, _| Some(())
        )));
        assert!(!applied(ledger.apply(
            head(1, &7),
            None::<&[&str]>,
            |_, _| Some(())
        )));
        assert_eq!(ledger.key_seq(&7), Some(2));
    }
}
