//! [`RelayProcess`]: a relay running as a child process (the `relay_proc` binary of this
//! package, which is the relay's own `main` glue), so fault runs can kill -9 it and start it
//! again on the same address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A relay child process.
#[derive(Debug)]
pub struct RelayProcess {
    binary: PathBuf,
    database_url: String,
    args: Vec<String>,
    addr: SocketAddr,
    /// Where the relay's log goes (appended across restarts), if anywhere.
    log: Option<PathBuf>,
    child: Option<Child>,
}

/// `relay_proc` next to the running executable (for binaries of this package), or the
/// `CARGO_BIN_EXE_relay_proc` path integration tests get at compile time.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut directory = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Integration tests live in target/<profile>/deps; binaries one level up.
    if directory.ends_with("deps") {
        directory.pop();
    }
    directory.join(name)
}

impl RelayProcess {
    /// Starts `binary` on `listen` (port 0 picks one) against `database_url` with extra
    /// relay flags, and waits until it listens.
    ///
    /// # Errors
    ///
    /// When the process cannot start or does not report its address within 30 s.
    pub async fn spawn(
        binary: &Path,
        database_url: &str,
        listen: SocketAddr,
        args: &[String],
        log: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let mut relay = Self {
            binary: binary.to_owned(),
            database_url: database_url.to_owned(),
            args: args.to_vec(),
            addr: listen,
            log,
            child: None,
        };
        relay.start().await?;
        Ok(relay)
    }

    /// Starts the process again on the address it had (after [`RelayProcess::kill9`]).
    ///
    /// # Errors
    ///
    /// As [`RelayProcess::spawn`].
    pub async fn start(&mut self) -> std::io::Result<()> {
        let stderr = match &self.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Stdio::null(),
        };
        let mut child = Command::new(&self.binary)
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(&self.args)
            .env("DATABASE_URL", &self.database_url)
            .env_remove("TIDEWIRE_LISTEN")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| std::io::Error::other("the relay did not start within 30 s"))??
            .ok_or_else(|| std::io::Error::other("the relay exited before listening"))?;
        let addr = line
            .strip_prefix("listening ")
            .and_then(|addr| addr.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("unexpected relay output {line:?}")))?;
        self.addr = addr;
        self.child = Some(child);
        Ok(())
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Waits up to `limit` for the process to end by itself (a `--crash-before-ack` exit, for
    /// example) and returns its exit status; `None` if it is still running after `limit` or
    /// was not started.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = tokio::time::timeout(limit, child.wait()).await.ok()?.ok()?;
        self.child = None;
        Some(status)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only if it already exited, which is what we want.
            let _ = child.kill().await;
        }
    }

    /// SIGTERM (graceful shutdown), waiting up to `grace` before SIGKILL.
    pub async fn terminate(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // `kill` is in every base system; a failure leaves the SIGKILL below.
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
            }
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}
