//! Recovering the embedded cluster after a crash: adopting a server a crashed relay left
//! running, and clearing what a crashed server left behind (exiting backends, a stale
//! `postmaster.pid`, a zombie holding its PID).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::datadir::{read_pid_file, PID_FILE};
use super::process;
use super::EmbeddedPostgres;
use crate::pg::Error;

impl EmbeddedPostgres {
    /// If a live postmaster of this data directory exists (a relay crashed and left it
    /// running), takes it over and returns true; removes a stale `postmaster.pid` otherwise.
    pub(super) async fn adopt_running_server(&mut self) -> Result<bool, Error> {
        let started = Instant::now();
        while let Some((pid, port)) = read_pid_file(&self.data_dir) {
            if !self.is_our_postmaster(pid) {
                break;
            }
            if let Some(port) = port {
                self.port = port;
                return Ok(true);
            }
            // A postmaster that is still writing its pid file: wait for the port line.
            if started.elapsed() > self.config.start_timeout {
                return Err(Error::DataDir {
                    path: self.data_dir.clone(),
                    reason: format!("postmaster {pid} runs but its postmaster.pid has no port"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.clear_stale_server().await?;
        Ok(false)
    }

    /// Whether `pid` is a live postgres process whose working directory is this data directory
    /// (a postmaster runs in its data directory; an unreadable cwd counts as a match).
    pub(super) fn is_our_postmaster(&self, pid: i32) -> bool {
        process::is_live(pid)
            && process::proc_stat(pid).is_some_and(|stat| stat.comm == "postgres")
            && process::cwd_of(pid).is_none_or(|cwd| cwd == self.data_dir)
    }

    /// After a crash of the postmaster: waits for leftover server processes (postgres
    /// processes whose working directory is this data directory) to exit, killing them after
    /// 10 s, then removes `postmaster.pid` if its process is dead or a zombie. Without this,
    /// PostgreSQL refuses to start while a zombie (when PID 1 does not reap orphans) holds
    /// the PID, and old backends must never share the data directory with a new postmaster.
    pub(super) async fn clear_stale_server(&self) -> Result<(), Error> {
        if let Some((pid, _)) = read_pid_file(&self.data_dir) {
            if self.is_our_postmaster(pid) {
                // Not stale: a live server owns the directory.
                return Ok(());
            }
        }
        let started = Instant::now();
        let mut killed = false;
        loop {
            let leftovers = process::live_postgres_in(&self.data_dir);
            if leftovers.is_empty() {
                break;
            }
            let waited = started.elapsed();
            if waited > Duration::from_secs(15) {
                return Err(Error::DataDir {
                    path: self.data_dir.clone(),
                    reason: format!("old server processes {leftovers:?} still use it"),
                });
            }
            if waited > Duration::from_secs(10) && !killed {
                tracing::warn!(?leftovers, "killing leftover postgres processes");
                for pid in &leftovers {
                    process::send_signal(*pid, Signal::SIGKILL)?;
                }
                killed = true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let Some((pid, _)) = read_pid_file(&self.data_dir) else {
            return Ok(());
        };
        tracing::warn!(pid, data_dir = %self.data_dir.display(), "removing stale postmaster.pid");
        let path = self.data_dir.join(PID_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::io(format!("removing {}", path.display()), source)),
        }
    }
}
