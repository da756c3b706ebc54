//! Views over SSE (with `Last-Event-ID` resume) and HTTP (snapshot and event pages with
//! `where`, the grant's filter applied to both).

use serde_json::{json, Value};
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::publish;
use crate::transport::client::{get_json, SseClient};

fn encode(filter: &Value) -> String {
    filter
        .to_string()
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_views_resume_from_last_event_id() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let relay = TestRelay::spawn(&pg).await;
    publish(&sql, "tasks", "a", "upsert", json!({"owner": "u1"})).await;
    publish(&sql, "tasks", "b", "upsert", json!({"owner": "u2"})).await;
    let mine = encode(&json!({"owner": "u1"}));
    let path = format!("/v1/sse?stream=tasks&stream=notes&where.tasks={mine}");
    let (_, mut sse) = SseClient::open(relay.addr(), &path, &[]).await;
    let snapshot = sse.until("snapshot").await.json();
    assert_eq!(
        snapshot["records"].as_array().map(Vec::len),
        Some(1),
        "{snapshot}"
    );
    sse.until("subscribed").await;
    publish(&sql, "tasks", "b", "patch", json!({"owner": "u1"})).await; // 3: move-in
    publish(&sql, "tasks", "c", "upsert", json!({"owner": "u2"})).await; // 4: not mine
    let moved_in = sse.until("event").await;
    let event = moved_in.json();
    assert_eq!(
        (
            event["op"].as_str(),
            event["seq"].as_u64(),
            event["prev"].as_u64()
        ),
        (Some("upsert"), Some(3), Some(2))
    );
    assert_eq!(event["data"], json!({"owner": "u1"}));
    let id = moved_in.id.expect("events carry a cursor id");
    drop(sse);

    // Away: a move-out and an unrelated write; the resume gets exactly the move-out.
    publish(&sql, "tasks", "a", "patch", json!({"owner": "u3"})).await; // 5: move-out
    publish(&sql, "tasks", "d", "upsert", json!({"owner": "u3"})).await; // 6: not mine
    publish(&sql, "notes", "n", "upsert", json!({"text": "hi"})).await; // notes is unfiltered
    let (_, mut sse) = SseClient::open(relay.addr(), &path, &[("last-event-id", &id)]).await;
    let resumed = loop {
        let block = sse.until("event").await.json();
        if block["stream"] == "tasks" {
            break block;
        }
        assert_eq!(block["stream"], "notes");
        assert!(
            block.get("prev").is_none(),
            "unfiltered streams have no prev: {block}"
        );
    };
    assert_eq!(
        (
            resumed["op"].as_str(),
            resumed["key"].as_str(),
            resumed["seq"].as_u64(),
            resumed["prev"].as_u64()
        ),
        (Some("delete"), Some("a"), Some(5), Some(3))
    );

    // Filters are checked before streaming.
    let (status, body) = get_json(
        relay.addr(),
        "/v1/sse?stream=tasks&where=%7B%22a%22%3Anull%7D",
        &[],
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("bad_filter")),
        "{body}"
    );
    let (status, body) =
        get_json(relay.addr(), "/v1/sse?stream=tasks&where.other=%7B%7D", &[]).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("bad_filter")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_snapshots_and_pages_apply_the_view() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let relay = TestRelay::spawn(&pg).await;
    publish(&sql, "tasks", "a", "upsert", json!({"owner": "u1", "n": 1})).await;
    publish(&sql, "tasks", "b", "upsert", json!({"owner": "u2", "n": 2})).await;
    publish(&sql, "tasks", "b", "patch", json!({"owner": "u1"})).await;
    publish(&sql, "tasks", "a", "delete", Value::Null).await;
    publish(&sql, "tasks", "c", "upsert", json!({"owner": "u2"})).await;
    let mine = encode(&json!({"owner": "u1"}));

    let (status, snapshot) = get_json(
        relay.addr(),
        &format!("/v1/streams/tasks/snapshot?where={mine}"),
        &[],
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{snapshot}");
    assert_eq!(snapshot["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(snapshot["records"][0]["key"], "b");

    let (status, page) = get_json(
        relay.addr(),
        &format!("/v1/streams/tasks/events?since=0&where={mine}"),
        &[],
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{page}");
    let got: Vec<(String, u64, u64)> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| {
            (
                event["op"].as_str().unwrap_or_default().to_owned(),
                event["seq"].as_u64().unwrap_or(0),
                event["prev"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("upsert".to_owned(), 1, 0),
            ("upsert".to_owned(), 3, 1),
            ("delete".to_owned(), 4, 3)
        ]
    );
    assert_eq!(page["next"], 5, "next moves past events the view skipped");

    let (status, body) = get_json(relay.addr(), "/v1/streams/tasks/snapshot?where=%7B", &[]).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("bad_filter"))
    );
}
