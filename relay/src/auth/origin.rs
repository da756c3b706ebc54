//! The Origin allow-list: which browser pages may open a WebSocket, an SSE stream or make CORS
//! requests. Checked by the [`Authenticator`](super::Authenticator) before the token, and by
//! [`cors`](super::cors) to decide whether to answer with CORS headers.
//!
//! # Rules
//!
//! - No `Origin` header: allowed (non-browser clients send none; browsers always send one on
//!   WebSocket upgrades and cross-origin requests).
//! - `--allowed-origins '*'`: any origin, `null` included.
//! - `--allowed-origins https://app.example.com,http://localhost:5173`: exactly those origins,
//!   compared after normalising (scheme and host lowercased, default ports made explicit, one
//!   trailing `/` ignored), so `HTTPS://App.Example.com:443` matches `https://app.example.com`.
//!   `null` (sandboxed iframes, `file://` pages) only matches if listed literally.
//! - Nothing configured (the default): same-host origins only: `http(s)://localhost`,
//!   `http(s)://127.0.0.1` and `http(s)://[::1]` on any port, and the origin whose host and port
//!   equal the request's `Host` header (a `Host` without a port means the scheme's default
//!   port, which is right behind a TLS-terminating proxy).
//! - Several `Origin` headers, a non-ASCII one or one that does not parse: refused.

use hyper::header::{HOST, ORIGIN};
use hyper::http::HeaderValue;
use hyper::HeaderMap;

use super::AuthError;

/// An origin that cannot be parsed (in the configuration or a request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid origin {origin:?}: {reason}")]
pub struct OriginError {
    /// The text (cut to 200 bytes).
    pub origin: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A normalised `scheme://host:port` origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Lowercase scheme (`http`, `https`, ...).
    pub scheme: String,
    /// Lowercase host; IPv6 addresses keep their brackets (`[::1]`).
    pub host: String,
    /// The explicit port, or the scheme's default (80 for http/ws, 443 for https/wss);
    /// `None` for other schemes without a port.
    pub port: Option<u16>,
}

impl Origin {
    /// Parses an origin such as `https://app.example.com:8443` (a single trailing `/` is
    /// tolerated).
    ///
    /// # Errors
    ///
    /// [`OriginError`] for anything that is not `scheme://host[:port]`.
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        let error = |reason| OriginError {
            origin: text.chars().take(200).collect(),
            reason,
        };
        let trimmed = text.strip_suffix('/').unwrap_or(text);
        let (scheme, authority) = trimmed
            .split_once("://")
            .ok_or_else(|| error("expected scheme://host[:port]"))?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(error("bad scheme"));
        }
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = split_host_port(authority).ok_or_else(|| error("bad host or port"))?;
        let port = port.or_else(|| default_port(&scheme));
        Ok(Self { scheme, host, port })
    }

    fn is_http(&self) -> bool {
        self.scheme == "http" || self.scheme == "https"
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]` (also `[v6]:port`) into a lowercase host and the port, if any.
/// `None` if the host is empty or has characters no host name or IP literal has, or the port
/// is not a number from 1 to 65535.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if address.is_empty()
            || !address
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
        {
            return None;
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (format!("[{address}]"), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !host_ok {
            return None;
        }
        (host.to_owned(), port)
    };
    let port = match port {
        None => None,
        Some(digits) => {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            match digits.parse::<u16>() {
                Ok(0) | Err(_) => return None,
                Ok(port) => Some(port),
            }
        }
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Which origins are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// `*`.
    Any,
    /// The configured list (`null` only if `null` was listed).
    List { origins: Vec<Origin>, null: bool },
    /// Nothing configured: localhost and the request's own host.
    SameHost,
}

/// The Origin allow-list of the relay (`--allowed-origins`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    allowed: Allowed,
}

impl Default for OriginPolicy {
    /// The same-host default.
    fn default() -> Self {
        Self {
            allowed: Allowed::SameHost,
        }
    }
}

impl OriginPolicy {
    /// Any origin (`*`).
    pub fn any() -> Self {
        Self {
            allowed: Allowed::Any,
        }
    }

    /// The policy for `--allowed-origins`: empty means the same-host default; `*` anywhere in
    /// the list means any origin. Blank entries are skipped.
    ///
    /// # Errors
    ///
    /// [`OriginError`] for the first entry that is not `*`, `null` or `scheme://host[:port]`.
    pub fn from_list(list: &[String]) -> Result<Self, OriginError> {
        let entries: Vec<&str> = list
            .iter()
            .map(|entry| entry.trim())
            .filter(|entry| !entry.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(Self::default());
        }
        if entries.contains(&"*") {
            return Ok(Self::any());
        }
        let mut origins = Vec::new();
        let mut null = false;
        for entry in entries {
            if entry == "null" {
                null = true;
            } else {
                origins.push(Origin::parse(entry)?);
            }
        }
        Ok(Self {
            allowed: Allowed::List { origins, null },
        })
    }

    /// Whether a page of `origin` may connect to a relay reached as `host` (the request's
    /// `Host` header, used by the same-host default).
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        match &self.allowed {
            Allowed::Any => true,
            Allowed::List { origins, null } => {
                if origin == "null" {
                    return *null;
                }
                Origin::parse(origin).is_ok_and(|origin| origins.contains(&origin))
            }
            Allowed::SameHost => {
                let Ok(origin) = Origin::parse(origin) else {
                    return false;
                };
                if !origin.is_http() {
                    return false;
                }
                if matches!(origin.host.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
                    return true;
                }
                let Some((host, port)) = host.and_then(split_host_port) else {
                    return false;
                };
                host == origin.host && port.or_else(|| default_port(&origin.scheme)) == origin.port
            }
        }
    }

    /// Checks the request's `Origin` header: `Ok(None)` without one, `Ok(Some(origin))` when it
    /// is allowed (the value to echo in `Access-Control-Allow-Origin`).
    ///
    /// # Errors
    ///
    /// [`AuthError::Origin`] if the origin is not allowed, unreadable or repeated.
    pub fn check<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h HeaderValue>, AuthError> {
        let mut values = headers.get_all(ORIGIN).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(AuthError::Origin("more than one Origin header".into()));
        }
        let origin = value
            .to_str()
            .map_err(|_| AuthError::Origin("the Origin header is not ASCII".into()))?;
        let host = headers.get(HOST).and_then(|host| host.to_str().ok());
        if self.allows(origin, host) {
            Ok(Some(value))
        } else {
            let shown: String = origin.chars().take(200).collect();
            Err(AuthError::Origin(format!(
                "{shown} (see --allowed-origins)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> OriginPolicy {
        let entries: Vec<String> = entries.iter().map(|entry| (*entry).to_owned()).collect();
        OriginPolicy::from_list(&entries).expect("valid list")
    }

    fn headers(origins: &[&str], host: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for origin in origins {
            headers.append(ORIGIN, HeaderValue::from_str(origin).expect("ascii"));
        }
        if let Some(host) = host {
            headers.insert(HOST, HeaderValue::from_str(host).expect("ascii"));
        }
        headers
    }

    /// Name, policy, Origin headers, Host header, allowed?
    type OriginRow<'a> = (
        &'a str,
        &'a OriginPolicy,
        Vec<&'a str>,
        Option<&'a str>,
        bool,
    );

    /// One row per case, each with its expected answer.
    #[test]
    fn origin_table() {
        let same_host = OriginPolicy::default();
        let app = list(&["https://app.example.com", "http://localhost:5173"]);
        let with_null = list(&["null", "https://app.example.com/"]);
        let any = list(&["https://ignored.example", "*"]);
        #[rustfmt::skip]
        let rows: Vec<OriginRow<'_>> = vec![
            ("listed origin", &app, vec!["https://app.example.com"], Some("relay.example.com"), true),
            ("listed origin, explicit default port", &app, vec!["https://app.example.com:443"], None, true),
            ("listed origin, other case", &app, vec!["HTTPS://App.Example.COM"], None, true),
            ("listed origin, trailing slash", &app, vec!["https://app.example.com/"], None, true),
            ("unlisted origin", &app, vec!["https://evil.example.com"], None, false),
            ("listed host, other scheme", &app, vec!["http://app.example.com"], None, false),
            ("listed host, different port", &app, vec!["https://app.example.com:8443"], None, false),
            ("listed localhost port", &app, vec!["http://localhost:5173"], None, true),
            ("localhost, other port, with a list", &app, vec!["http://localhost:3000"], None, false),
            ("suffix attack", &app, vec!["https://app.example.com.evil.net"], None, false),
            ("prefix attack", &app, vec!["https://evilapp.example.com"], None, false),
            ("userinfo trick", &app, vec!["https://app.example.com@evil.net"], None, false),
            ("path in origin", &app, vec!["https://app.example.com/x"], None, false),
            ("missing Origin", &app, vec![], None, true),
            ("null origin, not listed", &app, vec!["null"], None, false),
            ("null origin, listed", &with_null, vec!["null"], None, true),
            ("two Origin headers", &app, vec!["https://app.example.com", "https://app.example.com"], None, false),
            ("empty Origin", &app, vec![""], None, false),
            ("star allows anything", &any, vec!["https://whatever.example"], None, true),
            ("star allows null", &any, vec!["null"], None, true),
            ("default: localhost any port", &same_host, vec!["http://localhost:5173"], Some("relay.example.com"), true),
            ("default: https localhost", &same_host, vec!["https://localhost"], None, true),
            ("default: 127.0.0.1", &same_host, vec!["http://127.0.0.1:8080"], None, true),
            ("default: [::1]", &same_host, vec!["http://[::1]:7300"], None, true),
            ("default: other loopback not listed", &same_host, vec!["http://127.0.0.2"], None, false),
            ("default: ws scheme is not a page", &same_host, vec!["ws://localhost"], None, false),
            ("default: own host, same port", &same_host, vec!["http://relay.example.com:7300"], Some("relay.example.com:7300"), true),
            ("default: own host behind TLS proxy", &same_host, vec!["https://relay.example.com"], Some("relay.example.com"), true),
            ("default: own host, different port", &same_host, vec!["http://relay.example.com:8080"], Some("relay.example.com:7300"), false),
            ("default: own host, https vs host without port", &same_host, vec!["https://relay.example.com:8443"], Some("relay.example.com"), false),
            ("default: own host, case", &same_host, vec!["https://RELAY.example.com"], Some("relay.EXAMPLE.com"), true),
            ("default: other host", &same_host, vec!["https://evil.example.com"], Some("relay.example.com"), false),
            ("default: no Host header", &same_host, vec!["https://relay.example.com"], None, false),
            ("default: null", &same_host, vec!["null"], Some("relay.example.com"), false),
            ("default: missing Origin", &same_host, vec![], Some("relay.example.com"), true),
            ("default: garbage origin", &same_host, vec!["localhost"], None, false),
            ("default: port 0", &same_host, vec!["http://localhost:0"], None, false),
            ("default: port too big", &same_host, vec!["http://localhost:70000"], None, false),
        ];
        let mut failures = Vec::new();
        for (name, policy, origins, host, allowed) in &rows {
            let request = headers(origins, *host);
            let outcome = policy.check(&request);
            if outcome.is_ok() != *allowed {
                failures.push(format!(
                    "{name}: expected allowed={allowed}, got {outcome:?}"
                ));
            }
            if let Err(error) = outcome {
                assert!(matches!(error, AuthError::Origin(_)), "{name}: {error:?}");
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} rows failed:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn configuration_errors() {
        for bad in [
            "example.com",
            "https://",
            "https://a b",
            "1http://x",
            "https://x:port",
            "https://[zz]",
        ] {
            assert!(
                OriginPolicy::from_list(&[bad.to_owned()]).is_err(),
                "{bad} should be refused"
            );
        }
        assert_eq!(
            OriginPolicy::from_list(&[String::new(), " ".into()]),
            Ok(OriginPolicy::default())
        );
    }

    #[test]
    fn allowed_origin_is_echoed_verbatim() {
        let request = headers(&["HTTPS://App.Example.com"], None);
        let echoed = list(&["https://app.example.com"])
            .check(&request)
            .expect("allowed");
        assert_eq!(
            echoed.map(HeaderValue::as_bytes),
            Some(&b"HTTPS://App.Example.com"[..])
        );
    }
}
