//! Transports: how the shell reaches the relay. Framing only; decisions live in the engine.
//!
//! | module | what |
//! |---|---|
//! | [`ws`] | WebSocket to `/v1/ws` |
//! | [`sse`] | SSE from `/v1/sse` with fetch streaming |
//! | [`http`] | fetch helpers and `POST /v1/streams/{s}/events` |
//! | [`pages`] | snapshots over HTTP: `GET /v1/streams/{s}/snapshot`, page by page |

pub(crate) mod http;
pub(crate) mod pages;
pub(crate) mod sse;
pub(crate) mod ws;

/// The relay's URLs, derived from the one the application gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoints {
    /// `http(s)://host[:port][/prefix]` without a trailing slash.
    pub(crate) http: String,
    /// `ws(s)://host[:port][/prefix]` without a trailing slash.
    pub(crate) ws: String,
}

impl Endpoints {
    /// Accepts `http(s)://`, `ws(s)://` or a URL relative to the page, with or without a
    /// trailing `/v1/ws` or `/v1/sse`.
    ///
    /// # Errors
    ///
    /// A message when the URL cannot be parsed or has another scheme.
    pub(crate) fn parse(url: &str, base: Option<&str>) -> Result<Self, String> {
        let absolute = match base {
            Some(base) => web_sys::Url::new_with_base(url, base),
            None => web_sys::Url::new(url),
        }
        .map_err(|error| format!("invalid relay URL \"{url}\": {}", http::describe(&error)))?;
        let href = absolute.href();
        Self::from_absolute(&href)
    }

    /// The sans-IO half of [`Endpoints::parse`], for an absolute URL.
    pub(crate) fn from_absolute(href: &str) -> Result<Self, String> {
        let (scheme, rest) = href
            .split_once("://")
            .ok_or_else(|| format!("invalid relay URL \"{href}\""))?;
        let (http_scheme, ws_scheme) = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => ("http", "ws"),
            "https" | "wss" => ("https", "wss"),
            other => {
                return Err(format!(
                    "unsupported URL scheme \"{other}\" (use http(s) or ws(s))"
                ))
            }
        };
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let mut rest = rest.trim_end_matches('/');
        for suffix in ["/v1/ws", "/v1/sse"] {
            if let Some(stripped) = rest.strip_suffix(suffix) {
                rest = stripped;
            }
        }
        Ok(Self {
            http: format!("{http_scheme}://{rest}"),
            ws: format!("{ws_scheme}://{rest}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_any_form() {
        let expected = Endpoints {
            http: "http://127.0.0.1:7300".into(),
            ws: "ws://127.0.0.1:7300".into(),
        };
        for url in [
            "http://127.0.0.1:7300",
            "http://127.0.0.1:7300/",
            "ws://127.0.0.1:7300/v1/ws",
            "http://127.0.0.1:7300/v1/sse?stream=a",
        ] {
            assert_eq!(Endpoints::from_absolute(url), Ok(expected.clone()), "{url}");
        }
        let secure = Endpoints::from_absolute("wss://example.com/relay/").expect("valid");
        assert_eq!(secure.http, "https://example.com/relay");
        assert!(Endpoints::from_absolute("ftp://x").is_err());
    }
}
