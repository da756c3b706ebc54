//! Shared replay pages: many sessions resuming the same range read the outbox once per page,
//! each still gets exactly the events after its own position, and a session resuming into the
//! head's page still sees events committed after other sessions read it.

use std::time::Duration;

use serde_json::json;
use tidewire_tests::TestPg;

use super::probe::{assert_exactly, hub, publish, Probe};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resuming_the_same_range_share_outbox_reads() {
    let pg = TestPg::start().await;
    let hub = hub(&pg.url(), |config| config.options.replay_page = 100).await;
    let client = pg.client().await;
    client
        .batch_execute(
            "select tidewire.publish('shared', 'k' || g, 'upsert', to_jsonb(g)) \
             from generate_series(1, 1050) as g",
        )
        .await
        .expect("publish 1050 events");
    let epoch: i64 = client
        .query_one(
            "select epoch from tidewire.streams where name = 'shared'",
            &[],
        )
        .await
        .expect("epoch")
        .get(0);
    let before = hub.replay.stats();
    // 30 sessions resume from positions spread over the first page; each must get exactly
    // the events after its own position.
    let mut probes = Vec::new();
    for index in 0..30u64 {
        let mut probe = Probe::open(&hub);
        let since = 5 + index * 3;
        probe
            .send(json!({"type": "subscribe", "stream": "shared", "since": {"epoch": epoch, "seq": since}}))
            .await;
        probes.push((since, probe));
    }
    for (since, probe) in &mut probes {
        probe.until(WAIT, |m| m["type"] == "subscribed").await;
        assert_exactly(&probe.seqs("shared"), *since + 1, 1050, "a resumed session");
    }
    let stats = hub.replay.stats();
    let reads = stats.reads - before.reads;
    // 11 pages (10 full, one partial at the head). Sessions resuming at once share the full
    // pages; each may read the partial head page itself.
    assert!(
        reads <= 10 + 30 + 5,
        "{reads} outbox reads for 30 sessions x 11 pages: pages are not shared"
    );
    assert!(stats.hits - before.hits >= 30 * 10 / 2, "hits: {stats:?}");

    // A session resuming into the (partial) head page after more events were committed sees
    // them: a partial page is never served from the cache.
    for n in 1051..=1060u64 {
        publish(&client, "shared", &format!("k{n}"), "upsert", json!(n)).await;
    }
    let mut late = Probe::open(&hub);
    late.send(
        json!({"type": "subscribe", "stream": "shared", "since": {"epoch": epoch, "seq": 1040}}),
    )
    .await;
    late.until(WAIT, |m| m["type"] == "subscribed").await;
    late.until_seq("shared", 1060, WAIT).await;
    assert_exactly(
        &late.seqs("shared"),
        1041,
        1060,
        "a session resuming at the head",
    );
}
