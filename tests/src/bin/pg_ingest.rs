//! `pg_ingest`: the PostgreSQL ingest benchmark (tracked tables and `tidewire.publish`
//! against plain INSERT), on a private cluster it starts.
//!
//! 1. Publish rate: events committed per second through `tidewire.publish` (one hot stream,
//!    and one stream per publisher), through a tracked table's trigger, and through a plain
//!    `INSERT` + `pg_notify` (the baseline), with 1 and 8 concurrent publishers, one
//!    autocommit statement per event.
//! 2. Receive rate: one transaction publishes `--events` events; the time until the last
//!    notification is received is measured for a bare tokio-postgres LISTEN client driven with
//!    `poll_message` (counting, and counting + decoding) and for the relay (a [`Hub`] in
//!    process: its listener's event counter, and one subscribed [`Session`] draining its
//!    frames). Rounds alternate between receivers; the median is reported.
//!
//! Prints a table and writes JSON to `artifacts/bench/pg_ingest.json`.
//!
//! ```text
//! cargo run --release -p tidewire-tests --bin pg_ingest -- --seconds 5 --events 100000
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::json;
use tidewire_relay::auth::{Grant, Permissions};
use tidewire_relay::config::Config;
use tidewire_relay::hub::Hub;
use tidewire_relay::session::{Outgoing, Session};
use tidewire_tests::load::histogram::Histogram;
use tidewire_tests::load::report::{thousands, write_json, Machine, Table};
use tidewire_tests::TestPg;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Postgres ingest benchmark: publish rate and notification receive rate")]
struct Args {
    /// Seconds each publish configuration runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent publisher counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    publishers: Vec<usize>,
    /// Events in the receive test's transaction.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Rounds per receiver (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run Postgres with fsync and synchronous_commit on (default: off, like the test harness).
    #[arg(long)]
    durable: bool,
    /// Where the JSON report goes.
    #[arg(long, default_value = "artifacts/bench/pg_ingest.json")]
    json: PathBuf,
    /// Skip the publish-rate part (to profile the receive part alone).
    #[arg(long)]
    receive_only: bool,
}

/// One way of writing an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// `tidewire.publish` to one stream shared by every publisher.
    Function,
    /// `tidewire.publish`, each publisher to its own stream.
    FunctionPerStream,
    /// An upsert into a table tracked with `tidewire.track_table`.
    Table,
    /// `INSERT` into a plain table plus `pg_notify` of a similar payload (the baseline).
    Plain,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Function => "tidewire.publish, 1 stream",
            Method::FunctionPerStream => "tidewire.publish, stream per publisher",
            Method::Table => "tracked table upsert",
            Method::Plain => "baseline: INSERT + pg_notify",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Method::Function | Method::FunctionPerStream => {
                "select tidewire.publish($1, $2, 'upsert', $3::jsonb)"
            }
            Method::Table => {
                // $1 (the stream) is fixed by the tracking; it is only typed here.
                "insert into bench_tracked (id, data) select $2, $3::jsonb where $1::text is not null \
                 on conflict (id) do update set data = excluded.data"
            }
            Method::Plain => {
                "with row as (insert into bench_plain (stream, key, data) values ($1, $2, $3::jsonb) \
                 returning id, stream, key, data) \
                 select pg_notify('bench_plain', json_build_object('stream', stream, 'id', id, \
                 'key', key, 'data', data)::text) from row"
            }
        }
    }
}

/// The result of one publish configuration.
#[derive(Debug, Clone)]
struct PublishResult {
    method: Method,
    publishers: usize,
    events: u64,
    seconds: f64,
    latency: tidewire_tests::load::histogram::Summary,
}

impl PublishResult {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings: &[(&str, &str)] = if args.durable {
        &[("fsync", "on"), ("synchronous_commit", "on")]
    } else {
        &[]
    };
    let pg = TestPg::try_start(settings)
        .await
        .map_err(|error| anyhow::anyhow!("start a cluster: {error}"))?;
    let admin = pg.try_client().await.context("connect")?;
    tidewire_relay::pg::schema::migrate(&admin)
        .await
        .map_err(|error| anyhow::anyhow!("migrate: {error:#}"))?;
    admin
        .batch_execute(
            "create table bench_plain (id bigserial primary key, stream text not null, \
               key text not null, data jsonb, at timestamptz not null default now());
             create table bench_tracked (id text primary key, data jsonb);
             select tidewire.track_table('bench_tracked', 'bench-tracked', 'id');",
        )
        .await
        .context("create the benchmark tables")?;
    let machine = Machine::detect();
    println!("machine: {}", machine.describe());
    println!(
        "postgres: {} ({})",
        admin
            .query_one("show server_version", &[])
            .await?
            .get::<_, String>(0),
        if args.durable {
            "fsync on, synchronous_commit on"
        } else {
            "fsync off, synchronous_commit off"
        }
    );

    let mut results = Vec::new();
    let publisher_counts = if args.receive_only {
        Vec::new()
    } else {
        args.publishers.clone()
    };
    for &publishers in &publisher_counts {
        let mut methods = vec![Method::Plain, Method::Function, Method::Table];
        if publishers > 1 {
            methods.push(Method::FunctionPerStream);
        }
        for method in methods {
            admin.batch_execute("vacuum analyze").await?;
            let result = publish_rate(&pg.url(), method, publishers, args.seconds).await?;
            println!(
                "  {:<40} x{publishers}: {:>8} events/s  (latency ms p50/p99/p99.9/max {})",
                method.name(),
                thousands(result.rate()),
                result.latency.millis()
            );
            results.push(result);
        }
    }

    let receive = receive_rates(&pg.url(), args.events, args.rounds).await?;

    let mut table = Table::new(&[
        "publish path",
        "publishers",
        "events/s",
        "vs baseline",
        "latency ms p50/p99/p99.9/max",
    ]);
    let mut publish_json = Vec::new();
    for result in &results {
        let baseline = results
            .iter()
            .find(|other| other.method == Method::Plain && other.publishers == result.publishers)
            .map_or(f64::NAN, PublishResult::rate);
        let ratio = result.rate() / baseline;
        table.row(vec![
            result.method.name().into(),
            result.publishers.to_string(),
            thousands(result.rate()),
            format!("{ratio:.2}"),
            result.latency.millis(),
        ]);
        publish_json.push(json!({
            "method": result.method.name(),
            "publishers": result.publishers,
            "events": result.events,
            "seconds": result.seconds,
            "events_per_second": result.rate(),
            "ratio_to_baseline": ratio,
            "latency_us": result.latency,
        }));
    }
    println!(
        "\nPublish rate (one autocommit statement per event, {} s each)",
        args.seconds
    );
    print!("{}", table.render());

    let bare = receive.median("bare LISTEN (count)");
    let mut table = Table::new(&["receiver", "events/s (median)", "vs bare", "rounds"]);
    let mut receive_json = Vec::new();
    for name in receive.names() {
        let rate = receive.median(&name);
        table.row(vec![
            name.clone(),
            thousands(rate),
            format!("{:.2}", rate / bare),
            receive
                .rates(&name)
                .iter()
                .map(|rate| thousands(*rate))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
        receive_json.push(json!({
            "receiver": name,
            "events_per_second_median": rate,
            "ratio_to_bare": rate / bare,
            "rounds": receive.rates(&name),
        }));
    }
    println!(
        "\nReceive rate ({} notifications from one transaction, {} rounds per receiver)",
        args.events, args.rounds
    );
    print!("{}", table.render());

    let path = write_json(
        &args.json,
        json!({
            "benchmark": "pg_ingest",
            "durable": args.durable,
            "publish": publish_json,
            "receive_events": args.events,
            "receive": receive_json,
        }),
    )?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// Runs `publishers` concurrent publishers for `seconds`.
async fn publish_rate(
    url: &str,
    method: Method,
    publishers: usize,
    seconds: f64,
) -> anyhow::Result<PublishResult> {
    let latency = Arc::new(Histogram::new());
    let committed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..publishers {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            // Ends when the client is dropped at the end of the run.
            let _ = connection.await;
        });
        let statement = client.prepare(method.sql()).await?;
        clients.push((client, statement));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for (index, (client, statement)) in clients.into_iter().enumerate() {
        let latency = Arc::clone(&latency);
        let committed = Arc::clone(&committed);
        let stream = match method {
            Method::FunctionPerStream => format!("bench-{index}"),
            _ => "bench".to_owned(),
        };
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let key = format!("p{index}-{}", sent % 100);
                let data = json!({"publisher": index, "n": sent, "pad": "0123456789abcdef"});
                let began = Instant::now();
                client.execute(&statement, &[&stream, &key, &data]).await?;
                latency.record(began.elapsed().as_micros() as u64);
                committed.fetch_add(1, Ordering::Relaxed);
                sent += 1;
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for task in tasks {
        task.await.context("publisher task")??;
    }
    Ok(PublishResult {
        method,
        publishers,
        events: committed.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
        latency: latency.summary(),
    })
}

/// Receive rates per receiver, every round.
#[derive(Debug, Default)]
struct ReceiveRates {
    rounds: Vec<(String, f64)>,
}

impl ReceiveRates {
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (name, _) in &self.rounds {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    fn rates(&self, name: &str) -> Vec<f64> {
        self.rounds
            .iter()
            .filter(|(receiver, _)| receiver == name)
            .map(|(_, rate)| *rate)
            .collect()
    }

    fn median(&self, name: &str) -> f64 {
        let mut rates = self.rates(name);
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Which receiver a round measures.
#[derive(Debug, Clone, Copy)]
enum Receiver {
    Bare { decode: bool },
    Relay,
}

async fn receive_rates(url: &str, events: u64, rounds: usize) -> anyhow::Result<ReceiveRates> {
    let publisher = tokio_postgres::connect(url, NoTls).await?;
    let (client, connection) = publisher;
    tokio::spawn(async move {
        // Ends when the client is dropped.
        let _ = connection.await;
    });
    let mut rates = ReceiveRates::default();
    for round in 0..rounds {
        for receiver in [
            Receiver::Bare { decode: false },
            Receiver::Bare { decode: true },
            Receiver::Relay,
        ] {
            client.batch_execute("vacuum analyze").await?;
            let stream = format!("recv-{round}");
            let measured = match receiver {
                Receiver::Bare { decode } => {
                    bare_round(url, &client, &stream, events, decode).await?
                }
                Receiver::Relay => relay_round(url, &client, &stream, events).await?,
            };
            for (name, seconds) in measured {
                let rate = events as f64 / seconds;
                println!(
                    "  round {round}: {name:<28} {:>9} events/s ({seconds:.3} s)",
                    thousands(rate)
                );
                rates.rounds.push((name, rate));
            }
            // A fresh stream per receiver keeps the rounds independent.
            client
                .execute("select tidewire.drop_stream($1)", &[&stream])
                .await?;
        }
    }
    Ok(rates)
}

/// Publishes `events` events to `stream` in one transaction; returns when it committed.
async fn publish_burst(
    client: &tokio_postgres::Client,
    stream: &str,
    events: u64,
) -> anyhow::Result<Instant> {
    let count = i64::try_from(events)?;
    let row = client
        .query_one(
            "select count(tidewire.publish($1, 'k' || (g % 1000), 'upsert', \
               jsonb_build_object('n', g, 'pad', '0123456789abcdef'))) \
             from generate_series(1, $2::bigint) as g",
            &[&stream, &count],
        )
        .await?;
    let published: i64 = row.get(0);
    if published != count {
        bail!("published {published} of {count} events");
    }
    Ok(Instant::now())
}

/// A bare LISTEN client: counts (and optionally decodes) notifications.
async fn bare_round(
    url: &str,
    publisher: &tokio_postgres::Client,
    stream: &str,
    events: u64,
    decode: bool,
) -> anyhow::Result<Vec<(String, f64)>> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let (done_sender, done) = tokio::sync::oneshot::channel::<(Instant, u64)>();
    let first = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let first_seen = Arc::clone(&first);
    let reader = tokio::spawn(async move {
        let mut messages =
            futures_util::stream::poll_fn(move |context| connection.poll_message(context));
        let mut received = 0u64;
        let mut bad = 0u64;
        let mut done_sender = Some(done_sender);
        while let Some(message) = messages.next().await {
            let Ok(AsyncMessage::Notification(notification)) = message else {
                if message.is_err() {
                    break;
                }
                continue;
            };
            if received == 0 {
                // Lock held for an assignment only.
                if let Ok(mut slot) = first_seen.lock() {
                    *slot = Some(Instant::now());
                }
            }
            if decode && tidewire_shared::notify::decode(notification.payload()).is_err() {
                bad += 1;
            }
            received += 1;
            if received == events {
                if let Some(sender) = done_sender.take() {
                    // The receiver waits for this; if it gave up, nothing to report.
                    let _ = sender.send((Instant::now(), bad));
                }
            }
        }
    });
    client
        .batch_execute(&format!("listen \"tw:{stream}\""))
        .await?;
    let committed = publish_burst(publisher, stream, events).await?;
    let (last, bad) = tokio::time::timeout(Duration::from_secs(300), done)
        .await
        .context("bare receiver timed out")??;
    drop(client);
    reader.abort();
    if bad > 0 {
        bail!("{bad} notifications did not decode");
    }
    let first = first
        .lock()
        .ok()
        .and_then(|slot| *slot)
        .unwrap_or(committed);
    let seconds = last.duration_since(first.min(committed)).as_secs_f64();
    let name = if decode {
        "bare LISTEN (count + decode)"
    } else {
        "bare LISTEN (count)"
    };
    Ok(vec![(name.to_owned(), seconds)])
}

/// The relay in process: a hub with one subscribed session.
async fn relay_round(
    url: &str,
    publisher: &tokio_postgres::Client,
    stream: &str,
    events: u64,
) -> anyhow::Result<Vec<(String, f64)>> {
    let mut config = Config::for_tests(url);
    // One subscriber must be able to hold the whole burst without being marked lagged.
    config.options.queue_capacity = usize::try_from(events)?.saturating_mul(2);
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let hub = Hub::start(config, token.clone(), tracker.clone())
        .await
        .map_err(|error| anyhow::anyhow!("start the hub: {error:?}"))?;
    let mut session = Session::open(Arc::clone(&hub), Grant::anonymous(Permissions::open()));
    let subscribe = json!({"type": "subscribe", "stream": stream, "snapshot": false}).to_string();
    session.handle_text(subscribe.as_bytes()).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), session.next()).await {
            Ok(Some(Outgoing::Frame { json, .. }))
                if json.starts_with(b"{\"type\":\"subscribed\"") =>
            {
                break
            }
            Ok(Some(Outgoing::Frame { .. })) => {}
            other => bail!("no subscribed message: {other:?}"),
        }
    }
    let listener_base = hub.listener.stats().snapshot().events;
    let (session_sender, session_done) = tokio::sync::oneshot::channel::<anyhow::Result<Instant>>();
    let drain = tokio::spawn(async move {
        let mut received = 0u64;
        let result = loop {
            match session.next().await {
                Some(Outgoing::Frame { json, .. }) => {
                    if json.starts_with(b"{\"type\":\"event\"") {
                        received += 1;
                        if received == events {
                            break Ok(Instant::now());
                        }
                    } else if !json.starts_with(b"{\"type\":\"presence\"") {
                        let text = String::from_utf8_lossy(&json).into_owned();
                        break Err(anyhow::anyhow!("unexpected message: {text}"));
                    }
                }
                Some(Outgoing::Close { code, reason }) => {
                    break Err(anyhow::anyhow!("session closed: {code:?} {reason}"))
                }
                None => break Err(anyhow::anyhow!("session ended")),
            }
        };
        // The caller waits for this; if it gave up there is nobody to tell.
        let _ = session_sender.send(result);
        session
    });
    let hub_for_counter = Arc::clone(&hub);
    let counter = tokio::spawn(async move {
        let mut first = None;
        loop {
            let seen = hub_for_counter.listener.stats().snapshot().events - listener_base;
            if seen > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if seen >= events {
                return (first, Instant::now());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    });
    let committed = publish_burst(publisher, stream, events).await?;
    let session_last = tokio::time::timeout(Duration::from_secs(300), session_done)
        .await
        .context("relay session timed out")???;
    let (first, listener_last) = tokio::time::timeout(Duration::from_secs(10), counter)
        .await
        .context("relay listener counter timed out")??;
    let start = first.map_or(committed, |first| first.min(committed));
    let session = drain.await?;
    drop(session);
    token.cancel();
    tracker.close();
    // Shutdown is best effort between rounds; a slow one only delays the next round.
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    drop(hub);
    Ok(vec![
        (
            "relay listener (bus handoff)".to_owned(),
            listener_last.duration_since(start).as_secs_f64(),
        ),
        (
            "relay, 1 subscribed session".to_owned(),
            session_last.duration_since(start).as_secs_f64(),
        ),
    ])
}
