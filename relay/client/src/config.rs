//! [`ClientConfig`]: where the relay is, the token, reconnect and timeout settings; and the
//! parsed [`Endpoint`] the WebSocket and HTTP helpers derive from the URL.

use std::time::Duration;

use super::backoff::BackoffConfig;
use super::error::ClientError;

/// Settings of a [`Client`](super::Client).
///
/// | field | default |
/// |---|---|
/// | `url` | `ws://127.0.0.1:7300` |
/// | `token` | none (anonymous) |
/// | `reconnect` | 100 ms doubling to 10 s, full jitter, forever |
/// | `connect_timeout` | 10 s |
/// | `request_timeout` | 30 s |
/// | `keepalive` | 15 s |
/// | `max_message_bytes` | 16 MiB |
/// | `max_http_body_bytes` | 64 MiB |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tidewire_client::ClientConfig;
/// let config = ClientConfig {
///     token: Some("eyJ...".into()),
///     request_timeout: Duration::from_secs(5),
///     ..ClientConfig::new("ws://127.0.0.1:7300")
/// };
/// assert_eq!(config.url, "ws://127.0.0.1:7300");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The relay: `ws://host:port` (the path defaults to `/v1/ws`), or a full WebSocket URL
    /// such as `ws://host/prefix/v1/ws` behind a proxy. `http://` is accepted as a synonym.
    /// TLS (`wss://`) is not supported: terminate TLS in front of the client.
    pub url: String,
    /// Bearer token sent in the `Authorization` header of the upgrade and of HTTP requests.
    /// Default: none (anonymous access, if the relay allows it).
    pub token: Option<String>,
    /// Reconnect policy: exponential backoff with full jitter, reset once a connection
    /// stayed up for a second (a connection dropped at once counts as a failure). Default: [`BackoffConfig::default`] (forever). Also paces retried
    /// subscribes after a transient `error`.
    pub reconnect: BackoffConfig,
    /// Limit for the TCP connect plus the WebSocket handshake. Default: 10 s.
    pub connect_timeout: Duration,
    /// How long a publish (or HTTP request) waits for its answer before failing with
    /// [`ClientError::Timeout`]. Default: 30 s.
    pub request_timeout: Duration,
    /// After this long without any message from the relay the client sends a `ping`; after
    /// twice this long it considers the connection dead and reconnects. Default: 15 s.
    pub keepalive: Duration,
    /// Largest WebSocket message accepted from the relay (snapshot chunks are the largest).
    /// Default: 16 MiB.
    pub max_message_bytes: usize,
    /// Largest HTTP response body accepted by the HTTP helpers. Default: 64 MiB.
    pub max_http_body_bytes: usize,
}

impl ClientConfig {
    /// The defaults, for the relay at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:7300".into(),
            token: None,
            reconnect: BackoffConfig::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
            max_message_bytes: 16 * 1024 * 1024,
            max_http_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The WebSocket path used when the URL has none.
const DEFAULT_WS_PATH: &str = "/v1/ws";

/// The relay's address, parsed from [`ClientConfig::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host:port`, for the TCP connection and the `Host` header.
    pub(crate) authority: String,
    /// Path (and query) of the WebSocket upgrade request.
    pub(crate) ws_path: String,
    /// Prefix of the HTTP API paths (empty unless the relay sits under a path prefix).
    pub(crate) http_prefix: String,
}

impl Endpoint {
    /// Parses `url`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for a malformed URL or an unsupported scheme.
    pub(crate) fn parse(url: &str) -> Result<Self, ClientError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|error| ClientError::Config(format!("url {url:?}: {error}")))?;
        match uri.scheme_str() {
            Some("ws" | "http") => {}
            Some("wss" | "https") => {
                return Err(ClientError::Config(format!(
                    "url {url:?}: TLS is not supported by this client; terminate TLS in front of it"
                )))
            }
            _ => {
                return Err(ClientError::Config(format!(
                    "url {url:?}: the scheme must be ws:// or http://"
                )))
            }
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Config(format!("url {url:?}: no host")))?;
        let port = uri.port_u16().unwrap_or(80);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = uri.path();
        let (ws_path, http_prefix) = if path.is_empty() || path == "/" {
            (DEFAULT_WS_PATH.to_owned(), String::new())
        } else if let Some(prefix) = path.strip_suffix(DEFAULT_WS_PATH) {
            (path.to_owned(), prefix.to_owned())
        } else {
            (path.to_owned(), String::new())
        };
        let ws_path = match uri.query() {
            Some(query) => format!("{ws_path}?{query}"),
            None => ws_path,
        };
        Ok(Self {
            authority,
            ws_path,
            http_prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_and_prefix() {
        let endpoint = Endpoint::parse("ws://127.0.0.1:7300").expect("valid");
        assert_eq!(endpoint.authority, "127.0.0.1:7300");
        assert_eq!(endpoint.ws_path, "/v1/ws");
        assert_eq!(endpoint.http_prefix, "");

        let endpoint = Endpoint::parse("http://relay.local/edge/v1/ws?x=1").expect("valid");
        assert_eq!(endpoint.authority, "relay.local:80");
        assert_eq!(endpoint.ws_path, "/edge/v1/ws?x=1");
        assert_eq!(endpoint.http_prefix, "/edge");
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in ["wss://x", "ftp://x", "not a url", "/v1/ws"] {
            assert!(
                matches!(Endpoint::parse(url), Err(ClientError::Config(_))),
                "{url}"
            );
        }
    }
}
