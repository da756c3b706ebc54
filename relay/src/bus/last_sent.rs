//! Per-connection dedupe cursor: the last `(epoch, seq)` sent on each stream.
//!
//! The connection task owns one [`LastSent`]. Every delivery taken from the connection's queue goes
//! through [`LastSent::admit`] before it is written, so an event already covered by a snapshot or a
//! replay is never sent twice and an event that would skip a seq is never sent early. See the
//! [module docs of `bus`](super) for the subscribe protocol this supports.

use std::sync::Arc;

use super::StreamMap;

use crate::delivery::{Delivery, DeliveryKind, Position};

/// What [`LastSent::admit`] decided about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admit {
    /// Write it to the client. For an event the cursor has advanced to its seq.
    Send,
    /// An event whose seq is at or below the last one sent: already covered, drop it.
    Duplicate,
    /// The stream is not tracked by this cursor (never started, or forgotten after an
    /// unsubscribe while deliveries were still queued): drop it.
    Untracked,
    /// An event with a seq beyond `last_sent.seq + 1`: something between Postgres and here lost
    /// events. Not admitted and the cursor is unchanged; replay from `last_sent` (the outbox for a
    /// durable stream, a `gap` advisory for a raw channel), then continue.
    Gap {
        /// What the client has.
        last_sent: Position,
        /// The seq that arrived.
        got: u64,
    },
    /// An event from another epoch than the one the client has. Not admitted and the cursor is
    /// unchanged; tell the client to resync, send a new snapshot and [`LastSent::start`] again.
    EpochChanged {
        /// What the client has.
        last_sent: Position,
        /// The epoch that arrived.
        got_epoch: u64,
    },
}

impl Admit {
    /// Whether the delivery should be written to the client.
    pub fn is_send(self) -> bool {
        self == Admit::Send
    }
}

/// The last position sent to one connection on each stream it follows.
///
/// Memory: one map entry (an `Arc<str>` and a [`Position`], about 40 bytes plus the map's
/// overhead) per subscribed stream.
#[derive(Debug, Default, Clone)]
pub struct LastSent {
    /// Last `(epoch, seq)` written to the client per stream. A stream is "tracked" while it has an
    /// entry; entries are added by [`LastSent::start`] and removed by [`LastSent::forget`].
    /// Looked up for every delivery (the keys are this connection's own subscriptions, bounded
    /// by `--max-subscriptions`).
    last_sent: StreamMap<Arc<str>, Position>,
}

impl LastSent {
    /// An empty cursor that tracks no stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts (or restarts) tracking `stream` at `position`: the snapshot or replay sent to the
    /// client covers everything up to and including `position.seq`.
    pub fn start(&mut self, stream: Arc<str>, position: Position) {
        self.last_sent.insert(stream, position);
    }

    /// Stops tracking `stream` (after an unsubscribe); deliveries still queued for it are then
    /// answered [`Admit::Untracked`]. Returns the last position sent, if it was tracked.
    pub fn forget(&mut self, stream: &str) -> Option<Position> {
        self.last_sent.remove(stream)
    }

    /// The last position sent on `stream`, if tracked.
    pub fn position(&self, stream: &str) -> Option<Position> {
        self.last_sent.get(stream).copied()
    }

    /// Number of tracked streams.
    pub fn len(&self) -> usize {
        self.last_sent.len()
    }

    /// Whether no stream is tracked.
    pub fn is_empty(&self) -> bool {
        self.last_sent.is_empty()
    }

    /// Moves a tracked stream's position forward to `delivery`'s (same epoch, later seq).
    pub fn advance(&mut self, delivery: &Delivery) {
        if let Some(last_sent) = self.last_sent.get_mut(&*delivery.stream) {
            if last_sent.epoch == delivery.epoch && delivery.seq > last_sent.seq {
                last_sent.seq = delivery.seq;
            }
        }
    }

    /// Decides whether `delivery` goes to the client, advancing the stream's position when an
    /// event is admitted.
    ///
    /// - [`DeliveryKind::Event`]: admitted only if it is in the tracked epoch and its seq is
    ///   exactly one past the last sent; lower seqs are [`Admit::Duplicate`], higher seqs are
    ///   [`Admit::Gap`], another epoch is [`Admit::EpochChanged`].
    /// - [`DeliveryKind::Message`] and [`DeliveryKind::Advisory`]: never deduped, always
    ///   [`Admit::Send`] on a tracked stream.
    /// - Any kind on an untracked stream: [`Admit::Untracked`].
    pub fn admit(&mut self, delivery: &Delivery) -> Admit {
        let Some(last_sent) = self.last_sent.get_mut(&*delivery.stream) else {
            return Admit::Untracked;
        };
        match delivery.kind {
            DeliveryKind::Message | DeliveryKind::Advisory => Admit::Send,
            DeliveryKind::Event => {
                if delivery.epoch != last_sent.epoch {
                    Admit::EpochChanged {
                        last_sent: *last_sent,
                        got_epoch: delivery.epoch,
                    }
                } else if delivery.seq <= last_sent.seq {
                    Admit::Duplicate
                } else if delivery.seq - last_sent.seq > 1 {
                    Admit::Gap {
                        last_sent: *last_sent,
                        got: delivery.seq,
                    }
                } else {
                    last_sent.seq = delivery.seq;
                    Admit::Send
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn event(stream: &str, epoch: u64, seq: u64) -> Delivery {
        Delivery::event(stream.into(), epoch, seq, Bytes::new())
    }

    #[test]
    fn untracked_stream_is_dropped() {
        let mut cursor = LastSent::new();
        assert_eq!(cursor.admit(&event("a", 1, 1)), Admit::Untracked);
        assert_eq!(
            cursor.admit(&Delivery::message("a".into(), Bytes::new())),
            Admit::Untracked
        );
        assert!(cursor.is_empty());
    }

    #[test]
    fn events_at_or_below_last_sent_are_duplicates() {
        let mut cursor = LastSent::new();
        cursor.start("a".into(), Position::new(7, 10));
        assert_eq!(cursor.admit(&event("a", 7, 9)), Admit::Duplicate);
        assert_eq!(cursor.admit(&event("a", 7, 10)), Admit::Duplicate);
        assert_eq!(cursor.admit(&event("a", 7, 11)), Admit::Send);
        assert_eq!(cursor.admit(&event("a", 7, 11)), Admit::Duplicate);
        assert_eq!(cursor.position("a"), Some(Position::new(7, 11)));
    }

    #[test]
    fn a_skipped_seq_is_a_gap_and_does_not_advance() {
        let mut cursor = LastSent::new();
        cursor.start("a".into(), Position::new(1, 3));
        assert_eq!(
            cursor.admit(&event("a", 1, 5)),
            Admit::Gap {
                last_sent: Position::new(1, 3),
                got: 5
            }
        );
        assert_eq!(cursor.position("a"), Some(Position::new(1, 3)));
        assert!(cursor.admit(&event("a", 1, 4)).is_send());
        assert!(cursor.admit(&event("a", 1, 5)).is_send());
    }

    #[test]
    fn another_epoch_is_reported_and_does_not_advance() {
        let mut cursor = LastSent::new();
        cursor.start("a".into(), Position::new(1, 3));
        assert_eq!(
            cursor.admit(&event("a", 2, 1)),
            Admit::EpochChanged {
                last_sent: Position::new(1, 3),
                got_epoch: 2
            }
        );
        assert_eq!(cursor.position("a"), Some(Position::new(1, 3)));
        cursor.start("a".into(), Position::new(2, 0));
        assert!(cursor.admit(&event("a", 2, 1)).is_send());
    }

    #[test]
    fn messages_and_advisories_always_pass_on_tracked_streams() {
        let mut cursor = LastSent::new();
        cursor.start("a".into(), Position::new(1, 3));
        let message = Delivery::message("a".into(), Bytes::new());
        let advisory = Delivery::advisory("a".into(), 1, 3, Bytes::new());
        for _ in 0..3 {
            assert_eq!(cursor.admit(&message), Admit::Send);
            assert_eq!(cursor.admit(&advisory), Admit::Send);
        }
        assert_eq!(cursor.position("a"), Some(Position::new(1, 3)));
    }

    #[test]
    fn forget_stops_admitting() {
        let mut cursor = LastSent::new();
        cursor.start("a".into(), Position::new(1, 0));
        cursor.start("b".into(), Position::new(1, 0));
        assert_eq!(cursor.forget("a"), Some(Position::new(1, 0)));
        assert_eq!(cursor.admit(&event("a", 1, 1)), Admit::Untracked);
        assert!(cursor.admit(&event("b", 1, 1)).is_send());
        assert_eq!(cursor.len(), 1);
    }
}
