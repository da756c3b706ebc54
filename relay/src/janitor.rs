//! The janitor: applies retention (`tidewire.trim_all()`), expires temp streams
//! (`tidewire.expire_temp_streams()`, which notifies their subscribers) and forgets write ids
//! older than `--write-id-window-ms` (`tidewire.forget_writes`), every `janitor_interval`.
//! Several relays may run it at once; the SQL functions are idempotent.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Write ids deleted per statement: bounds each statement's locks and WAL.
pub const FORGET_BATCH: i32 = 1000;

/// Most batches of write ids deleted per sweep; the rest waits for the next sweep, so one
/// sweep after a long outage does not monopolise a connection.
pub const FORGET_BATCHES_PER_SWEEP: usize = 100;

/// The longest write id window the janitor applies, in milliseconds (a hundred years).
const CENTURY_MS: i64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// Starts the janitor task on `tracker`: a sweep every `interval` on `pool`, forgetting write
/// ids older than `write_id_window`, until `token` is cancelled.
pub fn spawn(
    pool: Pool,
    interval: Duration,
    write_id_window: Duration,
    token: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = sweep(&pool, write_id_window).await {
                tracing::debug!(error = %error, "janitor sweep failed; retrying next interval");
            }
        }
    });
}

/// One sweep: expire temp streams, trim every stream to its retention, then forget write ids
/// older than `write_id_window` in batches of [`FORGET_BATCH`].
///
/// # Errors
///
/// The query error, if PostgreSQL is unavailable.
pub async fn sweep(
    pool: &Pool,
    write_id_window: Duration,
) -> Result<(), crate::pg::outbox::OutboxError> {
    let client = pool.get().await?;
    let expired = client
        .query("select * from tidewire.expire_temp_streams()", &[])
        .await?;
    if !expired.is_empty() {
        tracing::info!(count = expired.len(), "expired temp streams");
    }
    client.execute("select tidewire.trim_all()", &[]).await?;
    // A century is forever for a write id, and keeps `now() - window` a valid timestamp.
    let window_ms = i64::try_from(write_id_window.as_millis())
        .unwrap_or(i64::MAX)
        .min(CENTURY_MS);
    let mut forgotten = 0;
    for _ in 0..FORGET_BATCHES_PER_SWEEP {
        let row = client
            .query_one(
                "select tidewire.forget_writes($1::bigint * interval '1 millisecond', $2)",
                &[&window_ms, &FORGET_BATCH],
            )
            .await?;
        let deleted: i64 = row.try_get(0)?;
        forgotten += deleted;
        if deleted < i64::from(FORGET_BATCH) {
            break;
        }
    }
    if forgotten > 0 {
        tracing::debug!(count = forgotten, "forgot write ids past the window");
    }
    Ok(())
}
