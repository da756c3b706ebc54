//! Slow consumers: a WebSocket and an SSE client with a tiny receive buffer subscribe, then
//! never read. Once the relay's writes stay blocked for `--slow-consumer-ms`, it drops them
//! (their connection permits come back) while a healthy client receives everything.

use std::net::SocketAddr;
use std::time::Duration;

use fastwebsockets::Frame;
use serde_json::json;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use super::client::{ws_handshake, WsClient};

const MAX_CONNECTIONS: usize = 10;
const EVENTS: i64 = 600;

/// A socket whose receive window is tiny, so the relay's writes block early.
async fn tiny_window(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_readers_are_dropped_and_others_are_served() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| {
        options.slow_consumer_ms = 300;
        options.max_connections = MAX_CONNECTIONS;
    })
    .await;
    let mut healthy = WsClient::connected(relay.addr()).await;
    healthy.subscribe("flood").await;

    // WebSocket: handshake, subscribe, then never read again.
    let mut stuck_ws = ws_handshake(relay.addr(), tiny_window(relay.addr()).await).await;
    let subscribe = json!({"type": "subscribe", "stream": "flood"}).to_string();
    stuck_ws
        .write_frame(Frame::text(subscribe.into_bytes().into()))
        .await
        .expect("subscribe");

    // SSE: send the request, never read the response.
    let mut stuck_sse = tiny_window(relay.addr()).await;
    let get = format!(
        "GET /v1/sse?stream=flood HTTP/1.1\r\nhost: {}\r\n\r\n",
        relay.addr()
    );
    stuck_sse.write_all(get.as_bytes()).await.expect("request");

    let permits = &relay.hub().connections;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while permits.available_permits() > MAX_CONNECTIONS - 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "three connections open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let both subscriptions go live before the flood.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let db = pg.client().await;
    let flood = "select count(tidewire.publish('flood', 'k' || i, 'upsert', \
                 jsonb_build_object('pad', repeat('x', 10000)))) from generate_series(1, $1::bigint) i";
    db.query_one(flood, &[&EVENTS]).await.expect("flood");

    for seq in 1..=EVENTS {
        let event = healthy.expect("event").await;
        assert_eq!(event["seq"].as_i64(), Some(seq));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while permits.available_permits() < MAX_CONNECTIONS - 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck readers still connected: {} permits free",
            permits.available_permits()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    healthy.send(json!({"type": "ping", "id": "ok"})).await;
    assert_eq!(healthy.expect("pong").await["id"], "ok");
    drop((stuck_ws, stuck_sse));
}
