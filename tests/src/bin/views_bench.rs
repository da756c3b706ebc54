//! `views_bench`: what a view costs the relay (benchmark 9 in `scripts/bench.d/25-views`).
//!
//! Opens `--clients` WebSocket connections to a relay and subscribes each one, then
//! publishes `--events` events in one transaction so that each event concerns exactly one
//! client, and measures from the commit until every event arrived: deliveries per second and
//! relay CPU per delivery. Modes:
//!
//! - `filtered`: one stream, client `i` subscribes with `where {"owner": "o<i>"}`;
//! - `streams`: client `i` subscribes to stream `vb-<i>` of its own (the baseline);
//! - `plain`: one stream, no filter, nothing published (the memory baseline).
//!
//! `--storm` (filtered only) then moves every record to the next owner in one transaction:
//! one move-out and one move-in per client. The relay's RSS is sampled once every client
//! is subscribed, before anything is published. Prints one JSON object.
//!
//! ```text
//! views_bench --relay 127.0.0.1:7300 --database-url postgres://... --relay-pid 123 \
//!     --clients 10000 --events 50000 --mode filtered --storm
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use fastwebsockets::OpCode;
use serde_json::json;
use tidewire_tests::load::procstat;
use tidewire_tests::load::transport::{send_text, websocket};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Filtered,
    Streams,
    Plain,
}

#[derive(Debug, Parser)]
struct Args {
    /// The relay's address.
    #[arg(long)]
    relay: SocketAddr,
    /// The relay's database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The relay's process id, for CPU and RSS.
    #[arg(long)]
    relay_pid: u32,
    /// WebSocket connections, one subscription each.
    #[arg(long, default_value_t = 10_000)]
    clients: u64,
    /// Events published (each concerns one client).
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Bytes of padding in each event's data (the same in every mode).
    #[arg(long, default_value_t = 100)]
    pad: i32,
    #[arg(long, value_enum)]
    mode: Mode,
    /// After the events, move every record to the next owner in one transaction.
    #[arg(long)]
    storm: bool,
    /// Seconds to wait for the deliveries.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// Counts `event` messages of every connection.
#[derive(Default)]
struct Counts {
    subscribed: AtomicU64,
    events: AtomicU64,
}

async fn client(args: &Args, index: u64, counts: Arc<Counts>) -> anyhow::Result<()> {
    let mut ws = websocket(args.relay, "/v1/ws", None, Duration::from_secs(30)).await?;
    let subscribe = match args.mode {
        Mode::Filtered => {
            json!({"type": "subscribe", "stream": "vb", "where": {"owner": format!("o{index}")}})
        }
        Mode::Streams => json!({"type": "subscribe", "stream": format!("vb-{index}")}),
        Mode::Plain => json!({"type": "subscribe", "stream": "vb"}),
    };
    send_text(&mut ws, &subscribe.to_string()).await?;
    tokio::spawn(async move {
        while let Ok(frame) = ws.read_frame().await {
            if frame.opcode != OpCode::Text {
                if frame.opcode == OpCode::Close {
                    break;
                }
                continue;
            }
            let text = &frame.payload[..];
            if text.starts_with(br#"{"type":"event""#) {
                counts.events.fetch_add(1, Ordering::Relaxed);
            } else if text.starts_with(br#"{"type":"subscribed""#) {
                counts.subscribed.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Ok(())
}

/// Waits until `counter` reaches `target`; the time it took.
async fn until(
    counter: &AtomicU64,
    target: u64,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while counter.load(Ordering::Relaxed) < target {
        if start.elapsed() > timeout {
            bail!(
                "{what}: {} of {target} after {timeout:?}",
                counter.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let pid = args.relay_pid.to_string();
    let counts = Arc::new(Counts::default());
    let (pg, connection) = tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls)
        .await
        .context("connect to PostgreSQL")?;
    tokio::spawn(connection);

    let idle = procstat::sample(&pid).context("the relay process")?;
    let mut connecting = Vec::new();
    for index in 0..args.clients {
        let (args, counts) = (Arc::clone(&args), Arc::clone(&counts));
        connecting.push(tokio::spawn(
            async move { client(&args, index, counts).await },
        ));
        if connecting.len() >= 200 {
            for task in connecting.drain(..) {
                task.await??;
            }
        }
    }
    for task in connecting {
        task.await??;
    }
    let timeout = Duration::from_secs(args.timeout);
    until(&counts.subscribed, args.clients, timeout, "subscribed").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let subscribed = procstat::sample(&pid).context("the relay process")?;

    let mut report = json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "clients": args.clients,
        "rss_idle_kib": idle.rss_kib,
        "rss_subscribed_kib": subscribed.rss_kib,
        "rss_per_client_bytes": (subscribed.rss_kib.saturating_sub(idle.rss_kib) * 1024) / args.clients.max(1),
    });
    if args.mode != Mode::Plain && args.events > 0 {
        let stream = if args.mode == Mode::Filtered {
            "'vb'"
        } else {
            "'vb-' || (i % $2::bigint)"
        };
        let publish = format!(
            "select count(tidewire.publish({stream}, 'k' || (i % $2::bigint), 'upsert', \
             jsonb_build_object('owner', 'o' || (i % $2::bigint), 'n', i, 'pad', repeat('x', $3::int)))) \
             from generate_series(0::bigint, $1::bigint - 1) as i"
        );
        let (events, clients) = (i64::try_from(args.events)?, i64::try_from(args.clients)?);
        pg.query_one(&publish, &[&events, &clients, &args.pad])
            .await?;
        let before = procstat::sample(&pid).context("the relay process")?;
        let took = until(&counts.events, args.events, timeout, "deliveries").await?;
        let after = procstat::sample(&pid).context("the relay process")?;
        let cpu = after.cpu_seconds - before.cpu_seconds;
        report["deliveries"] = json!(args.events);
        report["seconds"] = json!(took.as_secs_f64());
        report["deliveries_per_second"] = json!(args.events as f64 / took.as_secs_f64());
        report["cpu_us_per_delivery"] = json!(cpu * 1e6 / args.events as f64);
    }
    if args.storm && args.mode == Mode::Filtered {
        let clients = i64::try_from(args.clients)?;
        let already = counts.events.load(Ordering::Relaxed);
        let before = procstat::sample(&pid).context("the relay process")?;
        let started = Instant::now();
        pg.query_one(
            "select count(tidewire.publish('vb', 'k' || i, 'patch', \
             jsonb_build_object('owner', 'o' || ((i + 1) % $1::bigint)))) \
             from generate_series(0::bigint, $1::bigint - 1) as i",
            &[&clients],
        )
        .await?;
        let committed = started.elapsed();
        let took = until(
            &counts.events,
            already + 2 * args.clients,
            timeout,
            "storm deliveries",
        )
        .await?;
        let after = procstat::sample(&pid).context("the relay process")?;
        report["storm_records"] = json!(args.clients);
        report["storm_commit_seconds"] = json!(committed.as_secs_f64());
        report["storm_delivery_seconds"] = json!(took.as_secs_f64());
        report["storm_cpu_seconds"] = json!(after.cpu_seconds - before.cpu_seconds);
        report["storm_rss_kib"] = json!(after.rss_kib);
    }
    println!("{report}");
    Ok(())
}
