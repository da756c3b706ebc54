//! The invariant checker of docs/TESTING.md: per client and stream, what reached the
//! application against the ground truth, with the wire duplicates, reorders and the
//! advisories that announced a loss.
//!
//! A [`Track`] follows one subscription of one client. It applies the client rule of
//! docs/PROTOCOL.md ("Writing a client"): an event with `seq <= applied` is a wire duplicate
//! and dropped; `seq == applied + 1` is delivered to the application; `seq > applied + 1`
//! on a durable stream is a gap the client repairs by resubscribing from `applied` (the
//! event is dropped). Raw channels deliver every new seq (loss there is legal when a `gap`
//! advisory announces it). At the end, [`Track::verdict`] compares the delivered seqs with
//! the ground truth: the outbox `(baseline, head]` for durable streams, or the publisher's
//! numbers for raw channels.
//!
//! | count | meaning | durable pass | raw pass |
//! |---|---|---|---|
//! | `lost` | expected seqs never delivered (a resync's snapshot covers what it skipped) | 0 | allowed in announced windows |
//! | `dup_app` | seqs delivered twice to the application | 0 | 0 |
//! | `dup_wire` | events received again after being applied (legal across a reconnect) | any | any |
//! | `ooo` | events received with a lower seq than the one before, within one subscription interval | 0 | 0 |
//! | `silent_loss` | lost seqs that no `gap`/`resync` advisory covered | 0 | 0 |

use serde::Serialize;

/// Inclusive ranges of `u64`, sorted and disjoint; appending the next number is O(1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// Adds `value`; returns false if it was already present.
    pub fn insert(&mut self, value: u64) -> bool {
        self.insert_range(value, value) > 0
    }

    /// Adds `from..=to` (nothing if `from > to`); returns how many values were new.
    pub fn insert_range(&mut self, from: u64, to: u64) -> u64 {
        if from > to {
            return 0;
        }
        if let Some(last) = self.ranges.last_mut() {
            if from > last.1 {
                if from == last.1 + 1 {
                    last.1 = to;
                } else {
                    self.ranges.push((from, to));
                }
                return to - from + 1;
            }
        } else {
            self.ranges.push((from, to));
            return to - from + 1;
        }
        let before = self.len();
        self.ranges.push((from, to));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(start, end) in &self.ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.ranges = merged;
        self.len() - before
    }

    /// Whether `value` is present.
    pub fn contains(&self, value: u64) -> bool {
        let index = self.ranges.partition_point(|&(_, end)| end < value);
        self.ranges
            .get(index)
            .is_some_and(|&(start, _)| start <= value)
    }

    /// How many values are present.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(start, end)| end - start + 1).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many of `from..=to` are present.
    pub fn count_within(&self, from: u64, to: u64) -> u64 {
        self.ranges
            .iter()
            .map(|&(start, end)| {
                let low = start.max(from);
                let high = end.min(to);
                if low <= high {
                    high - low + 1
                } else {
                    0
                }
            })
            .sum()
    }

    /// The values of `from..=to` that are absent, as ranges.
    pub fn missing(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        let mut missing = Vec::new();
        let mut next = from;
        for &(start, end) in &self.ranges {
            if end < next {
                continue;
            }
            if start > to {
                break;
            }
            if start > next {
                missing.push((next, start - 1));
            }
            next = end.saturating_add(1);
            if next > to {
                return missing;
            }
        }
        if next <= to {
            missing.push((next, to));
        }
        missing
    }
}

/// Whether a stream is durable (outbox seqs) or a raw channel (publisher numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A durable stream: seq is the outbox seq.
    Durable,
    /// A raw `pg_notify` channel: the checker follows the publisher's `data.n`.
    Raw,
}

/// What the client should do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// A durable gap: resubscribe from `(epoch, applied)`.
    Resubscribe {
        /// The epoch to resume in.
        epoch: u64,
        /// The last seq applied.
        seq: u64,
    },
}

/// One client's view of one stream.
#[derive(Debug, Clone)]
pub struct Track {
    kind: Kind,
    /// The epoch of the seqs below (the first baseline's, then the latest resync's).
    epoch: Option<u64>,
    /// The seq the first baseline (snapshot or `subscribed`) covered: the expected interval
    /// starts after it.
    baseline: Option<u64>,
    /// Highest seq applied contiguously (durable) or highest publisher number (raw).
    applied: u64,
    /// Last seq received in the current subscription interval.
    last_wire: u64,
    /// Seqs delivered to the application.
    delivered: RangeSet,
    /// Seqs a snapshot stood for (skipped by a resync): not lost.
    stood_for: RangeSet,
    /// Seqs a `gap` advisory announced lost: lost, but not silently.
    announced: RangeSet,
    /// Raw: a `gap` advisory arrived; the next event closes the announced window.
    gap_open: bool,
    /// True while a resubscribe for a gap is in flight (events until it lands are dropped).
    repairing: bool,
    /// Raw channels: the relay's `(epoch, seq)` of the last event, to resume from (the relay
    /// then announces what it cannot replay with `gap`).
    raw_position: Option<(u64, u64)>,
    /// Whether the subscription is live (events after `subscribed` count for latency).
    pub live: bool,
    counts: Counts,
}

/// Counters of one track (also summed over tracks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Events received on the wire.
    pub wire: u64,
    /// Events delivered to the application.
    pub delivered: u64,
    /// Wire duplicates (seq already applied).
    pub dup_wire: u64,
    /// Seqs delivered to the application twice (must be 0).
    pub dup_app: u64,
    /// Events with a lower seq than the previous one in the same subscription interval.
    pub ooo: u64,
    /// Durable gaps the client saw on the wire (each repaired by a resubscribe).
    pub gaps: u64,
    /// `gap` advisories received.
    pub gap_advisories: u64,
    /// `resync` advisories received.
    pub resyncs: u64,
    /// `lagged` advisories received.
    pub lagged: u64,
    /// (Re)subscriptions that went live (`subscribed`).
    pub subscribed: u64,
}

impl Counts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counts) {
        self.wire += other.wire;
        self.delivered += other.delivered;
        self.dup_wire += other.dup_wire;
        self.dup_app += other.dup_app;
        self.ooo += other.ooo;
        self.gaps += other.gaps;
        self.gap_advisories += other.gap_advisories;
        self.resyncs += other.resyncs;
        self.lagged += other.lagged;
        self.subscribed += other.subscribed;
    }
}

/// The end result of one track against the ground truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Seqs expected (`head - baseline` for durable streams).
    pub expected: u64,
    /// Expected seqs never delivered and not stood for by a snapshot.
    pub lost: u64,
    /// Lost seqs no advisory announced.
    pub silent_loss: u64,
    /// The wire and delivery counters.
    pub counts: Counts,
    /// True when the track never got a baseline (never subscribed).
    pub never_subscribed: bool,
}

impl Verdict {
    /// docs/TESTING.md: durable streams pass with lost = dup_app = ooo = silent_loss = 0;
    /// raw channels may lose inside announced windows.
    pub fn passes(&self, kind: Kind) -> bool {
        let common = self.counts.dup_app == 0
            && self.counts.ooo == 0
            && self.silent_loss == 0
            && !self.never_subscribed;
        match kind {
            Kind::Durable => common && self.lost == 0,
            Kind::Raw => common,
        }
    }
}

impl Track {
    /// A track for a subscription that has not been answered yet.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            epoch: None,
            baseline: None,
            applied: 0,
            last_wire: 0,
            delivered: RangeSet::default(),
            stood_for: RangeSet::default(),
            announced: RangeSet::default(),
            gap_open: false,
            repairing: false,
            raw_position: None,
            live: false,
            counts: Counts::default(),
        }
    }

    /// The stream kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The position to resume from: `(epoch, applied)`, if the stream has a baseline.
    pub fn position(&self) -> Option<(u64, u64)> {
        match self.kind {
            Kind::Durable => Some((self.epoch?, self.applied)),
            Kind::Raw => self.raw_position,
        }
    }

    /// Raw channels: the relay-local position of the event just received (the checker itself
    /// follows the publisher's numbers).
    pub fn raw_wire_position(&mut self, epoch: u64, seq: u64) {
        self.raw_position = Some((epoch, seq));
    }

    /// Highest seq applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// What the run's drain compares with the head: the seq applied, or `u64::MAX` for a raw
    /// channel whose last word was a `gap` advisory. Nothing it lost can come again, and what
    /// it would hear next is newer than the gap: it is not behind, it was told.
    pub fn progress(&self) -> u64 {
        if self.kind == Kind::Raw && self.gap_open {
            u64::MAX
        } else {
            self.applied
        }
    }

    /// The first baseline's seq, once known.
    pub fn baseline(&self) -> Option<u64> {
        self.baseline
    }

    /// The counters so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// A (re)subscribe was sent: a new subscription interval starts.
    pub fn resubscribed(&mut self) {
        self.last_wire = self.applied;
        self.live = false;
    }

    /// The client resumes from `(epoch, seq)` (its stored position): the replay that follows
    /// is checked from there.
    pub fn resume_from(&mut self, epoch: u64, seq: u64) {
        self.baseline_at(epoch, seq);
    }

    /// A complete snapshot (its last chunk) at `(epoch, seq)`.
    pub fn snapshot(&mut self, epoch: u64, seq: u64) {
        self.baseline_at(epoch, seq);
    }

    /// `subscribed` at `(epoch, seq)`: live from here.
    pub fn subscribed(&mut self, epoch: u64, seq: u64) {
        self.counts.subscribed += 1;
        self.live = true;
        self.repairing = false;
        if self.kind == Kind::Durable {
            self.baseline_at(epoch, seq);
        } else if self.baseline.is_none() {
            self.baseline = Some(0);
        }
    }

    fn baseline_at(&mut self, epoch: u64, seq: u64) {
        if self.kind == Kind::Raw {
            return;
        }
        match (self.epoch, self.baseline) {
            (None, _) | (_, None) => {
                self.epoch = Some(epoch);
                self.baseline = Some(seq);
                self.applied = seq;
                self.last_wire = seq;
            }
            (Some(current), Some(_)) if current != epoch => {
                // A new life of the stream: the old epoch's expectations end here and the
                // new one starts at this baseline. Counted as a resync.
                self.epoch = Some(epoch);
                self.baseline = Some(seq);
                self.delivered = RangeSet::default();
                self.stood_for = RangeSet::default();
                self.announced = RangeSet::default();
                self.applied = seq;
                self.last_wire = seq;
            }
            _ => {
                if seq > self.applied {
                    // A snapshot (resync) or a `subscribed` ahead of what was applied: the
                    // state jumps to `seq`; a snapshot stands for the skipped seqs. A
                    // `subscribed` ahead of the events received would be a silent loss, so
                    // it is only covered when a resync was announced.
                    if self.counts.resyncs > 0 {
                        self.stood_for.insert_range(self.applied + 1, seq);
                    }
                    self.applied = seq;
                }
                self.last_wire = self.last_wire.max(seq);
            }
        }
    }

    /// An advisory for this stream.
    pub fn advisory(&mut self, kind: &str, from: Option<u64>, to: Option<u64>) {
        match kind {
            "gap" => {
                self.counts.gap_advisories += 1;
                if self.kind == Kind::Raw {
                    self.gap_open = true;
                } else if let Some(from) = from {
                    self.announced
                        .insert_range(from, to.unwrap_or(u64::MAX / 2));
                }
            }
            "resync" => self.counts.resyncs += 1,
            "lagged" => self.counts.lagged += 1,
            _ => {}
        }
    }

    /// One durable event `(epoch, seq)`; returns what the client must do.
    pub fn event(&mut self, epoch: u64, seq: u64) -> Action {
        self.counts.wire += 1;
        if self.kind == Kind::Raw {
            return self.raw(seq);
        }
        if self.epoch != Some(epoch) {
            // Events of another epoch before its resync snapshot: nothing the client can
            // apply; the resync that must follow rebases the track.
            return Action::None;
        }
        if seq < self.last_wire && seq > self.applied {
            self.counts.ooo += 1;
        }
        if seq <= self.applied {
            self.counts.dup_wire += 1;
            self.last_wire = self.last_wire.max(seq);
            return Action::None;
        }
        self.last_wire = self.last_wire.max(seq);
        if seq == self.applied + 1 {
            self.deliver(seq);
            return Action::None;
        }
        self.counts.gaps += 1;
        if self.repairing {
            return Action::None;
        }
        self.repairing = true;
        Action::Resubscribe {
            epoch,
            seq: self.applied,
        }
    }

    fn raw(&mut self, number: u64) -> Action {
        if number < self.last_wire {
            self.counts.ooo += 1;
        }
        if number <= self.applied && self.delivered.contains(number) {
            self.counts.dup_wire += 1;
            return Action::None;
        }
        if self.gap_open {
            self.gap_open = false;
            if number > self.applied + 1 && self.applied > 0 {
                self.announced.insert_range(self.applied + 1, number - 1);
            }
        }
        if self.baseline.is_none() || self.baseline == Some(0) && self.delivered.is_empty() {
            // The first raw event starts the interval (raw channels have no history).
            self.baseline = Some(number.saturating_sub(1));
        }
        self.last_wire = self.last_wire.max(number);
        self.applied = self.applied.max(number);
        self.deliver(number);
        Action::None
    }

    fn deliver(&mut self, seq: u64) {
        if self.kind == Kind::Durable {
            self.applied = seq;
        }
        if self.delivered.insert(seq) {
            self.counts.delivered += 1;
        } else {
            self.counts.dup_app += 1;
        }
    }

    /// Compares with the ground truth: every seq in `(baseline, head]` should have been
    /// delivered (durable: `head` from the outbox; raw: the publisher's last number).
    pub fn verdict(&self, head: u64) -> Verdict {
        self.verdict_excluding(head, &RangeSet::default())
    }

    /// [`Track::verdict`] where the seqs in `uncertain` are not expected (raw notifications
    /// whose statement failed: maybe sent, maybe not).
    pub fn verdict_excluding(&self, head: u64, uncertain: &RangeSet) -> Verdict {
        let Some(baseline) = self.baseline else {
            return Verdict {
                never_subscribed: true,
                counts: self.counts,
                ..Verdict::default()
            };
        };
        if head <= baseline {
            return Verdict {
                counts: self.counts,
                ..Verdict::default()
            };
        }
        let (from, to) = (baseline + 1, head);
        // A raw channel's `gap` advisory covers everything up to the next event; when no event
        // followed, it covers everything to the head.
        let mut announced_set = self.announced.clone();
        if self.kind == Kind::Raw && self.gap_open && head > self.applied {
            announced_set.insert_range(self.applied + 1, head);
        }
        let mut lost = 0;
        let mut silent = 0;
        for (start, end) in self.delivered.missing(from, to) {
            let missing = (end - start + 1).saturating_sub(uncertain.count_within(start, end));
            let not_stood_for = missing.saturating_sub(self.stood_for.count_within(start, end));
            let announced = announced_set.count_within(start, end).min(not_stood_for);
            lost += not_stood_for;
            silent += not_stood_for - announced;
        }
        Verdict {
            expected: to - from + 1 - uncertain.count_within(from, to),
            lost,
            silent_loss: silent,
            counts: self.counts,
            never_subscribed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_sets_merge_and_report_missing() {
        let mut set = RangeSet::default();
        assert!(set.insert(1));
        assert!(set.insert(2));
        assert!(set.insert(5));
        assert!(!set.insert(2));
        assert_eq!(set.insert_range(3, 4), 2);
        assert_eq!(set.ranges, vec![(1, 5)]);
        set.insert_range(10, 12);
        set.insert(8);
        assert_eq!(set.len(), 9);
        assert!(set.contains(8) && !set.contains(9) && !set.contains(0));
        assert_eq!(set.missing(0, 14), vec![(0, 0), (6, 7), (9, 9), (13, 14)]);
        assert_eq!(set.missing(2, 4), vec![]);
        assert_eq!(set.count_within(4, 11), 5);
    }

    #[test]
    fn a_clean_durable_stream_passes() {
        let mut track = Track::new(Kind::Durable);
        track.subscribed(7, 10);
        for seq in 11..=20 {
            assert_eq!(track.event(7, seq), Action::None);
        }
        let verdict = track.verdict(20);
        assert_eq!(
            (verdict.expected, verdict.lost, verdict.counts.delivered),
            (10, 0, 10)
        );
        assert!(verdict.passes(Kind::Durable));
        // The relay failing to deliver 21 and 22 is a silent loss.
        let verdict = track.verdict(22);
        assert_eq!((verdict.lost, verdict.silent_loss), (2, 2));
        assert!(!verdict.passes(Kind::Durable));
    }

    #[test]
    fn gaps_are_repaired_and_duplicates_dropped() {
        let mut track = Track::new(Kind::Durable);
        track.subscribed(7, 0);
        track.event(7, 1);
        assert_eq!(track.event(7, 3), Action::Resubscribe { epoch: 7, seq: 1 });
        assert_eq!(track.event(7, 4), Action::None, "one resubscribe per gap");
        track.resubscribed();
        for seq in 2..=4 {
            track.event(7, seq);
        }
        track.subscribed(7, 4);
        track.event(7, 3);
        let verdict = track.verdict(4);
        assert_eq!(verdict.counts.gaps, 2);
        assert_eq!(verdict.counts.dup_wire, 1);
        assert_eq!(verdict.counts.ooo, 0, "the replay starts a new interval");
        assert!(verdict.passes(Kind::Durable), "{verdict:?}");
    }

    #[test]
    fn a_resumed_track_checks_the_replay() {
        let mut track = Track::new(Kind::Durable);
        track.resume_from(3, 100);
        track.resubscribed();
        for seq in 101..=150 {
            track.event(3, seq);
        }
        track.subscribed(3, 150);
        let verdict = track.verdict(150);
        assert_eq!(
            (verdict.expected, verdict.counts.delivered, verdict.lost),
            (50, 50, 0)
        );
        let mut short = Track::new(Kind::Durable);
        short.resume_from(3, 100);
        short.event(3, 101);
        short.subscribed(3, 150);
        assert_eq!(
            short.verdict(150).silent_loss,
            49,
            "a replay that stops early is a loss"
        );
    }

    #[test]
    fn reordering_within_an_interval_is_counted() {
        let mut track = Track::new(Kind::Durable);
        track.subscribed(1, 0);
        track.event(1, 1);
        track.event(1, 3);
        // The relay sends 2 after 3 without a resubscribe in between.
        track.event(1, 2);
        let verdict = track.verdict(3);
        assert_eq!(verdict.counts.ooo, 1);
        assert!(!verdict.passes(Kind::Durable));
    }

    #[test]
    fn a_resync_snapshot_covers_what_it_skipped() {
        let mut track = Track::new(Kind::Durable);
        track.subscribed(1, 0);
        track.event(1, 1);
        track.advisory("resync", None, None);
        track.snapshot(1, 50);
        track.subscribed(1, 50);
        track.event(1, 51);
        let verdict = track.verdict(51);
        assert_eq!((verdict.lost, verdict.silent_loss), (0, 0), "{verdict:?}");
        // Without the advisory, a jump is a silent loss.
        let mut track = Track::new(Kind::Durable);
        track.subscribed(1, 0);
        track.subscribed(1, 5);
        assert_eq!(track.verdict(5).silent_loss, 5);
    }

    #[test]
    fn raw_losses_must_be_announced() {
        let mut track = Track::new(Kind::Raw);
        track.subscribed(99, 0);
        track.event(99, 1);
        track.event(99, 2);
        track.advisory("gap", Some(3), None);
        track.event(99, 6);
        let verdict = track.verdict(6);
        assert_eq!((verdict.lost, verdict.silent_loss), (3, 0));
        assert!(verdict.passes(Kind::Raw));
        track.event(99, 9);
        let verdict = track.verdict(9);
        assert_eq!(verdict.silent_loss, 2);
        assert!(!verdict.passes(Kind::Raw));
    }

    #[test]
    fn a_raw_gap_at_the_end_announces_the_rest() {
        let mut track = Track::new(Kind::Raw);
        track.subscribed(99, 0);
        track.event(99, 1);
        track.event(99, 2);
        assert_eq!(track.progress(), 2);
        track.advisory("gap", Some(3), None);
        // Nothing follows: the rest up to the head was announced, and the drain stops waiting.
        assert_eq!(track.progress(), u64::MAX);
        let verdict = track.verdict(7);
        assert_eq!((verdict.lost, verdict.silent_loss), (5, 0));
        assert!(verdict.passes(Kind::Raw));
        // An event after the gap closes the window: what follows must arrive again.
        track.event(99, 5);
        assert_eq!(track.progress(), 5);
        let verdict = track.verdict(7);
        assert_eq!((verdict.lost, verdict.silent_loss), (4, 2));
        assert!(!verdict.passes(Kind::Raw));
    }
}
