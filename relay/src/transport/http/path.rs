//! Paths of the HTTP API: percent-decoding and the `/v1/streams/{stream}[/snapshot|/events]`
//! routes. Shared with [`static_files`](crate::transport::static_files).
//!
//! Stream names may contain `/` (`board:42/todos`). A slash in the name may be sent as is or
//! percent-encoded (`board:42%2Ftodos`); a *raw* `/snapshot` or `/events` at the end of the
//! path always names the sub-resource, so a stream whose name itself ends in `/snapshot` or
//! `/events` must have that slash encoded.

/// Which resource under `/v1/streams/{stream}` a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    /// `/v1/streams/{stream}`: info, create/update, drop.
    Stream,
    /// `/v1/streams/{stream}/snapshot`.
    Snapshot,
    /// `/v1/streams/{stream}/events`: replay and publish.
    Events,
}

impl Resource {
    /// The methods the resource answers, for `Allow` headers.
    pub(crate) fn allow(self) -> &'static str {
        match self {
            Resource::Stream => "GET, HEAD, PUT, DELETE, OPTIONS",
            Resource::Snapshot => "GET, HEAD, OPTIONS",
            Resource::Events => "GET, HEAD, POST, OPTIONS",
        }
    }
}

/// The prefix of every stream route.
const PREFIX: &str = "/v1/streams/";

/// Splits a request path into the still-encoded stream name and the resource, or `None` if
/// the path is not under `/v1/streams/{stream}` (404).
pub(crate) fn parse_route(path: &str) -> Option<(&str, Resource)> {
    let rest = path.strip_prefix(PREFIX)?;
    let (name, resource) = if let Some(name) = rest.strip_suffix("/snapshot") {
        (name, Resource::Snapshot)
    } else if let Some(name) = rest.strip_suffix("/events") {
        (name, Resource::Events)
    } else {
        (rest, Resource::Stream)
    };
    (!name.is_empty()).then_some((name, resource))
}

/// Why a percent-encoded string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding at byte {0}")]
    BadEscape(usize),
    /// The decoded bytes are not UTF-8.
    #[error("not UTF-8 once percent-decoded")]
    NotUtf8,
}

/// Percent-decodes `text` (RFC 3986; `+` stays a plus) into UTF-8.
///
/// # Errors
///
/// [`DecodeError`] for a malformed escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Result<String, DecodeError> {
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let high = bytes.get(index + 1).and_then(|byte| hex(*byte));
            let low = bytes.get(index + 2).and_then(|byte| hex(*byte));
            let (Some(high), Some(low)) = (high, low) else {
                return Err(DecodeError::BadEscape(index));
            };
            decoded.push(high << 4 | low);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| DecodeError::NotUtf8)
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The values of query parameter `name` in `query` (percent-decoded; `+` means space, as in
/// HTML forms). Values that do not decode are returned as `Err`.
pub(crate) fn query_values<'a>(
    query: Option<&'a str>,
    name: &'a str,
) -> impl Iterator<Item = Result<String, DecodeError>> + 'a {
    query.unwrap_or("").split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(&value.replace('+', " ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            parse_route("/v1/streams/todos"),
            Some(("todos", Resource::Stream))
        );
        assert_eq!(
            parse_route("/v1/streams/board:1/todos/snapshot"),
            Some(("board:1/todos", Resource::Snapshot))
        );
        assert_eq!(
            parse_route("/v1/streams/a%2Fevents/events"),
            Some(("a%2Fevents", Resource::Events))
        );
        assert_eq!(
            parse_route("/v1/streams/a%2Fevents"),
            Some(("a%2Fevents", Resource::Stream))
        );
        assert_eq!(parse_route("/v1/streams/"), None);
        assert_eq!(parse_route("/v1/streams"), None);
        assert_eq!(parse_route("/v1/streamsx/a"), None);
        assert_eq!(
            parse_route("/v1/streams/snapshot"),
            Some(("snapshot", Resource::Stream))
        );
        assert_eq!(parse_route("/v1/streams//snapshot"), None);
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb"), Ok("a/b".into()));
        assert_eq!(percent_decode("%22;drop"), Ok("\";drop".into()));
        assert_eq!(percent_decode("%2e%2E"), Ok("..".into()));
        assert_eq!(percent_decode("a+b"), Ok("a+b".into()));
        assert_eq!(percent_decode("%"), Err(DecodeError::BadEscape(0)));
        assert_eq!(percent_decode("a%2"), Err(DecodeError::BadEscape(1)));
        assert_eq!(percent_decode("%zz"), Err(DecodeError::BadEscape(0)));
        assert_eq!(percent_decode("%ff"), Err(DecodeError::NotUtf8));
        assert_eq!(percent_decode("%C3%A9"), Ok("é".into()));
    }

    #[test]
    fn query_parameters() {
        let query = Some("since=5&limit=10&since=6&x&access_token=a%2Bb+c");
        let since: Vec<_> = query_values(query, "since").collect();
        assert_eq!(since, vec![Ok("5".into()), Ok("6".into())]);
        assert_eq!(
            query_values(query, "x").collect::<Vec<_>>(),
            vec![Ok(String::new())]
        );
        assert_eq!(
            query_values(query, "access_token").collect::<Vec<_>>(),
            vec![Ok("a+b c".into())]
        );
        assert_eq!(query_values(None, "since").count(), 0);
    }
}
