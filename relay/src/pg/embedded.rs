//! The embedded PostgreSQL cluster: with no `DATABASE_URL`, the relay initialises, starts and
//! owns a private cluster (the machine's own PostgreSQL binaries, a data directory it prints),
//! listening on 127.0.0.1 only. The test harness builds its throwaway clusters on the same type
//! and uses the fault controls (stop modes, kill -9, SIGSTOP/SIGCONT).
//!
//! # Data directory
//!
//! The data directory *is* PGDATA. Besides PostgreSQL's own files it holds:
//!
//! - `tidewire.conf`: rewritten on every start (listen address, port, sockets off, durability,
//!   extra settings) and included from `postgresql.conf`;
//! - `tidewire.port`: the port last used, reused while it is free;
//! - `tidewire-server.log`: the server's output (pg_ctl `-l`).
//!
//! While an [`EmbeddedPostgres`] exists it holds an exclusive `flock` on the directory, so two
//! relays never own one cluster. A cluster left running by a crashed relay is adopted on the
//! next start; a stale `postmaster.pid` left by a crashed server is removed.
//!
//! # Layout
//!
//! This file holds the lifecycle ([`EmbeddedPostgres`]); `embedded/config.rs` the settings,
//! `embedded/datadir.rs` the directory, its lock and files, `embedded/recovery.rs` crash
//! cleanup and adoption, `embedded/process.rs` the `/proc` process table and signals;
//! `pg/cluster.rs` the binaries and `runuser`.
//!
//! # Security
//!
//! Authentication is `trust` for TCP connections from 127.0.0.1 only, and Unix sockets are off:
//! any local user can connect as the superuser `postgres`. Use `DATABASE_URL` with a managed
//! server where that is not acceptable.

mod config;
mod datadir;
mod process;
mod recovery;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use self::datadir::{
    lock_dir, percent_encode, prepare_dir, quote_ident, read_from, read_pid_file, CONF_FILE,
    INCLUDE_LINE, LOG_FILE, PORT_FILE,
};
use super::cluster::{self, RunAs};
use super::Error;

pub use self::config::{default_data_dir, EmbeddedConfig, StopMode};
pub use super::cluster::PgBinaries;

/// Name of the superuser created by initdb, whatever the OS user.
pub const SUPERUSER: &str = "postgres";

/// A PostgreSQL cluster this process owns. See the module docs.
///
/// Dropping it stops a running server with [`EmbeddedConfig::stop_on_drop`] (blocking the
/// current thread for as long as `pg_ctl stop` takes).
#[derive(Debug)]
pub struct EmbeddedPostgres {
    config: EmbeddedConfig,
    binaries: PgBinaries,
    /// Absolute PGDATA.
    data_dir: PathBuf,
    /// The unprivileged user the server runs as (we are root), or `None` (it runs as us).
    run_as: Option<RunAs>,
    /// The port of the current (or last) run.
    port: u16,
    /// Whether the server was started or adopted by us and not stopped since: Drop stops it.
    running: bool,
    /// Processes stopped by [`EmbeddedPostgres::freeze`]; continued before any stop.
    frozen: Vec<i32>,
    /// Open handle on the data directory holding an exclusive flock; closing it on drop
    /// releases the lock.
    _lock: File,
}

impl EmbeddedPostgres {
    /// Finds the binaries, locks the data directory and initialises a cluster there unless one
    /// exists. Does not start it: call [`EmbeddedPostgres::start`].
    ///
    /// # Errors
    ///
    /// Missing binaries or user, an unusable or busy data directory, or initdb failing.
    pub async fn new(config: EmbeddedConfig) -> Result<Self, Error> {
        let binaries = PgBinaries::locate(config.bin_dir.as_deref())?;
        let run_as = RunAs::for_current_process(&config.os_user)?;
        let data_dir = match &config.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir()?,
        };
        let data_dir = prepare_dir(&data_dir, run_as.as_ref())?;
        let lock = lock_dir(&data_dir)?;
        let port = config.port.unwrap_or(0);
        let mut cluster = Self {
            config,
            binaries,
            data_dir,
            run_as,
            port,
            running: false,
            frozen: Vec::new(),
            _lock: lock,
        };
        cluster.init_if_needed().await?;
        Ok(cluster)
    }

    /// [`EmbeddedPostgres::new`] then [`EmbeddedPostgres::start`].
    ///
    /// # Errors
    ///
    /// As for those two.
    pub async fn launch(config: EmbeddedConfig) -> Result<Self, Error> {
        let mut cluster = Self::new(config).await?;
        cluster.start().await?;
        Ok(cluster)
    }

    /// Starts the server (or adopts one already running on this data directory), waits until
    /// it accepts connections and creates the configured database if missing.
    ///
    /// # Errors
    ///
    /// pg_ctl failing (its output and the server log's tail are in the error) or the server
    /// not accepting connections within [`EmbeddedConfig::start_timeout`].
    pub async fn start(&mut self) -> Result<(), Error> {
        if self.running && self.postmaster_pid().is_some() {
            return Ok(());
        }
        if self.adopt_running_server().await? {
            tracing::info!(data_dir = %self.data_dir.display(), port = self.port, "adopting running postgres");
        } else {
            self.start_server().await?;
        }
        self.running = true;
        self.wait_until_accepting().await?;
        self.ensure_database().await?;
        Ok(())
    }

    /// Stops the server with `pg_ctl stop -m MODE` and waits until it is gone.
    ///
    /// # Errors
    ///
    /// pg_ctl failing; a server that is not running is not an error.
    pub async fn stop(&mut self, mode: StopMode) -> Result<(), Error> {
        self.thaw()?;
        if self.postmaster_pid().is_none() {
            self.running = false;
            return Ok(());
        }
        let mut command = self.pg_ctl();
        command.arg("stop").arg("-D").arg(&self.data_dir).args([
            "-m",
            mode.as_arg(),
            "-w",
            "-t",
            "60",
            "-s",
        ]);
        let result = cluster::run(command).await;
        if result.is_err() && self.postmaster_pid().is_none() {
            // The server was already gone (for example killed): nothing to stop.
            self.running = false;
            return Ok(());
        }
        result?;
        self.running = false;
        Ok(())
    }

    /// [`EmbeddedPostgres::stop`] with `mode`, then [`EmbeddedPostgres::start`] on the same data.
    ///
    /// # Errors
    ///
    /// As for those two.
    pub async fn restart(&mut self, mode: StopMode) -> Result<(), Error> {
        self.stop(mode).await?;
        self.start().await
    }

    /// Kills the postmaster with SIGKILL, like a crash, then waits (up to 10 s, then kills them
    /// too) for its child processes to exit, because a new postmaster must not start while old
    /// backends still use the data directory. Removes the dead postmaster's `postmaster.pid`.
    /// Call [`EmbeddedPostgres::start`] afterwards to recover; it does the same cleanup after a
    /// crash it did not see.
    ///
    /// # Errors
    ///
    /// [`Error::NotRunning`] without a postmaster; a failed signal.
    pub async fn kill9(&mut self) -> Result<(), Error> {
        self.thaw()?;
        let pid = self.postmaster_pid().ok_or(Error::NotRunning)?;
        process::send_signal(pid, Signal::SIGKILL)?;
        self.running = false;
        process::wait_for_exit(&[pid], Duration::from_secs(10)).await;
        self.clear_stale_server().await
    }

    /// Stops the postmaster and every server process with SIGSTOP: connections hang, new ones
    /// are not accepted. Undo with [`EmbeddedPostgres::thaw`] (stop and drop also thaw).
    ///
    /// # Errors
    ///
    /// [`Error::NotRunning`] without a postmaster; a failed signal.
    pub fn freeze(&mut self) -> Result<(), Error> {
        let pid = self.postmaster_pid().ok_or(Error::NotRunning)?;
        // The postmaster first, so that it forks no new process while we stop the others.
        process::send_signal(pid, Signal::SIGSTOP)?;
        self.frozen.push(pid);
        for child in process::live_children(pid) {
            process::send_signal(child, Signal::SIGSTOP)?;
            self.frozen.push(child);
        }
        Ok(())
    }

    /// Continues the processes stopped by [`EmbeddedPostgres::freeze`] (SIGCONT). A no-op when
    /// nothing is frozen.
    ///
    /// # Errors
    ///
    /// A failed signal.
    pub fn thaw(&mut self) -> Result<(), Error> {
        // Children first, the postmaster (frozen first) last.
        while let Some(pid) = self.frozen.pop() {
            process::send_signal(pid, Signal::SIGCONT)?;
        }
        Ok(())
    }

    /// The postmaster's process id from `postmaster.pid`, if that process is alive.
    pub fn postmaster_pid(&self) -> Option<i32> {
        read_pid_file(&self.data_dir)
            .map(|(pid, _)| pid)
            .filter(|pid| process::is_live(*pid))
    }

    /// Live processes of the server other than the postmaster (backends, checkpointer, ...).
    pub fn server_child_pids(&self) -> Vec<i32> {
        self.postmaster_pid()
            .map(process::live_children)
            .unwrap_or_default()
    }

    /// `postgresql://postgres@127.0.0.1:PORT/DATABASE` for the configured database.
    pub fn connection_string(&self) -> String {
        self.connection_string_for(&self.config.database)
    }

    /// The connection URL for another database of the cluster (e.g. `postgres`).
    pub fn connection_string_for(&self, database: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(database)
        )
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PGDATA (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// The binaries in use.
    pub fn binaries(&self) -> &PgBinaries {
        &self.binaries
    }

    /// Whether the server was started (or adopted) by this value and not stopped since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    fn pg_ctl(&self) -> tokio::process::Command {
        cluster::command(self.run_as.as_ref(), &self.binaries.program("pg_ctl"))
    }

    async fn init_if_needed(&mut self) -> Result<(), Error> {
        let version_file = self.data_dir.join("PG_VERSION");
        if version_file.exists() {
            let data_version = std::fs::read_to_string(&version_file).map_err(|source| {
                Error::io(format!("reading {}", version_file.display()), source)
            })?;
            let binaries_version = self.binaries.major_version().await?;
            if data_version.trim() != binaries_version.to_string() {
                return Err(Error::DataDir {
                    path: self.data_dir.clone(),
                    reason: format!(
                        "initialised by PostgreSQL {}, but the binaries in {} are version {binaries_version}",
                        data_version.trim(),
                        self.binaries.bin_dir().display()
                    ),
                });
            }
            return self.ensure_include_line();
        }
        let is_empty = std::fs::read_dir(&self.data_dir)
            .map_err(|source| Error::io(format!("reading {}", self.data_dir.display()), source))?
            .next()
            .is_none();
        if !is_empty {
            return Err(Error::DataDir {
                path: self.data_dir.clone(),
                reason: "exists, is not empty and is not a PostgreSQL data directory".to_owned(),
            });
        }
        tracing::info!(data_dir = %self.data_dir.display(), "initialising embedded postgres");
        let mut command = cluster::command(self.run_as.as_ref(), &self.binaries.program("initdb"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg(format!("--username={SUPERUSER}"))
            .args(["--auth=trust", "--encoding=UTF8", "--locale=C"]);
        if !self.config.durable {
            command.arg("--no-sync");
        }
        cluster::run(command).await?;
        self.ensure_include_line()
    }

    /// Makes `postgresql.conf` include `tidewire.conf` (idempotent).
    fn ensure_include_line(&self) -> Result<(), Error> {
        let path = self.data_dir.join("postgresql.conf");
        let text = std::fs::read_to_string(&path)
            .map_err(|source| Error::io(format!("reading {}", path.display()), source))?;
        if text.lines().any(|line| line.trim() == INCLUDE_LINE) {
            return Ok(());
        }
        let text =
            format!("{text}\n# Tidewire's settings, rewritten on every start.\n{INCLUDE_LINE}\n");
        self.write_file("postgresql.conf", &text)
    }

    /// Writes a file in the data directory, owned by the server's user.
    fn write_file(&self, name: &str, contents: &str) -> Result<(), Error> {
        let path = self.data_dir.join(name);
        std::fs::write(&path, contents)
            .map_err(|source| Error::io(format!("writing {}", path.display()), source))?;
        match &self.run_as {
            Some(user) => user.chown(&path),
            None => Ok(()),
        }
    }

    /// Chooses a port, writes `tidewire.conf` and runs `pg_ctl start -w`, retrying on another
    /// port when an automatically chosen one was taken in the meantime.
    async fn start_server(&mut self) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failed_port = (attempt > 1).then_some(self.port);
            self.port = self.choose_port(failed_port)?;
            self.write_server_conf()?;
            self.write_file(PORT_FILE, &format!("{}\n", self.port))?;
            let log_path = self.log_file();
            let log_offset = std::fs::metadata(&log_path)
                .map(|meta| meta.len())
                .unwrap_or(0);
            let mut command = self.pg_ctl();
            command
                .arg("start")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log_path)
                .args(["-w", "-s", "-t"])
                .arg(self.config.start_timeout.as_secs().max(1).to_string());
            let Err(error) = cluster::run(command).await else {
                return Ok(());
            };
            let log = read_from(&log_path, log_offset);
            let port_taken =
                log.contains("could not bind") || log.contains("Address already in use");
            if port_taken && self.config.port.is_none() && attempt < 4 {
                tracing::warn!(port = self.port, "postgres port taken, retrying on another");
                self.clear_stale_server().await?;
                continue;
            }
            return Err(match error {
                Error::Command {
                    command,
                    status,
                    output,
                } => Error::Command {
                    command,
                    status,
                    output: format!(
                        "{output}\nserver log ({}):\n{}",
                        log_path.display(),
                        cluster::tail(&log, 20)
                    ),
                },
                other => other,
            });
        }
    }

    /// The configured port, else the persisted one if free (and not the one that just failed),
    /// else a free one.
    fn choose_port(&self, failed_port: Option<u16>) -> Result<u16, Error> {
        if let Some(port) = self.config.port {
            return Ok(port);
        }
        let persisted = std::fs::read_to_string(self.data_dir.join(PORT_FILE))
            .ok()
            .and_then(|text| text.trim().parse::<u16>().ok());
        match persisted {
            // A retry after losing a race must not pick the same port again.
            Some(port) if Some(port) != failed_port && cluster::port_is_free(port) => Ok(port),
            _ => cluster::free_port(),
        }
    }

    fn write_server_conf(&self) -> Result<(), Error> {
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            ("port".into(), self.port.to_string()),
            ("unix_socket_directories".into(), String::new()),
            // Logical capture (`--capture auto` picks it): a slot per deployment, and a cap
            // on the WAL an abandoned slot may hold before it is invalidated (the sequencer
            // then resyncs tracked streams instead of filling the disk).
            ("wal_level".into(), "logical".into()),
            ("max_replication_slots".into(), "10".into()),
            ("max_wal_senders".into(), "10".into()),
            ("max_slot_wal_keep_size".into(), "4GB".into()),
        ];
        if !self.config.durable {
            for name in ["fsync", "synchronous_commit", "full_page_writes"] {
                settings.push((name.into(), "off".into()));
            }
            // Logical decoding sends only flushed WAL, and without synchronous commit the WAL
            // writer flushes every wal_writer_delay (default 200 ms): that would be logical
            // capture's latency. With fsync off a flush is a write(): do it every 1 ms.
            settings.push(("wal_writer_delay".into(), "1ms".into()));
        }
        settings.extend(self.config.settings.iter().cloned());
        // Rewritten on every start too, so clusters made before logical capture allow its
        // replication connections.
        self.write_file(
            "pg_hba.conf",
            "# Written by tidewire on every start: trust TCP connections from 127.0.0.1 only\n\
             # (and replication connections, for logical capture); Unix sockets are off.\n\
             host all all 127.0.0.1/32 trust\n\
             host replication all 127.0.0.1/32 trust\n",
        )?;
        let mut text = String::from("# Written by tidewire on every start; edits are lost.\n");
        for (name, value) in &settings {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.');
            if !valid_name || value.contains(['\n', '\r', '\0']) {
                return Err(Error::InvalidSetting { name: name.clone() });
            }
            text.push_str(&format!(
                "{name} = '{}'\n",
                value.replace('\\', "\\\\").replace('\'', "''")
            ));
        }
        self.write_file(CONF_FILE, &text)
    }

    async fn wait_until_accepting(&self) -> Result<(), Error> {
        let started = Instant::now();
        let url = self.connection_string_for("postgres");
        loop {
            let last_error = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((_client, _connection)) => return Ok(()),
                Err(error) => error,
            };
            if started.elapsed() > self.config.start_timeout {
                return Err(Error::StartTimeout {
                    port: self.port,
                    waited: started.elapsed(),
                    source: Some(last_error),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ensure_database(&self) -> Result<(), Error> {
        let (client, connection) = tokio_postgres::connect(
            &self.connection_string_for("postgres"),
            tokio_postgres::NoTls,
        )
        .await?;
        let driver = tokio::spawn(connection);
        let exists = client
            .query_opt(
                "select 1 from pg_database where datname = $1",
                &[&self.config.database],
            )
            .await?
            .is_some();
        if !exists {
            let sql = format!("create database {}", quote_ident(&self.config.database));
            if let Err(error) = client.batch_execute(&sql).await {
                // Lost a race with another creator: the database exists, which is the goal.
                if error.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                    return Err(error.into());
                }
            }
        }
        drop(client);
        // The driver ends when the client is dropped; its result carries nothing we need.
        let _ = driver.await;
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(error) = self.thaw() {
            tracing::warn!(%error, "thawing embedded postgres on drop");
        }
        let Some(mode) = self.config.stop_on_drop else {
            return;
        };
        if !self.running || self.postmaster_pid().is_none() {
            return;
        }
        let command = cluster::command(self.run_as.as_ref(), &self.binaries.program("pg_ctl"));
        let mut command = command.into_std();
        command
            .arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode.as_arg(), "-w", "-t", "30", "-s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match command.status() {
            Ok(status) if status.success() => {}
            outcome => {
                tracing::warn!(
                    ?outcome,
                    "pg_ctl stop failed on drop; killing the postmaster"
                );
                if let Some(pid) = self.postmaster_pid() {
                    let _ = process::send_signal(pid, Signal::SIGKILL);
                }
            }
        }
    }
}
