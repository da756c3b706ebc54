//! The host of a shared connection: a small relay, inside the tab (or worker) that holds the
//! browser's one connection, for the other tabs of the origin.
//!
//! Guests speak the relay's protocol to the host. A guest's `subscribe` opens a view with its
//! filter in the host's engine (so the host's subscription covers it), and is answered from
//! the host's records once that view is live: `subscribed` at once when the guest is already
//! at the host's position, the recent events it lacks when the host still has them, else a
//! snapshot of the records its filter matches. From then on every event the host applies is
//! relayed, judged for the guest's filter like the relay judges a view (move-in as `upsert`,
//! move-out as `delete`, `prev` chaining the events a filtered guest gets). A guest ahead of
//! the host (it was live on a host that died) waits until the host has caught up, so nothing
//! goes backwards. Writes are made by the host's engine with the guest's write id and
//! answered with `ack`/`error` once settled; presence is the connection's.
//!
//! Sans-IO: the shell delivers guest messages and the engine's [`Tap`]s, and sends what
//! comes back to the guests.

use std::collections::VecDeque;

use litemap::LiteMap;

use serde_json::Value;
use tidewire_shared::view::Verdict;
use tidewire_shared::{Change, Event, Filter, Json, Op, Position, Record};

use super::wire::{self, GuestMessage};
use crate::engine::effect::{Tap, WriteOutcome};
use crate::engine::Engine;

/// Events kept per stream to resume a guest exactly (a guest that lags further gets a
/// snapshot, which reports only what differs).
const RECENT_EVENTS: usize = 2000;

/// Texts to send: `(guest, message)`.
pub(crate) type Out = Vec<(String, String)>;

/// One guest's subscription to one stream.
#[derive(Debug)]
struct Sub {
    /// The host engine's view for the guest's filter.
    view: u32,
    filter: Option<Filter>,
    /// Where the guest is (the `since` it asked with, then the last seq it was sent).
    at: Option<Position>,
    /// Answered (`subscribed` sent): events are relayed.
    live: bool,
}

#[derive(Debug, Default)]
struct Guest {
    subs: LiteMap<String, Sub>,
}

/// Recent events of one stream, oldest first, with the committed change each made.
#[derive(Debug, Default)]
struct Recent {
    epoch: u64,
    events: VecDeque<(Event<Json>, Option<Change>)>,
}

/// The host. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Host {
    guests: LiteMap<String, Guest>,
    recent: LiteMap<String, Recent>,
    /// The host engine's operation ids of guest writes: `(guest, the guest's operation id)`.
    writes: LiteMap<String, (String, String)>,
    /// The host's connection is down (guests were told with a `disconnect` advisory).
    down: bool,
    /// The presence id of the host's connection the guests were told (each guest's own is
    /// `<it>/<guest>`).
    announced: Option<String>,
}

impl Host {
    /// A guest joined: it is told the presence id of the shared connection.
    pub(crate) fn join(&mut self, engine: &Engine, guest: &str) -> Out {
        self.guests.insert(guest.to_owned(), Guest::default());
        let mut out = vec![(guest.to_owned(), connect(engine.presence_id(), guest))];
        if self.down {
            out.push((guest.to_owned(), wire::advisory("disconnect", None, None)));
        }
        out
    }

    /// A guest left (its tab closed): its presence entries go too.
    pub(crate) fn leave(&mut self, engine: &mut Engine, guest: &str) {
        if let Some(state) = self.guests.remove(guest) {
            for stream in state.subs.keys() {
                let _ = engine.set_guest_presence(stream, guest, Value::Null);
            }
        }
        self.writes.retain(|_, (owner, _)| owner != guest);
    }

    /// Tells every guest its presence id again when the host's connection changed (a new
    /// connection has a new id).
    pub(crate) fn on_connection(&mut self, engine: &Engine) -> Out {
        let id = engine.presence_id().map(str::to_owned);
        if id == self.announced {
            return Vec::new();
        }
        self.announced.clone_from(&id);
        self.guests
            .keys()
            .map(|guest| (guest.clone(), connect(id.as_deref(), guest)))
            .collect()
    }

    /// The guests.
    pub(crate) fn guests(&self) -> impl Iterator<Item = &str> {
        self.guests.keys().map(String::as_str)
    }

    /// One message from a guest.
    pub(crate) fn on_text(&mut self, engine: &mut Engine, guest: &str, text: &str) -> Out {
        if !self.guests.contains_key(guest) {
            return Vec::new();
        }
        let message = match wire::decode(text) {
            Ok(message) => message,
            Err(reason) => {
                let text = wire::error(None, None, "bad_message", &reason);
                return vec![(guest.to_owned(), text)];
            }
        };
        match message {
            GuestMessage::Subscribe {
                stream,
                since,
                filter,
            } => {
                let name = stream.as_str().to_owned();
                let view = match engine.open_view(&name, filter.as_ref()) {
                    Ok(view) => view,
                    Err(error) => {
                        let code = wire::code(error.code());
                        let text = wire::error(None, Some(&name), code, &error.to_string());
                        return vec![(guest.to_owned(), text)];
                    }
                };
                let filter = filter.and_then(|value| Filter::parse_bounded(&value).ok());
                if let Some(state) = self.guests.get_mut(guest) {
                    let sub = Sub {
                        view,
                        filter: filter.filter(|filter| !filter.is_everything()),
                        at: since,
                        live: false,
                    };
                    state.subs.insert(name, sub);
                }
                self.serve(engine)
            }
            GuestMessage::Unsubscribe(stream) => {
                if let Some(state) = self.guests.get_mut(guest) {
                    state.subs.remove(stream.as_str());
                }
                vec![(guest.to_owned(), wire::unsubscribed(stream.as_str()))]
            }
            GuestMessage::Publish {
                id,
                stream,
                key,
                op,
                data,
                write_id,
            } => match engine.write_with(stream.as_str(), &key, op, data, write_id) {
                Ok(host_id) => {
                    self.writes.insert(host_id, (guest.to_owned(), id));
                    Vec::new()
                }
                Err(error) => {
                    let code = wire::code(error.code());
                    let text =
                        wire::error(Some(&id), Some(stream.as_str()), code, &error.to_string());
                    vec![(guest.to_owned(), text)]
                }
            },
            GuestMessage::Presence { stream, data } => {
                // The guest's own entry; it leaves with the guest.
                let _ = engine.set_guest_presence(stream.as_str(), guest, data);
                Vec::new()
            }
            GuestMessage::Ping(id) => vec![(guest.to_owned(), wire::pong(id.as_deref()))],
            // The token is the host's: guests with another token share another connection.
            GuestMessage::Other => Vec::new(),
        }
    }

    /// A write of the host's engine settled: a guest's is answered (and `None` is returned
    /// when the write was the host's own).
    pub(crate) fn on_write(&mut self, outcome: &WriteOutcome) -> Option<Out> {
        let (guest, id) = self.writes.remove(&outcome.id)?;
        let stream = outcome.stream.as_str();
        let text = match &outcome.outcome {
            Ok(seq) => wire::ack(&id, stream, *seq),
            Err((code, message)) => wire::error(Some(&id), Some(stream), wire::code(code), message),
        };
        Some(vec![(guest, text)])
    }

    /// Something the host's engine applied.
    pub(crate) fn on_tap(&mut self, engine: &Engine, tap: Tap) -> Out {
        match tap {
            Tap::Applied { event, change } => {
                let stream = event.stream.as_str().to_owned();
                let recent = self.recent.entry(stream.clone()).or_default();
                if recent.epoch != event.epoch {
                    recent.epoch = event.epoch;
                    recent.events.clear();
                }
                if recent.events.len() == RECENT_EVENTS {
                    recent.events.pop_front();
                }
                recent.events.push_back((event.clone(), change.clone()));
                let mut out = Vec::new();
                for (name, guest) in &mut self.guests {
                    if let Some(sub) = guest.subs.get_mut(&stream) {
                        if sub.live {
                            relay_event(name, sub, &event, change.as_ref(), &mut out);
                        }
                    }
                }
                out
            }
            Tap::Ephemeral(event) => {
                let stream = event.stream.as_str();
                let text = wire::event(&event);
                self.guests
                    .iter()
                    .filter(|(_, guest)| {
                        guest.subs.get(stream).is_some_and(|sub| {
                            sub.live
                                && sub
                                    .filter
                                    .as_ref()
                                    .is_none_or(|f| f.matches_json(&event.data))
                        })
                    })
                    .map(|(name, _)| (name.clone(), text.clone()))
                    .collect()
            }
            Tap::Loaded(stream) => {
                // New records (a resync): guests are served again, from a snapshot unless
                // they are exactly at the new position.
                self.recent.remove(&stream);
                for guest in self.guests.iter_mut().map(|(_, value)| value) {
                    if let Some(sub) = guest.subs.get_mut(&stream) {
                        sub.live = false;
                    }
                }
                self.serve(engine)
            }
            Tap::Live(_) => self.serve(engine),
            Tap::Dropped { stream, reason } => {
                self.recent.remove(&stream);
                let text = wire::advisory("dropped", Some(&stream), reason.as_deref());
                let mut out = Vec::new();
                for (name, guest) in &mut self.guests {
                    if let Some(sub) = guest.subs.get_mut(&stream) {
                        sub.live = false;
                        sub.at = None;
                        out.push((name.clone(), text.clone()));
                    }
                }
                out
            }
        }
    }

    /// The relay refused the host's subscription of `stream` (or could not serve it now): the
    /// guests subscribed to it get the same error, and subscribe again when it can pass.
    pub(crate) fn on_stream_error(&mut self, stream: &str, code: &str, message: &str) -> Out {
        let text = wire::error(None, Some(stream), wire::code(code), message);
        let mut out = Vec::new();
        for (name, guest) in &mut self.guests {
            if let Some(sub) = guest.subs.get(stream) {
                if !sub.live {
                    guest.subs.remove(stream);
                    out.push((name.clone(), text.clone()));
                }
            }
        }
        out
    }

    /// The host's presence set of `stream` changed: every guest of it gets the whole set.
    pub(crate) fn on_presence(&self, engine: &Engine, stream: &str) -> Out {
        let Some(members) = engine.presence(stream) else {
            return Vec::new();
        };
        let text = wire::presence(stream, members.iter());
        self.guests
            .iter()
            .filter(|(_, guest)| guest.subs.get(stream).is_some_and(|sub| sub.live))
            .map(|(name, _)| (name.clone(), text.clone()))
            .collect()
    }

    /// The host's connection went down or came back, or the relay lost or regained
    /// PostgreSQL: guests are told (their status follows).
    pub(crate) fn on_link(&mut self, state: Result<(), String>) -> Out {
        let up = state.is_ok();
        if self.down != up {
            return Vec::new();
        }
        self.down = !up;
        let text = match state {
            Ok(()) => wire::advisory("reconnect", None, None),
            Err(reason) => wire::advisory("disconnect", None, Some(&reason)),
        };
        self.guests
            .keys()
            .map(|guest| (guest.clone(), text.clone()))
            .collect()
    }

    /// Answers every subscription that can be answered now.
    pub(crate) fn serve(&mut self, engine: &Engine) -> Out {
        let mut out = Vec::new();
        for (name, guest) in &mut self.guests {
            for (stream, sub) in &mut guest.subs {
                if !sub.live {
                    answer(engine, self.recent.get(stream), name, stream, sub, &mut out);
                }
            }
        }
        out
    }
}

/// The `connect` advisory that gives `guest` its presence id: its own entry behind the
/// shared connection, `<connection's id>/<guest>`.
fn connect(presence_id: Option<&str>, guest: &str) -> String {
    let reason = presence_id
        .and_then(|id| id.rsplit_once('-'))
        .map(|(relay, connection)| format!("relay={relay} connection={connection}/{guest}"));
    wire::advisory("connect", None, reason.as_deref())
}

/// Answers a subscription if the host's view of it is live and not behind the guest.
fn answer(
    engine: &Engine,
    recent: Option<&Recent>,
    guest: &str,
    stream: &str,
    sub: &mut Sub,
    out: &mut Out,
) {
    if !engine.is_view_live(sub.view) {
        return;
    }
    let Some(collection) = engine.collection(stream) else {
        return;
    };
    if !collection.missing().is_empty() {
        return;
    }
    let host = collection.position();
    let since = sub.at.filter(|at| at.epoch == host.epoch);
    if since.is_some_and(|at| at.seq > host.seq) {
        // The guest is ahead: wait for the host to catch up.
        return;
    }
    let replayable = since.filter(|at| {
        at.seq == host.seq
            || recent.is_some_and(|recent| {
                recent.epoch == host.epoch
                    && recent
                        .events
                        .front()
                        .is_some_and(|(first, _)| first.seq <= at.seq + 1)
            })
    });
    let resumed = if let Some(at) = replayable {
        sub.at = Some(at);
        if let Some(recent) = recent {
            for (event, change) in recent.events.iter().filter(|(event, _)| event.seq > at.seq) {
                relay_event(guest, sub, event, change.as_ref(), out);
            }
        }
        true
    } else {
        let records: Vec<Record<Json>> = collection
            .snapshot()
            .records
            .into_iter()
            .filter(|record| {
                sub.filter
                    .as_ref()
                    .is_none_or(|f| f.matches_json(&record.data))
            })
            .collect();
        out.push((guest.to_owned(), wire::snapshot(stream, host, &records)));
        false
    };
    sub.at = Some(host);
    sub.live = true;
    out.push((guest.to_owned(), wire::subscribed(stream, host, resumed)));
}

/// Relays one applied event to a guest's subscription, judged for its filter.
fn relay_event(
    guest: &str,
    sub: &mut Sub,
    event: &Event<Json>,
    change: Option<&Change>,
    out: &mut Out,
) {
    let at = sub.at.unwrap_or(Position {
        epoch: event.epoch,
        seq: 0,
    });
    if event.epoch != at.epoch || event.seq <= at.seq {
        return;
    }
    let Some(filter) = &sub.filter else {
        sub.at = Some(Position {
            epoch: event.epoch,
            seq: event.seq,
        });
        out.push((guest.to_owned(), wire::event(event)));
        return;
    };
    let matches = |value: Option<&Json>| value.is_some_and(|value| filter.matches_json(value));
    let (old, new) = change.map_or((None, None), |change| {
        (change.old.as_ref(), change.new.as_ref())
    });
    let mut relayed = event.clone();
    match Verdict::of(matches(old), matches(new)) {
        Verdict::Skip => return,
        Verdict::Pass => {}
        Verdict::MoveIn => {
            relayed.op = Op::Upsert;
            relayed.data = new.cloned().unwrap_or_default();
        }
        Verdict::MoveOut => {
            relayed.op = Op::Delete;
            relayed.data = Json::null();
        }
    }
    relayed.prev = Some(at.seq);
    sub.at = Some(Position {
        epoch: event.epoch,
        seq: event.seq,
    });
    out.push((guest.to_owned(), wire::event(&relayed)));
}

#[cfg(test)]
mod tests;
