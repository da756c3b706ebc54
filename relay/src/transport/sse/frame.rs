//! SSE framing into the relay's buffers: the shared writer ([`tidewire_shared::sse`], with its
//! byte-exact tests) writing into a `BytesMut`, and the event name of a JSON server message.

use std::borrow::Cow;

use bytes::BytesMut;
use tidewire_shared::sse::{self, SseSink, FALLBACK_EVENT, MAX_EVENT_NAME};

/// The relay's buffer as the shared writer's sink.
struct Out<'a>(&'a mut BytesMut);

impl SseSink for Out<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

/// The `retry:` preamble: how long a browser `EventSource` waits before reconnecting.
pub(super) fn retry(out: &mut BytesMut, millis: u64) {
    sse::write_retry(&mut Out(out), millis);
}

/// One event: `event: <name>`, `id: <id>` when given, `data:` lines, then a blank line.
pub(super) fn event(out: &mut BytesMut, name: &str, id: Option<&str>, data: &[u8]) {
    out.reserve(name.len() + id.map_or(0, str::len) + data.len() + 24);
    check_id(id);
    sse::write_event(&mut Out(out), name, id, data);
}

/// Whether `data` fits one `data:` line, so that it can follow [`event_head`] as it is.
pub(super) fn is_one_line(data: &[u8]) -> bool {
    sse::is_one_line(data)
}

/// An event up to its data: `event:`, `id:` when given, and `data: `. The data (one line, see
/// [`is_one_line`]) and [`event_tail`] follow.
pub(super) fn event_head(out: &mut BytesMut, name: &str, id: Option<&str>) {
    check_id(id);
    sse::write_event_head(&mut Out(out), name, id);
}

/// Ends an event begun with [`event_head`]: the data line's end and the blank line.
pub(super) fn event_tail(out: &mut BytesMut) {
    sse::write_event_tail(&mut Out(out));
}

/// The heartbeat comment.
pub(super) fn heartbeat(out: &mut BytesMut) {
    sse::write_heartbeat(&mut Out(out));
}

/// The relay builds its ids from cursors, which never hold a line break: one that does is a
/// bug, and the writer leaves it out.
fn check_id(id: Option<&str>) {
    if let Some(id) = id.filter(|id| !sse::is_valid_id(id)) {
        tracing::warn!(id, "bug: an sse id with a line break or NUL was dropped");
    }
}

/// The `type` of a JSON server message, used as the event name.
///
/// The relay's encoders put `type` first, so the fast path reads it from the prefix; anything
/// else is parsed. Returns [`FALLBACK_EVENT`] when there is no usable `type`.
pub(super) fn message_type(json: &[u8]) -> Cow<'_, str> {
    const PREFIX: &[u8] = b"{\"type\":\"";
    if let Some(rest) = json.strip_prefix(PREFIX) {
        if let Some(end) = rest
            .iter()
            .take(MAX_EVENT_NAME + 1)
            .position(|&byte| byte == b'"')
        {
            if let Ok(name) = std::str::from_utf8(&rest[..end]) {
                if sse::is_event_name(name) {
                    return Cow::Borrowed(name);
                }
            }
        }
    }
    #[derive(serde::Deserialize)]
    struct Tagged {
        #[serde(rename = "type")]
        kind: String,
    }
    match serde_json::from_slice::<Tagged>(json) {
        Ok(tagged) if sse::is_event_name(&tagged.kind) => Cow::Owned(tagged.kind),
        _ => Cow::Borrowed(FALLBACK_EVENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_are_read_from_the_json() {
        assert_eq!(
            message_type(br#"{"type":"snapshot","stream":"a"}"#),
            "snapshot"
        );
        assert_eq!(
            message_type(br#"{"stream":"a","type":"subscribed"}"#),
            "subscribed"
        );
        assert_eq!(message_type(br#"{"type":"Evil\nid: 1"}"#), "message");
        assert_eq!(message_type(br#"{"type":"evil\u000aid"}"#), "message");
        assert_eq!(message_type(b"not json"), "message");
        assert_eq!(message_type(br#"{"type":"x"#), "message");
    }

    #[test]
    fn the_relay_buffer_gets_the_shared_framing() {
        let mut out = BytesMut::new();
        retry(&mut out, 500);
        event(&mut out, "event", Some("1;a,1,6"), b"{\"a\":1}");
        heartbeat(&mut out);
        let mut expected = Vec::new();
        sse::write_retry(&mut expected, 500);
        sse::write_event(&mut expected, "event", Some("1;a,1,6"), b"{\"a\":1}");
        sse::write_heartbeat(&mut expected);
        assert_eq!(out.to_vec(), expected);
    }
}
