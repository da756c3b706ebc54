//! The hub: everything a connection needs, started once per relay (PostgreSQL, the query
//! pool, the bus, the listener, the janitor), shared by every transport as `Arc<Hub>`.

use std::num::NonZeroUsize;
use std::sync::Arc;

use deadpool_postgres::Pool;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::bus::{Bus, BusConfig};
use crate::config::Config;
use crate::pg::embedded::{EmbeddedConfig, EmbeddedPostgres};
use crate::pg::listener::{self, ListenerConfig, ListenerHandle};
use crate::pg::{outbox, pool, schema};

/// Errors that stop the relay from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The embedded cluster could not be started.
    #[error("embedded postgres")]
    Embedded(#[from] crate::pg::Error),
    /// PostgreSQL could not be reached or the schema could not be migrated.
    #[error("postgres")]
    Outbox(#[from] outbox::OutboxError),
    /// A configuration value is unusable.
    #[error("{0}")]
    Config(String),
    /// The LISTEN side could not start.
    #[error("listener")]
    Listener(#[from] listener::SpawnError),
    /// The reaper thread could not start.
    #[error("reaper thread")]
    Reaper(#[source] std::io::Error),
    /// A delivery thread could not start.
    #[error("delivery threads")]
    Cores(#[source] std::io::Error),
    /// Capture could not start (for example `--capture logical` without wal_level=logical).
    #[error("capture: {0}")]
    Capture(#[from] crate::pg::capture::CaptureError),
}

/// Shared relay state. Cloning the `Arc` is how transports get it.
#[derive(Debug)]
pub struct Hub {
    /// The configuration the relay runs with.
    pub config: Config,
    /// The fan-out bus and connection registry.
    pub bus: Arc<Bus>,
    /// The threads that serve connections (`--delivery-threads`: half the cores by default,
    /// none with 0).
    pub cores: crate::cores::Cores,
    /// The query pool (snapshots, replays, publishes).
    pub pool: Pool,
    /// Replay pages shared by sessions resuming the same range (`--replay-cache-bytes`).
    pub replay: crate::pg::replay_cache::ReplayCache,
    /// Snapshot pages shared by readers of the same page (`--snapshot-cache-bytes`).
    pub snapshots: crate::pg::snapshot::SnapshotCache,
    /// Where new snapshots start, shared within `--snapshot-share-ms`.
    pub snapshot_starts: crate::pg::snapshot::Starts,
    /// The LISTEN side.
    pub listener: ListenerHandle,
    /// This relay's id (random, shown in `connect` advisories and used for presence).
    pub relay_id: String,
    /// The epoch of raw channels on this relay (random per boot, below 2^53).
    pub boot_epoch: u64,
    /// Verifies tokens and origins.
    pub auth: Authenticator,
    /// Live counters and histograms for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Presence sets of every stream, shared across relays through PostgreSQL.
    pub presence: Arc<crate::presence::Presence>,
    /// Permits for client connections (WebSocket and SSE): `--max-connections`.
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the relay shuts down.
    pub token: CancellationToken,
    /// Every task of the relay, awaited on shutdown.
    pub tracker: TaskTracker,
    /// The embedded cluster, when the relay owns one; stopped when the hub is dropped.
    pub embedded: Option<tokio::sync::Mutex<EmbeddedPostgres>>,
    /// The connection string in use (the embedded cluster's, or DATABASE_URL).
    pub database_url: String,
    /// Drops what closed connections leave behind, off the runtime's workers.
    pub reaper: crate::reaper::Reaper,
    /// What capture of tracked tables is doing (mode, sequencer, slot lag).
    pub capture: Arc<crate::pg::capture::CaptureStatus>,
    /// `--crash-before-ack`: ends the process after the configured commit (inert at 0).
    pub crash_before_ack: crate::fault::CrashBeforeAck,
}

impl Hub {
    /// Starts PostgreSQL (embedded if no DATABASE_URL), migrates the schema, and starts the
    /// pool, bus, listener and janitor.
    ///
    /// # Errors
    ///
    /// [`StartError`] if PostgreSQL cannot be started or reached, or the schema migrated.
    pub async fn start(
        config: Config,
        token: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Arc<Self>, StartError> {
        let options = &config.options;
        let (embedded, database_url) = match &options.database_url {
            Some(url) => (None, url.clone()),
            None => {
                let mut embedded_config = EmbeddedConfig::default();
                if let Some(dir) = &options.data_dir {
                    embedded_config = embedded_config.with_data_dir(dir);
                }
                let cluster = EmbeddedPostgres::launch(embedded_config).await?;
                tracing::info!(
                    data_dir = %cluster.data_dir().display(),
                    port = cluster.port(),
                    "embedded postgres running"
                );
                let url = cluster.connection_string();
                (Some(tokio::sync::Mutex::new(cluster)), url)
            }
        };
        schema::migrate_database(&database_url, config.pg_timeout()).await?;
        let pool = pool::build(&database_url, options.pg_pool_size, config.pg_timeout())?;
        let capacity =
            NonZeroUsize::new(options.queue_capacity).unwrap_or(BusConfig::DEFAULT_QUEUE_CAPACITY);
        let bus = Arc::new(Bus::new(
            BusConfig::default()
                .with_queue_capacity(capacity)
                .with_spare(options.queue_spare, options.queue_burst)
                .with_shards(options.delivery_threads),
        ));
        let cores = crate::cores::Cores::start(&bus).map_err(StartError::Cores)?;
        let boot_epoch = rand::thread_rng().gen_range(1..(1u64 << 53));
        let relay_id = format!("{:08x}", rand::thread_rng().gen::<u32>());
        let listener = listener::spawn(
            ListenerConfig {
                database_url: database_url.clone(),
                health_interval: config.pg_health_interval(),
                timeout: config.pg_timeout(),
                poll_interval: config.outbox_poll(),
                reconnect_max: config.pg_reconnect_max(),
                replay_page: options.replay_page,
                boot_epoch,
            },
            Arc::clone(&bus) as Arc<dyn listener::Fanout>,
            token.clone(),
            &tracker,
        )?;
        let auth = Authenticator::from_config(&config).map_err(StartError::Config)?;
        let connections = Arc::new(tokio::sync::Semaphore::new(config.options.max_connections));
        let presence = Arc::new(crate::presence::Presence::new(
            relay_id.clone(),
            pool.clone(),
            Arc::clone(&bus),
        ));
        presence.spawn(listener.presence(), token.clone(), &tracker);
        let replay = crate::pg::replay_cache::ReplayCache::new(
            config.options.replay_page,
            config.options.replay_cache_bytes,
        );
        let snapshots =
            crate::pg::snapshot::SnapshotCache::new(config.options.snapshot_cache_bytes);
        let snapshot_starts = crate::pg::snapshot::Starts::new(std::time::Duration::from_millis(
            config.options.snapshot_share_ms,
        ));
        let reaper = crate::reaper::Reaper::spawn().map_err(StartError::Reaper)?;
        let capture = Arc::new(crate::pg::capture::CaptureStatus::default());
        crate::pg::capture::start(
            config.capture(&database_url),
            Arc::clone(&capture),
            pool.clone(),
            token.clone(),
            &tracker,
        )
        .await?;
        let crash_before_ack = crate::fault::CrashBeforeAck::new(options.crash_before_ack);
        let hub = Arc::new(Self {
            crash_before_ack,
            capture,
            reaper,
            config,
            bus,
            cores,
            pool,
            replay,
            snapshots,
            snapshot_starts,
            listener,
            relay_id,
            boot_epoch,
            auth,
            presence,
            metrics: Arc::default(),
            connections,
            token,
            tracker,
            embedded,
            database_url,
        });
        crate::nudger::spawn(
            Arc::clone(&hub.bus),
            hub.listener.status(),
            hub.token.clone(),
            &hub.tracker,
        );
        crate::janitor::spawn(
            hub.pool.clone(),
            hub.config.janitor_interval(),
            hub.config.write_id_window(),
            hub.token.clone(),
            &hub.tracker,
        );
        Ok(hub)
    }

    /// Stops the embedded cluster, if any (fast shutdown). Call after every task ended.
    pub async fn stop_embedded(&self) {
        if let Some(embedded) = &self.embedded {
            let mut cluster = embedded.lock().await;
            if let Err(error) = cluster.stop(crate::pg::embedded::StopMode::Fast).await {
                tracing::warn!(error = %error, "stopping the embedded postgres failed");
            }
        }
    }
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrated {
    /// The schema of `DATABASE_URL` is at this version.
    Version(u32),
    /// The embedded cluster was started (which migrates it) and stopped again.
    Embedded,
}

/// `tidewire-relay migrate`: brings the `tidewire` schema up to date and returns. On
/// `DATABASE_URL` one connection migrates it (safe when several relays start at once);
/// without one, the embedded cluster is started, migrated and stopped.
///
/// # Errors
///
/// [`StartError`] if PostgreSQL cannot be reached or started, or a migration fails.
pub async fn migrate(config: Config) -> Result<Migrated, StartError> {
    if let Some(url) = config.options.database_url.clone() {
        let version = crate::pg::schema::migrate_database(&url, config.pg_timeout()).await?;
        return Ok(Migrated::Version(version));
    }
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let hub = Hub::start(config, token.clone(), tracker.clone()).await?;
    token.cancel();
    tracker.close();
    tracker.wait().await;
    hub.stop_embedded().await;
    Ok(Migrated::Embedded)
}
