//! Auth end to end: a real relay with a JWT secret on 127.0.0.1:0, spoken to over raw HTTP/1.1
//! and a minimal hand-written WebSocket client, so every byte on the wire is the relay's. Bad
//! tokens get 401 `unauthorized` (never a silent anonymous fallback), disallowed origins get
//! 403 without an upgrade, a valid token subscribes only to its own streams, and a token that
//! expires mid-stream closes the WebSocket with 4004.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tidewire_relay::auth::jwt::sign_hs256;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support;

/// The relay's HS256 secret (test-only).
const SECRET: &str = "test-only-e2e-secret-0123456789abcdef";

/// Generous wait for one answer on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(15);

/// A relay with `--jwt-secret` (the shared harness), on a cluster of its own that outlives it.
struct Relay {
    addr: SocketAddr,
    relay: TestRelay,
    /// Declared last: the cluster outlives the relay.
    pg: TestPg,
}

impl Relay {
    async fn start() -> Self {
        let pg = TestPg::start().await;
        let relay = TestRelay::builder(&pg)
            .jwt_secret(SECRET)
            .options(|options| {
                options.anon_read = vec!["public:*".to_owned()];
                options.shutdown_grace_ms = 1000;
            })
            .spawn()
            .await;
        Self {
            addr: relay.addr(),
            relay,
            pg,
        }
    }

    /// Creates `stream` with one event, so subscribing finds it.
    async fn seed(&self, stream: &str) {
        let client = self.pg.client().await;
        support::publish(&client, stream, "k", "upsert", r#"{"n":1}"#)
            .await
            .expect("publish the seed event");
    }

    async fn stop(self) {
        self.relay.shutdown().await;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// A HS256 token reading `reads`, expiring in `lifetime` seconds.
fn token(reads: &[&str], lifetime: u64) -> String {
    let claims =
        json!({"sub": "e2e", "exp": now() + lifetime, "tidewire": {"read": reads, "write": []}});
    sign_hs256(SECRET.as_bytes(), &claims).expect("sign the test token")
}

/// The status line and headers of a response, and the bytes read after them.
#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    rest: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Sends a GET (or another method) with `headers` on a fresh connection and reads the head.
async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (TcpStream, Head) {
    let mut socket = TcpStream::connect(addr)
        .await
        .expect("connect to the relay");
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    socket
        .write_all(text.as_bytes())
        .await
        .expect("send the request");
    let mut buffer = Vec::new();
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(WAIT, socket.read(&mut chunk))
            .await
            .expect("the relay answers in time")
            .expect("read the response");
        assert!(
            read > 0,
            "the relay closed before answering: {}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let rest = buffer[end + 4..].to_vec();
    (
        socket,
        Head {
            status,
            headers,
            rest,
        },
    )
}

/// Reads a `Content-Length` body and parses it as JSON.
async fn json_body(socket: &mut TcpStream, head: &Head) -> Value {
    let length: usize = head
        .header("content-length")
        .and_then(|length| length.parse().ok())
        .expect("an error body has a Content-Length");
    let mut body = head.rest.clone();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(WAIT, socket.read(&mut chunk))
            .await
            .expect("the body arrives in time")
            .expect("read the body");
        assert!(read > 0, "the relay closed mid-body");
        body.extend_from_slice(&chunk[..read]);
    }
    serde_json::from_slice(&body[..length]).expect("the body is JSON")
}

/// Reads from a streaming response until `needle` shows up.
async fn read_until(socket: &mut TcpStream, mut seen: Vec<u8>, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if text.contains(needle) {
            return text;
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, socket.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in time; got {text}"))
            .expect("read the stream");
        assert!(read > 0, "the stream ended without {needle:?}: {text}");
        seen.extend_from_slice(&chunk[..read]);
    }
}

/// Expected answer of an SSE request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// 200 `text/event-stream` that reports the subscription.
    Streams,
    /// This status with an `error` body of this code.
    Error(u16, &'static str),
    /// This status, refused by the HTTP layer before the relay's code runs (no body).
    Status(u16),
}

/// Name, request target, extra headers, expected answer.
type SseRow<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Answer);

/// Name, request target, extra headers, expected status and error code.
type RefusalRow<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);

#[tokio::test]
async fn sse_auth_table() {
    let relay = Relay::start().await;
    relay.seed("room:1").await;
    relay.seed("public:news").await;
    let valid = token(&["room:1"], 300);
    let expired = token(&["room:1"], 0);
    let forged = format!(
        "eyJhbGciOiJub25lIn0.{}",
        valid
            .split_once('.')
            .map(|(_, rest)| rest)
            .unwrap_or_default()
    );
    let tampered = format!("{valid}x");
    // 16 KiB cannot even fit in the header limit (--max-header-bytes, 16 KiB); 9 KiB does and
    // is refused by the token size limit (8 KiB).
    let huge = "a".repeat(16 * 1024);
    let big = "a".repeat(9 * 1024);
    let bearer = format!("Bearer {valid}");
    #[rustfmt::skip]
    let rows: Vec<SseRow<'_>> = vec![
        ("garbage token in the query", "/v1/sse?stream=room:1&access_token=bad".into(), vec![], Answer::Error(401, "unauthorized")),
        ("expired token", format!("/v1/sse?stream=room:1&access_token={expired}"), vec![], Answer::Error(401, "unauthorized")),
        ("alg none", format!("/v1/sse?stream=room:1&access_token={forged}"), vec![], Answer::Error(401, "unauthorized")),
        ("bad signature", format!("/v1/sse?stream=room:1&access_token={tampered}"), vec![], Answer::Error(401, "unauthorized")),
        ("16 KiB token", format!("/v1/sse?stream=room:1&token={huge}"), vec![], Answer::Status(431)),
        ("9 KiB token", format!("/v1/sse?stream=room:1&token={big}"), vec![], Answer::Error(401, "unauthorized")),
        ("bad token in the header", "/v1/sse?stream=room:1".into(), vec![("Authorization", "Bearer bad")], Answer::Error(401, "unauthorized")),
        ("token for stream A on stream B", format!("/v1/sse?stream=room:2&access_token={valid}"), vec![], Answer::Error(403, "forbidden")),
        ("no token, private stream", "/v1/sse?stream=room:1".into(), vec![], Answer::Error(403, "forbidden")),
        ("disallowed origin", format!("/v1/sse?stream=room:1&access_token={valid}"), vec![("Origin", "https://evil.example")], Answer::Error(403, "forbidden")),
        ("no token, public stream", "/v1/sse?stream=public:news".into(), vec![], Answer::Streams),
        ("valid token in the query", format!("/v1/sse?stream=room:1&access_token={valid}"), vec![], Answer::Streams),
        ("valid token in the header, localhost origin", "/v1/sse?stream=room:1".into(),
            vec![("Authorization", bearer.as_str()), ("Origin", "http://localhost:5173")], Answer::Streams),
    ];
    for (name, target, headers, answer) in rows {
        let mut headers = headers;
        headers.push(("Accept", "text/event-stream"));
        let (mut socket, head) = request(relay.addr, "GET", &target, &headers).await;
        match answer {
            Answer::Error(status, code) => {
                assert_eq!(head.status, status, "{name}: {head:?}");
                let body = json_body(&mut socket, &head).await;
                assert_eq!(body["type"], "error", "{name}: {body}");
                assert_eq!(body["code"], code, "{name}: {body}");
            }
            Answer::Status(status) => assert_eq!(head.status, status, "{name}: {head:?}"),
            Answer::Streams => {
                assert_eq!(head.status, 200, "{name}: {head:?}");
                assert_eq!(
                    head.header("content-type"),
                    Some("text/event-stream"),
                    "{name}"
                );
                read_until(&mut socket, head.rest, "subscribed").await;
            }
        }
    }
    relay.stop().await;
}

/// A WebSocket upgrade request's headers (plus `extra`).
fn upgrade_headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    headers.extend_from_slice(extra);
    headers
}

/// Sends one masked text frame.
async fn send_text(socket: &mut TcpStream, text: &str) {
    let payload = text.as_bytes();
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81u8];
    match u16::try_from(payload.len()) {
        Ok(length) if length < 126 => frame.push(0x80 | length as u8),
        Ok(length) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&length.to_be_bytes());
        }
        Err(_) => panic!("test frames are small"),
    }
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(index, byte)| byte ^ mask[index % 4]),
    );
    socket.write_all(&frame).await.expect("send a frame");
}

/// One server frame: text, or a close with its code.
#[derive(Debug)]
enum Frame {
    Text(String),
    Close(u16),
    Other,
}

/// Reads server frames (unmasked) from `buffer` + the socket.
struct FrameReader {
    buffer: Vec<u8>,
}

impl FrameReader {
    async fn fill(&mut self, socket: &mut TcpStream, wanted: usize) {
        while self.buffer.len() < wanted {
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(WAIT, socket.read(&mut chunk))
                .await
                .expect("a frame arrives in time")
                .expect("read a frame");
            assert!(
                read > 0,
                "the relay closed the socket without a close frame"
            );
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    async fn next(&mut self, socket: &mut TcpStream) -> Frame {
        self.fill(socket, 2).await;
        let opcode = self.buffer[0] & 0x0f;
        let (length, header) = match self.buffer[1] & 0x7f {
            126 => {
                self.fill(socket, 4).await;
                (
                    usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])),
                    4,
                )
            }
            127 => {
                self.fill(socket, 10).await;
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.buffer[2..10]);
                (
                    usize::try_from(u64::from_be_bytes(bytes)).expect("frame fits"),
                    10,
                )
            }
            short => (usize::from(short), 2),
        };
        self.fill(socket, header + length).await;
        let payload: Vec<u8> = self.buffer.drain(..header + length).skip(header).collect();
        match opcode {
            0x1 => Frame::Text(String::from_utf8(payload).expect("text frames are UTF-8")),
            0x8 if payload.len() >= 2 => Frame::Close(u16::from_be_bytes([payload[0], payload[1]])),
            0x8 => Frame::Close(1005),
            _ => Frame::Other,
        }
    }

    /// The next text frame whose JSON `type` is `kind` (earlier frames are skipped).
    async fn expect(&mut self, socket: &mut TcpStream, kind: &str) -> Value {
        loop {
            match self.next(socket).await {
                Frame::Text(text) => {
                    let message: Value =
                        serde_json::from_str(&text).expect("server messages are JSON");
                    if message["type"] == kind {
                        return message;
                    }
                }
                Frame::Close(code) => panic!("closed with {code} while waiting for {kind}"),
                Frame::Other => {}
            }
        }
    }
}

#[tokio::test]
async fn websocket_auth() {
    let relay = Relay::start().await;
    relay.seed("room:1").await;
    let valid = token(&["room:1"], 300);

    // Refusals happen before the upgrade: no 101, an `error` body instead.
    #[rustfmt::skip]
    let refusals: Vec<RefusalRow<'_>> = vec![
        ("disallowed origin", format!("/v1/ws?access_token={valid}"), vec![("Origin", "https://evil.example")], 403, "forbidden"),
        ("null origin", "/v1/ws".into(), vec![("Origin", "null")], 403, "forbidden"),
        ("another host", "/v1/ws".into(), vec![("Origin", "http://relay.invalid:7300")], 403, "forbidden"),
        ("bad token", "/v1/ws?access_token=bad".into(), vec![], 401, "unauthorized"),
        ("bad bearer header", "/v1/ws".into(), vec![("Authorization", "Basic dXNlcjpwYXNz")], 401, "unauthorized"),
    ];
    for (name, target, extra, status, code) in refusals {
        let (mut socket, head) =
            request(relay.addr, "GET", &target, &upgrade_headers(&extra)).await;
        assert_eq!(head.status, status, "{name}: {head:?}");
        let body = json_body(&mut socket, &head).await;
        assert_eq!(body["code"], code, "{name}: {body}");
    }

    // A valid token (query parameter, as a browser WebSocket sends it) subscribes to its
    // stream, is refused another one, and a bad refreshed token is an error, not a grant.
    let target = format!("/v1/ws?access_token={valid}");
    let extra = [("Origin", "http://localhost:5173")];
    let (mut socket, head) = request(relay.addr, "GET", &target, &upgrade_headers(&extra)).await;
    assert_eq!(head.status, 101, "{head:?}");
    let mut frames = FrameReader { buffer: head.rest };
    send_text(&mut socket, r#"{"type":"subscribe","stream":"room:1"}"#).await;
    let subscribed = frames.expect(&mut socket, "subscribed").await;
    assert_eq!(subscribed["stream"], "room:1");
    send_text(&mut socket, r#"{"type":"subscribe","stream":"room:2"}"#).await;
    let refused = frames.expect(&mut socket, "error").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    send_text(&mut socket, r#"{"type":"auth","token":"not.a.token"}"#).await;
    let refused = frames.expect(&mut socket, "error").await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    drop(socket);

    // A token that expires mid-stream closes the connection with 4004.
    let short = token(&["room:1"], 2);
    let target = format!("/v1/ws?access_token={short}");
    let (mut socket, head) = request(relay.addr, "GET", &target, &upgrade_headers(&[])).await;
    assert_eq!(head.status, 101, "{head:?}");
    let mut frames = FrameReader { buffer: head.rest };
    send_text(&mut socket, r#"{"type":"subscribe","stream":"room:1"}"#).await;
    let code = loop {
        match frames.next(&mut socket).await {
            Frame::Close(code) => break code,
            Frame::Text(_) | Frame::Other => {}
        }
    };
    assert_eq!(code, 4004, "expected the token-expired close code");
    relay.stop().await;
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let relay = Relay::start().await;
    let preflight = [
        ("Origin", "http://localhost:5173"),
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "authorization, content-type",
        ),
    ];
    let (_socket, head) = request(
        relay.addr,
        "OPTIONS",
        "/v1/streams/room:1/events",
        &preflight,
    )
    .await;
    assert_eq!(head.status, 204, "{head:?}");
    assert_eq!(
        head.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert!(head
        .header("access-control-allow-headers")
        .is_some_and(|allowed| allowed.contains("Authorization")));

    let refused = [
        ("Origin", "https://evil.example"),
        ("Access-Control-Request-Method", "POST"),
    ];
    let (_socket, head) =
        request(relay.addr, "OPTIONS", "/v1/streams/room:1/events", &refused).await;
    assert_eq!(head.status, 403, "{head:?}");
    assert_eq!(head.header("access-control-allow-origin"), None);

    let (_socket, head) = request(
        relay.addr,
        "GET",
        "/healthz",
        &[("Origin", "http://localhost:5173")],
    )
    .await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(
        head.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    relay.stop().await;
}

/// The native client follows the shared close rule: a token that expires on a live
/// connection (close 4004) ends the client with an error that says so, instead of
/// reconnecting again and again with the same expired token.
#[tokio::test]
async fn native_client_stops_on_an_expired_token_instead_of_retrying_it() {
    use tidewire_client::{BackoffConfig, Client, ClientConfig, ConnectionStatus};

    let relay = Relay::start().await;
    let mut config = ClientConfig::new(format!("ws://{}", relay.addr));
    config.token = Some(token(&["room:1"], 2));
    config.reconnect = BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        max_attempts: None,
    };
    let client = Client::connect(config).await.expect("connects");
    let _subscription = client
        .subscribe("room:1", Default::default())
        .await
        .expect("subscribes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let reason = loop {
        if let ConnectionStatus::Closed { reason } = client.status() {
            break reason;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {:?} long after the token expired",
            client.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(reason.contains("token_expired"), "{reason}");
    assert_eq!(
        client.stats().connects,
        1,
        "no reconnect with the expired token"
    );
    relay.stop().await;
}

/// An SSE stream whose token expires while it is open ends with `event: close` and code 4004
/// (the SSE stand-in for the WebSocket close), when the token expires and not before.
#[tokio::test]
async fn an_sse_stream_ends_with_a_close_event_when_its_token_expires() {
    let relay = Relay::start().await;
    let lifetime = 2;
    let expires = now() + lifetime;
    let target = format!(
        "/v1/sse?stream=room:1&access_token={}",
        token(&["room:1"], lifetime)
    );
    let (mut socket, head) = request(relay.addr, "GET", &target, &[]).await;
    assert_eq!(head.status, 200, "{head:?}");
    let text = read_until(&mut socket, head.rest, "\"code\":4004").await;
    assert!(
        now() >= expires,
        "closed before the token expired (at {expires}, now {})",
        now()
    );
    assert!(text.contains("event: close\n"), "{text}");
    assert!(text.contains("token expired"), "{text}");
    relay.stop().await;
}
