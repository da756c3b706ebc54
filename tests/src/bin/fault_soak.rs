//! `fault_soak`: the long versions of the fault tests (the short ones are in
//! `tests/e2e/load.rs`), run from `scripts/bench.d/40-faults`: Postgres restarted 20 times
//! with 1,000 subscribers, frozen 30 s, the relay killed and restarted 10 times, three relays
//! with one killed, 1,000 stalled consumers, and blackholes. Prints each scenario's cycles
//! and invariants, writes `artifacts/bench/fault_soak.json`, exits 2 if any scenario fails.
//!
//! ```text
//! fault_soak [--only restarts,freeze,kills,three,stalled,blackholes] [--subscribers 1000]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tidewire_tests::load::relay_process::sibling_binary;
use tidewire_tests::load::report::write_json;
use tidewire_tests::load::scenario::{self, Hole, Load, PgFault, ScenarioReport};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Long fault runs with the invariant checker")]
struct Args {
    /// Scenarios to run (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Subscribers (WebSocket; a fifth more over SSE).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Postgres restarts.
    #[arg(long, default_value_t = 20)]
    restarts: usize,
    /// Seconds Postgres stays frozen.
    #[arg(long, default_value_t = 30)]
    freeze_seconds: u64,
    /// Relay kills.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Stalled WebSocket consumers.
    #[arg(long, default_value_t = 1000)]
    stalled: usize,
    /// Stalled SSE consumers.
    #[arg(long, default_value_t = 200)]
    stalled_sse: usize,
    /// Durable events per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Where the JSON report goes.
    #[arg(long, default_value = "artifacts/bench/fault_soak.json")]
    json: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|only| only == name);
    let load = Load {
        ws: args.subscribers,
        sse: args.subscribers / 5,
        rate: args.rate,
        raw: true,
        settle: 2.0,
        catch_up_timeout: Duration::from_secs(120),
    };
    let relay = sibling_binary("relay_proc");
    let mut reports: Vec<ScenarioReport> = Vec::new();
    let mut failed = Vec::new();
    let mut record =
        |name: &str, result: Result<ScenarioReport, scenario::ScenarioError>| match result {
            Ok(report) => {
                println!("{}", report.describe());
                if !report.load.invariants.pass()
                    || report
                        .cycles
                        .iter()
                        .any(|cycle| cycle.catch_up_ms.is_none())
                {
                    failed.push(name.to_owned());
                }
                reports.push(report);
            }
            Err(error) => {
                println!("{name}: could not run: {error}");
                failed.push(name.to_owned());
            }
        };
    if wanted("restarts") {
        let faults = [
            PgFault::Fast,
            PgFault::Immediate,
            PgFault::Kill9,
            PgFault::TerminateListen,
        ];
        record(
            "restarts",
            scenario::pg_restarts(&load, &faults, args.restarts).await,
        );
    }
    if wanted("freeze") {
        record(
            "freeze",
            scenario::pg_freeze(&load, Duration::from_secs(args.freeze_seconds), 1).await,
        );
    }
    if wanted("kills") {
        record(
            "kills",
            scenario::relay_kills(&load, relay.clone(), args.kills, Duration::from_millis(500))
                .await,
        );
    }
    if wanted("three") {
        record("three", scenario::three_relays(&load, relay.clone()).await);
    }
    if wanted("stalled") {
        let healthy = Load {
            ws: 200,
            sse: 50,
            raw: false,
            ..load.clone()
        };
        record(
            "stalled",
            scenario::stalled_consumers(
                &healthy,
                args.stalled,
                args.stalled_sse,
                7000,
                20.0,
                Duration::from_secs(1),
            )
            .await,
        );
    }
    if wanted("blackholes") {
        for side in [Hole::Clients, Hole::Postgres] {
            record(
                "blackholes",
                scenario::blackhole(&load, side, Duration::from_secs(2), Duration::from_secs(10))
                    .await,
            );
        }
    }
    let path = write_json(
        &args.json,
        serde_json::json!({
            "benchmark": "fault_soak",
            "failed": failed,
            "scenarios": reports,
        }),
    )?;
    println!("wrote {}", path.display());
    if failed.is_empty() {
        println!("fault_soak: every scenario passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("fault_soak: FAILED {failed:?}");
        Ok(ExitCode::from(2))
    }
}
