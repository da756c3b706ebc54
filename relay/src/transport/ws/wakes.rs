//! Whether the socket or the timer may have something, so that a wake-up for a delivery polls
//! the session alone. With `select!` every wake-up polled the socket's read half (its
//! readiness and `tokio::io::split`'s lock) and the timer as well, though nearly every one at a
//! fixed rate is a delivery: about 5% of the relay's samples at 1,000 subscribers x 200
//! events/s.
//!
//! The read half and the timer are polled with a waker of their own, which marks them and
//! wakes the task. They are polled again only when marked, or when the last poll of either
//! was ready (a read may leave whole frames in the reader's buffer, which no wake-up will
//! announce). The session is polled with the task's own waker at every turn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The mark and the task to wake, shared with the waker the read half and the timer hold.
#[derive(Debug, Default)]
struct Shared {
    marked: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.marked.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One connection's mark (see the module's docs). Starts marked: nothing has been polled yet.
#[derive(Debug)]
pub(super) struct Wakes {
    shared: Arc<Shared>,
    waker: Waker,
}

impl Wakes {
    pub(super) fn new() -> Self {
        let shared = Arc::new(Shared {
            marked: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&shared));
        Self { shared, waker }
    }

    /// Whether the socket and the timer are to be polled at this turn (the mark is taken).
    /// A plain load when they are not, as at nearly every turn under load.
    pub(super) fn take(&self) -> bool {
        self.shared.marked.load(Ordering::Acquire)
            && self.shared.marked.swap(false, Ordering::AcqRel)
    }

    /// Before the task parks: points their waker at the task polling now, then tells whether
    /// they were marked meanwhile (then the turn goes on instead of parking). Registered
    /// before the look, so that no wake is lost between the two.
    pub(super) fn park(&self, cx: &Context<'_>) -> bool {
        self.shared.task.register(cx.waker());
        self.shared.marked.load(Ordering::Acquire)
    }

    /// Marks them again: one of them was ready, or the timer was moved.
    pub(super) fn mark(&self) {
        self.shared.marked.store(true, Ordering::Release);
    }

    /// The context to poll the socket and the timer with.
    pub(super) fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting_waker::CountingWaker;

    #[test]
    fn a_mark_is_taken_once_and_a_wake_marks_and_wakes_the_task() {
        let (count, task) = CountingWaker::new();
        let cx = Context::from_waker(&task);
        let wakes = Wakes::new();
        assert!(wakes.take(), "the first turn polls everything");
        assert!(!wakes.take(), "nothing woke the socket or the timer since");
        assert!(!wakes.park(&cx), "nothing to poll: the task may park");
        wakes.context().waker().wake_by_ref();
        assert_eq!(count.count(), 1, "the parked task is woken");
        assert!(wakes.take());
        assert!(!wakes.take());
        wakes.mark();
        assert!(wakes.park(&cx), "marked before parking: the turn goes on");
        assert!(wakes.take(), "a mark by hand is taken like a wake");
    }
}
