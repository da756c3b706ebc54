//! The answer to an `OPTIONS` request, written from the CORS decision
//! ([`crate::auth::cors::preflight`]): 204 with the CORS headers, 204 with `Allow`, or 403
//! `forbidden`; always with `Vary: Origin`.

use hyper::header::{ALLOW, VARY};
use hyper::http::HeaderValue;
use hyper::{Response, StatusCode};
use tidewire_shared::ErrorCode;

use crate::auth::cors::{Preflight, ALLOW_METHODS};
use crate::transport::{error_response, full, Body};

/// Writes the answer to an `OPTIONS` request.
pub fn respond(decision: Preflight) -> Response<Body> {
    let mut response = match decision {
        Preflight::Allowed(cors) => {
            let mut response = no_content();
            response.headers_mut().extend(cors);
            response
        }
        Preflight::Plain => {
            let mut response = no_content();
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(ALLOW_METHODS));
            response
        }
        Preflight::Refused(why) => error_response(ErrorCode::Forbidden, why),
    };
    let headers = response.headers_mut();
    if !headers.contains_key(VARY) {
        headers.insert(VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

#[cfg(test)]
mod tests {
    use hyper::header::{
        ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ORIGIN,
    };
    use hyper::HeaderMap;

    use super::*;
    use crate::auth::cors::preflight;
    use crate::auth::OriginPolicy;

    fn answer(origin: Option<&str>) -> Response<Body> {
        let policy =
            OriginPolicy::from_list(&["https://app.example.com".to_owned()]).expect("valid");
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(ORIGIN, HeaderValue::from_str(origin).expect("ascii"));
        }
        respond(preflight(&policy, &headers))
    }

    #[test]
    fn preflight_answers() {
        let allowed = answer(Some("https://app.example.com"));
        assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            allowed.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(allowed.headers()[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(
            allowed.headers()[ACCESS_CONTROL_ALLOW_METHODS],
            ALLOW_METHODS
        );
        assert_eq!(allowed.headers()[VARY], "Origin");

        let refused = answer(Some("https://evil.example.com"));
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(!refused.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(refused.headers()[VARY], "Origin");

        let plain = answer(None);
        assert_eq!(plain.status(), StatusCode::NO_CONTENT);
        assert_eq!(plain.headers()[ALLOW], ALLOW_METHODS);
    }
}
