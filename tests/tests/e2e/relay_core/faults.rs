//! Durable delivery across PostgreSQL faults: fast restart, immediate restart, kill -9 of the
//! postmaster and `pg_terminate_backend` of the LISTEN connection, while events are being
//! published. Ground truth is the outbox; every subscriber must end with exactly its seqs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tidewire_tests::TestPg;
use tokio_postgres::NoTls;

use super::probe::{assert_exactly, head, hub, Probe};

const STREAM: &str = "faulty";

/// Publishes continuously, reconnecting after every failure, until `stop` is set.
fn spawn_publisher(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut attempts = 0u64;
        while !stop.load(Ordering::Acquire) {
            let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let driver = tokio::spawn(connection);
            while !stop.load(Ordering::Acquire) {
                attempts += 1;
                let published = client
                    .query_one(
                        "select tidewire.publish($1, $2, 'upsert', $3::jsonb)",
                        &[
                            &STREAM,
                            &format!("k{}", attempts % 50),
                            &json!({"attempt": attempts}),
                        ],
                    )
                    .await;
                if published.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            driver.abort();
        }
        attempts
    })
}

/// Subscribes `count` probes and drains them continuously in their own tasks, so that
/// nothing backs up while the test injects faults. Returns the handles that finish once
/// each probe saw `target` (read from the watch when publishing stopped).
async fn probes(hub: &Arc<tidewire_relay::hub::Hub>, count: usize) -> Vec<Probe> {
    let mut probes = Vec::new();
    for _ in 0..count {
        let mut probe = Probe::open(hub);
        probe.subscribe(STREAM).await;
        probe
            .until(Duration::from_secs(10), |m| m["type"] == "subscribed")
            .await;
        probes.push(probe);
    }
    probes
}

async fn run_fault_scenario(faults: &[&str]) {
    let mut pg = TestPg::start_with_settings(&[("synchronous_commit", "on")]).await;
    {
        let client = pg.client().await;
        tidewire_relay::pg::schema::migrate(&client)
            .await
            .expect("migrate");
    }
    let hub = hub(&pg.url(), |_| {}).await;
    let mut probes = probes(&hub, 3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let target = Arc::new(AtomicU64::new(0));
    let publisher = spawn_publisher(pg.url(), Arc::clone(&stop));
    let drainers: Vec<_> = probes
        .drain(..)
        .map(|mut probe| {
            let target = Arc::clone(&target);
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
                while tokio::time::Instant::now() < deadline {
                    probe.recv(Duration::from_millis(200)).await;
                    let goal = target.load(Ordering::Acquire);
                    if goal > 0 && probe.seqs(STREAM).last().copied() >= Some(goal) {
                        break;
                    }
                }
                probe
            })
        })
        .collect();
    for fault in faults {
        tokio::time::sleep(Duration::from_millis(700)).await;
        match *fault {
            "fast" => pg.restart_fast().await,
            "immediate" => pg.restart_immediate().await,
            "kill9" => pg.kill9_and_restart().await,
            "terminate" => {
                let killed = pg
                    .terminate_backends_where("application_name = 'tidewire-relay listen'")
                    .await;
                assert_eq!(killed, 1, "exactly one LISTEN backend");
            }
            other => panic!("unknown fault {other}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Release);
    let attempts = publisher.await.expect("publisher");
    let client = pg.client().await;
    let committed = head(&client, STREAM).await;
    assert!(
        committed > 100,
        "too few events committed ({committed} of {attempts} attempts)"
    );
    target.store(committed, Ordering::Release);
    let mut finished = Vec::new();
    for drainer in drainers {
        finished.push(drainer.await.expect("drainer"));
    }
    for (index, probe) in finished.iter().enumerate() {
        let baseline = probe.baseline(STREAM).expect("subscribed");
        assert_exactly(
            &probe.seqs(STREAM),
            baseline + 1,
            committed,
            &format!("probe {index} after {faults:?}"),
        );
    }
    let stats = hub.listener.stats().snapshot();
    assert!(
        stats.reconnects >= faults.len() as u64,
        "reconnects {} < faults {}",
        stats.reconnects,
        faults.len()
    );
    let disconnects = finished[0].advisories("disconnect").len();
    assert!(disconnects >= 1, "clients were told about the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_across_fast_and_immediate_restarts() {
    run_fault_scenario(&["fast", "immediate"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_across_kill9_and_a_terminated_listen_backend() {
    run_fault_scenario(&["kill9", "terminate"]).await;
}
