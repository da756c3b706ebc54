//! SSE end to end: `retry:` first, snapshot then live events whose `id:` is the cursor of all
//! the connection's streams, exact resume from `Last-Event-ID` and from `?since=`, comment
//! heartbeats, refusals before streaming, and the shutdown advisory.

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio_postgres::Client;

use super::client::{get, get_json, SseClient, SseEvent};
use crate::support::publish;

async fn put(client: &Client, stream: &str, key: &str) -> i64 {
    publish(client, stream, key, "upsert", r#"{"v":1}"#)
        .await
        .expect("publish")
}

/// Reads events until every stream in `streams` sent `subscribed`; returns the events per
/// stream (as `(seq, id)`), the `subscribed` messages, and whether a snapshot came.
async fn until_subscribed(
    sse: &mut SseClient,
    streams: &[&str],
) -> (BTreeMap<String, Vec<(u64, String)>>, Vec<Value>, bool) {
    let (mut events, mut subscribed, mut snapshot) = (BTreeMap::new(), Vec::new(), false);
    while subscribed.len() < streams.len() {
        let event = sse.event().await;
        let json = event.json();
        match event.event.as_str() {
            "advisory" => assert_eq!(json["kind"], "connect", "{json}"),
            "snapshot" => snapshot = true,
            "event" => {
                let stream = json["stream"].as_str().expect("stream").to_owned();
                let id = event.id.clone().expect("events carry an id");
                events
                    .entry(stream)
                    .or_insert_with(Vec::new)
                    .push((json["seq"].as_u64().expect("seq"), id));
            }
            "subscribed" => subscribed.push(json),
            other => panic!("unexpected {other}: {event:?}"),
        }
    }
    (events, subscribed, snapshot)
}

fn epoch(subscribed: &Value) -> u64 {
    subscribed["epoch"].as_u64().expect("epoch")
}

#[tokio::test]
async fn retry_first_then_snapshot_and_live_events_with_cursor_ids() {
    let pg = TestPg::start().await;
    let db = pg.client().await;
    put(&db, "todos", "a").await;
    put(&db, "todos", "b").await;
    let relay = TestRelay::spawn(&pg).await;
    let (headers, mut sse) = SseClient::open(relay.addr(), "/v1/sse?stream=todos", &[]).await;
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");

    let first = sse.block().await.expect("a first block");
    assert_eq!(first.retry, Some(1000));
    assert!(
        sse.raw.starts_with(b"retry: 1000\n\n"),
        "{:?}",
        String::from_utf8_lossy(&sse.raw)
    );
    assert_eq!(sse.expect("advisory").await.json()["kind"], "connect");
    let snapshot = sse.expect("snapshot").await;
    assert_eq!(
        (
            snapshot.id.as_ref(),
            snapshot.json()["records"].as_array().map(Vec::len)
        ),
        (None, Some(2))
    );
    let subscribed = sse.expect("subscribed").await;
    let epoch = epoch(&subscribed.json());
    assert_eq!(subscribed.id, Some(format!("1;todos,{epoch},2")));

    put(&db, "todos", "c").await;
    let event = sse.expect("event").await;
    assert_eq!(event.json()["seq"], 3);
    let id = format!("1;todos,{epoch},3");
    assert_eq!(event.id.as_deref(), Some(id.as_str()));
    let exact = format!("event: event\nid: {id}\ndata: {}\n\n", event.data);
    let raw = String::from_utf8_lossy(&sse.raw);
    assert!(raw.contains(&exact), "byte-exact event framing: {raw}");
}

/// Disconnect, miss events on two streams, reconnect with `Last-Event-ID` (and, from the same
/// cursor, with `?since=`): exactly the missed events arrive, once each, with no snapshot.
#[tokio::test]
async fn resume_with_last_event_id_or_since_gets_exactly_the_missed_events() {
    let pg = TestPg::start().await;
    let db = pg.client().await;
    put(&db, "a", "a1").await;
    put(&db, "b", "b1").await;
    let relay = TestRelay::spawn(&pg).await;
    let path = "/v1/sse?stream=a&stream=b";

    let (_, mut sse) = SseClient::open(relay.addr(), path, &[]).await;
    let (_, subscribed, snapshot) = until_subscribed(&mut sse, &["a", "b"]).await;
    assert!(snapshot, "a fresh connection gets snapshots");
    let (epoch_a, epoch_b) = (epoch(&subscribed[0]), epoch(&subscribed[1]));
    put(&db, "a", "a2").await;
    let live = sse.expect("event").await;
    let cursor = format!("1;a,{epoch_a},2;b,{epoch_b},1");
    assert_eq!(
        live.id.as_deref(),
        Some(cursor.as_str()),
        "the id covers every stream"
    );
    drop(sse);

    for (stream, key) in [("a", "a3"), ("b", "b2"), ("a", "a4")] {
        put(&db, stream, key).await;
    }
    // An unknown stream in the cursor is ignored.
    let last_event_id = format!("{cursor};zzz,5,5");
    let (_, mut sse) =
        SseClient::open(relay.addr(), path, &[("last-event-id", &last_event_id)]).await;
    let (events, subscribed, snapshot) = until_subscribed(&mut sse, &["a", "b"]).await;
    assert!(!snapshot, "a resume sends no snapshot");
    assert!(
        subscribed.iter().all(|message| message["resumed"] == true),
        "{subscribed:?}"
    );
    let expected_a = vec![
        (3, format!("1;a,{epoch_a},3;b,{epoch_b},1")),
        (4, format!("1;a,{epoch_a},4;b,{epoch_b},1")),
    ];
    assert_eq!(events.get("a"), Some(&expected_a));
    assert_eq!(
        events
            .get("b")
            .map(|b| b.iter().map(|(seq, _)| *seq).collect::<Vec<_>>()),
        Some(vec![2])
    );
    put(&db, "a", "a5").await;
    let live = sse.expect("event").await;
    assert_eq!(live.id, Some(format!("1;a,{epoch_a},5;b,{epoch_b},2")));
    drop(sse);

    // The same old cursor as `since` (percent-encoded as URLSearchParams would).
    let encoded = cursor.replace(';', "%3B").replace(',', "%2C");
    let (_, mut sse) = SseClient::open(relay.addr(), &format!("{path}&since={encoded}"), &[]).await;
    let (events, _, snapshot) = until_subscribed(&mut sse, &["a", "b"]).await;
    assert!(!snapshot);
    let seqs: BTreeMap<_, Vec<u64>> = events
        .into_iter()
        .map(|(stream, list)| (stream, list.into_iter().map(|(seq, _)| seq).collect()))
        .collect();
    assert_eq!(
        seqs,
        BTreeMap::from([("a".to_owned(), vec![3, 4, 5]), ("b".to_owned(), vec![2])])
    );
    let quiet = sse.block_within(Duration::from_millis(300)).await;
    assert!(
        quiet.is_none()
            || quiet
                .as_ref()
                .is_some_and(|block| block.as_ref().is_some_and(|b| b.event == "presence")),
        "nothing more: {quiet:?}"
    );
}

#[tokio::test]
async fn heartbeat_comments_arrive_when_idle() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| options.sse_heartbeat_ms = 100).await;
    let (_, mut sse) = SseClient::open(relay.addr(), "/v1/sse?stream=todos", &[]).await;
    sse.until("subscribed").await;
    let heartbeat = loop {
        let block = sse.block().await.expect("the stream stays open");
        if !block.comments.is_empty() {
            break block;
        }
    };
    assert_eq!(
        heartbeat,
        SseEvent {
            comments: vec!["hb".into()],
            ..SseEvent::default()
        }
    );
    assert!(sse.raw.windows(8).any(|window| window == b"\n\n: hb\n\n"));
}

/// Request headers: `(name, value)` pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
async fn bad_requests_are_refused_before_streaming() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let cases: &[(&str, Headers<'_>, u16, &str)] = &[
        ("/v1/sse", &[], 400, "bad_stream"),
        ("/v1/sse?stream=bad%20name", &[], 400, "bad_stream"),
        ("/v1/sse?stream=ok&stream=-bad", &[], 400, "bad_stream"),
        ("/v1/sse?stream=a&since=garbage", &[], 400, "bad_since"),
        (
            "/v1/sse?stream=a",
            &[("last-event-id", "1;a,x,1")],
            400,
            "bad_since",
        ),
    ];
    for (path, headers, status, code) in cases {
        let (got_status, body) = get_json(relay.addr(), path, headers).await;
        assert_eq!(
            (got_status.as_u16(), body["code"].as_str()),
            (*status, Some(*code)),
            "{path}: {body}"
        );
        assert_eq!(body["type"], "error");
    }
}

#[tokio::test]
async fn a_connection_that_sent_nothing_yet_does_not_hold_up_shutdown() {
    let pg = TestPg::start().await;
    // Long enough that waiting for either would show.
    let relay = TestRelay::spawn_with(&pg, |options| {
        options.header_timeout_ms = 60_000;
        options.shutdown_grace_ms = 60_000;
    })
    .await;
    // A browser's speculative preconnection: open, silent.
    let _silent = tokio::net::TcpStream::connect(relay.addr())
        .await
        .expect("connect");
    // Let the relay accept it and start waiting for its first request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    relay.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "shutdown waited {:?} for a connection with no request",
        started.elapsed()
    );
}

#[tokio::test]
async fn shutdown_sends_an_advisory_and_ends_the_stream() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let (_, mut sse) = SseClient::open(relay.addr(), "/v1/sse?stream=todos", &[]).await;
    sse.until("subscribed").await;
    let shutdown = tokio::spawn(relay.shutdown());
    let advisory = sse.expect("advisory").await;
    assert_eq!(advisory.json()["kind"], "shutdown");
    assert_eq!(sse.block().await, None, "the body ends after the advisory");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("the relay drains in time")
        .expect("shutdown task");
}

/// The relay's `tidewire_connections{transport="sse"}`.
async fn sse_connections(relay: &TestRelay) -> u64 {
    let (_, _, body) = get(relay.addr(), "/metrics", &[]).await;
    let text = body.collect().await.expect("metrics").to_bytes();
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find_map(|line| line.strip_prefix("tidewire_connections{transport=\"sse\"} "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the sse connection gauge")
}

#[tokio::test]
async fn both_ways_to_an_event_stream_stream_and_a_hang_up_frees_it() {
    let pg = TestPg::start().await;
    let db = pg.client().await;
    let relay = TestRelay::spawn(&pg).await;
    // The first request on its connection is served without hyper: the close ends the body.
    let path = "/v1/sse?stream=todos";
    let (headers, mut direct) = SseClient::open(relay.addr(), path, &[]).await;
    assert_eq!(headers["connection"], "close");
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(headers.get("transfer-encoding").is_none(), "{headers:?}");
    // After another request on a kept-alive connection, hyper serves it, chunked.
    let (headers, mut kept) =
        SseClient::open_after(relay.addr(), Some("/healthz"), path, &[]).await;
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert_eq!(headers["content-type"], "text/event-stream");
    for sse in [&mut direct, &mut kept] {
        sse.until("subscribed").await;
    }
    // A small event, copied into the burst, and a large one, written from the buffer every
    // subscriber shares (a part of its own in the burst).
    let large = format!(r#"{{"text":"{}"}}"#, "x".repeat(4096));
    let small_seq = put(&db, "todos", "a").await;
    let large_seq = publish(&db, "todos", "big", "upsert", &large)
        .await
        .expect("publish");
    for sse in [&mut direct, &mut kept] {
        let small = sse.until("event").await;
        assert_eq!(small.json()["seq"].as_i64(), Some(small_seq));
        let large = sse.until("event").await.json();
        assert_eq!(large["seq"].as_i64(), Some(large_seq));
        assert_eq!(large["data"]["text"].as_str().map(str::len), Some(4096));
    }
    assert_eq!(sse_connections(&relay).await, 2);
    // A client that hangs up is noticed at once, not at the next heartbeat (15 s).
    drop(direct);
    tokio::time::timeout(Duration::from_secs(5), async {
        while sse_connections(&relay).await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the relay let the stream go");
    let seq = put(&db, "todos", "b").await;
    assert_eq!(kept.until("event").await.json()["seq"].as_i64(), Some(seq));
}

#[tokio::test]
async fn a_request_that_arrives_in_pieces_still_streams() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let mut socket = tokio::net::TcpStream::connect(relay.addr())
        .await
        .expect("connect");
    let request = b"GET /v1/sse?stream=todos HTTP/1.1\r\nhost: x\r\n\r\n";
    for piece in request.chunks(7) {
        socket.write_all(piece).await.expect("a piece");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("event: subscribed") {
        let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buffer))
            .await
            .expect("the stream in time")
            .expect("read");
        assert_ne!(
            read,
            0,
            "ended early: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("\r\n\r\nretry: "),
        "the retry line first: {text}"
    );
    // An event-stream client sends nothing more: anything it does send ends the stream.
    socket.write_all(b"x").await.expect("a stray byte");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    ended
        .await
        .expect("the relay ended the stream, not at the 15 s heartbeat");
}
