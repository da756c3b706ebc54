//! The HTTP API's events and snapshot: publish over POST, then read back as a snapshot
//! and as replay pages; a `since` older than the retained history answers resync.

use super::*;

/// Publish over POST, then read it back as a snapshot and as replay pages.
#[tokio::test]
async fn publish_then_snapshot_and_replay_pages() {
    let relay = Relay::start(|_| {}).await;
    let writes = [
        json!({"key": "a", "op": "upsert", "data": {"title": "milk", "done": false}}),
        json!({"key": "b", "op": "upsert", "data": 2}),
        json!({"key": "a", "op": "patch", "data": {"done": true}}),
        json!({"key": "b", "op": "delete"}),
        json!({"key": "c", "op": "upsert", "data": [1, 2, 3]}),
    ];
    for (index, write) in writes.iter().enumerate() {
        let reply = relay
            .post_json("/v1/streams/board:1%2Ftodos/events", write)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        assert_eq!(
            reply.json(),
            json!({"stream": "board:1/todos", "seq": index + 1})
        );
    }
    // The unencoded slash addresses the same stream.
    let snapshot = relay.get("/v1/streams/board:1/todos/snapshot").await;
    assert_eq!(snapshot.status, StatusCode::OK, "{}", snapshot.text());
    assert_eq!(snapshot.header("content-type"), Some("application/json"));
    let snapshot = snapshot.json();
    let epoch = snapshot["epoch"].as_u64().expect("epoch");
    assert!(epoch > 0 && epoch < (1 << 53));
    assert_eq!(snapshot["stream"], "board:1/todos");
    assert_eq!(snapshot["seq"], 5);
    assert_eq!(
        snapshot["records"],
        json!([
            {"key": "a", "seq": 3, "data": {"title": "milk", "done": true}},
            {"key": "c", "seq": 5, "data": [1, 2, 3]},
        ])
    );

    // Pages of the configured size (3), then an explicit limit.
    let first = relay
        .get("/v1/streams/board:1%2Ftodos/events?since=0")
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let first = first.json();
    assert_eq!(events_of(&first), [1, 2, 3]);
    assert_eq!(
        (
            first["next"].as_u64(),
            first["more"].as_bool(),
            first["head"].as_u64()
        ),
        (Some(3), Some(true), Some(5))
    );
    assert_eq!(first["epoch"], epoch);
    assert_eq!(
        first["events"][2],
        json!({
            "stream": "board:1/todos", "epoch": epoch, "seq": 3, "key": "a", "op": "patch",
            "data": {"done": true}, "ts": first["events"][2]["ts"].clone(),
        })
    );
    assert!(first["events"][2]["ts"]
        .as_i64()
        .is_some_and(|ts| ts > 1_600_000_000_000_000));
    let second = relay
        .get(&format!(
            "/v1/streams/board:1%2Ftodos/events?since=3&epoch={epoch}"
        ))
        .await
        .json();
    assert_eq!(events_of(&second), [4, 5]);
    assert_eq!(
        (second["next"].as_u64(), second["more"].as_bool()),
        (Some(5), Some(false))
    );
    assert_eq!(second["events"][0]["data"], Value::Null);
    let limited = relay
        .get("/v1/streams/board:1%2Ftodos/events?since=1&limit=1")
        .await
        .json();
    assert_eq!(events_of(&limited), [2]);
    assert_eq!(limited["more"], true);
    let at_head = relay
        .get("/v1/streams/board:1%2Ftodos/events?since=5")
        .await
        .json();
    assert_eq!(events_of(&at_head), Vec::<u64>::new());
    assert_eq!(
        (at_head["next"].as_u64(), at_head["more"].as_bool()),
        (Some(5), Some(false))
    );
    // A huge limit is capped at ten pages rather than refused.
    let capped = relay
        .get("/v1/streams/board:1%2Ftodos/events?since=0&limit=100000")
        .await;
    assert_eq!(events_of(&capped.json()), [1, 2, 3, 4, 5]);

    // Ephemeral messages are accepted with seq 0 and stored nowhere.
    let message = relay
        .post_json(
            "/v1/streams/board:1%2Ftodos/events",
            &json!({"key": "cursor", "op": "message", "data": {"x": 1}}),
        )
        .await;
    assert_eq!(message.status, StatusCode::CREATED, "{}", message.text());
    assert_eq!(message.json()["seq"], 0);
    let info = relay.get("/v1/streams/board:1%2Ftodos").await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text());
    let info = info.json();
    assert_eq!(
        (info["seq"].as_u64(), info["kind"].as_str()),
        (Some(5), Some("permanent"))
    );

    // The publishes were timed.
    let metrics = relay.get("/metrics").await.text();
    let count = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tidewire_publish_duration_seconds_count "))
        .and_then(|value| value.parse::<f64>().ok());
    assert!(count.is_some_and(|count| count >= 6.0), "{metrics}");
    relay.stop().await;
}

/// A `since` older than the retained history answers resync.
#[tokio::test]
async fn since_before_retention_resyncs() {
    let relay = Relay::start(|_| {}).await;
    for index in 0..6 {
        let reply = relay
            .post_json(
                "/v1/streams/log/events",
                &json!({"key": format!("k{index}"), "op": "upsert", "data": index}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }
    let client = relay.pg.client().await;
    client
        .execute("select tidewire.set_retention('log', 2, null)", &[])
        .await
        .expect("set retention");
    client
        .execute("select tidewire.trim('log')", &[])
        .await
        .expect("trim");
    let old = relay.get("/v1/streams/log/events?since=1").await;
    old.assert_error(409, "bad_since", "since before retention");
    assert!(old.json()["message"]
        .as_str()
        .is_some_and(|message| message.contains("retained")));
    let kept = relay.get("/v1/streams/log/events?since=4").await.json();
    assert_eq!(events_of(&kept), [5, 6]);
    let metrics = relay.get("/metrics").await.text();
    assert!(
        metrics.contains("tidewire_resyncs_total{origin=\"client\"} 1\n"),
        "{metrics}"
    );
    relay.stop().await;
}
