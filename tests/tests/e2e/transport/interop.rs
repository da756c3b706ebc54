//! The relay's WebSocket side driven by tokio-tungstenite, a client stack the relay does not
//! use, for a full subscribe / publish / close round trip.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::client::WsClient;
use crate::support::WAIT;

type Tungstenite = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next JSON message (skipping `presence`); panics on anything else.
async fn next_json(socket: &mut Tungstenite) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
            .expect("the stream is open")
            .expect("a valid frame");
        match message {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if value["type"] != "presence" {
                    return value;
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn send(socket: &mut Tungstenite, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("send");
}

#[tokio::test]
async fn tungstenite_client_subscribes_publishes_and_closes() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let (mut socket, response) = tokio_tungstenite::connect_async(relay.ws_url())
        .await
        .expect("connect");
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(next_json(&mut socket).await["kind"], "connect");

    send(&mut socket, json!({"type": "subscribe", "stream": "chat"})).await;
    assert_eq!(next_json(&mut socket).await["type"], "snapshot");
    let subscribed = next_json(&mut socket).await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["seq"].as_u64()),
        (Some("subscribed"), Some(0))
    );

    // A second client (fastwebsockets) sees what the tungstenite client publishes.
    let mut other = WsClient::connected(relay.addr()).await;
    other.subscribe("chat").await;
    let publish = json!({"type": "publish", "id": "t-1", "stream": "chat", "key": "m1", "op": "upsert", "data": {"text": "hi"}});
    send(&mut socket, publish).await;
    let ack = next_json(&mut socket).await;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_u64()),
        (Some("ack"), Some(1)),
        "{ack}"
    );
    let own = next_json(&mut socket).await;
    assert_eq!(
        (own["type"].as_str(), own["key"].as_str()),
        (Some("event"), Some("m1"))
    );
    let seen = other.expect("event").await;
    assert_eq!(seen, own);

    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    };
    socket.close(Some(close)).await.expect("send close");
    let echo = loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected the close echo, got {other:?}"),
        }
    };
    assert_eq!(echo.map(|frame| frame.code), Some(CloseCode::Normal));
}
