//! Delivery by thread: with shards, each connection belongs to the delivery thread that runs
//! it, and the bus hands each delivery once to each thread with subscribers, whose own
//! dispatcher offers it to that thread's connections.
//!
//! Why: when the publisher offers a delivery to every subscriber's queue itself, each offer
//! to a connection whose task runs on another core moves the queue's lock, its reference
//! count and the wake-up between the cores. With one event per transaction to 1,000
//! subscribers on 2 cores, connections on the two worker threads took 0.64-0.67 cores for
//! 0.66-0.87M deliveries/s; on one delivery thread, 0.48 cores for 1.00-1.08M
//! (docs/BENCHMARKS.md, "Delivery threads"). Here each offer and each wake-up stays on the
//! core that runs the connection, and each thread can have a core of its own.
//!
//! Each thread offers its own copy of a delivery: every subscriber's queue and write takes
//! and drops a reference to it, and one copy counted from two cores would move that count's
//! cache line between them at every delivery.
//!
//! Order: a stream's deliveries are published in seq order from one task at a time, each
//! thread's inbox is FIFO, and each connection is in one thread: so each connection still
//! gets a stream's deliveries in publish order. The subscribers a delivery goes to are those
//! of the stream when it was published (the [`Fanout`] snapshot travels with it), as without
//! shards.

use std::cell::Cell;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::fanout::Fanout;
use super::{Bus, Delivery};

thread_local! {
    /// The delivery thread this is, 0 on any other thread.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The delivery thread the caller runs on (0 on a thread that is none).
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// Marks the calling thread as delivery thread `index`: connections registered on it are
/// offered their deliveries by `index`'s [`Inbox`].
pub fn enter(index: usize) {
    CURRENT.with(|current| current.set(index));
}

/// Deliveries handed to one thread: at most one job per delivery per thread.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) fanout: Arc<Fanout>,
    pub(super) delivery: Arc<Delivery>,
}

/// The receiving end of one delivery thread's jobs; run it on that thread.
#[derive(Debug)]
pub struct Inbox {
    index: usize,
    jobs: mpsc::UnboundedReceiver<Job>,
}

/// One inbox per thread: the senders for the bus, the inboxes for the threads.
pub(super) fn inboxes(threads: usize) -> (Vec<mpsc::UnboundedSender<Job>>, Vec<Inbox>) {
    (0..threads)
        .map(|index| {
            let (sender, jobs) = mpsc::unbounded_channel();
            (sender, Inbox { index, jobs })
        })
        .unzip()
}

impl Inbox {
    /// The delivery thread this inbox belongs to.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Offers every job to this thread's group of its fan-out, in order, until the bus is
    /// gone. Run it on the thread marked with [`enter`]`(self.index())`.
    ///
    /// Each turn takes every job queued, so the inbox never holds more than what was
    /// published during one round of the thread's tasks: a backlog waits in the connections'
    /// bounded queues, where a full one marks its connection lagged, not here.
    pub async fn run(mut self, bus: Arc<Bus>) {
        let mut jobs = Vec::new();
        loop {
            let queued = self.jobs.len().max(1);
            if self.jobs.recv_many(&mut jobs, queued).await == 0 {
                break;
            }
            for job in jobs.drain(..) {
                if let Some(group) = job.fanout.groups().get(self.index) {
                    bus.offer_group(group, &Arc::new(job.delivery.own_copy()));
                }
            }
            // Let a burst's buffer go rather than keep its high-water mark.
            jobs.shrink_to(64);
        }
    }
}

#[cfg(test)]
mod tests;
