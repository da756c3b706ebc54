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
}

/// The sequencer's own connection and its open batch.
#[derive(Debug)]
pub(crate) struct Writer {
    client: Client,
    apply: Statement,
    slot: String,
    open: bool,
    events: u64,
}

impl Writer {
    /// Wraps a fresh connection.
    pub(crate) async fn new(client: Client, slot: String) -> Result<Self, CaptureError> {
        let apply = client
            .prepare(
                "select stream from tidewire.capture_apply($1::text[], $2::text[], $3::text[], $4::text[]::jsonb[])",
            )
            .await?;
        Ok(Self {
            client,
            apply,
            slot,
            open: false,
            events: 0,
        })
    }

    /// The connection (conversions run on it, inside the open batch).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Whether a batch is open.
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Events written in the open batch.
    pub(crate) fn events(&self) -> u64 {
        self.events
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

    /// Opens the batch if needed.
    pub(crate) async fn begin(&mut self) -> Result<(), CaptureError> {
        if !self.open {
            self.client.batch_execute("begin").await?;
            self.open = true;
            self.events = 0;
        }
        Ok(())
    }

    /// Writes `events` in order into the open batch.
    pub(crate) async fn apply(&mut self, events: &[Out]) -> Result<(), CaptureError> {
        if events.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        let streams: Vec<&str> = events.iter().map(|e| e.stream.as_str()).collect();
        let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
        let ops: Vec<&str> = events.iter().map(|e| e.op).collect();
        let datas: Vec<Option<&str>> = events.iter().map(|e| e.data.as_deref()).collect();
        self.client
            .query(&self.apply, &[&streams, &keys, &ops, &datas])
            .await?;
        self.events += events.len() as u64;
        Ok(())
    }

    /// The deletes a TRUNCATE of table `oid` publishes (read inside the open batch).
    pub(crate) async fn truncate_keys(&mut self, oid: u32) -> Result<Vec<Out>, CaptureError> {
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
                })
            })
            .collect()
    }

    /// Commits the open batch, moving the slot's position from `from` to `to` (the end of
    /// the last source transaction in it; `commit_micros` its commit time, PostgreSQL epoch).
    pub(crate) async fn commit(
        &mut self,
        from: Lsn,
        to: Lsn,
        commit_micros: i64,
    ) -> Result<(), CaptureError> {
        self.begin().await?;
        let moved = self
            .client
            .execute(
                "update tidewire.capture \
                    set lsn = $3::text::pg_lsn, \
                        source_at = timestamptz '2000-01-01 00:00:00+00' + $4::int8 * interval '1 microsecond', \
                        updated_at = now() \
                  where slot = $1 and lsn = $2::text::pg_lsn",
                &[&self.slot, &from.to_pg_string(), &to.to_pg_string(), &commit_micros],
            )
            .await?;
        if moved != 1 {
            let _ = self.client.batch_execute("rollback").await;
            self.open = false;
            return Err(CaptureError::Fenced);
        }
        self.client.batch_execute("commit").await?;
        self.open = false;
        Ok(())
    }
}
