//! The read side of one WebSocket connection: whole client messages from fastwebsockets
//! frames.
//!
//! fastwebsockets parses and unmasks frames, rejects a frame over the size limit from its
//! header (before reading the payload), validates unfragmented text, and hands back the
//! frames it is obliged to send (pong for ping, the close echo) through a callback. The
//! [`Assembler`] here joins fragmented messages under the *total* size limit (fastwebsockets'
//! own collector has none) and validates their UTF-8; binary fragments are counted, not kept,
//! since binary messages are refused anyway.

use std::error::Error as StdError;
use std::future::Future;

use bytes::BytesMut;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError, WebSocketRead};
use tidewire_shared::CloseCode;
use tokio::io::AsyncRead;

/// What one read produced.
#[derive(Debug)]
pub(super) enum Message {
    /// A complete text message (valid UTF-8).
    Text(BytesMut),
    /// A complete binary message (its bytes, only if the assembler keeps binary data; the
    /// relay refuses binary messages and discards them).
    Binary(BytesMut),
    /// A non-final fragment: nothing to do yet, but the peer is alive.
    Fragment,
    /// A pong (or a ping, answered by fastwebsockets): the peer is alive.
    Control,
    /// The peer sent a close frame; its echo was handed to the obligation callback.
    Close,
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// A frame or a fragmented message exceeded `--max-message-bytes` (close 1009).
    #[error("message larger than {limit} bytes")]
    TooBig {
        /// The limit.
        limit: usize,
    },
    /// A text message was not valid UTF-8 (close 1007).
    #[error("text message is not valid utf-8")]
    InvalidUtf8,
    /// The peer broke the framing rules (close 1002).
    #[error("protocol error: {0}")]
    Protocol(#[source] WebSocketError),
    /// The connection is gone (EOF, reset): no close frame can be delivered.
    #[error("connection lost: {0}")]
    Gone(#[source] WebSocketError),
}

impl ReadError {
    fn classify(error: WebSocketError, limit: usize) -> Self {
        match error {
            WebSocketError::FrameTooLarge => ReadError::TooBig { limit },
            WebSocketError::InvalidUTF8 => ReadError::InvalidUtf8,
            WebSocketError::UnexpectedEOF
            | WebSocketError::IoError(_)
            | WebSocketError::SendError(_)
            | WebSocketError::ConnectionClosed
            | WebSocketError::HTTPError(_) => ReadError::Gone(error),
            other => ReadError::Protocol(other),
        }
    }

    /// The close code to send, `None` when the peer cannot receive one.
    pub(super) fn close_code(&self) -> Option<CloseCode> {
        match self {
            ReadError::TooBig { .. } => Some(CloseCode::TooBig),
            ReadError::InvalidUtf8 => Some(CloseCode::InvalidData),
            ReadError::Protocol(_) => Some(CloseCode::ProtocolError),
            ReadError::Gone(_) => None,
        }
    }
}

/// Joins fragmented messages.
#[derive(Debug)]
pub(super) struct Assembler {
    /// The opcode of the message being assembled, `None` between messages.
    opcode: Option<OpCode>,
    /// Text received so far (empty for binary unless `keep_binary`).
    text: BytesMut,
    /// Bytes received so far for the message being assembled.
    received: usize,
    /// `--max-message-bytes`.
    limit: usize,
    /// Keep binary payloads (the echo server) instead of only counting them.
    keep_binary: bool,
}

impl Assembler {
    /// An assembler for messages of at most `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            opcode: None,
            text: BytesMut::new(),
            received: 0,
            limit,
            keep_binary: false,
        }
    }

    /// An assembler that keeps binary payloads too (for the echo server).
    pub(super) fn keeping_binary(limit: usize) -> Self {
        Self {
            keep_binary: true,
            ..Self::new(limit)
        }
    }

    fn push(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: Payload<'_>,
    ) -> Result<Message, ReadError> {
        match opcode {
            OpCode::Text | OpCode::Binary => {
                if self.opcode.is_some() {
                    return Err(ReadError::Protocol(WebSocketError::InvalidFragment));
                }
                if fin {
                    // fastwebsockets validated the UTF-8 of an unfragmented text frame.
                    return Ok(match opcode {
                        OpCode::Text => Message::Text(into_bytes(payload)),
                        _ if self.keep_binary => Message::Binary(into_bytes(payload)),
                        _ => Message::Binary(BytesMut::new()),
                    });
                }
                self.opcode = Some(opcode);
                self.received = 0;
                self.text.clear();
                self.append(&payload)?;
                Ok(Message::Fragment)
            }
            OpCode::Continuation => {
                let Some(started) = self.opcode else {
                    return Err(ReadError::Protocol(
                        WebSocketError::InvalidContinuationFrame,
                    ));
                };
                self.append(&payload)?;
                if !fin {
                    return Ok(Message::Fragment);
                }
                self.opcode = None;
                let text = std::mem::take(&mut self.text);
                match started {
                    OpCode::Text if std::str::from_utf8(&text).is_ok() => Ok(Message::Text(text)),
                    OpCode::Text => Err(ReadError::InvalidUtf8),
                    _ => Ok(Message::Binary(text)),
                }
            }
            // A control frame carries at most 125 bytes (RFC 6455 section 5.5); fastwebsockets
            // checks pings only.
            OpCode::Close if payload.len() > 125 => {
                Err(ReadError::Protocol(WebSocketError::InvalidCloseFrame))
            }
            OpCode::Close => Ok(Message::Close),
            OpCode::Ping | OpCode::Pong => Ok(Message::Control),
        }
    }

    fn append(&mut self, payload: &[u8]) -> Result<(), ReadError> {
        self.received = self.received.saturating_add(payload.len());
        if self.received > self.limit {
            return Err(ReadError::TooBig { limit: self.limit });
        }
        if self.opcode == Some(OpCode::Text) || self.keep_binary {
            self.text.extend_from_slice(payload);
        }
        Ok(())
    }
}

fn into_bytes(payload: Payload<'_>) -> BytesMut {
    match payload {
        Payload::Bytes(bytes) => bytes,
        other => BytesMut::from(&other[..]),
    }
}

/// Reads frames until one yields a [`Message`]. Obligatory replies (pong, close echo) go to
/// `send`. Not cancel safe: keep the future pinned until it completes.
///
/// # Errors
///
/// [`ReadError`] when the connection cannot go on.
pub(super) async fn read_message<S, F, R, E>(
    reader: &mut WebSocketRead<S>,
    assembler: &mut Assembler,
    send: &mut F,
) -> Result<Message, ReadError>
where
    S: AsyncRead + Unpin,
    F: FnMut(Frame<'static>) -> R,
    R: Future<Output = Result<(), E>>,
    E: Into<Box<dyn StdError + Send + Sync + 'static>>,
{
    let frame = reader
        .read_frame(send)
        .await
        .map_err(|error| ReadError::classify(error, assembler.limit))?;
    assembler.push(frame.fin, frame.opcode, frame.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(payload: &[u8]) -> Payload<'static> {
        Payload::Owned(payload.to_vec())
    }

    #[test]
    fn fragments_are_joined_and_validated() {
        let mut assembler = Assembler::new(10);
        let first = assembler.push(false, OpCode::Text, text(b"h\xc3"));
        assert!(matches!(first, Ok(Message::Fragment)));
        let last = assembler.push(true, OpCode::Continuation, text(b"\xa9!"));
        assert!(matches!(last, Ok(Message::Text(ref joined)) if &joined[..] == "hé!".as_bytes()));
        assert!(matches!(
            assembler.push(true, OpCode::Continuation, text(b"x")),
            Err(ReadError::Protocol(_))
        ));
    }

    #[test]
    fn the_limit_applies_to_the_whole_message() {
        let mut assembler = Assembler::new(10);
        assert!(assembler.push(false, OpCode::Binary, text(&[0; 6])).is_ok());
        let error = assembler.push(false, OpCode::Continuation, text(&[0; 6]));
        assert!(matches!(error, Err(ReadError::TooBig { limit: 10 })));
    }

    #[test]
    fn bad_utf8_across_fragments_and_interleaved_data_frames_are_refused() {
        let mut assembler = Assembler::new(100);
        assert!(assembler.push(false, OpCode::Text, text(b"a")).is_ok());
        let error = assembler.push(true, OpCode::Continuation, text(b"\xff"));
        assert_eq!(
            error.map(|_| ()).map_err(|e| e.close_code()),
            Err(Some(CloseCode::InvalidData))
        );
        assert!(assembler.push(false, OpCode::Text, text(b"a")).is_ok());
        let error = assembler.push(true, OpCode::Text, text(b"b"));
        assert_eq!(
            error.map(|_| ()).map_err(|e| e.close_code()),
            Err(Some(CloseCode::ProtocolError))
        );
    }
}
