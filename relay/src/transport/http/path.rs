//! Paths of the HTTP API: the `/v1/streams/{stream}[/snapshot|/events]` routes (names are
//! percent-decoded by [`crate::query`]).
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
}
