//! A stream's subscribers as the bus fans a delivery out to them: grouped by the delivery
//! thread that runs each connection (see [`shard`](super::shard)), and in each group the plain
//! ones and the filtered ones indexed by the equality their filter requires, so a delivery
//! costs O(matching subscribers), not O(subscribers).
//!
//! A filter that requires `field = v` (or `field in [..]`) at its top level can only hold
//! for a record whose `field` is one of those values, before or after the event. So a
//! durable event is offered to the subscribers indexed under its record's value of `field`
//! before the event (its pre-image) and after it, plus the few whose filter has no such
//! equality (scanned every time). The session then judges each exactly
//! (`tidewire_shared::view::judge`); the index only avoids offering to those that cannot care.
//! Deliveries without a record change (advisories) go to every filtered subscriber.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tidewire_shared::filter::Scalar;
use tidewire_shared::{Filter, Op};

use super::queue::Subscriber;
use crate::delivery::{Change, Delivery};

/// One immutable snapshot of a stream's subscribers, shared by every publish until the
/// stream's membership changes: one [`Group`] per delivery thread (one in all when the bus
/// has no shards).
#[derive(Debug)]
pub struct Fanout {
    groups: Vec<Group>,
}

impl Fanout {
    /// Builds the snapshot from `(subscriber, filter)` pairs, each in the group of its
    /// subscriber's shard (the last group for a shard beyond them).
    pub fn build<'a>(
        groups: usize,
        members: impl Iterator<Item = (&'a Subscriber, Option<&'a Arc<Filter>>)>,
    ) -> Self {
        let mut fanout = Fanout {
            groups: (0..groups.max(1)).map(|_| Group::default()).collect(),
        };
        let last = fanout.groups.len() - 1;
        for (subscriber, filter) in members {
            let index = subscriber.shard().min(last);
            if let Some(group) = fanout.groups.get_mut(index) {
                group.add(subscriber, filter);
            }
        }
        fanout
    }

    /// Every subscriber, filtered or not.
    pub fn len(&self) -> usize {
        self.groups.iter().map(Group::len).sum()
    }

    /// Whether there is no subscriber.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribers without a filter, in all groups.
    pub fn plain_len(&self) -> usize {
        self.groups.iter().map(|group| group.plain().len()).sum()
    }

    /// Every subscriber, group by group.
    pub fn iter(&self) -> impl Iterator<Item = &Subscriber> {
        self.groups.iter().flat_map(Group::iter)
    }

    /// The groups, indexed by shard.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }
}

/// The subscribers of a stream that one delivery thread serves.
#[derive(Debug, Default)]
pub struct Group {
    plain: Vec<Subscriber>,
    filtered: Vec<Subscriber>,
    /// Field, then value, then positions in `filtered`.
    index: HashMap<Arc<str>, HashMap<Scalar, Vec<usize>>>,
    /// Positions in `filtered` of filters without an indexable equality.
    scanned: Vec<usize>,
}

impl Group {
    /// Adds one subscriber, indexed by its filter's equality if it has one.
    fn add(&mut self, subscriber: &Subscriber, filter: Option<&Arc<Filter>>) {
        let Some(filter) = filter else {
            self.plain.push(subscriber.clone());
            return;
        };
        let position = self.filtered.len();
        self.filtered.push(subscriber.clone());
        match filter.index_terms() {
            Some((field, values)) => {
                let by_value = self.index.entry(Arc::clone(field)).or_default();
                for value in values {
                    let positions = by_value.entry(value.clone()).or_default();
                    if positions.last() != Some(&position) {
                        positions.push(position);
                    }
                }
            }
            None => self.scanned.push(position),
        }
    }

    /// Every subscriber, filtered or not.
    pub fn len(&self) -> usize {
        self.plain.len() + self.filtered.len()
    }

    /// Whether there is no subscriber.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every subscriber, plain ones first.
    pub fn iter(&self) -> impl Iterator<Item = &Subscriber> {
        self.plain.iter().chain(self.filtered.iter())
    }

    /// Subscribers without a filter: they get every delivery.
    pub fn plain(&self) -> &[Subscriber] {
        &self.plain
    }

    /// Subscribers with a filter.
    pub fn filtered(&self) -> &[Subscriber] {
        &self.filtered
    }

    /// The filtered subscribers `delivery` may concern, each once, into `out` (cleared
    /// first): all of them for a delivery without a record change, else those indexed under
    /// the record's values before and after, plus the scanned ones.
    pub fn candidates<'a>(&'a self, delivery: &Delivery, out: &mut Vec<&'a Subscriber>) {
        out.clear();
        if self.filtered.is_empty() {
            return;
        }
        let Some(change) = delivery.change.as_deref() else {
            out.extend(self.filtered.iter());
            return;
        };
        let mut positions: Vec<usize> = self.scanned.clone();
        for (field, by_value) in &self.index {
            for value in [before(change, field), after(change, field)]
                .into_iter()
                .flatten()
            {
                if let Some(found) = Scalar::from_json(value).and_then(|key| by_value.get(&key)) {
                    positions.extend_from_slice(found);
                }
            }
        }
        positions.sort_unstable();
        positions.dedup();
        out.extend(
            positions
                .into_iter()
                .filter_map(|position| self.filtered.get(position)),
        );
    }
}

/// The record's `field` before the change.
fn before<'a>(change: &'a Change, field: &str) -> Option<&'a Value> {
    change.prior.as_ref()?.get(field)
}

/// The record's `field` after the change, without building the record: an upsert's data, a
/// patch's own field or else the field it leaves in place (a patch replaces a record that is
/// not an object), a message's payload (a filter judges a message by its data).
fn after<'a>(change: &'a Change, field: &str) -> Option<&'a Value> {
    match change.op {
        Op::Upsert | Op::Message => change.data.get(field),
        Op::Patch => change.data.get(field).or_else(|| match &change.prior {
            Some(Value::Object(record)) => record.get(field),
            _ => None,
        }),
        Op::Delete => None,
    }
}

#[cfg(test)]
mod tests;
