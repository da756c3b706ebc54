//! Fan-out bus: hands each delivery, encoded once, to the bounded queue of every connection
//! subscribed to its stream.
//!
//! Flow: the Postgres listener (or a raw-channel bridge) turns an event into one [`Delivery`]
//! whose `json` is the finished server-to-client message, wraps it in an `Arc`, and calls
//! [`Bus::publish`] from the stream's publisher task. The bus looks up the stream's subscriber
//! snapshot in the [`Registry`] and `try_send`s the same `Arc` into each connection's queue. Each
//! connection's task takes deliveries from its [`ConnReceiver`], passes them through its
//! [`LastSent`] and writes them out.
//!
//! # Slow consumers
//!
//! `publish` never waits. A connection whose queue is full, and can borrow no more room
//! ([`room`]), is marked *lagged* on that stream and
//! further deliveries on that stream are dropped for it (and counted) until its task takes the
//! lag with [`ConnReceiver::recv`] / [`ConnReceiver::take_lagged`]. The task then replays the
//! stream from its cursor position (the outbox for a durable stream) or sends `gap` (a raw
//! channel). Other connections are never delayed and memory per connection stays bounded by the
//! queue capacity (see below). A connection whose receiver was
//! dropped is unregistered the next time a publish reaches it.
//!
//! # Race-free subscribe (snapshot-then-live)
//!
//! 1. **Subscribe first** ([`Registry::subscribe`]): from now on every delivery on the stream
//!    lands in the connection's queue. If the outcome says `first_for_stream`, make sure the
//!    Postgres listener is listening before going on.
//! 2. **Read the baseline**: the snapshot, or the replay from the client's `since`, together with
//!    the `(epoch, seq)` it covers ([`Position`]). This is async (a Postgres query); deliveries
//!    keep queueing meanwhile.
//! 3. **Send the baseline** and [`LastSent::start`] the stream at its position.
//! 4. **Flush**: keep draining the queue through [`LastSent::admit`], which drops every event with
//!    `seq <=` the last one sent. The queue was the buffer, so nothing published after step 1 is
//!    missed and nothing covered by the baseline is sent twice.
//!
//! Why no gap: an event with seq `s` is published after it is committed, so if the baseline did
//! not include `s` then `s` was committed after the read began, hence published after step 1,
//! hence queued. [`Bus::subscribe_with`] runs steps 1 to 3 (the caller sends the baseline it
//! returns). Holding `&mut LastSent` across the read means the task cannot admit anything for the
//! stream before the baseline is sent. If the queue fills during a slow read, the lag path above
//! resumes from the cursor position like any other lag.
//!
//! # Memory per connection
//!
//! A queue holds `Arc<Delivery>` pointers, 8 bytes each; the encoded JSON is shared by every
//! subscriber and not counted here. The queue is a `VecDeque` that grows as deliveries wait
//! and is let go (down to 16 slots) once the connection's task has drained it, so an idle
//! connection's queue costs its [`Subscriber`] state (the lag set, the wake-up, about
//! 200 bytes) and nothing else. A full default queue of 1024 deliveries is 8 KiB. Each
//! subscription adds a map entry in both registry indexes (about 110 bytes measured; stream
//! names are shared) and one in the [`LastSent`].
//! A lagging connection also pins at most `capacity` shared deliveries alive until it drains.
//! Beyond its capacity a queue borrows slots from one relay-wide pool ([`room`]): the pool's
//! size bounds the extra slots, and what they pin, for all connections together.

pub mod fanout;
mod last_sent;
pub(crate) mod queue;
pub mod registry;
pub mod room;
pub mod shard;
mod stats;
mod stream_map;

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use self::fanout::Group;
pub use self::last_sent::{Admit, LastSent};
use self::queue::Offer;
pub use self::queue::{ConnReceiver, Lagged, Received, Subscriber};
use self::shard::{Inbox, Job};
pub use self::stats::{BusStats, BusStatsSnapshot};
pub use self::stream_map::StreamMap;
use tidewire_shared::Filter;

use crate::bus::registry::{ConnId, Registry, RegistryError, SubscribeOutcome};
pub use crate::delivery::{Delivery, DeliveryKind, Position};

/// Bus settings.
///
/// | field | default |
/// |---|---|
/// | `queue_capacity` | 1024 deliveries |
/// | `spare_slots` | 2,097,152 deliveries (16 MiB of slots), relay-wide |
/// | `burst` | 15,360 deliveries per connection |
/// | `shards` | 0: the publisher offers to every queue itself |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusConfig {
    /// Deliveries each connection's queue holds of its own. Each slot is an 8-byte pointer;
    /// see [memory per connection](self#memory-per-connection).
    /// Default: [`BusConfig::DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: NonZeroUsize,
    /// Slots shared by all connections, which a queue borrows while a burst outgrows its own
    /// capacity (see [`room`](self::room)). A connection is marked lagged when its queue is
    /// full and it can borrow no more. 0: no sharing, every queue holds its capacity.
    pub spare_slots: usize,
    /// Most slots one connection holds borrowed from the shared ones.
    pub burst: usize,
    /// Delivery threads (see [`shard`]): with 1 or more, each delivery is handed once to each
    /// thread with subscribers, whose [`Inbox`] offers it to that thread's connections. 0: the
    /// publisher offers it to every queue itself.
    pub shards: usize,
}

impl BusConfig {
    /// Default queue capacity: 1024 deliveries (about 9 KiB of slots when full).
    pub const DEFAULT_QUEUE_CAPACITY: NonZeroUsize = match NonZeroUsize::new(1024) {
        Some(capacity) => capacity,
        None => panic!("1024 is not zero"),
    };

    /// Default shared slots: 2,097,152 (16 MiB of pointers), enough for 1,000 connections to
    /// hold about 3,000 deliveries each at once.
    pub const DEFAULT_SPARE_SLOTS: usize = 2 * 1024 * 1024;

    /// Default most borrowed by one connection: 15,360, so a queue reaches 16,384 deliveries
    /// with the default capacity.
    pub const DEFAULT_BURST: usize = 15 * 1024;

    /// Sets the queue capacity. Default: 1024.
    pub fn with_queue_capacity(mut self, queue_capacity: NonZeroUsize) -> Self {
        self.queue_capacity = queue_capacity;
        self
    }

    /// Sets the shared slots and the most one connection borrows. Default: 2,097,152 and
    /// 15,360.
    pub fn with_spare(mut self, spare_slots: usize, burst: usize) -> Self {
        self.spare_slots = spare_slots;
        self.burst = burst;
        self
    }

    /// Sets the delivery threads. Default: 0 (none).
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            spare_slots: Self::DEFAULT_SPARE_SLOTS,
            burst: Self::DEFAULT_BURST,
            shards: 0,
        }
    }
}

/// What one [`Bus::publish`] did. With delivery threads the offers happen on those threads,
/// later: `publish` then tells only `subscribers`, and the counters in [`Bus::stats`] get the
/// rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishStats {
    /// Subscribers of the stream when it was published (filtered ones included, whether or
    /// not the delivery was offered to them).
    pub subscribers: usize,
    /// Queues it was placed in.
    pub delivered: usize,
    /// Subscribers that did not get it because they were (or just became) lagged.
    pub dropped: usize,
    /// Subscribers that became lagged on the stream with this delivery.
    pub newly_lagged: usize,
    /// Subscribers found closed and unregistered.
    pub reaped: usize,
    /// Streams left with no subscriber by that reaping: stop listening for them.
    pub emptied_streams: Vec<Arc<str>>,
}

impl PublishStats {
    /// Both groups' counts together.
    fn add(mut self, other: PublishStats) -> PublishStats {
        self.subscribers += other.subscribers;
        self.delivered += other.delivered;
        self.dropped += other.dropped;
        self.newly_lagged += other.newly_lagged;
        self.reaped += other.reaped;
        self.emptied_streams.extend(other.emptied_streams);
        self
    }
}

/// The baseline a subscriber reads after subscribing: a snapshot or a replay, and the position
/// it covers up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline<T> {
    /// The `(epoch, seq)` the baseline covers: live events at or below it are duplicates.
    pub position: Position,
    /// The snapshot or replay to send, opaque to the bus.
    pub value: T,
}

/// A subscription made by [`Bus::subscribe_with`], with the baseline to send first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subscribed<T> {
    /// What the registry did (including `first_for_stream`).
    pub outcome: SubscribeOutcome,
    /// The baseline to send before anything else on the stream; the cursor starts at its
    /// position.
    pub baseline: Baseline<T>,
}

/// Errors from [`Bus::subscribe_with`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError<E> {
    /// The connection is not registered.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Reading the baseline failed; the subscription was rolled back if this call made it.
    #[error("reading the subscription baseline failed")]
    Baseline {
        /// The reader's error.
        #[source]
        source: E,
        /// The rollback left the stream with no subscriber: stop listening for it.
        last_for_stream: bool,
    },
}

/// The fan-out bus: a [`Registry`] plus counters. Share it as `Arc<Bus>`.
#[derive(Debug)]
pub struct Bus {
    registry: Registry,
    stats: BusStats,
    /// One per delivery thread; empty without shards.
    inboxes: Vec<tokio::sync::mpsc::UnboundedSender<Job>>,
    /// Their receiving ends until the threads take them ([`Bus::take_inboxes`]).
    unclaimed: Mutex<Vec<Inbox>>,
}

impl Bus {
    /// A bus with no connection.
    pub fn new(config: BusConfig) -> Self {
        let (inboxes, unclaimed) = shard::inboxes(config.shards);
        Self {
            registry: Registry::new(config),
            stats: BusStats::default(),
            inboxes,
            unclaimed: Mutex::new(unclaimed),
        }
    }

    /// The delivery threads' inboxes, for the threads to run; empty after the first call and
    /// without shards. Until each runs, its deliveries wait in it.
    pub fn take_inboxes(&self) -> Vec<Inbox> {
        std::mem::take(
            &mut *self
                .unclaimed
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The connection registry: register, subscribe, unsubscribe, unregister.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Live counters.
    pub fn stats(&self) -> &BusStats {
        &self.stats
    }

    /// Offers `delivery` to every subscriber of its stream without waiting; see the
    /// [module docs](self) for what happens to full and closed queues.
    ///
    /// Deliveries of one stream must be published in seq order from one task at a time.
    pub fn publish(&self, delivery: Arc<Delivery>) -> PublishStats {
        self.stats.record_published();
        let Some(fanout) = self.registry.subscribers(&delivery.stream) else {
            return PublishStats::default();
        };
        if self.inboxes.is_empty() {
            return fanout
                .groups()
                .iter()
                .map(|group| self.offer_group(group, &delivery))
                .fold(PublishStats::default(), PublishStats::add);
        }
        for (group, inbox) in fanout.groups().iter().zip(&self.inboxes) {
            if group.is_empty() {
                continue;
            }
            let job = Job {
                fanout: Arc::clone(&fanout),
                delivery: Arc::clone(&delivery),
            };
            if inbox.send(job).is_err() {
                // The thread is gone (the relay is stopping): offer from here, in order,
                // since nothing of it is left queued.
                self.offer_group(group, &delivery);
            }
        }
        PublishStats {
            subscribers: fanout.len(),
            ..PublishStats::default()
        }
    }

    /// Offers `delivery` to one group of its stream's subscribers and records what happened.
    pub(crate) fn offer_group(&self, group: &Group, delivery: &Arc<Delivery>) -> PublishStats {
        let mut publish = PublishStats {
            subscribers: group.len(),
            ..PublishStats::default()
        };
        let mut deepest_queue = 0;
        let mut closed: Vec<ConnId> = Vec::new();
        let mut candidates = Vec::new();
        group.candidates(delivery, &mut candidates);
        for subscriber in group.plain().iter().chain(candidates) {
            match subscriber.offer(delivery) {
                Offer::Queued { depth } => {
                    publish.delivered += 1;
                    deepest_queue = deepest_queue.max(depth);
                }
                Offer::Lagged => {
                    publish.dropped += 1;
                    publish.newly_lagged += 1;
                }
                Offer::Dropped => publish.dropped += 1,
                Offer::Closed => closed.push(subscriber.id()),
            }
        }
        if !closed.is_empty() {
            let removed = self.registry.unregister_all(&closed);
            publish.reaped = removed.connections;
            publish.emptied_streams = removed.emptied_streams;
        }
        self.stats.record_offers(&publish, deepest_queue);
        publish
    }

    /// Unregisters every connection whose receiver was dropped (see
    /// [`Registry::reap_closed`]) and counts them. Returns the streams left with no subscriber.
    pub fn reap_closed(&self) -> Vec<Arc<str>> {
        let removed = self.registry.reap_closed();
        self.stats.add_reaped(removed.connections);
        removed.emptied_streams
    }

    /// Steps 1 to 3 of the race-free subscribe (see the [module docs](self)): subscribes `id` to
    /// `stream` (its view of it when `filter` is set), then awaits `read_baseline` (given the subscribe outcome, so it can wait for the
    /// listener when `first_for_stream`), then starts `cursor` at the baseline's position. The
    /// caller sends the returned baseline, then keeps draining its queue through `cursor`.
    ///
    /// If this future is dropped during the read, the subscription stays and the cursor does not
    /// track the stream (its queued deliveries are [`Admit::Untracked`]): unsubscribe or
    /// unregister.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Registry`] if `id` is not registered; [`SubscribeError::Baseline`] if
    /// `read_baseline` fails, after undoing the subscription if this call made it.
    pub async fn subscribe_with<T, E, F, Fut>(
        &self,
        cursor: &mut LastSent,
        id: ConnId,
        stream: &str,
        filter: Option<Arc<Filter>>,
        read_baseline: F,
    ) -> Result<Subscribed<T>, SubscribeError<E>>
    where
        F: FnOnce(SubscribeOutcome) -> Fut,
        Fut: Future<Output = Result<Baseline<T>, E>>,
    {
        let outcome = self.registry.subscribe_view(id, stream, filter)?;
        match read_baseline(outcome.clone()).await {
            Ok(baseline) => {
                cursor.start(Arc::clone(&outcome.stream), baseline.position);
                Ok(Subscribed { outcome, baseline })
            }
            Err(source) => {
                let last_for_stream = outcome.newly_subscribed
                    && self
                        .registry
                        .unsubscribe(id, stream)
                        .is_ok_and(|undone| undone.last_for_stream);
                Err(SubscribeError::Baseline {
                    source,
                    last_for_stream,
                })
            }
        }
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Bus>();
    assert_send_sync::<Delivery>();
    assert_send_sync::<BusStats>();
};

impl crate::pg::listener::Fanout for Bus {
    fn publish(&self, delivery: Arc<Delivery>) {
        // The listener has no use for the counts; the bus keeps them in its stats.
        let _ = Bus::publish(self, delivery);
    }

    fn has_subscribers(&self, stream: &str) -> bool {
        self.registry().subscriber_count(stream) > 0
    }
}

#[cfg(test)]
mod tests;
