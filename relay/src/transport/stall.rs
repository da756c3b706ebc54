//! A write's stall deadline, armed only when the write has to wait.
//!
//! Nearly every socket write finishes at its first poll. Making a timer for each cost a clone
//! of the runtime's handle (a reference count every core shares) and a clock read: with one
//! event per transaction to 1,000 subscribers, `Handle::current`, the clock and the timeout
//! were 3% of the relay's samples (`perf`, 200,000 deliveries/s).

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::error::Elapsed;

/// Awaits `future`, failing with [`Elapsed`] if it does not finish within `limit` of the
/// moment it first had to wait.
pub(crate) async fn within<F: Future>(limit: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    if let Some(output) = future.as_mut().now_or_never() {
        return Ok(output);
    }
    tokio::time::timeout(limit, future).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ready_future_needs_no_timer_and_a_waiting_one_gets_its_deadline() {
        assert_eq!(within(Duration::ZERO, async { 7 }).await, Ok(7));
        let started = tokio::time::Instant::now();
        let stalled = within(Duration::from_secs(10), std::future::pending::<()>()).await;
        assert!(stalled.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // A future that waits once, then finishes, finishes.
        let mut waited = false;
        let once = std::future::poll_fn(|context| {
            if waited {
                std::task::Poll::Ready("done")
            } else {
                waited = true;
                context.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        });
        assert_eq!(within(Duration::from_secs(1), once).await, Ok("done"));
    }
}
