//! Connection registry: which connections exist and which streams each one follows.
//!
//! Transports register a connection when it is accepted and subscribe it to streams as the client
//! asks; the [`Bus`](crate::bus::Bus) reads a stream's subscribers to fan a delivery out; the
//! Postgres listener learns from the returned outcomes when a stream gains its first subscriber
//! (LISTEN) or loses its last (UNLISTEN).
//!
//! # Design
//!
//! - Two indexes under one `std::sync::Mutex`: by connection id and by stream. Every operation
//!   is a few hash-map steps, so register, unregister (per stream followed), subscribe and
//!   unsubscribe are O(1) and the lock is held for microseconds, never across an `.await`.
//! - Invariant: every connection in a stream index is also in the id index, with the stream in
//!   its own set, and a stream with no subscribers has no entry (no leak per stream ever used).
//!   [`Registry::check_invariants`] verifies it.
//! - Fan-out iterates a copy-on-write `Arc<[Subscriber]>` per stream with no lock held. A change
//!   only discards the stream's snapshot (keeping subscribe O(1)); the next
//!   [`Registry::subscribers`] call rebuilds it once. A rebuild costs one pointer copy per
//!   subscriber, no more than the fan-out that asked for it, and a burst of joins costs one
//!   rebuild, not one per join.
//! - First/last transitions are decided under the lock, so exactly one caller sees each. They are
//!   edge hints: two callers may forward them out of order, so the listener should act on them
//!   level-triggered, checking [`Registry::subscriber_count`] when it processes one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tidewire_shared::Filter;

use crate::bus::fanout::Fanout;
use crate::bus::room::SparePool;
use crate::bus::{BusConfig, ConnReceiver, Subscriber};

/// Identifies one client connection for the life of the process (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// The raw number, for logs and metrics labels.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "conn-{}", self.0)
    }
}

/// Errors from registry operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The connection is not registered (never was, already unregistered, or reaped).
    #[error("unknown connection {0}")]
    UnknownConnection(ConnId),
}

/// A broken registry invariant, reported by [`Registry::check_invariants`]. Always a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registry invariant broken: {0}")]
pub struct InvariantViolation(String);

/// What [`Registry::subscribe`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOutcome {
    /// The stream name as stored by the registry (shared with its indexes; reuse it).
    pub stream: Arc<str>,
    /// The stream had no subscriber before: start listening for it.
    pub first_for_stream: bool,
    /// False if the connection already followed the stream (nothing changed).
    pub newly_subscribed: bool,
}

/// What [`Registry::unsubscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnsubscribeOutcome {
    /// False if the connection did not follow the stream (nothing changed).
    pub was_subscribed: bool,
    /// The stream has no subscriber left: stop listening for it.
    pub last_for_stream: bool,
}

/// What a removal of several connections did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Removed {
    /// Connections actually removed.
    pub connections: usize,
    /// Streams left with no subscriber: stop listening for them.
    pub emptied_streams: Vec<Arc<str>>,
}

/// Connections indexed by id and by stream. See the [module docs](self).
#[derive(Debug)]
pub struct Registry {
    /// Both indexes. A `std::sync::Mutex`, not tokio's: every critical section is a few hash-map
    /// operations with no `.await` inside, so it is never held across an await point (the
    /// `clippy::await_holding_lock` lint enforces it) and callers never yield while holding it.
    state: Mutex<State>,
    /// Source of [`ConnId`]s; ids start at 1 and are never reused.
    next_id: AtomicU64,
    /// Capacity of each connection's queue, in deliveries.
    queue_capacity: NonZeroUsize,
    /// The slots queues borrow beyond their capacity.
    spare: Arc<SparePool>,
    /// Groups in each stream's [`Fanout`]: one per delivery thread, at least one.
    groups: usize,
}

#[derive(Debug, Default)]
struct State {
    by_id: HashMap<ConnId, Connection>,
    by_stream: HashMap<Arc<str>, StreamEntry>,
}

#[derive(Debug)]
struct Connection {
    subscriber: Subscriber,
    /// Streams followed; the `Arc`s are the `by_stream` keys, so each name is stored once.
    streams: HashSet<Arc<str>>,
}

#[derive(Debug, Default)]
struct StreamEntry {
    members: HashMap<ConnId, Subscriber>,
    /// The filters of the members that follow a view of the stream (a subset of `members`).
    filters: HashMap<ConnId, Arc<Filter>>,
    /// `members` as a [`Fanout`] for lock-free iteration; `None` after a change until next
    /// asked for.
    snapshot: Option<Arc<Fanout>>,
}

impl Registry {
    /// An empty registry whose connections get queues as `config` says.
    pub fn new(config: BusConfig) -> Self {
        Self {
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            queue_capacity: config.queue_capacity,
            spare: Arc::new(SparePool::new(config.spare_slots, config.burst)),
            groups: config.shards.max(1),
        }
    }

    /// Wakes every registered connection with [`Received::Nudged`](crate::bus::Received).
    pub fn nudge_all(&self) {
        let subscribers: Vec<Subscriber> = self
            .lock()
            .by_id
            .values()
            .map(|connection| connection.subscriber.clone())
            .collect();
        for subscriber in subscribers {
            subscriber.nudge();
        }
    }

    /// The slots queues borrow beyond their own capacity.
    pub fn spare(&self) -> &SparePool {
        &self.spare
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock between two index updates, so a poisoned
        // lock (a panic elsewhere in the holder's thread) still guards consistent indexes.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection with an empty queue and no stream, served by the delivery
    /// thread this is called on ([`shard::current`](crate::bus::shard::current)).
    pub fn register(&self) -> ConnReceiver {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (subscriber, receiver) = crate::bus::queue::channel(
            id,
            crate::bus::shard::current(),
            self.queue_capacity.get(),
            Arc::clone(&self.spare),
        );
        let connection = Connection {
            subscriber,
            streams: HashSet::new(),
        };
        self.lock().by_id.insert(id, connection);
        receiver
    }

    /// Removes a connection and all its subscriptions. Returns the streams left with no
    /// subscriber, or `None` if the connection was not registered (unregistering is idempotent).
    pub fn unregister(&self, id: ConnId) -> Option<Vec<Arc<str>>> {
        let mut emptied = Vec::new();
        remove_connection(&mut self.lock(), id, &mut emptied).then_some(emptied)
    }

    /// Removes several connections under one lock acquisition.
    pub fn unregister_all(&self, ids: &[ConnId]) -> Removed {
        let mut removed = Removed::default();
        let mut state = self.lock();
        for &id in ids {
            if remove_connection(&mut state, id, &mut removed.emptied_streams) {
                removed.connections += 1;
            }
        }
        removed
    }

    /// Removes every connection whose receiver was dropped. O(connections); for a periodic
    /// janitor, since reaping during publish only finds connections on streams that get traffic.
    pub fn reap_closed(&self) -> Removed {
        let mut state = self.lock();
        let closed: Vec<ConnId> = state
            .by_id
            .iter()
            .filter(|(_, connection)| connection.subscriber.is_closed())
            .map(|(&id, _)| id)
            .collect();
        let mut removed = Removed::default();
        for id in closed {
            if remove_connection(&mut state, id, &mut removed.emptied_streams) {
                removed.connections += 1;
            }
        }
        removed
    }

    /// Subscribes a connection to `stream`; idempotent. Deliveries published on the stream after
    /// this returns reach the connection's queue.
    ///
    /// # Errors
    ///
    /// [`RegistryError::UnknownConnection`] if `id` is not registered.
    pub fn subscribe(&self, id: ConnId, stream: &str) -> Result<SubscribeOutcome, RegistryError> {
        self.subscribe_view(id, stream, None)
    }

    /// [`Registry::subscribe`] with the filter of the connection's view of the stream (`None`:
    /// every record). Subscribing again replaces the filter.
    ///
    /// # Errors
    ///
    /// [`RegistryError::UnknownConnection`] if `id` is not registered.
    pub fn subscribe_view(
        &self,
        id: ConnId,
        stream: &str,
        filter: Option<Arc<Filter>>,
    ) -> Result<SubscribeOutcome, RegistryError> {
        let mut state = self.lock();
        let State { by_id, by_stream } = &mut *state;
        let connection = by_id
            .get_mut(&id)
            .ok_or(RegistryError::UnknownConnection(id))?;
        if let Some(name) = connection.streams.get(stream) {
            if let Some(entry) = by_stream.get_mut(&**name) {
                let changed = match filter {
                    Some(filter) => {
                        entry.filters.insert(id, filter);
                        true
                    }
                    None => entry.filters.remove(&id).is_some(),
                };
                if changed {
                    entry.snapshot = None;
                }
            }
            return Ok(SubscribeOutcome {
                stream: Arc::clone(name),
                first_for_stream: false,
                newly_subscribed: false,
            });
        }
        let existing = by_stream
            .get_key_value(stream)
            .map(|(name, _)| Arc::clone(name));
        let first_for_stream = existing.is_none();
        let name = existing.unwrap_or_else(|| Arc::from(stream));
        let entry = by_stream.entry(Arc::clone(&name)).or_default();
        entry.members.insert(id, connection.subscriber.clone());
        if let Some(filter) = filter {
            entry.filters.insert(id, filter);
        }
        entry.snapshot = None;
        connection.streams.insert(Arc::clone(&name));
        Ok(SubscribeOutcome {
            stream: name,
            first_for_stream,
            newly_subscribed: true,
        })
    }

    /// Unsubscribes a connection from `stream`; idempotent. Deliveries already queued stay queued
    /// (the connection's [`LastSent`](crate::bus::LastSent) drops them once it forgets the stream).
    ///
    /// # Errors
    ///
    /// [`RegistryError::UnknownConnection`] if `id` is not registered.
    pub fn unsubscribe(
        &self,
        id: ConnId,
        stream: &str,
    ) -> Result<UnsubscribeOutcome, RegistryError> {
        let mut state = self.lock();
        let State { by_id, by_stream } = &mut *state;
        let connection = by_id
            .get_mut(&id)
            .ok_or(RegistryError::UnknownConnection(id))?;
        let Some(name) = connection.streams.take(stream) else {
            return Ok(UnsubscribeOutcome {
                was_subscribed: false,
                last_for_stream: false,
            });
        };
        connection.subscriber.clear_lagged(stream);
        Ok(UnsubscribeOutcome {
            was_subscribed: true,
            last_for_stream: remove_member(by_stream, &name, id),
        })
    }

    /// The subscribers of `stream` as a shared snapshot to iterate with no lock held, or `None`
    /// if it has none. Later changes do not affect a snapshot already handed out.
    pub fn subscribers(&self, stream: &str) -> Option<Arc<Fanout>> {
        let mut state = self.lock();
        let entry = state.by_stream.get_mut(stream)?;
        let StreamEntry {
            members,
            filters,
            snapshot,
        } = entry;
        let snapshot = snapshot.get_or_insert_with(|| {
            Arc::new(Fanout::build(
                self.groups,
                members
                    .iter()
                    .map(|(id, subscriber)| (subscriber, filters.get(id))),
            ))
        });
        Some(Arc::clone(snapshot))
    }

    /// A registered connection's queue handle (for tests of the fan-out).
    #[cfg(test)]
    pub(crate) fn subscriber(&self, id: ConnId) -> Option<Subscriber> {
        self.lock()
            .by_id
            .get(&id)
            .map(|connection| connection.subscriber.clone())
    }

    /// Streams with at least one subscriber.
    pub fn streams(&self) -> Vec<Arc<str>> {
        self.lock().by_stream.keys().cloned().collect()
    }

    /// Number of connections subscribed to `stream`.
    pub fn subscriber_count(&self, stream: &str) -> usize {
        self.lock()
            .by_stream
            .get(stream)
            .map_or(0, |entry| entry.members.len())
    }

    /// Number of registered connections.
    pub fn connection_count(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Streams followed by a connection, or `None` if it is not registered.
    pub fn subscriptions(&self, id: ConnId) -> Option<Vec<Arc<str>>> {
        let state = self.lock();
        let connection = state.by_id.get(&id)?;
        Some(connection.streams.iter().cloned().collect())
    }

    /// Checks both indexes against each other. O(subscriptions); for tests and debug endpoints.
    ///
    /// # Errors
    ///
    /// [`InvariantViolation`] describing the first inconsistency found (always a bug).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let state = self.lock();
        let broken = |message: String| Err(InvariantViolation(message));
        for (stream, entry) in &state.by_stream {
            if entry.members.is_empty() {
                return broken(format!("stream {stream:?} has an entry but no subscriber"));
            }
            if let Some(snapshot) = &entry.snapshot {
                let fresh = snapshot.len() == entry.members.len()
                    && snapshot.plain_len() + entry.filters.len() == entry.members.len()
                    && snapshot.iter().all(|subscriber| {
                        entry
                            .members
                            .get(&subscriber.id())
                            .is_some_and(|member| member.same_queue(subscriber))
                    });
                if !fresh {
                    return broken(format!("stream {stream:?} has a stale snapshot"));
                }
            }
            for (id, member) in &entry.members {
                let Some(connection) = state.by_id.get(id) else {
                    return broken(format!(
                        "{id} is in stream {stream:?} but not in the id index"
                    ));
                };
                if !connection.subscriber.same_queue(member) || member.id() != *id {
                    return broken(format!("{id} in stream {stream:?} has another queue"));
                }
                if !connection.streams.contains(stream) {
                    return broken(format!("{id} is in stream {stream:?} without following it"));
                }
            }
        }
        for (id, connection) in &state.by_id {
            for stream in &connection.streams {
                let listed = state
                    .by_stream
                    .get(stream)
                    .is_some_and(|entry| entry.members.contains_key(id));
                if !listed {
                    return broken(format!("{id} follows {stream:?} but is not in its index"));
                }
            }
        }
        Ok(())
    }
}

/// Removes `id` from both indexes, pushing streams left empty onto `emptied`. False if absent.
fn remove_connection(state: &mut State, id: ConnId, emptied: &mut Vec<Arc<str>>) -> bool {
    let Some(connection) = state.by_id.remove(&id) else {
        return false;
    };
    connection.subscriber.unregistered();
    for stream in connection.streams {
        if remove_member(&mut state.by_stream, &stream, id) {
            emptied.push(stream);
        }
    }
    true
}

/// Removes `id` from one stream's index; true if the stream became empty (and was dropped).
fn remove_member(by_stream: &mut HashMap<Arc<str>, StreamEntry>, stream: &str, id: ConnId) -> bool {
    let Some(entry) = by_stream.get_mut(stream) else {
        return false;
    };
    if entry.members.remove(&id).is_some() {
        entry.snapshot = None;
    }
    entry.filters.remove(&id);
    let empty = entry.members.is_empty();
    if empty {
        by_stream.remove(stream);
    }
    empty
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Registry>();
    assert_send_sync::<Subscriber>();
    assert_send_sync::<ConnReceiver>();
};

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn registry() -> Registry {
        Registry::new(
            BusConfig::default()
                .with_queue_capacity(NonZeroUsize::new(4).expect("4 is not zero"))
                .with_spare(0, 0),
        )
    }

    #[test]
    fn ids_are_unique_and_display() {
        let registry = registry();
        let first = registry.register();
        let second = registry.register();
        assert_ne!(first.id(), second.id());
        assert_eq!(first.id().to_string(), format!("conn-{}", first.id().get()));
        assert_eq!(registry.connection_count(), 2);
    }

    #[test]
    fn unknown_connection_is_an_error() {
        let registry = registry();
        let receiver = registry.register();
        let id = receiver.id();
        assert_eq!(registry.unregister(id), Some(Vec::new()));
        assert_eq!(registry.unregister(id), None);
        assert_eq!(
            registry.subscribe(id, "a"),
            Err(RegistryError::UnknownConnection(id))
        );
        assert_eq!(
            registry.unsubscribe(id, "a"),
            Err(RegistryError::UnknownConnection(id))
        );
        assert!(registry.streams().is_empty());
    }

    #[test]
    fn first_and_last_hooks_fire_once_per_transition() {
        let registry = registry();
        let alice = registry.register();
        let bob = registry.register();
        let carol = registry.register();

        let outcome = registry
            .subscribe(alice.id(), "s")
            .expect("alice is registered");
        assert!(outcome.first_for_stream && outcome.newly_subscribed);
        let again = registry
            .subscribe(alice.id(), "s")
            .expect("alice is registered");
        assert!(!again.first_for_stream && !again.newly_subscribed);
        assert!(Arc::ptr_eq(&outcome.stream, &again.stream));
        let outcome = registry
            .subscribe(bob.id(), "s")
            .expect("bob is registered");
        assert!(!outcome.first_for_stream && outcome.newly_subscribed);
        assert_eq!(registry.subscriber_count("s"), 2);

        let outcome = registry
            .unsubscribe(alice.id(), "s")
            .expect("alice is registered");
        assert!(outcome.was_subscribed && !outcome.last_for_stream);
        let outcome = registry
            .unsubscribe(alice.id(), "s")
            .expect("alice is registered");
        assert!(!outcome.was_subscribed && !outcome.last_for_stream);
        registry
            .subscribe(bob.id(), "t")
            .expect("bob is registered");
        let mut emptied = registry.unregister(bob.id()).expect("bob is registered");
        emptied.sort();
        assert_eq!(emptied, vec![Arc::<str>::from("s"), Arc::from("t")]);
        assert!(registry.streams().is_empty());

        let outcome = registry
            .subscribe(carol.id(), "s")
            .expect("carol is registered");
        assert!(outcome.first_for_stream);
        drop(carol);
        let removed = registry.reap_closed();
        assert_eq!(removed.connections, 1);
        assert_eq!(removed.emptied_streams, vec![Arc::<str>::from("s")]);
        assert_eq!(registry.reap_closed(), Removed::default());
        assert_eq!(registry.connection_count(), 1);
        registry.check_invariants().expect("indexes agree");
    }

    #[test]
    fn snapshots_are_copy_on_write() {
        let registry = registry();
        let alice = registry.register();
        let bob = registry.register();
        assert!(registry.subscribers("s").is_none());
        registry
            .subscribe(alice.id(), "s")
            .expect("alice is registered");
        let before = registry.subscribers("s").expect("s has a subscriber");
        let unchanged = registry.subscribers("s").expect("s has a subscriber");
        assert!(Arc::ptr_eq(&before, &unchanged), "no change, no rebuild");
        registry
            .subscribe(bob.id(), "s")
            .expect("bob is registered");
        let after = registry.subscribers("s").expect("s has subscribers");
        assert_eq!(before.len(), 1, "a snapshot handed out never changes");
        let mut ids: Vec<ConnId> = after.iter().map(Subscriber::id).collect();
        ids.sort();
        assert_eq!(ids, vec![alice.id(), bob.id()]);
        registry.unregister(alice.id());
        let last = registry.subscribers("s").expect("bob is left");
        assert_eq!(last.len(), 1);
        assert_eq!(
            last.iter().map(Subscriber::id).collect::<Vec<_>>(),
            [bob.id()]
        );
        registry.check_invariants().expect("indexes agree");
    }

    const STREAMS: [&str; 16] = [
        "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13",
        "s14", "s15",
    ];

    /// Net first-minus-last count for one stream, as reported to callers.
    fn record(net: &[AtomicI64], stream: &str, delta: i64) {
        let index = STREAMS
            .iter()
            .position(|name| *name == stream)
            .expect("only test streams are used");
        net[index].fetch_add(delta, Ordering::Relaxed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_churn_keeps_invariant_and_leaks_nothing() {
        const TASKS: u64 = 8;
        const ITERATIONS: usize = 4_000;
        let registry = Arc::new(registry());
        let net: Arc<[AtomicI64]> = STREAMS.iter().map(|_| AtomicI64::new(0)).collect();
        let firsts = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

        let checker = {
            let registry = Arc::clone(&registry);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut checks = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    registry
                        .check_invariants()
                        .expect("invariant holds mid-churn");
                    for stream in registry.streams() {
                        let _snapshot = registry.subscribers(&stream);
                    }
                    checks += 1;
                    tokio::task::yield_now().await;
                }
                checks
            })
        };

        let mut workers = Vec::new();
        for task in 0..TASKS {
            let registry = Arc::clone(&registry);
            let net = Arc::clone(&net);
            let firsts = Arc::clone(&firsts);
            workers.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(task);
                let mut mine: Vec<(ConnReceiver, HashSet<&str>)> = Vec::new();
                for iteration in 0..ITERATIONS {
                    match rng.gen_range(0..10) {
                        0 | 1 if mine.len() < 6 => mine.push((registry.register(), HashSet::new())),
                        2 if !mine.is_empty() => {
                            let (receiver, _) = mine.swap_remove(rng.gen_range(0..mine.len()));
                            let emptied = registry.unregister(receiver.id()).expect("mine");
                            for stream in emptied {
                                record(&net, &stream, -1);
                            }
                        }
                        3..=6 if !mine.is_empty() => {
                            let index = rng.gen_range(0..mine.len());
                            let stream = STREAMS[rng.gen_range(0..STREAMS.len())];
                            let outcome = registry
                                .subscribe(mine[index].0.id(), stream)
                                .expect("mine");
                            assert_eq!(outcome.newly_subscribed, mine[index].1.insert(stream));
                            if outcome.first_for_stream {
                                firsts.fetch_add(1, Ordering::Relaxed);
                                record(&net, stream, 1);
                            }
                        }
                        7..=9 if !mine.is_empty() => {
                            let index = rng.gen_range(0..mine.len());
                            let stream = STREAMS[rng.gen_range(0..STREAMS.len())];
                            let outcome = registry
                                .unsubscribe(mine[index].0.id(), stream)
                                .expect("mine");
                            assert_eq!(outcome.was_subscribed, mine[index].1.remove(stream));
                            if outcome.last_for_stream {
                                record(&net, stream, -1);
                            }
                        }
                        _ => {}
                    }
                    if iteration % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                for (receiver, streams) in mine {
                    let mut actual = registry.subscriptions(receiver.id()).expect("mine");
                    actual.sort();
                    let mut expected: Vec<Arc<str>> = streams.into_iter().map(Arc::from).collect();
                    expected.sort();
                    assert_eq!(actual, expected);
                    for stream in registry.unregister(receiver.id()).expect("mine") {
                        record(&net, &stream, -1);
                    }
                }
            }));
        }
        for worker in workers {
            worker.await.expect("worker finished without panicking");
        }
        stop.store(true, Ordering::Relaxed);
        let checks = checker.await.expect("checker finished without panicking");

        registry
            .check_invariants()
            .expect("invariant holds at the end");
        assert_eq!(registry.connection_count(), 0);
        assert!(registry.streams().is_empty(), "empty streams are removed");
        assert!(firsts.load(Ordering::Relaxed) > 0);
        assert!(checks > 0);
        for (stream, net) in STREAMS.iter().zip(net.iter()) {
            assert_eq!(
                net.load(Ordering::Relaxed),
                0,
                "first/last balance for {stream}"
            );
        }
        assert!(
            registry.lock().by_stream.capacity() < 1024,
            "no runaway growth"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_last_transitions_balance() {
        let registry = Arc::new(registry());
        let firsts = Arc::new(AtomicU64::new(0));
        let lasts = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for task in 0..8_u64 {
            let registry = Arc::clone(&registry);
            let firsts = Arc::clone(&firsts);
            let lasts = Arc::clone(&lasts);
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(100 + task);
                let receiver = registry.register();
                for _ in 0..2_000 {
                    if registry
                        .subscribe(receiver.id(), "hot")
                        .expect("mine")
                        .first_for_stream
                    {
                        firsts.fetch_add(1, Ordering::Relaxed);
                    }
                    if rng.gen_bool(0.5) {
                        tokio::task::yield_now().await;
                    }
                    if registry
                        .unsubscribe(receiver.id(), "hot")
                        .expect("mine")
                        .last_for_stream
                    {
                        lasts.fetch_add(1, Ordering::Relaxed);
                    }
                }
                registry.unregister(receiver.id()).expect("mine");
            }));
        }
        for task in tasks {
            task.await.expect("task finished without panicking");
        }
        let firsts = firsts.load(Ordering::Relaxed);
        assert!(firsts > 0);
        assert_eq!(firsts, lasts.load(Ordering::Relaxed));
        assert_eq!(registry.subscriber_count("hot"), 0);
        assert!(registry.streams().is_empty());
    }
}
