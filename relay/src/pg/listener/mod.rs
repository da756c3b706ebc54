//! The LISTEN side of the relay: one dedicated PostgreSQL connection that turns notifications
//! into bus deliveries, in seq order, without losing durable events.
//!
//! # What it guarantees
//!
//! * **Durable streams** (channel `tw:<name>`): for every listened stream the listener knows
//!   the last seq it handed to the bus and only ever hands over the next one. An inline event
//!   that is exactly next goes straight to the bus; a pointer, a gap, a bad payload, a periodic
//!   head poll (every `outbox_poll`) or a reconnect reads the missing events from the outbox in
//!   pages. NOTIFY is only the doorbell, so a lost notification delays an event, never loses it.
//! * **Raw channels** (`raw:<channel>`): each notification is stamped with a relay-local seq
//!   and the relay's boot epoch. There is no history to replay, so after a lost connection
//!   every raw subscriber gets a `gap` advisory.
//! * **Health**: a liveness query every `health_interval` with a timeout, plus TCP keepalives.
//!   On failure the connection is dropped and re-established with exponential backoff and
//!   full jitter; every channel is listened again and durable streams are caught up.
//!   [`PgStatus`] tells sessions so they can send `disconnect` / `reconnect` advisories.
//!
//! LISTEN is reference counted by the bus's registry (through [`Fanout`]): a session asks
//! [`ListenerHandle::ensure_listening`] before reading a baseline (so nothing committed after
//! the baseline can be missed), and [`ListenerHandle::release`] when the last subscriber left;
//! the listener re-checks the subscriber count before it UNLISTENs, so the two never race.

mod connection;
mod fanout;
mod state;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tidewire_shared::backoff::Backoff;
use tidewire_shared::notify::NotifyPayload;
use tidewire_shared::StreamName;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::connection::ListenConnection;
pub use self::fanout::Fanout;
use self::state::{Lost, Streams};
pub use self::stats::{ListenerStats, ListenerStatsSnapshot};

/// Whether the relay's LISTEN connection is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgStatus {
    /// Connecting for the first time.
    Connecting,
    /// Connected and listening.
    Up,
    /// Lost; reconnecting. `reason` says what failed.
    Down {
        /// What failed.
        reason: String,
    },
}

/// Settings of the listener. Defaults come from [`crate::config::Options`].
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The connection string.
    pub database_url: String,
    /// Interval of the liveness query.
    pub health_interval: Duration,
    /// Timeout of the liveness query and of connecting.
    pub timeout: Duration,
    /// Interval of the head poll of listened durable streams.
    pub poll_interval: Duration,
    /// Largest reconnect backoff.
    pub reconnect_max: Duration,
    /// Events per outbox read.
    pub replay_page: usize,
    /// Epoch stamped on raw-channel events: the relay's boot id.
    pub boot_epoch: u64,
}

/// Why [`ListenerHandle::ensure_listening`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The listener is not connected to PostgreSQL (or stopped).
    #[error("postgres is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug)]
enum Command {
    Listen {
        stream: StreamName,
        done: oneshot::Sender<Result<(), ListenError>>,
    },
    Release {
        stream: StreamName,
    },
}

/// The handle sessions use to talk to the listener. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ListenerHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<PgStatus>,
    stats: Arc<ListenerStats>,
    presence: broadcast::Sender<NotifyPayload>,
    timeout: Duration,
    /// The last relay-local seq stamped on each raw channel (written by the listener task,
    /// read by sessions resuming a raw channel). Locked briefly, never across an await.
    raw_heads: Arc<std::sync::Mutex<std::collections::HashMap<StreamName, u64>>>,
}

impl ListenerHandle {
    /// Makes sure the listener listens on `stream`'s channel and knows its head, waiting until
    /// it does. Call it *after* subscribing in the registry and *before* reading a baseline.
    ///
    /// # Errors
    ///
    /// [`ListenError::Unavailable`] if PostgreSQL cannot be reached within twice the timeout.
    pub async fn ensure_listening(&self, stream: &StreamName) -> Result<(), ListenError> {
        let (done, answer) = oneshot::channel();
        let command = Command::Listen {
            stream: stream.clone(),
            done,
        };
        let unavailable = |what: &str| ListenError::Unavailable(what.to_owned());
        let wait = async {
            self.commands
                .send(command)
                .await
                .map_err(|_| unavailable("the listener stopped"))?;
            answer
                .await
                .map_err(|_| unavailable("the listener stopped"))?
        };
        match tokio::time::timeout(self.timeout * 2, wait).await {
            Ok(result) => result,
            Err(_) => Err(unavailable("timed out waiting for LISTEN")),
        }
    }

    /// Tells the listener that `stream` may have no subscriber left; it UNLISTENs if the
    /// registry confirms it.
    pub fn release(&self, stream: &StreamName) {
        let command = Command::Release {
            stream: stream.clone(),
        };
        if let Err(mpsc::error::TrySendError::Full(command)) = self.commands.try_send(command) {
            let commands = self.commands.clone();
            tokio::spawn(async move {
                // The listener may have stopped: then there is nothing to release.
                let _ = commands.send(command).await;
            });
        }
    }

    /// The connection status, as a watch (sessions await changes).
    pub fn status(&self) -> watch::Receiver<PgStatus> {
        self.status.clone()
    }

    /// True if the LISTEN connection is up.
    pub fn is_up(&self) -> bool {
        *self.status.borrow() == PgStatus::Up
    }

    /// The listener's counters.
    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// The last seq stamped on raw channel `stream` on this relay (0 if none yet).
    pub fn raw_head(&self, stream: &StreamName) -> u64 {
        self.raw_heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(stream)
            .copied()
            .unwrap_or(0)
    }

    /// Presence payloads received from any relay (see `notify::NotifyPayload::Presence`).
    pub fn presence(&self) -> broadcast::Receiver<NotifyPayload> {
        self.presence.subscribe()
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The connection string does not parse.
    #[error(transparent)]
    Config(#[from] super::outbox::OutboxError),
    /// Its thread could not be started.
    #[error("cannot start the LISTEN thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Starts the listener on a thread of its own (tracked by `tracker`); it runs until `token`
/// is cancelled.
///
/// Its own thread and runtime: the listener's liveness check and outbox reads must measure
/// PostgreSQL, not the relay's scheduler. On the shared runtime, ten thousand busy sessions
/// delayed each step of a query by a whole round of the run queue (seconds), and the
/// listener took PostgreSQL for dead. Handing events to the bus from this thread costs
/// nothing extra: [`Fanout::publish`] never waits, and waking a session works across runtimes.
///
/// # Errors
///
/// [`SpawnError`] if `config.database_url` does not parse or the thread cannot start.
pub fn spawn(
    config: ListenerConfig,
    fanout: Arc<dyn Fanout>,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> Result<ListenerHandle, SpawnError> {
    let pg_config = super::pool::connection_config(
        &config.database_url,
        "tidewire-relay listen",
        config.timeout,
    )?;
    let (commands, command_receiver) = mpsc::channel(1024);
    let (status_sender, status) = watch::channel(PgStatus::Connecting);
    let stats = Arc::new(ListenerStats::default());
    let (presence, _) = broadcast::channel(4096);
    let raw_heads = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let handle = ListenerHandle {
        commands,
        status,
        stats: Arc::clone(&stats),
        presence: presence.clone(),
        timeout: config.timeout,
        raw_heads: Arc::clone(&raw_heads),
    };
    let streams = Streams::new(fanout, Arc::clone(&stats), presence, raw_heads, &config);
    let task = Task {
        config,
        pg_config,
        commands: command_receiver,
        status: status_sender,
        stats,
        streams,
        token,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let run = tracker.track_future(task.run());
    std::thread::Builder::new()
        .name("tidewire-listen".into())
        .spawn(move || runtime.block_on(run))?;
    Ok(handle)
}

/// Notifications handled per turn of the listener's loop.
const BATCH: usize = 1024;

/// Ceiling of the first reconnect delay of the LISTEN connection.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);

struct Task {
    config: ListenerConfig,
    pg_config: tokio_postgres::Config,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<PgStatus>,
    stats: Arc<ListenerStats>,
    streams: Streams,
    token: CancellationToken,
}

impl Task {
    async fn run(mut self) {
        let mut backoff = Backoff::new(RECONNECT_INITIAL, self.config.reconnect_max);
        let mut retrying = false;
        let mut connected_before = false;
        loop {
            if retrying && !self.backoff(&mut backoff).await {
                return;
            }
            retrying = true;
            let connecting = ListenConnection::connect(&self.pg_config, self.config.timeout);
            let connection = tokio::select! {
                () = self.token.cancelled() => return,
                connection = connecting => connection,
            };
            let mut connection = match connection {
                Ok(connection) => connection,
                Err(reason) => {
                    self.set_down(reason);
                    continue;
                }
            };
            if let Some(reader) = connection.reader.take() {
                self.streams.use_reader(reader);
            }
            if let Err(lost) = self.streams.relisten_all(&mut connection).await {
                self.set_down(lost.0);
                continue;
            }
            if connected_before {
                ListenerStats::add(&self.stats.reconnects, 1);
                tracing::info!("LISTEN connection re-established; catching up");
            }
            self.status.send_replace(PgStatus::Up);
            if let Err(lost) = self.streams.catch_up_all(connected_before).await {
                self.set_down(lost.0);
                continue;
            }
            connected_before = true;
            match self.serve(&mut connection).await {
                None => return,
                Some(lost) => {
                    ListenerStats::add(&self.stats.failures, 1);
                    self.set_down(lost.0);
                    backoff.reset();
                }
            }
        }
    }

    fn set_down(&self, reason: String) {
        tracing::warn!(%reason, "postgres LISTEN connection down");
        self.status.send_replace(PgStatus::Down { reason });
    }

    /// Sleeps a full-jitter exponential backoff; false if cancelled meanwhile or if every
    /// handle is gone (the relay was dropped without a shutdown: the thread must end too).
    async fn backoff(&self, backoff: &mut Backoff) -> bool {
        // This backoff retries forever: `None` cannot happen.
        let delay = backoff
            .next_delay(rand::thread_rng().gen::<f64>())
            .unwrap_or(self.config.reconnect_max);
        tokio::select! {
            () = self.token.cancelled() => false,
            () = tokio::time::sleep(delay) => !self.commands.is_closed(),
        }
    }

    /// Serves one connection until it is lost (`Some`) or the relay stops (`None`).
    async fn serve(&mut self, connection: &mut ListenConnection) -> Option<Lost> {
        let mut health = tokio::time::interval(self.config.health_interval);
        let mut poll = tokio::time::interval(self.config.poll_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Notifications taken aside while a statement ran come first (only those: the
            // channel is read in the `select!`, after the shutdown token).
            if !connection.backlog.is_empty() {
                let backlog: Vec<_> = connection.backlog.drain(..).collect();
                self.stats.high_water(backlog.len() as u64);
                if let Err(lost) = self.streams.on_notifications(backlog).await {
                    return Some(lost);
                }
                continue;
            }
            let result = tokio::select! {
                biased;
                () = self.token.cancelled() => return None,
                notification = connection.notifications.recv() => match notification {
                    None => Err(Lost("the LISTEN connection closed".into())),
                    Some(first) => {
                        let depth = connection.notifications.len() as u64 + 1;
                        self.stats.high_water(depth);
                        let mut batch = vec![first];
                        batch.extend(connection.ready(BATCH - 1));
                        self.streams.on_notifications(batch).await
                    }
                },
                command = self.commands.recv() => match command {
                    None => return None,
                    Some(command) => self.on_command(command, connection).await,
                },
                _ = health.tick() => self.check_health(connection).await,
                _ = poll.tick() => self.streams.poll_heads().await,
            };
            if let Err(lost) = result {
                return Some(lost);
            }
        }
    }

    async fn on_command(
        &mut self,
        command: Command,
        connection: &mut ListenConnection,
    ) -> Result<(), Lost> {
        match command {
            Command::Listen { stream, done } => {
                let result = self.streams.listen(&stream, connection).await;
                let answer = match &result {
                    Ok(()) => Ok(()),
                    Err(lost) => Err(ListenError::Unavailable(lost.0.clone())),
                };
                // The session may have given up waiting; then nobody needs the answer.
                let _ = done.send(answer);
                result
            }
            Command::Release { stream } => self.streams.release(&stream, connection).await,
        }
    }

    async fn check_health(&self, connection: &mut ListenConnection) -> Result<(), Lost> {
        match tokio::time::timeout(self.config.timeout, connection.execute("select 1")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(Lost(format!("liveness query failed: {error}"))),
            Err(_) => Err(Lost(format!(
                "liveness query timed out after {:?}",
                self.config.timeout
            ))),
        }
    }
}
