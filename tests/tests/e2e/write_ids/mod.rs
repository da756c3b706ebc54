//! Exactly-once writes end to end: a write carrying a write id (a WebSocket publish's
//! `write_id`, an HTTP `Idempotency-Key`) commits once per stream, and every resend is answered
//! with the seq it committed at. One file per angle, sharing the helpers here.
//!
//! | module | what |
//! |---|---|
//! | `sql` | `tidewire.publish_once` from SQL: replay, conflict, messages, drop, concurrent duplicates |
//! | `ws` | WebSocket resends across connections, `conflict`, other streams, bad write ids |
//! | `http` | `Idempotency-Key`: 201, replayed 200, 409, 400, CORS, a filtered writer's replay |
//! | `window` | `--write-id-window-ms`: a forgotten write id commits again |
//! | `crash` | the relay process killed between commit and ack, 100 times |

mod crash;
mod http;
mod sql;
mod window;
mod ws;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::http_api::{try_exchange, Reply};
use crate::transport::client::{WsClient, WsItem};

/// A WebSocket `publish` with op id `id`, and `write_id` when given.
pub(crate) fn publish_message(
    id: &str,
    stream: &str,
    write: &Value,
    write_id: Option<&str>,
) -> Value {
    let mut message = write.clone();
    message["type"] = json!("publish");
    message["id"] = json!(id);
    message["stream"] = json!(stream);
    if let Some(write_id) = write_id {
        message["write_id"] = json!(write_id);
    }
    message
}

/// The next `ack` or `error` on `ws` (events, presence and pings are skipped).
pub(crate) async fn answer(ws: &mut WsClient) -> Value {
    loop {
        let message = ws.json().await;
        if message["type"] == "ack" || message["type"] == "error" {
            return message;
        }
    }
}

/// Publishes `write` over `ws` and returns the relay's answer.
pub(crate) async fn ws_publish(
    ws: &mut WsClient,
    id: &str,
    stream: &str,
    write: &Value,
    write_id: Option<&str>,
) -> Value {
    ws.send(publish_message(id, stream, write, write_id)).await;
    answer(ws).await
}

/// `POST /v1/streams/{stream}/events` with `write` as the body and `headers` (an
/// `Idempotency-Key`, a token); `Err` when no answer came (the relay died).
pub(crate) async fn try_post(
    addr: SocketAddr,
    stream: &str,
    write: &Value,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut builder = Request::post(format!("/v1/streams/{stream}/events"))
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::from(write.to_string())))
        .expect("a valid request");
    try_exchange(addr, request).await
}

/// [`try_post`] to a relay that answers.
pub(crate) async fn post(
    addr: SocketAddr,
    stream: &str,
    write: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    try_post(addr, stream, write, headers)
        .await
        .unwrap_or_else(|error| panic!("no answer to the publish: {error}"))
}

/// The seq `write_id` committed at on `stream`, per `tidewire.writes`.
pub(crate) async fn recorded(pg: &Client, stream: &str, write_id: &str) -> Option<i64> {
    pg.query_opt(
        "select seq from tidewire.writes where stream = $1 and write_id = $2",
        &[&stream, &write_id],
    )
    .await
    .expect("read tidewire.writes")
    .map(|row| row.get(0))
}

/// Whether `item` is the end of a connection whose relay died (no close frame, or any close).
pub(crate) fn is_gone(item: Option<&WsItem>) -> bool {
    matches!(item, Some(WsItem::Gone(_) | WsItem::Close(..)))
}
