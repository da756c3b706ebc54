//! The one table of error codes (in `error` messages and HTTP bodies) and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// Machine-readable error code, sent as a lowercase string (`"bad_message"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The message is not valid JSON or lacks required fields.
    BadMessage,
    /// The `type` names no known message.
    UnknownType,
    /// The message or frame is larger than the relay accepts.
    TooLarge,
    /// The stream name breaks the naming rule.
    BadStream,
    /// The key breaks the key rule.
    BadKey,
    /// The op is not allowed here (for example `message` on a raw channel).
    BadOp,
    /// The `data` is not acceptable (for example a patch that is not an object).
    BadData,
    /// A `since` position or SSE cursor is malformed or impossible.
    BadSince,
    /// A `where` filter is not in the filter language or is over its bounds.
    BadFilter,
    /// No valid credentials (missing, malformed, expired or badly signed token).
    Unauthorized,
    /// The credentials do not allow this stream or operation.
    Forbidden,
    /// The connection publishes faster than its limit.
    RateLimited,
    /// The connection has as many subscriptions as it may.
    TooManySubscriptions,
    /// The stream is not subscribed on this connection.
    NotSubscribed,
    /// The stream does not exist.
    NotFound,
    /// The write id (or `Idempotency-Key`) was used before on this stream for a different
    /// write.
    Conflict,
    /// The relay cannot reach PostgreSQL right now; retry later.
    Unavailable,
    /// The relay is at its connection limit.
    Overloaded,
    /// An internal error; the relay logged the details.
    Internal,
    /// A code this client does not know (sent by a newer relay); the relay itself never sends
    /// it. The request it answers failed all the same.
    Unknown,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BadStream => "bad_stream",
            ErrorCode::BadKey => "bad_key",
            ErrorCode::BadOp => "bad_op",
            ErrorCode::BadData => "bad_data",
            ErrorCode::BadSince => "bad_since",
            ErrorCode::BadFilter => "bad_filter",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The code with wire name `name`; [`ErrorCode::Unknown`] for a name this version does not
    /// know.
    pub fn parse(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|code| code.as_str() == name)
            .unwrap_or(ErrorCode::Unknown)
    }

    /// Every code the relay sends, in the order of the protocol's table.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::TooLarge,
        ErrorCode::BadStream,
        ErrorCode::BadKey,
        ErrorCode::BadOp,
        ErrorCode::BadData,
        ErrorCode::BadSince,
        ErrorCode::BadFilter,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::TooManySubscriptions,
        ErrorCode::NotSubscribed,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::Unavailable,
        ErrorCode::Overloaded,
        ErrorCode::Internal,
    ];

    /// The HTTP status the relay answers with for this code on the HTTP API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadMessage
            | ErrorCode::UnknownType
            | ErrorCode::BadStream
            | ErrorCode::BadKey
            | ErrorCode::BadOp
            | ErrorCode::BadData
            | ErrorCode::BadSince
            | ErrorCode::BadFilter
            | ErrorCode::NotSubscribed => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::TooManySubscriptions => 429,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
            ErrorCode::Unavailable | ErrorCode::Overloaded => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the relay sends, with the reason text it uses.
///
/// Codes below 4000 are the standard ones (RFC 6455); 4000-4999 are Tidewire's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: the client asked to close, or the relay finished a clean close.
    Normal,
    /// 1001: the relay is shutting down; reconnect (to another relay) and resume.
    GoingAway,
    /// 1002: the peer broke the WebSocket protocol.
    ProtocolError,
    /// 1007: a text frame was not valid UTF-8.
    InvalidData,
    /// 1008: a policy was violated (for example a disallowed Origin).
    PolicyViolation,
    /// 1009: a message or frame exceeded the size limit.
    TooBig,
    /// 1011: an internal error.
    InternalError,
    /// 4001: authentication failed; do not retry with the same token.
    Unauthorized,
    /// 4003: the token does not allow what was asked.
    Forbidden,
    /// 4004: the token expired on a live connection; reconnect with a fresh token.
    TokenExpired,
    /// 4008: the client read too slowly and stayed stuck past the deadline.
    Slow,
    /// 4009: no pong within two keepalive intervals.
    KeepaliveTimeout,
    /// 4029: too many messages per second, repeatedly.
    RateLimited,
    /// 4503: the relay is at its connection limit; retry later.
    Overloaded,
}

impl CloseCode {
    /// The numeric close code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidData => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::Unauthorized => 4001,
            CloseCode::Forbidden => 4003,
            CloseCode::TokenExpired => 4004,
            CloseCode::Slow => 4008,
            CloseCode::KeepaliveTimeout => 4009,
            CloseCode::RateLimited => 4029,
            CloseCode::Overloaded => 4503,
        }
    }

    /// The short reason text sent with the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "shutdown",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidData => "invalid utf-8",
            CloseCode::PolicyViolation => "policy violation",
            CloseCode::TooBig => "message too big",
            CloseCode::InternalError => "internal error",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
            CloseCode::TokenExpired => "token expired",
            CloseCode::Slow => "slow consumer",
            CloseCode::KeepaliveTimeout => "keepalive timeout",
            CloseCode::RateLimited => "rate limited",
            CloseCode::Overloaded => "overloaded",
        }
    }

    /// Looks a numeric code up in the table.
    pub fn from_code(code: u16) -> Option<Self> {
        ALL_CLOSE_CODES.iter().copied().find(|c| c.code() == code)
    }
}

/// Every close code, for tables and docs.
pub const ALL_CLOSE_CODES: &[CloseCode] = &[
    CloseCode::Normal,
    CloseCode::GoingAway,
    CloseCode::ProtocolError,
    CloseCode::InvalidData,
    CloseCode::PolicyViolation,
    CloseCode::TooBig,
    CloseCode::InternalError,
    CloseCode::Unauthorized,
    CloseCode::Forbidden,
    CloseCode::TokenExpired,
    CloseCode::Slow,
    CloseCode::KeepaliveTimeout,
    CloseCode::RateLimited,
    CloseCode::Overloaded,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_unique_and_look_up() {
        for code in ALL_CLOSE_CODES {
            assert_eq!(CloseCode::from_code(code.code()), Some(*code));
            assert!(
                code.reason().len() < 123,
                "close reasons must fit a control frame"
            );
        }
        assert_eq!(CloseCode::from_code(4999), None);
    }

    #[test]
    fn error_code_strings_match_serde() {
        let code = ErrorCode::TooManySubscriptions;
        let json = serde_json::to_string(&code).expect("serializes");
        assert_eq!(json, format!("\"{}\"", code.as_str()));
        assert_eq!(ErrorCode::Unauthorized.http_status(), 401);
    }
}
