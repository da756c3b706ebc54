//! The janitor: applies retention (`tidewire.trim_all()`) and expires temp streams
//! (`tidewire.expire_temp_streams()`, which notifies their subscribers) every
//! `janitor_interval`. Several relays may run it at once; the SQL functions are idempotent.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Starts the janitor task on `tracker`: a sweep every `interval` on `pool`, until `token`
/// is cancelled.
pub fn spawn(pool: Pool, interval: Duration, token: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = sweep(&pool).await {
                tracing::debug!(error = %error, "janitor sweep failed; retrying next interval");
            }
        }
    });
}

/// One sweep: expire temp streams, then trim every stream to its retention.
///
/// # Errors
///
/// The query error, if PostgreSQL is unavailable.
pub async fn sweep(pool: &Pool) -> Result<(), crate::pg::outbox::OutboxError> {
    let client = pool.get().await?;
    let expired = client
        .query("select * from tidewire.expire_temp_streams()", &[])
        .await?;
    if !expired.is_empty() {
        tracing::info!(count = expired.len(), "expired temp streams");
    }
    client.execute("select tidewire.trim_all()", &[]).await?;
    Ok(())
}
