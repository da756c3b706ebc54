//! The `tidewire` schema: the SQL functions (`sql/functions/*.sql`, one current definition
//! each, applied with `create or replace` on every run) and the numbered migrations
//! (`sql/*.sql`: tables, indexes, triggers; applied once each, in order), both by [`migrate`]
//! when the relay starts. Several relays starting at once are safe: the whole run is one
//! transaction holding a fixed advisory lock.
//!
//! Functions come first: their plpgsql bodies name tables only when they run, and a migration
//! may create a trigger that needs its function.
//!
//! The SQL API the migrations install (`tidewire.publish`, `tidewire.track_table`, ...) is the
//! public contract with applications and is documented in `docs/SQL.md`.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::outbox::OutboxError;
use super::Error;

/// Key of the transaction-level advisory lock held while migrating (`"tidewire"` in ASCII).
pub const MIGRATION_LOCK_KEY: i64 = 0x7469_6465_7769_7265;

/// A NOTIFY payload of at least this many bytes is replaced by a pointer (`{"t":"ptr",...}`),
/// and an ephemeral message this large is rejected (PostgreSQL's limit is 8000 bytes).
pub const NOTIFY_INLINE_LIMIT: usize = 8000;

/// Events a stream keeps when its row sets no `retain_count`.
pub const DEFAULT_RETAIN_EVENTS: i64 = 10_000;

/// Age of events a stream keeps when its row sets no `retain_age` (7 days), in seconds.
pub const DEFAULT_RETAIN_AGE_SECS: u64 = 7 * 24 * 60 * 60;

/// PostgreSQL channel prefix of durable streams: stream `todos` notifies on `tw:todos`.
pub const CHANNEL_PREFIX: &str = "tw:";

/// One numbered migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migration {
    /// Its number; applied in increasing order, each exactly once.
    pub version: u32,
    /// Its file name under `relay/src/pg/sql/`.
    pub name: &'static str,
    /// The SQL, run as one multi-statement batch.
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("sql/", $name)),
        }
    };
}

/// One file of SQL functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Functions {
    /// Its file name under `relay/src/pg/sql/functions/`.
    pub name: &'static str,
    /// `create or replace function ...` statements, run as one batch.
    pub sql: &'static str,
}

macro_rules! functions {
    ($name:literal) => {
        Functions {
            name: $name,
            sql: include_str!(concat!("sql/functions/", $name)),
        }
    };
}

/// Every function file, applied in this order on every [`migrate`].
pub const FUNCTIONS: &[Functions] = &[
    functions!("names.sql"),
    functions!("streams.sql"),
    functions!("publish.sql"),
    functions!("writes.sql"),
    functions!("track.sql"),
    functions!("capture.sql"),
    functions!("snapshot.sql"),
];

/// Every migration, in order. Never edit what a released one does to tables: add a new file.
/// Functions do not belong here (see [`FUNCTIONS`]).
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_tables.sql"),
    migration!(2, "0002_publish.sql"),
    migration!(3, "0003_track_table.sql"),
    migration!(4, "0004_streams.sql"),
    migration!(5, "0005_bulk_publish.sql"),
    migration!(6, "0006_event_prior.sql"),
    migration!(7, "0007_tracked_views.sql"),
    migration!(8, "0008_prior_from.sql"),
    migration!(9, "0009_capture.sql"),
    migration!(10, "0010_snapshot_pages.sql"),
    migration!(11, "0011_write_ids.sql"),
];

/// The version [`migrate`] brings a database to.
pub fn latest_version() -> u32 {
    MIGRATIONS
        .last()
        .map(|migration| migration.version)
        .unwrap_or(0)
}

/// Creates schema `tidewire` and applies every migration the database lacks, in one
/// transaction under [`MIGRATION_LOCK_KEY`]. Idempotent; safe to run from several processes
/// at once. Returns the schema version now in the database (higher than
/// [`latest_version`] when a newer relay migrated it; that is logged, not an error).
///
/// `client` must not be inside a transaction.
///
/// # Errors
///
/// [`Error::Migration`] naming the migration that failed, or [`Error::Db`]; either way the
/// transaction is rolled back and the database is as it was.
pub async fn migrate(client: &Client) -> Result<u32, Error> {
    client.batch_execute("begin").await?;
    match apply_pending(client).await {
        Ok(version) => {
            client.batch_execute("commit").await?;
            Ok(version)
        }
        Err(error) => {
            // The original error is what matters; a failed rollback means the connection is
            // gone, which also ends the transaction.
            let _ = client.batch_execute("rollback").await;
            Err(error)
        }
    }
}

/// The schema version of the database, or `None` when `tidewire` is not installed.
///
/// # Errors
///
/// [`Error::Db`] when the query fails.
pub async fn current_version(client: &Client) -> Result<Option<u32>, Error> {
    let row = client
        .query_one(
            "select to_regclass('tidewire.schema_version') is not null",
            &[],
        )
        .await?;
    if !row.try_get::<_, bool>(0)? {
        return Ok(None);
    }
    let row = client
        .query_one("select max(version) from tidewire.schema_version", &[])
        .await?;
    let version: Option<i32> = row.try_get(0)?;
    Ok(version.and_then(|version| u32::try_from(version).ok()))
}

async fn apply_pending(client: &Client) -> Result<u32, Error> {
    client
        .execute(
            "select pg_advisory_xact_lock($1::bigint)",
            &[&MIGRATION_LOCK_KEY],
        )
        .await?;
    client
        .batch_execute(
            "create schema if not exists tidewire;
             create table if not exists tidewire.schema_version (
                 version    integer primary key,
                 name       text not null,
                 applied_at timestamptz not null default now()
             );",
        )
        .await?;
    for functions in FUNCTIONS {
        client
            .batch_execute(functions.sql)
            .await
            .map_err(|source| Error::Functions {
                name: functions.name,
                source,
            })?;
    }
    let mut applied = BTreeSet::new();
    for row in client
        .query("select version from tidewire.schema_version", &[])
        .await?
    {
        let version: i32 = row.try_get(0)?;
        applied.insert(version);
    }
    for migration in MIGRATIONS {
        let version = i32::try_from(migration.version).expect("bug: migration version fits i32");
        if applied.contains(&version) {
            continue;
        }
        client
            .batch_execute(migration.sql)
            .await
            .map_err(|source| Error::Migration {
                version: migration.version,
                name: migration.name,
                source,
            })?;
        client
            .execute(
                "insert into tidewire.schema_version (version, name) values ($1, $2)",
                &[&version, &migration.name],
            )
            .await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        applied.insert(version);
    }
    let current = applied
        .last()
        .and_then(|version| u32::try_from(*version).ok())
        .unwrap_or(0);
    if current > latest_version() {
        tracing::warn!(
            current,
            supported = latest_version(),
            "the tidewire schema is newer than this relay"
        );
    }
    Ok(current)
}

/// Connects once and migrates the `tidewire` schema (safe when several relays start at once).
///
/// # Errors
///
/// [`OutboxError`] if PostgreSQL cannot be reached or a migration fails.
pub async fn migrate_database(
    database_url: &str,
    timeout: std::time::Duration,
) -> Result<u32, OutboxError> {
    let config = super::pool::connection_config(database_url, "tidewire-relay migrate", timeout)?;
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "migration connection ended");
        }
    });
    let result = migrate(&client)
        .await
        .map_err(|error| OutboxError::Config(format!("{error:#}")));
    drop(client);
    // The connection ends when the client is dropped; nothing to report.
    let _ = driver.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{}", migration.name);
            assert!(
                migration
                    .name
                    .starts_with(&format!("{:04}_", migration.version)),
                "{}",
                migration.name
            );
        }
        assert_eq!(latest_version() as usize, MIGRATIONS.len());
    }

    #[test]
    fn lock_key_spells_tidewire() {
        assert_eq!(&MIGRATION_LOCK_KEY.to_be_bytes(), b"tidewire");
    }
}
