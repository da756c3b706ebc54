//! The answer to a client message the relay cannot accept: the most specific error code, and
//! the request it answers (`id`, `stream`) whenever those can be read from the bytes, so a
//! client with many subscriptions and writes in flight knows which one failed.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::client::{check_op_id, decode_client, ClientMessage, CLIENT_TYPES};
use super::server::ServerMessage;
use crate::codes::ErrorCode;
use crate::error::DecodeError;
use crate::event::{Op, Position};
use crate::limits::DecodeLimits;
use crate::stream::StreamName;

/// Longest `stream` value echoed back in a refusal, in bytes. Longer than any valid name
/// (60 bytes) so a client can match a refused name it sent, yet small enough that a hostile
/// peer cannot make the relay echo a megabyte.
pub const MAX_ECHOED_STREAM_LEN: usize = 256;

/// Why a client message was refused, and which request it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The publish's operation id, when the message is a publish with a readable id.
    pub id: Option<String>,
    /// The `stream` field as the client sent it (possibly an invalid name), when readable.
    pub stream: Option<String>,
    /// The protocol error code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl Refusal {
    /// Builds the refusal of `input`, which failed to decode with `error`.
    ///
    /// The code is refined when the message's `type` names a known message: a `stream` that
    /// breaks the naming rule is `bad_stream`, an unusable `since` of a subscribe is
    /// `bad_since`, an unknown `op` of a publish is `bad_op`. Limits (`too_large`) are never
    /// parsed past, and nothing here panics, whatever the input.
    pub fn of(input: &[u8], error: &DecodeError) -> Self {
        let mut refusal = Refusal {
            id: None,
            stream: None,
            code: error.error_code(),
            message: error.to_string(),
        };
        if matches!(
            error,
            DecodeError::TooLarge { .. }
                | DecodeError::TooDeep { .. }
                | DecodeError::UnknownType(_)
        ) {
            return refusal;
        }
        // The input is within the size and depth limits (checked before `error` was found).
        let Ok(object) = serde_json::from_slice::<Map<String, Value>>(input) else {
            return refusal;
        };
        let Some(kind) = object.get("type").and_then(Value::as_str) else {
            return refusal;
        };
        if !CLIENT_TYPES.contains(&kind) {
            return refusal;
        }
        if kind == "publish" {
            refusal.id = object
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| check_op_id(id).is_ok())
                .map(str::to_owned);
        }
        if let Some(name) = object
            .get("stream")
            .and_then(Value::as_str)
            .filter(|name| name.len() <= MAX_ECHOED_STREAM_LEN)
        {
            refusal.stream = Some(name.to_owned());
            if let Err(error) = StreamName::new(name) {
                refusal.code = ErrorCode::BadStream;
                refusal.message = error.to_string();
                return refusal;
            }
        }
        if kind == "subscribe" {
            if let Some(since) = object.get("since").filter(|since| !since.is_null()) {
                if Position::deserialize(since).is_err() {
                    // Not the value itself: it may be kilobytes of garbage.
                    refusal.code = ErrorCode::BadSince;
                    refusal.message =
                        "invalid since: expected {\"epoch\":N,\"seq\":N} of unsigned integers"
                            .into();
                }
            }
        }
        if kind == "publish" {
            if let Some(op) = object.get("op") {
                if Op::deserialize(op).is_err() {
                    refusal.code = ErrorCode::BadOp;
                    refusal.message =
                        "invalid op: expected one of upsert, delete, patch, message".into();
                }
            }
        }
        refusal
    }

    /// The `error` message that carries this refusal.
    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::Error {
            id: self.id.clone(),
            stream: self.stream.clone(),
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Decodes one client message, or says how to refuse it ([`Refusal::of`]).
///
/// # Errors
///
/// The [`Refusal`] to send back; never panics, whatever the input.
///
/// # Examples
///
/// ```
/// use tidewire_shared::message::decode_or_refuse;
/// use tidewire_shared::{DecodeLimits, ErrorCode};
/// let refusal = decode_or_refuse(br#"{"type":"subscribe","stream":"bad name"}"#, &DecodeLimits::default())
///     .expect_err("a space breaks the naming rule");
/// assert_eq!((refusal.code, refusal.stream.as_deref()), (ErrorCode::BadStream, Some("bad name")));
/// ```
pub fn decode_or_refuse(input: &[u8], limits: &DecodeLimits) -> Result<ClientMessage, Refusal> {
    decode_client(input, limits).map_err(|error| Refusal::of(input, &error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(text: &str) -> Refusal {
        decode_or_refuse(text.as_bytes(), &DecodeLimits::default()).expect_err("refused")
    }

    #[test]
    fn a_bad_stream_name_is_bad_stream_and_named() {
        let refusal = refuse(r#"{"type":"subscribe","stream":"bad name"}"#);
        assert_eq!(refusal.code, ErrorCode::BadStream);
        assert_eq!(refusal.stream.as_deref(), Some("bad name"));
        let refusal = refuse(r#"{"type":"publish","id":"w1","stream":"","key":"k","op":"upsert"}"#);
        assert_eq!(
            (
                refusal.code,
                refusal.id.as_deref(),
                refusal.stream.as_deref()
            ),
            (ErrorCode::BadStream, Some("w1"), Some(""))
        );
    }

    #[test]
    fn an_unusable_since_is_bad_since() {
        for since in [
            r#"{"epoch":-1,"seq":0}"#,
            r#"{"epoch":1}"#,
            r#""7:3""#,
            r#"{"epoch":1,"seq":1e30}"#,
        ] {
            let refusal = refuse(&format!(
                r#"{{"type":"subscribe","stream":"todos","since":{since}}}"#
            ));
            assert_eq!(refusal.code, ErrorCode::BadSince, "since {since}");
            assert_eq!(refusal.stream.as_deref(), Some("todos"));
        }
    }

    #[test]
    fn publish_refusals_carry_the_id() {
        let refusal = refuse(r#"{"type":"publish","id":"w2","stream":"s","key":"k","op":"zap"}"#);
        assert_eq!(
            (refusal.code, refusal.id.as_deref()),
            (ErrorCode::BadOp, Some("w2"))
        );
        let refusal = refuse(r#"{"type":"publish","id":"w3","stream":"s","key":"","op":"upsert"}"#);
        assert_eq!(
            (
                refusal.code,
                refusal.id.as_deref(),
                refusal.stream.as_deref()
            ),
            (ErrorCode::BadKey, Some("w3"), Some("s"))
        );
        let refusal = refuse(
            r#"{"type":"publish","id":"w4","stream":"s","key":"k","op":"patch","data":[1]}"#,
        );
        assert_eq!(
            (refusal.code, refusal.id.as_deref()),
            (ErrorCode::BadData, Some("w4"))
        );
    }

    #[test]
    fn unreadable_messages_stay_generic() {
        for (text, code) in [
            ("not json", ErrorCode::BadMessage),
            ("[]", ErrorCode::BadMessage),
            (r#"{"stream":"bad name"}"#, ErrorCode::BadMessage),
            (
                r#"{"type":"explode","stream":"bad name"}"#,
                ErrorCode::UnknownType,
            ),
            (r#"{"type":"subscribe"}"#, ErrorCode::BadMessage),
        ] {
            let refusal = refuse(text);
            assert_eq!(refusal.code, code, "{text}");
            assert_eq!(refusal.stream, None, "{text}");
        }
    }

    #[test]
    fn long_names_are_not_echoed() {
        let name = "x".repeat(MAX_ECHOED_STREAM_LEN + 1);
        let refusal = refuse(&format!(r#"{{"type":"subscribe","stream":"{name}"}}"#));
        assert_eq!(refusal.stream, None);
        let name = "x".repeat(MAX_ECHOED_STREAM_LEN);
        let refusal = refuse(&format!(r#"{{"type":"subscribe","stream":"{name}"}}"#));
        assert_eq!(
            (refusal.code, refusal.stream.as_deref()),
            (ErrorCode::BadStream, Some(name.as_str()))
        );
    }
}
