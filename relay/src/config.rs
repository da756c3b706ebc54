//! Relay configuration: command-line flags and `TIDEWIRE_*` environment variables (clap),
//! validated into one [`Config`]. `tidewire-relay --help` prints every option with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The command line of `tidewire-relay`.
#[derive(Debug, Parser)]
#[command(
    name = "tidewire-relay",
    version,
    about = "Tidewire relay: keeps browser tabs in sync with PostgreSQL over WebSocket, SSE and HTTP",
    long_about = "Tidewire relay: keeps browser tabs in sync with PostgreSQL.\n\n\
        It bridges durable streams (a gap-free outbox written by tidewire.publish() or by \
        triggers from tidewire.track_table()) and raw pg_notify channels to WebSocket \
        (/v1/ws), Server-Sent Events (/v1/sse) and HTTP (/v1/streams/...).\n\n\
        With no DATABASE_URL it starts and owns a private PostgreSQL cluster under --data-dir.\n\
        Every option can also be set with the environment variable shown next to it."
)]
pub struct Cli {
    /// What to run (default: `serve`).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the relay.
    #[command(flatten)]
    pub options: Options,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay (the default).
    Serve,
    /// Create or upgrade the `tidewire` schema in the database, then exit.
    Migrate,
}

/// Every relay option. Field docs become `--help` text.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Address to listen on for WebSocket, SSE and HTTP.
    #[arg(long, env = "TIDEWIRE_LISTEN", default_value = "127.0.0.1:7300")]
    pub listen: SocketAddr,

    /// PostgreSQL connection string (e.g. postgres://user:pass@host/db). Unset: run an embedded
    /// cluster under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Data directory of the embedded PostgreSQL cluster (only without DATABASE_URL).
    /// Default: $XDG_DATA_HOME/tidewire/postgres, ~/.local/share/tidewire/postgres, or
    /// /var/lib/tidewire/postgres when running as root.
    #[arg(long, env = "TIDEWIRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Serve the files of this directory at / (the demo site, for example).
    #[arg(long, env = "TIDEWIRE_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Connections to PostgreSQL in the query pool (snapshots, replays, publishes). The
    /// listener keeps two more of its own (LISTEN, and its outbox reads).
    #[arg(long, env = "TIDEWIRE_PG_POOL_SIZE", default_value_t = 8)]
    pub pg_pool_size: usize,

    /// Interval of the LISTEN connection's liveness query, in milliseconds.
    #[arg(long, env = "TIDEWIRE_PG_HEALTH_INTERVAL_MS", default_value_t = 2000)]
    pub pg_health_interval_ms: u64,

    /// Timeout of the liveness query and of connecting to PostgreSQL, in milliseconds.
    #[arg(long, env = "TIDEWIRE_PG_TIMEOUT_MS", default_value_t = 4000)]
    pub pg_timeout_ms: u64,

    /// Interval at which every listened durable stream's head is polled, so that a missed
    /// notification delays an event by at most this long, in milliseconds.
    #[arg(long, env = "TIDEWIRE_OUTBOX_POLL_MS", default_value_t = 1000)]
    pub outbox_poll_ms: u64,

    /// Largest backoff between reconnect attempts to PostgreSQL, in milliseconds (full jitter).
    #[arg(long, env = "TIDEWIRE_PG_RECONNECT_MAX_MS", default_value_t = 5000)]
    pub pg_reconnect_max_ms: u64,

    /// Interval of the janitor (retention trimming, temp stream expiry), in milliseconds.
    #[arg(long, env = "TIDEWIRE_JANITOR_INTERVAL_MS", default_value_t = 10_000)]
    pub janitor_interval_ms: u64,

    /// How long a write id (a publish's `write_id`, an HTTP `Idempotency-Key`) is remembered,
    /// in milliseconds (default 24 h, at least 1000): a write resent under its id within the
    /// window answers the seq it committed at instead of committing again. The janitor forgets
    /// older ids (at its next sweep); an id seen again after that commits again.
    #[arg(long, env = "TIDEWIRE_WRITE_ID_WINDOW_MS", default_value_t = 24 * 60 * 60 * 1000)]
    pub write_id_window_ms: u64,

    /// Deliveries a connection may have queued of its own. Beyond them it borrows from
    /// --queue-spare while a burst lasts; with neither it is marked lagged (a durable stream
    /// is then replayed from the outbox, a raw channel gets a `gap`).
    #[arg(long, env = "TIDEWIRE_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,

    /// Queue slots shared by all connections (8 bytes each; default 2,097,152, 16 MiB), which
    /// a connection borrows while a burst outgrows --queue-capacity, so the burst is absorbed
    /// instead of replayed. 0: no sharing.
    #[arg(long, env = "TIDEWIRE_QUEUE_SPARE", default_value_t = 2 * 1024 * 1024)]
    pub queue_spare: usize,

    /// Most slots one connection borrows from --queue-spare (default 15,360: a queue reaches
    /// 16,384 deliveries with the default capacity).
    #[arg(long, env = "TIDEWIRE_QUEUE_BURST", default_value_t = 15 * 1024)]
    pub queue_burst: usize,

    /// Events per page when replaying from the outbox.
    #[arg(long, env = "TIDEWIRE_REPLAY_PAGE", default_value_t = 1000)]
    pub replay_page: usize,

    /// Bytes of encoded events kept in replay pages shared by sessions that resume the same
    /// range (a thousand clients catching up after a relay restart read the outbox once, not
    /// once each). Only complete pages are kept; 0 turns sharing off.
    #[arg(long, env = "TIDEWIRE_REPLAY_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub replay_cache_bytes: usize,

    /// Records per snapshot page: a snapshot is read from PostgreSQL and sent one page (one
    /// `snapshot` chunk) at a time, the next only once the connection has written the
    /// previous one. Also the default and the maximum `limit` of HTTP snapshot pages.
    #[arg(long, env = "TIDEWIRE_SNAPSHOT_CHUNK", default_value_t = 500)]
    pub snapshot_chunk: usize,

    /// Bytes of snapshot pages kept for other readers of the same page (a thousand clients
    /// subscribing to one big stream read it from PostgreSQL once, not once each). Oldest page
    /// evicted first; 0 keeps none (concurrent readers of a page still share its read).
    #[arg(long, env = "TIDEWIRE_SNAPSHOT_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub snapshot_cache_bytes: usize,

    /// Milliseconds during which new snapshots of a stream start at the same position (and so
    /// share every page); a reader given an older position catches up by replay. 0: every
    /// snapshot starts at the head of its moment.
    #[arg(long, env = "TIDEWIRE_SNAPSHOT_SHARE_MS", default_value_t = 2000)]
    pub snapshot_share_ms: u64,

    /// Threads that run the relay's own work (accepting, PostgreSQL I/O, the janitor,
    /// presence, capture, timers) and, with `--delivery-threads 0`, the connections; at most
    /// 1024; 0: one per core (or `TOKIO_WORKER_THREADS`) (docs/OPERATIONS.md, "Threads").
    #[arg(long, env = "TIDEWIRE_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Threads that serve client connections, each with an event loop of its own, at most
    /// 1024. Each connection stays on one (taken in turn) and each event is handed once to
    /// each, so a delivery's queueing, wake-up and write stay on one core; the relay's own
    /// tasks (the janitor, presence, capture) stay on the worker threads. 0: connections run
    /// on the worker threads. Default: half the cores, at least 1. On 2 cores shared with
    /// PostgreSQL, 1 delivered 1.15-1.6x the events of one per transaction that 0 did, with
    /// less CPU (docs/OPERATIONS.md, "Threads").
    #[arg(long, env = "TIDEWIRE_DELIVERY_THREADS", default_value_t = default_delivery_threads())]
    pub delivery_threads: usize,

    /// Maximum concurrent client connections (WebSocket + SSE); beyond it: HTTP 503 or close 4503.
    #[arg(long, env = "TIDEWIRE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Maximum subscriptions per connection (error too_many_subscriptions).
    #[arg(long, env = "TIDEWIRE_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub max_subscriptions: usize,

    /// Largest client message or WebSocket frame in bytes (close 1009, HTTP 413).
    #[arg(long, env = "TIDEWIRE_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Largest `data` of one event in bytes (error too_large).
    #[arg(long, env = "TIDEWIRE_MAX_DATA_BYTES", default_value_t = 1024 * 1024)]
    pub max_data_bytes: usize,

    /// Publishes per second allowed per connection (token bucket; error rate_limited).
    #[arg(long, env = "TIDEWIRE_PUBLISH_RATE", default_value_t = 100)]
    pub publish_rate: u32,

    /// Burst size of the publish rate limit.
    #[arg(long, env = "TIDEWIRE_PUBLISH_BURST", default_value_t = 200)]
    pub publish_burst: u32,

    /// Largest total size of request headers in bytes (HTTP 431).
    #[arg(long, env = "TIDEWIRE_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Time allowed to send the request headers, in milliseconds (slowloris protection).
    #[arg(long, env = "TIDEWIRE_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// WebSocket keepalive ping interval in milliseconds; a peer silent for two intervals is
    /// closed (4009).
    #[arg(long, env = "TIDEWIRE_KEEPALIVE_MS", default_value_t = 20_000)]
    pub keepalive_ms: u64,

    /// SSE comment heartbeat interval in milliseconds.
    #[arg(long, env = "TIDEWIRE_SSE_HEARTBEAT_MS", default_value_t = 15_000)]
    pub sse_heartbeat_ms: u64,

    /// SSE `retry:` value sent to browsers, in milliseconds.
    #[arg(long, env = "TIDEWIRE_SSE_RETRY_MS", default_value_t = 1000)]
    pub sse_retry_ms: u64,

    /// A connection whose writes make no progress this long (a consumer that stopped reading)
    /// is reset, in milliseconds: a TCP reset frees its unsent data at once and the client
    /// sees a connection error (no close frame can reach a reader that stopped). Logged at
    /// warn and counted in tidewire_slow_consumer_drops_total.
    #[arg(long, env = "TIDEWIRE_SLOW_CONSUMER_MS", default_value_t = 10_000)]
    pub slow_consumer_ms: u64,

    /// Most bytes a client connection may have queued in the kernel and not yet sent
    /// (`TCP_NOTSENT_LOWAT`, Linux). Past it the relay stops writing to that client and
    /// queues deliveries itself (bounded, then replayed; see --slow-consumer-ms), so a client
    /// that stops reading does not pin megabytes of kernel memory: 1,000 of them would
    /// otherwise push the host's TCP stack into memory pressure and slow every other
    /// connection. In-flight data is not limited, so throughput on long links is unaffected.
    /// 0 leaves the kernel default (unlimited).
    #[arg(long, env = "TIDEWIRE_SOCKET_UNSENT_BYTES", default_value_t = 128 * 1024)]
    pub socket_unsent_bytes: u32,

    /// Time given to connections to drain on SIGINT/SIGTERM before they are cut, in ms.
    #[arg(long, env = "TIDEWIRE_SHUTDOWN_GRACE_MS", default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,

    /// HS256 shared secret for JWTs. Exactly one of --jwt-secret / --jwt-public-key may be set.
    #[arg(long, env = "TIDEWIRE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with the RS256 or EdDSA public key that verifies JWTs (see --jwt-algorithm).
    #[arg(long, env = "TIDEWIRE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWT algorithm accepted (fixed by config, never taken from the token): HS256, RS256 or
    /// EdDSA. Default: HS256 with --jwt-secret, RS256 with --jwt-public-key.
    #[arg(long, env = "TIDEWIRE_JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,

    /// Required `aud` claim of JWTs, if set.
    #[arg(long, env = "TIDEWIRE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim of JWTs, if set.
    #[arg(long, env = "TIDEWIRE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Stream patterns anyone may read without a token (comma-separated; `*` suffix = prefix
    /// match, e.g. `demo:*`). Default: none. Without any JWT key, the default is `*` (open).
    #[arg(long, env = "TIDEWIRE_ANON_READ", value_delimiter = ',')]
    pub anon_read: Vec<String>,

    /// Stream patterns anyone may write without a token (same syntax). Default: none; without
    /// any JWT key, `*` (open).
    #[arg(long, env = "TIDEWIRE_ANON_WRITE", value_delimiter = ',')]
    pub anon_write: Vec<String>,

    /// Origins allowed for WebSocket upgrades, SSE and CORS (comma-separated, e.g.
    /// `https://app.example.com`); `*` allows any. Default: same-host origins only
    /// (http(s)://localhost, 127.0.0.1 and the Host header's own origin); requests without an
    /// Origin header (non-browser clients) are allowed.
    #[arg(long, env = "TIDEWIRE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// How changes of tracked tables (tidewire.track_table) reach the outbox. `logical`: one
    /// relay (elected through PostgreSQL) reads them from a replication slot after they
    /// commit, so writers never wait for Tidewire; needs wal_level=logical and a role with
    /// REPLICATION. `trigger`: row triggers publish inside the writing transaction. `auto`:
    /// logical when the server allows it, else trigger (the choice is logged and shown in
    /// /readyz). The embedded PostgreSQL runs with wal_level=logical. All relays of a database
    /// should use the same mode.
    #[arg(long, env = "TIDEWIRE_CAPTURE", value_enum, default_value = "auto")]
    pub capture: crate::pg::capture::CaptureMode,

    /// Replication slot of logical capture (one per deployment; 1-63 of a-z, 0-9, _).
    #[arg(long, env = "TIDEWIRE_CAPTURE_SLOT", default_value = "tidewire")]
    pub capture_slot: String,

    /// Rows of a source transaction converted and written per statement by the sequencer:
    /// bounds its memory for transactions of any size.
    #[arg(long, env = "TIDEWIRE_CAPTURE_CHUNK_ROWS", default_value_t = 2000)]
    pub capture_chunk_rows: usize,

    /// Rows after which the sequencer commits its outbox transaction even when more source
    /// transactions are waiting (a single bigger source transaction is still one commit).
    #[arg(long, env = "TIDEWIRE_CAPTURE_BATCH_ROWS", default_value_t = 20_000)]
    pub capture_batch_rows: usize,

    /// How often a relay that is not the sequencer tries to become it, in milliseconds: the
    /// longest a dead sequencer goes unreplaced, after PostgreSQL ends its session.
    #[arg(long, env = "TIDEWIRE_CAPTURE_ELECTION_MS", default_value_t = 1000)]
    pub capture_election_ms: u64,

    /// Fault injection for tests and drills: the sequencer stops right after committing this
    /// many batches, before it confirms them to the slot, as a crash there would (the next
    /// term must skip them). 0 (the default): never.
    #[arg(
        long,
        env = "TIDEWIRE_CAPTURE_CRASH_AFTER_BATCHES",
        default_value_t = 0
    )]
    pub capture_crash_after_batches: u64,

    /// Fault injection for tests and drills: the relay process exits (code 87, logged at
    /// error) right after the Nth publish carrying a write id commits, before it answers, as a
    /// crash between commit and ack would (the client's resend must be answered `replayed`).
    /// Replayed answers do not count. 0 (the default): never.
    #[arg(long, env = "TIDEWIRE_CRASH_BEFORE_ACK", default_value_t = 0)]
    pub crash_before_ack: u64,

    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `tidewire_relay=debug`.
    #[arg(long, env = "TIDEWIRE_LOG", default_value = "info")]
    pub log: String,
}

impl Default for Options {
    fn default() -> Self {
        // Parsing an empty command line applies every documented default.
        match Cli::try_parse_from(["tidewire-relay"]) {
            Ok(cli) => cli.options,
            Err(error) => unreachable!("bug: the defaults do not parse: {error}"),
        }
    }
}

/// The shortest `--write-id-window-ms`: a window shorter than a client's reconnect would
/// defeat its purpose.
pub const MIN_WRITE_ID_WINDOW_MS: u64 = 1000;

/// `--delivery-threads` by default: half the cores, at least one. The other half is left to
/// the worker threads, PostgreSQL and the kernel's network stack, which on a busy relay take
/// as much CPU as the deliveries (measured on 2 cores; docs/OPERATIONS.md, "Threads").
pub fn default_delivery_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1))
}

/// Most threads `--worker-threads` and `--delivery-threads` accept: each is an OS thread with its own stack,
/// and no machine this relay runs on has more cores.
pub const MAX_WORKER_THREADS: usize = 1024;

/// The validated configuration the relay runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The raw options (every field documented in [`Options`]).
    pub options: Options,
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid option --{option}: {reason}")]
pub struct ConfigError {
    /// The flag's name.
    pub option: &'static str,
    /// Why its value cannot work.
    pub reason: String,
}

impl Config {
    /// Validates `options`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first option whose value cannot work.
    pub fn new(options: Options) -> Result<Self, ConfigError> {
        let positive = [
            ("pg-pool-size", options.pg_pool_size),
            ("queue-capacity", options.queue_capacity),
            ("replay-page", options.replay_page),
            ("snapshot-chunk", options.snapshot_chunk),
            ("max-connections", options.max_connections),
            ("max-subscriptions", options.max_subscriptions),
            ("max-message-bytes", options.max_message_bytes),
            ("max-data-bytes", options.max_data_bytes),
            ("max-header-bytes", options.max_header_bytes),
            ("capture-chunk-rows", options.capture_chunk_rows),
            ("capture-batch-rows", options.capture_batch_rows),
        ];
        for (option, value) in positive {
            if value == 0 {
                return Err(ConfigError {
                    option,
                    reason: "must be at least 1".into(),
                });
            }
        }
        let threads = [
            (
                "worker-threads",
                options.worker_threads,
                " (0: one per core)",
            ),
            ("delivery-threads", options.delivery_threads, ""),
        ];
        for (option, value, zero) in threads {
            if value > MAX_WORKER_THREADS {
                return Err(ConfigError {
                    option,
                    reason: format!("must be at most {MAX_WORKER_THREADS}{zero}"),
                });
            }
        }
        let millis = [
            ("pg-health-interval-ms", options.pg_health_interval_ms),
            ("pg-timeout-ms", options.pg_timeout_ms),
            ("outbox-poll-ms", options.outbox_poll_ms),
            ("janitor-interval-ms", options.janitor_interval_ms),
            ("keepalive-ms", options.keepalive_ms),
            ("sse-heartbeat-ms", options.sse_heartbeat_ms),
            ("capture-election-ms", options.capture_election_ms),
        ];
        for (option, value) in millis {
            if value < 10 {
                return Err(ConfigError {
                    option,
                    reason: "must be at least 10 ms".into(),
                });
            }
        }
        if options.write_id_window_ms < MIN_WRITE_ID_WINDOW_MS {
            return Err(ConfigError {
                option: "write-id-window-ms",
                reason: format!("must be at least {MIN_WRITE_ID_WINDOW_MS} ms"),
            });
        }
        if options.jwt_secret.is_some() && options.jwt_public_key.is_some() {
            return Err(ConfigError {
                option: "jwt-secret",
                reason: "set either --jwt-secret or --jwt-public-key, not both".into(),
            });
        }
        let slot = &options.capture_slot;
        if slot.is_empty()
            || slot.len() > 63
            || !slot
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
        {
            return Err(ConfigError {
                option: "capture-slot",
                reason: "must be 1 to 63 characters of a-z, 0-9 and _".into(),
            });
        }
        if options.publish_rate == 0 || options.publish_burst == 0 {
            return Err(ConfigError {
                option: "publish-rate",
                reason: "rate and burst must be at least 1".into(),
            });
        }
        Ok(Self { options })
    }

    /// The configuration tests use: every default, listening anywhere (the caller binds).
    pub fn for_tests(database_url: &str) -> Self {
        let options = Options {
            database_url: Some(database_url.to_owned()),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            // Tests of capture ask for logical mode themselves; the rest see writes to
            // tracked tables in the outbox as soon as they commit.
            capture: crate::pg::capture::CaptureMode::Trigger,
            ..Options::default()
        };
        Self { options }
    }

    /// `pg_health_interval_ms` as a duration.
    pub fn pg_health_interval(&self) -> Duration {
        Duration::from_millis(self.options.pg_health_interval_ms)
    }

    /// `pg_timeout_ms` as a duration.
    pub fn pg_timeout(&self) -> Duration {
        Duration::from_millis(self.options.pg_timeout_ms)
    }

    /// `outbox_poll_ms` as a duration.
    pub fn outbox_poll(&self) -> Duration {
        Duration::from_millis(self.options.outbox_poll_ms)
    }

    /// `pg_reconnect_max_ms` as a duration.
    pub fn pg_reconnect_max(&self) -> Duration {
        Duration::from_millis(self.options.pg_reconnect_max_ms.max(10))
    }

    /// `janitor_interval_ms` as a duration.
    pub fn janitor_interval(&self) -> Duration {
        Duration::from_millis(self.options.janitor_interval_ms)
    }

    /// `write_id_window_ms` as a duration.
    pub fn write_id_window(&self) -> Duration {
        Duration::from_millis(self.options.write_id_window_ms)
    }

    /// `header_timeout_ms` as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.options.header_timeout_ms)
    }

    /// `keepalive_ms` as a duration.
    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.options.keepalive_ms)
    }

    /// `sse_heartbeat_ms` as a duration.
    pub fn sse_heartbeat(&self) -> Duration {
        Duration::from_millis(self.options.sse_heartbeat_ms)
    }

    /// `slow_consumer_ms` as a duration.
    pub fn slow_consumer(&self) -> Duration {
        Duration::from_millis(self.options.slow_consumer_ms)
    }

    /// How capture runs, from the `capture*` options.
    pub fn capture(&self, database_url: &str) -> crate::pg::capture::CaptureConfig {
        crate::pg::capture::CaptureConfig {
            mode: self.options.capture,
            database_url: database_url.to_owned(),
            slot: self.options.capture_slot.clone(),
            timeout: self.pg_timeout(),
            election_interval: Duration::from_millis(self.options.capture_election_ms),
            chunk_rows: self.options.capture_chunk_rows,
            batch_rows: self.options.capture_batch_rows,
            crash_after_batches: self.options.capture_crash_after_batches,
        }
    }

    /// `shutdown_grace_ms` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.options.shutdown_grace_ms)
    }

    /// The runtime's worker threads: `None` leaves the choice to tokio (one per core, or
    /// `TOKIO_WORKER_THREADS`).
    pub fn worker_threads(&self) -> Option<usize> {
        (self.options.worker_threads > 0).then_some(self.options.worker_threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Config::new(Options::default()).expect("defaults are valid");
        assert_eq!(config.options.listen.to_string(), "127.0.0.1:7300");
        assert_eq!(config.options.queue_capacity, 1024);
    }

    #[test]
    fn worker_threads_default_to_tokios_choice() {
        let config = Config::new(Options::default()).expect("defaults are valid");
        assert_eq!(config.worker_threads(), None);
        let options = Options {
            worker_threads: 1,
            ..Options::default()
        };
        let config = Config::new(options).expect("one thread is valid");
        assert_eq!(config.worker_threads(), Some(1));
    }

    #[test]
    fn out_of_range_values_are_rejected_by_name() {
        let zero_connections = Options {
            max_connections: 0,
            ..Options::default()
        };
        let too_many_threads = Options {
            worker_threads: MAX_WORKER_THREADS + 1,
            ..Options::default()
        };
        let too_many_delivery_threads = Options {
            delivery_threads: MAX_WORKER_THREADS + 1,
            ..Options::default()
        };
        for (options, option) in [
            (zero_connections, "max-connections"),
            (too_many_threads, "worker-threads"),
            (too_many_delivery_threads, "delivery-threads"),
        ] {
            let error = Config::new(options).expect_err("out of range");
            assert_eq!(error.option, option);
        }
    }

    #[test]
    fn write_id_window_has_a_minimum() {
        let config = Config::new(Options::default()).expect("defaults are valid");
        assert_eq!(config.write_id_window(), Duration::from_secs(24 * 60 * 60));
        let options = Options {
            write_id_window_ms: MIN_WRITE_ID_WINDOW_MS - 1,
            ..Options::default()
        };
        let error = Config::new(options).expect_err("under a second is invalid");
        assert_eq!(error.option, "write-id-window-ms");
        let options = Options {
            write_id_window_ms: MIN_WRITE_ID_WINDOW_MS,
            ..Options::default()
        };
        assert!(Config::new(options).is_ok());
    }

    #[test]
    fn help_documents_every_env_var() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for var in [
            "TIDEWIRE_LISTEN",
            "DATABASE_URL",
            "TIDEWIRE_DATA_DIR",
            "TIDEWIRE_MAX_CONNECTIONS",
            "TIDEWIRE_WRITE_ID_WINDOW_MS",
            "TIDEWIRE_CRASH_BEFORE_ACK",
        ] {
            assert!(help.contains(var), "--help lacks {var}");
        }
    }
}
