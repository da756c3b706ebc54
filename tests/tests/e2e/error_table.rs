//! docs/PROTOCOL.md's error table, walked row by row over each transport where the row
//! applies: every documented code is produced for real (WebSocket `error` messages, HTTP and
//! SSE answers with the documented status), and a code added to the table without a case here
//! (or a case whose code left the table) fails the test.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tidewire_relay::pg::embedded::StopMode;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use crate::bad_input::{http, names_the_request};
use crate::transport::client::{WsClient, WsItem};

const PROTOCOL: &str = include_str!("../../../docs/PROTOCOL.md");

/// Codes that no request can produce, with the reason; everything else in the table must
/// have a case.
const NOT_PRODUCIBLE: &[(&str, &str)] = &[(
    "internal",
    "a bug in the relay: no well-formed or malformed request is meant to reach it",
)];

/// The rows of the "Errors and limits" table: `(code, allowed HTTP statuses)`.
fn documented() -> Vec<(String, Vec<u16>)> {
    let section = PROTOCOL
        .split("## Errors and limits")
        .nth(1)
        .expect("PROTOCOL.md has an Errors and limits section");
    section
        .lines()
        .skip_while(|line| !line.starts_with("| code"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells[1].trim_matches('`').to_owned();
            let statuses = cells[2]
                .split('/')
                .map(|status| status.parse().expect("an HTTP status"))
                .collect();
            (code, statuses)
        })
        .collect()
}

/// How a case reaches the relay.
enum Via {
    /// A text message on the shared WebSocket; the answer is an `error` message.
    Ws(Value),
    /// A raw HTTP request (API, SSE or WebSocket upgrade); the answer is a status and a
    /// JSON error body.
    Http {
        method: &'static str,
        path: String,
        headers: Vec<(String, String)>,
        body: String,
    },
}

struct Case {
    code: &'static str,
    transport: &'static str,
    via: Via,
}

fn ws(code: &'static str, message: Value) -> Case {
    Case {
        code,
        transport: "websocket",
        via: Via::Ws(message),
    }
}

fn request(
    code: &'static str,
    transport: &'static str,
    method: &'static str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Case {
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    if !body.is_empty() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    Case {
        code,
        transport,
        via: Via::Http {
            method,
            path: path.to_owned(),
            headers,
            body: body.to_owned(),
        },
    }
}

fn upgrade(code: &'static str, path: &str, extra: &[(&str, &str)]) -> Case {
    let mut headers = vec![
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    headers.extend_from_slice(extra);
    request(code, "websocket upgrade", "GET", path, &headers, "")
}

fn publish(id: &str, stream: &str, key: &str, op: &str, data: Value) -> Value {
    json!({"type": "publish", "id": id, "stream": stream, "key": key, "op": op, "data": data})
}

/// The cases a healthy PostgreSQL and an ordinary relay can produce.
fn cases(epoch: u64) -> Vec<Case> {
    let big = "x".repeat(2048);
    vec![
        ws("bad_message", json!({"type": "subscribe"})),
        request(
            "bad_message",
            "http",
            "POST",
            "/v1/streams/t/events",
            &[],
            "{not json",
        ),
        ws("unknown_type", json!({"type": "explode"})),
        ws(
            "too_large",
            publish("w1", "t", "k", "upsert", json!({"big": big})),
        ),
        request(
            "too_large",
            "http",
            "POST",
            "/v1/streams/t/events",
            &[],
            &json!({"key": "k", "op": "upsert", "data": {"big": big}}).to_string(),
        ),
        ws(
            "bad_stream",
            json!({"type": "subscribe", "stream": "bad name"}),
        ),
        ws(
            "bad_stream",
            publish("w2", "raw:x", "k", "upsert", json!(1)),
        ),
        request(
            "bad_stream",
            "http",
            "GET",
            "/v1/streams/bad%20name/snapshot",
            &[],
            "",
        ),
        request(
            "bad_stream",
            "sse",
            "GET",
            "/v1/sse?stream=bad%20name",
            &[],
            "",
        ),
        ws("bad_key", publish("w3", "t", "", "upsert", json!(1))),
        request(
            "bad_key",
            "http",
            "POST",
            "/v1/streams/t/events",
            &[],
            r#"{"key":"","op":"upsert","data":1}"#,
        ),
        ws("bad_op", publish("w4", "t", "k", "merge", json!(1))),
        request(
            "bad_op",
            "http",
            "POST",
            "/v1/streams/t/events",
            &[],
            r#"{"key":"k","op":"merge","data":1}"#,
        ),
        ws("bad_data", publish("w5", "t", "k", "patch", json!([1]))),
        request(
            "bad_data",
            "http",
            "POST",
            "/v1/streams/t/events",
            &[],
            r#"{"key":"k","op":"patch","data":[1]}"#,
        ),
        ws(
            "bad_since",
            json!({"type": "subscribe", "stream": "t", "since": {"epoch": -1, "seq": 0}}),
        ),
        request(
            "bad_since",
            "http",
            "GET",
            "/v1/streams/t/events?since=abc",
            &[],
            "",
        ),
        request(
            "bad_since",
            "http",
            "GET",
            &format!("/v1/streams/t/events?since=0&epoch={}", epoch + 1),
            &[],
            "",
        ),
        request(
            "bad_since",
            "sse",
            "GET",
            "/v1/sse?stream=t",
            &[("last-event-id", "abc")],
            "",
        ),
        ws(
            "bad_filter",
            json!({"type": "subscribe", "stream": "t", "where": {"prio": {"gte": 1}}}),
        ),
        request(
            "bad_filter",
            "http",
            "GET",
            "/v1/streams/t/snapshot?where=%7B%22a%22%3Anull%7D",
            &[],
            "",
        ),
        request(
            "bad_filter",
            "sse",
            "GET",
            "/v1/sse?stream=t&where=%7B",
            &[],
            "",
        ),
        ws("unauthorized", json!({"type": "auth", "token": "garbage"})),
        upgrade("unauthorized", "/v1/ws?access_token=garbage", &[]),
        request(
            "unauthorized",
            "http",
            "GET",
            "/v1/streams/t/snapshot",
            &[("authorization", "Bearer garbage")],
            "",
        ),
        request(
            "unauthorized",
            "sse",
            "GET",
            "/v1/sse?stream=t&access_token=garbage",
            &[],
            "",
        ),
        ws(
            "forbidden",
            json!({"type": "subscribe", "stream": "secret"}),
        ),
        ws(
            "forbidden",
            publish("w6", "secret", "k", "upsert", json!(1)),
        ),
        upgrade("forbidden", "/v1/ws", &[("origin", "http://evil.example")]),
        request(
            "forbidden",
            "http",
            "GET",
            "/v1/streams/secret/snapshot",
            &[],
            "",
        ),
        request(
            "forbidden",
            "http",
            "POST",
            "/v1/streams/secret/events",
            &[],
            r#"{"key":"k","op":"upsert","data":1}"#,
        ),
        request("forbidden", "sse", "GET", "/v1/sse?stream=secret", &[], ""),
        ws(
            "not_subscribed",
            json!({"type": "unsubscribe", "stream": "never"}),
        ),
        ws(
            "not_subscribed",
            json!({"type": "presence", "stream": "never", "data": {}}),
        ),
        request("not_found", "http", "GET", "/v1/streams/a-missing", &[], ""),
        request("not_found", "http", "GET", "/v1/no-such-route", &[], ""),
        request(
            "too_many_subscriptions",
            "sse",
            "GET",
            "/v1/sse?stream=a1&stream=a2&stream=a3&stream=a4",
            &[],
            "",
        ),
    ]
}

/// Reads WebSocket messages until an `error` arrives.
async fn next_error(client: &mut WsClient) -> Result<Value, String> {
    for _ in 0..50 {
        match client.item_within(Duration::from_secs(10)).await {
            Some(WsItem::Json(message)) if message["type"] == "error" => return Ok(message),
            Some(WsItem::Json(_) | WsItem::Ping | WsItem::Pong) => {}
            other => return Err(format!("no error answer: {other:?}")),
        }
    }
    Err("no error in 50 messages".into())
}

/// Runs one case; `Ok` when the relay answered with the case's code (and, over HTTP, with
/// one of the statuses the table gives it).
async fn run(
    addr: SocketAddr,
    ws_client: &mut WsClient,
    case: &Case,
    statuses: &[u16],
) -> Result<(), String> {
    match &case.via {
        Via::Ws(message) => {
            ws_client.send(message.clone()).await;
            let answer = next_error(ws_client).await?;
            if answer["code"] != case.code {
                return Err(format!("answered {answer}"));
            }
            names_the_request(&message.to_string(), &answer)
        }
        Via::Http {
            method,
            path,
            headers,
            body,
        } => {
            let (status, answer) = http(addr, method, path, headers, body.as_bytes()).await;
            if !statuses.contains(&status) || answer["code"] != case.code {
                return Err(format!("answered {status} {answer}"));
            }
            Ok(())
        }
    }
}

/// The walk through the table: what each case produced, and what went wrong.
struct Walk {
    /// PROTOCOL.md's rows.
    table: Vec<(String, Vec<u16>)>,
    /// `(code, transport)` of every case that produced its code.
    seen: Vec<(&'static str, &'static str)>,
    failures: Vec<String>,
}

impl Walk {
    /// Runs `case` against the relay at `addr` (WebSocket cases on `client`) and records it.
    async fn check(&mut self, addr: SocketAddr, client: &mut WsClient, case: Case) {
        let Some((_, statuses)) = self.table.iter().find(|(code, _)| code == case.code) else {
            self.failures
                .push(format!("{} is not in PROTOCOL.md's error table", case.code));
            return;
        };
        match run(addr, client, &case, statuses).await {
            Ok(()) => self.seen.push((case.code, case.transport)),
            Err(why) => self
                .failures
                .push(format!("{} over {}: {why}", case.code, case.transport)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_error_code_is_produced_over_each_transport() {
    let mut pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| {
        options.jwt_secret = Some("error-table-secret".into());
        options.anon_read = vec!["t".into(), "a*".into(), "never".into(), "busy".into()];
        options.anon_write = vec!["t".into(), "busy".into()];
        options.allowed_origins = vec!["http://good.example".into()];
        options.max_data_bytes = 1024;
        options.max_subscriptions = 3;
        options.publish_rate = 1;
        options.publish_burst = 1;
    })
    .await;
    let addr = relay.addr();
    let mut walk = Walk {
        table: documented(),
        seen: Vec::new(),
        failures: Vec::new(),
    };
    assert!(
        walk.table.len() >= 15,
        "PROTOCOL.md's error table has {} rows",
        walk.table.len()
    );

    let mut client = WsClient::connected(addr).await;
    let epoch = client.subscribe("t").await["epoch"]
        .as_u64()
        .expect("epoch");
    for case in cases(epoch) {
        walk.check(addr, &mut client, case).await;
    }

    // Limits of one connection: the fourth subscription, the second publish in a second.
    for stream in ["a1", "a2"] {
        client.subscribe(stream).await;
    }
    let case = ws(
        "too_many_subscriptions",
        json!({"type": "subscribe", "stream": "a3"}),
    );
    walk.check(addr, &mut client, case).await;
    let mut rate_limited = false;
    for round in 0..5 {
        client
            .send(publish(
                &format!("r{round}"),
                "busy",
                "k",
                "upsert",
                json!(round),
            ))
            .await;
    }
    let mut answers = 0;
    while answers < 5 {
        match client.item_within(Duration::from_secs(10)).await {
            Some(WsItem::Json(answer)) if answer["type"] == "error" || answer["type"] == "ack" => {
                answers += 1;
                if answer["code"] == "rate_limited" {
                    rate_limited |= answer["id"].is_string() && answer["stream"] == "busy";
                }
            }
            Some(WsItem::Json(_) | WsItem::Ping | WsItem::Pong) => {}
            other => {
                walk.failures
                    .push(format!("rate_limited over websocket: {other:?}"));
                break;
            }
        }
    }
    if rate_limited {
        walk.seen.push(("rate_limited", "websocket"));
    } else {
        walk.failures
            .push("rate_limited over websocket: five publishes at once were all accepted".into());
    }

    // A write id reused for another write, over both transports (on a connection whose
    // publish budget the rate limit above did not spend). The id is first used over HTTP.
    let headers = [
        ("idempotency-key", "reused"),
        ("content-type", "application/json"),
    ]
    .map(|(name, value)| (name.to_owned(), value.to_owned()));
    let body = br#"{"key":"k","op":"upsert","data":1}"#;
    let (status, answer) = http(addr, "POST", "/v1/streams/t/events", &headers, body).await;
    assert_eq!(status, 201, "the first use of the write id: {answer}");
    let mut fresh = WsClient::connected(addr).await;
    let mut reused = publish("w8", "t", "k", "upsert", json!(2));
    reused["write_id"] = json!("reused");
    for case in [
        ws("conflict", reused),
        request(
            "conflict",
            "http",
            "POST",
            "/v1/streams/t/events",
            &[("idempotency-key", "reused")],
            r#"{"key":"k","op":"upsert","data":3}"#,
        ),
    ] {
        walk.check(addr, &mut fresh, case).await;
    }

    // A relay at its connection limit.
    let full = TestRelay::spawn_with(&pg, |options| options.max_connections = 1).await;
    let _holder = WsClient::connected(full.addr()).await;
    for case in [
        upgrade("overloaded", "/v1/ws", &[]),
        request("overloaded", "sse", "GET", "/v1/sse?stream=t", &[], ""),
    ] {
        walk.check(full.addr(), &mut client, case).await;
    }

    // PostgreSQL gone: writes and reads that need it are `unavailable` (on a connection
    // whose publish budget the rate limit above did not spend).
    let mut client = WsClient::connected(addr).await;
    pg.cluster_mut()
        .stop(StopMode::Fast)
        .await
        .expect("stop PostgreSQL");
    for case in [
        ws("unavailable", publish("w7", "t", "k", "upsert", json!(1))),
        request(
            "unavailable",
            "http",
            "POST",
            "/v1/streams/t/events",
            &[],
            r#"{"key":"k","op":"upsert","data":1}"#,
        ),
        request(
            "unavailable",
            "http",
            "GET",
            "/v1/streams/t/snapshot",
            &[],
            "",
        ),
    ] {
        walk.check(addr, &mut client, case).await;
    }

    let Walk {
        table,
        seen,
        mut failures,
    } = walk;
    for (code, _) in &table {
        let reason = NOT_PRODUCIBLE.iter().find(|(name, _)| name == code);
        if reason.is_none() && !seen.iter().any(|(produced, _)| produced == code) {
            failures.push(format!("{code} is documented but no case produced it"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{} cases over {} documented codes", seen.len(), table.len());
}
