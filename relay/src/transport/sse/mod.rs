//! Server-Sent Events transport (`GET /v1/sse?stream=a&stream=b[&since=<cursor>]`).
//!
//! | module | role |
//! |---|---|
//! | `request` | the streams and the resume cursor (`Last-Event-ID`, else `since=`) |
//! | `stream` | the per-connection task and the response body |
//! | `handoff` | the one-slot handoff of chunks from the task to the body |
//! | `frame` | byte-level SSE framing (injection-proof) |
//!
//! # Status codes
//!
//! Everything that can be refused is refused *before* the stream starts, with a JSON `error`
//! body: 400 `bad_stream` (no `stream`, a bad name) or `bad_since` (a cursor that does not
//! decode), 401 `unauthorized`, 403 `forbidden` (a disallowed Origin, or a stream the grant
//! may not read), 429 `too_many_subscriptions`, 503 `overloaded` (`--max-connections`) or
//! `unavailable` (shutting down). A native browser `EventSource` treats any non-200 answer as
//! final and never reconnects, which is why the `tidewire` client owns reconnection. Once a
//! 200 stream ends (shutdown after an `advisory` `shutdown` event, a `close` event, a slow
//! reader), a native `EventSource` reconnects after `retry:` with its `Last-Event-ID`.
//!
//! CORS headers are added by the router (`auth::cors`), not here.

mod frame;
mod handoff;
mod request;
mod stream;

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response};
use tidewire_shared::ErrorCode;

use self::request::SseRequest;
use super::admission::{acquire_permit, authenticate, Admission};
use super::reset::Reset;
use super::{error_response, Body};
use crate::hub::Hub;

/// Answers with an event stream that runs a session, or with an error before streaming.
pub async fn handle(hub: Arc<Hub>, request: Request<Incoming>) -> Response<Body> {
    let headers = request.headers();
    let query = request.uri().query();
    let grant = match authenticate(&hub, headers, query) {
        Ok(grant) => grant,
        Err(refusal) => return refusal.into_response(),
    };
    let max_streams = hub.config.options.max_subscriptions;
    let sse_request = match SseRequest::parse(query, headers, max_streams) {
        Ok(sse_request) => sse_request,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(stream) = sse_request
        .streams
        .iter()
        .find(|stream| !grant.permissions.can_read(stream))
    {
        return error_response(ErrorCode::Forbidden, format!("no read access to {stream}"));
    }
    let permit = match acquire_permit(&hub, crate::metrics::Transport::Sse) {
        Ok(permit) => permit,
        Err(refusal) => return refusal.into_response(),
    };
    let (sender, body) = stream::channel();
    let admission = Admission {
        grant,
        permit,
        reset: Reset::of(&request),
    };
    hub.tracker.spawn(stream::run(
        Arc::clone(&hub),
        sse_request,
        admission,
        sender,
    ));
    let mut response = Response::new(body.boxed());
    let response_headers = response.headers_mut();
    response_headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response_headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response_headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
