//! `snapshot_bench`: big snapshots in bounded memory (docs/BENCHMARKS.md section 7). A relay
//! process (the relay's own `main` glue) against a private cluster:
//!
//! 1. Storm: a stream of `--records` records (~230 bytes of JSON each) loaded by one
//!    WebSocket client alone (the baseline), then an identical stream (nothing cached) loaded
//!    by `--clients` clients subscribing at the same moment. Reported: time until every client is live, the relay's peak RSS above idle
//!    (sampled every 50 ms from `/proc`), snapshot pages read from PostgreSQL against the
//!    pages of one snapshot, and cache hits.
//! 2. Big: one client loading a stream of `--big-records` records; peak RSS above idle.
//!
//! The streams are seeded straight into `tidewire.records` (as a stream whose history
//! retention has already trimmed): how records got there does not matter to a snapshot, and
//! publishing two million events first would dominate the run. Clients count records by
//! scanning each frame for `{"key":` (the seeded values never contain it) instead of decoding
//! hundreds of gigabytes of JSON.
//!
//! ```text
//! cargo run --release -p tidewire-tests --bin snapshot_bench -- --clients 1000
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use fastwebsockets::OpCode;
use serde_json::json;
use tidewire_tests::load::procstat;
use tidewire_tests::load::relay_process::{sibling_binary, RelayProcess};
use tidewire_tests::load::report::{thousands, write_json, Machine, Table};
use tidewire_tests::load::scrape;
use tidewire_tests::load::transport;
use tidewire_tests::TestPg;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Big snapshots: a subscribe storm and a huge stream, relay memory and reads")]
struct Args {
    /// Records of the storm's stream.
    #[arg(long, default_value_t = 200_000)]
    records: i64,
    /// Clients subscribing at once in the storm.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Records of the big stream.
    #[arg(long, default_value_t = 2_000_000)]
    big_records: i64,
    /// Parts to run: storm, big.
    #[arg(long, value_delimiter = ',', default_value = "storm,big")]
    parts: Vec<String>,
    /// Extra relay flags (e.g. `--snapshot-cache-bytes=0`), comma separated.
    #[arg(long, value_delimiter = ',')]
    relay_arg: Vec<String>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "artifacts/bench/snapshots.json")]
    json: PathBuf,
}

/// Seeds `stream` with `n` records of about 230 bytes of JSON.
async fn seed(pg: &tokio_postgres::Client, stream: &str, n: i64) -> anyhow::Result<()> {
    pg.execute(
        "insert into tidewire.streams (name, seq) values ($1, $2)",
        &[&stream, &n],
    )
    .await?;
    // In slices of 200,000 so that one statement never holds gigabytes.
    let mut from = 1;
    while from <= n {
        let to = (from + 199_999).min(n);
        pg.execute(
            "insert into tidewire.records (stream, key, seq, data) \
             select $1, 'k' || lpad(i::text, 8, '0'), i, \
                    jsonb_build_object('title', 'task ' || i || ' ' || repeat('t', 130), \
                                       'owner', 'user' || (i % 100), 'done', i % 2 = 0, \
                                       'priority', i % 5, 'created', '2026-12-06T11:35:21Z') \
               from generate_series($2::bigint, $3::bigint) i",
            &[&stream, &from, &to],
        )
        .await?;
        from = to + 1;
    }
    pg.execute("analyze tidewire.records", &[]).await?;
    Ok(())
}

/// What one client saw.
struct Loaded {
    records: u64,
    elapsed: Duration,
}

/// Subscribes one WebSocket client to `stream` once `go` is set; counts records until
/// `subscribed`.
async fn load(
    addr: SocketAddr,
    stream: String,
    connected: Arc<AtomicUsize>,
    mut go: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Loaded> {
    let mut ws = transport::websocket(addr, "/v1/ws", None, Duration::from_secs(120))
        .await
        .map_err(|error| anyhow::anyhow!("connect: {error:?}"))?;
    connected.fetch_add(1, Ordering::Relaxed);
    go.wait_for(|go| *go).await?;
    let started = Instant::now();
    let subscribe = json!({"type": "subscribe", "stream": stream}).to_string();
    transport::send_text(&mut ws, &subscribe).await?;
    let mut records = 0u64;
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Text => {}
            OpCode::Close => bail!("closed by the relay"),
            _ => continue,
        }
        let text = &frame.payload[..];
        if text.starts_with(br#"{"type":"snapshot""#) {
            records += count(text, br#"{"key":"#);
        } else if text.starts_with(br#"{"type":"subscribed""#) {
            return Ok(Loaded {
                records,
                elapsed: started.elapsed(),
            });
        } else if text.starts_with(br#"{"type":"error""#) {
            bail!("error: {}", String::from_utf8_lossy(text));
        }
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> u64 {
    let mut found = 0;
    let mut rest = haystack;
    while let Some(at) = memchr::memmem::find(rest, needle) {
        found += 1;
        rest = &rest[at + needle.len()..];
    }
    found
}

/// Peak RSS (KiB) of `pid` while `running`, sampled every 50 ms.
fn sampler(pid: u32, running: Arc<AtomicBool>) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&peak);
    let handle = std::thread::spawn(move || {
        while running.load(Ordering::Relaxed) {
            if let Some(sample) = procstat::sample(&pid.to_string()) {
                seen.fetch_max(sample.rss_kib, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (peak, handle)
}

/// Runs `clients` loads of `stream` at once; returns the slowest time, the records each got
/// (all equal, else an error) and the peak RSS in KiB.
async fn storm(
    relay: &RelayProcess,
    stream: &str,
    clients: usize,
) -> anyhow::Result<(Duration, u64, u64)> {
    let pid = relay.pid().context("relay pid")?;
    let (go, going) = tokio::sync::watch::channel(false);
    let connected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        tasks.push(tokio::spawn(load(
            relay.addr(),
            stream.to_owned(),
            Arc::clone(&connected),
            going.clone(),
        )));
    }
    // Every client connected (each waits on `go`): let them all go at once.
    let deadline = Instant::now() + Duration::from_secs(120);
    while connected.load(Ordering::Relaxed) < clients {
        if Instant::now() > deadline || tasks.iter().any(|task| task.is_finished()) {
            bail!(
                "{} of {clients} clients connected",
                connected.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let running = Arc::new(AtomicBool::new(true));
    let (peak, sampling) = sampler(pid, Arc::clone(&running));
    let started = Instant::now();
    go.send(true)?;
    let mut counts = Vec::with_capacity(clients);
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let loaded = task.await??;
        slowest = slowest.max(loaded.elapsed);
        counts.push(loaded.records);
    }
    let all_live = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let _ = sampling.join();
    counts.dedup();
    if counts.len() != 1 {
        bail!("clients got different record counts: {counts:?}");
    }
    Ok((
        all_live.max(slowest),
        counts[0],
        peak.load(Ordering::Relaxed),
    ))
}

/// `tidewire_snapshot_*` counters from `/metrics`: (page reads, hits).
async fn counters(addr: SocketAddr) -> (u64, u64) {
    let text = scrape::metrics(addr).await;
    let value = |name| scrape::value(&text, name).unwrap_or(0.0) as u64;
    (
        value("tidewire_snapshot_page_reads_total"),
        value("tidewire_snapshot_cache_hits_total"),
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all("artifacts/bench")?;
    let pg = TestPg::try_start(&[])
        .await
        .map_err(|error| anyhow::anyhow!("start a cluster: {error}"))?;
    let db = pg.client().await;
    tidewire_relay::pg::schema::migrate(&db)
        .await
        .map_err(|error| anyhow::anyhow!("migrate: {error:#}"))?;
    // A thousand clients of this one process share a core with the relay, so one may not
    // read for seconds: without a long stall limit the relay would (rightly) reset it as a
    // slow consumer, which a storm of real browsers would not trigger.
    let mut relay_args: Vec<String> = vec![
        "--max-connections".into(),
        "20000".into(),
        "--slow-consumer-ms".into(),
        "600000".into(),
    ];
    relay_args.extend(args.relay_arg.iter().cloned());
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let relay = RelayProcess::spawn(
        &sibling_binary("relay_proc"),
        &pg.url(),
        any,
        &relay_args,
        Some("artifacts/bench/snapshots_relay.log".into()),
    )
    .await?;
    let pid = relay.pid().context("relay pid")?;
    let chunk = 500u64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started_rss = procstat::sample(&pid.to_string()).map_or(0, |sample| sample.rss_kib);
    println!("relay RSS at start: {:.1} MiB", mib(started_rss));
    let mut table = Table::new(&[
        "run",
        "records",
        "clients",
        "time to all live",
        "relay RSS above the idle before the run",
        "page reads (pages per snapshot)",
        "cache hits",
    ]);
    let mut report = serde_json::Map::new();
    let idle_of = || procstat::sample(&pid.to_string()).map_or(0, |sample| sample.rss_kib);

    if args.parts.iter().any(|part| part == "storm") {
        // Two identical streams, so that the storm starts with no page cached.
        seed(&db, "alone", args.records).await?;
        seed(&db, "storm", args.records).await?;
        let pages = (args.records as u64).div_ceil(chunk);
        for (label, stream, clients) in [
            ("alone (baseline)", "alone", 1),
            ("storm", "storm", args.clients),
        ] {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let idle = idle_of();
            let (reads_before, hits_before) = counters(relay.addr()).await;
            let (time, records, peak) = storm(&relay, stream, clients).await?;
            let (reads, hits) = counters(relay.addr()).await;
            if records != args.records as u64 {
                bail!("{label}: {records} records, expected {}", args.records);
            }
            let above = peak.saturating_sub(idle);
            table.row(vec![
                label.into(),
                thousands(args.records as f64),
                thousands(clients as f64),
                format!("{:.2} s", time.as_secs_f64()),
                format!("{:.1} MiB (peak {:.1} MiB)", mib(above), mib(peak)),
                format!("{} ({pages})", reads - reads_before),
                thousands((hits - hits_before) as f64),
            ]);
            report.insert(
                label.split(' ').next().unwrap_or(label).to_owned(),
                json!({
                    "records": args.records, "clients": clients,
                    "seconds_to_all_live": time.as_secs_f64(),
                    "idle_rss_kib": idle, "peak_rss_kib": peak, "rss_above_idle_kib": above,
                    "page_reads": reads - reads_before, "pages_per_snapshot": pages,
                    "cache_hits": hits - hits_before,
                }),
            );
        }
    }
    if args.parts.iter().any(|part| part == "big") {
        seed(&db, "big", args.big_records).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = idle_of();
        let (reads_before, _) = counters(relay.addr()).await;
        let (time, records, peak) = storm(&relay, "big", 1).await?;
        let (reads, _) = counters(relay.addr()).await;
        if records != args.big_records as u64 {
            bail!("big: {records} records, expected {}", args.big_records);
        }
        let above = peak.saturating_sub(idle);
        let pages = (args.big_records as u64).div_ceil(chunk);
        table.row(vec![
            "big stream".into(),
            thousands(args.big_records as f64),
            "1".into(),
            format!("{:.2} s", time.as_secs_f64()),
            format!("{:.1} MiB (peak {:.1} MiB)", mib(above), mib(peak)),
            format!("{} ({pages})", reads - reads_before),
            "-".into(),
        ]);
        report.insert(
            "big".into(),
            json!({
                "records": args.big_records, "seconds_to_live": time.as_secs_f64(),
                "idle_rss_kib": idle, "peak_rss_kib": peak, "rss_above_idle_kib": above,
                "page_reads": reads - reads_before, "pages_per_snapshot": pages,
            }),
        );
    }
    let machine = Machine::detect();
    println!("\nsnapshots ({})\n{}", machine.describe(), table.render());
    if let (Some(alone), Some(storm)) = (report.get("alone"), report.get("storm")) {
        let per = |run: &serde_json::Value| {
            run["seconds_to_all_live"].as_f64().unwrap_or(0.0)
                / run["clients"].as_f64().unwrap_or(1.0)
        };
        println!(
            "storm: {:.3} s per client vs {:.3} s alone ({:.2}x the time of {} sequential loads)",
            per(storm),
            per(alone),
            per(storm) / per(alone).max(1e-9),
            storm["clients"]
        );
    }
    report.insert("relay_start_rss_kib".into(), json!(started_rss));
    report.insert("machine".into(), serde_json::to_value(&machine)?);
    report.insert("table".into(), json!(table.markdown()));
    let path = write_json(&args.json, serde_json::Value::Object(report))?;
    println!("wrote {}", path.display());
    drop(relay);
    Ok(())
}
