//! Counters of the LISTEN path, readable in-process (the metrics endpoint renders them).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of the listener. All are totals since the relay started.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Notifications received.
    pub notifications: AtomicU64,
    /// Notifications that did not decode (counted and logged, never fatal).
    pub bad_notifications: AtomicU64,
    /// LISTEN statements executed.
    pub listens: AtomicU64,
    /// UNLISTEN statements executed.
    pub unlistens: AtomicU64,
    /// Liveness-query failures and lost connections.
    pub failures: AtomicU64,
    /// Successful reconnects.
    pub reconnects: AtomicU64,
    /// Outbox reads (catch-up after a gap, a pointer, a reconnect or a poll).
    pub outbox_reads: AtomicU64,
    /// Durable events handed to the bus.
    pub events: AtomicU64,
    /// Raw-channel notifications handed to the bus.
    pub raw_events: AtomicU64,
    /// Ephemeral messages handed to the bus.
    pub messages: AtomicU64,
    /// Gap advisories sent to raw channels (after a lost LISTEN connection).
    pub raw_gaps: AtomicU64,
    /// Resync advisories (epoch changes, drops).
    pub resyncs: AtomicU64,
    /// Highest number of notifications waiting between the connection and the listener.
    pub queue_high_water: AtomicU64,
}

/// A plain copy of [`ListenerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // Same fields as ListenerStats.
pub struct ListenerStatsSnapshot {
    pub notifications: u64,
    pub bad_notifications: u64,
    pub listens: u64,
    pub unlistens: u64,
    pub failures: u64,
    pub reconnects: u64,
    pub outbox_reads: u64,
    pub events: u64,
    pub raw_events: u64,
    pub messages: u64,
    pub raw_gaps: u64,
    pub resyncs: u64,
    pub queue_high_water: u64,
}

impl ListenerStats {
    pub(crate) fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub(crate) fn high_water(&self, depth: u64) {
        self.queue_high_water.fetch_max(depth, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> ListenerStatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ListenerStatsSnapshot {
            notifications: get(&self.notifications),
            bad_notifications: get(&self.bad_notifications),
            listens: get(&self.listens),
            unlistens: get(&self.unlistens),
            failures: get(&self.failures),
            reconnects: get(&self.reconnects),
            outbox_reads: get(&self.outbox_reads),
            events: get(&self.events),
            raw_events: get(&self.raw_events),
            messages: get(&self.messages),
            raw_gaps: get(&self.raw_gaps),
            resyncs: get(&self.resyncs),
            queue_high_water: get(&self.queue_high_water),
        }
    }
}
