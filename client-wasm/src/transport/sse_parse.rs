//! A sans-IO parser for `text/event-stream` (the WHATWG "event stream interpretation"),
//! fed with the byte chunks of a fetch response.
//!
//! Bytes are buffered until a line is complete, so a UTF-8 character or a CRLF split across
//! chunks is handled. Lines end with CRLF, LF or CR; `:` starts a comment; `data` lines are
//! joined with `\n`; a blank line dispatches the event if it has data.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` name (`"message"` when absent).
    pub(crate) name: String,
    /// The joined `data:` lines.
    pub(crate) data: String,
}

/// The parser state between chunks.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    last_was_cr: bool,
    started: bool,
    name: String,
    data: String,
    has_data: bool,
    /// The last `id:` seen (kept for diagnostics; the client builds its own cursor).
    pub(crate) last_id: Option<String>,
    /// The last `retry:` seen, in milliseconds.
    pub(crate) retry_ms: Option<u32>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            match byte {
                b'\n' if self.last_was_cr => self.last_was_cr = false,
                b'\n' | b'\r' => {
                    self.last_was_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.on_line(&line) {
                        events.push(event);
                    }
                }
                _ => {
                    self.last_was_cr = false;
                    self.line.push(byte);
                }
            }
        }
        events
    }

    fn on_line(&mut self, raw: &[u8]) -> Option<SseEvent> {
        let mut line = String::from_utf8_lossy(raw).into_owned();
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_owned();
            }
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
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
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" => {
                if let Ok(retry) = value.parse() {
                    self.retry_ms = Some(retry);
                }
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let name = std::mem::take(&mut self.name);
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            name: if name.is_empty() {
                "message".into()
            } else {
                name
            },
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseEvent> {
        chunks.iter().flat_map(|chunk| parser.push(chunk)).collect()
    }

    #[test]
    fn events_across_chunks_and_line_endings() {
        let mut parser = SseParser::new();
        let events = all(
            &mut parser,
            &[
                b"\xef\xbb\xbfretry: 1000\r\n: heartbeat\r\n\r\nid: 1;a,1,2\r",
                b"\nevent: event\ndata: {\"a\":",
                b"\"\xc3",
                b"\xa9\"}\n\nevent: snapshot\rdata: x\rdata: y\r\r",
            ],
        );
        assert_eq!(
            events,
            vec![
                SseEvent {
                    name: "event".into(),
                    data: "{\"a\":\"é\"}".into()
                },
                SseEvent {
                    name: "snapshot".into(),
                    data: "x\ny".into()
                },
            ]
        );
        assert_eq!(parser.retry_ms, Some(1000));
        assert_eq!(parser.last_id.as_deref(), Some("1;a,1,2"));
    }

    #[test]
    fn no_data_no_event_and_default_name() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"event: x\n\n").is_empty());
        let events = parser.push(b"data\n\n");
        assert_eq!(events[0].name, "message");
        assert_eq!(events[0].data, "");
    }
}
