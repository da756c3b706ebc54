//! `pg::Error`: everything that can go wrong on the Postgres side of the relay (migrations,
//! the embedded cluster and its processes).
//!
//! Messages are lowercase and do not repeat their source; print the whole chain with `{:#}`
//! (anyhow) to see the underlying cause.

use std::path::PathBuf;
use std::time::Duration;

/// An error from the Postgres side of the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A query or the connection to PostgreSQL failed.
    #[error("postgres query failed")]
    Db(#[from] tokio_postgres::Error),

    /// One numbered migration of the `tidewire` schema failed; nothing of it was applied.
    #[error("migration {version} ({name}) of the tidewire schema failed")]
    Migration {
        /// The migration's number.
        version: u32,
        /// The migration's file name.
        name: &'static str,
        /// What PostgreSQL answered.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A file of SQL functions failed to apply (nothing was changed).
    #[error("applying the SQL functions of {name} failed")]
    Functions {
        /// The file's name under `sql/functions/`.
        name: &'static str,
        /// What PostgreSQL answered.
        #[source]
        source: tokio_postgres::Error,
    },

    /// `initdb`, `pg_ctl` or `postgres` could not be found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or under \
         /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql` \
         (Debian/Ubuntu), or set DATABASE_URL to use an existing server"
    )]
    BinariesNotFound,

    /// Running as root, but the unprivileged user that must run PostgreSQL does not exist.
    #[error(
        "running as root, PostgreSQL must run as an unprivileged user, but user {user:?} does not \
         exist; create it with `useradd --system --user-group {user}` or run as a normal user"
    )]
    MissingUser {
        /// The OS user that was looked up.
        user: String,
    },

    /// The data directory is unusable (not empty and not a cluster, not reachable, ...).
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Another process owns this data directory's cluster.
    #[error("data directory {path} is in use by another tidewire process")]
    DataDirBusy {
        /// The data directory.
        path: PathBuf,
    },

    /// A file-system or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done, e.g. "creating /var/lib/tidewire/postgres".
        what: String,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },

    /// A PostgreSQL program (initdb, pg_ctl, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of its output and of the server log.
        output: String,
    },

    /// The server did not start accepting connections in time.
    #[error("postgres did not accept connections on 127.0.0.1:{port} within {waited:?}")]
    StartTimeout {
        /// The port it was started on.
        port: u16,
        /// How long we waited.
        waited: Duration,
        /// The last connection error, if any.
        #[source]
        source: Option<tokio_postgres::Error>,
    },

    /// An operation needs a running server, and there is none.
    #[error("the embedded postgres server is not running")]
    NotRunning,

    /// A server setting name or value cannot be written to the configuration file.
    #[error("invalid server setting {name:?}")]
    InvalidSetting {
        /// The setting's name.
        name: String,
    },

    /// Sending a signal to a server process failed.
    #[error("sending {signal} to process {pid} failed")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The target process.
        pid: i32,
        /// The operating system's answer.
        #[source]
        source: nix::errno::Errno,
    },
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The SQLSTATE code when PostgreSQL itself rejected a statement (e.g. `22023` for an
    /// invalid stream name passed to `tidewire.publish`).
    pub fn sqlstate(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Error::Db(source)
            | Error::Migration { source, .. }
            | Error::Functions { source, .. } => source.code(),
            _ => None,
        }
    }
}
