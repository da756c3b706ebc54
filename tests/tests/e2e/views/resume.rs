//! A filtered view resumes exactly across a relay kill -9 and a PostgreSQL restart: every
//! event the view should get arrives once, in order, with `prev` naming the client's
//! position, and the view ends equal to the filter applied to the stream.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tidewire_shared::view::{judge, Verdict};
use tidewire_shared::{Filter, Op};
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio_postgres::Client;

use super::{publish, ViewReader, CONVERGE};
use crate::transport::client::{WsClient, WsItem};

/// `count` random writes to 12 keys whose owner moves between three users.
async fn writes(pg: &Client, rng: &mut StdRng, count: usize) {
    for _ in 0..count {
        let key = format!("k{}", rng.gen_range(0..12));
        let owner = ["u1", "u2", "u3"][rng.gen_range(0..3)];
        let n = rng.gen_range(0..100);
        match rng.gen_range(0..10) {
            0..=3 => publish(pg, "jobs", &key, "upsert", json!({"owner": owner, "n": n})).await,
            4..=6 => publish(pg, "jobs", &key, "patch", json!({"n": n})).await,
            7..=8 => publish(pg, "jobs", &key, "patch", json!({"owner": owner})).await,
            _ => publish(pg, "jobs", &key, "delete", Value::Null).await,
        };
    }
}

/// The seqs a view of `filter` must receive after `after`, judged from the outbox.
async fn expected_seqs(pg: &Client, filter: &Value, after: u64) -> Vec<u64> {
    let filter = Filter::parse(filter).expect("valid");
    let rows = pg
        .query(
            "select seq, op, data::text, prior::text from tidewire.events where stream = 'jobs' order by seq",
            &[],
        )
        .await
        .expect("read the outbox");
    let json =
        |text: Option<String>| text.map(|text| serde_json::from_str::<Value>(&text).expect("JSON"));
    rows.iter()
        .filter_map(|row| {
            let seq = u64::try_from(row.get::<_, i64>(0)).expect("positive");
            let op = Op::parse(row.get(1)).expect("op");
            let data = json(row.get(2)).unwrap_or(Value::Null);
            let prior = json(row.get(3));
            let (verdict, _) = judge(&filter, op, prior.as_ref(), &data);
            (seq > after && verdict != Verdict::Skip).then_some(seq)
        })
        .collect()
}

/// Connects (retrying while the relay restarts) and resumes the view.
async fn reconnect(addr: std::net::SocketAddr, reader: &mut ViewReader) -> WsClient {
    let deadline = std::time::Instant::now() + CONVERGE;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the relay came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws = WsClient::connected(addr).await;
    reader.subscribe(&mut ws).await;
    ws
}

/// Reads until the view converges; a subscription dropped while PostgreSQL was down
/// (`unavailable`, then `unsubscribed`) is resumed from the position, as a client does.
async fn converge(reader: &mut ViewReader, ws: &mut WsClient, pg: &Client) {
    let deadline = std::time::Instant::now() + CONVERGE;
    let mut quiet = true;
    loop {
        if quiet && reader.live && reader.records == super::truth(pg, "jobs", &reader.filter).await
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the view converges");
        quiet = false;
        match ws.item_within(Duration::from_millis(200)).await {
            Some(WsItem::Json(message)) if message["type"] == "unsubscribed" => {
                reader.subscribe(ws).await;
            }
            Some(WsItem::Json(message)) if message["type"] == "error" => {
                assert_eq!(message["code"], "unavailable", "{message}");
            }
            Some(WsItem::Json(message)) => reader.apply(&message),
            Some(WsItem::Ping | WsItem::Pong) => {}
            None => quiet = true,
            Some(other) => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_resumes_exactly_across_a_relay_kill_and_a_postgres_restart() {
    let mut pg = TestPg::start_with_settings(&[("synchronous_commit", "on")]).await;
    let mut rng = StdRng::seed_from_u64(14);
    let filter = json!({"owner": {"in": ["u1", "u2"]}, "n": {"ge": 20}});
    let relay = TestRelay::builder(&pg).killable().spawn().await;
    let addr = relay.addr();
    let mut reader = ViewReader::new("jobs", filter.clone());
    let mut ws = reconnect(addr, &mut reader).await;
    let start = reader.position.map_or(0, |(_, seq)| seq);

    let sql = pg.client().await;
    writes(&sql, &mut rng, 150).await;
    converge(&mut reader, &mut ws, &sql).await;

    // kill -9 of the relay: writes go on while it is away.
    relay.kill();
    writes(&sql, &mut rng, 150).await;
    let relay = TestRelay::builder(&pg).on(addr).killable().spawn().await;
    let mut ws = reconnect(addr, &mut reader).await;
    converge(&mut reader, &mut ws, &sql).await;

    // PostgreSQL restarts under a live view.
    drop(sql);
    pg.restart_fast().await;
    let sql = pg.client().await;
    writes(&sql, &mut rng, 150).await;
    converge(&mut reader, &mut ws, &sql).await;

    let expected = expected_seqs(&sql, &filter, start).await;
    assert!(
        expected.len() > 50,
        "the history moves records in and out: {}",
        expected.len()
    );
    assert_eq!(
        reader.seqs, expected,
        "every event of the view exactly once, in order"
    );
    relay.kill();
}

/// Events stored before the upgrade that added pre-images cannot be judged for a view: a
/// filtered subscriber resuming from before them gets `resync` and a snapshot (over HTTP, a
/// 409), while an unfiltered one still replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_resuming_before_the_pre_images_gets_a_snapshot() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    publish(&sql, "legacy", "a", "upsert", json!({"owner": "u1"})).await;
    publish(&sql, "legacy", "a", "patch", json!({"owner": "u2"})).await;
    publish(&sql, "legacy", "b", "upsert", json!({"owner": "u1"})).await;
    // What migration 6 leaves on a database that had these events already.
    sql.batch_execute(
        "update tidewire.events set prior = null where stream = 'legacy';
         update tidewire.streams set prior_from = seq where name = 'legacy';",
    )
    .await
    .expect("make the history legacy");
    let epoch: i64 = sql
        .query_one(
            "select epoch from tidewire.streams where name = 'legacy'",
            &[],
        )
        .await
        .expect("epoch")
        .get(0);
    let relay = TestRelay::spawn(&pg).await;
    let mut ws = WsClient::connected(relay.addr()).await;
    ws.send(
        json!({"type": "subscribe", "stream": "legacy", "where": {"owner": "u1"},
                   "since": {"epoch": epoch, "seq": 1}}),
    )
    .await;
    let resync = ws.expect("advisory").await;
    assert_eq!(resync["kind"], "resync", "{resync}");
    let snapshot = ws.expect("snapshot").await;
    let keys: Vec<&str> = snapshot["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|record| record["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        ["b"],
        "the view's records, not a replay judged without pre-images"
    );

    let mut plain = WsClient::connected(relay.addr()).await;
    plain
        .send(json!({"type": "subscribe", "stream": "legacy", "since": {"epoch": epoch, "seq": 1}}))
        .await;
    assert_eq!(
        plain.expect("event").await["seq"],
        2,
        "an unfiltered resume still replays"
    );

    let mine = "%7B%22owner%22%3A%22u1%22%7D";
    let (status, body) = crate::transport::client::get_json(
        relay.addr(),
        &format!("/v1/streams/legacy/events?since=0&where={mine}"),
        &[],
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["resync"].as_bool()),
        (409, Some(true)),
        "{body}"
    );
    let (status, _) =
        crate::transport::client::get_json(relay.addr(), "/v1/streams/legacy/events?since=0", &[])
            .await;
    assert_eq!(status.as_u16(), 200);
}
