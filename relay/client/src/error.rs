//! [`ClientError`]: everything a [`Client`](super::Client) call can fail with, and which of
//! those failures are worth retrying.

use std::time::Duration;

use tidewire_shared::{DecodeError, ErrorCode, NameError, StreamName};

/// An `error` answer from the relay: its machine-readable code and its explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServerError {
    /// The code from the relay's error table.
    pub code: ErrorCode,
    /// The relay's human-readable explanation.
    pub message: String,
}

impl ServerError {
    /// Whether the same request may succeed later (the relay was unavailable, overloaded,
    /// rate limiting, or failed internally), as opposed to a request that is wrong or not
    /// allowed and will fail again.
    pub fn is_retryable(&self) -> bool {
        is_retryable_code(self.code)
    }
}

/// Whether an error code describes a transient condition.
pub(crate) fn is_retryable_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unavailable
            | ErrorCode::Overloaded
            | ErrorCode::RateLimited
            | ErrorCode::Internal
    )
}

/// Why a client operation failed.
///
/// # Writes whose outcome is unknown
///
/// A durable write in flight when the connection drops is sent again under its write id
/// (it commits once), so these errors are left for the cases the client cannot settle:
/// [`ClientError::Timeout`] (no answer within the request timeout) and
/// [`ClientError::ConnectionLost`] (an ephemeral message in flight when the connection
/// dropped). Then the client never saw the relay's answer: the write may or may not have
/// committed. Both are [retryable](ClientError::is_retryable), and
/// [`ClientError::outcome_unknown`] is true for them; the caller decides whether to retry
/// (a new call is a new write with a new write id: safe for an `upsert` or `delete` of a
/// whole value, which are idempotent in effect; a retried `patch` or `message` may apply
/// twice).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The [`ClientConfig`](super::ClientConfig) is unusable (bad URL, unsupported scheme).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// A stream name breaks the naming rule.
    #[error("invalid stream name: {0}")]
    StreamName(#[from] NameError),
    /// A request breaks a protocol rule (key, op id, patch shape, NUL in data); it was not sent.
    #[error("invalid request: {0}")]
    Invalid(#[from] DecodeError),
    /// The relay could not be reached or the WebSocket handshake failed.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The relay refused the connection for good (HTTP 401/403 on the upgrade, or a close
    /// code that forbids reconnecting); the client stops.
    #[error("the relay refused the connection: {reason}")]
    Refused {
        /// The HTTP status or close code and its meaning.
        reason: String,
    },
    /// The connection dropped while the request was in flight (an ephemeral message: durable
    /// writes are sent again instead). The message may or may not have been sent. Retryable.
    #[error("connection lost before the relay answered; the write may or may not have committed")]
    ConnectionLost,
    /// No answer within the configured request timeout. For a publish the write may or may
    /// not have committed. Retryable.
    #[error("no answer within {0:?}; the write may or may not have committed")]
    Timeout(Duration),
    /// The relay answered with an `error` message.
    #[error("the relay answered {0}")]
    Server(#[from] ServerError),
    /// The client already has a subscription (or live collection) on this stream.
    #[error("already subscribed to {0} on this client; drop the other subscription first")]
    AlreadySubscribed(StreamName),
    /// The client was closed (or gave up reconnecting); no request can be sent any more.
    #[error("the client is closed")]
    Closed,
    /// An HTTP API request failed at the transport level.
    #[error("http request failed: {0}")]
    Http(String),
    /// The HTTP API answered with a status that carries no `error` body.
    #[error("http status {status}: {body}")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The relay sent something this client cannot decode.
    #[error("malformed response: {0}")]
    Malformed(String),
}

impl ClientError {
    /// Whether repeating the request later may succeed: lost connections, timeouts,
    /// connection failures, and relay errors with a transient code
    /// ([`ErrorCode::Unavailable`], [`ErrorCode::Overloaded`], [`ErrorCode::RateLimited`],
    /// [`ErrorCode::Internal`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::ConnectionLost
            | ClientError::Timeout(_)
            | ClientError::Connect { .. }
            | ClientError::Http(_) => true,
            ClientError::Server(error) => error.is_retryable(),
            ClientError::HttpStatus { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// True when a write may have committed although no acknowledgement arrived
    /// ([`ClientError::ConnectionLost`] and [`ClientError::Timeout`]).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ClientError::ConnectionLost | ClientError::Timeout(_))
    }

    /// The relay's error code, when the relay answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(error) => Some(error.code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        let unavailable = ClientError::Server(ServerError {
            code: ErrorCode::Unavailable,
            message: "down".into(),
        });
        let forbidden = ClientError::Server(ServerError {
            code: ErrorCode::Forbidden,
            message: "no".into(),
        });
        assert!(unavailable.is_retryable());
        assert!(!forbidden.is_retryable());
        assert_eq!(forbidden.code(), Some(ErrorCode::Forbidden));
        assert!(ClientError::ConnectionLost.is_retryable());
        assert!(ClientError::ConnectionLost.outcome_unknown());
        assert!(ClientError::Timeout(Duration::from_secs(1)).outcome_unknown());
        assert!(!ClientError::Closed.is_retryable());
        assert!(!unavailable.outcome_unknown());
    }
}
