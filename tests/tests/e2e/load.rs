//! Short versions of the fault tests, driven by the load generator's engine and its
//! invariant checker (`tidewire_tests::load`): Postgres restarts of every kind, a frozen
//! Postgres, relay kill -9 and restart, three relays with one killed, stalled consumers, and
//! blackholes between clients and relay and between relay and Postgres. Each asserts the
//! invariants of docs/TESTING.md (durable: lost = dup_app = ooo = silent_loss = 0; raw:
//! dup_app = ooo = silent_loss = 0) and its detection deadline. The long versions are
//! `scripts/bench.d/40-faults` (the `fault_soak` binary).

use std::path::PathBuf;
use std::time::Duration;

use tidewire_tests::load::scenario::{self, Hole, Load, PgFault, ScenarioReport};

/// The relay as a child process of this package, for kill -9.
fn relay_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_relay_proc"))
}

fn small(ws: usize, sse: usize) -> Load {
    Load {
        ws,
        sse,
        rate: 50.0,
        raw: true,
        settle: 0.5,
        catch_up_timeout: Duration::from_secs(30),
    }
}

/// Fails with the whole report when an invariant or a catch-up failed.
fn assert_clean(report: &ScenarioReport) {
    println!("{}", report.describe());
    let invariants = &report.load.invariants;
    assert!(
        invariants.pass() && invariants.tracks > 0 && invariants.expected > 0,
        "invariants failed: {}\nfailing tracks: {:?}",
        report.describe(),
        invariants.failures
    );
    assert_eq!(invariants.counts.dup_app, 0, "{}", report.describe());
    for cycle in &report.cycles {
        assert!(
            cycle.catch_up_ms.is_some(),
            "clients never caught up after {}: {}",
            cycle.fault,
            report.describe()
        );
    }
    assert!(
        report.load.drain_ms.is_some(),
        "drain timed out: {}",
        report.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_lose_nothing() {
    let faults = [
        PgFault::Fast,
        PgFault::Immediate,
        PgFault::Kill9,
        PgFault::TerminateListen,
    ];
    let report = scenario::pg_restarts(&small(40, 10), &faults, faults.len())
        .await
        .expect("scenario runs");
    assert_clean(&report);
    for cycle in &report.cycles {
        let detected = cycle.detection_ms.unwrap_or(f64::INFINITY);
        assert!(
            detected < 10_000.0,
            "{} not detected within 10 s: {}",
            cycle.fault,
            report.describe()
        );
    }
    assert!(
        report.load.invariants.counts.gap_advisories > 0,
        "raw subscribers were never told `gap`: {}",
        report.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_postgres_is_detected_and_recovered() {
    let report = scenario::pg_freeze(&small(16, 4), Duration::from_secs(5), 1)
        .await
        .expect("scenario runs");
    assert_clean(&report);
    let detected = report.cycles[0].detection_ms.unwrap_or(f64::INFINITY);
    // Health interval 300 ms + liveness timeout 1500 ms; the bound is 10 s.
    assert!(
        detected < 4_000.0,
        "freeze detected after {detected} ms: {}",
        report.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_relay_clients_resume_after_restart() {
    let report = scenario::relay_kills(
        &small(30, 10),
        relay_binary(),
        2,
        Duration::from_millis(300),
    )
    .await
    .expect("scenario runs");
    assert_clean(&report);
    let clients = (report.load.ws + report.load.sse) as u64;
    assert!(
        report.load.connects >= clients * 3,
        "clients did not reconnect twice: {}",
        report.describe()
    );
    let histogram = report.extra["reconnect_delay_histogram_ms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let used_buckets = histogram
        .iter()
        .filter(|bucket| bucket["count"].as_u64() > Some(0))
        .count();
    assert!(
        used_buckets >= 2,
        "reconnects are not spread by jitter: {histogram:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_one_killed_clients_move_and_agree() {
    let report = scenario::three_relays(&small(24, 6), relay_binary())
        .await
        .expect("scenario runs");
    assert_clean(&report);
    let clients = (report.load.ws + report.load.sse) as u64;
    assert!(
        report.load.connects > clients,
        "no client moved to another relay: {}",
        report.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_consumers_are_dropped_and_others_keep_up() {
    let load = Load {
        raw: false,
        rate: 200.0,
        ..small(16, 4)
    };
    // A 2 s deadline: a healthy client that the other e2e tests keep off the CPU for a
    // second must not be taken for a stalled one.
    let report = scenario::stalled_consumers(&load, 20, 10, 7000, 8.0, Duration::from_secs(2))
        .await
        .expect("scenario runs");
    assert_clean(&report);
    let stalled = &report.extra["stalled"];
    assert_eq!(
        (stalled["opened"].as_u64(), stalled["opened_sse"].as_u64()),
        (Some(30), Some(10)),
        "{}",
        report.describe()
    );
    // The relay counted each as a slow consumer (reset), per transport.
    let drops = &report.extra["slow_consumer_drops"];
    assert_eq!(
        (drops["ws"].as_u64(), drops["sse"].as_u64()),
        (Some(20), Some(10)),
        "{}",
        report.describe()
    );
    assert_eq!(
        stalled["disconnected"],
        stalled["opened"],
        "stalled consumers still connected: {}",
        report.describe()
    );
    // The socket buffers fill within a second at 1.4 MB/s, then the 2 s deadline.
    let slowest = stalled["disconnect_after_ms"]["max"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(
        slowest < 8_000,
        "a stalled consumer was dropped after {slowest} ms: {}",
        report.describe()
    );
    // The healthy clients keep up: none was dropped or moved to replay alongside the stalled
    // ones. Their p99 against the unloaded phase (the 2x target) is a timing and is judged
    // by `scripts/bench 30-stalled` on a quiet machine; here the other e2e tests share the
    // 2 cores (CI once measured an unloaded p99 of 229 ms), so it is printed, not asserted.
    let healthy = (report.load.ws + report.load.sse) as u64;
    assert_eq!(
        report.load.disconnects,
        0,
        "a healthy client lost its connection: {}",
        report.describe()
    );
    assert_eq!(
        report.load.connects,
        healthy,
        "a healthy client reconnected: {}",
        report.describe()
    );
    assert_eq!(
        report.load.invariants.counts.lagged,
        0,
        "a healthy client fell behind the live buffer: {}",
        report.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_clients_are_dropped_and_resume() {
    let keepalive = Duration::from_millis(500);
    // With raw channels: every blackholed client is dropped, so the relay UNLISTENs and later
    // LISTENs again; resuming clients must still be told what they missed.
    let load = small(16, 4);
    let report = scenario::blackhole(&load, Hole::Clients, keepalive, Duration::from_secs(3))
        .await
        .expect("scenario runs");
    assert_clean(&report);
    let detected = report.cycles[0].detection_ms.unwrap_or(f64::INFINITY);
    // Two keepalive intervals, plus a timer turn and scheduling on a loaded machine.
    assert!(
        detected <= 2.0 * 500.0 + 1000.0,
        "blackholed clients dropped after {detected} ms: {}",
        report.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_postgres_is_detected_and_recovered() {
    let report = scenario::blackhole(
        &small(16, 4),
        Hole::Postgres,
        Duration::from_millis(500),
        Duration::from_secs(3),
    )
    .await
    .expect("scenario runs");
    assert_clean(&report);
    let detected = report.cycles[0].detection_ms.unwrap_or(f64::INFINITY);
    // Health interval 300 ms + liveness timeout 1500 ms, plus slack.
    assert!(
        detected <= 300.0 + 1500.0 + 1000.0,
        "blackholed postgres noticed after {detected} ms: {}",
        report.describe()
    );
}
