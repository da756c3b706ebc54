//! Stream administration: create_stream, drop_stream and epochs; temp streams and expiry.

use std::time::Duration;

use serde_json::json;
use tidewire_tests::{sqlstate, Notifications, TestPg};

use crate::support::{events, publish, records, stream_row, QUIET, WAIT};

/// Recreating a stream gives it a new epoch; drop deletes everything and tells subscribers.
#[tokio::test]
async fn create_and_drop_change_the_epoch() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let mut listener = Notifications::listen(&pg.url(), &["tw:board"]).await;

    let first: i64 = client
        .query_one("select tidewire.create_stream('board')", &[])
        .await
        .expect("create")
        .get(0);
    assert!(
        first > 0 && first < (1_i64 << 53),
        "epoch is JS-safe: {first}"
    );
    let again: i64 = client
        .query_one("select tidewire.create_stream('board', 'permanent')", &[])
        .await
        .expect("create again")
        .get(0);
    assert_eq!(again, first, "creating an existing stream keeps its epoch");

    publish(&client, "board", "a", "upsert", "1")
        .await
        .expect("publish");
    publish(&client, "board", "b", "upsert", "2")
        .await
        .expect("publish");
    assert_eq!(listener.next_json(WAIT).await["epoch"], first);
    listener.next_json(WAIT).await;

    let dropped: bool = client
        .query_one("select tidewire.drop_stream('board')", &[])
        .await
        .expect("drop")
        .get(0);
    assert!(dropped);
    assert_eq!(
        listener.next_json(WAIT).await,
        json!({"t": "drop", "stream": "board", "epoch": first})
    );
    assert_eq!(stream_row(&client, "board").await, None);
    assert!(events(&client, "board").await.is_empty());
    assert!(records(&client, "board").await.is_empty());
    let dropped_again: bool = client
        .query_one("select tidewire.drop_stream('board')", &[])
        .await
        .expect("drop again")
        .get(0);
    assert!(!dropped_again);

    // The next publish recreates it: seq starts over under a new epoch.
    assert_eq!(
        publish(&client, "board", "a", "upsert", "3")
            .await
            .expect("publish"),
        1
    );
    let recreated = listener.next_json(WAIT).await;
    let second = recreated["epoch"].as_i64().expect("epoch");
    assert_ne!(second, first, "a recreated stream has a new epoch");
    assert_eq!(recreated["seq"], 1);
    assert_eq!(stream_row(&client, "board").await, Some((second, 1, 0)));
    assert!(listener.recv(QUIET).await.is_none());

    // Epochs of many streams are distinct and JS-safe.
    let row = client
        .query_one(
            "with created as (
                 select tidewire.create_stream('many' || i) as epoch from generate_series(1, 200) as i
             )
             select count(distinct epoch), min(epoch) > 0, max(epoch) < 9007199254740992 from created",
            &[],
        )
        .await
        .expect("many streams");
    assert_eq!(row.get::<_, i64>(0), 200);
    assert!(row.get::<_, bool>(1) && row.get::<_, bool>(2));
}

/// create_stream validates kind and ttl; temp streams past expires_at are dropped (with the
/// drop notification) by expire_temp_streams, the others stay.
#[tokio::test]
async fn temp_streams_expire() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    for sql in [
        "select tidewire.create_stream('t', 'temp')",
        "select tidewire.create_stream('t', 'temp', '-1 second')",
        "select tidewire.create_stream('t', 'permanent', '1 hour')",
        "select tidewire.create_stream('t', 'forever')",
        "select tidewire.create_stream('raw:t')",
    ] {
        let error = client.query_one(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&error), Some("22023"), "{sql}");
    }

    let mut listener = Notifications::listen(&pg.url(), &["tw:room:1", "tw:room:2"]).await;
    let short: i64 = client
        .query_one(
            "select tidewire.create_stream('room:1', 'temp', '50 milliseconds')",
            &[],
        )
        .await
        .expect("short temp")
        .get(0);
    client
        .batch_execute(
            "select tidewire.create_stream('room:2', 'temp', '1 hour');
             select tidewire.create_stream('lobby');",
        )
        .await
        .expect("other streams");
    publish(&client, "room:1", "alice", "upsert", r#"{"here":true}"#)
        .await
        .expect("publish");
    publish(&client, "room:2", "bob", "upsert", r#"{"here":true}"#)
        .await
        .expect("publish");
    listener.drain(QUIET).await;
    let expires_in: f64 = client
        .query_one(
            "select extract(epoch from expires_at - created_at)::float8 from tidewire.streams where name = 'room:2'",
            &[],
        )
        .await
        .expect("expires_at")
        .get(0);
    assert!((3599.0..=3601.0).contains(&expires_in), "{expires_in}");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let expired: Vec<String> = client
        .query("select tidewire.expire_temp_streams()", &[])
        .await
        .expect("expire")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(expired, vec!["room:1".to_owned()]);
    let notification = listener.recv(WAIT).await.expect("drop notification");
    assert_eq!(notification.channel(), "tw:room:1");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(notification.payload()).expect("JSON"),
        json!({"t": "drop", "stream": "room:1", "epoch": short})
    );
    assert_eq!(stream_row(&client, "room:1").await, None);
    assert!(events(&client, "room:1").await.is_empty());
    assert!(stream_row(&client, "room:2").await.is_some());
    assert!(stream_row(&client, "lobby").await.is_some());
    let none_left: i64 = client
        .query_one("select count(*) from tidewire.expire_temp_streams()", &[])
        .await
        .expect("expire again")
        .get(0);
    assert_eq!(none_left, 0);

    // Making a temp stream permanent clears its expiry.
    client
        .batch_execute("select tidewire.create_stream('room:2', 'permanent')")
        .await
        .expect("make permanent");
    let row = client
        .query_one(
            "select kind, ttl is null and expires_at is null from tidewire.streams where name = 'room:2'",
            &[],
        )
        .await
        .expect("room:2");
    assert_eq!(row.get::<_, String>(0), "permanent");
    assert!(row.get::<_, bool>(1));
}
