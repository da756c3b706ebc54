//! SSE wire framing (WHATWG HTML "server-sent events"): the `retry:` preamble, one event per
//! server message, comment heartbeats.
//!
//! Every field is written so that nothing inside a value can start another field or end the
//! event: the event name is checked against `[a-z_]`, an `id` with CR, LF or NUL is dropped,
//! and data is split at every CR, LF or CRLF into `data:` lines (the browser joins them back
//! with LF, which for JSON is the same whitespace). A NUL inside data is an ordinary character
//! to an SSE parser and cannot start a field.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

/// The comment sent when nothing else was sent for `--sse-heartbeat-ms`.
pub(super) const HEARTBEAT: &[u8] = b": hb\n\n";

/// Event name used when a message's `type` cannot be read (never expected).
const FALLBACK_EVENT: &str = "message";

/// Longest accepted event name.
const MAX_EVENT_NAME: usize = 32;

/// The `retry:` preamble: how long a browser `EventSource` waits before reconnecting.
pub(super) fn retry(out: &mut BytesMut, millis: u64) {
    out.put_slice(b"retry: ");
    out.put_slice(millis.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

/// One event: `event: <name>`, `id: <id>` when given, `data:` lines, then a blank line.
pub(super) fn event(out: &mut BytesMut, name: &str, id: Option<&str>, data: &[u8]) {
    out.reserve(name.len() + id.map_or(0, str::len) + data.len() + 24);
    fields(out, name, id);
    let mut rest = data;
    loop {
        let end = memchr::memchr2(b'\r', b'\n', rest);
        out.put_slice(b"data: ");
        match end {
            None => {
                out.put_slice(rest);
                out.put_u8(b'\n');
                break;
            }
            Some(end) => {
                out.put_slice(&rest[..end]);
                out.put_u8(b'\n');
                let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
                rest = &rest[end + if crlf { 2 } else { 1 }..];
            }
        }
    }
    out.put_u8(b'\n');
}

/// Whether `data` fits one `data:` line (no CR or LF), so that it can follow
/// [`event_head`] as it is.
pub(super) fn is_one_line(data: &[u8]) -> bool {
    memchr::memchr2(b'\r', b'\n', data).is_none()
}

/// An event up to its data: `event:`, `id:` when given, and `data: `. The data (one line, see
/// [`is_one_line`]) and [`event_tail`] follow.
pub(super) fn event_head(out: &mut BytesMut, name: &str, id: Option<&str>) {
    fields(out, name, id);
    out.put_slice(b"data: ");
}

/// Ends an event begun with [`event_head`]: the data line's end and the blank line.
pub(super) fn event_tail(out: &mut BytesMut) {
    out.put_slice(b"\n\n");
}

/// `event: <name>` and `id: <id>` lines.
fn fields(out: &mut BytesMut, name: &str, id: Option<&str>) {
    let name = if is_event_name(name) {
        name
    } else {
        FALLBACK_EVENT
    };
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_u8(b'\n');
    if let Some(id) = id {
        if id.bytes().any(|byte| matches!(byte, b'\r' | b'\n' | b'\0')) {
            tracing::warn!(id, "bug: an sse id with a line break or NUL was dropped");
        } else {
            out.put_slice(b"id: ");
            out.put_slice(id.as_bytes());
            out.put_u8(b'\n');
        }
    }
}

/// The heartbeat comment.
pub(super) fn heartbeat(out: &mut BytesMut) {
    out.put_slice(HEARTBEAT);
}

fn is_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'_')
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
                if is_event_name(name) {
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
        Ok(tagged) if is_event_name(&tagged.kind) => Cow::Owned(tagged.kind),
        _ => Cow::Borrowed(FALLBACK_EVENT),
    }
}

#[cfg(test)]
mod tests;
