//! Errors handed to JavaScript: always `Error` objects with a string `code`, never thrown
//! strings or panics.
//!
//! Every failure the application can see, synchronous (a bad argument) or asynchronous (a
//! rejected write), becomes a `TidewireError`: a plain `Error` whose `name` is
//! `"TidewireError"` and whose `code` is one of the lowercase codes documented in the README.

use js_sys::Reflect;
use tidewire_shared::DecodeError;
use wasm_bindgen::JsValue;

/// A failure of a client operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// The stream name breaks the naming rule.
    #[error("invalid stream name \"{stream}\": {reason}")]
    BadStream {
        /// The name given (at most 80 characters of it).
        stream: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The relay would refuse this write or presence state.
    #[error("{message}")]
    Invalid {
        /// The protocol error code (`bad_key`, `bad_data`, ...).
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// A collection's filter is not a filter the relay accepts.
    #[error("{0}")]
    BadFilter(String),
    /// An argument has the wrong type or shape.
    #[error("{0}")]
    Argument(String),
    /// As many writes as the client holds are unanswered.
    #[error("{0} writes are waiting for the relay's answer, the most this client holds (maxPendingWrites)")]
    QueueFull(usize),
    /// A value could not be converted to or from JSON.
    #[error("value is not JSON-serializable: {0}")]
    NotJson(String),
}

impl ClientError {
    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Closed => "closed",
            ClientError::BadStream { .. } => "bad_stream",
            ClientError::Invalid { code, .. } => code,
            ClientError::BadFilter(_) => "bad_filter",
            ClientError::Argument(_) => "bad_argument",
            ClientError::NotJson(_) => "bad_data",
            ClientError::QueueFull(_) => "queue_full",
        }
    }
}

impl From<DecodeError> for ClientError {
    fn from(error: DecodeError) -> Self {
        ClientError::Invalid {
            code: error.error_code().as_str(),
            message: error.to_string(),
        }
    }
}

/// Builds the JavaScript error: `Object.assign(new Error(message), { name, code })`.
pub(crate) fn js_error(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    error.set_name("TidewireError");
    // Setting a property on a fresh Error object cannot fail.
    let _ = Reflect::set(&error, &JsValue::from_str("code"), &JsValue::from_str(code));
    error.into()
}

impl From<ClientError> for JsValue {
    fn from(error: ClientError) -> Self {
        js_error(error.code(), &error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_protocol_codes() {
        let decode = DecodeError::Invalid {
            field: "key",
            reason: "empty".into(),
        };
        let error = ClientError::from(decode);
        assert!(!error.code().is_empty());
        assert_eq!(ClientError::Closed.code(), "closed");
        assert_eq!(ClientError::Closed.to_string(), "the client is closed");
    }
}
