//! The messages JavaScript parses once: a change whose new value arrived in a message just
//! received reaches the application as the object `JSON.parse` makes of that message, not as
//! a second copy of its text written by wasm, decoded by a `TextDecoder` (about 0.7 µs a call
//! however short) and parsed again.
//!
//! The engine notes the values each message brings ([`Arrival`]). A change is made in
//! JavaScript from the parsed message when
//!
//! * its new value is one of them (the same text, by [`Json::address`]): the value as it
//!   arrived;
//! * it is the change a patch made to its own key, the patch was newer than everything its
//!   stream had, and the change's values are the very ones the patch made (not a view's or a
//!   pending write's): the old record with the patch's fields written over it;
//! * it removes the event's own key.
//!
//! Anything else goes as text, as before. Measured with `scripts/bench client-wasm` (with the
//! decoder's one-pass snapshot records before it): a 10,000-record snapshot 25.5 -> 21 ms,
//! 10,000 live events with a listener 62.6 -> 57-59 ms.

use std::collections::HashMap;

use js_sys::Array;
use tidewire_shared::{Change, Json, Op};
use wasm_bindgen::JsValue;

use crate::engine::arrival::{Arrival, Made, Place};

/// How JavaScript makes a change (the plan's fifth number).
const AS_ARRIVED: f64 = 0.0;
const PATCHED: f64 = 1.0;
const DELETED: f64 = 2.0;
/// The plan's numbers per change: message slot (-1: from the text), index in the message's
/// `records` (-1: the event's `data`), op, seq, how.
const STRIDE: usize = 5;

/// A value noted in a message, held so its address stays its own.
#[derive(Debug)]
struct Known {
    value: Json,
    slot: u32,
    /// The record's index in its chunk, or -1 for an event's `data`.
    index: f64,
}

/// The messages of the current input (and of a snapshot still arriving), with their values.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The messages, as JavaScript strings until `js/records.js` parses one (it keeps the
    /// object in their place).
    messages: Array,
    /// The noted values by address.
    known: HashMap<usize, Known>,
    /// Each event's seq, slot and the change it made to its key.
    events: Vec<Event>,
    /// A snapshot's chunks are still arriving: keep everything past this input.
    keep: bool,
}

/// How each change of one batch is made: `numbers` ([`STRIDE`] per change), and the changes
/// that go as text.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    pub(crate) numbers: Vec<f64>,
    pub(crate) text: Vec<&'a Change>,
}

impl Parsed {
    pub(crate) fn new() -> Self {
        Self {
            messages: Array::new(),
            known: HashMap::new(),
            events: Vec::new(),
            keep: false,
        }
    }

    /// The messages noted, for `js/records.js`.
    pub(crate) fn messages(&self) -> &Array {
        &self.messages
    }

    /// Notes one message: `message` as JavaScript received it, `arrivals` its values.
    pub(crate) fn add(
        &mut self,
        message: &JsValue,
        arrivals: impl ExactSizeIterator<Item = Arrival>,
    ) {
        if arrivals.len() == 0 {
            return;
        }
        let slot = self.messages.push(message) - 1;
        for arrival in arrivals {
            let index = match arrival.place {
                Place::Data { seq, made } => {
                    if let Some(made) = made {
                        self.events.push(Event { seq, slot, made });
                    }
                    -1.0
                }
                Place::Record { index, last } => {
                    self.keep = !last;
                    f64::from(index)
                }
            };
            let known = Known {
                value: arrival.value,
                slot,
                index,
            };
            self.known.insert(known.value.address(), known);
        }
    }

    /// The input is handled: forget its messages, unless a snapshot is still arriving.
    pub(crate) fn end(&mut self) {
        if !self.keep {
            self.clear();
        }
    }

    /// Forgets every message (the connection they came on is gone). The table and the array
    /// are kept for the next input: making them again took 5% of applying a live event.
    pub(crate) fn clear(&mut self) {
        if !self.known.is_empty() || !self.events.is_empty() {
            self.messages.set_length(0);
            if self.known.capacity() > 1024 {
                // A snapshot's: not held for the live events that follow.
                self.known = HashMap::new();
            }
            self.known.clear();
            self.events.clear();
        }
        self.keep = false;
    }

    /// How JavaScript makes each of `changes`; `None` when none comes from a message here.
    pub(crate) fn plan<'a>(&self, changes: &'a [Change]) -> Option<Plan<'a>> {
        if self.known.is_empty() {
            return None;
        }
        let mut plan = Plan {
            numbers: Vec::with_capacity(changes.len() * STRIDE),
            text: Vec::new(),
        };
        for change in changes {
            match self.place(change) {
                Some((slot, index, how)) => plan.numbers.extend([
                    f64::from(slot),
                    index,
                    op_code(change.op),
                    // Seqs stay below 2^53, as everywhere in JavaScript.
                    change.seq as f64,
                    how,
                ]),
                None => {
                    plan.numbers.extend([-1.0, 0.0, 0.0, 0.0, 0.0]);
                    plan.text.push(change);
                }
            }
        }
        (plan.text.len() < changes.len()).then_some(plan)
    }

    /// Where `change`'s key and new value can be made from: (slot, index, how).
    fn place(&self, change: &Change) -> Option<(u32, f64, f64)> {
        if let Some(known) = change
            .new
            .as_ref()
            .and_then(|new| self.known.get(&new.address()))
        {
            return Some((known.slot, known.index, AS_ARRIVED));
        }
        // Otherwise only the change an event made to its own key: the same values.
        let same = |a: Option<&Json>, b: Option<&Json>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.address() == b.address(),
            _ => false,
        };
        let event = self
            .events
            .iter()
            .rev()
            .find(|event| event.seq == change.seq)?;
        if !same(change.old.as_ref(), event.made.before.as_ref()) {
            return None;
        }
        match &change.new {
            None => Some((event.slot, -1.0, DELETED)),
            // Not a view's or a pending write's values, and every field of the patch won.
            Some(new)
                if change.op == Op::Patch
                    && event.made.newest
                    && same(Some(new), event.made.after.as_ref()) =>
            {
                Some((event.slot, -1.0, PATCHED))
            }
            Some(_) => None,
        }
    }
}

/// An event of the input, for the change it made to its own key.
#[derive(Debug)]
struct Event {
    seq: u64,
    slot: u32,
    made: Made,
}

/// The ops in the order of `js/records.js`'s `OPS`: an op crosses to JavaScript, and back in
/// the benchmark, as its index here.
pub(crate) const OPS: [Op; 4] = [Op::Upsert, Op::Delete, Op::Patch, Op::Message];

/// The op's index in [`OPS`].
fn op_code(op: Op) -> f64 {
    let index = OPS
        .iter()
        .position(|known| *known == op)
        .unwrap_or(OPS.len());
    // At most 4: exact as a float.
    index as f64
}
