//! Admission of a client connection (WebSocket or SSE), before any upgrade or streaming: the
//! relay is not shutting down, the Origin and token pass the [`Authenticator`], and a
//! connection permit is free. Every refusal is a complete HTTP response with an `error` body.
//!
//! [`Authenticator`]: crate::auth::Authenticator

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::{HeaderMap, Response};
use tidewire_shared::ErrorCode;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::auth::{AuthError, Grant};
use crate::hub::Hub;
use crate::metrics::Transport;
use crate::transport::reset::Reset;
use crate::transport::{error_response, Body};

/// A request refused before any upgrade or streaming: the error code (its HTTP status) and
/// a message for the `error` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Refusal {
    /// A refusal with `code`.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The HTTP answer: the code's status and an `error` JSON body.
    pub(crate) fn into_response(self) -> Response<Body> {
        error_response(self.code, self.message)
    }
}

/// What an admitted connection holds for its whole life.
#[derive(Debug)]
pub(crate) struct Admission {
    /// What the connection may read and write, and until when.
    pub(crate) grant: Grant,
    /// One of `--max-connections` permits; released when the connection's task drops it.
    pub(crate) permit: OwnedSemaphorePermit,
    /// Throw it to end the connection with a TCP reset (a slow consumer).
    pub(crate) reset: Reset,
}

/// Checks the Origin and the token: 403 for a refused Origin (no upgrade happens), 401 with an
/// `error` body for a bad token, 503 once the relay is shutting down.
pub(crate) fn authenticate(
    hub: &Hub,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Grant, Refusal> {
    if hub.token.is_cancelled() {
        return Err(Refusal::new(
            ErrorCode::Unavailable,
            "the relay is shutting down",
        ));
    }
    let result = hub.auth.authenticate(headers, query);
    if result.is_err() {
        hub.metrics.auth_failure();
    }
    match result {
        Ok(grant) => Ok(grant),
        Err(AuthError::Origin(origin)) => Err(Refusal::new(
            ErrorCode::Forbidden,
            format!("origin not allowed: {origin}"),
        )),
        Err(error) => Err(Refusal::new(ErrorCode::Unauthorized, error.to_string())),
    }
}

/// Takes a connection permit, or answers 503 `overloaded` (counted per transport).
pub(crate) fn acquire_permit(
    hub: &Hub,
    transport: Transport,
) -> Result<OwnedSemaphorePermit, Refusal> {
    Arc::clone(&hub.connections)
        .try_acquire_owned()
        .map_err(|_| {
            hub.metrics.connection_refused(transport);
            Refusal::new(
                ErrorCode::Overloaded,
                format!(
                    "the relay is at its connection limit ({}); retry later",
                    hub.config.options.max_connections
                ),
            )
        })
}

/// [`authenticate`] then [`acquire_permit`].
pub(crate) fn admit(
    hub: &Hub,
    headers: &HeaderMap,
    query: Option<&str>,
    reset: Reset,
) -> Result<Admission, Refusal> {
    let grant = authenticate(hub, headers, query)?;
    let permit = acquire_permit(hub, Transport::WebSocket)?;
    Ok(Admission {
        grant,
        permit,
        reset,
    })
}

/// When `grant` expires, as an `Instant`; `None` if it does not (or too far away to matter).
pub(crate) fn expiry(grant: &Grant) -> Option<Instant> {
    let expires_at = UNIX_EPOCH.checked_add(Duration::from_secs(grant.expires_at?))?;
    let left = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now().checked_add(left)
}

/// Whether `grant` has expired (JWT `exp`: expired from that second on).
pub(crate) fn is_expired(grant: &Grant) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    grant.expires_at.is_some_and(|expires_at| now >= expires_at)
}
