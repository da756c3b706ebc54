//! Transports: how clients reach a [`Session`](crate::session::Session) or the HTTP API.
//! Framing only; the protocol lives in the session.
//!
//! | module | route |
//! |---|---|
//! | [`ws`] | `GET /v1/ws` |
//! | [`sse`] | `GET /v1/sse` |
//! | [`http`] | `/v1/streams/...`, `/healthz`, `/readyz` |
//! | [`scrape`] | `GET /metrics` |
//! | [`preflight`] | `OPTIONS` with an `Origin` (CORS) |
//! | [`static_files`] | `GET /...` from `--static-dir` |
//! | [`admission`] | (WebSocket and SSE) connection limit, Origin, token, PostgreSQL up |
//! | [`reset`] | (every socket) the slow-consumer reset switch |

pub(crate) mod admission;
pub mod http;
pub mod preflight;
pub mod reset;
pub mod scrape;
pub mod sse;
pub(crate) mod stall;
pub mod static_files;
pub mod ws;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};
use tidewire_shared::{ErrorCode, ServerMessage};

/// The response body type of every route.
pub type Body = BoxBody<Bytes, Infallible>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A JSON response.
pub fn json_response(status: StatusCode, json: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(json));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An `error` message as a JSON response, with the status of its code.
pub fn error_response(code: ErrorCode, message: impl Into<String>) -> Response<Body> {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, ServerMessage::error(None, code, message).encode())
}
