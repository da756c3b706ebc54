//! Request bodies of the HTTP API: read under a byte limit (checked against `Content-Length`
//! first, then enforced while the body streams in, so nothing is ever buffered past the
//! limit), within a deadline, and parsed as JSON under the shared decode limits.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::StatusCode;
use serde::de::DeserializeOwned;
use tidewire_shared::{DecodeError, DecodeLimits, ErrorCode};

use super::error::ApiError;

/// Longest time a client may take to send a request body. Headers have their own timeout
/// (`--header-timeout-ms`); this one stops a body trickled byte by byte from holding the
/// connection forever.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the whole body, refusing more than `limit` bytes with 413 `too_large`.
///
/// # Errors
///
/// 413 `too_large` over the limit, 408 `bad_message` past [`BODY_TIMEOUT`], 400
/// `bad_message` if the body cannot be read.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = |size: Option<u64>| {
        let size = size.map_or_else(
            || "more than the limit".to_owned(),
            |size| format!("{size} bytes"),
        );
        ApiError::new(
            ErrorCode::TooLarge,
            format!("the request body is {size}; the limit is {limit} bytes (--max-message-bytes)"),
        )
    };
    if let Some(length) = content_length(headers) {
        if length > u64::try_from(limit).unwrap_or(u64::MAX) {
            return Err(too_large(Some(length)));
        }
    }
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await;
    match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(too_large(None))
        }
        Ok(Err(error)) => Err(ApiError::new(
            ErrorCode::BadMessage,
            format!("the request body could not be read: {error}"),
        )),
        Err(_elapsed) => Err(ApiError::new(
            ErrorCode::BadMessage,
            format!(
                "the request body took longer than {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )
        .status(StatusCode::REQUEST_TIMEOUT)),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

/// Requires a JSON `Content-Type` (`application/json` or `application/*+json`). Besides
/// being honest, this keeps cross-site HTML forms (which cannot send JSON without a CORS
/// preflight) from writing to streams.
///
/// # Errors
///
/// 415 `bad_message` naming the expected type.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match media_type.as_deref() {
        Some("application/json") => Ok(()),
        Some(other) if other.starts_with("application/") && other.ends_with("+json") => Ok(()),
        other => Err(ApiError::new(
            ErrorCode::BadMessage,
            format!(
                "the body must be JSON with content-type application/json (got {})",
                other.unwrap_or("none")
            ),
        )
        .status(StatusCode::UNSUPPORTED_MEDIA_TYPE)),
    }
}

/// Parses `bytes` as `T` after the shared size and depth checks.
///
/// # Errors
///
/// 400 `bad_message` for anything that is not the expected JSON (the message says where),
/// 413 `too_large` over `max_bytes`.
pub(crate) fn parse_json<T: DeserializeOwned>(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<T, ApiError> {
    let limits = DecodeLimits {
        max_bytes,
        ..DecodeLimits::default()
    };
    match tidewire_shared::limits::check(bytes, &limits) {
        Ok(()) => {}
        Err(error @ DecodeError::TooLarge { .. }) => {
            return Err(ApiError::new(ErrorCode::TooLarge, error.to_string()))
        }
        Err(error) => return Err(ApiError::new(ErrorCode::BadMessage, error.to_string())),
    }
    // serde would also read a struct from a JSON array; only objects are accepted.
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            ErrorCode::BadMessage,
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|error| {
        ApiError::new(ErrorCode::BadMessage, format!("invalid JSON body: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(require_json(&headers).is_err());
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(require_json(&headers).is_ok());
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/merge-patch+json"),
        );
        assert!(require_json(&headers).is_ok());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let error = require_json(&headers).expect_err("text is refused");
        assert_eq!(error.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn json_parsing_limits() {
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            #[allow(dead_code)] // only parsed
            key: String,
        }
        assert!(parse_json::<Body>(br#" {"key":"a"}"#, 100).is_ok());
        assert_eq!(
            parse_json::<Body>(br#"["a"]"#, 100)
                .expect_err("array")
                .code,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_json::<Body>(br#"{"key":"#, 100)
                .expect_err("truncated")
                .code,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_json::<Body>(br#"{"key":"aaaa"}"#, 5)
                .expect_err("big")
                .code,
            ErrorCode::TooLarge
        );
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            parse_json::<Body>(deep.as_bytes(), 1000)
                .expect_err("deep")
                .code,
            ErrorCode::BadMessage
        );
    }
}
