//! The load generator's publishers: paced writes through PostgreSQL, either the SQL function
//! (`tidewire.publish`), a table tracked with `tidewire.track_table` (one table per stream),
//! or `pg_notify` for raw channels (payload `{"n": <publisher seq>, "sent": <micros>}`, the
//! publisher's log being the ground truth). Publishers reconnect and retry through Postgres
//! restarts; failed raw notifications are remembered as "uncertain", never expected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tidewire_shared::backoff::Backoff;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::checker::RangeSet;
use super::histogram::Histogram;

/// How durable events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `select tidewire.publish(...)`.
    Function,
    /// Upserts into a tracked table.
    Table,
    /// Even-numbered streams through the function, odd ones through a tracked table.
    Both,
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishSpec {
    /// PostgreSQL connection string.
    pub url: String,
    /// Durable streams, published to round-robin.
    pub streams: Vec<String>,
    /// Raw channels (without the `raw:` prefix).
    pub raw_channels: Vec<String>,
    /// Durable write path.
    pub via: Via,
    /// Target events per second over all publishers (0: as fast as possible).
    pub rate: f64,
    /// Events per transaction (one statement).
    pub batch: u32,
    /// Concurrent publisher connections.
    pub connections: usize,
    /// Bytes of padding in each event's data.
    pub payload_bytes: usize,
    /// Flow control: never more than this many events ahead of what the clients received.
    pub max_ahead: Option<u64>,
}

/// What the flow control compares against: the clients' receive count.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The clients' counters (`events`: received over all clients).
    pub clients: Arc<super::client::Shared>,
    /// Deliveries one published event makes (subscribers per stream).
    pub per_event: u64,
}

impl Progress {
    /// Events published (`committed`) that the clients have not received yet, on average.
    fn ahead(&self, committed: u64, delivered_at_start: u64) -> u64 {
        let delivered = self
            .clients
            .events
            .load(Ordering::Relaxed)
            .saturating_sub(delivered_at_start);
        committed.saturating_sub(delivered / self.per_event.max(1))
    }
}

/// Publisher counters.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Events committed (statements that returned).
    pub committed: AtomicU64,
    /// Failed statements (connection loss, restarts); retried.
    pub errors: AtomicU64,
    /// Statement round trips, microseconds.
    pub latency: Histogram,
    /// Per raw channel: the numbers sent and confirmed, and those whose fate is unknown.
    pub raw: Mutex<Vec<RawLog>>,
}

/// The publisher's log of one raw channel.
#[derive(Debug, Clone, Default)]
pub struct RawLog {
    /// Channel name.
    pub channel: String,
    /// Highest number handed out.
    pub last: u64,
    /// Numbers whose statement failed (maybe sent, maybe not): not expected.
    pub uncertain: RangeSet,
}

/// A summary for reports.
#[derive(Debug, Clone, Serialize)]
pub struct PublishSummary {
    /// Events committed.
    pub committed: u64,
    /// Failed statements.
    pub errors: u64,
    /// Committed events per second over the publishing time.
    pub events_per_second: f64,
    /// Statement latency, microseconds.
    pub latency_us: super::histogram::Summary,
}

/// A table name for a stream's tracked table (streams may hold `:`/`/`, so by index).
pub fn table_name(index: usize) -> String {
    format!("tidewire_load.items_{index}")
}

/// Creates the tracked tables the spec needs (idempotent).
///
/// # Errors
///
/// When Postgres refuses.
pub async fn prepare(client: &Client, spec: &PublishSpec) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute("create schema if not exists tidewire_load")
        .await?;
    for (index, stream) in spec.streams.iter().enumerate() {
        if !uses_table(spec.via, index) {
            continue;
        }
        let table = table_name(index);
        client
            .batch_execute(&format!(
                "create table if not exists {table} (id text primary key, data jsonb not null)"
            ))
            .await?;
        client
            .execute(
                "select tidewire.track_table($1::text::regclass, $2, 'id')",
                &[&table, stream],
            )
            .await?;
    }
    Ok(())
}

fn uses_table(via: Via, index: usize) -> bool {
    match via {
        Via::Function => false,
        Via::Table => true,
        Via::Both => index % 2 == 1,
    }
}

/// Runs the publishers until `stop`; returns their counters (also live in the `Arc`).
pub fn spawn(
    spec: PublishSpec,
    progress: Option<Progress>,
    stop: CancellationToken,
) -> (Arc<PublishStats>, Vec<tokio::task::JoinHandle<()>>) {
    let stats = Arc::new(PublishStats::default());
    if let Ok(mut raw) = stats.raw.lock() {
        *raw = spec
            .raw_channels
            .iter()
            .map(|channel| RawLog {
                channel: channel.clone(),
                ..RawLog::default()
            })
            .collect();
    }
    let spec = Arc::new(spec);
    let connections = spec.connections.max(1);
    let targets = spec.streams.len() + spec.raw_channels.len();
    let flow = spec.max_ahead.zip(progress).map(|(max_ahead, progress)| {
        let at_start = progress.clients.events.load(Ordering::Relaxed);
        Arc::new(Flow {
            max_ahead,
            progress,
            at_start,
        })
    });
    let tasks = (0..connections)
        .map(|task| {
            let spec = Arc::clone(&spec);
            let stats = Arc::clone(&stats);
            let stop = stop.clone();
            let flow = flow.clone();
            runtime().spawn(async move {
                if targets > 0 {
                    publisher(task, connections, spec, stats, flow, stop).await;
                }
            })
        })
        .collect();
    (stats, tasks)
}

/// The publishers' own runtime, on its own thread: they keep their pace however busy the
/// thousands of reading clients keep the load generator's main runtime.
fn runtime() -> tokio::runtime::Handle {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let own = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("publisher")
            .enable_all()
            .build()
            .ok()
    });
    match own {
        Some(runtime) => runtime.handle().clone(),
        // No thread could be made: share the caller's runtime.
        None => tokio::runtime::Handle::current(),
    }
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        // Ends with the client or the server; failures surface through the client.
        let _ = connection.await;
    });
    Ok(client)
}

/// `--max-ahead`: the publishers wait while the clients are that far behind on average.
#[derive(Debug)]
struct Flow {
    max_ahead: u64,
    progress: Progress,
    at_start: u64,
}

impl Flow {
    /// Waits until the clients are within `max_ahead` events; false if stopped meanwhile.
    async fn wait(&self, stats: &PublishStats, stop: &CancellationToken) -> bool {
        loop {
            let committed = stats.committed.load(Ordering::Relaxed);
            if self.progress.ahead(committed, self.at_start) <= self.max_ahead {
                return true;
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
    }
}

/// One publisher connection: paced batches round-robin over the targets.
async fn publisher(
    task: usize,
    tasks: usize,
    spec: Arc<PublishSpec>,
    stats: Arc<PublishStats>,
    flow: Option<Arc<Flow>>,
    stop: CancellationToken,
) {
    let targets = spec.streams.len() + spec.raw_channels.len();
    let batch = spec.batch.max(1);
    let interval = if spec.rate > 0.0 {
        Some(Duration::from_secs_f64(
            f64::from(batch) * tasks as f64 / spec.rate,
        ))
    } else {
        None
    };
    let pad = "x".repeat(spec.payload_bytes);
    let mut next_at = Instant::now();
    let mut target = task % targets;
    let mut client: Option<Client> = None;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut counter = 0u64;
    while !stop.is_cancelled() {
        if let Some(interval) = interval {
            let now = Instant::now();
            if next_at > now {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(next_at - now) => {}
                }
            } else if now - next_at > Duration::from_secs(1) {
                // Too far behind (Postgres was down): do not burst to catch up.
                next_at = now;
            }
            next_at += interval;
        }
        if let Some(flow) = &flow {
            if !flow.wait(&stats, &stop).await {
                break;
            }
        }
        let connected = match client.take() {
            Some(existing) if !existing.is_closed() => existing,
            _ => match connect(&spec.url).await {
                Ok(fresh) => {
                    backoff.reset();
                    fresh
                }
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff
                        .next_delay(rand::random::<f64>())
                        .unwrap_or(Duration::from_secs(2));
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            },
        };
        // Raw channels are published by the first publisher only: their order is only
        // defined per connection, and the checker follows one publisher's numbers.
        if target >= spec.streams.len() && task != 0 {
            target = (target + 1) % targets;
            continue;
        }
        let began = Instant::now();
        let result = if target < spec.streams.len() {
            counter += u64::from(batch);
            publish_durable(&connected, &spec, target, batch, &pad, task, counter).await
        } else {
            publish_raw(
                &connected,
                &spec,
                &stats,
                target - spec.streams.len(),
                batch,
            )
            .await
        };
        match result {
            Ok(()) => {
                stats.latency.record(began.elapsed().as_micros() as u64);
                stats
                    .committed
                    .fetch_add(u64::from(batch), Ordering::Relaxed);
                client = Some(connected);
            }
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                // Dropping the client closes the connection; a new one is made next turn.
            }
        }
        target = (target + 1) % targets;
    }
}

async fn publish_durable(
    client: &Client,
    spec: &PublishSpec,
    index: usize,
    batch: u32,
    pad: &str,
    task: usize,
    counter: u64,
) -> Result<(), tokio_postgres::Error> {
    let stream = &spec.streams[index];
    let count = i64::from(batch);
    // Keys cycle over 1,000 per stream so that the records table stays bounded.
    let base = i64::try_from(counter % 1000).unwrap_or(0);
    let task = i64::try_from(task).unwrap_or(0);
    // `c` makes every event change its record's value, so clients report every event as a
    // change (and the order of changes can be checked).
    let unique = i64::try_from(counter).unwrap_or(0);
    if uses_table(spec.via, index) {
        let sql = format!(
            "insert into {} (id, data) \
             select 'k' || (($1::bigint + g) % 1000), \
                    jsonb_build_object('t', $2::bigint, 'c', $5::bigint + g, 'pad', $3::text) \
             from generate_series(1, $4::bigint) as g \
             on conflict (id) do update set data = excluded.data",
            table_name(index)
        );
        client
            .execute(&sql, &[&base, &task, &pad, &count, &unique])
            .await?;
    } else if batch == 1 {
        let key = format!("k{base}");
        let data = serde_json::json!({"t": task, "c": unique + 1, "pad": pad});
        client
            .execute(
                "select tidewire.publish($1, $2, 'upsert', $3::jsonb)",
                &[stream, &key, &data],
            )
            .await?;
    } else {
        client
            .execute(
                "select count(tidewire.publish($1, 'k' || (($2::bigint + g) % 1000), 'upsert', \
                   jsonb_build_object('t', $3::bigint, 'c', $6::bigint + g, 'pad', $4::text))) \
                 from generate_series(1, $5::bigint) as g",
                &[stream, &base, &task, &pad, &count, &unique],
            )
            .await?;
    }
    Ok(())
}

async fn publish_raw(
    client: &Client,
    spec: &PublishSpec,
    stats: &PublishStats,
    index: usize,
    batch: u32,
) -> Result<(), tokio_postgres::Error> {
    let channel = &spec.raw_channels[index];
    // Hand out the numbers first; on failure they are recorded as uncertain.
    let first = {
        let Ok(mut raw) = stats.raw.lock() else {
            return Ok(());
        };
        let log = &mut raw[index];
        let first = log.last + 1;
        log.last += u64::from(batch);
        first
    };
    let first_i64 = i64::try_from(first).unwrap_or(i64::MAX);
    let result = client
        .execute(
            "select count(pg_notify($1, json_build_object('n', $2::bigint + g - 1, \
               'sent', (extract(epoch from clock_timestamp()) * 1000000)::bigint)::text)) \
             from generate_series(1, $3::bigint) as g",
            &[channel, &first_i64, &i64::from(batch)],
        )
        .await;
    if result.is_err() {
        if let Ok(mut raw) = stats.raw.lock() {
            raw[index]
                .uncertain
                .insert_range(first, first + u64::from(batch) - 1);
        }
    }
    result.map(|_| ())
}

impl PublishStats {
    /// A summary over `seconds` of publishing.
    pub fn summary(&self, seconds: f64) -> PublishSummary {
        let committed = self.committed.load(Ordering::Relaxed);
        PublishSummary {
            committed,
            errors: self.errors.load(Ordering::Relaxed),
            events_per_second: if seconds > 0.0 {
                committed as f64 / seconds
            } else {
                0.0
            },
            latency_us: self.latency.summary(),
        }
    }
}

/// The committed head `(epoch, seq)` of each stream (missing streams are absent).
///
/// # Errors
///
/// When the query fails.
pub async fn heads(
    client: &Client,
    streams: &[String],
) -> Result<Vec<(String, u64, u64)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "select name, epoch, seq from tidewire.streams where name = any($1)",
            &[&streams],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let name: String = row.get(0);
            let epoch: i64 = row.get(1);
            let seq: i64 = row.get(2);
            (
                name,
                u64::try_from(epoch).unwrap_or(0),
                u64::try_from(seq).unwrap_or(0),
            )
        })
        .collect())
}
