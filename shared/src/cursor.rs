//! The SSE cursor codec: every subscribed stream's `(epoch, seq)` in one `id:` value.
//!
//! A browser's `EventSource` remembers the last `id:` it saw and sends it back as
//! `Last-Event-ID` when it reconnects, so one id must describe the position of *all* the
//! connection's streams.
//!
//! Format: `1` (the version), then for each stream `;name,epoch,seq` in decimal, e.g.
//! `1;todos,7,42;raw:orders,99,3`. Stream names cannot contain `;` or `,`, and the value
//! never contains CR, LF or NUL, so it is a safe SSE field. At most [`MAX_CURSOR_LEN`] bytes
//! and [`MAX_CURSOR_STREAMS`] streams.

use crate::error::DecodeError;
use crate::event::Position;
use crate::stream::StreamName;

/// Longest accepted cursor, in bytes.
pub const MAX_CURSOR_LEN: usize = 8192;
/// Most streams in one cursor.
pub const MAX_CURSOR_STREAMS: usize = 100;

/// Positions of several streams, in the order the connection subscribed them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// `(stream, position)` pairs; a stream appears at most once.
    pub entries: Vec<(StreamName, Position)>,
}

impl Cursor {
    /// Records `position` for `stream` (replacing an earlier one).
    pub fn set(&mut self, stream: &StreamName, position: Position) {
        match self.entries.iter_mut().find(|(name, _)| name == stream) {
            Some(entry) => entry.1 = position,
            None => self.entries.push((stream.clone(), position)),
        }
    }

    /// The position of `stream`, if the cursor has one.
    pub fn get(&self, stream: &StreamName) -> Option<Position> {
        self.entries
            .iter()
            .find(|(name, _)| name == stream)
            .map(|(_, position)| *position)
    }

    /// Encodes the cursor.
    ///
    /// # Examples
    ///
    /// ```
    /// use tidewire_shared::cursor::Cursor;
    /// use tidewire_shared::{Position, StreamName};
    /// let mut cursor = Cursor::default();
    /// cursor.set(&StreamName::new("todos")?, Position { epoch: 7, seq: 42 });
    /// assert_eq!(cursor.encode(), "1;todos,7,42");
    /// assert_eq!(Cursor::decode("1;todos,7,42")?, cursor);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode(&self) -> String {
        let mut text = String::new();
        self.encode_into(&mut text);
        text
    }

    /// [`Cursor::encode`] into a reused buffer (cleared first): no allocation once the
    /// buffer has grown, for stamping every event of a stream.
    pub fn encode_into(&self, text: &mut String) {
        text.clear();
        text.push('1');
        for (stream, position) in &self.entries {
            text.push(';');
            text.push_str(stream.as_str());
            let mut digits = itoa::Buffer::new();
            text.push(',');
            text.push_str(digits.format(position.epoch));
            text.push(',');
            text.push_str(digits.format(position.seq));
        }
    }

    /// Decodes a cursor from untrusted text.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Cursor`] (or [`DecodeError::TooLarge`]) for anything not produced by
    /// [`Cursor::encode`]; never panics.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        if text.len() > MAX_CURSOR_LEN {
            return Err(DecodeError::TooLarge {
                size: text.len(),
                limit: MAX_CURSOR_LEN,
            });
        }
        let mut parts = text.split(';');
        if parts.next() != Some("1") {
            return Err(DecodeError::Cursor("unknown version".into()));
        }
        let mut cursor = Cursor::default();
        for part in parts {
            if cursor.entries.len() == MAX_CURSOR_STREAMS {
                return Err(DecodeError::Cursor("too many streams".into()));
            }
            let mut fields = part.split(',');
            let (Some(name), Some(epoch), Some(seq), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(DecodeError::Cursor("expected name,epoch,seq".into()));
            };
            let stream = StreamName::new(name)?;
            let position = Position {
                epoch: parse_number(epoch)?,
                seq: parse_number(seq)?,
            };
            if cursor.get(&stream).is_some() {
                return Err(DecodeError::Cursor("stream listed twice".into()));
            }
            cursor.entries.push((stream, position));
        }
        Ok(cursor)
    }
}

fn parse_number(text: &str) -> Result<u64, DecodeError> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::Cursor(format!(
            "not a decimal number: {:?}",
            text.chars().take(24).collect::<String>()
        )));
    }
    text.parse()
        .map_err(|_| DecodeError::Cursor("number out of range".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "abc",
            "2;a,1,1",
            "1;a,1",
            "1;a,1,1,1",
            "1;a,-1,1",
            "1;a,1e30,1",
            "1;a,1,99999999999999999999999",
            "1;a b,1,1",
            "1;a,1,1;a,2,2",
            "1;a,1,1\n",
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?}");
        }
        assert!(Cursor::decode(&"x".repeat(MAX_CURSOR_LEN + 1)).is_err());
    }

    #[test]
    fn empty_cursor_round_trips() {
        assert_eq!(Cursor::decode("1"), Ok(Cursor::default()));
    }
}
