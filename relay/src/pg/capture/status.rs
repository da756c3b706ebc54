//! What capture is doing right now, shared between the capture tasks (which write it) and
//! `/metrics` and `/readyz` (which read it): mode, role, slot lag, counters, and why it halted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The live capture state of one relay.
#[derive(Debug, Default)]
pub struct CaptureStatus {
    logical: AtomicBool,
    sequencer: AtomicBool,
    lag_bytes: AtomicU64,
    lag_millis: AtomicU64,
    events: AtomicU64,
    batches: AtomicU64,
    transactions: AtomicU64,
    rejected_rows: AtomicU64,
    elections: AtomicU64,
    stale_slots: AtomicU64,
    failover_millis: AtomicU64,
    halted: Mutex<Option<(String, u64)>>,
    reason: Mutex<String>,
}

/// A copy of [`CaptureStatus`] for one scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaptureSnapshot {
    /// Whether tracked tables are captured through logical replication (else triggers).
    pub logical: bool,
    /// Whether this relay is the sequencer now.
    pub sequencer: bool,
    /// WAL bytes the slot holds that the sequencer has not confirmed.
    pub lag_bytes: u64,
    /// How far behind the sequencer's confirmed position is, in milliseconds.
    pub lag_millis: u64,
    /// Events this relay's sequencer wrote to the outbox.
    pub events: u64,
    /// Outbox transactions this relay's sequencer committed.
    pub batches: u64,
    /// Source transactions with tracked changes this relay's sequencer wrote.
    pub transactions: u64,
    /// Row changes that could not be published (NULL key, invalid stream name or key).
    pub rejected_rows: u64,
    /// Times this relay became the sequencer.
    pub elections: u64,
    /// Inactive replication slots named `tidewire*` other than this deployment's.
    pub stale_slots: u64,
    /// Time from winning the election to streaming, at the last election, in milliseconds.
    pub failover_millis: u64,
    /// Why capture stopped, while it is stopped.
    pub halted: Option<String>,
    /// How the mode was chosen (for `--capture auto`).
    pub reason: String,
}

impl CaptureStatus {
    /// A copy of every value.
    pub fn snapshot(&self) -> CaptureSnapshot {
        CaptureSnapshot {
            logical: self.logical.load(Ordering::Relaxed),
            sequencer: self.sequencer.load(Ordering::Relaxed),
            lag_bytes: self.lag_bytes.load(Ordering::Relaxed),
            lag_millis: self.lag_millis.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            rejected_rows: self.rejected_rows.load(Ordering::Relaxed),
            elections: self.elections.load(Ordering::Relaxed),
            stale_slots: self.stale_slots.load(Ordering::Relaxed),
            failover_millis: self.failover_millis.load(Ordering::Relaxed),
            halted: self
                .halted
                .lock()
                .map(|h| h.as_ref().map(|(reason, _)| reason.clone()))
                .unwrap_or_default(),
            reason: self.reason.lock().map(|r| r.clone()).unwrap_or_default(),
        }
    }

    pub(crate) fn set_mode(&self, logical: bool, reason: String) {
        self.logical.store(logical, Ordering::Relaxed);
        if let Ok(mut slot) = self.reason.lock() {
            *slot = reason;
        }
    }

    pub(crate) fn set_sequencer(&self, sequencer: bool) {
        self.sequencer.store(sequencer, Ordering::Relaxed);
        if sequencer {
            self.elections.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn set_lag(&self, bytes: u64, millis: u64) {
        self.lag_bytes.store(bytes, Ordering::Relaxed);
        self.lag_millis.store(millis, Ordering::Relaxed);
    }

    pub(crate) fn set_stale_slots(&self, count: u64) {
        self.stale_slots.store(count, Ordering::Relaxed);
    }

    pub(crate) fn set_failover(&self, millis: u64) {
        self.failover_millis.store(millis, Ordering::Relaxed);
    }

    /// A batch ending at `end` committed: a halt before it is over.
    pub(crate) fn wrote(&self, events: u64, transactions: u64, end: u64) {
        if let Ok(mut halted) = self.halted.lock() {
            if halted.as_ref().is_some_and(|(_, at)| end > *at) {
                *halted = None;
            }
        }
        self.events.fetch_add(events, Ordering::Relaxed);
        self.transactions.fetch_add(transactions, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.rejected_rows.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_halted(&self, reason: Option<(String, u64)>) {
        if let Ok(mut slot) = self.halted.lock() {
            *slot = reason;
        }
    }
}
