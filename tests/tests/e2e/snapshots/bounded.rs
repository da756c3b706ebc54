//! Memory and sharing: a reader that stops during a big snapshot makes the relay read only
//! the pages its socket took, and is reset as a slow consumer while others are served; a
//! storm of subscribes to one stream reads each page from PostgreSQL about once.

use std::time::Duration;

use fastwebsockets::Frame;
use serde_json::json;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::{seed, Reader};
use crate::transport::client::{ws_handshake, WsClient};
use crate::transport::slow::tiny_window;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_holds_a_few_pages_and_is_reset() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| {
        options.snapshot_chunk = 50;
        options.slow_consumer_ms = 500;
    })
    .await;
    let db = pg.client().await;
    // 24 MB in 120 pages of 200 KB.
    db.execute(
        "select count(tidewire.publish('huge', 'k' || lpad(i::text, 5, '0'), 'upsert', \
             jsonb_build_object('pad', repeat('x', 4000)))) from generate_series(1, 6000) i",
        &[],
    )
    .await
    .expect("seed");

    let mut stuck = ws_handshake(relay.addr(), tiny_window(relay.addr()).await).await;
    let subscribe = json!({"type": "subscribe", "stream": "huge"}).to_string();
    stuck
        .write_frame(Frame::text(subscribe.into_bytes().into()))
        .await
        .expect("subscribe");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while relay.hub().metrics.snapshot().slow_consumer_drops[0].1 == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck reader was not reset"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reads = relay.hub().snapshots.stats().reads;
    assert!(
        (1..=40).contains(&reads),
        "the relay read {reads} of 120 pages for a reader that took a few"
    );
    crate::transport::slow::assert_reset("websocket", stuck.into_inner()).await;

    // Everyone else is served: a reader gets the whole snapshot.
    let mut ws = WsClient::connected(relay.addr()).await;
    ws.send(json!({"type": "subscribe", "stream": "huge"}))
        .await;
    let mut reader = Reader::new("huge");
    while !reader.live {
        let message = ws.json().await;
        reader.apply(&message);
    }
    assert_eq!(reader.records.len(), 6000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_storm_reads_each_page_about_once() {
    const CLIENTS: usize = 40;
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| options.snapshot_chunk = 100).await;
    let db = pg.client().await;
    seed(&db, "popular", 3000).await;
    let before = relay.hub().snapshots.stats();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let addr = relay.addr();
        tasks.push(tokio::spawn(async move {
            let mut ws = WsClient::connected(addr).await;
            ws.send(json!({"type": "subscribe", "stream": "popular"}))
                .await;
            let mut reader = Reader::new("popular");
            while !reader.live {
                let message = ws.json().await;
                reader.apply(&message);
            }
            reader.records.len()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("client"), 3000);
    }
    let stats = relay.hub().snapshots.stats();
    let reads = stats.reads - before.reads;
    let hits = stats.hits - before.hits;
    // 30 pages; the clients started within the share window, so one position.
    assert!(
        reads <= 2 * 30,
        "{reads} page reads for {CLIENTS} clients of 30 pages"
    );
    assert!(hits >= (CLIENTS as u64 - 2) * 30, "{hits} hits");
}
