//! WebSocket round trips: `connect` first, subscribe (snapshot, then `subscribed`), publish
//! (`ack` to the writer, `event` to every subscriber), unsubscribe, application and protocol
//! pings, graceful shutdown, refusals before the upgrade.

use std::time::Duration;

use fastwebsockets::{Frame, OpCode};
use serde_json::json;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::client::{get_json, WsClient, WsItem};

/// Two connections: a publish is acked to its writer and fans out to both subscribers;
/// after `unsubscribe` the stream no longer arrives.
#[tokio::test]
async fn subscribe_publish_ack_fan_out_and_unsubscribe() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let mut writer = WsClient::connected(relay.addr()).await;
    let mut reader = WsClient::connected(relay.addr()).await;

    let subscribed = writer.subscribe("todos").await;
    assert_eq!(
        (subscribed["seq"].as_u64(), subscribed["resumed"].as_bool()),
        (Some(0), Some(false))
    );
    reader.subscribe("todos").await;

    let publish = json!({"type": "publish", "id": "op-1", "stream": "todos", "key": "t1", "op": "upsert", "data": {"title": "milk"}});
    writer.send(publish).await;
    let (mut ack, mut echoed) = (None, None);
    while ack.is_none() || echoed.is_none() {
        let message = writer.json().await;
        match message["type"].as_str() {
            Some("ack") => ack = Some(message),
            Some("event") => echoed = Some(message),
            _ => panic!("unexpected {message}"),
        }
    }
    let ack = ack.expect("ack");
    assert_eq!(
        (
            ack["id"].as_str(),
            ack["stream"].as_str(),
            ack["seq"].as_u64()
        ),
        (Some("op-1"), Some("todos"), Some(1))
    );
    let event = reader.expect("event").await;
    assert_eq!(event, echoed.expect("event on the writer"));
    assert_eq!(
        (event["seq"].as_u64(), event["key"].as_str()),
        (Some(1), Some("t1"))
    );
    assert_eq!(event["data"], json!({"title": "milk"}));

    reader
        .send(json!({"type": "unsubscribe", "stream": "todos"}))
        .await;
    assert_eq!(reader.expect("unsubscribed").await["stream"], "todos");
    writer
        .send(json!({"type": "publish", "id": "op-2", "stream": "todos", "key": "t2", "op": "upsert", "data": 2}))
        .await;
    assert_eq!(writer.expect("ack").await["seq"], 2);
    assert_eq!(writer.expect("event").await["seq"], 2);
    // The reader gets nothing for the stream: the answer to its ping comes first.
    reader.send(json!({"type": "ping", "id": "after"})).await;
    assert_eq!(reader.expect("pong").await["id"], "after");
    assert!(
        reader
            .item_within(Duration::from_millis(300))
            .await
            .is_none(),
        "no event after unsubscribe"
    );
}

/// Application `ping` is answered by `pong` with the same id; a protocol ping by a pong frame.
#[tokio::test]
async fn application_and_protocol_pings_are_answered() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let mut client = WsClient::connected(relay.addr()).await;
    client.send(json!({"type": "ping", "id": "p-1"})).await;
    assert_eq!(
        client.expect("pong").await,
        json!({"type": "pong", "id": "p-1"})
    );
    client
        .send_frame(Frame::new(
            true,
            OpCode::Ping,
            None,
            b"hello".to_vec().into(),
        ))
        .await;
    assert_eq!(client.item().await, WsItem::Pong);
}

/// Binary frames and bad JSON are answered with `error` and the connection stays usable.
#[tokio::test]
async fn binary_frames_and_bad_json_get_errors_not_closes() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let mut client = WsClient::connected(relay.addr()).await;
    client.send_frame(Frame::binary(vec![1, 2, 3].into())).await;
    let error = client.expect("error").await;
    assert_eq!(error["code"], "bad_message", "{error}");
    for garbage in [
        "not json",
        "{}",
        r#"{"type":"launch"}"#,
        r#"{"type":"subscribe","stream":"bad name"}"#,
    ] {
        client
            .send_frame(Frame::text(garbage.as_bytes().to_vec().into()))
            .await;
        let error = client.expect("error").await;
        assert!(error["code"].is_string(), "{garbage}: {error}");
    }
    client
        .send(json!({"type": "ping", "id": "still-here"}))
        .await;
    assert_eq!(client.expect("pong").await["id"], "still-here");
}

/// Shutdown: every client gets the `shutdown` advisory, then close 1001.
#[tokio::test]
async fn graceful_shutdown_sends_advisory_then_going_away() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let mut first = WsClient::connected(relay.addr()).await;
    first.subscribe("todos").await;
    let mut second = WsClient::connected(relay.addr()).await;
    let shutdown = tokio::spawn(relay.shutdown());
    for client in [&mut first, &mut second] {
        let advisory = client.expect("advisory").await;
        assert_eq!(advisory["kind"], "shutdown", "{advisory}");
        let (code, reason) = client.closed().await;
        assert_eq!((code, reason.as_str()), (1001, "shutdown"));
    }
    drop((first, second));
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("the relay drains in time")
        .expect("shutdown task");
}

/// Refusals happen before any upgrade: 426 for a plain GET, 503 `overloaded` at the
/// connection limit; the permit comes back when the connection closes.
#[tokio::test]
async fn refusals_before_upgrade_and_the_connection_limit() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| options.max_connections = 1).await;
    let (status, body) = get_json(relay.addr(), "/v1/ws", &[]).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (426, Some("bad_message"))
    );

    let mut only = WsClient::connected(relay.addr()).await;
    let upgrade = [
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    let (status, body) = get_json(relay.addr(), "/v1/ws", &upgrade).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (503, Some("overloaded")),
        "{body}"
    );
    let (status, body) = get_json(relay.addr(), "/v1/sse?stream=todos", &[]).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (503, Some("overloaded")),
        "{body}"
    );

    only.send_frame(Frame::close(1000, b"bye")).await;
    assert_eq!(only.closed().await.0, 1000);
    drop(only);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while relay.hub().connections.available_permits() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the permit was not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = WsClient::connected(relay.addr()).await;
    again.send(json!({"type": "ping"})).await;
    again.expect("pong").await;
}
