//! One table of bad inputs across every way into the relay: malformed and unknown messages,
//! oversize frames and headers, slowloris, bad JWTs, bad stream names, bad positions and
//! cursors, disallowed origins and SSE injection. Every row has its expected answer (status,
//! close code or error code); the relay must not panic, and a healthy client subscribed
//! throughout must keep being served after every row (asserted).

use std::net::SocketAddr;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload};
use serde_json::{json, Value};
use tidewire_relay::auth::jwt::sign_hs256;
use tidewire_shared::message::refusal::MAX_ECHOED_STREAM_LEN;
use tidewire_shared::message::MAX_OP_ID_LEN;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::transport::client::{WsClient, WsItem};

const SECRET: &[u8] = b"bad-input-table-secret";
const GOOD_ORIGIN: &str = "http://good.example";

/// What a row sends.
enum Input {
    /// A text message on an open WebSocket.
    Ws(String),
    /// A raw WebSocket frame.
    WsFrame(OpCode, Vec<u8>),
    /// A raw HTTP request (the bytes after the request line's method and path are built here).
    Http {
        method: &'static str,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Bytes sent on a fresh TCP connection, then silence.
    Slow(Vec<u8>),
}

/// What a row expects.
#[derive(Debug)]
enum Expect {
    /// An `error` message with this code; the connection stays open.
    Error(&'static str),
    /// An advisory of this kind (for example `resync` for an unusable position).
    Advisory(&'static str),
    /// A close frame with this code.
    Close(u16),
    /// An HTTP status, and the `code` of the JSON error body when given.
    Status(u16, Option<&'static str>),
    /// The relay closes the connection (within the header timeout).
    Dropped,
}

struct Row {
    name: String,
    input: Input,
    expect: Expect,
}

fn row(name: impl Into<String>, input: Input, expect: Expect) -> Row {
    Row {
        name: name.into(),
        input,
        expect,
    }
}

fn ws(name: &str, message: Value, expect: Expect) -> Row {
    row(name, Input::Ws(message.to_string()), expect)
}

fn ws_text(name: &str, text: &str, expect: Expect) -> Row {
    row(name, Input::Ws(text.to_owned()), expect)
}

fn get(name: impl Into<String>, path: &str, headers: &[(&str, &str)], expect: Expect) -> Row {
    let headers = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    row(
        name,
        Input::Http {
            method: "GET",
            path: path.to_owned(),
            headers,
            body: Vec::new(),
        },
        expect,
    )
}

fn post(name: &str, path: &str, body: &str, expect: Expect) -> Row {
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    row(
        name,
        Input::Http {
            method: "POST",
            path: path.to_owned(),
            headers,
            body: body.as_bytes().to_vec(),
        },
        expect,
    )
}

fn upgrade_headers(extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("upgrade", "websocket".to_owned()),
        ("connection", "upgrade".to_owned()),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".to_owned()),
        ("sec-websocket-version", "13".to_owned()),
    ];
    for (name, value) in extra {
        headers.push((leak(name), (*value).to_owned()));
    }
    headers
}

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

fn ws_upgrade(name: &str, extra: &[(&str, &str)], expect: Expect) -> Row {
    let headers = upgrade_headers(extra)
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    row(
        name,
        Input::Http {
            method: "GET",
            path: "/v1/ws".into(),
            headers,
            body: Vec::new(),
        },
        expect,
    )
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn now() -> u64 {
    tidewire_relay::auth::jwt::now_unix()
}

fn token(claims: &Value) -> String {
    sign_hs256(SECRET, claims).expect("sign")
}

fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn bearer(name: &str, token: &str, expect: Expect) -> Row {
    let auth = format!("Bearer {token}");
    ws_upgrade(name, &[("authorization", &auth)], expect)
}

fn rows(epoch: u64) -> Vec<Row> {
    let valid = json!({"exp": now() + 600, "aud": "tidewire", "iss": "issuer", "tidewire": {"read": ["*"], "write": ["*"]}});
    let only_a = json!({"exp": now() + 600, "aud": "tidewire", "iss": "issuer", "tidewire": {"read": ["stream-a"], "write": []}});
    let long_name = "n".repeat(70);
    let garbage = "g".repeat(4096);
    let mut rows = vec![
        // Malformed and unknown messages: an error, the connection stays.
        ws_text("not json", "hello", Expect::Error("bad_message")),
        ws_text("empty object", "{}", Expect::Error("bad_message")),
        ws_text("array", "[1,2]", Expect::Error("bad_message")),
        ws_text("number", "42", Expect::Error("bad_message")),
        ws_text("truncated", "{\"type\":\"subscribe\",", Expect::Error("bad_message")),
        ws("unknown type", json!({"type": "explode"}), Expect::Error("unknown_type")),
        ws("type is a number", json!({"type": 42}), Expect::Error("bad_message")),
        ws("subscribe without stream", json!({"type": "subscribe"}), Expect::Error("bad_message")),
        ws_text("nested 100 deep", &format!("{{\"type\":\"ping\",\"x\":{}{}}}", "[".repeat(100), "]".repeat(100)), Expect::Error("bad_message")),
        // Stream names.
        ws("empty stream", json!({"type": "subscribe", "stream": ""}), Expect::Error("bad_stream")),
        ws("space in stream", json!({"type": "subscribe", "stream": "a b"}), Expect::Error("bad_stream")),
        ws("sql injection stream", json!({"type": "subscribe", "stream": "\";drop table x;--"}), Expect::Error("bad_stream")),
        ws("64-byte stream", json!({"type": "subscribe", "stream": "s".repeat(64)}), Expect::Error("bad_stream")),
        ws("70-byte stream", json!({"type": "subscribe", "stream": long_name}), Expect::Error("bad_stream")),
        ws("255-byte stream", json!({"type": "subscribe", "stream": "s".repeat(255)}), Expect::Error("bad_stream")),
        ws("NUL in stream", json!({"type": "subscribe", "stream": "a\u{0}b"}), Expect::Error("bad_stream")),
        ws("newline in stream", json!({"type": "subscribe", "stream": "a\nb"}), Expect::Error("bad_stream")),
        ws("quote in stream", json!({"type": "subscribe", "stream": "a'b"}), Expect::Error("bad_stream")),
        ws("unicode look-alike stream", json!({"type": "subscribe", "stream": "t\u{043e}dos"}), Expect::Error("bad_stream")),
        ws("raw alias of a durable channel", json!({"type": "subscribe", "stream": "raw:tw:todos"}), Expect::Error("bad_stream")),
        ws("empty raw channel", json!({"type": "subscribe", "stream": "raw:"}), Expect::Error("bad_stream")),
        // Positions.
        ws("negative since", json!({"type": "subscribe", "stream": "t", "since": {"epoch": epoch, "seq": -1}}), Expect::Error("bad_since")),
        ws_text("since 1e30", &format!("{{\"type\":\"subscribe\",\"stream\":\"t\",\"since\":{{\"epoch\":{epoch},\"seq\":1e30}}}}"), Expect::Error("bad_since")),
        ws_text("since beyond u64", &format!("{{\"type\":\"subscribe\",\"stream\":\"t\",\"since\":{{\"epoch\":{epoch},\"seq\":99999999999999999999999}}}}"), Expect::Error("bad_since")),
        ws("since is a string", json!({"type": "subscribe", "stream": "t", "since": {"epoch": epoch, "seq": "abc"}}), Expect::Error("bad_since")),
        ws("since is 4 KiB of garbage", json!({"type": "subscribe", "stream": "t", "since": garbage}), Expect::Error("bad_since")),
        ws("since from another epoch", json!({"type": "subscribe", "stream": "t", "since": {"epoch": epoch + 1, "seq": 1}}), Expect::Advisory("resync")),
        ws("since ahead of the head", json!({"type": "subscribe", "stream": "t", "since": {"epoch": epoch, "seq": 1_000_000}}), Expect::Advisory("resync")),
        // Publishes.
        ws("empty key", json!({"type": "publish", "id": "1", "stream": "t", "key": "", "op": "upsert"}), Expect::Error("bad_key")),
        ws("513-byte key", json!({"type": "publish", "id": "1", "stream": "t", "key": "k".repeat(513), "op": "upsert"}), Expect::Error("bad_key")),
        ws("patch with an array", json!({"type": "publish", "id": "1", "stream": "t", "key": "k", "op": "patch", "data": [1]}), Expect::Error("bad_data")),
        ws("NUL in data", json!({"type": "publish", "id": "1", "stream": "t", "key": "k", "op": "upsert", "data": "a\u{0}"}), Expect::Error("bad_data")),
        ws("unknown op", json!({"type": "publish", "id": "1", "stream": "t", "key": "k", "op": "merge"}), Expect::Error("bad_op")),
        ws("publish without id", json!({"type": "publish", "stream": "t", "key": "k", "op": "upsert"}), Expect::Error("bad_message")),
        ws("65-byte op id", json!({"type": "publish", "id": "i".repeat(65), "stream": "t", "key": "k", "op": "upsert"}), Expect::Error("bad_message")),
        ws("publish to a raw channel", json!({"type": "publish", "id": "1", "stream": "raw:x", "key": "k", "op": "upsert"}), Expect::Error("bad_stream")),
        ws("unsubscribe without subscription", json!({"type": "unsubscribe", "stream": "never"}), Expect::Error("not_subscribed")),
        ws("presence without subscription", json!({"type": "presence", "stream": "never", "data": {}}), Expect::Error("not_subscribed")),
        ws("auth with a garbage token", json!({"type": "auth", "token": "garbage"}), Expect::Error("unauthorized")),
        // Frames.
        row("binary frame", Input::WsFrame(OpCode::Binary, vec![1, 2, 3]), Expect::Error("bad_message")),
        row("oversize message", Input::WsFrame(OpCode::Text, vec![b'x'; 300 * 1024]), Expect::Close(1009)),
        row("invalid utf-8", Input::WsFrame(OpCode::Text, vec![0xff, 0xfe, 0xfd]), Expect::Close(1007)),
        // Headers, slowloris, idle sockets.
        get("20 KiB header", "/healthz", &[("x-big", &"h".repeat(20 * 1024))], Expect::Status(431, None)),
        row("slowloris headers", Input::Slow(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ".to_vec()), Expect::Dropped),
        row("idle socket", Input::Slow(Vec::new()), Expect::Dropped),
        // An event stream's first request is read by the relay itself (`sse::direct`), not
        // hyper: the same limits.
        get("20 KiB header on an event stream", "/v1/sse?stream=a", &[("x-big", &"h".repeat(20 * 1024))], Expect::Status(431, None)),
        row("slowloris event stream", Input::Slow(b"GET /v1/sse?stream=a HTTP/1.1\r\nhost: x\r\nx-slow: ".to_vec()), Expect::Dropped),
        row("half a request line", Input::Slow(b"GET /v1/s".to_vec()), Expect::Dropped),
        // JWTs on the WebSocket upgrade (no 101).
        bearer("alg none", &unsigned(&json!({"alg": "none", "typ": "JWT"}), &valid, ""), Expect::Status(401, Some("unauthorized"))),
        bearer("alg None", &unsigned(&json!({"alg": "None"}), &valid, ""), Expect::Status(401, Some("unauthorized"))),
        bearer("alg NONE", &unsigned(&json!({"alg": "NONE"}), &valid, "sig"), Expect::Status(401, Some("unauthorized"))),
        bearer("empty signature", &unsigned(&json!({"alg": "HS256"}), &valid, ""), Expect::Status(401, Some("unauthorized"))),
        bearer("wrong secret", &sign_hs256(b"another secret", &valid).expect("sign"), Expect::Status(401, Some("unauthorized"))),
        bearer("RS256 header on an HS256 relay", &unsigned(&json!({"alg": "RS256"}), &valid, "c2ln"), Expect::Status(401, Some("unauthorized"))),
        bearer("unknown kid", &unsigned(&json!({"alg": "HS256", "kid": "nope"}), &valid, "c2ln"), Expect::Status(401, Some("unauthorized"))),
        bearer("missing exp", &token(&json!({"tidewire": {"read": ["*"]}})), Expect::Status(401, Some("unauthorized"))),
        bearer("expired", &token(&json!({"exp": now() - 60})), Expect::Status(401, Some("unauthorized"))),
        bearer("not yet valid", &token(&json!({"exp": now() + 600, "nbf": now() + 300})), Expect::Status(401, Some("unauthorized"))),
        bearer("wrong audience", &token(&json!({"exp": now() + 600, "aud": "someone-else"})), Expect::Status(401, Some("unauthorized"))),
        bearer("wrong issuer", &token(&json!({"exp": now() + 600, "aud": "tidewire", "iss": "evil"})), Expect::Status(401, Some("unauthorized"))),
        bearer("bad base64", "%%%.%%%.%%%", Expect::Status(401, Some("unauthorized"))),
        bearer("two parts", "abc.def", Expect::Status(401, Some("unauthorized"))),
        bearer("four parts", "a.b.c.d", Expect::Status(401, Some("unauthorized"))),
        bearer("garbage", "garbage", Expect::Status(401, Some("unauthorized"))),
        bearer("16 KiB token", &"t".repeat(16 * 1024), Expect::Status(431, None)),
        // Origins.
        ws_upgrade("disallowed origin on the upgrade", &[("origin", "http://evil.example")], Expect::Status(403, Some("forbidden"))),
        ws_upgrade("null origin on the upgrade", &[("origin", "null")], Expect::Status(403, Some("forbidden"))),
        get("disallowed origin on SSE", "/v1/sse?stream=t", &[("origin", "http://evil.example")], Expect::Status(403, Some("forbidden"))),
        // SSE requests and cursors.
        get("SSE bad stream", "/v1/sse?stream=a%20b", &[], Expect::Status(400, Some("bad_stream"))),
        get("SSE cursor abc", "/v1/sse?stream=t", &[("last-event-id", "abc")], Expect::Status(400, Some("bad_since"))),
        get("SSE cursor -1", "/v1/sse?stream=t", &[("last-event-id", "1;t,1,-1")], Expect::Status(400, Some("bad_since"))),
        get("SSE cursor 1e30", "/v1/sse?stream=t", &[("last-event-id", "1;t,1,1e30")], Expect::Status(400, Some("bad_since"))),
        get("SSE cursor 4 KiB garbage", "/v1/sse?stream=t", &[("last-event-id", &garbage)], Expect::Status(400, Some("bad_since"))),
        get("SSE token for stream A on stream B", &format!("/v1/sse?stream=stream-b&access_token={}", token(&only_a)), &[], Expect::Status(403, Some("forbidden"))),
        get("SSE bad token in the query", "/v1/sse?stream=t&access_token=garbage", &[], Expect::Status(401, Some("unauthorized"))),
        // HTTP API positions and bodies.
        get("events since abc", "/v1/streams/t/events?since=abc", &[], Expect::Status(400, Some("bad_since"))),
        get("events since -1", "/v1/streams/t/events?since=-1", &[], Expect::Status(400, Some("bad_since"))),
        get("events since 1e30", "/v1/streams/t/events?since=1e30", &[], Expect::Status(400, Some("bad_since"))),
        get("events since ahead of the head", "/v1/streams/t/events?since=1000000", &[], Expect::Status(409, Some("bad_since"))),
        get("events from another epoch", &format!("/v1/streams/t/events?since=0&epoch={}", epoch + 1), &[], Expect::Status(409, Some("bad_since"))),
        get("snapshot of a bad name", "/v1/streams/%22%3Bdrop/snapshot", &[], Expect::Status(400, Some("bad_stream"))),
        // Malformed percent-encoding: one rule everywhere (refused, never kept literally).
        get("bad escape in a path", "/v1/streams/t%ZZ/snapshot", &[], Expect::Status(400, Some("bad_stream"))),
        get("bad escape in an SSE stream", "/v1/sse?stream=t%ZZ", &[], Expect::Status(400, Some("bad_stream"))),
        get("bad escape in an SSE since", "/v1/sse?stream=t&since=%ZZ", &[], Expect::Status(400, Some("bad_since"))),
        get("bad escape in events since", "/v1/streams/t/events?since=%ZZ", &[], Expect::Status(400, Some("bad_since"))),
        get("bad escape in a token parameter", "/v1/sse?stream=t&access_token=%ZZ", &[], Expect::Status(401, Some("unauthorized"))),
        get("escape that is not UTF-8", "/v1/sse?stream=t%FF", &[], Expect::Status(400, Some("bad_stream"))),
        post("publish invalid json", "/v1/streams/t/events", "{not json", Expect::Status(400, Some("bad_message"))),
        post("publish patch with an array", "/v1/streams/t/events", "{\"key\":\"k\",\"op\":\"patch\",\"data\":[1]}", Expect::Status(400, Some("bad_data"))),
        post("publish to a raw channel", "/v1/streams/raw:x/events", "{\"key\":\"k\",\"op\":\"upsert\",\"data\":1}", Expect::Status(400, Some("bad_stream"))),
    ];
    let big = format!(
        "{{\"key\":\"k\",\"op\":\"upsert\",\"data\":\"{}\"}}",
        "x".repeat(300 * 1024)
    );
    rows.push(post(
        "publish body too large",
        "/v1/streams/t/events",
        &big,
        Expect::Status(413, Some("too_large")),
    ));
    rows
}

pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    // The relay may answer (431, 413) before it read everything: ignore write errors.
    let _ = socket.write_all(&bytes).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked bodies: the JSON object is the first line that parses.
    let json = body
        .lines()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// An error answer names the request it answers whenever the message's `type` is known and
/// its `stream` (and a publish's `id`) can be read, so a client knows which one failed.
pub(crate) fn names_the_request(text: &str, answer: &Value) -> Result<(), String> {
    let Ok(Value::Object(sent)) = serde_json::from_str::<Value>(text) else {
        return Ok(());
    };
    let known = ["subscribe", "unsubscribe", "publish", "presence"];
    if !sent
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|kind| known.contains(&kind))
    {
        return Ok(());
    }
    if let Some(stream) = sent.get("stream").and_then(Value::as_str) {
        if stream.len() <= MAX_ECHOED_STREAM_LEN && answer["stream"] != stream {
            return Err(format!(
                "the answer does not name the stream {stream:?}: {answer}"
            ));
        }
    }
    if let Some(id) = sent.get("id").and_then(Value::as_str) {
        if sent["type"] == "publish" && id.len() <= MAX_OP_ID_LEN && answer["id"] != id {
            return Err(format!(
                "the answer does not name the publish {id:?}: {answer}"
            ));
        }
    }
    Ok(())
}

async fn run_row(addr: SocketAddr, row: &Row, victim: &mut WsClient) -> Result<(), String> {
    match (&row.input, &row.expect) {
        (Input::Ws(text), Expect::Error(code)) => {
            victim
                .send_frame(Frame::text(Payload::Owned(text.clone().into_bytes())))
                .await;
            let answer = next_json(victim, |m| m["type"] == "error").await?;
            if answer["code"] != *code {
                return Err(format!("got {answer}"));
            }
            names_the_request(text, &answer)
        }
        (Input::Ws(text), Expect::Advisory(kind)) => {
            victim
                .send_frame(Frame::text(Payload::Owned(text.clone().into_bytes())))
                .await;
            next_json(victim, |m| m["type"] == "advisory" && m["kind"] == *kind)
                .await
                .map(|_| ())
        }
        (Input::WsFrame(opcode, payload), expect) => {
            let mut fresh = WsClient::connected(addr).await;
            let frame = Frame::new(true, *opcode, None, Payload::Owned(payload.clone()));
            let _ = fresh.try_send_frame(frame).await;
            match expect {
                Expect::Error(code) => {
                    let answer = next_json(&mut fresh, |m| m["type"] == "error").await?;
                    (answer["code"] == *code)
                        .then_some(())
                        .ok_or(format!("got {answer}"))
                }
                Expect::Close(code) => loop {
                    match fresh.item().await {
                        WsItem::Close(got, _) if got == *code => return Ok(()),
                        WsItem::Close(got, reason) => return Err(format!("closed {got} {reason}")),
                        WsItem::Gone(why) => return Err(format!("gone without close: {why}")),
                        _ => {}
                    }
                },
                other => Err(format!("bad row {other:?}")),
            }
        }
        (
            Input::Http {
                method,
                path,
                headers,
                body,
            },
            Expect::Status(status, code),
        ) => {
            let (got, json) = http(addr, method, path, headers, body).await;
            if got != *status {
                return Err(format!("status {got}, body {json}"));
            }
            match code {
                Some(code) if json["code"] != *code => {
                    Err(format!("code {}, body {json}", json["code"]))
                }
                _ => Ok(()),
            }
        }
        (Input::Slow(bytes), Expect::Dropped) => {
            let mut socket = TcpStream::connect(addr).await.expect("connect");
            socket.write_all(bytes).await.map_err(|e| e.to_string())?;
            let mut rest = Vec::new();
            match tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await
            {
                Ok(_) => Ok(()),
                Err(_) => Err("the relay kept a slow socket open past the header timeout".into()),
            }
        }
        _ => Err("row has no runner".into()),
    }
}

async fn next_json(
    client: &mut WsClient,
    wanted: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    for _ in 0..50 {
        match client.item_within(Duration::from_secs(10)).await {
            Some(WsItem::Json(message)) if wanted(&message) => return Ok(message),
            Some(WsItem::Json(_) | WsItem::Ping | WsItem::Pong) => {}
            other => return Err(format!("no answer: {other:?}")),
        }
    }
    Err("no matching answer in 50 messages".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_answer_and_a_healthy_client_keeps_being_served() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| {
        options.jwt_secret = Some(String::from_utf8_lossy(SECRET).into_owned());
        options.jwt_audience = Some("tidewire".into());
        options.jwt_issuer = Some("issuer".into());
        // Anonymous clients may use these streams only, so a token's patterns are what grant
        // `stream-a` (and nothing grants `stream-b`).
        options.anon_read = vec!["t".into(), "healthy".into(), "never".into()];
        options.anon_write = vec!["t".into(), "healthy".into()];
        options.allowed_origins = vec![GOOD_ORIGIN.into()];
        options.max_message_bytes = 256 * 1024;
        options.max_header_bytes = 16 * 1024;
        options.header_timeout_ms = 1000;
    })
    .await;
    let addr = relay.addr();
    let mut healthy = WsClient::connected(addr).await;
    healthy.subscribe("healthy").await;
    let mut victim = WsClient::connected(addr).await;
    let snapshot = victim.subscribe("t").await;
    let epoch = snapshot["epoch"].as_u64().expect("epoch");
    let table = rows(epoch);
    assert!(table.len() >= 60, "the table has {} rows", table.len());
    let mut failures = Vec::new();
    for (index, row) in table.iter().enumerate() {
        if let Err(why) = run_row(addr, row, &mut victim).await {
            failures.push(format!(
                "row {index} {:?}: expected {:?}: {why}",
                row.name, row.expect
            ));
        }
        // The healthy client is still served: a ping is answered and an event arrives.
        healthy
            .send(json!({"type": "ping", "id": format!("after-{index}")}))
            .await;
        let pong = next_json(&mut healthy, |m| m["type"] == "pong").await;
        assert_eq!(
            pong.map(|m| m["id"].clone()),
            Ok(json!(format!("after-{index}"))),
            "healthy after row {index} {:?}",
            row.name
        );
    }
    healthy.send(json!({"type": "publish", "id": "last", "stream": "healthy", "key": "k", "op": "upsert", "data": 1})).await;
    next_json(&mut healthy, |m| {
        m["type"] == "event" && m["stream"] == "healthy"
    })
    .await
    .expect("healthy still gets events");
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}
