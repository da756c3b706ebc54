//! The read side of one WebSocket connection: whole client messages from the frames of
//! `frame.rs`.
//!
//! Received bytes are kept only while a frame is incomplete: an idle connection holds no read
//! buffer. Each read lands in a stack buffer and is copied into a heap buffer sized to what
//! arrived, or, once a frame's header announced a longer payload, straight into the room
//! reserved for it. [`FrameReader::next`] is cancel safe: a frame is taken off the buffer
//! only once whole, and a read either completes into the buffer or reads nothing.
//!
//! The [`Assembler`] joins fragmented messages under the *total* size limit, validates the
//! UTF-8 of text and of close reasons, and hands pings and closes back to the connection,
//! which owes the pong and the close echo before anything a later message causes (RFC 6455
//! section 5.5; Autobahn cases 5.6-5.20). Binary fragments are counted, not kept, since the
//! relay refuses binary messages anyway.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use fastwebsockets::OpCode;
use tidewire_shared::CloseCode;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::frame::{close_code_allowed, decode, Frame, FrameError};

/// Bytes read at once into the stack buffer when no frame is under way: the subscribe and
/// publish messages clients send fit, and a longer frame reserves its own room.
const READ_CHUNK: usize = 4096;

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
    /// A ping: the pong with this payload is owed now.
    Ping(Bytes),
    /// A pong: the peer is alive.
    Pong,
    /// The peer sent a close frame; its echo (this payload) is owed.
    Close(Bytes),
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
    /// A text message or a close reason was not valid UTF-8 (close 1007).
    #[error("text message is not valid utf-8")]
    InvalidUtf8,
    /// The peer broke the framing rules (close 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The connection is gone (EOF, reset): no close frame can be delivered.
    #[error("connection lost: {0}")]
    Gone(#[source] io::Error),
}

impl From<FrameError> for ReadError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::TooBig { limit } => ReadError::TooBig { limit },
            FrameError::Protocol(why) => ReadError::Protocol(why),
        }
    }
}

impl ReadError {
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

/// Reads whole messages off one connection.
#[derive(Debug)]
pub(super) struct FrameReader {
    /// Bytes received and not yet decoded; empty, without an allocation, between frames.
    buffer: BytesMut,
    assembler: Assembler,
}

impl FrameReader {
    /// A reader that joins fragments with `assembler`.
    pub(super) fn new(assembler: Assembler) -> Self {
        Self {
            buffer: BytesMut::new(),
            assembler,
        }
    }

    /// The next message. Cancel safe.
    ///
    /// # Errors
    ///
    /// [`ReadError`] when the connection cannot go on.
    pub(super) async fn next<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Message, ReadError> {
        loop {
            if let Some(frame) = decode(&mut self.buffer, self.assembler.limit)? {
                if self.buffer.is_empty() {
                    // Nothing else under way: let the allocation go.
                    self.buffer = BytesMut::new();
                }
                return self.assembler.push(frame);
            }
            match read_some(io, &mut self.buffer).await {
                Ok(0) => {
                    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
                    return Err(ReadError::Gone(eof));
                }
                Ok(_) => {}
                Err(error) => return Err(ReadError::Gone(error)),
            }
        }
    }
}

/// One read into `buffer`: into its reserved room if a frame under way reserved some, else
/// through a stack buffer (not held across a suspension, so it costs an idle connection
/// nothing) and copied. Returns the bytes read, 0 at EOF. Cancel safe: either way a read
/// completes into `buffer` or reads nothing.
async fn read_some<R: AsyncRead + Unpin>(io: &mut R, buffer: &mut BytesMut) -> io::Result<usize> {
    if buffer.capacity() - buffer.len() >= READ_CHUNK {
        return io.read_buf(buffer).await;
    }
    poll_fn(|context| {
        let mut stack = [0u8; READ_CHUNK];
        let mut room = ReadBuf::new(&mut stack);
        match Pin::new(&mut *io).poll_read(context, &mut room) {
            Poll::Ready(Ok(())) => {
                buffer.extend_from_slice(room.filled());
                Poll::Ready(Ok(room.filled().len()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
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

    fn push(&mut self, frame: Frame) -> Result<Message, ReadError> {
        let Frame {
            fin,
            opcode,
            payload,
        } = frame;
        match opcode {
            OpCode::Text | OpCode::Binary => {
                if self.opcode.is_some() {
                    return Err(ReadError::Protocol("a new message inside a fragmented one"));
                }
                if fin {
                    return match opcode {
                        OpCode::Text if std::str::from_utf8(&payload).is_ok() => {
                            Ok(Message::Text(payload))
                        }
                        OpCode::Text => Err(ReadError::InvalidUtf8),
                        _ if self.keep_binary => Ok(Message::Binary(payload)),
                        _ => Ok(Message::Binary(BytesMut::new())),
                    };
                }
                self.opcode = Some(opcode);
                self.received = 0;
                self.text.clear();
                self.append(&payload)?;
                Ok(Message::Fragment)
            }
            OpCode::Continuation => {
                let Some(started) = self.opcode else {
                    return Err(ReadError::Protocol("a continuation without a message"));
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
            OpCode::Close => {
                if let [high, low, reason @ ..] = &payload[..] {
                    if std::str::from_utf8(reason).is_err() {
                        return Err(ReadError::InvalidUtf8);
                    }
                    if !close_code_allowed(u16::from_be_bytes([*high, *low])) {
                        return Err(ReadError::Protocol("close code not allowed"));
                    }
                } else if payload.len() == 1 {
                    return Err(ReadError::Protocol("close frame of one byte"));
                }
                Ok(Message::Close(payload.freeze()))
            }
            OpCode::Ping => Ok(Message::Ping(payload.freeze())),
            OpCode::Pong => Ok(Message::Pong),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Frame {
        Frame {
            fin,
            opcode,
            payload: BytesMut::from(payload),
        }
    }

    #[test]
    fn fragments_are_joined_and_validated() {
        let mut assembler = Assembler::new(10);
        let first = assembler.push(frame(false, OpCode::Text, b"h\xc3"));
        assert!(matches!(first, Ok(Message::Fragment)));
        let last = assembler.push(frame(true, OpCode::Continuation, b"\xa9!"));
        assert!(matches!(last, Ok(Message::Text(ref joined)) if &joined[..] == "hé!".as_bytes()));
        assert!(matches!(
            assembler.push(frame(true, OpCode::Continuation, b"x")),
            Err(ReadError::Protocol(_))
        ));
    }

    #[test]
    fn the_limit_applies_to_the_whole_message() {
        let mut assembler = Assembler::new(10);
        assert!(assembler
            .push(frame(false, OpCode::Binary, &[0; 6]))
            .is_ok());
        let error = assembler.push(frame(false, OpCode::Continuation, &[0; 6]));
        assert!(matches!(error, Err(ReadError::TooBig { limit: 10 })));
    }

    #[test]
    fn bad_utf8_across_fragments_and_interleaved_data_frames_are_refused() {
        let mut assembler = Assembler::new(100);
        assert!(assembler.push(frame(false, OpCode::Text, b"a")).is_ok());
        let error = assembler.push(frame(true, OpCode::Continuation, b"\xff"));
        assert_eq!(
            error.map(|_| ()).map_err(|e| e.close_code()),
            Err(Some(CloseCode::InvalidData))
        );
        assert!(assembler.push(frame(false, OpCode::Text, b"a")).is_ok());
        let error = assembler.push(frame(true, OpCode::Text, b"b"));
        assert_eq!(
            error.map(|_| ()).map_err(|e| e.close_code()),
            Err(Some(CloseCode::ProtocolError))
        );
        let mut assembler = Assembler::new(100);
        let error = assembler.push(frame(true, OpCode::Text, b"\xc3"));
        assert!(matches!(error, Err(ReadError::InvalidUtf8)));
    }

    #[test]
    fn closes_are_checked_and_echoed_pings_answered() {
        let mut assembler = Assembler::new(100);
        let close = assembler.push(frame(true, OpCode::Close, b"\x03\xe8bye"));
        assert!(matches!(close, Ok(Message::Close(ref echo)) if &echo[..] == b"\x03\xe8bye"));
        assert!(matches!(
            assembler.push(frame(true, OpCode::Close, b"")),
            Ok(Message::Close(_))
        ));
        for (payload, code) in [
            (&b"\x03"[..], CloseCode::ProtocolError),
            (b"\x03\xed", CloseCode::ProtocolError),
            (b"\x03\xe8\xff", CloseCode::InvalidData),
        ] {
            let error = assembler.push(frame(true, OpCode::Close, payload));
            assert_eq!(
                error.map(|_| ()).map_err(|e| e.close_code()),
                Err(Some(code))
            );
        }
        let ping = assembler.push(frame(true, OpCode::Ping, b"hi"));
        assert!(matches!(ping, Ok(Message::Ping(ref payload)) if &payload[..] == b"hi"));
    }

    #[tokio::test]
    async fn an_idle_reader_holds_no_buffer_and_reads_survive_cancellation() {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(Assembler::new(1 << 20));
        // Cancelled while nothing arrived: nothing lost, nothing kept.
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.next(&mut server),
        )
        .await;
        assert!(waited.is_err());
        assert_eq!(reader.buffer.capacity(), 0);
        // A long frame in two halves, with a cancellation in between.
        let long = vec![b'y'; 100_000];
        let mut wire = vec![0x81, 0x80 | 127];
        wire.extend_from_slice(&(long.len() as u64).to_be_bytes());
        wire.extend_from_slice(&[0, 0, 0, 0]);
        wire.extend_from_slice(&long);
        use tokio::io::AsyncWriteExt;
        client.write_all(&wire[..50_000]).await.unwrap();
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.next(&mut server),
        )
        .await;
        assert!(waited.is_err());
        client.write_all(&wire[50_000..]).await.unwrap();
        let message = reader.next(&mut server).await.unwrap();
        assert!(matches!(message, Message::Text(ref text) if text.len() == 100_000));
        assert_eq!(
            reader.buffer.capacity(),
            0,
            "the buffer is let go between frames"
        );
        drop(client);
        assert!(matches!(
            reader.next(&mut server).await,
            Err(ReadError::Gone(_))
        ));
    }
}
