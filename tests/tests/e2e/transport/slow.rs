//! Slow consumers: a WebSocket and an SSE client with a tiny receive buffer subscribe, then
//! never read. Once the relay's writes stay blocked for `--slow-consumer-ms`, it resets them
//! (their connection permits come back, each client's socket reports a reset, the metric
//! counts both) while a healthy client receives everything.

use std::net::SocketAddr;
use std::time::Duration;

use fastwebsockets::Frame;
use serde_json::json;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::client::{ws_handshake, WsClient};

const MAX_CONNECTIONS: usize = 10;
const EVENTS: i64 = 600;

/// A socket whose receive window is tiny, so the relay's writes block early.
pub(crate) async fn tiny_window(addr: SocketAddr) -> TcpStream {
    window(addr, 4096).await
}

/// A socket whose receive buffer is `bytes`.
pub(crate) async fn window(addr: SocketAddr, bytes: u32) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
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

    // Both were reset, not closed: reading now ends in a reset (a normal close would hand
    // over the queued bytes and then EOF, or for SSE nothing, hyper holding the socket).
    assert_reset("websocket", stuck_ws.into_inner()).await;
    assert_reset("sse", stuck_sse).await;
    let drops = relay.hub().metrics.snapshot().slow_consumer_drops;
    assert_eq!(drops.map(|(_, count)| count), [1, 1], "{drops:?}");
}

/// Reads `stream` to its end and expects a TCP reset within a few seconds.
pub(crate) async fn assert_reset(what: &str, mut stream: impl tokio::io::AsyncRead + Unpin) {
    let mut buf = vec![0u8; 64 * 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), read_all).await {
        Ok(Err(error)) => assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset,
            "{what}: {error}"
        ),
        Ok(Ok(())) => panic!("{what}: closed normally (EOF), not reset"),
        Err(_) => panic!("{what}: still open 5 s after being dropped"),
    }
}
