//! [`ApiError`]: every refusal of the HTTP API, rendered as the protocol's `error` message
//! with the HTTP status of its code (or an explicit one: 405, 408, 409).

use hyper::header::{HeaderValue, ALLOW, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tidewire_shared::{ErrorCode, ServerMessage, StreamName};

use crate::pg::outbox::{Head, OutboxError};
use crate::transport::{json_response, Body};

/// A failed HTTP API request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct ApiError {
    /// The response status; by default the code's [`ErrorCode::http_status`].
    pub(crate) status: StatusCode,
    /// The machine-readable code.
    pub(crate) code: ErrorCode,
    /// The human-readable explanation.
    pub(crate) message: String,
    /// The stream concerned, when the request named a valid one.
    pub(crate) stream: Option<StreamName>,
    /// Set on a resync answer (409): the stream's current head, so that the client knows
    /// where the snapshot it must take will start.
    pub(crate) resync: Option<Head>,
    /// The `Allow` header of a 405.
    pub(crate) allow: Option<&'static str>,
}

impl ApiError {
    /// An error with the status of `code`.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
            stream: None,
            resync: None,
            allow: None,
        }
    }

    /// 405 for a method the resource does not answer.
    pub(crate) fn method_not_allowed(method: &hyper::Method, allow: &'static str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            allow: Some(allow),
            ..Self::new(
                ErrorCode::BadMessage,
                format!("method {method} is not allowed here; allowed: {allow}"),
            )
        }
    }

    /// 409 `bad_since` with `"resync": true`: the client's position cannot be resumed and it
    /// must take a snapshot.
    pub(crate) fn resync(stream: &StreamName, head: Head, reason: &str) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            resync: Some(head),
            ..Self::new(
                ErrorCode::BadSince,
                format!("{reason}; take a snapshot (GET /v1/streams/{stream}/snapshot) and continue from its seq"),
            )
            .stream(stream)
        }
    }

    /// The error of a failed PostgreSQL call: the same answers as a WebSocket publish
    /// (`session::publish_error`).
    pub(crate) fn outbox(error: &OutboxError) -> Self {
        let (code, message) = crate::session::publish_error(error);
        Self::new(code, message)
    }

    /// Names the stream in the body.
    #[must_use]
    pub(crate) fn stream(mut self, stream: &StreamName) -> Self {
        self.stream = Some(stream.clone());
        self
    }

    /// Overrides the status.
    #[must_use]
    pub(crate) fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The JSON response.
    pub(crate) fn into_response(self) -> Response<Body> {
        let message: ServerMessage = ServerMessage::Error {
            id: None,
            stream: self.stream.map(|stream| stream.as_str().to_owned()),
            code: self.code,
            message: self.message,
        };
        let mut body = serde_json::to_value(&message).unwrap_or(Value::Null);
        if let (Some(head), Value::Object(fields)) = (self.resync, &mut body) {
            fields.insert("resync".into(), Value::Bool(true));
            fields.insert("epoch".into(), head.epoch.into());
            fields.insert("seq".into(), head.seq.into());
        }
        let mut response = json_response(self.status, body.to_string());
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tidewire\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response<Body>) -> Value {
        use http_body_util::BodyExt;
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json body")
    }

    #[tokio::test]
    async fn resync_body_and_status() {
        let stream = StreamName::new("todos").expect("valid");
        let head = Head {
            epoch: 7,
            seq: 42,
            min_seq: 10,
            prior_from: 0,
            asof_from: 0,
        };
        let response = ApiError::resync(&stream, head, "your position is too old").into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let body = body_json(response).await;
        assert_eq!(body["type"], "error");
        assert_eq!(body["code"], "bad_since");
        assert_eq!(body["resync"], true);
        assert_eq!(body["stream"], "todos");
        assert_eq!(
            (body["epoch"].as_u64(), body["seq"].as_u64()),
            (Some(7), Some(42))
        );
    }

    #[tokio::test]
    async fn status_follows_the_code_and_allow_is_set() {
        let response = ApiError::new(ErrorCode::TooLarge, "big").into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let response = ApiError::method_not_allowed(&hyper::Method::PATCH, "GET").into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET");
        let response = ApiError::new(ErrorCode::Unauthorized, "no").into_response();
        assert!(response.headers().contains_key(WWW_AUTHENTICATE));
        assert_eq!(body_json(response).await["code"], "unauthorized");
    }
}
