//! Server-Sent Events (`text/event-stream`, WHATWG HTML "server-sent events"), both ways and
//! sans-IO: the relay's writer and the one parser that the browser client, the test clients
//! and the load generator read it with.
//!
//! Writing: every field is written so that nothing inside a value can start another field or
//! end the event. The event name must match `[a-z_]{1,32}` (else [`FALLBACK_EVENT`]), an `id`
//! with CR, LF or NUL is not written, and data is split at every CR, LF or CRLF into `data:`
//! lines (a reader joins them back with LF, which for JSON is the same whitespace). A NUL
//! inside data is an ordinary character to an SSE parser and cannot start a field. Bytes go
//! to an [`SseSink`], so the relay writes straight into its own buffers.
//!
//! Reading: [`SseParser`] follows the "interpret an event stream" algorithm, fed with chunks
//! as they arrive: bytes are buffered until a line is complete (a UTF-8 character or a CRLF
//! split across chunks is fine); lines end with CRLF, LF or CR; a leading BOM is skipped;
//! `data` lines are joined with LF; a blank line dispatches the event if it has data.

/// The comment the relay sends when nothing else was sent for a while.
pub const HEARTBEAT: &[u8] = b": hb\n\n";

/// The event name written when the one asked for is not a valid name.
pub const FALLBACK_EVENT: &str = "message";

/// Longest event name written.
pub const MAX_EVENT_NAME: usize = 32;

/// Where the writer puts bytes.
pub trait SseSink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl SseSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The `retry:` preamble: how long a browser `EventSource` waits before reconnecting.
pub fn write_retry(out: &mut impl SseSink, millis: u64) {
    out.put(b"retry: ");
    out.put(itoa::Buffer::new().format(millis).as_bytes());
    out.put(b"\n\n");
}

/// The heartbeat comment ([`HEARTBEAT`]).
pub fn write_heartbeat(out: &mut impl SseSink) {
    out.put(HEARTBEAT);
}

/// One event: `event: <name>`, `id: <id>` when given (and writable, see [`is_valid_id`]),
/// `data:` lines, then a blank line.
///
/// # Examples
///
/// ```
/// use tidewire_shared::sse::write_event;
/// let mut out = Vec::new();
/// write_event(&mut out, "event", Some("1;todos,7,43"), b"{\"a\":1}");
/// assert_eq!(out, b"event: event\nid: 1;todos,7,43\ndata: {\"a\":1}\n\n");
/// ```
pub fn write_event(out: &mut impl SseSink, name: &str, id: Option<&str>, data: &[u8]) {
    write_fields(out, name, id);
    let mut rest = data;
    loop {
        out.put(b"data: ");
        match memchr::memchr2(b'\r', b'\n', rest) {
            None => {
                out.put(rest);
                out.put(b"\n");
                break;
            }
            Some(end) => {
                out.put(&rest[..end]);
                out.put(b"\n");
                let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
                rest = &rest[end + if crlf { 2 } else { 1 }..];
            }
        }
    }
    out.put(b"\n");
}

/// An event up to its data: `event:`, `id:` when given, and `data: `. The data (one line, see
/// [`is_one_line`]) and [`write_event_tail`] follow, so a caller can send data it shares
/// with others without copying it.
pub fn write_event_head(out: &mut impl SseSink, name: &str, id: Option<&str>) {
    write_fields(out, name, id);
    out.put(b"data: ");
}

/// Ends an event begun with [`write_event_head`]: the data line's end and the blank line.
pub fn write_event_tail(out: &mut impl SseSink) {
    out.put(b"\n\n");
}

/// Whether `data` fits one `data:` line (no CR or LF).
pub fn is_one_line(data: &[u8]) -> bool {
    memchr::memchr2(b'\r', b'\n', data).is_none()
}

/// Whether `name` is written as it is (`[a-z_]{1,32}`).
pub fn is_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'_')
}

/// Whether `id` can be written (no CR, LF or NUL: any of them would end the field or make a
/// reader ignore it).
pub fn is_valid_id(id: &str) -> bool {
    !id.bytes().any(|byte| matches!(byte, b'\r' | b'\n' | b'\0'))
}

fn write_fields(out: &mut impl SseSink, name: &str, id: Option<&str>) {
    let name = if is_event_name(name) {
        name
    } else {
        FALLBACK_EVENT
    };
    out.put(b"event: ");
    out.put(name.as_bytes());
    out.put(b"\n");
    if let Some(id) = id.filter(|id| is_valid_id(id)) {
        out.put(b"id: ");
        out.put(id.as_bytes());
        out.put(b"\n");
    }
}

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name (`"message"` when absent).
    pub name: String,
    /// The `data:` lines joined with LF.
    pub data: String,
    /// The last event ID when the event was dispatched (an `id:` persists across events).
    pub last_event_id: String,
    /// The `id:` written in this event itself, if any.
    pub id: Option<String>,
}

/// What a chunk of the stream contained, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event.
    Event(SseEvent),
    /// A comment line (`: hb`), without the colon and one leading space.
    Comment(String),
    /// A `retry:` field, in milliseconds.
    Retry(u64),
}

/// The parser state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    last_was_cr: bool,
    started: bool,
    name: String,
    data: String,
    has_data: bool,
    last_event_id: String,
    id: Option<String>,
    unknown_fields: u64,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events, comments and retries it completed, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// use tidewire_shared::sse::{SseItem, SseParser};
    /// let mut parser = SseParser::new();
    /// assert!(parser.push(b"event: event\ndata: {\"a\"").is_empty());
    /// let items = parser.push(b":1}\n\n: hb\n\n");
    /// let SseItem::Event(event) = &items[0] else { panic!("an event") };
    /// assert_eq!((event.name.as_str(), event.data.as_str()), ("event", "{\"a\":1}"));
    /// assert_eq!(items[1], SseItem::Comment("hb".into()));
    /// ```
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseItem> {
        let mut items = Vec::new();
        for &byte in chunk {
            match byte {
                b'\n' if self.last_was_cr => self.last_was_cr = false,
                b'\n' | b'\r' => {
                    self.last_was_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(item) = self.on_line(&line) {
                        items.push(item);
                    }
                }
                _ => {
                    self.last_was_cr = false;
                    self.line.push(byte);
                }
            }
        }
        items
    }

    /// Feeds a chunk; returns only the events it completed.
    pub fn push_events(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.push(chunk)
            .into_iter()
            .filter_map(|item| match item {
                SseItem::Event(event) => Some(event),
                SseItem::Comment(_) | SseItem::Retry(_) => None,
            })
            .collect()
    }

    /// The last event ID seen (empty before any `id:`).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// How many lines named a field the format does not have (a reader ignores them; a
    /// test of our own writer expects none).
    pub fn unknown_fields(&self) -> u64 {
        self.unknown_fields
    }

    fn on_line(&mut self, raw: &[u8]) -> Option<SseItem> {
        let mut raw = raw;
        if !self.started {
            self.started = true;
            raw = raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw);
        }
        let line = String::from_utf8_lossy(raw);
        if line.is_empty() {
            return self.dispatch().map(SseItem::Event);
        }
        if let Some(comment) = line.strip_prefix(':') {
            return Some(SseItem::Comment(
                comment.strip_prefix(' ').unwrap_or(comment).to_owned(),
            ));
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.name = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" => {
                if !value.contains('\0') {
                    self.last_event_id = value.to_owned();
                    self.id = Some(value.to_owned());
                }
            }
            "retry" => {
                if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
                    return value.parse().ok().map(SseItem::Retry);
                }
            }
            _ => self.unknown_fields += 1,
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let name = std::mem::take(&mut self.name);
        let id = self.id.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            name: if name.is_empty() {
                FALLBACK_EVENT.to_owned()
            } else {
                name
            },
            data: std::mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
            id,
        })
    }
}

#[cfg(test)]
mod tests;
