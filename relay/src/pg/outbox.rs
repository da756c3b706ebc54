//! Reads of durable streams through the query pool: heads, snapshots and replays, and the
//! [`OutboxError`] of every query (publishes are in [`super::publish`]). Every function is one
//! short transaction.

use std::sync::Arc;

use deadpool_postgres::Pool;
use serde_json::Value;
use tidewire_shared::stored::StoredEvent;
use tidewire_shared::{Event, Op, Position, Record, Snapshot, StreamName};
use tokio_postgres::{IsolationLevel, Row};

/// A durable stream's current state: where it is and what is still retained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The stream's epoch.
    pub epoch: u64,
    /// The last committed seq (0 if none).
    pub seq: u64,
    /// Seqs up to and including this one are no longer retained.
    pub min_seq: u64,
    /// Events up to and including this seq may lack pre-images (stored before migration 6;
    /// set by migration 8): a view cannot be replayed across them.
    pub prior_from: u64,
    /// Events up to and including this seq may lack the seq of their pre-image (stored
    /// before migration 10): the stream cannot be read as of a seq before it.
    pub asof_from: u64,
}

impl Head {
    /// `(epoch, seq)`.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// Whether a client at `since` can be resumed by replay (same epoch, within retention, not
    /// ahead of the head).
    pub fn can_resume(&self, since: Position) -> bool {
        since.epoch == self.epoch && since.seq >= self.min_seq && since.seq <= self.seq
    }

    /// Whether a view (a filtered subscriber) at `since` can be resumed by replay: as
    /// [`Head::can_resume`], and every event after `since` has its pre-image.
    pub fn can_resume_view(&self, since: Position) -> bool {
        self.can_resume(since) && since.seq >= self.prior_from
    }

    /// Why the stream cannot be read as of `at` in `epoch` (a paged snapshot's position), or
    /// `None` if it can: same epoch, not ahead of the head, every later event retained and
    /// with its pre-image.
    pub fn asof_refusal(&self, epoch: u64, at: u64) -> Option<&'static str> {
        if epoch != self.epoch {
            Some("the stream was dropped or recreated since the snapshot began")
        } else if at > self.seq {
            Some("the snapshot's position is ahead of the stream's head")
        } else if at < self.min_seq {
            Some("the events since the snapshot's position left the stream's retention")
        } else if at < self.asof_from.max(self.prior_from) {
            Some("the snapshot's position is older than the pre-images it is read from (events stored before the upgrade)")
        } else {
            None
        }
    }
}

/// Errors of outbox queries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The connection string or pool settings are invalid.
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// No pooled connection could be had (PostgreSQL down or the pool exhausted).
    #[error("no database connection available")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A query failed.
    #[error("database query failed")]
    Db(#[from] tokio_postgres::Error),
    /// PostgreSQL refused the input (invalid stream, key, op, data): the caller's fault.
    #[error("{0}")]
    Rejected(String),
    /// A row did not have the expected shape.
    #[error("unexpected data in the outbox: {0}")]
    Corrupt(String),
    /// The write would touch a record outside the writer's grant (its filter does not match
    /// the record before or after the write).
    #[error("{0}")]
    OutsideGrant(String),
    /// The write id was used on the stream for a different write (SQLSTATE `TW409`).
    #[error("{0}")]
    Conflict(String),
    /// The failure of a read this caller shared with others (merged replay reads).
    #[error("{0}")]
    Shared(Arc<OutboxError>),
}

impl OutboxError {
    /// True if the error says PostgreSQL is unreachable (retrying later may work), as opposed
    /// to bad input or corrupt data.
    pub fn is_unavailable(&self) -> bool {
        match self {
            OutboxError::Pool(_) => true,
            OutboxError::Db(error) => error.is_closed() || error.as_db_error().is_none(),
            OutboxError::Shared(error) => error.is_unavailable(),
            _ => false,
        }
    }
}

pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, OutboxError> {
    u64::try_from(value).map_err(|_| OutboxError::Corrupt(format!("negative {what}: {value}")))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn head_from_row(row: &Row) -> Result<Head, OutboxError> {
    Ok(Head {
        epoch: to_u64(row.try_get("epoch")?, "epoch")?,
        seq: to_u64(row.try_get("seq")?, "seq")?,
        min_seq: to_u64(row.try_get("min_seq")?, "min_seq")?,
        prior_from: to_u64(row.try_get("prior_from")?, "prior_from")?,
        asof_from: to_u64(row.try_get("asof_from")?, "asof_from")?,
    })
}

/// The heads of `streams` that exist, by name.
///
/// # Errors
///
/// [`OutboxError`] if the query fails.
pub async fn heads(pool: &Pool, streams: &[&str]) -> Result<Vec<(String, Head)>, OutboxError> {
    let client = pool.get().await?;
    heads_on(&client, streams).await
}

/// [`heads`] on a connection the caller already holds.
///
/// # Errors
///
/// [`OutboxError`] if the query fails.
pub async fn heads_on(
    client: &tokio_postgres::Client,
    streams: &[&str],
) -> Result<Vec<(String, Head)>, OutboxError> {
    let rows = client
        .query(
            "select name, epoch, seq, min_seq, prior_from, asof_from from tidewire.streams where name = any($1)",
            &[&streams],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get::<_, String>("name")?, head_from_row(row)?)))
        .collect()
}

/// The head of `stream`, creating the stream (permanent) if it does not exist yet, so that a
/// subscriber's epoch stays valid when the first event is published.
///
/// # Errors
///
/// [`OutboxError`] if the query fails.
pub async fn ensure_head(pool: &Pool, stream: &StreamName) -> Result<Head, OutboxError> {
    let client = pool.get().await?;
    client
        .execute(
            "insert into tidewire.streams (name) values ($1) on conflict (name) do nothing",
            &[&stream.as_str()],
        )
        .await?;
    let row = client
        .query_one(
            "select epoch, seq, min_seq, prior_from, asof_from from tidewire.streams where name = $1",
            &[&stream.as_str()],
        )
        .await?;
    head_from_row(&row)
}

/// A consistent snapshot of `stream`: its head and every record, read in one REPEATABLE READ
/// transaction, records ordered by seq. Creates the stream if it does not exist.
///
/// # Errors
///
/// [`OutboxError`] if a query fails.
pub async fn snapshot(pool: &Pool, stream: &StreamName) -> Result<Snapshot, OutboxError> {
    ensure_head(pool, stream).await?;
    let mut client = pool.get().await?;
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let head_row = transaction
        .query_opt(
            "select epoch, seq, min_seq, prior_from, asof_from from tidewire.streams where name = $1",
            &[&stream.as_str()],
        )
        .await?;
    let Some(head_row) = head_row else {
        // Dropped between the two statements: an empty stream at epoch 0.
        return Ok(Snapshot::default());
    };
    let head = head_from_row(&head_row)?;
    let rows = transaction
        .query(
            "select key, seq, data from tidewire.records where stream = $1 order by seq, key",
            &[&stream.as_str()],
        )
        .await?;
    transaction.commit().await?;
    let records = rows
        .iter()
        .map(|row| {
            Ok(Record {
                key: row.try_get("key")?,
                seq: to_u64(row.try_get("seq")?, "seq")?,
                data: row
                    .try_get::<_, Option<Value>>("data")?
                    .unwrap_or(Value::Null),
            })
        })
        .collect::<Result<Vec<_>, OutboxError>>()?;
    Ok(Snapshot {
        epoch: head.epoch,
        seq: head.seq,
        records,
    })
}

/// Up to `limit` events of `stream` with seq greater than `after`, in seq order, stamped with
/// `epoch` (the caller checked it against the head).
///
/// # Errors
///
/// [`OutboxError`] if the query fails or a row is malformed.
pub async fn replay(
    pool: &Pool,
    stream: &StreamName,
    epoch: u64,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, OutboxError> {
    let client = pool.get().await?;
    replay_on(&client, stream, epoch, after, limit).await
}

/// [`replay`] on a connection the caller already holds.
///
/// # Errors
///
/// [`OutboxError`] if the query fails or a row is malformed.
pub async fn replay_on(
    client: &tokio_postgres::Client,
    stream: &StreamName,
    epoch: u64,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, OutboxError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "select seq, key, op, data, prior, tidewire.micros(committed_at) as ts \
             from tidewire.events where stream = $1 and seq > $2 order by seq limit $3",
            &[&stream.as_str(), &to_i64(after), &limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let op: String = row.try_get("op")?;
            let event = Event {
                stream: stream.clone(),
                epoch,
                seq: to_u64(row.try_get("seq")?, "seq")?,
                key: row.try_get("key")?,
                op: Op::parse(&op).ok_or_else(|| OutboxError::Corrupt(format!("op {op:?}")))?,
                data: row
                    .try_get::<_, Option<Value>>("data")?
                    .unwrap_or(Value::Null),
                prev: None,
                ts: row.try_get("ts")?,
            };
            Ok(StoredEvent {
                event,
                prior: row.try_get("prior")?,
            })
        })
        .collect()
}
