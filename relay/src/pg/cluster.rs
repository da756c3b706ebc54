//! Low-level pieces under [`super::embedded`]: locating PostgreSQL's server binaries, running
//! them (as an unprivileged user when we are root) and free ports. The process table
//! (`/proc`, signals) is in `embedded::process`.
//!
//! Nothing here knows about the data directory layout; `embedded.rs` does.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::unistd::{Gid, Uid, User};
use tokio::process::Command;

use super::Error;

/// The PostgreSQL server programs this machine has: `initdb`, `pg_ctl` and `postgres`, all
/// from one installation directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bin_dir: PathBuf,
}

impl PgBinaries {
    const PROGRAMS: [&'static str; 3] = ["initdb", "pg_ctl", "postgres"];

    /// Finds the binaries: in `bin_dir` if given, else the first `PATH` entry that has all three
    /// programs, else the highest version under `/usr/lib/postgresql/*/bin` (Debian, Ubuntu) or
    /// `/usr/pgsql-*/bin` (RHEL family).
    ///
    /// # Errors
    ///
    /// [`Error::BinariesNotFound`], whose message says how to install them.
    pub fn locate(bin_dir: Option<&Path>) -> Result<Self, Error> {
        if let Some(dir) = bin_dir {
            return Self::in_dir(dir).ok_or(Error::BinariesNotFound);
        }
        let from_path = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default();
        from_path
            .iter()
            .find_map(|dir| Self::in_dir(dir))
            .or_else(|| versioned_dirs().iter().find_map(|dir| Self::in_dir(dir)))
            .ok_or(Error::BinariesNotFound)
    }

    /// The binaries in `dir`, following symlinks (e.g. `/usr/local/bin/initdb` pointing into
    /// `/usr/lib/postgresql/15/bin`) so that pg_ctl finds its sibling `postgres`.
    fn in_dir(dir: &Path) -> Option<Self> {
        let initdb = std::fs::canonicalize(dir.join("initdb")).ok()?;
        let real_dir = initdb.parent()?.to_path_buf();
        let found = [real_dir.as_path(), dir].into_iter().find(|candidate| {
            Self::PROGRAMS
                .iter()
                .all(|program| is_executable(&candidate.join(program)))
        })?;
        Some(Self {
            bin_dir: found.to_path_buf(),
        })
    }

    /// The directory holding the programs.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Path of one program (`"initdb"`, `"pg_ctl"`, `"postgres"`).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The major version of the binaries (`15` for 15.8), from `postgres --version`.
    ///
    /// # Errors
    ///
    /// The program cannot be run or prints something unexpected.
    pub async fn major_version(&self) -> Result<u32, Error> {
        let program = self.program("postgres");
        let output = Command::new(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| Error::io(format!("running {}", program.display()), source))?;
        let text = String::from_utf8_lossy(&output.stdout);
        parse_major_version(&text).ok_or_else(|| Error::Command {
            command: format!("{} --version", program.display()),
            status: output.status.to_string(),
            output: text.trim().to_owned(),
        })
    }
}

/// `postgres (PostgreSQL) 15.8 (Debian 15.8-1)` -> 15.
fn parse_major_version(text: &str) -> Option<u32> {
    let version = text.split_whitespace().find(|word| {
        word.chars()
            .next()
            .is_some_and(|first| first.is_ascii_digit())
    })?;
    version.split('.').next()?.parse().ok()
}

/// `/usr/lib/postgresql/*/bin` and `/usr/pgsql-*/bin`, highest major version first.
fn versioned_dirs() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    let roots: [(&str, &str); 2] = [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")];
    for (root, prefix) in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|name| name.strip_prefix(prefix))
                .and_then(|rest| rest.split('.').next())
                .and_then(|major| major.parse::<u32>().ok())
            else {
                continue;
            };
            found.push((version, entry.path().join("bin")));
        }
    }
    found.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    found.into_iter().map(|(_, dir)| dir).collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The unprivileged OS user PostgreSQL runs as when the relay runs as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) name: String,
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
}

impl RunAs {
    /// `Some(user)` when we are root (PostgreSQL refuses to run as root), else `None`.
    pub(crate) fn for_current_process(user: &str) -> Result<Option<Self>, Error> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let found = User::from_name(user).map_err(|errno| {
            Error::io(
                format!("looking up user {user}"),
                std::io::Error::from(errno),
            )
        })?;
        let found = found.ok_or_else(|| Error::MissingUser {
            user: user.to_owned(),
        })?;
        Ok(Some(Self {
            name: found.name,
            uid: found.uid,
            gid: found.gid,
        }))
    }

    /// Gives `path` to this user.
    pub(crate) fn chown(&self, path: &Path) -> Result<(), Error> {
        nix::unistd::chown(path, Some(self.uid), Some(self.gid)).map_err(|errno| {
            Error::io(
                format!("changing the owner of {} to {}", path.display(), self.name),
                std::io::Error::from(errno),
            )
        })
    }
}

/// A command for `program`, wrapped in `runuser -u USER --` when `run_as` is set. The working
/// directory is `/` so that a cwd the user cannot enter (e.g. `/root`) does not matter.
pub(crate) fn command(run_as: Option<&RunAs>, program: &Path) -> Command {
    let mut command = match run_as {
        Some(user) => {
            let mut command = Command::new(runuser_path());
            command.arg("-u").arg(&user.name).arg("--").arg(program);
            command
        }
        None => Command::new(program),
    };
    command
        .current_dir("/")
        .stdin(Stdio::null())
        .env_remove("PGDATA")
        .env("LC_MESSAGES", "C");
    command
}

pub(crate) fn runuser_path() -> &'static str {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .into_iter()
        .find(|candidate| Path::new(candidate).exists())
        .unwrap_or("runuser")
}

/// Runs `command` to completion; a non-zero exit becomes [`Error::Command`] carrying the tail
/// of its output.
pub(crate) async fn run(mut command: Command) -> Result<String, Error> {
    let line = describe(&command);
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| Error::io(format!("running `{line}`"), source))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(text)
    } else {
        Err(Error::Command {
            command: line,
            status: output.status.to_string(),
            output: tail(&text, 20),
        })
    }
}

/// The command line, for messages.
pub(crate) fn describe(command: &Command) -> String {
    let std_command = command.as_std();
    let mut line = std_command.get_program().to_string_lossy().into_owned();
    for arg in std_command.get_args() {
        let _ = write!(line, " {}", arg.to_string_lossy());
    }
    line
}

/// The last `lines` lines of `text`, trimmed.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether nothing listens on `127.0.0.1:port` (std sets `SO_REUSEADDR`, as PostgreSQL does,
/// so a port in TIME_WAIT counts as free).
pub(crate) fn port_is_free(port: u16) -> bool {
    port != 0 && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A port the kernel considers free right now on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|source| Error::io("finding a free port on 127.0.0.1", source))?;
    let port = listener
        .local_addr()
        .map_err(|source| Error::io("finding a free port on 127.0.0.1", source))?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_version() {
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 15.8 (Debian 15.8-1.pgdg120+1)\n"),
            Some(15)
        );
        assert_eq!(parse_major_version("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major_version("nothing here"), None);
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("", 2), "");
    }
}
