//! Shared replay pages: many sessions resuming the same range read the outbox once per page,
//! each still gets exactly the events after its own position, and a session resuming into the
//! head's page still sees events committed after other sessions read it.

use std::sync::Arc;
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
    let epoch = publish_series(&client, "shared", 1050).await;
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

/// Under a lag storm thousands of sessions read the head's (partial) page at once. Reads that
/// wait for a pool connection are merged; a read is closed to newcomers once its query runs,
/// so every session still sees each event committed before it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_the_head_page_merge_only_sessions_that_asked_before_the_query() {
    let pg = TestPg::start().await;
    let hub = hub(&pg.url(), |config| {
        config.options.replay_page = 100;
        config.options.pg_pool_size = 1;
    })
    .await;
    let client = pg.client().await;
    let epoch = publish_series(&client, "head", 50).await;
    let stream = tidewire_shared::StreamName::new("head").expect("a valid name");
    let read = |after: u64| {
        let hub = Arc::clone(&hub);
        let stream = stream.clone();
        tokio::spawn(async move {
            let page = hub
                .replay
                .read(&hub.pool, &stream, epoch, after)
                .await
                .expect("replay read");
            page.frames()
                .iter()
                .map(|frame| frame.seq)
                .collect::<Vec<_>>()
        })
    };
    let before = hub.replay.stats();
    // The pool's only connection is busy: reads queue for it.
    let held = hub.pool.get().await.expect("the pool's connection");
    let first = read(10);
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&client, "head", "k51", "upsert", json!(51)).await;
    let second = read(40);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(held);
    let first = first.await.expect("first read");
    let second = second.await.expect("second read");
    assert_eq!(
        first,
        (11..=51).collect::<Vec<_>>(),
        "the first session's page"
    );
    assert_eq!(
        second,
        (41..=51).collect::<Vec<_>>(),
        "the second session's page"
    );
    let after = hub.replay.stats();
    assert_eq!(
        after.reads - before.reads,
        1,
        "queued reads of one page merge"
    );
    assert_eq!(after.hits - before.hits, 1, "the joiner counts as a hit");

    // That partial page is not served to a session asking after its query ran.
    publish(&client, "head", "k52", "upsert", json!(52)).await;
    let third = read(50).await.expect("third read");
    assert_eq!(third, vec![51, 52], "a later session sees the later commit");
    assert_eq!(hub.replay.stats().reads - before.reads, 2);
}

/// Publishes events 1..=`count` (keys `k1`...) to `stream` in one statement; returns the
/// stream's epoch.
async fn publish_series(client: &tokio_postgres::Client, stream: &str, count: i64) -> u64 {
    client
        .execute(
            "select count(tidewire.publish($1, 'k' || g, 'upsert', to_jsonb(g))) \
             from generate_series(1, $2::bigint) as g",
            &[&stream, &count],
        )
        .await
        .expect("publish the series");
    let epoch: i64 = client
        .query_one(
            "select epoch from tidewire.streams where name = $1",
            &[&stream],
        )
        .await
        .expect("epoch")
        .get(0);
    u64::try_from(epoch).expect("epoch is positive")
}
