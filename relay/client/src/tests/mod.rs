//! Tests of the whole client (socket, driver, state, handles) against a scripted fake relay
//! ([`fake_relay`]), so drops, reconnects, refusals and silence can be staged exactly.

mod fake_relay;

use std::time::Duration;

use futures_util::StreamExt;
use hyper::StatusCode;
use serde_json::json;
use tidewire_shared::fixtures::{event_message, snapshot_message, subscribed_message};
use tidewire_shared::message::{decode_client, Advisory, AdvisoryKind};
use tidewire_shared::{
    ClientMessage, DecodeLimits, Event, Op, Position, ServerMessage, StreamName,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use self::fake_relay::{FakeConn, FakeRelay, WAIT};
use super::{
    BackoffConfig, Client, ClientConfig, ClientError, CollectionEvent, ConnectionStatus,
    SubscribeOptions, Subscription, SubscriptionEvent,
};

fn name(stream: &str) -> StreamName {
    StreamName::new(stream).expect("valid stream name")
}

fn fast_config(url: String) -> ClientConfig {
    ClientConfig {
        reconnect: BackoffConfig {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: None,
        },
        request_timeout: WAIT,
        ..ClientConfig::new(url)
    }
}

/// The next subscription event that is not an advisory.
async fn next_event(subscription: &mut Subscription) -> SubscriptionEvent {
    loop {
        let event = tokio::time::timeout(WAIT, subscription.next())
            .await
            .expect("an event in time")
            .expect("the subscription is open");
        if !matches!(event, SubscriptionEvent::Advisory(_)) {
            return event;
        }
    }
}

/// Expects a subscribe for `stream`; returns its `since`.
async fn expect_subscribe(connection: &mut FakeConn, stream: &str) -> Option<Position> {
    match connection.recv().await {
        ClientMessage::Subscribe(subscribe) if subscribe.stream.as_str() == stream => {
            subscribe.since
        }
        other => panic!("expected a subscribe to {stream}, got {other:?}"),
    }
}

/// Connects, subscribes to `todos`, and serves a snapshot at (7, 2).
async fn live_subscription(relay: &mut FakeRelay) -> (Client, Subscription, FakeConn) {
    let client = Client::connect(fast_config(relay.url()))
        .await
        .expect("connects");
    let mut connection = relay.next_connection().await;
    let mut subscription = client
        .subscribe("todos", SubscribeOptions::default())
        .await
        .expect("subscribes");
    assert_eq!(expect_subscribe(&mut connection, "todos").await, None);
    connection.send(&snapshot_message("todos", 7, 2)).await;
    connection
        .send(&subscribed_message("todos", 7, 2, false))
        .await;
    assert!(
        matches!(next_event(&mut subscription).await, SubscriptionEvent::Snapshot(snapshot) if snapshot.records.len() == 2)
    );
    assert_eq!(
        next_event(&mut subscription).await,
        SubscriptionEvent::Live {
            epoch: 7,
            seq: 2,
            resumed: false
        }
    );
    (client, subscription, connection)
}

#[tokio::test]
async fn subscribe_and_publish_round_trip() {
    let mut relay = FakeRelay::start().await;
    let (client, mut subscription, mut connection) = live_subscription(&mut relay).await;
    assert_eq!(client.status(), ConnectionStatus::Connected);

    let publisher = client.clone();
    let publish =
        tokio::spawn(async move { publisher.upsert("todos", "k3", json!({ "seq": 3 })).await });
    let ClientMessage::Publish(request) = connection.recv().await else {
        panic!("expected a publish");
    };
    assert_eq!((request.key.as_str(), request.op), ("k3", Op::Upsert));
    connection
        .send(&ServerMessage::Ack {
            id: request.id.clone(),
            stream: name("todos"),
            seq: 3,
            replayed: false,
        })
        .await;
    connection.send(&event_message("todos", 7, 3)).await;
    assert_eq!(publish.await.expect("joins"), Ok(3));
    assert!(
        matches!(next_event(&mut subscription).await, SubscriptionEvent::Event(event) if event.seq == 3)
    );
    assert_eq!(subscription.position(), Some(Position { epoch: 7, seq: 3 }));

    // A refused publish carries the relay's code.
    let publisher = client.clone();
    let refused = tokio::spawn(async move { publisher.delete("todos", "k1").await });
    let ClientMessage::Publish(request) = connection.recv().await else {
        panic!("expected a publish");
    };
    connection
        .send(&ServerMessage::error(
            Some(request.id),
            tidewire_shared::ErrorCode::Forbidden,
            "no write access to todos",
        ))
        .await;
    let error = refused.await.expect("joins").expect_err("refused");
    assert_eq!(error.code(), Some(tidewire_shared::ErrorCode::Forbidden));

    // Invalid requests never leave the client.
    assert!(matches!(
        client.patch("todos", "k1", json!([1])).await,
        Err(ClientError::Invalid(_))
    ));
    assert!(matches!(
        client.upsert("bad name", "k", json!(1)).await,
        Err(ClientError::StreamName(_))
    ));
    let stats = client.stats();
    assert_eq!(
        (stats.publishes_sent, stats.acks, stats.publish_errors),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn reconnect_resumes_without_loss_or_duplicates() {
    let mut relay = FakeRelay::start().await;
    let (client, mut subscription, mut connection) = live_subscription(&mut relay).await;
    connection.send(&event_message("todos", 7, 3)).await;
    assert!(
        matches!(next_event(&mut subscription).await, SubscriptionEvent::Event(event) if event.seq == 3)
    );

    // A write is in flight when the connection is reset.
    let publisher = client.clone();
    let publish = tokio::spawn(async move { publisher.upsert("todos", "x", json!(1)).await });
    let ClientMessage::Publish(first) = connection.recv().await else {
        panic!("expected a publish");
    };
    assert!(
        first.write_id.is_some(),
        "a durable write carries a write id"
    );
    drop(connection);
    assert!(matches!(
        next_event(&mut subscription).await,
        SubscriptionEvent::Disconnected { .. }
    ));

    // The client comes back on its own and resumes from seq 3, then sends the write again
    // under its write id; the relay answers it (here: it had committed) and over-replays.
    let mut connection = relay.next_connection().await;
    assert_eq!(
        expect_subscribe(&mut connection, "todos").await,
        Some(Position { epoch: 7, seq: 3 })
    );
    let ClientMessage::Publish(again) = connection.recv().await else {
        panic!("expected the write again");
    };
    assert_eq!(again, first);
    connection
        .send(&ServerMessage::Ack {
            id: again.id,
            stream: name("todos"),
            seq: 4,
            replayed: true,
        })
        .await;
    assert_eq!(publish.await.expect("joins"), Ok(4));
    for seq in [2, 3, 4, 5] {
        connection.send(&event_message("todos", 7, seq)).await;
    }
    connection
        .send(&subscribed_message("todos", 7, 5, true))
        .await;
    connection.send(&event_message("todos", 7, 6)).await;
    let mut delivered = Vec::new();
    while delivered.last() != Some(&6) {
        match next_event(&mut subscription).await {
            SubscriptionEvent::Event(event) => delivered.push(event.seq),
            SubscriptionEvent::Live { resumed, seq, .. } => assert!(resumed && seq == 5),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delivered, vec![4, 5, 6]);
    let stats = client.stats();
    assert_eq!(stats.reconnects, 1);
    assert_eq!(stats.duplicates_dropped, 2);
    assert_eq!((stats.publishes_lost, stats.publishes_resent), (0, 1));
    assert_eq!(stats.events, 4);
}

#[tokio::test]
async fn a_relay_shutdown_close_is_followed_by_a_reconnect() {
    let mut relay = FakeRelay::start().await;
    let (client, mut subscription, mut connection) = live_subscription(&mut relay).await;
    connection
        .send(&ServerMessage::Advisory(Advisory::new(
            AdvisoryKind::Shutdown,
        )))
        .await;
    connection.close(1001, "shutdown").await;
    assert!(matches!(
        next_event(&mut subscription).await,
        SubscriptionEvent::Disconnected { .. }
    ));
    let mut connection = relay.next_connection().await;
    assert_eq!(
        expect_subscribe(&mut connection, "todos").await,
        Some(Position { epoch: 7, seq: 2 })
    );
    client.close().await;
    assert!(matches!(client.status(), ConnectionStatus::Closed { .. }));
    assert_eq!(
        client.upsert("todos", "k", json!(1)).await,
        Err(ClientError::Closed)
    );
}

#[tokio::test]
async fn unauthorized_close_stops_the_client() {
    let mut relay = FakeRelay::start().await;
    let (client, mut subscription, mut connection) = live_subscription(&mut relay).await;
    connection.close(4001, "unauthorized").await;
    loop {
        match tokio::time::timeout(WAIT, subscription.next()).await {
            Ok(None) => break,
            Ok(Some(_)) => continue,
            Err(_) => panic!("the subscription should end"),
        }
    }
    assert!(
        matches!(client.status(), ConnectionStatus::Closed { reason } if reason.contains("4001"))
    );
}

#[tokio::test]
async fn a_refused_upgrade_fails_connect() {
    let relay = FakeRelay::bind(
        "127.0.0.1:0".parse().expect("valid"),
        Some(StatusCode::UNAUTHORIZED),
    )
    .await;
    let result = Client::connect(fast_config(relay.url())).await;
    assert!(
        matches!(result, Err(ClientError::Refused { .. })),
        "{result:?}"
    );

    let nobody = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("bound")
    };
    let result = Client::connect(fast_config(format!("ws://{nobody}"))).await;
    assert!(
        matches!(result, Err(ClientError::Connect { .. })),
        "{result:?}"
    );
    assert!(matches!(
        Client::connect(ClientConfig::new("wss://example.invalid")).await,
        Err(ClientError::Config(_))
    ));
}

#[tokio::test]
async fn lazy_clients_queue_publishes_until_the_relay_appears() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("bound")
    };
    let client = Client::connect_lazy(fast_config(format!("ws://{addr}"))).expect("valid config");
    let publisher = client.clone();
    let publish = tokio::spawn(async move { publisher.upsert("todos", "k", json!(1)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        client.status(),
        ConnectionStatus::Reconnecting { .. }
    ));

    let mut relay = FakeRelay::bind(addr, None).await;
    let mut connection = relay.next_connection().await;
    let ClientMessage::Publish(request) = connection.recv().await else {
        panic!("expected the queued publish");
    };
    connection
        .send(&ServerMessage::Ack {
            id: request.id,
            stream: name("todos"),
            seq: 1,
            replayed: false,
        })
        .await;
    assert_eq!(publish.await.expect("joins"), Ok(1));
    assert!(client.stats().connect_failures >= 1);
}

#[tokio::test]
async fn a_silent_relay_is_detected_by_the_keepalive() {
    let mut relay = FakeRelay::start().await;
    let config = ClientConfig {
        keepalive: Duration::from_millis(150),
        ..fast_config(relay.url())
    };
    let client = Client::connect(config).await.expect("connects");
    let mut connection = relay.next_connection().await;
    // The client pings after one quiet interval; this relay never answers.
    let ping = tokio::time::timeout(WAIT, connection.websocket.read_frame())
        .await
        .expect("a ping in time")
        .expect("a frame");
    let ping = decode_client(&ping.payload, &DecodeLimits::default()).expect("valid");
    assert_eq!(ping, ClientMessage::Ping { id: None });
    let _second = relay.next_connection().await;
    tokio::time::timeout(WAIT, async {
        while client.stats().reconnects != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the client counts the reconnect");
    drop(connection);
}

#[tokio::test]
async fn a_live_collection_follows_snapshots_events_and_resyncs() {
    let mut relay = FakeRelay::start().await;
    let client = Client::connect(fast_config(relay.url()))
        .await
        .expect("connects");
    let mut connection = relay.next_connection().await;
    let todos = client.collection("todos").await.expect("subscribes");
    let mut changes = todos.changes();
    assert_eq!(expect_subscribe(&mut connection, "todos").await, None);
    connection.send(&snapshot_message("todos", 7, 2)).await;
    connection
        .send(&subscribed_message("todos", 7, 2, false))
        .await;
    connection.send(&event_message("todos", 7, 3)).await;
    connection
        .send(&ServerMessage::Event(Event {
            stream: name("todos"),
            epoch: 7,
            seq: 4,
            key: "k1".into(),
            op: Op::Delete,
            data: serde_json::Value::Null,
            prev: None,
            ts: None,
        }))
        .await;
    tokio::time::timeout(WAIT, todos.wait_for_seq(4))
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(todos.len(), 2);
    assert_eq!(todos.get("k3"), Some(json!({ "seq": 3 })));
    assert_eq!(todos.get("k1"), None);
    assert_eq!(todos.position(), Position { epoch: 7, seq: 4 });

    // A resync replaces everything with the new snapshot.
    connection
        .send(&ServerMessage::Advisory(
            Advisory::new(AdvisoryKind::Resync)
                .stream(name("todos"))
                .reason("epoch changed"),
        ))
        .await;
    connection.send(&snapshot_message("todos", 8, 1)).await;
    connection
        .send(&subscribed_message("todos", 8, 1, false))
        .await;
    tokio::time::timeout(WAIT, async {
        while todos.position().epoch != 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("resynced in time");
    assert_eq!(
        todos.entries(),
        vec![("k1".to_owned(), json!({ "seq": 1 }))]
    );
    assert_eq!(todos.snapshot().records.len(), 1);

    let mut seen = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(200), changes.next()).await
    {
        seen.push(event);
    }
    let changed_keys: Vec<&str> = seen
        .iter()
        .filter_map(|event| match event {
            CollectionEvent::Change(change) => Some(change.key.as_str()),
            _ => None,
        })
        .collect();
    // Snapshot (k1, k2), event k3, delete k1, then the resync: k1 back, k2 and k3 gone.
    assert_eq!(changed_keys, vec!["k1", "k2", "k3", "k1", "k1", "k2", "k3"]);
    assert!(seen.contains(&CollectionEvent::Live(Position { epoch: 8, seq: 1 })));

    // One subscription per stream: the collection holds it.
    assert!(matches!(
        client.subscribe("todos", SubscribeOptions::default()).await,
        Err(ClientError::AlreadySubscribed(_))
    ));
    drop(todos);
    assert_eq!(
        connection.recv().await,
        ClientMessage::Unsubscribe {
            stream: name("todos")
        }
    );
}

#[tokio::test]
async fn callbacks_receive_events_until_dropped() {
    let mut relay = FakeRelay::start().await;
    let client = Client::connect(fast_config(relay.url()))
        .await
        .expect("connects");
    let mut connection = relay.next_connection().await;
    let (sender, mut seen) = mpsc::unbounded_channel();
    let handle = client
        .subscribe_with(
            "todos",
            SubscribeOptions {
                since: None,
                snapshot: false,
                filter: None,
            },
            move |event| {
                let _ = sender.send(event);
            },
        )
        .await
        .expect("subscribes");
    expect_subscribe(&mut connection, "todos").await;
    connection
        .send(&subscribed_message("todos", 7, 10, false))
        .await;
    connection.send(&event_message("todos", 7, 11)).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let event = tokio::time::timeout(WAIT, seen.recv())
            .await
            .expect("in time")
            .expect("open");
        if !matches!(event, SubscriptionEvent::Advisory(_)) {
            got.push(event);
        }
    }
    assert!(matches!(got[1], SubscriptionEvent::Event(ref event) if event.seq == 11));
    assert_eq!(handle.position(), Some(Position { epoch: 7, seq: 11 }));
    drop(handle);
    assert!(matches!(
        connection.recv().await,
        ClientMessage::Unsubscribe { .. }
    ));
}
