//! `capture_soak`: logical capture under faults. Two relay processes in `--capture logical`
//! share a cluster (`synchronous_commit=on`, so a crash loses no acknowledged commit); a
//! writer inserts and updates rows of a table tracked into four partition streams; WebSocket
//! clients follow every stream through both relays. Then the sequencer relay is killed -9
//! `--kills` times (each time the failover is timed, and the relay started again), and
//! PostgreSQL restarted `--restarts` times (fast, immediate, kill -9 in turn).
//!
//! Checked at the end: every client saw every seq of every stream once and in order (the
//! invariant checker of docs/TESTING.md); the outbox of each stream is gap-free; no row
//! version was published twice; the records equal the table. Prints the failover times and
//! writes `artifacts/bench/capture_soak.json`; exits 2 when an invariant fails.
//!
//! ```text
//! cargo run --release -p tidewire-tests --bin capture_soak -- --kills 10 --restarts 10
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::json;
use tidewire_tests::load::checker::Kind;
use tidewire_tests::load::client::{self, ClientSpec, Shared, Transport};
use tidewire_tests::load::relay_process::{sibling_binary, RelayProcess};
use tidewire_tests::load::report::write_json;
use tidewire_tests::load::scrape::metrics;
use tidewire_tests::TestPg;
use tokio_util::sync::CancellationToken;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Logical capture under sequencer kills and PostgreSQL restarts")]
struct Args {
    /// Kills of the sequencer relay.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// PostgreSQL restarts (fast, immediate, kill -9 in turn).
    #[arg(long, default_value_t = 10)]
    restarts: usize,
    /// WebSocket clients (each follows the four streams).
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Writes per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Where the JSON report goes.
    #[arg(long, default_value = "artifacts/bench/capture_soak.json")]
    json: PathBuf,
}

const STREAMS: [&str; 4] = ["soak:0", "soak:1", "soak:2", "soak:3"];

async fn is_sequencer(addr: SocketAddr) -> bool {
    metrics(addr)
        .await
        .lines()
        .any(|line| line == "tidewire_capture_sequencer 1")
}

/// Which relay is the sequencer, waiting up to 30 s for one.
async fn sequencer(relays: &[RelayProcess]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (index, relay) in relays.iter().enumerate() {
            if relay.pid().is_some() && is_sequencer(relay.addr()).await {
                return Ok(index);
            }
        }
        if Instant::now() > deadline {
            bail!("no relay became the sequencer within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The writer: inserts (and every third write updates an earlier row), retrying through
/// outages; the statements are idempotent, so a retry after an unknown outcome changes
/// nothing a second time.
async fn writer(url: String, rate: f64, stop: Arc<AtomicBool>, writes: Arc<AtomicU64>) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next: i64 = 1;
    let mut client: Option<tokio_postgres::Client> = None;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(interval).await;
        let Some(connected) = client.as_ref().filter(|client| !client.is_closed()) else {
            if let Ok((fresh, connection)) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                client = Some(fresh);
            }
            continue;
        };
        let result = if next % 3 == 0 {
            connected
                .execute(
                    "update soak set n = $2::int8 where id = $1::int8",
                    &[&(next / 2), &next],
                )
                .await
        } else {
            connected
                .execute(
                    "insert into soak values ($1::int8, ($1::int8 % 4)::int, 0) on conflict (id) do nothing",
                    &[&next],
                )
                .await
        };
        match result {
            Ok(_) => {
                next += 1;
                writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                // An outage (connection errors, class 57 "operator intervention" while the
                // server shuts down or starts) is retried; anything else is a bug here.
                let outage = error.as_db_error().is_none_or(|db| {
                    let code = db.code().code();
                    code.starts_with("57") || code.starts_with("08")
                });
                if !outage {
                    eprintln!("the writer's statement failed: {error}");
                    return;
                }
                client = None;
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    std::fs::create_dir_all("artifacts/bench")?;
    let mut pg = TestPg::try_start(&[("synchronous_commit", "on")])
        .await
        .map_err(|error| anyhow::anyhow!("start a cluster: {error}"))?;
    let url = pg.url();
    tidewire_relay::pg::schema::migrate(&pg.client().await)
        .await
        .map_err(|error| anyhow::anyhow!("migrate: {error:#}"))?;
    let binary = sibling_binary("relay_proc");
    let relay_args: Vec<String> = [
        "--capture",
        "logical",
        "--capture-election-ms",
        "200",
        "--pg-reconnect-max-ms",
        "500",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let mut relays = vec![
        RelayProcess::spawn(
            &binary,
            &url,
            any,
            &relay_args,
            Some("artifacts/bench/capture_soak_relay0.log".into()),
        )
        .await?,
        RelayProcess::spawn(
            &binary,
            &url,
            any,
            &relay_args,
            Some("artifacts/bench/capture_soak_relay1.log".into()),
        )
        .await?,
    ];
    // The relays switch the database to logical mode as they start: wait for it.
    let admin = pg.client().await;
    sequencer(&relays).await?;
    admin
        .batch_execute(
            "create table soak (id bigint primary key, grp integer not null, n bigint not null);
             select tidewire.track_table('soak', 'soak:{grp}', 'id');
             insert into soak select -g, g % 4, 0 from generate_series(1, 4) as g;",
        )
        .await?;
    for stream in STREAMS {
        let deadline = Instant::now() + Duration::from_secs(30);
        while admin
            .query_opt("select 1 from tidewire.streams where name = $1", &[&stream])
            .await?
            .is_none()
        {
            if Instant::now() > deadline {
                bail!("{stream} was not created by the sequencer");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let shared = Arc::new(Shared::default());
    let stop_clients = CancellationToken::new();
    let progress: Arc<[AtomicU64]> = (0..args.clients * STREAMS.len())
        .map(|_| AtomicU64::new(0))
        .collect();
    let addrs: Vec<SocketAddr> = relays.iter().map(RelayProcess::addr).collect();
    let mut clients = Vec::new();
    for id in 0..args.clients {
        let spec = ClientSpec {
            id,
            transport: Transport::Ws,
            addrs: (0..addrs.len())
                .map(|offset| addrs[(id + offset) % addrs.len()])
                .collect(),
            silence_timeout: Some(Duration::from_secs(5)),
            streams: STREAMS.iter().map(|stream| (*stream).to_owned()).collect(),
            snapshot: true,
            since: Vec::new(),
            reconnect: true,
            progress: Arc::clone(&progress),
            progress_slot: id * STREAMS.len(),
            backoff_max: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(5),
            recv_buffer: None,
        };
        clients.push(tokio::spawn(client::run(
            spec,
            Arc::clone(&shared),
            stop_clients.clone(),
        )));
    }
    let stop_writer = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writing = tokio::spawn(writer(
        url.clone(),
        args.rate,
        Arc::clone(&stop_writer),
        Arc::clone(&writes),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Sequencer kills.
    let mut failovers = Vec::new();
    for kill in 0..args.kills {
        let leader = sequencer(&relays).await?;
        relays[leader].kill9().await;
        let killed = Instant::now();
        let next = sequencer(&relays).await?;
        let took = killed.elapsed();
        println!(
            "kill {}: relay {leader} killed, relay {next} took over in {took:?}",
            kill + 1
        );
        failovers.push(took.as_secs_f64());
        relays[leader]
            .start()
            .await
            .context("restart the killed relay")?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // PostgreSQL restarts.
    for restart in 0..args.restarts {
        let how = ["fast", "immediate", "kill -9"][restart % 3];
        let began = Instant::now();
        match restart % 3 {
            0 => pg.restart_fast().await,
            1 => pg.restart_immediate().await,
            _ => pg.kill9_and_restart().await,
        }
        let leader = sequencer(&relays).await?;
        println!(
            "restart {} ({how}): relay {leader} leads again after {:?}",
            restart + 1,
            began.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    stop_writer.store(true, Ordering::Relaxed);
    writing.await.context("the writer")?;
    let admin = pg.client().await;
    // Wait until the outbox holds what the table holds.
    let deadline = Instant::now() + Duration::from_secs(120);
    let consistent = "select count(*) from soak as s \
                      full join (select * from tidewire.records where stream like 'soak:%') as r \
                        on r.stream = 'soak:' || s.grp and r.key = s.id::text \
                      where s.id is null or r.key is null or r.data is distinct from to_jsonb(s)";
    loop {
        let differing: i64 = admin.query_one(consistent, &[]).await?.get(0);
        if differing == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("records still differ from the table in {differing} rows after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut heads = std::collections::HashMap::new();
    for stream in STREAMS {
        let head: i64 = admin
            .query_one(
                "select seq from tidewire.streams where name = $1",
                &[&stream],
            )
            .await?
            .get(0);
        heads.insert(stream, u64::try_from(head)?);
    }
    // Let the clients drain to the heads.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let behind = (0..args.clients).any(|id| {
            STREAMS.iter().enumerate().any(|(j, stream)| {
                progress[id * STREAMS.len() + j].load(Ordering::Relaxed) < heads[stream]
            })
        });
        if !behind || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_clients.cancel();
    let mut lost = 0;
    let mut duplicated = 0;
    let mut reordered = 0;
    let mut silent = 0;
    let mut failing = 0;
    let mut delivered = 0;
    for handle in clients {
        let outcome = handle.await?;
        for (stream, track) in &outcome.tracks {
            let verdict = track.verdict(heads[stream.as_str()]);
            lost += verdict.lost;
            silent += verdict.silent_loss;
            duplicated += verdict.counts.dup_app;
            reordered += verdict.counts.ooo;
            delivered += verdict.counts.delivered;
            if !verdict.passes(Kind::Durable) {
                failing += 1;
            }
        }
    }
    let gaps: i64 = admin
        .query_one(
            "select count(*) from (select stream, seq, lag(seq) over (partition by stream order by seq) as before \
               from tidewire.events where stream like 'soak:%') as e where e.seq <> coalesce(e.before, 0) + 1",
            &[],
        )
        .await?
        .get(0);
    let twice: i64 = admin
        .query_one(
            "select count(*) from (select key, data from tidewire.events where stream like 'soak:%' \
              group by key, data having count(*) > 1) as d",
            &[],
        )
        .await?
        .get(0);
    let max = failovers.iter().copied().fold(0.0, f64::max);
    let mean = failovers.iter().sum::<f64>() / failovers.len().max(1) as f64;
    println!(
        "\nwrites {} | events delivered to clients {delivered} | failover mean {:.0} ms, max {:.0} ms | clients: lost {lost}, duplicated {duplicated}, reordered {reordered}, silent {silent}, failing tracks {failing} | outbox: gaps {gaps}, row versions published twice {twice}",
        writes.load(Ordering::Relaxed),
        mean * 1000.0,
        max * 1000.0
    );
    let passed = delivered > 0
        && lost == 0
        && duplicated == 0
        && reordered == 0
        && silent == 0
        && failing == 0
        && gaps == 0
        && twice == 0;
    let path = write_json(
        &args.json,
        json!({"benchmark": "capture_soak", "kills": args.kills, "restarts": args.restarts,
               "clients": args.clients, "writes": writes.load(Ordering::Relaxed),
               "failover_seconds": failovers, "lost": lost, "duplicated": duplicated,
               "reordered": reordered, "silent_loss": silent, "outbox_gaps": gaps,
               "published_twice": twice, "delivered": delivered, "passed": passed}),
    )?;
    println!("wrote {}", path.display());
    for relay in &mut relays {
        relay.terminate(Duration::from_secs(5)).await;
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
