//! The fan-out benchmark's baseline program (`fanout_baseline`), in both of its designs (a
//! task per socket, and `--writer-loop`): every subscriber gets `subscribed` and then every
//! event after its position, in order, none twice. The benchmark's ratios are only as good as
//! this: a baseline that skipped or repeated frames would set a limit no server can honestly
//! reach. (No PostgreSQL: the program makes its own events.)

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// Subscribers per run; each reads this many events after its `subscribed`.
const CLIENTS: usize = 5;
const EVENTS: u64 = 2_000;

/// Starts the program on a free port; returns it with its address.
async fn start(flags: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout_baseline"))
        .args(["--listen", "127.0.0.1:0", "--rate", "0", "--wait-for", "1"])
        .args(flags)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("fanout_baseline starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("fanout_baseline says where it listens")
            .expect("stdout reads")
            .expect("fanout_baseline prints its address");
        if let Some(address) = line.strip_prefix("fanout_baseline listening on ") {
            break address.to_owned();
        }
    };
    // Keep reading its reports, so that a full pipe never blocks it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
}

/// One subscriber: subscribes, then checks that the events after its `subscribed` position
/// come one by one, each exactly once.
async fn subscriber(address: String, client: usize) {
    let url = format!("ws://{address}/v1/ws");
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the WebSocket handshake succeeds");
    socket
        .send(Message::text(r#"{"type":"subscribe","stream":"load-0"}"#))
        .await
        .expect("subscribe is sent");
    let mut expected = None;
    let mut received = 0;
    while received < EVENTS {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .unwrap_or_else(|_| {
                panic!("client {client}: silent after {received} events (next seq {expected:?})")
            })
            .expect("the socket stays open")
            .expect("frames decode");
        let Message::Text(text) = message else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).expect("every frame is JSON");
        let seq = message["seq"].as_u64().expect("every message has a seq");
        match (message["type"].as_str(), expected) {
            (Some("subscribed"), None) => expected = Some(seq + 1),
            (Some("event"), Some(next)) => {
                assert_eq!(seq, next, "client {client}: event out of order or missed");
                expected = Some(next + 1);
                received += 1;
            }
            (kind, _) => panic!("client {client}: unexpected {kind:?} (expected seq {expected:?})"),
        }
    }
}

async fn every_subscriber_gets_every_event(flags: &[&str]) {
    let (mut child, address) = start(flags).await;
    // Subscribers join one after the other while events flow: each starts where it joined.
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        clients.push(tokio::spawn(subscriber(address.clone(), client)));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for client in clients {
        client.await.expect("the subscriber's checks pass");
    }
    child.kill().await.expect("fanout_baseline stops");
}

#[tokio::test]
async fn a_task_per_socket_delivers_every_event_in_order() {
    every_subscriber_gets_every_event(&[]).await;
}

#[tokio::test]
async fn the_writer_loop_delivers_every_event_in_order() {
    every_subscriber_gets_every_event(&["--writer-loop"]).await;
}
