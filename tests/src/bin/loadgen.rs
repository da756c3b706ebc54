//! `loadgen`: the load generator. Opens N WebSocket and/or SSE connections to
//! one or more relays, subscribes each to some of M streams, publishes at a target rate
//! through PostgreSQL (the SQL function, tracked tables, raw `pg_notify`), and checks the
//! invariants of docs/TESTING.md for every client and stream against the outbox. Prints a
//! table and writes a JSON summary; exits 2 when an invariant fails.
//!
//! Several processes can share one run (past the 20,000 open files of one process): give
//! all of them the same streams, and `--no-publish` to all but one.
//!
//! ```text
//! loadgen --relay 127.0.0.1:7300 --database-url postgres://... --ws 1000 --streams 1 \
//!     --rate 100 --duration 30 --relay-pid $(pidof tidewire-relay) --json artifacts/bench/x.json
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tidewire_tests::load::publish::{PublishSpec, Via};
use tidewire_tests::load::report::{thousands, write_json, Machine, Table};
use tidewire_tests::load::run::{LoadReport, LoadRun, LoadSpec};
use tidewire_tests::load::straggler;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Tidewire load generator with an invariant checker")]
struct Args {
    /// Relay address (repeat for several relays; clients are spread round-robin).
    #[arg(long, required = true)]
    relay: Vec<SocketAddr>,
    /// PostgreSQL connection string (publishing and ground truth).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// WebSocket clients.
    #[arg(long, default_value_t = 0)]
    ws: usize,
    /// SSE clients.
    #[arg(long, default_value_t = 0)]
    sse: usize,
    /// Durable streams, named `<prefix>-<i>`.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Raw channels, subscribed as `raw:<prefix>_raw_<i>`.
    #[arg(long, default_value_t = 0)]
    raw_channels: usize,
    /// Prefix of stream and channel names.
    #[arg(long, default_value = "load")]
    stream_prefix: String,
    /// Streams each client subscribes to (the fan-out is clients x this / streams).
    #[arg(long, default_value_t = 1)]
    streams_per_client: usize,
    /// Ask for a snapshot on fresh WebSocket subscribes.
    #[arg(long)]
    snapshot: bool,
    /// Events per second over all publishers (0: as fast as Postgres allows).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Flow control: publishers wait while the clients have received, on average, more than
    /// this many events fewer than were published (keeps a saturating run's backlog bounded,
    /// so that it measures the sustained fan-out and can be checked to the end).
    #[arg(long)]
    max_ahead: Option<u64>,
    /// Events per publish transaction.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Concurrent publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Write path for durable events.
    #[arg(long, value_enum, default_value_t = Via::Function)]
    via: Via,
    /// Bytes of padding in each event.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Do not publish (another process does).
    #[arg(long)]
    no_publish: bool,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait after every client is live before publishing.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait for every client to go live.
    #[arg(long, default_value_t = 120.0)]
    live_timeout: f64,
    /// Seconds to wait after publishing for every client to reach the heads.
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// Clients started per second (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Extra WebSocket consumers that subscribe to the first stream and never read.
    #[arg(long, default_value_t = 0)]
    stalled: usize,
    /// Extra SSE consumers that subscribe to the first stream and never read.
    #[arg(long, default_value_t = 0)]
    stalled_sse: usize,
    /// Clients resume this many events behind the head (catch-up).
    #[arg(long)]
    resume_behind: Option<u64>,
    /// Do not reconnect lost connections.
    #[arg(long)]
    no_reconnect: bool,
    /// Largest reconnect backoff, ms.
    #[arg(long, default_value_t = 5000)]
    backoff_max_ms: u64,
    /// Reconnect after this many ms without hearing anything (pings, heartbeats, messages).
    #[arg(long)]
    silence_ms: Option<u64>,
    /// SO_RCVBUF of every client socket in bytes (the kernel doubles it); 0 leaves it to the
    /// kernel's autotuning, which at 10,000 sockets on one host ends in TCP memory pressure.
    #[arg(long, default_value_t = tidewire_tests::load::run::DEFAULT_RECV_BUFFER)]
    recv_buffer: u32,
    /// Relay process ids to sample for CPU and RSS.
    #[arg(long)]
    relay_pid: Vec<u32>,
    /// Seconds to wait once live before sampling the relay's RSS (idle memory).
    #[arg(long, default_value_t = 0.0)]
    idle_settle: f64,
    /// A label for the report.
    #[arg(long, default_value = "loadgen")]
    label: String,
    /// Where the JSON summary goes.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let mut streams: Vec<String> = (0..args.streams)
        .map(|index| format!("{}-{index}", args.stream_prefix))
        .collect();
    let raw_channels: Vec<String> = (0..args.raw_channels)
        .map(|index| format!("{}_raw_{index}", args.stream_prefix))
        .collect();
    let durable = streams.clone();
    streams.extend(raw_channels.iter().map(|channel| format!("raw:{channel}")));
    let publish = match (&args.database_url, args.no_publish) {
        (Some(url), false) => Some(PublishSpec {
            url: url.clone(),
            streams: durable,
            raw_channels,
            via: args.via,
            rate: args.rate,
            batch: args.batch,
            connections: args.publishers,
            payload_bytes: args.payload_bytes,
            max_ahead: args.max_ahead,
        }),
        _ => None,
    };
    let spec = LoadSpec {
        relays: args.relay.clone(),
        database_url: args.database_url.clone(),
        ws: args.ws,
        sse: args.sse,
        streams,
        streams_per_client: args.streams_per_client,
        snapshot: args.snapshot,
        publish,
        connect_rate: args.connect_rate,
        stalled: args.stalled,
        stalled_sse: args.stalled_sse,
        resume_behind: args.resume_behind,
        reconnect: !args.no_reconnect,
        backoff_max: Duration::from_millis(args.backoff_max_ms),
        connect_timeout: Duration::from_secs(30),
        relay_pids: args.relay_pid.clone(),
        silence_timeout: args.silence_ms.map(Duration::from_millis),
        recv_buffer: (args.recv_buffer > 0).then_some(args.recv_buffer),
    };
    let mut run = LoadRun::start(spec).await?;
    let live = run
        .wait_live(Duration::from_secs_f64(args.live_timeout))
        .await;
    match live {
        Some(after) => println!(
            "{}: {} clients live after {:.0} ms",
            args.label,
            run.clients(),
            after.as_secs_f64() * 1000.0
        ),
        None => println!(
            "{}: only {} of {} clients live after {} s",
            args.label,
            run.shared()
                .clients_live
                .load(std::sync::atomic::Ordering::Relaxed),
            run.clients(),
            args.live_timeout
        ),
    }
    if args.idle_settle > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.idle_settle)).await;
        run.sample_relay_now();
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    run.start_publishing();
    run.run_for(Duration::from_secs_f64(args.duration)).await;
    run.stop_publishing().await;
    // Let the last commits land before reading the heads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drained = run
        .drain(Duration::from_secs_f64(args.drain_timeout))
        .await?;
    if drained.is_none() {
        println!(
            "{}: not every client reached the heads within {} s",
            args.label, args.drain_timeout
        );
    }
    let report = run.finish().await?;
    print!("{}", render(&args.label, &report));
    print!("{}", latency_by_second(&report));
    print!("{}", straggler::render(&report.stragglers));
    if let Some(path) = &args.json {
        let mut document = serde_json::to_value(&report)?;
        if let serde_json::Value::Object(map) = &mut document {
            map.insert("label".into(), args.label.clone().into());
            map.insert("machine".into(), serde_json::to_value(Machine::detect())?);
        }
        let written = write_json(path, document)?;
        println!("wrote {}", written.display());
    }
    if !report.invariants.pass() || live.is_none() {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per ten seconds of the run: each second's e2e p99/max in ms.
fn latency_by_second(report: &LoadReport) -> String {
    let mut out = String::new();
    if report.latency_series_us.is_empty() {
        return out;
    }
    out.push_str("e2e latency by second, p99/max ms:\n");
    for (line, seconds) in report.latency_series_us.chunks(10).enumerate() {
        let cells: Vec<String> = seconds
            .iter()
            .map(|second| {
                format!(
                    "{:.1}/{:.0}",
                    second.p99 as f64 / 1000.0,
                    second.max as f64 / 1000.0
                )
            })
            .collect();
        out.push_str(&format!("  {:>3}s  {}\n", line * 10 + 1, cells.join("  ")));
    }
    out
}

fn render(label: &str, report: &LoadReport) -> String {
    let mut table = Table::new(&[label, "value"]);
    let mut row = |name: &str, value: String| table.row(vec![name.to_owned(), value]);
    row(
        "clients (ws + sse)",
        format!("{} + {}", report.ws, report.sse),
    );
    row(
        "streams x per client",
        format!("{} x {}", report.streams, report.streams_per_client),
    );
    row(
        "time to all live",
        report
            .time_to_all_live_ms
            .map_or("never".into(), |ms| format!("{ms:.0} ms")),
    );
    row(
        "connects / failures / refused / lost",
        format!(
            "{} / {} / {} / {}",
            report.connects, report.connect_failures, report.refused, report.disconnects
        ),
    );
    if let Some(publish) = &report.publish {
        row(
            "published events/s (errors)",
            format!(
                "{} ({})",
                thousands(publish.events_per_second),
                publish.errors
            ),
        );
    }
    row(
        "deliveries/s while publishing",
        thousands(report.deliveries_per_second),
    );
    row(
        "e2e latency ms p50/p99/p99.9/max",
        report.latency_us.millis(),
    );
    row(
        "catch-up latency ms p50/p99/p99.9/max",
        report.catchup_latency_us.millis(),
    );
    row(
        "drain after publishing",
        report
            .drain_ms
            .map_or("timed out".into(), |ms| format!("{ms:.0} ms")),
    );
    let invariants = &report.invariants;
    row(
        "expected / delivered",
        format!("{} / {}", invariants.expected, invariants.counts.delivered),
    );
    row(
        "lost / dup_app / dup_wire / ooo / silent_loss",
        format!(
            "{} / {} / {} / {} / {}",
            invariants.lost,
            invariants.counts.dup_app,
            invariants.counts.dup_wire,
            invariants.counts.ooo,
            invariants.silent_loss
        ),
    );
    row(
        "gaps / gap advisories / resyncs / lagged",
        format!(
            "{} / {} / {} / {}",
            invariants.counts.gaps,
            invariants.counts.gap_advisories,
            invariants.counts.resyncs,
            invariants.counts.lagged
        ),
    );
    let verdict = if invariants.pass() {
        "PASS"
    } else if report.behind_at_end > 0 {
        // Not drained: "lost" includes events still in flight when the run gave up.
        "INCOMPLETE (drain timed out; lost = not received yet)"
    } else {
        "FAIL"
    };
    row(
        "verdict",
        format!(
            "{verdict} ({} of {} tracks failing, {} streams behind at the end)",
            invariants.failing_tracks, invariants.tracks, report.behind_at_end
        ),
    );
    if let Some(kernel) = &report.kernel_tcp {
        row(
            "kernel TCP pressures / rcvq drops / mem aborts / retransmits / RTOs",
            format!(
                "{} / {} / {} / {} / {}{}",
                kernel.memory_pressures,
                kernel.receive_queue_drops,
                kernel.aborts_on_memory,
                kernel.retransmits,
                kernel.timeouts,
                if kernel.starved() {
                    " (the host ran short of TCP memory: drops and backoff stall clients)"
                } else {
                    ""
                }
            ),
        );
    }
    if let Some(cores) = report.loadgen_cpu_cores {
        row("loadgen CPU (this process)", format!("{cores:.2} cores"));
    }
    if let Some(relay) = &report.relay {
        if let Some(cores) = relay.cpu_cores_publishing {
            row("relay CPU while publishing", format!("{cores:.2} cores"));
        }
        row(
            "relay RSS before / live / end",
            format!(
                "{} / {} / {} KiB",
                relay.rss_before_kib.unwrap_or(0),
                relay.rss_live_kib.unwrap_or(0),
                relay.rss_end_kib.unwrap_or(0)
            ),
        );
        if let Some(bytes) = relay.rss_per_connection_bytes {
            row(
                "relay RSS per connection",
                format!("{:.1} KiB", bytes / 1024.0),
            );
        }
    }
    if let Some(stalled) = &report.stalled {
        row(
            "stalled: opened (sse) / disconnected",
            format!(
                "{} ({}) / {}",
                stalled.opened, stalled.opened_sse, stalled.disconnected
            ),
        );
        row(
            "stalled: disconnected after ms p50/max",
            format!(
                "{} / {}",
                stalled.disconnect_after_ms.p50, stalled.disconnect_after_ms.max
            ),
        );
    }
    if !report.close_codes.is_empty() {
        row("close codes", format!("{:?}", report.close_codes));
    }
    for (client, stream, verdict) in invariants.failures.iter().take(5) {
        row(
            &format!("FAIL client {client} {stream}"),
            format!(
                "expected {} lost {} silent {} dup_app {} ooo {}",
                verdict.expected,
                verdict.lost,
                verdict.silent_loss,
                verdict.counts.dup_app,
                verdict.counts.ooo
            ),
        );
    }
    table.render()
}
