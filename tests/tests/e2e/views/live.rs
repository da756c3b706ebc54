//! Live views over WebSocket: each kind of event judged exactly, views independent of each
//! other, a move storm, and a bad filter refused with a typed error.

use serde_json::{json, Value};
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::{publish, ViewReader};
use crate::transport::client::WsClient;

/// The `(op, key, data)` of the next event.
async fn next_event(ws: &mut WsClient, reader: &mut ViewReader) -> (String, String, Value) {
    let event = ws.expect("event").await;
    reader.apply(&event);
    (
        event["op"].as_str().unwrap_or_default().to_owned(),
        event["key"].as_str().unwrap_or_default().to_owned(),
        event["data"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_judged_on_the_record_before_and_after() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let relay = TestRelay::spawn(&pg).await;
    publish(
        &sql,
        "tasks",
        "a",
        "upsert",
        json!({"owner": "u1", "title": "A", "prio": 1}),
    )
    .await;
    publish(
        &sql,
        "tasks",
        "b",
        "upsert",
        json!({"owner": "u2", "title": "B"}),
    )
    .await;

    let mut ws = WsClient::connected(relay.addr()).await;
    let mut mine = ViewReader::new("tasks", json!({"owner": "u1"}));
    mine.subscribe(&mut ws).await;
    assert_eq!(
        mine.records.keys().collect::<Vec<_>>(),
        ["a"],
        "the snapshot holds the view"
    );
    // A second connection with another view of the same stream.
    let mut other_ws = WsClient::connected(relay.addr()).await;
    let mut urgent = ViewReader::new("tasks", json!({"prio": {"gt": 1}}));
    urgent.subscribe(&mut other_ws).await;
    assert!(urgent.records.is_empty());

    // Move-in by a patch: the whole record arrives as an upsert.
    publish(&sql, "tasks", "b", "patch", json!({"owner": "u1"})).await;
    assert_eq!(
        next_event(&mut ws, &mut mine).await,
        (
            "upsert".into(),
            "b".into(),
            json!({"owner": "u1", "title": "B"})
        )
    );
    // Move-out: a delete.
    publish(
        &sql,
        "tasks",
        "a",
        "patch",
        json!({"owner": "u2", "prio": 5}),
    )
    .await;
    assert_eq!(
        next_event(&mut ws, &mut mine).await,
        ("delete".into(), "a".into(), Value::Null)
    );
    // The other view saw `a` move in, independently.
    let moved = other_ws.expect("event").await;
    urgent.apply(&moved);
    assert_eq!(
        (moved["op"].as_str(), moved["key"].as_str()),
        (Some("upsert"), Some("a"))
    );
    // Inside the view before and after: the patch as it is.
    publish(&sql, "tasks", "b", "patch", json!({"title": "B2"})).await;
    assert_eq!(
        next_event(&mut ws, &mut mine).await,
        ("patch".into(), "b".into(), json!({"title": "B2"}))
    );
    // Outside before and after: nothing; then a delete inside the view.
    publish(&sql, "tasks", "c", "upsert", json!({"owner": "u3"})).await;
    publish(&sql, "tasks", "c", "delete", Value::Null).await;
    publish(&sql, "tasks", "b", "delete", Value::Null).await;
    let last = ws.expect("event").await;
    mine.apply(&last);
    assert_eq!(
        (
            last["op"].as_str(),
            last["key"].as_str(),
            last["seq"].as_u64()
        ),
        (Some("delete"), Some("b"), Some(8))
    );
    assert_eq!(
        last["prev"].as_u64(),
        Some(5),
        "seqs 6 and 7 did not concern the view"
    );
    assert!(mine.records.is_empty());
    assert_eq!(mine.seqs, [3, 4, 5, 8]);
    assert!(mine.until_equal(&mut ws, &sql).await);
    assert!(urgent.until_equal(&mut other_ws, &sql).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_storm_of_a_tracked_table_reaches_every_view() {
    const ROWS: i64 = 2_000;
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    sql.batch_execute(
        "create table tasks (id bigint primary key, owner text not null, title text);
         select tidewire.track_table('public.tasks', 'tasks', 'id');",
    )
    .await
    .expect("track tasks");
    sql.execute(
        "insert into tasks select i, 'u1', 'task ' || i from generate_series(1, $1::bigint) as i",
        &[&ROWS],
    )
    .await
    .expect("seed");
    let relay = TestRelay::spawn(&pg).await;
    let mut ws1 = WsClient::connected(relay.addr()).await;
    let mut ws2 = WsClient::connected(relay.addr()).await;
    let mut u1 = ViewReader::new("tasks", json!({"owner": "u1"}));
    let mut u2 = ViewReader::new("tasks", json!({"owner": "u2"}));
    u1.subscribe(&mut ws1).await;
    u2.subscribe(&mut ws2).await;
    assert_eq!((u1.records.len(), u2.records.len()), (2_000, 0));

    // Every row changes owner in one transaction, then half of them come back.
    sql.execute("update tasks set owner = 'u2'", &[])
        .await
        .expect("storm");
    sql.execute("update tasks set owner = 'u1' where id % 2 = 0", &[])
        .await
        .expect("half back");
    assert!(u1.until_equal(&mut ws1, &sql).await, "u1 converges");
    assert!(u2.until_equal(&mut ws2, &sql).await, "u2 converges");
    assert_eq!((u1.records.len(), u2.records.len()), (1_000, 1_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_filter_is_refused_with_bad_filter_and_the_connection_goes_on() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let mut ws = WsClient::connected(relay.addr()).await;
    for (filter, place) in [
        (json!({"prio": {"gte": 1}}), "where.prio.gte"),
        (json!({"tags": ["a"]}), "where.tags"),
        (json!("owner=u1"), "where"),
    ] {
        ws.send(json!({"type": "subscribe", "stream": "tasks", "where": filter}))
            .await;
        let error = ws.expect("error").await;
        assert_eq!(
            (error["code"].as_str(), error["stream"].as_str()),
            (Some("bad_filter"), Some("tasks")),
            "{error}"
        );
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains(place),
            "{error}"
        );
    }
    ws.send(json!({"type": "subscribe", "stream": "raw:orders", "where": {}}))
        .await;
    assert_eq!(ws.expect("error").await["code"], "bad_filter");
    let subscribed = ws.subscribe("tasks").await;
    assert_eq!(subscribed["stream"], "tasks");
}
