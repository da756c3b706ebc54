//! Fault scenarios (relay kills, PostgreSQL restarts, stalled consumers, storms),
//! parameterised so the same code runs as a short test (`tests/e2e/load.rs`) and as a long
//! run (`fault_soak`, from `scripts/bench.d/`). Each builds its own PostgreSQL and relay(s),
//! drives clients with [`LoadRun`], injects faults, and returns a [`ScenarioReport`] with
//! per-cycle detection and catch-up times and the invariant checker's verdict. The caller
//! decides what passes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tidewire_relay::config::Options;
use tidewire_relay::hub::Hub;

use super::histogram::Histogram;
use super::procstat;
use super::publish::{PublishSpec, Via};
use super::relay_process::RelayProcess;
use super::run::{LoadReport, LoadRun, LoadSpec, RunError};
use crate::proxy::{self, Faults};
use crate::relay::TestRelay;
use crate::TestPg;

/// Any scenario failure (setup, not a failed invariant: those are in the report).
pub type ScenarioError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One injected fault and how the system took it.
#[derive(Debug, Clone, Serialize)]
pub struct Cycle {
    /// What was done.
    pub fault: String,
    /// Fault to the relay noticing it (listener failure counter, dropped connection), ms.
    pub detection_ms: Option<f64>,
    /// Fault to every client having every event committed so far, ms.
    pub catch_up_ms: Option<f64>,
}

impl Cycle {
    /// A cycle of `fault`: noticed `detected` after the fault, every client caught up
    /// `caught_up` after it (`None`: not measured, or never).
    fn new(
        fault: impl Into<String>,
        detected: Option<Duration>,
        caught_up: Option<Duration>,
    ) -> Self {
        let ms = |after: Duration| after.as_secs_f64() * 1000.0;
        Self {
            fault: fault.into(),
            detection_ms: detected.map(ms),
            catch_up_ms: caught_up.map(ms),
        }
    }
}

/// What a scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The scenario.
    pub name: String,
    /// One entry per fault.
    pub cycles: Vec<Cycle>,
    /// The load run: invariants, latency, reconnects.
    pub load: LoadReport,
    /// Scenario-specific numbers.
    pub extra: serde_json::Value,
}

impl ScenarioReport {
    /// One line per cycle plus the verdict, for logs.
    pub fn describe(&self) -> String {
        let mut text = format!("{}:\n", self.name);
        for (index, cycle) in self.cycles.iter().enumerate() {
            text.push_str(&format!(
                "  cycle {index:>2} {:<22} detected {:>8} caught up {:>8}\n",
                cycle.fault,
                cycle
                    .detection_ms
                    .map_or("-".into(), |ms| format!("{ms:.0} ms")),
                cycle
                    .catch_up_ms
                    .map_or("never".into(), |ms| format!("{ms:.0} ms"))
            ));
        }
        let invariants = &self.load.invariants;
        text.push_str(&format!(
            "  expected {} delivered {} lost {} dup_app {} dup_wire {} ooo {} silent_loss {} \
             gaps {} gap_advisories {} resyncs {} -> {}\n  extra {}\n",
            invariants.expected,
            invariants.counts.delivered,
            invariants.lost,
            invariants.counts.dup_app,
            invariants.counts.dup_wire,
            invariants.counts.ooo,
            invariants.silent_loss,
            invariants.counts.gaps,
            invariants.counts.gap_advisories,
            invariants.counts.resyncs,
            if invariants.pass() { "PASS" } else { "FAIL" },
            self.extra
        ));
        text
    }
}

/// Relay settings that notice faults fast (as the relay-core fault tests use).
pub fn fast_relay(options: &mut Options) {
    options.pg_health_interval_ms = 300;
    options.pg_timeout_ms = 1500;
    options.outbox_poll_ms = 300;
    options.pg_reconnect_max_ms = 400;
    options.janitor_interval_ms = 1000;
    options.shutdown_grace_ms = 1000;
    options.max_connections = 20_000;
}

/// The same settings as relay flags, for [`RelayProcess`].
pub fn fast_relay_args() -> Vec<String> {
    [
        "--pg-health-interval-ms",
        "300",
        "--pg-timeout-ms",
        "1500",
        "--outbox-poll-ms",
        "300",
        "--pg-reconnect-max-ms",
        "400",
        "--shutdown-grace-ms",
        "1000",
        "--max-connections",
        "20000",
        "--log",
        "warn",
    ]
    .iter()
    .map(|&flag| flag.to_owned())
    .collect()
}

/// Common load parameters.
#[derive(Debug, Clone)]
pub struct Load {
    /// WebSocket clients.
    pub ws: usize,
    /// SSE clients.
    pub sse: usize,
    /// Durable events per second.
    pub rate: f64,
    /// Also a raw channel (published with pg_notify) next to the durable stream.
    pub raw: bool,
    /// Seconds of load between faults.
    pub settle: f64,
    /// Longest wait for clients to catch up after a fault and at the end.
    pub catch_up_timeout: Duration,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            ws: 40,
            sse: 10,
            rate: 100.0,
            raw: true,
            settle: 1.0,
            catch_up_timeout: Duration::from_secs(30),
        }
    }
}

fn spec(load: &Load, relays: Vec<SocketAddr>, url: &str, name: &str) -> LoadSpec {
    let stream = format!("{name}-0");
    let mut streams = vec![stream.clone()];
    let mut raw_channels = Vec::new();
    if load.raw {
        let channel = format!("{}_raw", name.replace('-', "_"));
        streams.push(format!("raw:{channel}"));
        raw_channels.push(channel);
    }
    LoadSpec {
        relays,
        database_url: Some(url.to_owned()),
        ws: load.ws,
        sse: load.sse,
        streams_per_client: streams.len(),
        streams,
        publish: Some(PublishSpec {
            url: url.to_owned(),
            streams: vec![stream],
            raw_channels,
            via: Via::Function,
            rate: load.rate,
            batch: 1,
            connections: 2,
            payload_bytes: 32,
            max_ahead: None,
        }),
        backoff_max: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(5),
        ..LoadSpec::default()
    }
}

/// Waits until every client has every event committed by now; the time it took.
pub async fn caught_up(
    run: &LoadRun,
    url: &str,
    streams: &[String],
    timeout: Duration,
) -> Result<Option<Duration>, RunError> {
    let began = Instant::now();
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // Ends with the client.
        let _ = connection.await;
    });
    let durable: Vec<String> = streams
        .iter()
        .filter(|stream| !stream.starts_with("raw:"))
        .cloned()
        .collect();
    let heads: HashMap<String, u64> = super::publish::heads(&client, &durable)
        .await?
        .into_iter()
        .map(|(name, _, seq)| (name, seq))
        .collect();
    while began.elapsed() < timeout {
        if run.behind(&heads) == 0 {
            return Ok(Some(began.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

/// Polls `changed` every 10 ms until it is true; the time since `began` (the fault), `None`
/// after `timeout` from `began`.
async fn until(
    began: Instant,
    timeout: Duration,
    mut changed: impl FnMut() -> bool,
) -> Option<Duration> {
    while began.elapsed() < timeout {
        if changed() {
            return Some(began.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// The relay's LISTEN-side counters, for reports.
fn listener_json(stats: &tidewire_relay::pg::listener::ListenerStatsSnapshot) -> serde_json::Value {
    serde_json::json!({
        "notifications": stats.notifications,
        "failures": stats.failures,
        "reconnects": stats.reconnects,
        "listens": stats.listens,
        "unlistens": stats.unlistens,
        "outbox_reads": stats.outbox_reads,
        "raw_events": stats.raw_events,
        "raw_gaps": stats.raw_gaps,
    })
}

fn failures(hub: &Hub) -> u64 {
    hub.listener.stats().snapshot().failures
}

/// Ends a run: stop publishing, drain, judge.
async fn conclude(mut run: LoadRun, timeout: Duration) -> Result<LoadReport, RunError> {
    run.stop_publishing().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.drain(timeout).await?;
    run.finish().await
}

/// How Postgres is hurt in [`pg_restarts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgFault {
    /// `pg_ctl restart -m fast`.
    Fast,
    /// `pg_ctl stop -m immediate`, then start.
    Immediate,
    /// kill -9 of the postmaster, then start.
    Kill9,
    /// `pg_terminate_backend` of the relay's LISTEN connection.
    TerminateListen,
}

/// Postgres restarted `cycles` times (the faults in turn) under load with a publisher that
/// retries; durable streams must lose, duplicate and reorder nothing, raw channels must not
/// lose silently.
///
/// # Errors
///
/// When the cluster, the relay or the load cannot be set up.
pub async fn pg_restarts(
    load: &Load,
    faults: &[PgFault],
    cycles: usize,
) -> Result<ScenarioReport, ScenarioError> {
    // Commits acknowledged to the publisher must survive an immediate stop or a kill -9.
    let mut pg = TestPg::try_start(&[("synchronous_commit", "on")]).await?;
    let relay = TestRelay::spawn_with(&pg, fast_relay).await;
    let hub = Arc::clone(relay.hub());
    let spec = spec(load, vec![relay.addr()], &pg.url(), "restarts");
    let streams = spec.streams.clone();
    let mut run = LoadRun::start(spec).await?;
    run.wait_live(Duration::from_secs(60))
        .await
        .ok_or("clients did not go live")?;
    run.start_publishing();
    run.run_for(Duration::from_secs_f64(load.settle)).await;
    let mut report_cycles = Vec::new();
    for cycle in 0..cycles {
        let fault = faults[cycle % faults.len()];
        let before = failures(&hub);
        let began = Instant::now();
        let detector_hub = Arc::clone(&hub);
        let detector = tokio::spawn(async move {
            until(began, Duration::from_secs(30), || {
                failures(&detector_hub) > before
            })
            .await
        });
        match fault {
            PgFault::Fast => pg.restart_fast().await,
            PgFault::Immediate => pg.restart_immediate().await,
            PgFault::Kill9 => pg.kill9_and_restart().await,
            PgFault::TerminateListen => {
                pg.terminate_backends_where("application_name = 'tidewire-relay listen'")
                    .await;
            }
        }
        let detected = detector.await.ok().flatten();
        let catch_up = caught_up(&run, &pg.url(), &streams, load.catch_up_timeout).await?;
        report_cycles.push(Cycle::new(
            format!("{fault:?}"),
            detected,
            catch_up.map(|_| began.elapsed()),
        ));
        run.run_for(Duration::from_secs_f64(load.settle)).await;
    }
    let load_report = conclude(run, load.catch_up_timeout).await?;
    let stats = hub.listener.stats().snapshot();
    relay.shutdown().await;
    Ok(ScenarioReport {
        name: format!("postgres restarted {cycles} times"),
        cycles: report_cycles,
        load: load_report,
        extra: serde_json::json!({ "listener": listener_json(&stats) }),
    })
}

/// Postgres frozen with SIGSTOP for `freeze`, then SIGCONT: the relay must notice within
/// its health timeout and recover fully; memory is sampled before, during and after.
///
/// # Errors
///
/// When the cluster, the relay or the load cannot be set up.
pub async fn pg_freeze(
    load: &Load,
    freeze: Duration,
    cycles: usize,
) -> Result<ScenarioReport, ScenarioError> {
    let mut pg = TestPg::try_start(&[]).await?;
    let relay = TestRelay::spawn_with(&pg, fast_relay).await;
    let hub = Arc::clone(relay.hub());
    let spec = spec(load, vec![relay.addr()], &pg.url(), "freeze");
    let streams = spec.streams.clone();
    let mut run = LoadRun::start(spec).await?;
    run.wait_live(Duration::from_secs(60))
        .await
        .ok_or("clients did not go live")?;
    run.start_publishing();
    run.run_for(Duration::from_secs_f64(load.settle)).await;
    let rss_before = procstat::sample("self").map_or(0, |sample| sample.rss_kib);
    let mut rss_frozen_max = 0;
    let mut report_cycles = Vec::new();
    for _ in 0..cycles {
        let before = failures(&hub);
        let began = Instant::now();
        pg.freeze();
        let mut detected = None;
        while began.elapsed() < freeze {
            if detected.is_none() && failures(&hub) > before {
                detected = Some(began.elapsed());
            }
            rss_frozen_max =
                rss_frozen_max.max(procstat::sample("self").map_or(0, |sample| sample.rss_kib));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pg.thaw();
        let thawed = Instant::now();
        let catch_up = caught_up(&run, &pg.url(), &streams, load.catch_up_timeout).await?;
        report_cycles.push(Cycle::new(
            format!("SIGSTOP {freeze:?}"),
            detected,
            catch_up.map(|_| thawed.elapsed()),
        ));
        run.run_for(Duration::from_secs_f64(load.settle)).await;
    }
    let rss_after = procstat::sample("self").map_or(0, |sample| sample.rss_kib);
    let load_report = conclude(run, load.catch_up_timeout).await?;
    relay.shutdown().await;
    Ok(ScenarioReport {
        name: format!("postgres frozen {cycles} x {freeze:?}"),
        cycles: report_cycles,
        load: load_report,
        extra: serde_json::json!({
            "process_rss_kib_before": rss_before,
            "process_rss_kib_frozen_max": rss_frozen_max,
            "process_rss_kib_after": rss_after,
            "note": "catch_up_ms is measured from SIGCONT",
        }),
    })
}

/// Counts of `histogram` per `width`-ms bucket up to `limit` (the reconnect jitter).
pub fn buckets(histogram: &Histogram, width: u64, limit: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut low = 0;
    while low < limit {
        out.push((low, histogram.count_between(low, low + width)));
        low += width;
    }
    out
}

/// A relay process killed with SIGKILL and restarted on its address `cycles` times under
/// load: clients reconnect with full jitter and resume from their positions.
///
/// # Errors
///
/// When the cluster, the relay or the load cannot be set up.
pub async fn relay_kills(
    load: &Load,
    binary: PathBuf,
    cycles: usize,
    down: Duration,
) -> Result<ScenarioReport, ScenarioError> {
    let pg = TestPg::try_start(&[]).await?;
    let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut relay =
        RelayProcess::spawn(&binary, &pg.url(), any_port, &fast_relay_args(), None).await?;
    let spec = spec(load, vec![relay.addr()], &pg.url(), "kills");
    let streams = spec.streams.clone();
    let mut run = LoadRun::start(spec).await?;
    run.wait_live(Duration::from_secs(60))
        .await
        .ok_or("clients did not go live")?;
    run.start_publishing();
    run.run_for(Duration::from_secs_f64(load.settle)).await;
    let mut report_cycles = Vec::new();
    for _ in 0..cycles {
        let began = Instant::now();
        relay.kill9().await;
        tokio::time::sleep(down).await;
        relay.start().await?;
        let catch_up = caught_up(&run, &pg.url(), &streams, load.catch_up_timeout).await?;
        report_cycles.push(Cycle::new(
            "relay kill -9 + restart",
            None,
            catch_up.map(|_| began.elapsed()),
        ));
        run.run_for(Duration::from_secs_f64(load.settle)).await;
    }
    let jitter = buckets(&run.shared().reconnect_delay_ms, 250, 2250);
    let load_report = conclude(run, load.catch_up_timeout).await?;
    relay.terminate(Duration::from_secs(3)).await;
    Ok(ScenarioReport {
        name: format!("relay killed {cycles} times"),
        cycles: report_cycles,
        load: load_report,
        extra: serde_json::json!({
            "reconnect_delay_histogram_ms": jitter
                .iter()
                .map(|(low, count)| serde_json::json!({"from_ms": low, "count": count}))
                .collect::<Vec<_>>(),
        }),
    })
}

/// Three relays on one Postgres, clients spread over them, one relay killed for good: its
/// clients move to the others and resume; everyone ends with every event.
///
/// # Errors
///
/// When the cluster, the relays or the load cannot be set up.
pub async fn three_relays(load: &Load, binary: PathBuf) -> Result<ScenarioReport, ScenarioError> {
    let pg = TestPg::try_start(&[]).await?;
    let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(
            RelayProcess::spawn(&binary, &pg.url(), any_port, &fast_relay_args(), None).await?,
        );
    }
    let spec = spec(
        load,
        relays.iter().map(RelayProcess::addr).collect(),
        &pg.url(),
        "three",
    );
    let streams = spec.streams.clone();
    let mut run = LoadRun::start(spec).await?;
    run.wait_live(Duration::from_secs(60))
        .await
        .ok_or("clients did not go live")?;
    run.start_publishing();
    run.run_for(Duration::from_secs_f64(load.settle)).await;
    let began = Instant::now();
    relays[1].kill9().await;
    let catch_up = caught_up(&run, &pg.url(), &streams, load.catch_up_timeout).await?;
    run.run_for(Duration::from_secs_f64(load.settle)).await;
    let load_report = conclude(run, load.catch_up_timeout).await?;
    for relay in &mut relays {
        relay.terminate(Duration::from_secs(3)).await;
    }
    Ok(ScenarioReport {
        name: "three relays, one killed".into(),
        cycles: vec![Cycle::new(
            "kill -9 of relay 2 of 3",
            None,
            catch_up.map(|_| began.elapsed()),
        )],
        load: load_report,
        extra: serde_json::json!({}),
    })
}

/// Stalled consumers: first healthy clients alone (the unloaded p99), then the same with
/// `stalled_ws` WebSocket and `stalled_sse` SSE sockets that never read while events of
/// `payload_bytes` flow, with the relay's slow-consumer deadline at `deadline`. Each stalled
/// socket must be disconnected (reset, seen by the socket itself) within that deadline plus
/// the time to fill its buffers; the healthy
/// clients must pass and keep their latency. `extra.slow_consumer_drops` is the relay's own
/// count per transport.
///
/// # Errors
///
/// When the cluster, the relay or the load cannot be set up.
pub async fn stalled_consumers(
    load: &Load,
    stalled_ws: usize,
    stalled_sse: usize,
    payload_bytes: usize,
    seconds: f64,
    deadline: Duration,
) -> Result<ScenarioReport, ScenarioError> {
    let pg = TestPg::try_start(&[]).await?;
    let relay = TestRelay::spawn_with(&pg, |options| {
        fast_relay(options);
        options.slow_consumer_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    })
    .await;
    let mut reports = Vec::new();
    for phase in 0..2 {
        let mut spec = spec(
            load,
            vec![relay.addr()],
            &pg.url(),
            &format!("stall{phase}"),
        );
        spec.stalled = if phase == 0 { 0 } else { stalled_ws };
        spec.stalled_sse = if phase == 0 { 0 } else { stalled_sse };
        if let Some(publish) = &mut spec.publish {
            publish.payload_bytes = payload_bytes;
        }
        let mut run = LoadRun::start(spec).await?;
        run.wait_live(Duration::from_secs(60))
            .await
            .ok_or("clients did not go live")?;
        run.start_publishing();
        run.run_for(Duration::from_secs_f64(seconds)).await;
        reports.push(conclude(run, load.catch_up_timeout).await?);
    }
    let drops = relay.hub().metrics.snapshot().slow_consumer_drops;
    relay.shutdown().await;
    let loaded = reports.pop().ok_or("no loaded phase")?;
    let unloaded = reports.pop().ok_or("no unloaded phase")?;
    let stalled_report = loaded.stalled.clone();
    Ok(ScenarioReport {
        name: format!("{stalled_ws} + {stalled_sse} stalled consumers (ws + sse)"),
        cycles: Vec::new(),
        extra: serde_json::json!({
            "unloaded_p99_us": unloaded.latency_us.p99,
            "loaded_p99_us": loaded.latency_us.p99,
            "unloaded_pass": unloaded.invariants.pass(),
            "stalled": stalled_report,
            "slow_consumer_drops": {
                "ws": drops[0].1,
                "sse": drops[1].1,
            },
        }),
        load: loaded,
    })
}

/// Where [`blackhole`] cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hole {
    /// Between the clients and the relay: the relay must drop them within two keepalive
    /// intervals; the clients notice the silence, reconnect after the heal and resume.
    Clients,
    /// Between the relay and Postgres (every relay connection, LISTEN included): noticed
    /// within the health interval plus its timeout; the relay reconnects after the heal.
    Postgres,
}

/// The network-fault proxy blackholes one side for `hole` (relay keepalive `keepalive`),
/// then heals; clients must end with every event.
///
/// # Errors
///
/// When the cluster, the relay or the load cannot be set up.
pub async fn blackhole(
    load: &Load,
    side: Hole,
    keepalive: Duration,
    hole: Duration,
) -> Result<ScenarioReport, ScenarioError> {
    let pg = TestPg::try_start(&[]).await?;
    let pg_port = pg.cluster().port();
    let pg_proxy = proxy::start(([127, 0, 0, 1], pg_port).into()).await;
    let proxied_url = pg.url().replace(
        &format!(":{pg_port}/"),
        &format!(":{}/", pg_proxy.address().port()),
    );
    let mut config = tidewire_relay::Config::for_tests(&proxied_url);
    fast_relay(&mut config.options);
    config.options.keepalive_ms = u64::try_from(keepalive.as_millis()).unwrap_or(u64::MAX);
    config.options.sse_heartbeat_ms = config.options.keepalive_ms;
    let relay = TestRelay::spawn_config(config).await;
    let hub = Arc::clone(relay.hub());
    let client_proxy = proxy::start(relay.addr()).await;
    let mut spec = spec(load, vec![client_proxy.address()], &pg.url(), "hole");
    spec.silence_timeout = Some(keepalive * 3);
    spec.connect_timeout = keepalive * 2;
    let streams = spec.streams.clone();
    let mut run = LoadRun::start(spec).await?;
    run.wait_live(Duration::from_secs(60))
        .await
        .ok_or("clients did not go live")?;
    run.start_publishing();
    run.run_for(Duration::from_secs_f64(load.settle)).await;
    let began = Instant::now();
    let before = failures(&hub);
    let max = hub.config.options.max_connections;
    let (proxy, detected) = match side {
        Hole::Clients => {
            client_proxy.set(Faults {
                blackhole: true,
                ..Faults::default()
            });
            let permits = Arc::clone(&hub.connections);
            let detected = until(began, keepalive * 2 + hole, || {
                permits.available_permits() == max
            })
            .await;
            (&client_proxy, detected)
        }
        Hole::Postgres => {
            pg_proxy.set(Faults {
                blackhole: true,
                ..Faults::default()
            });
            let detector_hub = Arc::clone(&hub);
            let detected = until(began, Duration::from_secs(15), || {
                failures(&detector_hub) > before
            })
            .await;
            (&pg_proxy, detected)
        }
    };
    tokio::time::sleep(hole.saturating_sub(began.elapsed())).await;
    proxy.heal();
    let catch_up = caught_up(&run, &pg.url(), &streams, load.catch_up_timeout).await?;
    let cycles = vec![Cycle::new(
        format!("{side:?} blackholed {hole:?}"),
        detected,
        catch_up.map(|_| began.elapsed()),
    )];
    run.run_for(Duration::from_secs_f64(load.settle)).await;
    let load_report = conclude(run, load.catch_up_timeout).await?;
    let stats = hub.listener.stats().snapshot();
    relay.shutdown().await;
    Ok(ScenarioReport {
        name: format!("{side:?} blackholed"),
        cycles,
        load: load_report,
        extra: serde_json::json!({
            "keepalive_ms": keepalive.as_millis() as u64,
            "client_connections_through_proxy": client_proxy.accepted(),
            "postgres_connections_through_proxy": pg_proxy.accepted(),
            "listener": listener_json(&stats),
        }),
    })
}
