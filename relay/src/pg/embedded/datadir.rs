//! The data directory of the embedded cluster: creating and handing it to the server's user,
//! the exclusive lock, `postmaster.pid`, and the names of the files tidewire keeps there.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::pg::cluster::{self, RunAs};
use crate::pg::Error;

/// The port last used, reused while it is free.
pub(super) const PORT_FILE: &str = "tidewire.port";
/// Tidewire's server settings, rewritten on every start.
pub(super) const CONF_FILE: &str = "tidewire.conf";
/// The server's output (pg_ctl `-l`).
pub(super) const LOG_FILE: &str = "tidewire-server.log";
/// PostgreSQL's lock file.
pub(super) const PID_FILE: &str = "postmaster.pid";
/// The line in `postgresql.conf` that includes [`CONF_FILE`].
pub(super) const INCLUDE_LINE: &str = "include_if_exists 'tidewire.conf'";

/// Creates `dir` (and parents), makes it absolute, and when running as root gives it to the
/// server's user with mode 0700 and checks that this user can reach it.
pub(super) fn prepare_dir(dir: &Path, run_as: Option<&RunAs>) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|source| Error::io(format!("creating {}", dir.display()), source))?;
    let dir = std::fs::canonicalize(dir)
        .map_err(|source| Error::io(format!("resolving {}", dir.display()), source))?;
    if let Some(user) = run_as {
        user.chown(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| Error::io(format!("setting the mode of {}", dir.display()), source),
        )?;
        let reachable = std::process::Command::new(cluster::runuser_path())
            .args(["-u", &user.name, "--", "test", "-w"])
            .arg(&dir)
            .current_dir("/")
            .status()
            .map(|status| status.success())
            .unwrap_or(true);
        if !reachable {
            return Err(Error::DataDir {
                path: dir,
                reason: format!(
                    "user {} cannot reach it: every parent directory must be searchable by that user (chmod o+x)",
                    user.name
                ),
            });
        }
    }
    Ok(dir)
}

/// Takes the exclusive, non-blocking flock on the data directory.
pub(super) fn lock_dir(dir: &Path) -> Result<File, Error> {
    let handle = File::open(dir)
        .map_err(|source| Error::io(format!("opening {}", dir.display()), source))?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::DataDirBusy {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => {
            Err(Error::io(format!("locking {}", dir.display()), source))
        }
    }
}

/// PID (line 1) and port (line 4) from `postmaster.pid`.
pub(super) fn read_pid_file(data_dir: &Path) -> Option<(i32, Option<u16>)> {
    let text = std::fs::read_to_string(data_dir.join(PID_FILE)).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let port = lines.nth(2).and_then(|line| line.trim().parse().ok());
    Some((pid, port))
}

/// The part of a file after `offset` (the server log of one start attempt).
pub(super) fn read_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Quotes an SQL identifier.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Percent-encodes everything but unreserved URL characters (database names in URLs).
pub(super) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_database_names() {
        assert_eq!(percent_encode("tidewire"), "tidewire");
        assert_eq!(percent_encode("a b/c\""), "a%20b%2Fc%22");
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn reads_pid_file() {
        let dir =
            std::env::temp_dir().join(format!("tidewire-pidfile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join(PID_FILE),
            "4242\n/data\n1700000000\n5433\n\n127.0.0.1\n",
        )
        .expect("write");
        assert_eq!(read_pid_file(&dir), Some((4242, Some(5433))));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
