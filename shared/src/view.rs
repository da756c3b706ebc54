//! Views: what a subscriber of a filtered stream receives for each event. The one statement
//! of move-in and move-out, used by the relay (live fan-out, replay) and by the browser
//! (local views of a collection).
//!
//! An event is judged on the record before it (its pre-image, stored beside the event) and
//! after it. The record matched before and matches after: the event passes as it is. It did
//! not and does: move-in, sent as an `upsert` of the whole record (a patch alone would not
//! make a record). It did and does not: move-out, sent as a `delete`. Neither: not sent.

use serde_json::{Map, Value};

use crate::event::{Event, Op};
use crate::filter::Filter;

/// What a filtered subscriber gets for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Nothing: the record is outside the view before and after.
    Skip,
    /// The event as it is: the record is in the view before and after.
    Pass,
    /// An `upsert` of the whole record after the event: it entered the view.
    MoveIn,
    /// A `delete` of the key: the record left the view.
    MoveOut,
}

impl Verdict {
    /// The verdict for a record that matched the view before (`before`) and after (`after`)
    /// an event: the one statement of pass, move-in, move-out and skip.
    pub fn of(before: bool, after: bool) -> Self {
        match (before, after) {
            (true, true) => Verdict::Pass,
            (false, true) => Verdict::MoveIn,
            (true, false) => Verdict::MoveOut,
            (false, false) => Verdict::Skip,
        }
    }
}

/// The record after an event, given the one before (`None`: the key had no record).
///
/// The merge rule of `tidewire.publish`: a patch sets its fields on an object record (one
/// level deep) and replaces anything else; an upsert replaces; a delete removes.
pub fn after(op: Op, prior: Option<&Value>, data: &Value) -> Option<Value> {
    match op {
        Op::Upsert => Some(data.clone()),
        Op::Patch => Some(patched(prior, data)),
        Op::Delete | Op::Message => None,
    }
}

fn patched(prior: Option<&Value>, patch: &Value) -> Value {
    match (prior, patch) {
        (Some(Value::Object(record)), Value::Object(fields)) => {
            let mut merged: Map<String, Value> = record.clone();
            for (name, value) in fields {
                merged.insert(name.clone(), value.clone());
            }
            Value::Object(merged)
        }
        _ => patch.clone(),
    }
}

/// Judges one durable event for a view. `prior` is the record before the event (`None`: no
/// record); the returned value is the record after it when the verdict is
/// [`Verdict::MoveIn`] (the body of the `upsert` to send), else `None`.
pub fn judge(
    filter: &Filter,
    op: Op,
    prior: Option<&Value>,
    data: &Value,
) -> (Verdict, Option<Value>) {
    let before = prior.is_some_and(|record| filter.matches(record));
    // Only a patch needs the merged record; an upsert's data is the record itself.
    let (now, merged) = match op {
        Op::Upsert => (filter.matches(data), None),
        Op::Patch => {
            let merged = patched(prior, data);
            (filter.matches(&merged), Some(merged))
        }
        Op::Delete | Op::Message => (false, None),
    };
    match Verdict::of(before, now) {
        Verdict::MoveIn => (
            Verdict::MoveIn,
            Some(merged.unwrap_or_else(|| data.clone())),
        ),
        verdict => (verdict, None),
    }
}

/// The event a filtered subscriber gets for `event`, whose key held `prior` before it: the
/// event itself, an `upsert` of the whole record (move-in), a `delete` (move-out), or nothing.
/// `prev` is left as it was; the sender sets it.
pub fn project(filter: &Filter, event: &Event, prior: Option<&Value>) -> Option<Event> {
    let (verdict, body) = judge(filter, event.op, prior, &event.data);
    match verdict {
        Verdict::Skip => None,
        Verdict::Pass => Some(event.clone()),
        Verdict::MoveIn => Some(Event {
            op: Op::Upsert,
            data: body.unwrap_or(Value::Null),
            ..event.clone()
        }),
        Verdict::MoveOut => Some(Event {
            op: Op::Delete,
            data: Value::Null,
            ..event.clone()
        }),
    }
}

// A property test: proptest is a native dev-dependency only.
#[cfg(all(test, not(target_family = "wasm")))]
mod tests;
