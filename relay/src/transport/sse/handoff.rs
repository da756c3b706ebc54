//! A one-slot handoff between an SSE connection's task and its response body: the task puts a
//! chunk in the slot once the body has taken the previous one, and either side learns when the
//! other is gone.
//!
//! It replaces tokio's bounded `mpsc` channel of capacity 1, which allocated 1.3 KB per
//! connection for as long as the connection lived (its cache-padded state and a first block of
//! 32 slots; heaptrack, 2,000 idle SSE connections). This is one allocation of about 130 bytes:
//! an idle SSE connection went from 21.1 to 19.9 KiB. (`async-channel`'s bounded channel cannot
//! wait until the last value is taken, which the connection's last words need.)

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Creates a handoff: the task's end and the body's end.
pub(super) fn handoff<T>() -> (Giver<T>, Taker<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(None),
        giver_gone: AtomicBool::new(false),
        taker_gone: AtomicBool::new(false),
        room_waker: AtomicWaker::new(),
        gone_waker: AtomicWaker::new(),
        taker_waker: AtomicWaker::new(),
    });
    (Giver(Arc::clone(&shared)), Taker(shared))
}

#[derive(Debug)]
struct Shared<T> {
    slot: Mutex<Option<T>>,
    /// The task dropped its end: the body ends once the slot is empty.
    giver_gone: AtomicBool,
    /// The body was dropped (the client is gone): nothing will be taken any more.
    taker_gone: AtomicBool,
    /// The task, waiting for the slot to empty (`give`, `taken`).
    room_waker: AtomicWaker,
    /// The task, waiting for the body to go. Apart from `room_waker` so that a task that only
    /// watches for the client leaving (an idle connection's loop) is not woken by every take.
    gone_waker: AtomicWaker,
    /// The body, waiting for a chunk or the task to go.
    taker_waker: AtomicWaker,
}

impl<T> Shared<T> {
    fn slot(&self) -> MutexGuard<'_, Option<T>> {
        // Every critical section is one `take` or `replace`: a poisoned lock still guards a
        // consistent slot.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The body is gone: what was given is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gone;

/// The task's end.
#[derive(Debug)]
pub(super) struct Giver<T>(Arc<Shared<T>>);

impl<T> Giver<T> {
    /// Waits until the slot is empty, then puts `value` in it.
    pub(super) async fn give(&self, value: T) -> Result<(), Gone> {
        loop {
            self.taken().await;
            if self.is_closed() {
                return Err(Gone);
            }
            let mut slot = self.0.slot();
            if slot.is_none() {
                *slot = Some(value);
                drop(slot);
                self.0.taker_waker.wake();
                return Ok(());
            }
        }
    }

    /// Waits until the body has taken what was given last (or is gone).
    pub(super) async fn taken(&self) {
        let wakers = [&self.0.room_waker, &self.0.gone_waker];
        self.wait_until(|giver| giver.is_closed() || giver.has_room(), &wakers)
            .await;
    }

    /// Waits until the body is gone.
    pub(super) async fn closed(&self) {
        self.wait_until(Self::is_closed, &[&self.0.gone_waker])
            .await;
    }

    /// Whether the body is gone.
    pub(super) fn is_closed(&self) -> bool {
        self.0.taker_gone.load(Ordering::Acquire)
    }

    fn has_room(&self) -> bool {
        self.0.slot().is_none()
    }

    /// Waits until `ready` holds, registered with `wakers`: the body wakes `room_waker` after
    /// each take and both when it is dropped.
    async fn wait_until(&self, ready: impl Fn(&Self) -> bool, wakers: &[&AtomicWaker]) {
        poll_fn(|context| {
            if ready(self) {
                return Poll::Ready(());
            }
            for waker in wakers {
                waker.register(context.waker());
            }
            // A last look: a change between the first look and the registration woke no one.
            if ready(self) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl<T> Drop for Giver<T> {
    fn drop(&mut self) {
        self.0.giver_gone.store(true, Ordering::Release);
        self.0.taker_waker.wake();
    }
}

/// The body's end.
#[derive(Debug)]
pub(super) struct Taker<T>(Arc<Shared<T>>);

impl<T> Taker<T> {
    /// The next value, `None` once the task is gone and the slot is empty, or pending with the
    /// body registered to be woken.
    pub(super) fn poll_take(&mut self, context: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(taken) = self.try_take() {
            return Poll::Ready(taken);
        }
        self.0.taker_waker.register(context.waker());
        // A value given, or the task gone, between the look and the registration woke no one.
        match self.try_take() {
            Some(taken) => Poll::Ready(taken),
            None => Poll::Pending,
        }
    }

    /// What `poll_take` would return now, `None` if it would wait.
    fn try_take(&mut self) -> Option<Option<T>> {
        // Read before the slot: a task that gave its last value and then went is seen with
        // that value still in the slot.
        let giver_gone = self.0.giver_gone.load(Ordering::Acquire);
        if let Some(value) = self.0.slot().take() {
            self.0.room_waker.wake();
            return Some(Some(value));
        }
        giver_gone.then_some(None)
    }
}

impl<T> Drop for Taker<T> {
    fn drop(&mut self) {
        self.0.taker_gone.store(true, Ordering::Release);
        // What was given and not taken goes now, not when the task lets go of its end.
        drop(self.0.slot().take());
        self.0.room_waker.wake();
        self.0.gone_waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use crate::counting_waker::CountingWaker;

    /// Runs `wait` as a task, which must not finish while the slot holds `held`; takes `held`
    /// and returns what `wait` returns once the take has let it finish.
    async fn until_taken<R: Send + 'static>(
        taker: &mut Taker<u32>,
        context: &mut Context<'_>,
        held: u32,
        wait: impl std::future::Future<Output = R> + Send + 'static,
    ) -> R {
        let wait = tokio::spawn(wait);
        tokio::task::yield_now().await;
        assert!(
            !wait.is_finished(),
            "{held} in the slot holds the giver back"
        );
        assert_eq!(taker.poll_take(context), Poll::Ready(Some(held)));
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("the take ends the wait")
            .expect("the task ran")
    }

    #[tokio::test]
    async fn values_pass_one_at_a_time_in_order_and_end_when_the_giver_goes() {
        let (giver, mut taker) = handoff::<u32>();
        let (wakes, waker) = CountingWaker::new();
        let mut context = Context::from_waker(&waker);
        assert!(taker.poll_take(&mut context).is_pending());
        giver.give(1).await.expect("the body is there");
        assert_eq!(wakes.count(), 1, "a give wakes the body");

        // The slot is full: the second give waits until the body takes the first.
        let give = async move {
            giver.give(2).await.expect("the body is there");
            giver
        };
        let giver = until_taken(&mut taker, &mut context, 1, give).await;
        // `taken` waits for the body to take the last value.
        let taken = async move {
            giver.taken().await;
            giver
        };
        let giver = until_taken(&mut taker, &mut context, 2, taken).await;

        giver.give(3).await.expect("the body is there");
        drop(giver);
        assert_eq!(
            taker.poll_take(&mut context),
            Poll::Ready(Some(3)),
            "what was given before the giver went is still taken"
        );
        assert_eq!(taker.poll_take(&mut context), Poll::Ready(None));
    }

    #[tokio::test]
    async fn a_task_watching_for_the_body_to_go_is_not_woken_by_takes() {
        let (giver, mut taker) = handoff::<u32>();
        giver.give(1).await.expect("the body is there");
        let (wakes, waker) = CountingWaker::new();
        let mut context = Context::from_waker(&waker);
        let mut closed = std::pin::pin!(giver.closed());
        assert!(closed.as_mut().poll(&mut context).is_pending());
        let (_, body_waker) = CountingWaker::new();
        assert_eq!(
            taker.poll_take(&mut Context::from_waker(&body_waker)),
            Poll::Ready(Some(1))
        );
        assert_eq!(wakes.count(), 0, "a take is not the body going");
        drop(taker);
        assert_eq!(wakes.count(), 1, "the body going wakes it");
        assert!(closed.as_mut().poll(&mut context).is_ready());
    }

    #[tokio::test]
    async fn the_giver_learns_when_the_body_is_gone() {
        let (giver, taker) = handoff::<u32>();
        giver.give(1).await.expect("the body is there");
        let closed = tokio::spawn(async move {
            giver.closed().await;
            giver
        });
        tokio::task::yield_now().await;
        assert!(!closed.is_finished());
        drop(taker);
        let giver = tokio::time::timeout(std::time::Duration::from_secs(10), closed)
            .await
            .expect("dropping the body wakes the giver")
            .expect("the task ran");
        assert!(giver.is_closed());
        assert_eq!(giver.give(2).await, Err(Gone));
        // `taken` does not wait for a body that is gone.
        giver.taken().await;
    }
}
