//! [`EmbeddedConfig`], [`StopMode`] and the default data directory of the embedded cluster.

use std::path::PathBuf;
use std::time::Duration;

use crate::pg::Error;

/// How `pg_ctl stop` shuts the server down (`-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopMode {
    /// Wait for every client to disconnect.
    Smart,
    /// Disconnect clients, roll back open transactions, checkpoint, exit cleanly.
    Fast,
    /// Quit at once without a checkpoint; the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    pub(super) fn as_arg(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// Settings of an [`EmbeddedPostgres`]. Build with [`EmbeddedConfig::default`] and the `with_*`
/// methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EmbeddedConfig {
    /// PGDATA. Default: [`default_data_dir`].
    pub data_dir: Option<PathBuf>,
    /// TCP port on 127.0.0.1. Default: the port persisted in the data directory if it is still
    /// free, else a free one (and a start that loses a race for it retries on another).
    pub port: Option<u16>,
    /// Database created on start and named by [`EmbeddedPostgres::connection_string`].
    /// Default: `tidewire`.
    pub database: String,
    /// OS user that runs PostgreSQL when the relay runs as root. Default: `postgres`.
    pub os_user: String,
    /// Directory of initdb/pg_ctl/postgres. Default: found by [`PgBinaries::locate`].
    pub bin_dir: Option<PathBuf>,
    /// When false: `initdb --no-sync`, `fsync=off`, `synchronous_commit=off`,
    /// `full_page_writes=off`. Only for throwaway test clusters: an OS crash corrupts them, and
    /// a server crash (kill -9, immediate stop) loses the last few hundred milliseconds of
    /// commits unless a later setting turns `synchronous_commit` back on. Default: true.
    pub durable: bool,
    /// Extra `name = 'value'` server settings written to `tidewire.conf` after the ones above,
    /// so they override them. Default: none.
    pub settings: Vec<(String, String)>,
    /// How long a start may take before [`Error::StartTimeout`]. Default: 60 s.
    pub start_timeout: Duration,
    /// How the server is stopped when the value is dropped while it runs; `None` leaves it
    /// running. Default: `Some(StopMode::Fast)`.
    pub stop_on_drop: Option<StopMode>,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            port: None,
            database: "tidewire".to_owned(),
            os_user: "postgres".to_owned(),
            bin_dir: None,
            durable: true,
            settings: Vec::new(),
            start_timeout: Duration::from_secs(60),
            stop_on_drop: Some(StopMode::Fast),
        }
    }
}

impl EmbeddedConfig {
    /// Sets [`EmbeddedConfig::data_dir`].
    pub fn with_data_dir(mut self, data_dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(data_dir.into());
        self
    }

    /// Sets [`EmbeddedConfig::port`].
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets [`EmbeddedConfig::bin_dir`].
    pub fn with_bin_dir(mut self, bin_dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(bin_dir.into());
        self
    }

    /// Sets [`EmbeddedConfig::durable`].
    pub fn with_durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Adds one server setting (see [`EmbeddedConfig::settings`]).
    pub fn with_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Sets [`EmbeddedConfig::stop_on_drop`].
    pub fn with_stop_on_drop(mut self, mode: Option<StopMode>) -> Self {
        self.stop_on_drop = mode;
        self
    }
}

/// The default data directory: `$TIDEWIRE_DATA_DIR`, else (as root) `/var/lib/tidewire/postgres`
/// because the `postgres` user cannot enter `/root`, else `$XDG_DATA_HOME/tidewire/postgres`,
/// else `~/.local/share/tidewire/postgres`.
///
/// # Errors
///
/// [`Error::DataDir`] when none of these can be determined.
pub fn default_data_dir() -> Result<PathBuf, Error> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = non_empty("TIDEWIRE_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/tidewire/postgres"));
    }
    if let Some(dir) = non_empty("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("tidewire/postgres"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(PathBuf::from(home).join(".local/share/tidewire/postgres"));
    }
    Err(Error::DataDir {
        path: PathBuf::new(),
        reason: "no default location: set TIDEWIRE_DATA_DIR, XDG_DATA_HOME or HOME".to_owned(),
    })
}
