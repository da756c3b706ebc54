//! Fan-out counters: relaxed atomics bumped by [`Bus::publish`](super::Bus::publish) and read by
//! the metrics endpoint through [`BusStats::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Live fan-out counters, shared by every publisher.
///
/// Each publish adds its totals once per delivery thread (once without shards) rather than
/// once per subscriber, so the counters cost a handful of atomic adds per published delivery.
#[derive(Debug, Default)]
pub struct BusStats {
    published: AtomicU64,
    delivered: AtomicU64,
    dropped_lagged: AtomicU64,
    lagged_events: AtomicU64,
    reaped: AtomicU64,
    queue_high_water: AtomicU64,
}

/// A plain copy of [`BusStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStatsSnapshot {
    /// Deliveries handed to [`Bus::publish`](super::Bus::publish), counted once each whatever the
    /// number of subscribers.
    pub published: u64,
    /// Deliveries placed in a connection's queue (one per subscriber reached).
    pub delivered: u64,
    /// Deliveries a subscriber did not get because its queue was full or it was already lagged on
    /// that stream.
    pub dropped_lagged: u64,
    /// Times a connection went from "in step" to "lagged" on a stream (each one costs that
    /// connection a replay or a `gap`).
    pub lagged_events: u64,
    /// Connections unregistered because their receiver was dropped.
    pub reaped: u64,
    /// The deepest any connection's queue has been, in deliveries.
    pub queue_high_water: u64,
}

impl BusStats {
    /// Copies every counter. The fields are read one by one, so under load they may be a few
    /// deliveries apart from each other.
    pub fn snapshot(&self) -> BusStatsSnapshot {
        BusStatsSnapshot {
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped_lagged: self.dropped_lagged.load(Ordering::Relaxed),
            lagged_events: self.lagged_events.load(Ordering::Relaxed),
            reaped: self.reaped.load(Ordering::Relaxed),
            queue_high_water: self.queue_high_water.load(Ordering::Relaxed),
        }
    }

    pub(super) fn record_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn record_offers(&self, publish: &super::PublishStats, deepest_queue: usize) {
        add(&self.delivered, publish.delivered);
        add(&self.dropped_lagged, publish.dropped);
        add(&self.lagged_events, publish.newly_lagged);
        add(&self.reaped, publish.reaped);
        let deepest = u64::try_from(deepest_queue).unwrap_or(u64::MAX);
        // A plain load first keeps the shared cache line read-only in the common case where the
        // mark is not beaten.
        if deepest > self.queue_high_water.load(Ordering::Relaxed) {
            self.queue_high_water.fetch_max(deepest, Ordering::Relaxed);
        }
    }

    pub(super) fn add_reaped(&self, count: usize) {
        add(&self.reaped, count);
    }
}

fn add(counter: &AtomicU64, amount: usize) {
    if amount > 0 {
        counter.fetch_add(u64::try_from(amount).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}
