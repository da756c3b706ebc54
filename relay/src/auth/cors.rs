//! CORS for the HTTP API and SSE: answers for allowed origins only (the
//! [`OriginPolicy`](super::OriginPolicy) of `--allowed-origins`), and the decision on an
//! `OPTIONS` preflight (the transport writes the answer). The router calls these.
//!
//! Wiring (in `server::route`):
//!
//! ```text
//! let request_headers = request.headers().clone();      // before the request is moved
//! let cors_hub = Arc::clone(&hub);                       // handlers take `hub` by value
//! let mut response = match (request.method(), path.as_str()) {
//!     // CORS preflights (they carry Origin); a plain OPTIONS still reaches the HTTP API's
//!     // own per-resource `Allow` answer.
//!     (&Method::OPTIONS, _) if request_headers.contains_key(ORIGIN) => {
//!         transport::preflight::respond(cors_hub.auth.preflight(&request_headers))
//!     }
//!     ...                                                // every other route as today
//! };
//! cors_hub.auth.apply_cors(&request_headers, response.headers_mut());
//! ```
//!
//! Credentials (cookies) are never allowed: tokens travel in `Authorization` or the query,
//! so `Access-Control-Allow-Credentials` is not sent and the origin is echoed rather than `*`.

use hyper::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, VARY,
};
use hyper::http::HeaderValue;
use hyper::HeaderMap;

use super::OriginPolicy;

/// Methods allowed cross-origin.
pub const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";

/// Request headers allowed cross-origin (`Last-Event-ID` for EventSource resumes,
/// `Idempotency-Key` for exactly-once publishes).
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID, Idempotency-Key";

/// Response headers a cross-origin script may read besides the safelisted ones
/// (`Idempotent-Replayed` on a publish answered from its `Idempotency-Key`).
pub const EXPOSE_HEADERS: &str = "Idempotent-Replayed";

/// How long browsers may cache a preflight answer, in seconds.
pub const MAX_AGE_SECS: u32 = 600;

/// The CORS headers for a response to a request from an allowed origin:
/// `Access-Control-Allow-Origin` (the request's origin, echoed), `Vary: Origin`,
/// `Access-Control-Allow-Headers`, `Access-Control-Allow-Methods` and
/// `Access-Control-Expose-Headers`. `None` if the request has no `Origin` (not a CORS
/// request) or its origin is not allowed.
pub fn cors_headers(policy: &OriginPolicy, request_headers: &HeaderMap) -> Option<HeaderMap> {
    let origin = policy.check(request_headers).ok()??;
    let mut headers = HeaderMap::with_capacity(5);
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    Some(headers)
}

/// Adds the CORS headers to `response_headers` when the origin is allowed, and always
/// `Vary: Origin` (so a cache never serves one origin's answer to another).
pub fn apply(policy: &OriginPolicy, request_headers: &HeaderMap, response_headers: &mut HeaderMap) {
    let vary_origin = response_headers.get_all(VARY).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|text| text.to_ascii_lowercase().contains("origin"))
    });
    if !vary_origin {
        response_headers.append(VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(cors) = cors_headers(policy, request_headers) {
        for (name, value) in &cors {
            if name != VARY {
                response_headers.insert(name, value.clone());
            }
        }
    }
}

/// What an `OPTIONS` request on any path gets (the transport writes the answer, always with
/// `Vary: Origin`).
#[derive(Debug, Clone, PartialEq)]
pub enum Preflight {
    /// An allowed origin's CORS preflight: 204 with these headers (the CORS headers and
    /// `Access-Control-Max-Age`).
    Allowed(HeaderMap),
    /// No `Origin` (a plain `OPTIONS`): 204 with `Allow` ([`ALLOW_METHODS`]).
    Plain,
    /// A disallowed origin: 403 with an `error` body (code `forbidden`) and no CORS headers,
    /// so the browser blocks the real request. The text says why.
    Refused(String),
}

/// Decides the answer to an `OPTIONS` request.
pub fn preflight(policy: &OriginPolicy, request_headers: &HeaderMap) -> Preflight {
    match policy.check(request_headers) {
        Ok(Some(_)) => {
            let mut headers = cors_headers(policy, request_headers).unwrap_or_default();
            headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECS));
            Preflight::Allowed(headers)
        }
        Ok(None) => Preflight::Plain,
        Err(error) => Preflight::Refused(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::{CONTENT_TYPE, ORIGIN};

    use super::*;

    fn request(origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(ORIGIN, HeaderValue::from_str(origin).expect("ascii"));
        }
        headers
    }

    fn policy() -> OriginPolicy {
        OriginPolicy::from_list(&["https://app.example.com".to_owned()]).expect("valid")
    }

    #[test]
    fn allowed_origin_gets_cors_headers() {
        let headers =
            cors_headers(&policy(), &request(Some("https://app.example.com"))).expect("allowed");
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(headers[VARY], "Origin");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_HEADERS], ALLOW_HEADERS);
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_METHODS], ALLOW_METHODS);
        assert_eq!(
            headers[ACCESS_CONTROL_EXPOSE_HEADERS],
            "Idempotent-Replayed"
        );
        assert!(ALLOW_HEADERS.contains("Idempotency-Key"));
    }

    #[test]
    fn disallowed_or_missing_origin_gets_none() {
        assert_eq!(
            cors_headers(&policy(), &request(Some("https://evil.example.com"))),
            None
        );
        assert_eq!(cors_headers(&policy(), &request(None)), None);
        assert_eq!(cors_headers(&policy(), &request(Some("null"))), None);
    }

    #[test]
    fn apply_always_varies_on_origin() {
        let mut response = HeaderMap::new();
        response.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        apply(
            &policy(),
            &request(Some("https://evil.example.com")),
            &mut response,
        );
        assert_eq!(response[VARY], "Origin");
        assert!(!response.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));

        let mut response = HeaderMap::new();
        response.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        apply(
            &policy(),
            &request(Some("https://app.example.com")),
            &mut response,
        );
        let vary: Vec<_> = response.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        assert_eq!(
            response[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
    }

    #[test]
    fn preflight_decisions() {
        let Preflight::Allowed(headers) =
            preflight(&policy(), &request(Some("https://app.example.com")))
        else {
            panic!("an allowed origin's preflight is allowed")
        };
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(headers[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_METHODS], ALLOW_METHODS);
        assert!(matches!(
            preflight(&policy(), &request(Some("https://evil.example.com"))),
            Preflight::Refused(_)
        ));
        assert_eq!(preflight(&policy(), &request(None)), Preflight::Plain);
    }
}
