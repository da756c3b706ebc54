//! Typed errors of the shared crate: decoding untrusted input and validating names and keys.

use thiserror::Error;

/// Why a stream name was rejected. See [`crate::StreamName`] for the rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("stream name is empty")]
    Empty,
    /// The name is longer than [`crate::stream::MAX_STREAM_NAME_LEN`] bytes.
    #[error("stream name is {0} bytes, the limit is {max}", max = crate::stream::MAX_STREAM_NAME_LEN)]
    TooLong(usize),
    /// The name contains a byte outside the allowed alphabet.
    #[error("stream name has a character outside [A-Za-z0-9_.:/-] at byte {0}")]
    BadCharacter(usize),
    /// The first character is not `[A-Za-z0-9_]`.
    #[error("stream name must start with a letter, digit or underscore")]
    BadStart,
    /// A `raw:` name with nothing after the prefix.
    #[error("raw channel name is empty after the `raw:` prefix")]
    EmptyChannel,
    /// A `raw:` name whose channel uses the prefix reserved for durable streams.
    #[error("raw channel names may not start with the reserved `tw:` prefix")]
    ReservedChannel,
}

impl NameError {
    /// A short stable name of the variant (`"too_long"`, ...), used by the test vectors.
    pub fn kind(&self) -> &'static str {
        match self {
            NameError::Empty => "empty",
            NameError::TooLong(_) => "too_long",
            NameError::BadCharacter(_) => "bad_character",
            NameError::BadStart => "bad_start",
            NameError::EmptyChannel => "empty_channel",
            NameError::ReservedChannel => "reserved_channel",
        }
    }
}

/// Why a record key was rejected. See [`crate::event::validate_key`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    #[error("key is empty")]
    Empty,
    /// The key is longer than [`crate::event::MAX_KEY_LEN`] bytes.
    #[error("key is {0} bytes, the limit is {max}", max = crate::event::MAX_KEY_LEN)]
    TooLong(usize),
    /// The key contains a NUL character, which PostgreSQL text cannot store.
    #[error("key contains a NUL character")]
    Nul,
}

/// Why decoding untrusted bytes failed. Every decoder in this crate returns this type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than the configured limit.
    #[error("message is {size} bytes, the limit is {limit}")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The input nests arrays or objects deeper than the configured limit.
    #[error("message nests deeper than {limit} levels")]
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// The input is not valid UTF-8 JSON, or does not have the message's shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The `type` (or `t`) tag names no known message.
    #[error("unknown message type: {0}")]
    UnknownType(String),
    /// A stream name inside the message is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A key inside the message is invalid.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A field has a value outside its allowed range.
    #[error("invalid field `{field}`: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// An SSE cursor (`Last-Event-ID`) is not in the documented format.
    #[error("invalid cursor: {0}")]
    Cursor(String),
    /// A `where` filter is not in the filter language or is over its bounds.
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterError),
}

impl DecodeError {
    /// A short stable name of the variant (`"malformed"`, `"too_large"`, ...), used by the test
    /// vectors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::TooDeep { .. } => "too_deep",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::Name(_) => "name",
            DecodeError::Key(_) => "key",
            DecodeError::Invalid { .. } => "invalid",
            DecodeError::Cursor(_) => "cursor",
            DecodeError::Filter(_) => "filter",
        }
    }

    /// The protocol error code a relay answers this error with.
    pub fn error_code(&self) -> crate::codes::ErrorCode {
        use crate::codes::ErrorCode;
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::TooDeep { .. } | DecodeError::Malformed(_) => ErrorCode::BadMessage,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::Name(_) => ErrorCode::BadStream,
            DecodeError::Key(_) => ErrorCode::BadKey,
            DecodeError::Invalid { field: "data", .. } => ErrorCode::BadData,
            DecodeError::Invalid { .. } => ErrorCode::BadMessage,
            DecodeError::Cursor(_) => ErrorCode::BadSince,
            DecodeError::Filter(_) => ErrorCode::BadFilter,
        }
    }

    /// Turns a `serde_json` error into [`DecodeError::Malformed`].
    pub(crate) fn from_json(error: &serde_json::Error) -> Self {
        DecodeError::Malformed(error.to_string())
    }
}
