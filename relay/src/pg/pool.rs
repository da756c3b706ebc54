//! The query pool: a few PostgreSQL connections for snapshots, replays and publishes.
//!
//! The LISTEN connection is separate (see [`super::listener`]): notifications must never wait
//! behind a long snapshot query, and a pooled connection is never left listening.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::outbox::OutboxError;

/// Parses `database_url` and applies the relay's connection settings: a connect timeout, TCP
/// keepalives (so a dead server is noticed even when idle) and an `application_name` that
/// shows up in `pg_stat_activity`.
///
/// # Errors
///
/// [`OutboxError::Config`] if the URL does not parse.
pub fn connection_config(
    database_url: &str,
    application_name: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Config, OutboxError> {
    let mut config: tokio_postgres::Config = database_url
        .parse()
        .map_err(|error: tokio_postgres::Error| OutboxError::Config(error.to_string()))?;
    config
        .application_name(application_name)
        .connect_timeout(timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    Ok(config)
}

/// Builds the query pool of `size` connections. Connections are opened lazily and replaced
/// when PostgreSQL restarts (each is checked before reuse).
///
/// # Errors
///
/// [`OutboxError::Config`] if the URL does not parse or the pool cannot be built.
pub fn build(database_url: &str, size: usize, timeout: Duration) -> Result<Pool, OutboxError> {
    let config = connection_config(database_url, "tidewire-relay", timeout)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        // Waiting for a free connection is not a failure of PostgreSQL: a subscribe storm
        // queues here, so this wait is much longer than the connect timeout.
        .wait_timeout(Some(
            timeout.saturating_mul(10).max(Duration::from_secs(30)),
        ))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|error| OutboxError::Config(error.to_string()))
}
