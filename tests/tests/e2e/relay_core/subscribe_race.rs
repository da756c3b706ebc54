//! The race-free subscribe, proven against real commits: 1,000 sessions subscribe at random
//! moments while events commit concurrently; each must see every event after its baseline
//! exactly once, in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tidewire_tests::TestPg;

use super::probe::{assert_exactly, hub, publish, Probe};

const SUBSCRIBERS: usize = 1000;
const EVENTS: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribes_during_commits_each_see_every_later_event_once() {
    let pg = TestPg::start().await;
    let hub = hub(&pg.url(), |config| config.options.pg_pool_size = 16).await;
    let writer = pg.client().await;
    let stream = "race";
    publish(&writer, stream, "k0", "upsert", json!({"n": 0})).await;
    // Joiners wait for a random point of the publishing, so joins are spread over it
    // whatever the machine's speed.
    let published = Arc::new(AtomicU64::new(1));
    let progress = Arc::clone(&published);
    let publisher = tokio::spawn(async move {
        for n in 2..=EVENTS {
            let key = format!("k{}", n % 17);
            publish(&writer, stream, &key, "upsert", json!({"n": n})).await;
            progress.store(n, Ordering::Release);
            if n % 8 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let mut joiners = Vec::new();
    for index in 0..SUBSCRIBERS {
        let hub = Arc::clone(&hub);
        let published = Arc::clone(&published);
        let join_at = rand::thread_rng().gen_range(1..EVENTS - 20);
        joiners.push(tokio::spawn(async move {
            while published.load(Ordering::Acquire) < join_at {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let mut probe = Probe::open(&hub);
            probe.subscribe(stream).await;
            probe
                .until_seq(stream, EVENTS, Duration::from_secs(60))
                .await;
            let baseline = probe.baseline(stream).expect("subscribed");
            let snapshot_seq = probe
                .received
                .iter()
                .find(|m| m["type"] == "snapshot")
                .and_then(|m| m["seq"].as_u64());
            assert_eq!(
                snapshot_seq,
                Some(baseline),
                "subscriber {index}: subscribed matches the snapshot"
            );
            assert_exactly(
                &probe.seqs(stream),
                baseline + 1,
                EVENTS,
                &format!("subscriber {index}"),
            );
            baseline
        }));
    }
    publisher.await.expect("publisher");
    let mut baselines = Vec::new();
    for joiner in joiners {
        baselines.push(joiner.await.expect("subscriber"));
    }
    // The joins really were spread over the publishing, so the race was exercised.
    let early = baselines.iter().filter(|&&seq| seq < EVENTS / 2).count();
    let late = baselines.iter().filter(|&&seq| seq >= EVENTS / 2).count();
    assert!(
        early > 0 && late > 0,
        "baselines not spread: {early} early, {late} late"
    );
    assert!(hub.bus.registry().check_invariants().is_ok());
}
