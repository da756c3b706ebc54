//! The sequencer's writes: batches of events through `tidewire.capture_apply` inside one
//! outbox transaction that also moves `tidewire.capture.lsn` from the position it started
//! at to the end of the last source transaction in the batch. That compare-and-set is the
//! fence: a batch read twice (a crash between commit and slot confirmation) or written by a
//! deposed sequencer finds the position moved and rolls back.

use pgwire_replication::Lsn;
use tokio_postgres::{Client, Statement};

use super::CaptureError;

/// One event for `tidewire.capture_apply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Out {
    pub(crate) stream: String,
    pub(crate) key: String,
    pub(crate) op: &'static str,
    pub(crate) data: Option<String>,
    /// The source transaction's commit time, microseconds since 2000-01-01.
    pub(crate) committed: i64,
}

/// The sequencer's own connection and its open batch.
#[derive(Debug)]
pub(crate) struct Writer {
    client: Client,
    apply: Statement,
    write: Statement,
    slot: String,
    open: bool,
    events: u64,
}

/// The five arrays of `tidewire.capture_apply`.
type Columns<'a> = (
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<Option<&'a str>>,
    Vec<i64>,
);

fn columns(events: &[Out]) -> Columns<'_> {
    (
        events.iter().map(|e| e.stream.as_str()).collect(),
        events.iter().map(|e| e.key.as_str()).collect(),
        events.iter().map(|e| e.op).collect(),
        events.iter().map(|e| e.data.as_deref()).collect(),
        events.iter().map(|e| e.committed).collect(),
    )
}

impl Writer {
    /// Wraps a fresh connection.
    pub(crate) async fn new(client: Client, slot: String) -> Result<Self, CaptureError> {
        let apply = client
            .prepare(
                "select tidewire.capture_apply($1::text[], $2::text[], $3::text[], $4::text[]::jsonb[], $5::int8[])",
            )
            .await?;
        let write = client
            .prepare(
                "select tidewire.capture_write($1::text[], $2::text[], $3::text[], $4::text[]::jsonb[], $5::int8[], \
                 $6, $7::text::pg_lsn, $8::text::pg_lsn, $9::int8)",
            )
            .await?;
        Ok(Self {
            client,
            apply,
            write,
            slot,
            open: false,
            events: 0,
        })
    }

    /// The end of the last source transaction in the outbox for this slot.
    pub(crate) async fn position(&self) -> Result<Lsn, CaptureError> {
        let row = self
            .client
            .query_opt(
                "select lsn::text from tidewire.capture where slot = $1 and lsn is not null",
                &[&self.slot],
            )
            .await?;
        let text: String = row
            .ok_or_else(|| CaptureError::NotPrepared(self.slot.clone()))?
            .try_get(0)?;
        Lsn::parse(&text).map_err(|error| CaptureError::Protocol(error.to_string()))
    }

    /// Opens a transaction for a batch of several chunks, if not open yet.
    pub(crate) async fn begin(&mut self) -> Result<(), CaptureError> {
        if !self.open {
            self.client.batch_execute("begin").await?;
            self.open = true;
        }
        Ok(())
    }

    /// Writes `events` (a chunk that is not the batch's last) into the open transaction.
    pub(crate) async fn apply(&mut self, events: &[Out]) -> Result<(), CaptureError> {
        if events.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        let (streams, keys, ops, datas, committed) = columns(events);
        self.client
            .query_one(&self.apply, &[&streams, &keys, &ops, &datas, &committed])
            .await?;
        self.events += events.len() as u64;
        Ok(())
    }

    /// The deletes a TRUNCATE of table `oid` publishes (read inside the open batch).
    pub(crate) async fn truncate_keys(
        &mut self,
        oid: u32,
        committed: i64,
    ) -> Result<Vec<Out>, CaptureError> {
        self.begin().await?;
        let rows = self
            .client
            .query(
                "select stream, key from tidewire.capture_truncate_keys($1::oid::regclass)",
                &[&oid],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Out {
                    stream: row.try_get(0)?,
                    key: row.try_get(1)?,
                    op: "delete",
                    data: None,
                    committed,
                })
            })
            .collect()
    }

    /// Writes the batch's last chunk and moves the slot's position from `from` to `to` (the
    /// end of the last source transaction in it; `commit_micros` its commit time): one
    /// statement in autocommit when the batch is this chunk alone, else the end of the open
    /// transaction. [`CaptureError::Fenced`], with nothing written, when the position moved.
    pub(crate) async fn finish(
        &mut self,
        last: &[Out],
        from: Lsn,
        to: Lsn,
        commit_micros: i64,
    ) -> Result<u64, CaptureError> {
        let (streams, keys, ops, datas, committed) = columns(last);
        let written: bool = self
            .client
            .query_one(
                &self.write,
                &[
                    &streams,
                    &keys,
                    &ops,
                    &datas,
                    &committed,
                    &self.slot,
                    &from.to_pg_string(),
                    &to.to_pg_string(),
                    &commit_micros,
                ],
            )
            .await?
            .try_get(0)?;
        let events = self.events + last.len() as u64;
        self.events = 0;
        if self.open {
            self.open = false;
            if !written {
                let _ = self.client.batch_execute("rollback").await;
                return Err(CaptureError::Fenced);
            }
            self.client.batch_execute("commit").await?;
        } else if !written {
            return Err(CaptureError::Fenced);
        }
        Ok(events)
    }
}

/// What the sequencer hands the writer task, in order.
#[derive(Debug)]
pub(crate) enum Job {
    /// A chunk of a batch that has more to come (written in the open transaction).
    Chunk(Vec<Out>),
    /// A TRUNCATE of table `oid` at this point of the batch.
    Truncate { oid: u32, committed: i64 },
    /// The batch's last chunk and the end of its last source transaction.
    Finish {
        last: Vec<Out>,
        end: Lsn,
        commit_micros: i64,
        transactions: u64,
    },
}

/// The writer task: runs jobs in order on its own connection while the sequencer reads and
/// converts the next batch (the two use both cores: measured in docs/BENCHMARKS.md,
/// section 2c), and reports each committed batch's end on `confirmed`.
pub(crate) async fn write_jobs(
    mut writer: Writer,
    mut jobs: tokio::sync::mpsc::Receiver<Job>,
    confirmed: tokio::sync::mpsc::UnboundedSender<Lsn>,
    status: std::sync::Arc<super::CaptureStatus>,
    mut durable: Lsn,
    crash_after_batches: u64,
) -> Result<(), CaptureError> {
    let mut batches = 0u64;
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Chunk(events) => writer.apply(&events).await?,
            Job::Truncate { oid, committed } => {
                let deletes = writer.truncate_keys(oid, committed).await?;
                writer.apply(&deletes).await?;
            }
            Job::Finish {
                last,
                end,
                commit_micros,
                transactions,
            } => {
                let events = writer.finish(&last, durable, end, commit_micros).await?;
                status.wrote(events, transactions, end.as_u64());
                durable = end;
                batches += 1;
                if crash_after_batches > 0 && batches >= crash_after_batches {
                    return Err(CaptureError::InjectedCrash(batches));
                }
                // The sequencer may have stopped; the batch is committed either way.
                let _ = confirmed.send(end);
            }
        }
    }
    Ok(())
}
