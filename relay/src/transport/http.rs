//! The HTTP API: health, readiness, and the stream endpoints under `/v1/streams/`.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/streams/{stream}` | `{"stream","epoch","seq","min_seq","kind","ttl_seconds"?,"expires_at"?}`, 404 if missing |
//! | `PUT /v1/streams/{stream}` | create (201) or update (200) with `{"kind","ttl_seconds"}` |
//! | `DELETE /v1/streams/{stream}` | 204, 404 if missing |
//! | `GET /v1/streams/{stream}/snapshot[?cursor=C][&limit=L]` | one page: `{"stream","epoch","seq","next","records":[{key,seq,data}]}`, `ETag`, `Cache-Control`; 409 for an expired cursor |
//! | `GET /v1/streams/{stream}/events?since=N[&epoch=E][&limit=L]` | `{"stream","epoch","events","next","more","head"}`; 409 `bad_since` + `"resync":true` |
//! | `POST /v1/streams/{stream}/events` | 201 `{"stream","seq"}`; with an `Idempotency-Key` seen before: 200 and `Idempotent-Replayed: true`, or 409 `conflict` |
//!
//! Every request is authenticated ([`Authenticator::authenticate`](crate::auth::Authenticator::authenticate))
//! and checked against the grant's read or write patterns. Errors are the protocol's `error`
//! message with the status of its code (`error::ApiError`). Requests are handled in this
//! order: route (404), method (405), stream name (400), credentials (401/403), raw channel
//! (400), permission (403), then the handler.
//!
//! # Layout
//!
//! - `path`: routes, percent-decoding, query parameters
//! - `body`: bounded body reading and JSON parsing
//! - `error`: `ApiError`
//! - `read`: info, replay, query parameters
//! - `snapshot`: paged, cacheable snapshots
//! - `write`: publish, create/update, drop

mod body;
mod error;
pub(crate) mod path;
mod read;
mod snapshot;
mod write;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, Request, Response, StatusCode};
use tidewire_shared::{ErrorCode, StreamKind, StreamName};

use self::error::ApiError;
use self::path::{parse_route, Resource};
use super::{full, Body};
use crate::auth::{Access, AuthError};
use crate::hub::Hub;
use crate::query::percent_decode;

/// `GET /healthz`: the process is up.
pub fn healthz() -> Response<Body> {
    let mut response = Response::new(full("ok\n"));
    no_store(&mut response);
    response
}

/// `GET /readyz`: PostgreSQL is reachable and the LISTEN connection is active.
pub async fn readyz(hub: &Hub) -> Response<Body> {
    let listening = hub.listener.is_up();
    let queryable = match hub.pool.get().await {
        Ok(client) => client.simple_query("select 1").await.is_ok(),
        Err(_) => false,
    };
    let capture = capture_line(&hub.capture.snapshot());
    let mut response = if listening && queryable {
        Response::new(full(format!("ready\n{capture}")))
    } else {
        let mut response = Response::new(full(format!(
            "not ready: listen={listening} query={queryable}\n{capture}"
        )));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    };
    no_store(&mut response);
    response
}

/// The `/readyz` line about capture: the mode and why, this relay's role, the slot's lag,
/// and why capture halted if it did.
fn capture_line(capture: &crate::pg::capture::CaptureSnapshot) -> String {
    let mut line = format!("capture: {}", capture.reason);
    if capture.logical {
        let role = if capture.sequencer {
            "sequencer"
        } else {
            "standby"
        };
        line.push_str(&format!(
            "; {role}; slot lag {} bytes, {:.3} s",
            capture.lag_bytes,
            capture.lag_millis as f64 / 1000.0
        ));
        if capture.stale_slots > 0 {
            line.push_str(&format!(
                "; {} stale slot(s) named tidewire*",
                capture.stale_slots
            ));
        }
    }
    if let Some(reason) = &capture.halted {
        line.push_str(&format!("; HALTED: {reason}"));
    }
    line.push('\n');
    line
}

fn no_store(response: &mut Response<Body>) {
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
}

/// What a request asks for, once routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Info,
    Put,
    Delete,
    Snapshot,
    Replay,
    Publish,
}

impl Action {
    fn writes(self) -> bool {
        matches!(self, Action::Put | Action::Delete | Action::Publish)
    }
}

/// `/v1/streams/...`.
pub async fn streams(hub: Arc<Hub>, request: Request<Incoming>) -> Response<Body> {
    match dispatch(&hub, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn dispatch(hub: &Hub, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path();
    let Some((encoded_name, resource)) = parse_route(path) else {
        let shown: String = path.chars().take(100).collect();
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no route for {shown}"),
        ));
    };
    let method = request.method();
    let action = match (resource, method) {
        (_, &Method::OPTIONS) => {
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(resource.allow()));
            return Ok(response);
        }
        (Resource::Stream, &Method::GET | &Method::HEAD) => Action::Info,
        (Resource::Stream, &Method::PUT) => Action::Put,
        (Resource::Stream, &Method::DELETE) => Action::Delete,
        (Resource::Snapshot, &Method::GET | &Method::HEAD) => Action::Snapshot,
        (Resource::Events, &Method::GET | &Method::HEAD) => Action::Replay,
        (Resource::Events, &Method::POST) => Action::Publish,
        (resource, method) => return Err(ApiError::method_not_allowed(method, resource.allow())),
    };
    let stream = stream_name(encoded_name)?;
    let access =
        authorize(hub, &request, &stream, action).map_err(|error| error.stream(&stream))?;
    let query = request.uri().query().map(str::to_owned);
    let (parts, body) = request.into_parts();
    let result = match action {
        Action::Info => read::info(hub, &stream).await,
        Action::Snapshot => match read::view_filter(query.as_deref(), &access) {
            Ok(filter) => {
                let public = hub.auth.anonymous().permissions.read_access(&stream) == Access::All;
                snapshot::snapshot(
                    hub,
                    &stream,
                    query.as_deref(),
                    &parts.headers,
                    filter.as_deref(),
                    public,
                )
                .await
            }
            Err(error) => Err(error),
        },
        Action::Replay => match read::view_filter(query.as_deref(), &access) {
            Ok(filter) => read::events(hub, &stream, query.as_deref(), filter.as_deref()).await,
            Err(error) => Err(error),
        },
        Action::Publish => {
            write::publish(hub, &stream, &parts.headers, body, access.filter()).await
        }
        Action::Put => write::put(hub, &stream, &parts.headers, body).await,
        Action::Delete => write::delete(hub, &stream).await,
    };
    result.map_err(|error| match error.stream {
        Some(_) => error,
        None => error.stream(&stream),
    })
}

/// Decodes and validates the stream name of the path.
fn stream_name(encoded: &str) -> Result<StreamName, ApiError> {
    let shown = |text: &str| text.chars().take(80).collect::<String>();
    let name = percent_decode(encoded).map_err(|error| {
        ApiError::new(
            ErrorCode::BadStream,
            format!("invalid stream name {:?}: {error}", shown(encoded)),
        )
    })?;
    StreamName::new(&name).map_err(|error| {
        ApiError::new(
            ErrorCode::BadStream,
            format!("invalid stream name {:?}: {error}", shown(&name)),
        )
    })
}

/// Credentials, then the raw-channel rule, then the grant's rules: the access the request
/// runs with (a filtered grant reads and writes only the records its filter matches; creating
/// or dropping a stream needs an unfiltered one).
fn authorize(
    hub: &Hub,
    request: &Request<Incoming>,
    stream: &StreamName,
    action: Action,
) -> Result<Access, ApiError> {
    let grant = hub
        .auth
        .authenticate(request.headers(), request.uri().query())
        .map_err(|error| {
            hub.metrics.auth_failure();
            match error {
                AuthError::Origin(_) => ApiError::new(ErrorCode::Forbidden, error.to_string()),
                _ => ApiError::new(ErrorCode::Unauthorized, error.to_string()),
            }
        })?;
    if stream.kind() == StreamKind::Raw {
        let message = match action {
            Action::Publish => {
                "raw channels are read-only through the relay; use pg_notify in PostgreSQL"
            }
            Action::Put | Action::Delete => {
                "raw channels are PostgreSQL NOTIFY channels, not streams: they cannot be created or dropped"
            }
            Action::Info | Action::Snapshot | Action::Replay => {
                "raw channels have no snapshot or history; subscribe over /v1/ws or /v1/sse"
            }
        };
        return Err(ApiError::new(
            ErrorCode::BadStream,
            format!("{stream}: {message}"),
        ));
    }
    let access = if action.writes() {
        grant.permissions.write_access(stream)
    } else {
        grant.permissions.read_access(stream)
    };
    let allowed = match action {
        Action::Put | Action::Delete => access == Access::All,
        _ => access.allowed(),
    };
    if !allowed {
        let kind = if action.writes() { "write" } else { "read" };
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("no {kind} access to {stream}"),
        ));
    }
    Ok(access)
}
