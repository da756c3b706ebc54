//! The HTTP API end to end: a real relay on 127.0.0.1:0 over a real PostgreSQL, driven with a
//! plain hyper client. Publish, snapshot and replay pages; typed errors for bad input; stream
//! admin; the static site and its path-traversal defences; health, readiness and metrics.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tidewire_relay::config::Options;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio::net::TcpStream;

/// Request body limit configured for these relays (small, so oversize bodies are cheap).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A relay for one test (the shared harness) with small body limits, on a cluster of its own
/// that outlives it.
struct Relay {
    addr: SocketAddr,
    relay: TestRelay,
    /// Declared last: the cluster outlives the relay.
    pg: TestPg,
}

impl Relay {
    async fn start(tune: impl FnOnce(&mut Options)) -> Self {
        let pg = TestPg::start().await;
        let relay = TestRelay::builder(&pg)
            .options(|options| {
                options.max_message_bytes = MAX_MESSAGE_BYTES;
                options.max_data_bytes = 32 * 1024;
                options.replay_page = 3;
                options.shutdown_grace_ms = 1000;
                tune(options);
            })
            .spawn()
            .await;
        Self {
            addr: relay.addr(),
            relay,
            pg,
        }
    }

    /// Stops the relay and waits for it.
    async fn stop(self) {
        self.relay.shutdown().await;
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send_json(Method::POST, path, body.to_string()).await
    }

    async fn send_json(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        self.send(
            method,
            path,
            &[("content-type", "application/json")],
            body.into(),
        )
        .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body)).expect("valid request");
        exchange(self.addr, request).await
    }
}

/// What came back.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts an `error` reply with this status and code.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status.as_u16(), status, "{what}: {}", self.text());
        let body = self.json();
        assert_eq!(body["type"], "error", "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty()),
            "{what}"
        );
    }
}

/// One request on a fresh connection.
async fn exchange<B>(addr: SocketAddr, request: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the relay");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http handshake");
    tokio::spawn(async move {
        // Ends when the response is read or the relay closes; errors show in the response.
        let _ = connection.await;
    });
    let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .expect("the relay answers in time")
        .expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the whole body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn events_of(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|event| event["seq"].as_u64().expect("seq"))
        .collect()
}

/// Publish over POST, then read it back as a snapshot and as replay pages.
#[tokio::test]
async fn publish_then_snapshot_and_replay_pages() {
    let relay = Relay::start(|_| {}).await;
    let writes = [
        json!({"key": "a", "op": "upsert", "data": {"title": "milk", "done": false}}),
        json!({"key": "b", "op": "upsert", "data": 2}),
        json!({"key": "a", "op": "patch", "data": {"done": true}}),
        json!({"key": "b", "op": "delete"}),
        json!({"key": "c", "op": "upsert", "data": [1, 2, 3]}),
    ];
    for (index, write) in writes.iter().enumerate() {
        let reply = relay
            .post_json("/v1/streams/board:1%2Ftodos/events", write)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        assert_eq!(
            reply.json(),
            json!({"stream": "board:1/todos", "seq": index + 1})
        );
    }
    // The unencoded slash addresses the same stream.
    let snapshot = relay.get("/v1/streams/board:1/todos/snapshot").await;
    assert_eq!(snapshot.status, StatusCode::OK, "{}", snapshot.text());
    assert_eq!(snapshot.header("content-type"), Some("application/json"));
    let snapshot = snapshot.json();
    let epoch = snapshot["epoch"].as_u64().expect("epoch");
    assert!(epoch > 0 && epoch < (1 << 53));
    assert_eq!(snapshot["stream"], "board:1/todos");
    assert_eq!(snapshot["seq"], 5);
    assert_eq!(
        snapshot["records"],
        json!([
            {"key": "a", "seq": 3, "data": {"title": "milk", "done": true}},
            {"key": "c", "seq": 5, "data": [1, 2, 3]},
        ])
    );

    // Pages of the configured size (3), then an explicit limit.
    let first = relay
        .get("/v1/streams/board:1%2Ftodos/events?since=0")
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let first = first.json();
    assert_eq!(events_of(&first), [1, 2, 3]);
    assert_eq!(
        (
            first["next"].as_u64(),
            first["more"].as_bool(),
            first["head"].as_u64()
        ),
        (Some(3), Some(true), Some(5))
    );
    assert_eq!(first["epoch"], epoch);
    assert_eq!(
        first["events"][2],
        json!({
            "stream": "board:1/todos", "epoch": epoch, "seq": 3, "key": "a", "op": "patch",
            "data": {"done": true}, "ts": first["events"][2]["ts"].clone(),
        })
    );
    assert!(first["events"][2]["ts"]
        .as_i64()
        .is_some_and(|ts| ts > 1_600_000_000_000_000));
    let second = relay
        .get(&format!(
            "/v1/streams/board:1%2Ftodos/events?since=3&epoch={epoch}"
        ))
        .await
        .json();
    assert_eq!(events_of(&second), [4, 5]);
    assert_eq!(
        (second["next"].as_u64(), second["more"].as_bool()),
        (Some(5), Some(false))
    );
    assert_eq!(second["events"][0]["data"], Value::Null);
    let limited = relay
        .get("/v1/streams/board:1%2Ftodos/events?since=1&limit=1")
        .await
        .json();
    assert_eq!(events_of(&limited), [2]);
    assert_eq!(limited["more"], true);
    let at_head = relay
        .get("/v1/streams/board:1%2Ftodos/events?since=5")
        .await
        .json();
    assert_eq!(events_of(&at_head), Vec::<u64>::new());
    assert_eq!(
        (at_head["next"].as_u64(), at_head["more"].as_bool()),
        (Some(5), Some(false))
    );
    // A huge limit is capped at ten pages rather than refused.
    let capped = relay
        .get("/v1/streams/board:1%2Ftodos/events?since=0&limit=100000")
        .await;
    assert_eq!(events_of(&capped.json()), [1, 2, 3, 4, 5]);

    // Ephemeral messages are accepted with seq 0 and stored nowhere.
    let message = relay
        .post_json(
            "/v1/streams/board:1%2Ftodos/events",
            &json!({"key": "cursor", "op": "message", "data": {"x": 1}}),
        )
        .await;
    assert_eq!(message.status, StatusCode::CREATED, "{}", message.text());
    assert_eq!(message.json()["seq"], 0);
    let info = relay.get("/v1/streams/board:1%2Ftodos").await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text());
    let info = info.json();
    assert_eq!(
        (info["seq"].as_u64(), info["kind"].as_str()),
        (Some(5), Some("permanent"))
    );

    // The publishes were timed.
    let metrics = relay.get("/metrics").await.text();
    let count = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tidewire_publish_duration_seconds_count "))
        .and_then(|value| value.parse::<f64>().ok());
    assert!(count.is_some_and(|count| count >= 6.0), "{metrics}");
    relay.stop().await;
}

/// Every bad input gets its documented status and code, never a 500 or a hang.
#[tokio::test]
async fn bad_requests_get_typed_errors() {
    let relay = Relay::start(|_| {}).await;
    let created = relay
        .post_json(
            "/v1/streams/todos/events",
            &json!({"key": "a", "op": "upsert", "data": 1}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let epoch = relay.get("/v1/streams/todos/snapshot").await.json()["epoch"]
        .as_u64()
        .expect("epoch");

    let long_name = "a".repeat(70);
    let garbage: String = (0..4096)
        .map(|index| char::from(b"AZaz09-._~"[index % 10]))
        .collect();
    let gets: Vec<(String, u16, &str)> = vec![
        // Stream names.
        ("/v1/streams/%22;drop/snapshot".into(), 400, "bad_stream"),
        (
            "/v1/streams/%22;drop%20table/events?since=0".into(),
            400,
            "bad_stream",
        ),
        (
            format!("/v1/streams/{long_name}/snapshot"),
            400,
            "bad_stream",
        ),
        (format!("/v1/streams/{garbage}/snapshot"), 400, "bad_stream"),
        ("/v1/streams/-x/snapshot".into(), 400, "bad_stream"),
        ("/v1/streams/a%ZZ/snapshot".into(), 400, "bad_stream"),
        ("/v1/streams/t%C3%B6do/snapshot".into(), 400, "bad_stream"),
        ("/v1/streams//snapshot".into(), 404, "not_found"),
        ("/v1/streams/raw:orders/snapshot".into(), 400, "bad_stream"),
        (
            "/v1/streams/raw:orders/events?since=0".into(),
            400,
            "bad_stream",
        ),
        // since values.
        ("/v1/streams/todos/events".into(), 400, "bad_since"),
        (
            "/v1/streams/todos/events?since=abc".into(),
            400,
            "bad_since",
        ),
        ("/v1/streams/todos/events?since=-1".into(), 400, "bad_since"),
        (
            "/v1/streams/todos/events?since=1e30".into(),
            400,
            "bad_since",
        ),
        (
            "/v1/streams/todos/events?since=100000000000000000000000000000".into(),
            400,
            "bad_since",
        ),
        (
            format!("/v1/streams/todos/events?since={garbage}"),
            400,
            "bad_since",
        ),
        (
            "/v1/streams/todos/events?since=0&since=1".into(),
            400,
            "bad_since",
        ),
        (
            "/v1/streams/todos/events?since=0&epoch=x".into(),
            400,
            "bad_since",
        ),
        (
            "/v1/streams/todos/events?since=0&limit=0".into(),
            400,
            "bad_message",
        ),
        // Positions the outbox cannot continue: resync.
        ("/v1/streams/todos/events?since=2".into(), 409, "bad_since"),
        (
            "/v1/streams/todos/events?since=9007199254740991".into(),
            409,
            "bad_since",
        ),
        (
            format!("/v1/streams/todos/events?since=0&epoch={}", epoch + 1),
            409,
            "bad_since",
        ),
        // Routes.
        ("/v1/streams".into(), 404, "not_found"),
        ("/v1/streams/".into(), 404, "not_found"),
        ("/v1/streams/never-created".into(), 404, "not_found"),
    ];
    for (path, status, code) in &gets {
        let reply = relay.get(path).await;
        let shown: String = path.chars().take(80).collect();
        reply.assert_error(*status, code, &shown);
    }
    let resync = relay.get("/v1/streams/todos/events?since=2").await.json();
    assert_eq!(resync["resync"], true);
    assert_eq!(
        (resync["epoch"].as_u64(), resync["seq"].as_u64()),
        (Some(epoch), Some(1))
    );
    assert_eq!(resync["stream"], "todos");

    // Publish bodies.
    let posts: Vec<(&str, Bytes, u16, &str)> = vec![
        (
            "todos",
            Bytes::from_static(b"{not json"),
            400,
            "bad_message",
        ),
        ("todos", Bytes::from_static(b""), 400, "bad_message"),
        (
            "todos",
            Bytes::from_static(br#"["a","upsert",1]"#),
            400,
            "bad_message",
        ),
        (
            "todos",
            Bytes::from_static(br#"{"key":"a","op":"upsert","data":1,"extra":2}"#),
            400,
            "bad_message",
        ),
        (
            "todos",
            Bytes::from_static(br#"{"key":"a","op":"patch","data":[1,2]}"#),
            400,
            "bad_data",
        ),
        (
            "todos",
            Bytes::from_static(br#"{"key":"a","op":"upsert","data":"x\u0000y"}"#),
            400,
            "bad_data",
        ),
        (
            "todos",
            Bytes::from_static(br#"{"key":"","op":"upsert","data":1}"#),
            400,
            "bad_key",
        ),
        (
            "todos",
            Bytes::from_static(br#"{"key":"a","op":"replace","data":1}"#),
            400,
            "bad_op",
        ),
        (
            "todos",
            Bytes::from(format!(
                r#"{{"key":"a","op":"upsert","data":"{}"}}"#,
                "x".repeat(40_000)
            )),
            413,
            "too_large",
        ),
        (
            "todos",
            Bytes::from(vec![b' '; MAX_MESSAGE_BYTES + 1]),
            413,
            "too_large",
        ),
        (
            "todos",
            Bytes::from(format!(
                r#"{{"key":"a","op":"message","data":"{}"}}"#,
                "x".repeat(7_500)
            )),
            413,
            "too_large",
        ),
        (
            "raw:orders",
            Bytes::from_static(br#"{"key":"a","op":"upsert","data":1}"#),
            400,
            "bad_stream",
        ),
        (
            "%22;drop",
            Bytes::from_static(br#"{"key":"a","op":"upsert","data":1}"#),
            400,
            "bad_stream",
        ),
    ];
    for (stream, body, status, code) in posts {
        let what = format!(
            "POST {stream}: {}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        let reply = relay
            .send_json(Method::POST, &format!("/v1/streams/{stream}/events"), body)
            .await;
        reply.assert_error(status, code, &what);
    }
    let text = relay
        .send(
            Method::POST,
            "/v1/streams/todos/events",
            &[("content-type", "text/plain")],
            Bytes::from_static(br#"{"key":"a","op":"upsert"}"#),
        )
        .await;
    assert_eq!(
        text.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        text.text()
    );

    // An oversize body without Content-Length is cut off while it streams in.
    let chunks = (0..32)
        .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b' '; 4096]))));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/streams/todos/events")
        .header("host", relay.addr.to_string())
        .header("content-type", "application/json")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .expect("valid request");
    exchange(relay.addr, request)
        .await
        .assert_error(413, "too_large", "chunked oversize body");

    // Methods.
    let patch = relay
        .send(Method::PATCH, "/v1/streams/todos/events", &[], Bytes::new())
        .await;
    assert_eq!(patch.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(patch.header("allow"), Some("GET, HEAD, POST, OPTIONS"));
    let post_snapshot = relay
        .send_json(Method::POST, "/v1/streams/todos/snapshot", "{}")
        .await;
    assert_eq!(post_snapshot.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post_snapshot.header("allow"), Some("GET, HEAD, OPTIONS"));
    let options = relay
        .send(Method::OPTIONS, "/v1/streams/todos", &[], Bytes::new())
        .await;
    assert_eq!(options.status, StatusCode::NO_CONTENT);
    assert_eq!(
        options.header("allow"),
        Some("GET, HEAD, PUT, DELETE, OPTIONS")
    );

    // Nothing above reached the outbox.
    let page = relay.get("/v1/streams/todos/events?since=0").await.json();
    assert_eq!(events_of(&page), [1]);
    relay.stop().await;
}

/// PUT creates and updates streams, DELETE drops them; a client of the old epoch resyncs.
#[tokio::test]
async fn stream_admin_create_update_drop() {
    let relay = Relay::start(|_| {}).await;
    let created = relay
        .send_json(
            Method::PUT,
            "/v1/streams/chat:room-1",
            r#"{"kind":"temp","ttl_seconds":60}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let created = created.json();
    assert_eq!(
        (
            created["created"].as_bool(),
            created["kind"].as_str(),
            created["ttl_seconds"].as_u64()
        ),
        (Some(true), Some("temp"), Some(60))
    );
    let epoch = created["epoch"].as_u64().expect("epoch");

    let info = relay.get("/v1/streams/chat:room-1").await.json();
    assert_eq!(
        (
            info["kind"].as_str(),
            info["ttl_seconds"].as_u64(),
            info["epoch"].as_u64()
        ),
        (Some("temp"), Some(60), Some(epoch))
    );
    assert!(info["expires_at"].as_i64().is_some());

    let updated = relay
        .send_json(
            Method::PUT,
            "/v1/streams/chat:room-1",
            r#"{"kind":"temp","ttl_seconds":120}"#,
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    assert_eq!(
        (
            updated.json()["created"].as_bool(),
            updated.json()["epoch"].as_u64()
        ),
        (Some(false), Some(epoch))
    );
    // An empty body makes it permanent.
    let permanent = relay
        .send(Method::PUT, "/v1/streams/chat:room-1", &[], Bytes::new())
        .await;
    assert_eq!(permanent.status, StatusCode::OK, "{}", permanent.text());
    assert_eq!(
        relay.get("/v1/streams/chat:room-1").await.json()["kind"],
        "permanent"
    );

    for (body, code) in [
        (r#"{"kind":"temp"}"#, "bad_data"),
        (r#"{"kind":"temp","ttl_seconds":0}"#, "bad_data"),
        (r#"{"kind":"permanent","ttl_seconds":5}"#, "bad_data"),
        (r#"{"kind":"forever"}"#, "bad_data"),
        (r#"{"kind":"temp","ttl_seconds":-5}"#, "bad_message"),
        (r#"{"kind":"temp","ttl_seconds":1e3}"#, "bad_message"),
        (r#"{"type":"temp"}"#, "bad_message"),
        ("[]", "bad_message"),
    ] {
        relay
            .send_json(Method::PUT, "/v1/streams/chat:room-2", body)
            .await
            .assert_error(400, code, body);
    }
    relay
        .send_json(
            Method::PUT,
            "/v1/streams/raw:orders",
            r#"{"kind":"permanent"}"#,
        )
        .await
        .assert_error(400, "bad_stream", "PUT raw");
    relay
        .send(Method::DELETE, "/v1/streams/raw:orders", &[], Bytes::new())
        .await
        .assert_error(400, "bad_stream", "DELETE raw");

    let publish = relay
        .post_json(
            "/v1/streams/chat:room-1/events",
            &json!({"key": "m1", "op": "upsert", "data": "hi"}),
        )
        .await;
    assert_eq!(publish.json()["seq"], 1);
    let dropped = relay
        .send(Method::DELETE, "/v1/streams/chat:room-1", &[], Bytes::new())
        .await;
    assert_eq!(dropped.status, StatusCode::NO_CONTENT, "{}", dropped.text());
    assert!(dropped.body.is_empty());
    relay
        .get("/v1/streams/chat:room-1")
        .await
        .assert_error(404, "not_found", "info after drop");
    relay
        .send(Method::DELETE, "/v1/streams/chat:room-1", &[], Bytes::new())
        .await
        .assert_error(404, "not_found", "second drop");

    // Reading recreates the stream with a new epoch; a client of the old one must resync.
    let fresh = relay.get("/v1/streams/chat:room-1/snapshot").await.json();
    assert_ne!(fresh["epoch"].as_u64(), Some(epoch));
    assert_eq!(fresh["records"], json!([]));
    let stale = relay
        .get(&format!(
            "/v1/streams/chat:room-1/events?since=1&epoch={epoch}"
        ))
        .await;
    stale.assert_error(409, "bad_since", "old epoch");
    assert_eq!(stale.json()["resync"], true);
    relay.stop().await;
}

/// A `since` older than the retained history answers resync.
#[tokio::test]
async fn since_before_retention_resyncs() {
    let relay = Relay::start(|_| {}).await;
    for index in 0..6 {
        let reply = relay
            .post_json(
                "/v1/streams/log/events",
                &json!({"key": format!("k{index}"), "op": "upsert", "data": index}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }
    let client = relay.pg.client().await;
    client
        .execute("select tidewire.set_retention('log', 2, null)", &[])
        .await
        .expect("set retention");
    client
        .execute("select tidewire.trim('log')", &[])
        .await
        .expect("trim");
    let old = relay.get("/v1/streams/log/events?since=1").await;
    old.assert_error(409, "bad_since", "since before retention");
    assert!(old.json()["message"]
        .as_str()
        .is_some_and(|message| message.contains("retained")));
    let kept = relay.get("/v1/streams/log/events?since=4").await.json();
    assert_eq!(events_of(&kept), [5, 6]);
    let metrics = relay.get("/metrics").await.text();
    assert!(
        metrics.contains("tidewire_resyncs_total{origin=\"client\"} 1\n"),
        "{metrics}"
    );
    relay.stop().await;
}

/// With a JWT key configured, anonymous access is limited to the listed patterns.
#[tokio::test]
async fn permissions_are_enforced() {
    let relay = Relay::start(|options| {
        options.jwt_secret = Some("an-hs256-secret-of-enough-length-for-tests".into());
        options.anon_read = vec!["public:*".into()];
        options.anon_write = vec![];
    })
    .await;
    let read = relay.get("/v1/streams/public:news/snapshot").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    relay
        .get("/v1/streams/private/snapshot")
        .await
        .assert_error(403, "forbidden", "read without grant");
    relay
        .post_json(
            "/v1/streams/public:news/events",
            &json!({"key": "a", "op": "upsert", "data": 1}),
        )
        .await
        .assert_error(403, "forbidden", "write without grant");
    relay
        .send(Method::DELETE, "/v1/streams/public:news", &[], Bytes::new())
        .await
        .assert_error(403, "forbidden", "drop without grant");
    let bad_token = relay
        .send(
            Method::GET,
            "/v1/streams/public:news/snapshot",
            &[("authorization", "Bearer not-a-jwt")],
            Bytes::new(),
        )
        .await;
    bad_token.assert_error(401, "unauthorized", "garbage token");
    assert!(bad_token.header("www-authenticate").is_some());
    let metrics = relay.get("/metrics").await.text();
    assert!(
        metrics.contains("tidewire_auth_failures_total 1\n"),
        "{metrics}"
    );
    relay.stop().await;
}

fn write(path: &Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create the directory");
    }
    std::fs::write(path, contents).expect("write a file");
}

/// The static site: content types, index files, caching headers, and no way out of the root.
#[tokio::test]
async fn static_files_are_served_safely() {
    let outside = tempfile::tempdir().expect("temp dir");
    let root = outside.path().join("site");
    write(&outside.path().join("secret.txt"), "secret");
    let files = [
        ("index.html", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("mod.mjs", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("pkg/tidewire_bg.wasm", "application/wasm"),
        ("data.json", "application/json"),
        ("icon.svg", "image/svg+xml"),
        ("logo.png", "image/png"),
        ("favicon.ico", "image/x-icon"),
        ("app.js.map", "application/json"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("docs/index.html", "text/html; charset=utf-8"),
    ];
    for (name, _) in files {
        write(&root.join(name), &format!("contents of {name}"));
    }
    write(&root.join(".env"), "hidden");
    write(&root.join("empty/placeholder"), "");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("escape.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(outside.path(), root.join("up")).expect("symlink");
    std::os::unix::fs::symlink(root.join("notes.txt"), root.join("alias.txt")).expect("symlink");

    let static_dir = root.clone();
    let relay = Relay::start(move |options| options.static_dir = Some(static_dir)).await;
    for (name, content_type) in files {
        let reply = relay.get(&format!("/{name}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{name}");
        assert_eq!(reply.text(), format!("contents of {name}"));
        let html = content_type.starts_with("text/html");
        assert_eq!(
            reply.header("cache-control") == Some("no-cache"),
            html,
            "{name}"
        );
    }
    let index = relay.get("/").await;
    assert_eq!(
        (index.status, index.text()),
        (StatusCode::OK, "contents of index.html".into())
    );
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let with_query = relay.get("/app.js?v=3").await;
    assert_eq!(with_query.text(), "contents of app.js");
    let docs = relay.get("/docs").await;
    assert_eq!(docs.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(docs.header("location"), Some("/docs/"));
    assert_eq!(
        relay.get("/docs/").await.text(),
        "contents of docs/index.html"
    );
    assert_eq!(
        relay.get("/alias.txt").await.text(),
        "contents of notes.txt"
    );

    // HEAD: headers without a body.
    let head = relay.send(Method::HEAD, "/app.js", &[], Bytes::new()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("18"));
    assert!(head.body.is_empty());

    // Revalidation.
    let etag = relay
        .get("/style.css")
        .await
        .header("etag")
        .map(str::to_owned)
        .expect("etag");
    let again = relay
        .send(
            Method::GET,
            "/style.css",
            &[("if-none-match", &etag)],
            Bytes::new(),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());

    for path in [
        "/../Cargo.toml",
        "/../secret.txt",
        "/%2e%2e/",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/docs/../../secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/docs%2F..%2F..%2Fsecret.txt",
        "/..%5Csecret.txt",
        "/escape.txt",
        "/up/secret.txt",
        "/.env",
        "/empty/",
        "/missing.html",
        "/%00",
        "/%ff",
        "//secret.txt",
    ] {
        let reply = relay.get(path).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.text()
        );
        assert!(!reply.text().contains("secret"), "{path}");
    }
    relay.stop().await;
}

/// Health, readiness and metrics; without a static dir, unknown paths are JSON 404s.
#[tokio::test]
async fn health_readiness_and_metrics() {
    let relay = Relay::start(|_| {}).await;
    let health = relay.get("/healthz").await;
    assert_eq!(
        (health.status, health.text()),
        (StatusCode::OK, "ok\n".into())
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = relay.get("/readyz").await;
        if ready.status == StatusCode::OK {
            assert_eq!(ready.text(), "ready\n");
            break;
        }
        assert_eq!(
            ready.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            ready.text()
        );
        assert!(Instant::now() < deadline, "never ready: {}", ready.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    relay
        .get("/index.html")
        .await
        .assert_error(404, "not_found", "no static dir");

    let metrics = relay.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = metrics.text();
    assert!(text.ends_with('\n'));
    let mut types = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {name}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        // `name{labels} value` or `name value`, the value a number.
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line:?}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|kind| kind == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample before its TYPE: {line:?}"
        );
    }
    for expected in [
        "tidewire_connections{transport=\"ws\"} ",
        "tidewire_connections{transport=\"sse\"} ",
        "tidewire_subscriptions ",
        "tidewire_events_in_total{kind=\"durable\"} ",
        "tidewire_events_out_total ",
        "tidewire_dropped_total ",
        "tidewire_lagged_total ",
        "tidewire_resyncs_total{origin=\"client\"} ",
        "tidewire_auth_failures_total ",
        "tidewire_listen_reconnects_total ",
        "tidewire_notifications_total ",
        "tidewire_outbox_reads_total ",
        "tidewire_listen_up 1",
        "tidewire_publish_duration_seconds_bucket{le=\"0.0005\"} ",
        "tidewire_publish_duration_seconds_bucket{le=\"+Inf\"} ",
        "tidewire_delivery_latency_seconds_count ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert_eq!(
        types
            .get("tidewire_publish_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert_eq!(
        types.get("tidewire_connections").map(String::as_str),
        Some("gauge")
    );
    relay.stop().await;
}
