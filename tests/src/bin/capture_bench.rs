//! `capture_bench`: what logical capture costs the application's writers and what the
//! sequencer delivers, against baselines measured in the same run on a private cluster
//! (`wal_level=logical`, fsync off like the test harness).
//!
//! 1. Writer rate: one autocommit upsert per event from 1 and 8 writers into a plain table
//!    (no trigger: the baseline), a table tracked in trigger mode, and a table tracked in
//!    logical mode while the sequencer captures it in the same process. Ratios are to the
//!    plain table's rate measured right before, in the same mode.
//! 2. Sequencer throughput: backlogs written while no sequencer runs (100,000 one-row
//!    transactions, then 200 transactions of 1,000 rows), then the time the sequencer takes
//!    to write them to the outbox.
//! 3. Commit-to-client latency: `--subscribers` WebSocket clients of the relay follow a
//!    stream written at `--rate` one-row transactions per second; latency is each event's
//!    receive time minus its source commit time.
//!
//! ```text
//! cargo run --release -p tidewire-tests --bin capture_bench -- --seconds 5
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::json;
use tidewire_relay::config::Config;
use tidewire_relay::hub::Hub;
use tidewire_relay::pg::capture::CaptureMode;
use tidewire_tests::load::client::{self, ClientSpec, Shared, Transport};
use tidewire_tests::load::report::{thousands, write_json, Machine, Table};
use tidewire_tests::TestPg;
use tokio::net::TcpListener;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Logical capture benchmark: writer cost, sequencer throughput, latency")]
struct Args {
    /// Seconds each writer configuration runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// One-row transactions in the sequencer's first backlog (a multiple of 8).
    #[arg(long, default_value_t = 100_000)]
    single: i64,
    /// Transactions of 1,000 rows in the sequencer's second backlog (a multiple of 8).
    #[arg(long, default_value_t = 200)]
    thousands: i64,
    /// WebSocket subscribers of the latency part.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// One-row transactions per second in the latency part.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Seconds of the latency part.
    #[arg(long, default_value_t = 10.0)]
    latency_seconds: f64,
    /// Rows of the one big transaction of the `big` part.
    #[arg(long, default_value_t = 1_000_000)]
    big_rows: i64,
    /// Parts to run: writers, sequencer, latency, big.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "writers,sequencer,latency,big"
    )]
    parts: Vec<String>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "artifacts/bench/capture.json")]
    json: PathBuf,
}

const UPSERT: &str = "insert into {table} (id, data) values ($1, $2::jsonb) \
                      on conflict (id) do update set data = excluded.data";

/// A running relay in this process.
struct Relay {
    hub: Arc<Hub>,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

async fn start_relay(url: &str, mode: CaptureMode) -> anyhow::Result<Relay> {
    let mut config = Config::for_tests(url);
    config.options.capture = mode;
    config.options.capture_election_ms = 100;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hub = Hub::start(config, CancellationToken::new(), TaskTracker::new())
        .await
        .map_err(|error| anyhow::anyhow!("start the relay: {error:?}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(tidewire_relay::server::serve(
        listener,
        Arc::clone(&hub),
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(Relay {
        hub,
        addr,
        stop,
        served,
    })
}

async fn stop_relay(relay: Relay) {
    let _ = relay.stop.send(());
    let _ = relay.served.await;
    relay.hub.pool.close();
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped.
        let _ = connection.await;
    });
    Ok(client)
}

/// `writers` concurrent writers upserting into `table` for `seconds`; events/s and events.
async fn write_rate(
    url: &str,
    table: &str,
    writers: usize,
    seconds: f64,
) -> anyhow::Result<(f64, i64)> {
    let committed = Arc::new(AtomicU64::new(0));
    let sql = UPSERT.replace("{table}", table);
    let mut clients = Vec::new();
    for _ in 0..writers {
        let client = connect(url).await?;
        let statement = client.prepare(&sql).await?;
        clients.push((client, statement));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for (index, (client, statement)) in clients.into_iter().enumerate() {
        let committed = Arc::clone(&committed);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let key = format!("w{index}-{}", sent % 100);
                let data = json!({"writer": index, "n": sent, "pad": "0123456789abcdef"});
                client.execute(&statement, &[&key, &data]).await?;
                committed.fetch_add(1, Ordering::Relaxed);
                sent += 1;
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for task in tasks {
        task.await.context("writer task")??;
    }
    let count = committed.load(Ordering::Relaxed);
    Ok((
        count as f64 / start.elapsed().as_secs_f64(),
        i64::try_from(count)?,
    ))
}

async fn events_in(client: &tokio_postgres::Client, stream: &str) -> anyhow::Result<i64> {
    Ok(client
        .query_one(
            "select seq from tidewire.streams where name = $1",
            &[&stream],
        )
        .await
        .map(|row| row.get(0))
        .unwrap_or(0))
}

/// Waits until `stream` holds `count` events; returns when.
async fn wait_for(
    client: &tokio_postgres::Client,
    stream: &str,
    count: i64,
    limit: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if events_in(client, stream).await? >= count {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{stream} did not reach {count} events in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pg = TestPg::try_start(&[])
        .await
        .map_err(|error| anyhow::anyhow!("start a cluster: {error}"))?;
    let url = pg.url();
    let admin = connect(&url).await?;
    tidewire_relay::pg::schema::migrate(&admin)
        .await
        .map_err(|error| anyhow::anyhow!("migrate: {error:#}"))?;
    println!("machine: {}", Machine::detect().describe());
    let mut report = serde_json::Map::new();

    let part = |name: &str| args.parts.iter().any(|part| part == name);
    if part("writers") {
        writer_rates(&args, &url, &admin, &mut report).await?;
    }
    if part("sequencer") {
        sequencer(&args, &url, &admin, &mut report).await?;
    }
    if part("latency") {
        latencies(&args, &url, &admin, &mut report).await?;
    }
    if part("big") {
        big_transaction(&args, &url, &admin, &mut report).await?;
    }
    report.insert("benchmark".into(), json!("capture"));
    let path = write_json(&args.json, serde_json::Value::Object(report))?;
    println!("\nwrote {}", path.display());
    Ok(())
}

type Report = serde_json::Map<String, serde_json::Value>;

/// Part 1: writer rates, trigger mode first (the database starts in it), then logical.
async fn writer_rates(
    args: &Args,
    url: &str,
    admin: &tokio_postgres::Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut results: Vec<(usize, &str, f64, f64)> = Vec::new();
    let mut round = 0;
    for writers in [1, 8] {
        round += 1;
        let (plain, rate, _) = pair(args, url, admin, round, "bench-trigger", writers).await?;
        results.push((writers, "tracked, trigger mode", plain, rate));
    }
    // Logical mode: a relay in this process is the sequencer while the writers write.
    let relay = start_relay(url, CaptureMode::Logical).await?;
    let mut written = Vec::new();
    for writers in [1, 8] {
        round += 1;
        let (plain, rate, count) = pair(args, url, admin, round, "bench-logical", writers).await?;
        results.push((
            writers,
            "tracked, logical mode (sequencer running)",
            plain,
            rate,
        ));
        written.push((format!("bench-logical-{round}"), count));
    }
    let writers_done = Instant::now();
    for (stream, count) in &written {
        if let Err(error) = wait_for(admin, stream, *count, Duration::from_secs(300)).await {
            bail!("the sequencer did not catch up with the writers: {error}");
        }
    }
    println!(
        "  the sequencer had every event in the outbox {:.0} ms after the writers stopped",
        writers_done.elapsed().as_secs_f64() * 1000.0
    );
    stop_relay(relay).await;
    // Logical mode with no sequencer running: the writers' own cost (WAL with REPLICA
    // IDENTITY FULL) without the sequencer's work on the same two cores.
    for writers in [1, 8] {
        round += 1;
        let (plain, rate, _) = pair(args, url, admin, round, "bench-idle", writers).await?;
        results.push((
            writers,
            "tracked, logical mode (no sequencer running)",
            plain,
            rate,
        ));
    }
    let mut table = Table::new(&["writers", "table", "events/s", "vs plain INSERT"]);
    let mut rows_json = Vec::new();
    for (writers, label, plain, rate) in results {
        for (name, value) in [
            ("plain INSERT, no trigger (baseline)", plain),
            (label, rate),
        ] {
            table.row(vec![
                writers.to_string(),
                name.to_owned(),
                thousands(value),
                format!("{:.2}", value / plain),
            ]);
            rows_json.push(
                json!({"writers": writers, "table": name, "events_per_second": value,
                                  "ratio_to_plain": value / plain}),
            );
        }
    }
    println!(
        "\nWriter rate (one autocommit upsert per event, {} s each; baseline: a plain table \
         measured before and after, mean)",
        args.seconds
    );
    print!("{}", table.render());
    report.insert("writers".into(), json!(rows_json));
    Ok(())
}

/// Fresh plain and tracked tables (tracked into `{prefix}-{round}`): the plain table's rate
/// before and after (mean), the tracked table's rate, and the tracked table's events.
async fn pair(
    args: &Args,
    url: &str,
    admin: &tokio_postgres::Client,
    round: usize,
    prefix: &str,
    writers: usize,
) -> anyhow::Result<(f64, f64, i64)> {
    let plain = format!("plain_{round}");
    let tracked = format!("tracked_{round}");
    admin
        .batch_execute(&format!(
            "create table {plain} (id text primary key, data jsonb);
             create table {tracked} (id text primary key, data jsonb);
             select tidewire.track_table('{tracked}', '{prefix}-{round}', 'id');"
        ))
        .await?;
    admin.batch_execute("vacuum analyze").await?;
    let (before, _) = write_rate(url, &plain, writers, args.seconds).await?;
    let (rate, count) = write_rate(url, &tracked, writers, args.seconds).await?;
    let (after, _) = write_rate(url, &plain, writers, args.seconds).await?;
    let base = (before + after) / 2.0;
    println!(
        "  {prefix:<14} x{writers}: plain {} / {} events/s, tracked {} events/s ({:.2}x)",
        thousands(before),
        thousands(after),
        thousands(rate),
        rate / base
    );
    Ok((base, rate, count))
}

/// Part 2: sequencer throughput.
async fn sequencer(
    args: &Args,
    url: &str,
    admin: &tokio_postgres::Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let url = url.to_owned();
    // 2. Sequencer throughput on backlogs written while no sequencer runs.
    let mut table = Table::new(&[
        "backlog",
        "events",
        "start to first event s",
        "first to last s",
        "events/s to the outbox",
    ]);
    let mut sequencer_json = Vec::new();
    for (name, rows_per_transaction, transactions) in [
        ("one-row transactions", 1i64, args.single),
        ("1,000-row transactions", 1000, args.thousands),
    ] {
        let table_name = format!("seq_{rows_per_transaction}");
        let stream = format!("bench-seq-{rows_per_transaction}");
        // Tracked in logical mode (a relay switches the database), then no sequencer runs
        // while the backlog is written.
        let relay = start_relay(&url, CaptureMode::Logical).await?;
        admin
            .batch_execute(&format!(
                "create table {table_name} (id bigint primary key, data jsonb);
                 select tidewire.track_table('{table_name}', '{stream}', 'id');"
            ))
            .await?;
        stop_relay(relay).await;
        backlog(&url, &table_name, rows_per_transaction, transactions).await?;
        let events = rows_per_transaction * transactions;
        println!("  backlog of {name} written; capturing");
        let start = Instant::now();
        let relay = start_relay(&url, CaptureMode::Logical).await?;
        // Timed from the first event in the outbox: the relay's start and the slot's
        // connection are not the sequencer's throughput.
        let first = wait_for(admin, &stream, 1, Duration::from_secs(60)).await?;
        let done = wait_for(admin, &stream, events, Duration::from_secs(600)).await?;
        let seconds = done.duration_since(first).as_secs_f64();
        let started = first.duration_since(start).as_secs_f64();
        stop_relay(relay).await;
        let rate = (events - 1) as f64 / seconds;
        table.row(vec![
            name.into(),
            thousands(events as f64),
            format!("{started:.2}"),
            format!("{seconds:.2}"),
            thousands(rate),
        ]);
        println!("  sequencer, {name}: {} events/s", thousands(rate));
        sequencer_json.push(
            json!({"backlog": name, "events": events, "seconds": seconds,
                                   "events_per_second": rate}),
        );
    }
    println!("\nSequencer throughput (backlog written with no sequencer running, then captured)");
    print!("{}", table.render());
    report.insert("sequencer".into(), json!(sequencer_json));
    Ok(())
}

/// Part 3: commit-to-client latency, trigger mode as the baseline.
async fn latencies(
    args: &Args,
    url: &str,
    admin: &tokio_postgres::Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    // 3. Commit-to-client latency with WebSocket subscribers, trigger mode as the baseline.
    let mut table = Table::new(&[
        "capture",
        "achieved tx/s",
        "deliveries",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
    ]);
    let mut latency_json = Vec::new();
    for (mode, name) in [
        (CaptureMode::Trigger, "trigger"),
        (CaptureMode::Logical, "logical"),
    ] {
        let relay = start_relay(url, mode).await?;
        let (achieved, latency) = latency(args, url, admin, &relay, name).await?;
        stop_relay(relay).await;
        table.row(vec![
            name.into(),
            format!("{achieved:.0}"),
            latency.count.to_string(),
            format!("{:.2}", latency.p50 as f64 / 1000.0),
            format!("{:.2}", latency.p99 as f64 / 1000.0),
            format!("{:.2}", latency.p999 as f64 / 1000.0),
            format!("{:.2}", latency.max as f64 / 1000.0),
        ]);
        latency_json.push(
            json!({"capture": name, "subscribers": args.subscribers, "rate": args.rate,
                                 "achieved_rate": achieved, "seconds": args.latency_seconds,
                                 "latency_us": latency}),
        );
    }
    println!(
        "\nCommit-to-client latency: {} WebSocket subscribers in this process, {} one-row transactions/s for {} s",
        args.subscribers, args.rate, args.latency_seconds
    );
    print!("{}", table.render());
    report.insert("latency".into(), json!(latency_json));
    Ok(())
}

/// Writes `transactions` transactions of `rows` rows each into `table` (8 writers).
async fn backlog(url: &str, table: &str, rows: i64, transactions: i64) -> anyhow::Result<()> {
    let per_writer = transactions / 8;
    let mut tasks = Vec::new();
    for writer in 0..8i64 {
        let url = url.to_owned();
        let sql = format!(
            "insert into {table} select g, jsonb_build_object('n', g, 'pad', '0123456789abcdef') \
               from generate_series($1::int8, $1::int8 + $2::int8 - 1) as g"
        );
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await?;
            let statement = client.prepare(&sql).await?;
            for n in 0..per_writer {
                let first = (writer * per_writer + n) * rows;
                client.execute(&statement, &[&first, &rows]).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    if per_writer * 8 != transactions {
        bail!("--single and --thousands must be multiples of 8");
    }
    Ok(())
}

/// Paced one-row transactions into a fresh tracked table while subscribers follow it.
async fn latency(
    args: &Args,
    url: &str,
    admin: &tokio_postgres::Client,
    relay: &Relay,
    name: &str,
) -> anyhow::Result<(f64, tidewire_tests::load::histogram::Summary)> {
    let table = format!("lat_{name}");
    let stream = format!("bench-latency-{name}");
    admin
        .batch_execute(&format!(
            "create table {table} (id bigint primary key, data jsonb);
             select tidewire.track_table('{table}', '{stream}', 'id');
             insert into {table} values (0, '{{}}');"
        ))
        .await?;
    wait_for(admin, &stream, 1, Duration::from_secs(30)).await?;
    let shared = Arc::new(Shared::default());
    let stop = CancellationToken::new();
    let progress: Arc<[AtomicU64]> = (0..args.subscribers).map(|_| AtomicU64::new(0)).collect();
    let mut clients = Vec::new();
    for id in 0..args.subscribers {
        let spec = ClientSpec {
            id,
            transport: Transport::Ws,
            addrs: vec![relay.addr],
            silence_timeout: None,
            streams: vec![stream.clone()],
            snapshot: false,
            since: Vec::new(),
            reconnect: false,
            progress: Arc::clone(&progress),
            progress_slot: id,
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            recv_buffer: None,
        };
        clients.push(tokio::spawn(client::run(
            spec,
            Arc::clone(&shared),
            stop.clone(),
        )));
    }
    let live_deadline = Instant::now() + Duration::from_secs(30);
    while shared.clients_live.load(Ordering::Relaxed) < args.subscribers as u64 {
        if Instant::now() > live_deadline {
            bail!("subscribers did not go live");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let writer = connect(url).await?;
    let statement = writer
        .prepare(&format!(
            "insert into {table} values ($1::int8, jsonb_build_object('n', $1::int8, 'pad', '0123456789abcdef'))"
        ))
        .await?;
    let total = (args.rate as f64 * args.latency_seconds) as i64;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = Instant::now();
    for n in 1..=total {
        // Paced open loop: each insert at its slot (catching up without bursting on delays).
        let slot = started + interval.mul_f64(n as f64);
        if let Some(wait) = slot.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        writer.execute(&statement, &[&n]).await?;
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    wait_for(admin, &stream, total + 1, Duration::from_secs(60)).await?;
    let expected = (total as u64) * args.subscribers as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    while shared.latency.count() < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for client in clients {
        let _ = client.await;
    }
    let latency = shared.latency.summary();
    if latency.count != expected {
        bail!("{name}: {} deliveries, expected {expected}", latency.count);
    }
    println!(
        "  latency, {name}: p50 {:.2} ms, p99 {:.2} ms at {achieved:.0} tx/s",
        latency.p50 as f64 / 1000.0,
        latency.p99 as f64 / 1000.0
    );
    Ok((achieved, latency))
}

/// This process's resident set, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Part 4: one transaction of `--big-rows` rows, captured with the relay's memory sampled.
async fn big_transaction(
    args: &Args,
    url: &str,
    admin: &tokio_postgres::Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let relay = start_relay(url, CaptureMode::Logical).await?;
    admin
        .batch_execute(
            "create table big_rows (id bigint primary key, data jsonb);
             select tidewire.track_table('big_rows', 'bench-big', 'id');",
        )
        .await?;
    stop_relay(relay).await;
    admin
        .execute(
            "insert into big_rows select g, jsonb_build_object('n', g, 'pad', '0123456789abcdef') \
               from generate_series(1, $1::int8) as g",
            &[&args.big_rows],
        )
        .await?;
    let idle = rss_kib();
    let peak = Arc::new(AtomicU64::new(idle));
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn({
        let (peak, sampling) = (Arc::clone(&peak), sampling.clone());
        async move {
            while !sampling.is_cancelled() {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let start = Instant::now();
    let relay = start_relay(url, CaptureMode::Logical).await?;
    wait_for(admin, "bench-big", args.big_rows, Duration::from_secs(1800)).await?;
    let seconds = start.elapsed().as_secs_f64();
    sampling.cancel();
    sampler.await?;
    let transactions = relay.hub.capture.snapshot().transactions;
    stop_relay(relay).await;
    let peak = peak.load(Ordering::Relaxed);
    let growth_mib = peak.saturating_sub(idle) as f64 / 1024.0;
    println!(
        "\nOne transaction of {} rows: in the outbox after {seconds:.1} s ({} events/s, {transactions} source transaction), \
         process RSS {:.0} MiB before, peak {:.0} MiB (+{growth_mib:.0} MiB)",
        thousands(args.big_rows as f64),
        thousands(args.big_rows as f64 / seconds),
        idle as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    report.insert(
        "big_transaction".into(),
        json!({"rows": args.big_rows, "seconds": seconds, "rss_idle_kib": idle,
               "rss_peak_kib": peak, "rss_growth_mib": growth_mib}),
    );
    Ok(())
}
