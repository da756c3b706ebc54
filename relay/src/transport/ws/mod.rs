//! WebSocket transport (`GET /v1/ws`): admission ([`super::admission`]), the
//! fastwebsockets upgrade, and one task per connection on the hub's tracker that runs a
//! [`Session`](crate::session::Session) over the socket.
//!
//! | module | role |
//! |---|---|
//! | `connection` | the per-connection loop: reads, writes, keepalive, token expiry, shutdown |
//! | `echo` | the same reader and writer as an echo server, for the Autobahn conformance run |
//! | `frame` | client frames decoded from the bytes received so far (sans-IO) |
//! | `reader` | whole messages from frames: no buffer while idle, fragments, the size limit, UTF-8, pings and closes |
//! | `wakes` | whether the socket or the timer woke the task, so a delivery's wake-up polls the session alone |
//! | `writer` | coalesced frame writes under the slow-consumer deadline |
//!
//! What fastwebsockets does here, and how per-connection memory stays small: docs/ARCHITECTURE.md,
//! section "WebSocket implementation".

mod connection;
pub mod echo;
mod frame;

mod reader;
mod wakes;
mod writer;

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use tidewire_shared::{ErrorCode, ServerMessage};

use super::admission::admit;
use super::reset::Reset;
use super::{error_response, full, json_response, Body};
use crate::hub::Hub;

/// Upgrades the request and runs a session over the WebSocket.
///
/// Answers without upgrading: 426 if the request is not a WebSocket upgrade, 400 for a bad
/// handshake (`Sec-WebSocket-Key`/`Version`), 403 for a refused Origin, 401 for a bad token,
/// 503 `overloaded` at `--max-connections` or while shutting down.
pub async fn handle(hub: Arc<Hub>, mut request: Request<Incoming>) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        let body =
            ServerMessage::error(None, ErrorCode::BadMessage, "expected a WebSocket upgrade")
                .encode();
        let mut response = json_response(StatusCode::UPGRADE_REQUIRED, body);
        response
            .headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return response;
    }
    let reset = Reset::of(&request);
    let admission = match admit(&hub, request.headers(), request.uri().query(), reset) {
        Ok(admission) => admission,
        Err(refusal) => return refusal.into_response(),
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(pair) => pair,
        Err(error) => {
            return error_response(
                ErrorCode::BadMessage,
                format!("bad websocket handshake: {error}"),
            );
        }
    };
    hub.tracker
        .spawn(connection::run(Arc::clone(&hub), upgrade, admission));
    response.map(|_| full(Bytes::new()))
}
