//! Server-Sent Events transport (`GET /v1/sse?stream=a&stream=b[&since=<cursor>]`).
//!
//! | module | role |
//! |---|---|
//! | `direct` | a connection's first request served on the socket, without hyper |
//! | `request` | the streams and the resume cursor (`Last-Event-ID`, else `since=`) |
//! | `stream` | the per-connection task |
//! | `sink` | where the task's chunks go: the response body, or the socket |
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

pub(crate) mod direct;
mod frame;
mod handoff;
mod request;
mod sink;
mod stream;

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response};
use tidewire_shared::ErrorCode;

use self::request::SseRequest;
use self::sink::Sink;
use super::admission::{acquire_permit, authenticate, Admission, Refusal};
use super::reset::Reset;
use super::{error_response, Body};
use crate::hub::Hub;

/// Answers with an event stream that runs a session, or with an error before streaming.
/// The request's body is not read (an event stream is a `GET`).
pub async fn handle<B>(hub: Arc<Hub>, request: Request<B>) -> Response<Body> {
    let (sse_request, admission) = match admit(&hub, &request, Reset::of(&request)) {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    let (sink, body) = Sink::body();
    hub.tracker
        .spawn(stream::run(Arc::clone(&hub), sse_request, admission, sink));
    let mut response = Response::new(body.boxed());
    stream_headers(response.headers_mut());
    response
}

/// Everything that can refuse an event stream, in order: the token, the request, read access
/// and a connection permit; `reset` is the connection's. The refusal is boxed: it is the rare
/// case.
fn admit<B>(
    hub: &Arc<Hub>,
    request: &Request<B>,
    reset: Reset,
) -> Result<(SseRequest, Admission), Box<Response<Body>>> {
    let headers = request.headers();
    let query = request.uri().query();
    let refuse = |refusal: Refusal| Box::new(refusal.into_response());
    let grant = authenticate(hub, headers, query).map_err(refuse)?;
    let max_streams = hub.config.options.max_subscriptions;
    let sse_request = SseRequest::parse(query, headers, max_streams).map_err(refuse)?;
    if let Some(stream) = sse_request
        .streams
        .iter()
        .find(|stream| !grant.permissions.can_read(stream))
    {
        return Err(Box::new(error_response(
            ErrorCode::Forbidden,
            format!("no read access to {stream}"),
        )));
    }
    let permit = acquire_permit(hub, crate::metrics::Transport::Sse).map_err(refuse)?;
    let admission = Admission {
        grant,
        permit,
        reset,
    };
    Ok((sse_request, admission))
}

/// The headers of an event stream's 200 (CORS aside, which the router adds).
fn stream_headers(headers: &mut HeaderMap) {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}
