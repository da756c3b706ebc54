//! The sequencer's loop: reads committed transactions from the replication slot in commit
//! order, routes the rows of tracked tables to stream events, converts them on a connection
//! of its own and hands them to the writer task (`writer::write_jobs`), which writes them in
//! batches (one outbox transaction per batch, chunks of `chunk_rows` inside it so that a
//! transaction of a million rows needs bounded memory). A position is confirmed to the slot
//! only after the writer committed the batch that covers it.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::convert::Converter;
use super::pgoutput::{self, Change, Relation};
use super::route::{self, Definition, Layout, Plan};
use super::status::CaptureStatus;
use super::writer::{Job, Out, Writer};
use super::CaptureError;

/// Prefix of the logical messages `tidewire.capture_attach` emits when a definition changes.
pub(crate) const TRACK_MESSAGE: &str = "tidewire.track";
/// Prefix of the message that marks the end of a drain (switching back to triggers).
pub(crate) const DRAIN_MESSAGE: &str = "tidewire.drain";

/// Sizes of the sequencer's work.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Rows converted and written per statement.
    pub(crate) chunk_rows: usize,
    /// Rows after which a batch commits even when more transactions are waiting.
    pub(crate) batch_rows: usize,
}

/// A relation as the WAL describes it, with its definition's layout when tracked.
#[derive(Debug)]
struct Known {
    relation: Relation,
    layout: Option<Result<Layout, route::LayoutError>>,
}

/// The rows of the chunk being built.
#[derive(Debug, Default)]
struct Chunk {
    plans: Vec<(u32, Plan, i64)>,
    images: HashMap<u32, Vec<Vec<Option<String>>>>,
    rows: usize,
}

/// One run of the sequencer on one replication session.
pub(crate) struct Sequencer<'a> {
    repl: ReplicationClient,
    /// Conversions and definitions are read here, while the writer writes.
    client: Client,
    jobs: tokio::sync::mpsc::Sender<Job>,
    confirmed: tokio::sync::mpsc::UnboundedReceiver<Lsn>,
    writer: tokio::task::JoinHandle<Result<(), CaptureError>>,
    /// Batches handed to the writer and not yet confirmed.
    in_flight: u64,
    /// A chunk or TRUNCATE of the current batch went to the writer (its transaction is open).
    batch_open: bool,
    status: &'a Arc<CaptureStatus>,
    limits: Limits,
    definitions: HashMap<u32, Definition>,
    relations: HashMap<u32, Known>,
    converter: Converter,
    chunk: Chunk,
    ahead: Option<ReplicationEvent>,
    /// The durable position: end of the last source transaction in the outbox.
    durable: Lsn,
    /// Inside a source transaction (Begin seen, Commit not yet).
    in_transaction: bool,
    /// The source transaction is before `durable` (already written): skip its rows.
    skipping: bool,
    /// The source transaction's commit time (microseconds since 2000-01-01).
    committed: i64,
    /// The source transaction's commit LSN.
    transaction_lsn: u64,
    /// End and commit time of the last source transaction added to the open batch.
    pending_end: Option<(Lsn, i64)>,
    batch_transactions: u64,
    batch_rows: usize,
}

impl std::fmt::Debug for Sequencer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer")
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl Drop for Sequencer<'_> {
    fn drop(&mut self) {
        // A batch not yet committed is rolled back with its connection and read again by the
        // next sequencer; one committed and not confirmed is skipped by the fence.
        self.writer.abort();
    }
}

impl<'a> Sequencer<'a> {
    /// A sequencer that resumes at `durable` (`writer`'s position) on `repl`, reading on
    /// `client` and writing through the writer task.
    pub(crate) async fn new(
        repl: ReplicationClient,
        client: Client,
        writer: Writer,
        durable: Lsn,
        status: &'a Arc<CaptureStatus>,
        limits: Limits,
        crash_after_batches: u64,
    ) -> Result<Self, CaptureError> {
        let definitions = load_definitions(&client, None).await?;
        // One job of slack: while the writer commits a batch, the next one forms here.
        let (jobs, receiver) = tokio::sync::mpsc::channel(1);
        let (confirm, confirmed) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(super::writer::write_jobs(
            writer,
            receiver,
            confirm,
            Arc::clone(status),
            durable,
            crash_after_batches,
        ));
        Ok(Self {
            repl,
            client,
            jobs,
            confirmed,
            writer,
            in_flight: 0,
            batch_open: false,
            status,
            limits,
            definitions,
            relations: HashMap::new(),
            converter: Converter::default(),
            chunk: Chunk::default(),
            ahead: None,
            durable,
            in_transaction: false,
            skipping: false,
            committed: 0,
            transaction_lsn: 0,
            pending_end: None,
            batch_transactions: 0,
            batch_rows: 0,
        })
    }

    /// Runs until `stop` is cancelled (`Ok`), the session fails, or, with `drain_to`, a
    /// drain message at or after that position is read.
    pub(crate) async fn run(
        mut self,
        stop: &CancellationToken,
        drain_to: Option<Lsn>,
    ) -> Result<(), CaptureError> {
        loop {
            let event = match self.ahead.take() {
                Some(event) => event,
                None => tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    confirmed = self.confirmed.recv() => {
                        match confirmed {
                            Some(end) => {
                                self.in_flight = self.in_flight.saturating_sub(1);
                                self.repl.update_applied_lsn(end);
                            }
                            None => return Err(self.writer_failed().await),
                        }
                        continue;
                    }
                    event = self.repl.recv() => match event? {
                        Some(event) => event,
                        None => return Err(CaptureError::Ended),
                    },
                },
            };
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    commit_time_micros,
                    ..
                } => {
                    self.in_transaction = true;
                    self.committed = commit_time_micros;
                    self.transaction_lsn = final_lsn.as_u64();
                    self.skipping = final_lsn < self.durable;
                }
                ReplicationEvent::XLogData { data, .. } => {
                    let change = pgoutput::decode(&data)
                        .map_err(|error| CaptureError::Protocol(error.to_string()))?;
                    self.on_change(change).await?;
                }
                ReplicationEvent::Message {
                    prefix,
                    content,
                    lsn,
                    ..
                } => {
                    if prefix == TRACK_MESSAGE && !self.skipping {
                        self.flush().await?;
                        let oid = std::str::from_utf8(&content)
                            .ok()
                            .and_then(|text| text.parse::<u32>().ok())
                            .ok_or_else(|| CaptureError::Protocol("bad track message".into()))?;
                        self.reload(oid).await?;
                    } else if prefix == DRAIN_MESSAGE
                        && drain_to.is_some_and(|target| lsn >= target)
                        && !self.in_transaction
                    {
                        self.finish_batch().await?;
                        return self.drain().await;
                    }
                }
                ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                } => {
                    self.in_transaction = false;
                    if self.skipping {
                        self.skipping = false;
                        continue;
                    }
                    self.pending_end = Some((end_lsn, commit_time_micros));
                    self.batch_transactions += 1;
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    // Everything before `wal_end` was sent; with no transaction open and the
                    // batch committed, none of it is ours to write: let the slot free it.
                    if !self.in_transaction
                        && self.pending_end.is_none()
                        && self.in_flight == 0
                        && !self.batch_open
                    {
                        self.repl.update_applied_lsn(wal_end);
                    }
                }
                ReplicationEvent::StoppedAt { .. } => return Err(CaptureError::Ended),
            }
            // Between source transactions: commit the batch when it is big enough or
            // nothing else is waiting (so a quiet moment never holds events back).
            if !self.in_transaction
                && self.pending_end.is_some()
                && (self.batch_rows >= self.limits.batch_rows || !self.more_ready())
            {
                self.finish_batch().await?;
            }
        }
    }

    /// Whether the next event is already here (then it is kept for the next turn).
    fn more_ready(&mut self) -> bool {
        if self.ahead.is_some() {
            return true;
        }
        match self.repl.recv().now_or_never() {
            Some(Ok(Some(event))) => {
                self.ahead = Some(event);
                true
            }
            // An error or the end shows again on the next receive.
            Some(_) | None => false,
        }
    }

    async fn on_change(&mut self, change: Change) -> Result<(), CaptureError> {
        match change {
            Change::Relation(relation) => {
                self.flush().await?;
                self.converter.prepare(&self.client, &relation).await?;
                let layout = self
                    .definitions
                    .get(&relation.id)
                    .map(|definition| definition.layout(&relation));
                self.relations
                    .insert(relation.id, Known { relation, layout });
                Ok(())
            }
            Change::Insert { relation, new } => self.row(relation, None, Some(new)).await,
            Change::Update {
                relation, old, new, ..
            } => self.row(relation, old, Some(new)).await,
            Change::Delete { relation, old, .. } => self.row(relation, Some(old), None).await,
            Change::Truncate { relations, .. } => {
                if self.skipping {
                    return Ok(());
                }
                self.flush().await?;
                for oid in relations {
                    if self.definitions.contains_key(&oid) {
                        self.batch_rows += 1;
                        self.send(Job::Truncate {
                            oid,
                            committed: self.committed,
                        })
                        .await?;
                        self.batch_open = true;
                    }
                }
                Ok(())
            }
            Change::Type { .. } | Change::Other(_) => Ok(()),
        }
    }

    fn on_row(
        &mut self,
        relation_id: u32,
        old: Option<pgoutput::Tuple>,
        new: Option<pgoutput::Tuple>,
    ) -> Result<(), CaptureError> {
        if self.skipping {
            return Ok(());
        }
        let Some(definition) = self.definitions.get(&relation_id) else {
            return Ok(());
        };
        let known = self
            .relations
            .get(&relation_id)
            .ok_or(CaptureError::Protocol(format!(
                "change of relation {relation_id} before its description"
            )))?;
        let layout = match &known.layout {
            Some(Ok(layout)) => layout,
            Some(Err(error)) => {
                return Err(CaptureError::Halt {
                    reason: error.to_string(),
                    at: self.transaction_lsn,
                })
            }
            None => return Ok(()),
        };
        let relation = &known.relation;
        let result = (|| {
            let old = old
                .map(|values| route::image(relation, &values, None))
                .transpose()?;
            let new = new
                .map(|values| route::image(relation, &values, old.as_deref()))
                .transpose()?;
            let images = self.chunk.images.entry(relation_id).or_default();
            route::plan(definition, layout, old, new, &mut |image| {
                images.push(image);
                images.len() - 1
            })
        })();
        match result {
            Ok(plans) => {
                self.chunk.rows += 1;
                self.batch_rows += 1;
                let committed = self.committed;
                self.chunk
                    .plans
                    .extend(plans.into_iter().map(|plan| (relation_id, plan, committed)));
            }
            Err(error) => {
                self.status.rejected();
                tracing::error!(
                    table = %format!("{}.{}", relation.schema, relation.name),
                    %error,
                    "capture: a row change of a tracked table cannot be published; skipped"
                );
            }
        }
        Ok(())
    }

    async fn row(
        &mut self,
        relation_id: u32,
        old: Option<pgoutput::Tuple>,
        new: Option<pgoutput::Tuple>,
    ) -> Result<(), CaptureError> {
        self.on_row(relation_id, old, new)?;
        if self.chunk.rows >= self.limits.chunk_rows {
            // Bounded memory for big transactions: write this part now, in the open batch.
            self.flush().await?;
        }
        Ok(())
    }

    /// Converts the chunk and hands it to the writer (a chunk that is not the batch's last).
    pub(crate) async fn flush(&mut self) -> Result<(), CaptureError> {
        let out = self.convert().await?;
        if out.is_empty() {
            return Ok(());
        }
        self.batch_open = true;
        self.send(Job::Chunk(out)).await
    }

    async fn send(&mut self, job: Job) -> Result<(), CaptureError> {
        if self.jobs.send(job).await.is_err() {
            return Err(self.writer_failed().await);
        }
        Ok(())
    }

    /// The writer task's error (it ended early).
    async fn writer_failed(&mut self) -> CaptureError {
        match (&mut self.writer).await {
            Ok(Err(error)) => error,
            Ok(Ok(())) => CaptureError::Ended,
            Err(error) => CaptureError::Protocol(format!("the writer task failed: {error}")),
        }
    }

    /// Waits until the writer committed every batch handed to it.
    async fn drain(&mut self) -> Result<(), CaptureError> {
        while self.in_flight > 0 {
            match self.confirmed.recv().await {
                Some(end) => {
                    self.in_flight -= 1;
                    self.repl.update_applied_lsn(end);
                }
                None => return Err(self.writer_failed().await),
            }
        }
        Ok(())
    }

    /// The chunk's events, converted.
    async fn convert(&mut self) -> Result<Vec<Out>, CaptureError> {
        let chunk = std::mem::take(&mut self.chunk);
        if chunk.plans.is_empty() {
            return Ok(Vec::new());
        }
        let mut converted: HashMap<u32, Vec<String>> = HashMap::new();
        for (relation, images) in &chunk.images {
            let definition = self
                .definitions
                .get(relation)
                .ok_or(CaptureError::Protocol(format!(
                    "relation {relation} lost its definition"
                )))?;
            let json = self
                .converter
                .convert(&self.client, *relation, definition, images)
                .await?;
            converted.insert(*relation, json);
        }
        let mut out = Vec::with_capacity(chunk.plans.len());
        for (relation, plan, committed) in chunk.plans {
            let json = converted.get_mut(&relation);
            let take = |index: usize| {
                json.as_ref()
                    .and_then(|json| json.get(index))
                    .cloned()
                    .ok_or_else(|| CaptureError::Protocol("converted image missing".into()))
            };
            match plan {
                Plan::Upsert { stream, key, new } => out.push(Out {
                    stream,
                    key,
                    op: "upsert",
                    data: Some(take(new)?),
                    committed,
                }),
                Plan::Delete { stream, key } => out.push(Out {
                    stream,
                    key,
                    op: "delete",
                    data: None,
                    committed,
                }),
                Plan::Update {
                    stream,
                    key,
                    old,
                    new,
                } => {
                    let new = take(new)?;
                    // jsonb's text form is canonical: equal text is equal data.
                    if take(old)? != new {
                        out.push(Out {
                            stream,
                            key,
                            op: "upsert",
                            data: Some(new),
                            committed,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Commits the open batch (if any source transaction is pending) and confirms its end.
    async fn finish_batch(&mut self) -> Result<(), CaptureError> {
        let Some((end, commit_micros)) = self.pending_end.take() else {
            return Ok(());
        };
        let last = self.convert().await?;
        self.send(Job::Finish {
            last,
            end,
            commit_micros,
            transactions: self.batch_transactions,
        })
        .await?;
        self.in_flight += 1;
        self.batch_open = false;
        self.durable = end;
        self.batch_transactions = 0;
        self.batch_rows = 0;
        Ok(())
    }

    /// Reloads the definition of table `oid` (changed in the source at this point).
    async fn reload(&mut self, oid: u32) -> Result<(), CaptureError> {
        let mut fresh = load_definitions(&self.client, Some(oid)).await?;
        match fresh.remove(&oid) {
            Some(definition) => {
                self.definitions.insert(oid, definition);
            }
            None => {
                self.definitions.remove(&oid);
            }
        }
        if let Some(known) = self.relations.get_mut(&oid) {
            known.layout = self
                .definitions
                .get(&oid)
                .map(|definition| definition.layout(&known.relation));
        }
        Ok(())
    }
}

/// Every tracked table's definition (or only `oid`'s).
pub(crate) async fn load_definitions(
    client: &Client,
    oid: Option<u32>,
) -> Result<HashMap<u32, Definition>, CaptureError> {
    let rows = client
        .query(
            "select t.tbl::oid, tidewire.track_template(t.stream), t.key_column, \
                    case when t.columns is not null then 'columns' \
                         when t.exclude is not null then 'exclude' end, \
                    coalesce(t.columns, t.exclude, '{}') \
               from tidewire.tracked as t \
              where $1::oid is null or t.tbl::oid = $1::oid",
            &[&oid],
        )
        .await?;
    let mut definitions = HashMap::with_capacity(rows.len());
    for row in rows {
        definitions.insert(
            row.try_get::<_, u32>(0)?,
            Definition {
                parts: row.try_get(1)?,
                key_column: row.try_get(2)?,
                mode: row.try_get(3)?,
                list: row.try_get(4)?,
            },
        );
    }
    Ok(definitions)
}
