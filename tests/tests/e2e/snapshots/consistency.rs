//! A snapshot read while writers commit is exactly the stream's state at the snapshot's seq,
//! and that state plus the events after it is the final state: over WebSocket (unfiltered,
//! a filtered view) and with logical-replication capture.

use std::time::Duration;

use serde_json::json;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::{seed, truth, Reader, Writers};
use crate::transport::client::{ws_handshake, WsClient, WsItem};
use crate::transport::slow::window;
use crate::views::ViewReader;

const CONVERGE: Duration = Duration::from_secs(60);

/// Records big enough that the snapshot (12 MB) cannot sit in socket buffers: the relay must
/// read its pages as the client reads, while the writers commit.
async fn seed_big(pg: &tokio_postgres::Client, stream: &str) -> i64 {
    pg.query_one(
        "select max(tidewire.publish($1, 'k' || lpad(i::text, 5, '0'), 'upsert', \
             jsonb_build_object('owner', 'u' || (i % 3), 'n', i, 'pad', repeat('x', 4000)))) \
         from generate_series(1, 3000) i",
        &[&stream],
    )
    .await
    .expect("seed")
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_read_during_writes_is_the_state_at_its_seq() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| {
        options.snapshot_chunk = 50;
        options.snapshot_share_ms = 0;
    })
    .await;
    let db = pg.client().await;
    let head = seed_big(&db, "big").await;
    let (at, before) = truth(&db, "big").await;
    assert_eq!(at, u64::try_from(head).expect("seq"));

    // A reader with a small receive window, reading slowly.
    let socket = window(relay.addr(), 65_536).await;
    let mut ws = WsClient::from_raw(ws_handshake(relay.addr(), socket).await);
    ws.send(json!({"type": "subscribe", "stream": "big"})).await;
    let mut reader = Reader::new("big");
    while reader.chunks == 0 {
        let message = ws.json().await;
        reader.apply(&message);
    }
    assert_eq!(reader.position.map(|(_, seq)| seq), Some(at));

    let writers = Writers::start(&pg, "big", 3).await;
    let reads_before = relay.hub().snapshots.stats().reads;
    while !reader.live {
        let message = ws.json().await;
        if reader.apply(&message) {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    assert_eq!(reader.chunks, 60, "3000 records in pages of 50");
    // The relay read pages as they were taken, while the writers were committing.
    let (head_now, _) = truth(&db, "big").await;
    assert!(
        head_now > at + 50,
        "writers committed during the snapshot: {head_now}"
    );
    assert!(relay.hub().snapshots.stats().reads - reads_before > 40);
    assert_eq!(
        reader.snapshot, before,
        "the snapshot is the state at its seq"
    );

    let written = writers.stop().await;
    assert!(written > 50);
    reader.until_equal(&mut ws, &db, CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_snapshot_is_paged_and_exact_during_writes() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| {
        options.snapshot_chunk = 40;
    })
    .await;
    let db = pg.client().await;
    seed(&db, "owned", 3000).await;
    let writers = Writers::start(&pg, "owned", 2).await;
    let mut ws = WsClient::connected(relay.addr()).await;
    let mut view = ViewReader::new("owned", json!({"owner": "u1"}));
    ws.send(view.subscribe_message()).await;
    // Chunks of a view are numbered without holes even though pages are filtered.
    let mut chunks = 0u64;
    while !view.live {
        let message = ws.json().await;
        assert_ne!(message["type"], "error", "{message}");
        if message["type"] == "snapshot" {
            assert_eq!(message["chunk"].as_u64(), Some(chunks));
            chunks += 1;
            for record in message["records"].as_array().expect("records") {
                assert_eq!(record["data"]["owner"], "u1", "{record}");
            }
        }
        view.apply(&message);
    }
    assert!(chunks > 10, "a paged view snapshot: {chunks} chunks");
    tokio::time::sleep(Duration::from_millis(500)).await;
    writers.stop().await;
    assert!(view.until_equal(&mut ws, &db).await, "the view converges");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_logically_captured_table_is_exact_during_updates() {
    let pg = TestPg::start().await;
    let relay = crate::capture::logical(&pg)
        .options(|options| options.snapshot_chunk = 100)
        .spawn()
        .await;
    let db = pg.client().await;
    db.batch_execute(
        "create table items (id int primary key, owner text, n int);
         select tidewire.track_table('items', 'items', 'id');
         insert into items select i, 'u' || (i % 3), 0 from generate_series(1, 2000) i;",
    )
    .await
    .expect("track and fill");
    crate::capture::eventually("the rows are captured", || async {
        let (_, records) = truth(&db, "items").await;
        (records.len() == 2000).then_some(())
    })
    .await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let updater = {
        let client = pg.client().await;
        tokio::spawn(async move {
            let mut i = 0;
            while !*stopped.borrow() {
                i += 1;
                client
                    .execute(
                        "update items set n = n + 1 where id % 97 = $1",
                        &[&(i % 97)],
                    )
                    .await
                    .expect("update");
                client
                    .execute("delete from items where id = $1", &[&(i * 13 % 2000 + 1)])
                    .await
                    .expect("delete");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut ws = WsClient::connected(relay.addr()).await;
    ws.send(json!({"type": "subscribe", "stream": "items"}))
        .await;
    let mut reader = Reader::new("items");
    while !reader.live {
        match ws.item().await {
            WsItem::Json(message) => {
                if reader.apply(&message) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            WsItem::Ping | WsItem::Pong => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
    assert!(reader.chunks >= 10, "{} chunks", reader.chunks);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).expect("stop");
    updater.await.expect("updater");
    reader.until_equal(&mut ws, &db, CONVERGE).await;
}
