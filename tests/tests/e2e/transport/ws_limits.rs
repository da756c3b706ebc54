//! WebSocket limits and bad frames, each with its close code, while a healthy client keeps
//! being served: oversize messages (1009), invalid UTF-8 (1007), broken framing (1002), and
//! the keepalive (4009 for a peer that stops answering pings).

use std::time::{Duration, Instant};

use fastwebsockets::{Frame, OpCode, Role, WebSocket};
use serde_json::json;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio::io::AsyncWriteExt;

use super::client::{ws_raw, WsClient, WsItem};

/// Publishes on `writer` and checks that `reader` (subscribed to `todos`) gets the event.
async fn still_served(writer: &mut WsClient, reader: &mut WsClient, id: &str) {
    let publish = json!({"type": "publish", "id": id, "stream": "todos", "key": id, "op": "upsert", "data": {}});
    writer.send(publish).await;
    assert_eq!(writer.expect("ack").await["id"], id);
    let event = reader.expect("event").await;
    assert_eq!(event["key"], id, "{event}");
}

/// A 2 MiB message (over the default 1 MiB) is closed with 1009 while a healthy pair of
/// clients keeps publishing and receiving.
#[tokio::test]
async fn oversize_message_closes_1009_and_others_keep_working() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let mut writer = WsClient::connected(relay.addr()).await;
    let mut reader = WsClient::connected(relay.addr()).await;
    reader.subscribe("todos").await;
    still_served(&mut writer, &mut reader, "before").await;

    let mut big = WsClient::connected(relay.addr()).await;
    let payload = padded(r#"{"type":"ping","id":"big"}"#, 2 << 20);
    let started = Instant::now();
    let (sent, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(10), big_send(&mut big, payload)),
        still_served(&mut writer, &mut reader, "during"),
    );
    sent.expect("the relay keeps reading (and discarding) until the write ends");
    let (code, reason) = big.closed().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed promptly"
    );
    still_served(&mut writer, &mut reader, "after").await;
}

async fn big_send(client: &mut WsClient, payload: Vec<u8>) {
    // The relay closes after reading the header; finishing the write may fail: fine.
    let _ = client.try_send_frame(Frame::text(payload.into())).await;
}

/// `json` followed by spaces up to `len` bytes.
fn padded(json: &str, len: usize) -> Vec<u8> {
    let mut bytes = json.as_bytes().to_vec();
    bytes.resize(len, b' ');
    bytes
}

/// Fragments that add up past the limit are refused like one big frame (1009).
#[tokio::test]
async fn fragmented_oversize_message_closes_1009() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| options.max_message_bytes = 4096).await;
    let mut client = WsClient::connected(relay.addr()).await;
    // A message of exactly the limit is fine, fragmented or not (JSON padded with spaces).
    let exact = padded(r#"{"type":"ping","id":"exact"}"#, 4096);
    client.send_frame(Frame::text(exact.clone().into())).await;
    client.expect("pong").await;
    let (head, tail) = exact.split_at(100);
    client
        .send_frame(Frame::new(false, OpCode::Text, None, head.to_vec().into()))
        .await;
    client
        .send_frame(Frame::new(
            true,
            OpCode::Continuation,
            None,
            tail.to_vec().into(),
        ))
        .await;
    client.expect("pong").await;
    // Three fragments of 2000 bytes: the third passes the limit.
    client
        .send_frame(Frame::new(
            false,
            OpCode::Text,
            None,
            vec![b' '; 2000].into(),
        ))
        .await;
    client
        .send_frame(Frame::new(
            false,
            OpCode::Continuation,
            None,
            vec![b' '; 2000].into(),
        ))
        .await;
    client
        .send_frame(Frame::new(
            true,
            OpCode::Continuation,
            None,
            vec![b' '; 2000].into(),
        ))
        .await;
    assert_eq!(client.closed().await.0, 1009);
}

/// Invalid UTF-8 in a text frame closes with 1007; reserved bits, an unmasked client frame
/// or a continuation without a start close with 1002.
#[tokio::test]
async fn invalid_utf8_and_broken_framing_close_with_their_codes() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let mut reader = WsClient::connected(relay.addr()).await;
    reader.subscribe("todos").await;
    let mut writer = WsClient::connected(relay.addr()).await;

    let mut client = WsClient::connected(relay.addr()).await;
    client
        .send_frame(Frame::text(vec![b'{', 0xff, 0xfe, b'}'].into()))
        .await;
    assert_eq!(client.closed().await.0, 1007);

    let mut client = WsClient::connected(relay.addr()).await;
    client
        .send_frame(Frame::new(
            true,
            OpCode::Continuation,
            None,
            b"orphan".to_vec().into(),
        ))
        .await;
    assert_eq!(client.closed().await.0, 1002);

    // Raw bytes: FIN + RSV1 + text, masked, 2 bytes of payload.
    let garbage: &[&[u8]] = &[
        &[0xC1, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2],
        &[0x8F, 0x80, 0, 0, 0, 0],
    ];
    for bytes in garbage {
        let ws = ws_raw(relay.addr()).await;
        let mut io = ws.into_inner();
        io.write_all(bytes).await.expect("write garbage");
        let mut client = WsClient::from_raw(WebSocket::after_handshake(io, Role::Client));
        let (code, _) = loop {
            match client.item().await {
                WsItem::Close(code, reason) => break (code, reason),
                WsItem::Json(message) if message["type"] == "advisory" => continue,
                other => panic!("expected a close for {bytes:?}, got {other:?}"),
            }
        };
        assert_eq!(code, 1002, "{bytes:?}");
    }
    still_served(&mut writer, &mut reader, "healthy").await;
}

const KEEPALIVE_MS: u64 = 250;

/// With a 250 ms keepalive: a client that reads but never answers pings is closed with 4009
/// two intervals after it was last heard; a client that answers stays connected.
#[tokio::test]
async fn keepalive_closes_a_silent_peer_within_two_intervals() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| options.keepalive_ms = KEEPALIVE_MS).await;
    let keepalive = Duration::from_millis(KEEPALIVE_MS);
    let mut alive = WsClient::connected(relay.addr()).await;

    let mut raw = ws_raw(relay.addr()).await;
    raw.set_auto_pong(false);
    let connected_at = Instant::now();
    let mut silent = WsClient::from_raw(raw);
    let silent_part = async {
        let mut pings = 0;
        loop {
            match silent.item().await {
                WsItem::Ping => pings += 1,
                WsItem::Json(_) => {}
                WsItem::Close(code, reason) => break (code, reason, pings, connected_at.elapsed()),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    // The answering client reads (so that it answers pings) through five intervals.
    let alive_part = alive.item_within(5 * keepalive);
    let ((code, reason, pings, elapsed), alive_read) = tokio::join!(silent_part, alive_part);
    assert_eq!(code, 4009, "{reason}");
    assert!(pings >= 1, "the relay pinged first");
    let two_intervals = 2 * keepalive;
    assert!(
        elapsed + Duration::from_millis(50) >= two_intervals,
        "not before two intervals: {elapsed:?}"
    );
    assert!(
        elapsed < two_intervals + Duration::from_millis(650),
        "within two intervals (plus scheduling slack): {elapsed:?}"
    );
    assert_eq!(
        alive_read, None,
        "the answering client got nothing but pings"
    );
    alive.send(json!({"type": "ping", "id": "alive"})).await;
    assert_eq!(alive.expect("pong").await["id"], "alive");
}
