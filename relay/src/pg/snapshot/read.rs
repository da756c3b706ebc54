//! Reading one page of a snapshot from PostgreSQL: the stream's head and the page in one
//! REPEATABLE READ transaction, so the page is refused rather than wrong when the stream's
//! retention or epoch moved past the snapshot's position.

use std::sync::Arc;

use serde_json::Value;
use tidewire_shared::{Record, StreamName};
use tokio_postgres::IsolationLevel;

use super::page::Page;
use crate::pg::outbox::{head_from_row, Head, OutboxError};

/// Which page: the stream, the snapshot's position and where the page starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    /// The stream.
    pub stream: StreamName,
    /// The snapshot's epoch.
    pub epoch: u64,
    /// The seq the records are read as of.
    pub at: u64,
    /// The page holds keys after this one (`None`: from the first key).
    pub after: Option<Arc<str>>,
    /// At most this many records.
    pub limit: usize,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The position can no longer be read (retention, a new epoch): start a new snapshot.
    #[error("{reason}")]
    Expired {
        /// What happened to the position.
        reason: &'static str,
        /// The stream's head when the page was asked.
        head: Head,
    },
    /// PostgreSQL failed or refused.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The failure of a read this caller shared with others.
    #[error("{0}")]
    Shared(Arc<SnapshotError>),
}

/// What a [`SnapshotError`] comes down to, shared or not.
#[derive(Debug)]
pub enum Failure<'a> {
    /// The position expired: why, and the stream's head.
    Expired(&'static str, Head),
    /// PostgreSQL failed or refused.
    Outbox(&'a OutboxError),
}

impl SnapshotError {
    /// The failure behind this error (through any sharing).
    pub fn failure(&self) -> Failure<'_> {
        match self {
            SnapshotError::Expired { reason, head } => Failure::Expired(reason, *head),
            SnapshotError::Outbox(error) => Failure::Outbox(error),
            SnapshotError::Shared(shared) => shared.failure(),
        }
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads the page `key` names, encoded as chunk number `chunk` (see [`Page::frame`]).
///
/// # Errors
///
/// [`SnapshotError::Expired`] when the stream cannot be read as of `key.at` any more (or was
/// dropped), [`SnapshotError::Outbox`] when PostgreSQL fails.
pub async fn read_page(
    client: &mut tokio_postgres::Client,
    key: &PageKey,
    chunk: u32,
) -> Result<Page, SnapshotError> {
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(OutboxError::from)?;
    let head_row = transaction
        .query_opt(
            "select epoch, seq, min_seq, prior_from, asof_from from tidewire.streams where name = $1",
            &[&key.stream.as_str()],
        )
        .await
        .map_err(OutboxError::from)?;
    let Some(head_row) = head_row else {
        return Err(SnapshotError::Expired {
            reason: "the stream was dropped since the snapshot began",
            head: Head {
                epoch: 0,
                seq: 0,
                min_seq: 0,
                prior_from: 0,
                asof_from: 0,
            },
        });
    };
    let head = head_from_row(&head_row)?;
    if let Some(reason) = head.asof_refusal(key.epoch, key.at) {
        return Err(SnapshotError::Expired { reason, head });
    }
    // One extra row says whether another page follows.
    let limit = i32::try_from(key.limit.saturating_add(1)).unwrap_or(i32::MAX);
    let rows = transaction
        .query(
            "select key, seq, data from tidewire.snapshot_page($1, $2, $3, $4)",
            &[
                &key.stream.as_str(),
                &to_i64(key.at),
                &key.after.as_deref(),
                &limit,
            ],
        )
        .await
        .map_err(OutboxError::from)?;
    transaction.commit().await.map_err(OutboxError::from)?;
    let mut records = rows
        .iter()
        .map(|row| {
            let seq: Option<i64> = row.try_get("seq").map_err(OutboxError::from)?;
            let seq = seq.unwrap_or(0);
            Ok(Record {
                key: row.try_get("key").map_err(OutboxError::from)?,
                seq: u64::try_from(seq)
                    .map_err(|_| OutboxError::Corrupt(format!("negative seq: {seq}")))?,
                data: row
                    .try_get::<_, Option<Value>>("data")
                    .map_err(OutboxError::from)?
                    .unwrap_or(Value::Null),
            })
        })
        .collect::<Result<Vec<_>, SnapshotError>>()?;
    let more = records.len() > key.limit;
    records.truncate(key.limit);
    Ok(Page::new(
        &key.stream,
        (key.epoch, key.at),
        chunk,
        &records,
        more,
    ))
}
