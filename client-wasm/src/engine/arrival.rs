//! The values a message brought, and where each sits in it, so the shell can hand JavaScript
//! the objects it parses from the message itself instead of a second copy of their text.
//!
//! The engine keeps each value's text as it decoded it ([`Json`]). A change whose new value
//! is that very text (the same allocation, [`Json::address`]) shows the value as it arrived:
//! an event's `data`, or a snapshot record's. A patch's value is new text, but when it is the
//! old value with the patch's fields written over it, JavaScript can make it from the two
//! objects it has. Noting is off unless the shell asks ([`Engine::note_arrivals`]).

use tidewire_shared::message::ServerMessage;
use tidewire_shared::{Change, Json};

use super::Engine;

/// Where in its message a value arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The event's `data`.
    Data {
        /// The event's seq (its change has it).
        seq: u64,
        /// The change the event made to its key, once applied (see [`Made`]).
        made: Option<Made>,
    },
    /// The `data` of the snapshot chunk's record `index`.
    Record {
        /// The record's index in the chunk's `records`.
        index: u32,
        /// Whether the chunk is its snapshot's last.
        last: bool,
    },
}

/// The change an event made to its own key in the collection: the key's values before and
/// after, the very texts the collection holds. A change that holds these same texts (by
/// address) is that change, so its key is the event's, even as a filtered collection sees it
/// (a record moving out is a removal of the same old value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    /// The value before.
    pub before: Option<Json>,
    /// The value after.
    pub after: Option<Json>,
    /// The event was newer than everything its stream had: for a patch, every field won, so
    /// the value after is the value before with the patch's fields written over it (a value
    /// before that is not an object counts as `{}`).
    pub newest: bool,
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
                    seq: event.seq,
                    made: None,
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

    /// Notes that the event just noted made `change` to its key; `newest`: it was newer than
    /// everything its stream had (see [`Made`]).
    pub(super) fn note_change(&mut self, change: &Change, newest: bool) {
        if !self.noting {
            return;
        }
        if let Some(Arrival {
            place: Place::Data { seq, made },
            ..
        }) = self.arrived.last_mut()
        {
            if *seq == change.seq {
                *made = Some(Made {
                    before: change.old.clone(),
                    after: change.new.clone(),
                    newest,
                });
            }
        }
    }
}
