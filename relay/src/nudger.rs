//! Tells every connection of the relay-wide changes its session looks at (PostgreSQL's
//! status, shutdown) by nudging its queue, so that a connection waits on its own queue alone.
//!
//! Why: a connection that waited on the status channel and the shutdown token as well put a
//! waiter into a list shared by every connection each time it waited, under that list's
//! lock, and took it out again when woken by a delivery. At 1,000 subscribers x 200 events/s
//! that was 5% of the relay's samples (`tokio::sync::notify`), on locks every core shared.
//! One task here waits on both instead, and a change costs one pass over the registry.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::pg::listener::PgStatus;

/// Starts the task on `tracker`: every change of `status`, and the cancellation of `token`,
/// nudges every connection registered on `bus`.
pub fn spawn(
    bus: Arc<Bus>,
    mut status: watch::Receiver<PgStatus>,
    token: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                changed = status.changed() => {
                    bus.registry().nudge_all();
                    if changed.is_err() {
                        // The listener ended (at shutdown): only the token is left to watch.
                        token.cancelled().await;
                        break;
                    }
                }
            }
        }
        bus.registry().nudge_all();
    });
}
