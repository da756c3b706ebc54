//! Per-connection bounded queue of [`Delivery`]s and its lag bookkeeping.
//!
//! The [`Registry`](crate::bus::registry::Registry) keeps the sending half ([`Subscriber`]) in its
//! indexes; the connection's task owns the receiving half ([`ConnReceiver`]). The bus only ever
//! `try_send`s: a full queue marks the connection lagged on that stream instead of waiting, so one
//! slow consumer never holds up the others and its memory stays bounded by the queue capacity.
//!
//! Memory per connection is described in the [`bus` module docs](super#memory-per-connection).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::room::{Slots, SparePool};
use super::Delivery;
use crate::bus::registry::ConnId;

/// Creates a connection's queue with room for `capacity` deliveries of its own, and more
/// borrowed from `pool` while a burst needs it.
pub(crate) fn channel(
    id: ConnId,
    shard: usize,
    capacity: usize,
    pool: Arc<SparePool>,
) -> (Subscriber, ConnReceiver) {
    let inner = Arc::new(SubscriberInner {
        id,
        shard,
        queue: Mutex::new(Slots::default()),
        capacity: capacity.max(1),
        pool,
        receiver_gone: AtomicBool::new(false),
        lag: LagState::default(),
        unregistered: AtomicBool::new(false),
        nudged: AtomicBool::new(false),
    });
    let subscriber = Subscriber(Arc::clone(&inner));
    let receiver = ConnReceiver { id, inner };
    (subscriber, receiver)
}

/// Slots an empty queue keeps between bursts (8 bytes each); a larger one is let go.
const KEEP_SLOTS: usize = 16;

/// The registry's handle on one connection: the sending half of its queue.
///
/// Cheap to clone (one `Arc`); per-stream snapshots hold clones, so the queue's sender lives until
/// the connection is unregistered and the last snapshot that still lists it is dropped.
#[derive(Debug, Clone)]
pub struct Subscriber(Arc<SubscriberInner>);

/// What the bus and the connection's task share. The lag state is inline, next to the
/// queue: publishing checks it for every subscriber, and a separate allocation cost a cache
/// miss per subscriber per event (a third of `Bus::publish` at 10,000 subscribers).
///
/// The queue is a `VecDeque` under a lock rather than tokio's bounded `mpsc`: the channel
/// allocated about 900 bytes per connection up front (its cache-padded state and a first
/// block of 32 slots; heaptrack, 2,000 idle connections), and its semaphore and block list
/// were 8% of the relay's samples when fanning out. An empty queue here holds no allocation
/// beyond [`KEEP_SLOTS`], and one lock per offer is uncontended but for the moment the
/// connection's task takes from it. The task is woken through `lag.wake`, an
/// [`AtomicWaker`] rather than tokio's `Notify`: waiting on a `Notify` keeps a 112-byte
/// waiter node in the connection's future for as long as it is idle (`size_of_val`, release
/// build); waiting here keeps a reference. With it, an idle WebSocket connection went from
/// 4.0 to 3.6-3.9 KiB (10,000 connections, docs/BENCHMARKS.md), fan-out unchanged.
#[derive(Debug)]
struct SubscriberInner {
    id: ConnId,
    /// The delivery thread that runs the connection (see [`shard`](super::shard)).
    shard: usize,
    queue: Mutex<Slots<Arc<Delivery>>>,
    /// Deliveries the queue holds of its own; beyond them it borrows from `pool`, and when
    /// neither has room the connection is marked lagged.
    capacity: usize,
    pool: Arc<SparePool>,
    /// The connection's task dropped its [`ConnReceiver`].
    receiver_gone: AtomicBool,
    lag: LagState,
    /// Set when the registry lets go of the connection: its queue ends once drained. (The
    /// receiver holds this struct, so the sender alone no longer tells.)
    unregistered: AtomicBool,
    /// Set by [`Subscriber::nudge`]: something relay-wide changed (see [`Received::Nudged`]).
    nudged: AtomicBool,
}

/// Which streams a connection has lagged on since its task last asked.
#[derive(Debug, Default)]
struct LagState {
    /// True while `streams` is non-empty. Lets the publish path skip the lock for connections that
    /// are in step, which is nearly all of them. Written only with `streams` locked.
    any: AtomicBool,
    /// Streams on which at least one delivery was dropped. `std::sync::Mutex`: every critical
    /// section is one set operation and never spans an `.await`.
    streams: Mutex<HashSet<Arc<str>>>,
    /// Wakes the connection's task when it is parked on an empty queue and a delivery is
    /// queued or a lag is recorded (or the connection is unregistered). The task registers
    /// before it looks at the queue a last time, so a wake-up with nobody registered is never
    /// needed (see [`ConnReceiver::poll_recv`]).
    wake: AtomicWaker,
}

/// What happened when the bus offered a delivery to one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offer {
    /// Queued; `depth` is the queue length right after.
    Queued { depth: usize },
    /// The queue was full: dropped, and the connection is now lagged on the stream.
    Lagged,
    /// Dropped because the connection was already lagged on the stream and has not yet asked
    /// for its lagged streams; whatever it missed comes back through its replay.
    Dropped,
    /// The receiver is gone; the subscriber should be reaped.
    Closed,
}

impl Subscriber {
    /// The connection this queue belongs to.
    pub fn id(&self) -> ConnId {
        self.0.id
    }

    /// The delivery thread that runs the connection, which offers it its deliveries.
    pub fn shard(&self) -> usize {
        self.0.shard
    }

    /// Whether the connection dropped its [`ConnReceiver`].
    pub fn is_closed(&self) -> bool {
        self.0.receiver_gone.load(Ordering::Acquire)
    }

    /// Deliveries waiting in the queue.
    pub fn queued(&self) -> usize {
        self.0.lock_queue().len()
    }

    /// Whether both handles refer to the same connection queue.
    pub(crate) fn same_queue(&self, other: &Subscriber) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Offers `delivery` without waiting.
    ///
    /// Publishes for one stream must come from one task at a time (one publisher per stream), so
    /// a connection's lag mark for that stream is always seen by the next offer on it.
    pub(super) fn offer(&self, delivery: &Arc<Delivery>) -> Offer {
        let inner = &*self.0;
        if inner.lag.is_lagged_on(&delivery.stream) {
            return Offer::Dropped;
        }
        let depth = {
            let mut queue = inner.lock_queue();
            // Read under the lock the receiver's drop takes: nothing is queued after it
            // emptied the queue.
            if self.is_closed() {
                return Offer::Closed;
            }
            queue
                .push(Arc::clone(delivery), inner.capacity, &inner.pool)
                .ok()
                .map(|()| queue.len())
        };
        match depth {
            Some(depth) => {
                if depth == 1 {
                    // The task may be parked on the empty queue.
                    inner.lag.wake.wake();
                }
                Offer::Queued { depth }
            }
            None if inner.lag.mark(&delivery.stream) => Offer::Lagged,
            None => Offer::Dropped,
        }
    }

    /// Forgets a lag on `stream` (the connection unsubscribed from it).
    pub(crate) fn clear_lagged(&self, stream: &str) {
        self.0.lag.clear(stream);
    }

    /// Wakes the connection's task with [`Received::Nudged`], ahead of anything queued.
    pub(crate) fn nudge(&self) {
        self.0.nudged.store(true, Ordering::Release);
        self.0.lag.wake.wake();
    }

    /// The registry let go of the connection: its receiver ends once the queue is drained.
    pub(crate) fn unregistered(&self) {
        self.0.unregistered.store(true, Ordering::Release);
        self.0.lag.wake.wake();
    }
}

impl SubscriberInner {
    fn lock_queue(&self) -> MutexGuard<'_, Slots<Arc<Delivery>>> {
        // Every critical section is one push, pop or clear: a poisoned lock still guards a
        // consistent queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the oldest delivery, if any.
    fn pop(&self) -> Option<Arc<Delivery>> {
        self.lock_queue().pop(self.capacity, &self.pool)
    }
}

impl LagState {
    fn lock(&self) -> MutexGuard<'_, HashSet<Arc<str>>> {
        // Every critical section is a single set operation that cannot leave the set half
        // updated, so a poisoned lock still guards a consistent set.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_lagged_on(&self, stream: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.lock().contains(stream)
    }

    /// Records a lag; true if the stream was not already lagged.
    fn mark(&self, stream: &Arc<str>) -> bool {
        let newly = {
            let mut streams = self.lock();
            let newly = streams.insert(Arc::clone(stream));
            self.any.store(true, Ordering::Release);
            newly
        };
        if newly {
            self.wake.wake();
        }
        newly
    }

    fn clear(&self, stream: &str) {
        if self.any.load(Ordering::Acquire) {
            let mut streams = self.lock();
            streams.remove(stream);
            self.any.store(!streams.is_empty(), Ordering::Release);
        }
    }

    fn take(&self) -> Vec<Arc<str>> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut streams = self.lock();
        self.any.store(false, Ordering::Release);
        streams.drain().collect()
    }
}

/// What a connection's task gets from its queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next delivery, to pass through [`LastSent::admit`](super::LastSent::admit).
    Delivery(Arc<Delivery>),
    /// Deliveries on these streams were dropped because the queue was full. For each stream the
    /// task replays from its cursor position (the outbox for a durable stream) or sends a `gap`
    /// advisory (a raw channel), then carries on; deliveries for these streams still queued are
    /// deduped by the cursor. May name streams the connection has since left: ignore those.
    Lagged(Vec<Lagged>),
    /// Something relay-wide changed (PostgreSQL's status, shutdown): look at it. A
    /// connection learns of such changes here, through its own wake-up, so that waiting costs
    /// it no place in a list shared by every connection (see `nudger.rs`).
    Nudged,
}

/// One stream a connection lagged on, as its task takes the lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lagged {
    pub stream: Arc<str>,
    /// Deliveries for the stream still queued when the lag was taken. All of them were queued
    /// before the first one dropped (once a stream is lagged its offers are dropped until the
    /// lag is taken, and the count is made under the queue's lock, with the take), so the hole
    /// starts right after the last of them. A raw channel announces its `gap` there.
    pub queued: usize,
}

/// The receiving half of a connection's queue, owned by the connection's task.
///
/// Dropping it is enough to leave the bus: the next publish to one of its streams (or
/// [`Registry::reap_closed`](crate::bus::registry::Registry::reap_closed)) unregisters the connection.
/// A task that ends normally should still call
/// [`Registry::unregister`](crate::bus::registry::Registry::unregister) to learn which streams emptied.
#[derive(Debug)]
pub struct ConnReceiver {
    id: ConnId,
    inner: Arc<SubscriberInner>,
}

impl Drop for ConnReceiver {
    fn drop(&mut self) {
        // Let go of the queued deliveries now, not when the last snapshot drops the sender;
        // the flag is set under the same lock, so no offer queues anything afterwards.
        let queued = {
            let mut queue = self.inner.lock_queue();
            self.inner.receiver_gone.store(true, Ordering::Release);
            queue.clear(&self.inner.pool)
        };
        drop(queued);
    }
}

impl ConnReceiver {
    /// The connection's id, for [`Registry::subscribe`](crate::bus::registry::Registry::subscribe) and
    /// friends.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Waits for the next delivery or lag report. Lags are reported first, as soon as they happen,
    /// even while deliveries are queued.
    ///
    /// Returns `None` once the connection is unregistered and its queue is drained.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if it is cancelled, nothing was taken from the queue or the lag set.
    pub async fn recv(&mut self) -> Option<Received> {
        std::future::poll_fn(|context| self.poll_recv(context)).await
    }

    /// [`recv`](Self::recv) as a poll: ready with what `recv` returns, or pending with the
    /// task registered to be woken.
    fn poll_recv(&mut self, context: &mut Context<'_>) -> Poll<Option<Received>> {
        if let Some(received) = self.take_ready() {
            return Poll::Ready(received);
        }
        self.inner.lag.wake.register(context.waker());
        // A delivery queued, a lag recorded or the connection unregistered between the look
        // above and the registration woke nobody: look again now that a wake-up would reach us.
        match self.take_ready() {
            Some(received) => Poll::Ready(received),
            None => Poll::Pending,
        }
    }

    /// What `recv` would return now: `None` if it would have to wait.
    fn take_ready(&mut self) -> Option<Option<Received>> {
        if self.take_nudge() {
            return Some(Some(Received::Nudged));
        }
        if let Some(lagged) = self.take_lags() {
            return Some(Some(Received::Lagged(lagged)));
        }
        {
            let mut queue = self.inner.lock_queue();
            if let Some(delivery) = queue.pop(self.inner.capacity, &self.inner.pool) {
                return Some(Some(Received::Delivery(delivery)));
            }
            // The burst is over: an idle connection keeps no large queue.
            queue.shrink_if_empty(KEEP_SLOTS);
        }
        // Everything queued before was taken: the end.
        self.inner
            .unregistered
            .load(Ordering::Acquire)
            .then_some(None)
    }

    /// Takes the next lag report or queued delivery without waiting, for draining a burst into
    /// one write. `None` when nothing is pending (or the connection is unregistered).
    pub fn try_recv(&mut self) -> Option<Received> {
        if self.take_nudge() {
            return Some(Received::Nudged);
        }
        if let Some(lagged) = self.take_lags() {
            return Some(Received::Lagged(lagged));
        }
        self.inner.pop().map(Received::Delivery)
    }

    /// Whether the connection was nudged since the last look (a plain load first: nearly
    /// always it was not, and the line stays shared).
    pub fn take_nudge(&self) -> bool {
        self.inner.nudged.load(Ordering::Acquire) && self.inner.nudged.swap(false, Ordering::AcqRel)
    }

    /// Takes the streams the connection has lagged on since the last call, clearing them so that
    /// deliveries on those streams are queued again. Empty if there are none.
    pub fn take_lagged(&self) -> Vec<Lagged> {
        self.take_lags().unwrap_or_default()
    }

    /// The lags to report, if any, each with the deliveries still queued for its stream.
    ///
    /// The queue stays locked from the take to the count: an offer for a stream whose lag was
    /// just taken queues behind the lock, after the count, so every counted delivery predates
    /// the drop. (Lock order: queue, then lag set. `offer` never holds both.)
    fn take_lags(&self) -> Option<Vec<Lagged>> {
        if !self.inner.lag.any.load(Ordering::Acquire) {
            return None;
        }
        let queue = self.inner.lock_queue();
        let streams = self.inner.lag.take();
        if streams.is_empty() {
            return None;
        }
        let lagged = streams
            .into_iter()
            .map(|stream| {
                // Only on a lag, and the queue holds at most its capacity and its loan.
                let queued = queue
                    .iter()
                    .filter(|delivery| delivery.stream == stream)
                    .count();
                Lagged { stream, queued }
            })
            .collect();
        Some(lagged)
    }

    /// Whether any stream is lagged and not yet taken.
    pub fn has_lagged(&self) -> bool {
        self.inner.lag.any.load(Ordering::Acquire)
    }

    /// Deliveries waiting in the queue.
    pub fn len(&self) -> usize {
        self.inner.lock_queue().len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's capacity in deliveries.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::bus::registry::Registry;
    use crate::bus::BusConfig;
    use crate::counting_waker::CountingWaker;

    fn test_channel(capacity: usize) -> (Subscriber, ConnReceiver) {
        // Borrow a real id from a registry; the registry itself is not involved further.
        let registry = Registry::new(BusConfig::default());
        let id = registry.register().id();
        channel(id, 0, capacity, Arc::new(SparePool::new(0, 0)))
    }

    fn event(stream: &str, seq: u64) -> Arc<Delivery> {
        Arc::new(Delivery::event(stream.into(), 1, seq, Bytes::new()))
    }

    #[test]
    fn a_lagged_stream_is_suppressed_until_its_lag_is_taken() {
        let (subscriber, mut receiver) = test_channel(2);
        assert_eq!(subscriber.offer(&event("a", 1)), Offer::Queued { depth: 1 });
        assert_eq!(subscriber.offer(&event("a", 2)), Offer::Queued { depth: 2 });
        assert_eq!(subscriber.offer(&event("a", 3)), Offer::Lagged);
        // Free a slot without taking the lag (the task has not looked yet).
        let first = receiver.inner.pop().expect("queued");
        assert_eq!(first.seq, 1);
        assert_eq!(
            subscriber.offer(&event("a", 4)),
            Offer::Dropped,
            "no post-gap event is queued before the task has seen the lag"
        );
        assert_eq!(subscriber.offer(&event("b", 1)), Offer::Queued { depth: 2 });
        assert_eq!(
            receiver.take_lagged(),
            vec![Lagged {
                stream: Arc::from("a"),
                queued: 1
            }],
            "seq 2 is still queued, and it came before the drop"
        );
        assert!(!receiver.has_lagged());
        drop(receiver.try_recv());
        assert_eq!(subscriber.offer(&event("a", 5)), Offer::Queued { depth: 2 });
    }

    #[test]
    fn a_lag_counts_only_its_streams_deliveries_queued_before_the_drop() {
        let (subscriber, mut receiver) = test_channel(4);
        for delivery in [event("a", 1), event("b", 1), event("a", 2), event("b", 2)] {
            assert!(matches!(subscriber.offer(&delivery), Offer::Queued { .. }));
        }
        assert_eq!(subscriber.offer(&event("a", 3)), Offer::Lagged);
        assert!(matches!(
            receiver.try_recv(),
            Some(Received::Lagged(lagged)) if lagged == vec![Lagged { stream: Arc::from("a"), queued: 2 }]
        ));
        // The take lets the stream be offered again; the queue is still full, so it lags again.
        assert_eq!(subscriber.offer(&event("a", 4)), Offer::Lagged);
        let seqs: Vec<(String, u64)> = std::iter::from_fn(|| match receiver.try_recv()? {
            Received::Delivery(delivery) => Some((delivery.stream.to_string(), delivery.seq)),
            Received::Lagged(lagged) => Some((format!("lag {}", lagged[0].queued), 0)),
            Received::Nudged => Some(("nudge".to_string(), 0)),
        })
        .collect();
        assert_eq!(
            seqs,
            [("lag 2", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
                .map(|(s, q)| (s.to_string(), q))
                .to_vec(),
            "the second lag on a counts the two deliveries still queued for it"
        );
    }

    #[tokio::test]
    async fn a_nudge_wakes_a_parked_receiver_once_and_comes_first() {
        let (subscriber, mut receiver) = test_channel(4);
        let parked = tokio::spawn(async move {
            let first = receiver.recv().await;
            (first, receiver)
        });
        tokio::task::yield_now().await;
        subscriber.nudge();
        let (first, mut receiver) = tokio::time::timeout(Duration::from_secs(10), parked)
            .await
            .expect("woken in time")
            .expect("task ran");
        assert_eq!(first, Some(Received::Nudged));
        assert_eq!(receiver.try_recv(), None, "one nudge is taken once");
        assert!(matches!(
            subscriber.offer(&event("a", 1)),
            Offer::Queued { .. }
        ));
        subscriber.nudge();
        assert_eq!(
            receiver.try_recv(),
            Some(Received::Nudged),
            "ahead of the queue"
        );
        assert!(matches!(receiver.try_recv(), Some(Received::Delivery(_))));
    }

    #[tokio::test]
    async fn a_receiver_parked_on_an_empty_queue_wakes_for_a_lag() {
        let (subscriber, mut receiver) = test_channel(1);
        let parked = tokio::spawn(async move { receiver.recv().await });
        tokio::task::yield_now().await;
        // The publish path found the queue full, then the task drained it before the mark
        // landed: only the wake-up can tell the parked task.
        subscriber.0.lag.mark(&Arc::from("a"));
        let received = tokio::time::timeout(Duration::from_secs(10), parked)
            .await
            .expect("woken in time")
            .expect("task ran");
        assert_eq!(
            received,
            Some(Received::Lagged(vec![Lagged {
                stream: Arc::from("a"),
                queued: 0
            }]))
        );
    }

    #[test]
    fn a_parked_receiver_is_woken_by_a_delivery_a_lag_and_its_unregistration() {
        let (subscriber, mut receiver) = test_channel(1);
        let (wakes, waker) = CountingWaker::new();
        let mut context = Context::from_waker(&waker);
        let woken = || wakes.count();

        assert!(receiver.poll_recv(&mut context).is_pending());
        assert_eq!(subscriber.offer(&event("a", 1)), Offer::Queued { depth: 1 });
        assert_eq!(
            woken(),
            1,
            "the first delivery into an empty queue wakes the task"
        );
        let Poll::Ready(Some(Received::Delivery(delivery))) = receiver.poll_recv(&mut context)
        else {
            panic!("the delivery is ready");
        };
        assert_eq!(delivery.seq, 1);

        assert!(receiver.poll_recv(&mut context).is_pending());
        subscriber.0.lag.mark(&Arc::from("b"));
        assert_eq!(woken(), 2, "a lag wakes the task");
        assert_eq!(
            receiver.poll_recv(&mut context),
            Poll::Ready(Some(Received::Lagged(vec![Lagged {
                stream: Arc::from("b"),
                queued: 0
            }])))
        );

        assert!(receiver.poll_recv(&mut context).is_pending());
        subscriber.unregistered();
        assert_eq!(woken(), 3, "unregistration wakes the task");
        assert_eq!(receiver.poll_recv(&mut context), Poll::Ready(None));
    }

    #[test]
    fn a_delivery_queued_before_the_task_registers_is_not_missed() {
        let (subscriber, mut receiver) = test_channel(2);
        // Nobody registered yet: the wake-up reaches no one, and the next poll finds it.
        assert_eq!(subscriber.offer(&event("a", 1)), Offer::Queued { depth: 1 });
        let (_, waker) = CountingWaker::new();
        let mut context = Context::from_waker(&waker);
        assert!(matches!(
            receiver.poll_recv(&mut context),
            Poll::Ready(Some(Received::Delivery(_)))
        ));
    }

    #[test]
    fn a_dropped_receiver_is_reported_closed() {
        let (subscriber, receiver) = test_channel(1);
        assert!(!subscriber.is_closed());
        drop(receiver);
        assert!(subscriber.is_closed());
        assert_eq!(subscriber.offer(&event("a", 1)), Offer::Closed);
    }
}
