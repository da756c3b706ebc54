//! The load generator's engine, used by the `loadgen` binary and by the fault tests: start
//! clients (and stalled sockets), wait until they are live, publish, drain until every client
//! reached the committed heads, then stop and judge every track against the ground truth.
//!
//! ```text
//! LoadRun::start(spec) -> wait_live() -> start_publishing() -> ... -> stop_publishing()
//!     -> drain() -> finish() -> LoadReport
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tidewire_shared::Position;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checker::{Counts, Kind, RangeSet, Verdict};
use super::client::{self, ClientOutcome, ClientSpec, Shared, Transport};
use super::histogram::Summary;
use super::kernel_tcp::KernelTcp;
use super::procstat;
use super::publish::{self, PublishSpec, PublishStats, PublishSummary};
use super::stalled::{self, Stalled};
use super::straggler::{self, Straggler};

/// Everything a run does.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Relays; client `i` connects to `relays[i % len]`.
    pub relays: Vec<SocketAddr>,
    /// PostgreSQL, for publishing and the ground truth (heads).
    pub database_url: Option<String>,
    /// WebSocket clients.
    pub ws: usize,
    /// SSE clients.
    pub sse: usize,
    /// Every stream (durable names, raw channels as `raw:<channel>`).
    pub streams: Vec<String>,
    /// Streams per client: client `i` subscribes to `streams[(i + j) % M]`, `j < k`.
    pub streams_per_client: usize,
    /// Fresh WebSocket subscribes ask for a snapshot.
    pub snapshot: bool,
    /// Publishing, if this process publishes.
    pub publish: Option<PublishSpec>,
    /// Clients started per second (0: all at once, the connection storm).
    pub connect_rate: f64,
    /// Raw WebSocket sockets that subscribe to the first stream and never read.
    pub stalled: usize,
    /// The same over SSE.
    pub stalled_sse: usize,
    /// Clients resume this many events behind each stream's head (catch-up benchmark).
    pub resume_behind: Option<u64>,
    /// Clients reconnect and resume after losing their connection.
    pub reconnect: bool,
    /// Largest reconnect backoff.
    pub backoff_max: Duration,
    /// TCP connect + handshake limit.
    pub connect_timeout: Duration,
    /// Relay processes to sample for CPU and RSS.
    pub relay_pids: Vec<u32>,
    /// Clients reconnect after this long without hearing anything (keepalive pings, SSE
    /// heartbeats or messages); `None`: never.
    pub silence_timeout: Option<Duration>,
    /// `SO_RCVBUF` of every client socket; `None` leaves it to the kernel's autotuning. See
    /// [`DEFAULT_RECV_BUFFER`].
    pub recv_buffer: Option<u32>,
}

/// The client sockets' receive buffer by default: 64 KiB (the kernel doubles it).
///
/// Ten thousand autotuned receive buffers (up to `tcp_rmem`'s 32 MiB each here) on the same
/// host as the relay drive the kernel into TCP memory pressure: it then drops arriving
/// segments (`TCPRcvQDrop`), the relay's side retransmits with exponential backoff, and a
/// client can hear nothing for minutes while the relay is idle. Measured on this machine: a
/// saturated 10,000-client SSE run left 3 to 9 clients hundreds of events behind 60 s after
/// publishing stopped. A browser behind a real network has a bounded window too.
pub const DEFAULT_RECV_BUFFER: u32 = 64 * 1024;

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            relays: Vec::new(),
            database_url: None,
            ws: 0,
            sse: 0,
            streams: vec!["load-0".into()],
            streams_per_client: 1,
            snapshot: false,
            publish: None,
            connect_rate: 0.0,
            stalled: 0,
            stalled_sse: 0,
            resume_behind: None,
            reconnect: true,
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(30),
            relay_pids: Vec::new(),
            silence_timeout: None,
            recv_buffer: Some(DEFAULT_RECV_BUFFER),
        }
    }
}

/// A run in progress.
#[derive(Debug)]
pub struct LoadRun {
    spec: LoadSpec,
    shared: Arc<Shared>,
    /// Applied seq per client and stream (`client * per_client + j`).
    progress: Arc<[std::sync::atomic::AtomicU64]>,
    /// The streams of each client, in slot order.
    assignment: Vec<Vec<String>>,
    stop_clients: CancellationToken,
    clients: Vec<JoinHandle<ClientOutcome>>,
    stalled: Option<Stalled>,
    started: Instant,
    live_after: Option<Duration>,
    publishing: Option<Publishing>,
    publish_seconds: f64,
    publish_stats: Option<Arc<PublishStats>>,
    events_at_publish_start: u64,
    events_at_publish_stop: u64,
    relay_before: Option<procstat::ProcSample>,
    kernel_before: Option<KernelTcp>,
    relay_live: Option<procstat::ProcSample>,
    relay_publish_start: Option<procstat::ProcSample>,
    relay_publish_stop: Option<procstat::ProcSample>,
    /// This process (the load generator) at the start and end of the window.
    own_window: Option<(procstat::ProcSample, procstat::ProcSample)>,
    drained_after: Option<Duration>,
    rate_series: Vec<u64>,
    latency_series: Vec<WindowLatency>,
}

#[derive(Debug)]
struct Publishing {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    started: Instant,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The spec cannot work.
    #[error("{0}")]
    Spec(String),
}

async fn pg(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // Ends with the client; errors surface through it.
        let _ = connection.await;
    });
    Ok(client)
}

impl LoadRun {
    /// Prepares publishing (tracked tables), computes resume positions, and starts the
    /// clients (paced by `connect_rate`) and the stalled sockets.
    ///
    /// # Errors
    ///
    /// [`RunError`] when the spec is unusable or Postgres refuses the preparation.
    pub async fn start(spec: LoadSpec) -> Result<Self, RunError> {
        if spec.relays.is_empty() {
            return Err(RunError::Spec("no relay address".into()));
        }
        if spec.streams.is_empty() {
            return Err(RunError::Spec("no stream".into()));
        }
        let mut since: HashMap<String, Position> = HashMap::new();
        if let Some(url) = &spec.database_url {
            let client = pg(url).await?;
            if let Some(publish) = &spec.publish {
                publish::prepare(&client, publish).await?;
            }
            if let Some(behind) = spec.resume_behind {
                for (name, epoch, seq) in publish::heads(&client, &spec.streams).await? {
                    since.insert(
                        name,
                        Position {
                            epoch,
                            seq: seq.saturating_sub(behind),
                        },
                    );
                }
            }
        } else if spec.publish.is_some() || spec.resume_behind.is_some() {
            return Err(RunError::Spec(
                "publishing and resuming need --database-url".into(),
            ));
        }
        let relay_before = sample(&spec.relay_pids);
        let kernel_before = KernelTcp::sample();
        let shared = Arc::new(Shared::default());
        let stop_clients = CancellationToken::new();
        let started = Instant::now();
        let total = spec.ws + spec.sse;
        let per_client = spec.streams_per_client.clamp(1, spec.streams.len());
        let mut clients = Vec::with_capacity(total);
        let progress: Arc<[std::sync::atomic::AtomicU64]> = (0..total * per_client)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        let mut assignment = Vec::with_capacity(total);
        let pace =
            (spec.connect_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / spec.connect_rate));
        for id in 0..total {
            let streams: Vec<String> = (0..per_client)
                .map(|offset| spec.streams[(id + offset) % spec.streams.len()].clone())
                .collect();
            let client_since = streams
                .iter()
                .filter_map(|stream| {
                    since
                        .get(stream)
                        .map(|position| (stream.clone(), *position))
                })
                .collect();
            let client_spec = ClientSpec {
                id,
                transport: if id < spec.ws {
                    Transport::Ws
                } else {
                    Transport::Sse
                },
                // Client `i` starts on relay `i % len` and fails over to the next ones.
                addrs: (0..spec.relays.len())
                    .map(|offset| spec.relays[(id + offset) % spec.relays.len()])
                    .collect(),
                silence_timeout: spec.silence_timeout,
                streams,
                snapshot: spec.snapshot,
                since: client_since,
                progress: Arc::clone(&progress),
                progress_slot: id * per_client,
                reconnect: spec.reconnect,
                backoff_max: spec.backoff_max,
                connect_timeout: spec.connect_timeout,
                recv_buffer: spec.recv_buffer,
            };
            assignment.push(client_spec.streams.clone());
            clients.push(tokio::spawn(client::run(
                client_spec,
                Arc::clone(&shared),
                stop_clients.clone(),
            )));
            if let Some(pace) = pace {
                tokio::time::sleep_until((started + pace.mul_f64(id as f64 + 1.0)).into()).await;
            }
        }
        let stalled = if spec.stalled + spec.stalled_sse > 0 {
            Some(
                stalled::open(
                    spec.relays[0],
                    &spec.streams[0],
                    spec.stalled,
                    spec.stalled_sse,
                    spec.connect_timeout,
                )
                .await,
            )
        } else {
            None
        };
        Ok(Self {
            spec,
            shared,
            progress,
            assignment,
            stop_clients,
            clients,
            stalled,
            started,
            live_after: None,
            publishing: None,
            publish_seconds: 0.0,
            publish_stats: None,
            events_at_publish_start: 0,
            events_at_publish_stop: 0,
            relay_before,
            kernel_before,
            relay_live: None,
            relay_publish_start: None,
            relay_publish_stop: None,
            own_window: None,
            drained_after: None,
            rate_series: Vec::new(),
            latency_series: Vec::new(),
        })
    }

    /// The counters shared by every client.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Clients in this process.
    pub fn clients(&self) -> usize {
        self.spec.ws + self.spec.sse
    }

    /// Waits until every client had all its streams live once; returns the time since
    /// [`LoadRun::start`] began, or `None` after `timeout`.
    pub async fn wait_live(&mut self, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        let total = self.clients() as u64;
        loop {
            if self.shared.clients_live.load(Ordering::Relaxed) >= total {
                let after = self.started.elapsed();
                self.live_after = Some(after);
                self.relay_live = sample(&self.spec.relay_pids);
                return Some(after);
            }
            if Instant::now() >= deadline {
                self.relay_live = sample(&self.spec.relay_pids);
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Samples the relay's RSS now (for idle-memory measurements after a settle time).
    pub fn sample_relay_now(&mut self) {
        self.relay_live = sample(&self.spec.relay_pids);
    }

    /// Starts the publishers of the spec (if it has any) and the measurement window.
    pub fn start_publishing(&mut self) {
        let stop = CancellationToken::new();
        let tasks = match self.spec.publish.clone() {
            Some(publish) => {
                let streams = publish.streams.len().max(1);
                let subscriptions = self.assignment.iter().map(Vec::len).sum::<usize>();
                let progress = publish::Progress {
                    clients: Arc::clone(&self.shared),
                    per_event: u64::try_from(subscriptions.div_ceil(streams)).unwrap_or(1),
                };
                let (stats, tasks) = publish::spawn(publish, Some(progress), stop.clone());
                self.publish_stats = Some(stats);
                tasks
            }
            None => Vec::new(),
        };
        self.events_at_publish_start = self.shared.events.load(Ordering::Relaxed);
        self.relay_publish_start = sample(&self.spec.relay_pids);
        if let Some(own) = procstat::sample("self") {
            self.own_window = Some((own, own));
        }
        self.publishing = Some(Publishing {
            stop,
            tasks,
            started: Instant::now(),
        });
    }

    /// Keeps running for `duration`, recording the clients' receive rate every second.
    pub async fn run_for(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        let mut last = self.shared.events.load(Ordering::Relaxed);
        let mut latency_before = self.shared.latency.counts();
        while Instant::now() < end {
            let step = (end - Instant::now()).min(Duration::from_secs(1));
            tokio::time::sleep(step).await;
            let now = self.shared.events.load(Ordering::Relaxed);
            self.rate_series.push(now - last);
            last = now;
            let window = self.shared.latency.window(&latency_before);
            latency_before = self.shared.latency.counts();
            self.latency_series.push(WindowLatency {
                p99: window.quantile(0.99),
                max: window.quantile(1.0),
            });
        }
    }

    /// Stops the publishers (if any), waits for them, and ends the measurement window.
    pub async fn stop_publishing(&mut self) {
        if let Some(publishing) = self.publishing.take() {
            publishing.stop.cancel();
            for task in publishing.tasks {
                // A panicking publisher shows up as missing commits, not as a crash here.
                let _ = task.await;
            }
            self.publish_seconds = publishing.started.elapsed().as_secs_f64();
            self.events_at_publish_stop = self.shared.events.load(Ordering::Relaxed);
            self.relay_publish_stop = sample(&self.spec.relay_pids);
            if let (Some((start, _)), Some(now)) = (self.own_window, procstat::sample("self")) {
                self.own_window = Some((start, now));
            }
        }
    }

    /// Reads the committed heads (and the raw publisher logs) as the drain targets, then
    /// waits until every client reached them; returns the time it took, `None` on timeout.
    ///
    /// # Errors
    ///
    /// When the heads cannot be read.
    pub async fn drain(&mut self, timeout: Duration) -> Result<Option<Duration>, RunError> {
        let heads = self.heads().await?;
        let began = Instant::now();
        let deadline = began + timeout;
        loop {
            if self.behind(&heads) == 0 {
                self.drained_after = Some(began.elapsed());
                return Ok(self.drained_after);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many client streams have not reached their head yet.
    pub fn behind(&self, heads: &HashMap<String, u64>) -> usize {
        let per_client = self.assignment.first().map_or(1, Vec::len);
        self.assignment
            .iter()
            .enumerate()
            .map(|(client, streams)| {
                streams
                    .iter()
                    .enumerate()
                    .filter(|(offset, stream)| {
                        let head = heads.get(stream.as_str()).copied().unwrap_or(0);
                        let applied =
                            self.progress[client * per_client + offset].load(Ordering::Relaxed);
                        applied < head
                    })
                    .count()
            })
            .sum()
    }

    /// The ground truth: durable heads from the outbox, raw numbers from the publisher log.
    async fn heads(&self) -> Result<HashMap<String, u64>, RunError> {
        let mut heads = HashMap::new();
        if let Some(url) = &self.spec.database_url {
            let client = pg(url).await?;
            let durable: Vec<String> = self
                .spec
                .streams
                .iter()
                .filter(|stream| !stream.starts_with("raw:"))
                .cloned()
                .collect();
            for (name, _, seq) in publish::heads(&client, &durable).await? {
                heads.insert(name, seq);
            }
        }
        for log in self.raw_logs() {
            heads.insert(format!("raw:{}", log.channel), log.last);
        }
        Ok(heads)
    }

    fn raw_logs(&self) -> Vec<publish::RawLog> {
        self.publish_stats
            .as_ref()
            .and_then(|stats| stats.raw.lock().ok().map(|raw| raw.clone()))
            .unwrap_or_default()
    }

    /// Stops every client and judges every track; the report of the run.
    ///
    /// # Errors
    ///
    /// When the heads cannot be read.
    pub async fn finish(mut self) -> Result<LoadReport, RunError> {
        self.stop_publishing().await;
        let heads = self.heads().await?;
        let behind_at_end = self.behind(&heads);
        self.stop_clients.cancel();
        let mut outcomes = Vec::with_capacity(self.clients.len());
        for task in std::mem::take(&mut self.clients) {
            if let Ok(outcome) = task.await {
                outcomes.push(outcome);
            }
        }
        let stalled = match self.stalled.take() {
            Some(stalled) => Some(stalled.finish().await),
            None => None,
        };
        let stragglers = straggler::find(&outcomes, &heads);
        let kernel_tcp = self
            .kernel_before
            .zip(KernelTcp::sample())
            .map(|(before, after)| after.since(&before));
        let raw_logs = self.raw_logs();
        let uncertain: HashMap<String, RangeSet> = raw_logs
            .iter()
            .map(|log| (format!("raw:{}", log.channel), log.uncertain.clone()))
            .collect();
        let mut invariants = Invariants::default();
        let mut connects = 0;
        let mut close_codes: HashMap<u16, u64> = HashMap::new();
        let mut never_live = 0;
        for outcome in &outcomes {
            connects += outcome.connects;
            for code in &outcome.close_codes {
                *close_codes.entry(*code).or_default() += 1;
            }
            if outcome.time_to_live.is_none() {
                never_live += 1;
            }
            for (stream, track) in &outcome.tracks {
                let head = heads.get(stream).copied().unwrap_or(0);
                let empty = RangeSet::default();
                let verdict =
                    track.verdict_excluding(head, uncertain.get(stream).unwrap_or(&empty));
                invariants.add(outcome.id, stream, track.kind(), &verdict);
            }
        }
        let publish = self
            .publish_stats
            .as_ref()
            .map(|stats| stats.summary(self.publish_seconds));
        let delivered_during_publish = self.events_at_publish_stop - self.events_at_publish_start;
        let relay = RelayUsage::from_samples(
            self.relay_before,
            self.relay_live,
            self.relay_publish_start,
            self.relay_publish_stop,
            self.clients() + self.spec.stalled + self.spec.stalled_sse,
        );
        let mut close_codes: Vec<(u16, u64)> = close_codes.into_iter().collect();
        close_codes.sort_unstable();
        Ok(LoadReport {
            ws: self.spec.ws,
            sse: self.spec.sse,
            streams: self.spec.streams.len(),
            streams_per_client: self.spec.streams_per_client,
            time_to_all_live_ms: self.live_after.map(|after| after.as_secs_f64() * 1000.0),
            never_live,
            connects,
            connect_failures: self.shared.connect_failures.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            disconnects: self.shared.disconnects.load(Ordering::Relaxed),
            malformed: self.shared.malformed.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
            close_codes,
            publish,
            publish_seconds: self.publish_seconds,
            deliveries_during_publish: delivered_during_publish,
            deliveries_per_second: if self.publish_seconds > 0.0 {
                delivered_during_publish as f64 / self.publish_seconds
            } else {
                0.0
            },
            rate_series: std::mem::take(&mut self.rate_series),
            latency_series_us: std::mem::take(&mut self.latency_series),
            drain_ms: self.drained_after.map(|after| after.as_secs_f64() * 1000.0),
            behind_at_end,
            stragglers,
            kernel_tcp,
            loadgen_cpu_cores: self
                .own_window
                .map(|(start, stop)| procstat::cpu_cores(&start, &stop)),
            latency_us: self.shared.latency.summary(),
            catchup_latency_us: self.shared.catchup_latency.summary(),
            connect_to_live_us: self.shared.connect_to_live.summary(),
            reconnect_delay_ms: self.shared.reconnect_delay_ms.summary(),
            outage_ms: self.shared.outage_ms.summary(),
            invariants,
            relay,
            stalled,
        })
    }
}

fn sample(pids: &[u32]) -> Option<procstat::ProcSample> {
    (!pids.is_empty()).then(|| procstat::sample_all(pids))
}

/// Relay CPU and memory over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayUsage {
    /// RSS before the clients connected, KiB.
    pub rss_before_kib: Option<u64>,
    /// RSS once every client was live (or at the last explicit sample), KiB.
    pub rss_live_kib: Option<u64>,
    /// RSS at the end of publishing, KiB.
    pub rss_end_kib: Option<u64>,
    /// `(rss_live - rss_before) / connections`, bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU while publishing, in cores (1.0 = one core).
    pub cpu_cores_publishing: Option<f64>,
    /// Open file descriptors once live.
    pub fds_live: Option<u64>,
}

impl RelayUsage {
    fn from_samples(
        before: Option<procstat::ProcSample>,
        live: Option<procstat::ProcSample>,
        publish_start: Option<procstat::ProcSample>,
        publish_stop: Option<procstat::ProcSample>,
        connections: usize,
    ) -> Option<Self> {
        let before = before?;
        Some(Self {
            rss_before_kib: Some(before.rss_kib),
            rss_live_kib: live.map(|sample| sample.rss_kib),
            rss_end_kib: publish_stop.map(|sample| sample.rss_kib),
            rss_per_connection_bytes: live.filter(|_| connections > 0).map(|sample| {
                (sample.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / connections as f64
            }),
            cpu_cores_publishing: match (publish_start, publish_stop) {
                (Some(start), Some(stop)) => Some(procstat::cpu_cores(&start, &stop)),
                _ => None,
            },
            fds_live: live.map(|sample| sample.fds),
        })
    }
}

/// Invariant totals over every client and stream, with the first failing tracks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Invariants {
    /// Tracks judged.
    pub tracks: u64,
    /// Tracks that failed their pass rule.
    pub failing_tracks: u64,
    /// Seqs expected over all tracks.
    pub expected: u64,
    /// Lost seqs.
    pub lost: u64,
    /// Silently lost seqs.
    pub silent_loss: u64,
    /// Wire and delivery counters summed.
    pub counts: Counts,
    /// Tracks that never got a baseline.
    pub never_subscribed: u64,
    /// Durable tracks pass (lost = dup_app = ooo = silent_loss = 0).
    pub durable_pass: bool,
    /// Raw tracks pass (dup_app = ooo = silent_loss = 0).
    pub raw_pass: bool,
    /// Up to 20 failing tracks: client, stream, verdict.
    pub failures: Vec<(usize, String, Verdict)>,
    /// Failing durable tracks.
    pub durable_failures: u64,
    /// Failing raw-channel tracks.
    pub raw_failures: u64,
}

impl Invariants {
    fn add(&mut self, client: usize, stream: &str, kind: Kind, verdict: &Verdict) {
        self.tracks += 1;
        self.expected += verdict.expected;
        self.lost += verdict.lost;
        self.silent_loss += verdict.silent_loss;
        self.counts.add(&verdict.counts);
        if verdict.never_subscribed {
            self.never_subscribed += 1;
        }
        if !verdict.passes(kind) {
            self.failing_tracks += 1;
            match kind {
                Kind::Durable => self.durable_failures += 1,
                Kind::Raw => self.raw_failures += 1,
            }
            if self.failures.len() < 20 {
                self.failures.push((client, stream.to_owned(), *verdict));
            }
        }
        self.durable_pass = self.durable_failures == 0;
        self.raw_pass = self.raw_failures == 0;
    }

    /// Whether every track passed.
    pub fn pass(&self) -> bool {
        self.failing_tracks == 0
    }
}

/// The live end-to-end latency of one second of a run, microseconds (0 when nothing arrived).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WindowLatency {
    /// 99th percentile of that second.
    pub p99: u64,
    /// Highest value of that second (within 1%).
    pub max: u64,
}

/// The summary of one run (one process).
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// WebSocket clients.
    pub ws: usize,
    /// SSE clients.
    pub sse: usize,
    /// Streams.
    pub streams: usize,
    /// Streams per client.
    pub streams_per_client: usize,
    /// Time from start until every client was live, ms.
    pub time_to_all_live_ms: Option<f64>,
    /// Clients that never went live.
    pub never_live: u64,
    /// Successful connections (first ones and reconnects).
    pub connects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Attempts refused with an HTTP status (503 overloaded, ...).
    pub refused: u64,
    /// Connections lost during the run.
    pub disconnects: u64,
    /// Messages that did not parse.
    pub malformed: u64,
    /// `error` messages received.
    pub errors: u64,
    /// WebSocket close codes received, with counts.
    pub close_codes: Vec<(u16, u64)>,
    /// The publishers' numbers (if this process published).
    pub publish: Option<PublishSummary>,
    /// Seconds of publishing.
    pub publish_seconds: f64,
    /// Events received by all clients while publishing.
    pub deliveries_during_publish: u64,
    /// `deliveries_during_publish / publish_seconds`.
    pub deliveries_per_second: f64,
    /// Events received per second, sampled every second of `run_for`.
    pub rate_series: Vec<u64>,
    /// Live end-to-end latency of each of those seconds, microseconds: where in a run a
    /// p99 was made (a fault, a mass disconnect) rather than only that it was.
    pub latency_series_us: Vec<WindowLatency>,
    /// Time from the end of publishing until every client reached the heads, ms; `None`
    /// when the drain timed out, and then `lost` counts events not received *yet*.
    pub drain_ms: Option<f64>,
    /// Client streams still behind the heads when the run ended (0 after a full drain).
    pub behind_at_end: usize,
    /// The first client streams behind at the end, with what each last heard.
    pub stragglers: Vec<Straggler>,
    /// The host's TCP trouble over the run (memory pressure, drops, retransmissions).
    pub kernel_tcp: Option<KernelTcp>,
    /// CPU of this load generator process during the window, in cores.
    pub loadgen_cpu_cores: Option<f64>,
    /// Live events: receive time minus commit time, microseconds.
    pub latency_us: Summary,
    /// Replayed events: receive time minus commit time, microseconds.
    pub catchup_latency_us: Summary,
    /// Connection attempt to every stream live, microseconds.
    pub connect_to_live_us: Summary,
    /// Reconnect backoff delays chosen, ms (the jitter histogram).
    pub reconnect_delay_ms: Summary,
    /// Connection lost to live again, ms.
    pub outage_ms: Summary,
    /// The invariant checker's totals.
    pub invariants: Invariants,
    /// Relay CPU and memory (with `--relay-pid`).
    pub relay: Option<RelayUsage>,
    /// Stalled consumers.
    pub stalled: Option<stalled::StalledReport>,
}
