//! The values a message brought, and where each sits in it, so the shell can hand JavaScript
//! the objects it parses from the message itself instead of a second copy of their text.
//!
//! The engine keeps each value's text as it decoded it ([`Json`]). A change whose new value
//! is that very text (the same allocation, [`Json::address`]) shows the value as it arrived:
//! an event's `data`, or a snapshot record's. A patch's value is new text, but when it is the
//! old value with the patch's fields written over it, JavaScript can make it from the two
//! objects it has. Noting is off unless the shell asks ([`Engine::note_arrivals`]).

use tidewire_shared::message::ServerMessage;
use tidewire_shared::{Change, Json, Op};

use super::Engine;

/// Where in its message a value arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The event's `data`.
    Data {
        /// The event's key (its change has it).
        key: String,
        /// The event's seq (its change has it).
        seq: u64,
        /// For a patch newer than everything the stream had: the record's value before it
        /// and after. Every field of the patch won, so the value after is the value before
        /// with the patch's fields written over it (a value before that is not an object
        /// counts as `{}`).
        patched: Option<(Option<Json>, Json)>,
    },
    /// The `data` of the snapshot chunk's record `index`.
    Record {
        /// The record's index in the chunk's `records`.
        index: u32,
        /// Whether the chunk is its snapshot's last.
        last: bool,
    },
}

/// A value that arrived in the message just handled.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The value, as the engine keeps it.
    pub value: Json,
    /// Where it was in the message.
    pub place: Place,
}

impl Engine {
    /// Turns noting of arrivals on or off (see [`Engine::take_arrivals`]).
    pub fn note_arrivals(&mut self, on: bool) {
        self.noting = on;
        if !on {
            self.arrived.clear();
        }
    }

    /// The values of the last message handled (by [`Engine::on_text`]), when noting is on.
    /// (Drained, so the list keeps its room for the next message.)
    pub fn take_arrivals(&mut self) -> std::vec::Drain<'_, Arrival> {
        self.arrived.drain(..)
    }

    /// Notes the values `message` carries.
    pub(super) fn note(&mut self, message: &ServerMessage<Json>) {
        if !self.noting {
            return;
        }
        match message {
            ServerMessage::Event(event) if event.is_durable() => self.arrived.push(Arrival {
                value: event.data.clone(),
                place: Place::Data {
                    key: event.key.clone(),
                    seq: event.seq,
                    patched: None,
                },
            }),
            ServerMessage::Snapshot { records, last, .. } => {
                for (index, record) in (0u32..).zip(records) {
                    self.arrived.push(Arrival {
                        value: record.data.clone(),
                        place: Place::Record { index, last: *last },
                    });
                }
            }
            _ => {}
        }
    }

    /// Notes that the event just noted made `change` as a patch newer than everything its
    /// stream had (see [`Place::Data`]).
    pub(super) fn note_patch(&mut self, change: &Change) {
        if !self.noting || change.op != Op::Patch {
            return;
        }
        let Some(new) = &change.new else {
            return;
        };
        if let Some(Arrival {
            place: Place::Data { key, seq, patched },
            ..
        }) = self.arrived.last_mut()
        {
            if *key == change.key && *seq == change.seq {
                *patched = Some((change.old.clone(), new.clone()));
            }
        }
    }
}
