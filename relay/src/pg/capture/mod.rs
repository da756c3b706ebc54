//! Capture of tracked tables through logical replication (`--capture`), next to the trigger
//! path in `sql/functions/track.sql`.
//!
//! Every relay resolves the mode at start. In logical mode one relay at a time is the
//! sequencer: it holds a session advisory lock ([`SEQUENCER_LOCK_KEY`]) on a connection of
//! its own, prepares the publication and slot, and runs the [`sequencer`] loop; the others
//! retry the lock every `--capture-election-ms` and take over within about that long after
//! the sequencer's session ends. Every relay serves clients from the outbox either way.
//!
//! | file | what |
//! |---|---|
//! | `pgoutput.rs` | decoding pgoutput messages |
//! | `route.rs` | a row change to stream events, by the tracked definition |
//! | `convert.rs` | row images to the JSON `to_jsonb` gives, in PostgreSQL |
//! | `writer.rs` | batches into the outbox, fenced by the durable position |
//! | `sequencer.rs` | the loop: read, route, batch, confirm |
//! | `setup.rs` | mode, publication, slot, switches, health |
//! | `status.rs` | what `/metrics` and `/readyz` show |

mod convert;
mod pgoutput;
mod route;
mod sequencer;
mod setup;
mod status;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgwire_replication::{ReplicationClient, ReplicationConfig};
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use setup::CaptureMode;
pub use status::{CaptureSnapshot, CaptureStatus};

use super::pool::connection_config;

/// Key of the session advisory lock that makes a relay the sequencer (`"twcaptur"`).
pub const SEQUENCER_LOCK_KEY: i64 = 0x7477_6361_7074_7572;

/// Key of the advisory lock held while a relay prepares or switches the capture mode
/// (`"twcapset"`), so relays starting together do it one at a time.
pub const SETUP_LOCK_KEY: i64 = 0x7477_6361_7073_6574;

/// Interval of the slot health check (lag, stale slots) on every relay in logical mode.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// Why capture failed or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// A query failed (PostgreSQL restarting, a lost connection).
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The replication session failed.
    #[error("replication: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    /// A pgoutput message or a position did not make sense.
    #[error("replication protocol: {0}")]
    Protocol(String),
    /// A tracked definition no longer fits its table; capture waits until it is fixed.
    #[error("halted: {reason}")]
    Halt {
        /// What does not fit.
        reason: String,
        /// The commit LSN of the source transaction that could not be written.
        at: u64,
    },
    /// `--capture logical` on a server that cannot do it.
    #[error("logical capture is not available: {0}")]
    Unavailable(String),
    /// The slot has no durable position (setup did not run).
    #[error("no durable position for slot {0}")]
    NotPrepared(String),
    /// Another sequencer moved the durable position: this one must stop.
    #[error("the durable position moved under this sequencer (another relay took over)")]
    Fenced,
    /// The replication session ended.
    #[error("the replication session ended")]
    Ended,
    /// The lock session ended.
    #[error("lost the sequencer lock's session")]
    LockLost,
    /// `--capture-crash-after-batches` stopped the sequencer between commit and confirmation.
    #[error("injected crash after {0} batches, before confirming the last one")]
    InjectedCrash(u64),
    /// The connection string cannot be used for replication.
    #[error("{0}")]
    Config(String),
    /// Converting row images failed.
    #[error("{0}")]
    Convert(String),
}

/// How capture runs (from the relay's flags).
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// `--capture`.
    pub mode: CaptureMode,
    /// The database.
    pub database_url: String,
    /// `--capture-slot`: replication slot name.
    pub slot: String,
    /// Connect and query timeout.
    pub timeout: Duration,
    /// `--capture-election-ms`: how often a standby retries the sequencer lock.
    pub election_interval: Duration,
    /// `--capture-chunk-rows`.
    pub chunk_rows: usize,
    /// `--capture-batch-rows`.
    pub batch_rows: usize,
    /// `--capture-crash-after-batches` (0: never).
    pub crash_after_batches: u64,
}

/// Resolves the mode (logging the choice) and starts the capture tasks on `tracker`.
///
/// # Errors
///
/// [`CaptureError::Unavailable`] for `--capture logical` on a server without logical
/// replication; [`CaptureError::Db`] when PostgreSQL cannot be asked.
pub async fn start(
    config: CaptureConfig,
    status: Arc<CaptureStatus>,
    pool: deadpool_postgres::Pool,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), CaptureError> {
    let client = connect(&config, "tidewire-capture").await?;
    let (logical, reason) = setup::resolve(&client, config.mode).await?;
    // The database follows the mode before the relay serves: a track_table call made once
    // the relay is up installs triggers or joins the publication as the mode says.
    client
        .execute("select pg_advisory_lock($1)", &[&SETUP_LOCK_KEY])
        .await?;
    let prepared = if logical {
        setup::prepare_logical(&client, &config.slot).await
    } else {
        setup::switch_to_trigger(&client).await
    };
    client
        .execute("select pg_advisory_unlock($1)", &[&SETUP_LOCK_KEY])
        .await?;
    prepared?;
    drop(client);
    tracing::info!(mode = %reason, slot = %config.slot, "capture mode");
    status.set_mode(logical, reason);
    if logical {
        tracker.spawn(monitor(
            config.clone(),
            Arc::clone(&status),
            pool,
            token.clone(),
        ));
    }
    tracker.spawn(supervise(config, logical, status, token));
    Ok(())
}

async fn connect(
    config: &CaptureConfig,
    application_name: &str,
) -> Result<tokio_postgres::Client, CaptureError> {
    let pg = connection_config(&config.database_url, application_name, config.timeout)
        .map_err(|error| CaptureError::Config(error.to_string()))?;
    let (client, connection) = pg.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs for the relay's life: stands for election, leads while elected, stands again.
async fn supervise(
    config: CaptureConfig,
    logical: bool,
    status: Arc<CaptureStatus>,
    token: CancellationToken,
) {
    let mut backoff =
        tidewire_shared::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !token.is_cancelled() {
        let elections = status.snapshot().elections;
        let result = lead(&config, logical, &status, &token).await;
        status.set_sequencer(false);
        if status.snapshot().elections > elections {
            // It led for a while: the next failure is a new one, not a repeat.
            backoff.reset();
        }
        match result {
            Ok(Done::Stopped) => return,
            Ok(Done::Drained) => {
                status.set_halted(None);
                return;
            }
            Err(CaptureError::Halt { reason, at }) => {
                tracing::error!(%reason, "capture halted; retrying in a few seconds");
                // Cleared when a batch past `at` commits, not by the next election: the
                // retry halts at the same row until the definition is fixed.
                status.set_halted(Some((reason, at)));
            }
            Err(error) => {
                tracing::warn!(%error, "capture: sequencer stopped; standing for election again");
            }
        }
        let delay = backoff
            .next_delay(rand::random())
            .unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// How a term as sequencer ended without error.
enum Done {
    /// The relay is shutting down.
    Stopped,
    /// Trigger mode: the slot was drained and dropped; nothing more to do.
    Drained,
}

async fn lead(
    config: &CaptureConfig,
    logical: bool,
    status: &Arc<CaptureStatus>,
    token: &CancellationToken,
) -> Result<Done, CaptureError> {
    let pg = connection_config(
        &config.database_url,
        "tidewire-sequencer-lock",
        config.timeout,
    )
    .map_err(|error| CaptureError::Config(error.to_string()))?;
    let (lock, connection) = pg.connect(NoTls).await?;
    let lost = token.child_token();
    let lost_on_end = lost.clone();
    let session = tokio::spawn(async move {
        let _ = connection.await;
        lost_on_end.cancel();
    });
    let _abort = AbortOnDrop(session);
    loop {
        let won: bool = lock
            .query_one("select pg_try_advisory_lock($1)", &[&SEQUENCER_LOCK_KEY])
            .await?
            .try_get(0)?;
        if won {
            break;
        }
        if !logical {
            // Trigger mode needs a sequencer only to drain a slot left by logical mode;
            // the relay holding the lock does that.
            return Ok(Done::Drained);
        }
        tokio::select! {
            () = token.cancelled() => return Ok(Done::Stopped),
            () = lost.cancelled() => return Err(CaptureError::LockLost),
            () = tokio::time::sleep(config.election_interval) => {}
        }
    }
    let elected = Instant::now();
    if !logical {
        let Some(target) = setup::drain_target(&lock, &config.slot).await? else {
            return Ok(Done::Drained);
        };
        let sequencer = open(config, status).await?;
        sequencer.run(&lost, Some(target)).await?;
        setup::drop_slot(&lock, &config.slot).await?;
        return Ok(Done::Drained);
    }
    // Again as sequencer: a slot lost since the relay started is replaced here.
    lock.execute("select pg_advisory_lock($1)", &[&SETUP_LOCK_KEY])
        .await?;
    let prepared = setup::prepare_logical(&lock, &config.slot).await;
    lock.execute("select pg_advisory_unlock($1)", &[&SETUP_LOCK_KEY])
        .await?;
    prepared?;
    let sequencer = open(config, status).await?;
    status.set_sequencer(true);
    status.set_failover(u64::try_from(elected.elapsed().as_millis()).unwrap_or(u64::MAX));
    tracing::info!(slot = %config.slot, "capture: this relay is the sequencer");
    sequencer.run(&lost, None).await?;
    if token.is_cancelled() {
        Ok(Done::Stopped)
    } else {
        Err(CaptureError::LockLost)
    }
}

/// Aborts a task when dropped (the lock session's driver).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A sequencer on a new writer connection and replication session.
async fn open<'a>(
    config: &CaptureConfig,
    status: &'a Arc<CaptureStatus>,
) -> Result<sequencer::Sequencer<'a>, CaptureError> {
    let writer = writer::Writer::new(
        connect(config, "tidewire-sequencer").await?,
        config.slot.clone(),
    )
    .await?;
    let durable = writer.position().await?;
    let repl =
        ReplicationClient::connect(replication_config(config)?.with_ack_lsn(durable)).await?;
    sequencer::Sequencer::new(
        repl,
        connect(config, "tidewire-sequencer-read").await?,
        writer,
        durable,
        status,
        sequencer::Limits {
            chunk_rows: config.chunk_rows,
            batch_rows: config.batch_rows,
        },
        config.crash_after_batches,
    )
    .await
}

/// The replication session's settings, from the connection string.
fn replication_config(config: &CaptureConfig) -> Result<ReplicationConfig, CaptureError> {
    let pg: tokio_postgres::Config = config
        .database_url
        .parse()
        .map_err(|error: tokio_postgres::Error| CaptureError::Config(error.to_string()))?;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or("postgres").to_owned();
    let password = pg
        .get_password()
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_default();
    let database = pg.get_dbname().unwrap_or(user.as_str()).to_owned();
    let publication = "tidewire";
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        config.slot.clone(),
        publication,
    )
    .with_port(port)
    .with_status_interval(Duration::from_millis(200))
    .with_wakeup_interval(Duration::from_secs(1))
    .with_buffer_size(4096))
}

/// Every relay in logical mode: the slot's lag and stale slots into the status, every few
/// seconds.
async fn monitor(
    config: CaptureConfig,
    status: Arc<CaptureStatus>,
    pool: deadpool_postgres::Pool,
    token: CancellationToken,
) {
    let mut reported: Vec<String> = Vec::new();
    let mut ticks = tokio::time::interval(HEALTH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Ok(client) = pool.get().await else {
            continue;
        };
        match setup::health(&client, &config.slot).await {
            Ok((bytes, millis, stale, lost)) => {
                status.set_lag(bytes, millis);
                status.set_stale_slots(stale.len() as u64);
                if stale != reported {
                    if !stale.is_empty() {
                        tracing::warn!(slots = ?stale, "capture: inactive replication slots named tidewire* hold WAL (left by another deployment?); drop them with pg_drop_replication_slot if unused");
                    }
                    reported = stale;
                }
                if lost {
                    tracing::error!(slot = %config.slot, "capture: the replication slot is invalidated; the sequencer will replace it and resync tracked streams");
                }
            }
            Err(error) => tracing::debug!(%error, "capture: health check failed"),
        }
    }
}
