//! Room in a connection's queue: its own capacity, plus slots it borrows from one relay-wide
//! pool while a burst outgrows that capacity, so a burst is absorbed instead of lagged while
//! the memory of all queues together stays bounded.
//!
//! Why: a lagged durable subscriber is replayed from the outbox, which costs far more than
//! queueing. With 1,000 subscribers taking a fast stream, the default 1,024 slots lagged
//! 8,555 times in 10 s, and the fan-out ran at 915k deliveries/s; with room for 16,384 it
//! never lagged and ran at 1,057k/s (1,391k against 1,736k/s with 100 events per
//! transaction; docs/BENCHMARKS.md). Giving every connection 16,384 slots of its own would
//! bound the relay's queues at 128 KiB each (1.3 GB for 10,000 stalled connections); the
//! pool bounds the extra room relay-wide instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Slots borrowed at a time, so the shared counter is touched once per this many deliveries.
const CHUNK: usize = 256;

/// Relay-wide slots that queues borrow beyond their own capacity. Shared as `Arc<SparePool>`.
#[derive(Debug)]
pub struct SparePool {
    /// Slots not lent out.
    free: AtomicUsize,
    /// Slots in the pool.
    size: usize,
    /// Most slots one connection may hold borrowed.
    burst: usize,
}

impl SparePool {
    /// A pool of `size` slots, of which one connection borrows at most `burst`.
    pub fn new(size: usize, burst: usize) -> Self {
        Self {
            free: AtomicUsize::new(size),
            size,
            burst,
        }
    }

    /// Slots lent out now.
    pub fn borrowed(&self) -> usize {
        self.size.saturating_sub(self.free.load(Ordering::Relaxed))
    }

    /// Takes up to `want` slots: how many it got (0 when the pool is empty).
    fn take(&self, want: usize) -> usize {
        let mut free = self.free.load(Ordering::Relaxed);
        loop {
            let taken = want.min(free);
            if taken == 0 {
                return 0;
            }
            match self.free.compare_exchange_weak(
                free,
                free - taken,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return taken,
                Err(now) => free = now,
            }
        }
    }

    fn give_back(&self, slots: usize) {
        if slots > 0 {
            self.free.fetch_add(slots, Ordering::AcqRel);
        }
    }
}

/// A connection's queued deliveries and the slots it holds borrowed. Kept under the queue's
/// lock; whoever changes the length settles the loan in the same critical section.
#[derive(Debug)]
pub(super) struct Slots<T> {
    items: VecDeque<T>,
    borrowed: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            borrowed: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Queues `item` if there is room: within `capacity`, or in slots borrowed from `pool`
    /// (borrowing more when the loan is used up). Gives `item` back when there is none.
    pub(super) fn push(&mut self, item: T, capacity: usize, pool: &SparePool) -> Result<(), T> {
        if self.items.len() >= capacity + self.borrowed {
            let want = pool.burst.saturating_sub(self.borrowed).min(CHUNK);
            self.borrowed += pool.take(want);
        }
        if self.items.len() < capacity + self.borrowed {
            self.items.push_back(item);
            Ok(())
        } else {
            Err(item)
        }
    }

    /// Takes the oldest item. The loan goes back once the queue is down to half its own
    /// capacity (not at once, so a queue near its capacity does not borrow and return a chunk
    /// per delivery).
    pub(super) fn pop(&mut self, capacity: usize, pool: &SparePool) -> Option<T> {
        let item = self.items.pop_front();
        if self.borrowed > 0 && self.items.len() <= capacity / 2 {
            pool.give_back(std::mem::take(&mut self.borrowed));
        }
        item
    }

    /// Empties the queue and returns its loan; the items are returned for dropping outside
    /// the lock.
    pub(super) fn clear(&mut self, pool: &SparePool) -> VecDeque<T> {
        pool.give_back(std::mem::take(&mut self.borrowed));
        std::mem::take(&mut self.items)
    }

    /// Lets go of a large empty buffer (an idle connection keeps at most `keep` slots).
    pub(super) fn shrink_if_empty(&mut self, keep: usize) {
        if self.items.is_empty() && self.items.capacity() > keep {
            self.items = VecDeque::new();
        }
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_borrows_up_to_its_limit_and_returns_the_loan() {
        let pool = SparePool::new(1_000, 300);
        let mut slots = Slots::default();
        for item in 0..310 {
            assert_eq!(slots.push(item, 10, &pool), Ok(()), "item {item}");
        }
        assert_eq!(
            slots.push(310, 10, &pool),
            Err(310),
            "10 own + 300 borrowed"
        );
        assert_eq!(pool.borrowed(), 300);
        // Draining to half its own capacity returns everything, in order.
        for expected in 0..305 {
            assert_eq!(slots.pop(10, &pool), Some(expected));
        }
        assert_eq!(pool.borrowed(), 0);
        assert_eq!(slots.len(), 5);
    }

    #[test]
    fn an_empty_pool_leaves_the_own_capacity() {
        let pool = SparePool::new(300, 1_000);
        let mut first = Slots::default();
        let mut second = Slots::default();
        for item in 0..310 {
            assert_eq!(first.push(item, 10, &pool), Ok(()));
        }
        // The first queue holds the whole pool: the second has its own 10 slots, no more.
        for item in 0..10 {
            assert_eq!(second.push(item, 10, &pool), Ok(()));
        }
        assert_eq!(second.push(10, 10, &pool), Err(10));
        // A cleared queue returns its loan, and the other may borrow it.
        assert_eq!(first.clear(&pool).len(), 310);
        assert_eq!(pool.borrowed(), 0);
        assert_eq!(second.push(10, 10, &pool), Ok(()));
        assert_eq!(pool.borrowed(), 256);
    }

    #[test]
    fn a_pool_of_nothing_is_the_old_bound() {
        let pool = SparePool::new(0, 15_360);
        let mut slots = Slots::default();
        for item in 0..4 {
            assert_eq!(slots.push(item, 4, &pool), Ok(()));
        }
        assert_eq!(slots.push(4, 4, &pool), Err(4));
    }
}
