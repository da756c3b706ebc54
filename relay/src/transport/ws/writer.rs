//! The write side of one WebSocket connection: frames are encoded (headers by fastwebsockets'
//! [`Frame::fmt_head`]) into one buffer and a burst goes out in as few `write` calls as the
//! socket allows, instead of one syscall per frame.
//!
//! The buffer grows on demand and is released after a large burst, so an idle connection
//! keeps at most [`KEEP_CAPACITY`] bytes. A `write` that makes no progress for the stall
//! deadline (`--slow-consumer-ms`) fails with [`WriteError::Stalled`]: the peer stopped
//! reading and the connection is dropped.

use std::io;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Capacity kept between bursts; a larger buffer is freed once written.
const KEEP_CAPACITY: usize = 2048;

/// Longest close reason: a close frame's payload is at most 125 bytes, 2 of them the code.
const MAX_CLOSE_REASON: usize = 123;

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// No byte could be written for this long: the peer does not read.
    #[error("write blocked for more than {0:?}")]
    Stalled(Duration),
    /// The socket accepts no more bytes.
    #[error("connection closed while writing")]
    Closed,
    /// The socket failed.
    #[error("write failed: {0}")]
    Io(#[from] io::Error),
}

/// Buffers frames and writes them in bursts.
#[derive(Debug)]
pub(super) struct FrameWriter<W> {
    /// The write half of the upgraded connection.
    io: W,
    /// Encoded frames not written yet.
    batch: Vec<u8>,
    /// How long one `write` may make no progress (`--slow-consumer-ms`).
    stall: Duration,
    /// A close frame was queued: nothing may follow it (RFC 6455 section 5.5.1).
    closed: bool,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer over `io` whose writes may stay blocked for `stall`.
    pub(super) fn new(io: W, stall: Duration) -> Self {
        Self {
            io,
            batch: Vec::new(),
            stall,
            closed: false,
        }
    }

    /// Bytes queued and not yet written.
    pub(super) fn pending(&self) -> usize {
        self.batch.len()
    }

    /// Whether a close frame was queued.
    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Queues one unfragmented frame; ignored after a close frame.
    pub(super) fn push(&mut self, opcode: OpCode, payload: &[u8]) {
        if self.closed {
            return;
        }
        let mut frame = Frame::new(true, opcode, None, Payload::Borrowed(payload));
        // 2 bytes, plus 8 for a 64-bit length, plus 4 for a mask (never set by a server).
        let mut head = [0u8; 14];
        let size = frame.fmt_head(&mut head);
        self.batch.extend_from_slice(&head[..size]);
        self.batch.extend_from_slice(payload);
        if opcode == OpCode::Close {
            self.closed = true;
        }
    }

    /// Queues a text frame (a JSON message).
    pub(super) fn text(&mut self, json: &[u8]) {
        self.push(OpCode::Text, json);
    }

    /// Queues a close frame with `code` and `reason` (cut to fit, on a character boundary).
    pub(super) fn close(&mut self, code: u16, reason: &str) {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        self.push(OpCode::Close, &payload);
    }

    /// Writes everything queued, with the configured stall deadline.
    ///
    /// # Errors
    ///
    /// [`WriteError`]; the connection is unusable afterwards.
    pub(super) async fn flush(&mut self) -> Result<(), WriteError> {
        self.flush_within(self.stall).await
    }

    /// Writes everything queued; a `write` may make no progress for at most `stall`.
    ///
    /// # Errors
    ///
    /// [`WriteError`]; the connection is unusable afterwards.
    pub(super) async fn flush_within(&mut self, stall: Duration) -> Result<(), WriteError> {
        let mut written = 0;
        while written < self.batch.len() {
            let wrote = tokio::time::timeout(stall, self.io.write(&self.batch[written..]))
                .await
                .map_err(|_| WriteError::Stalled(stall))??;
            if wrote == 0 {
                return Err(WriteError::Closed);
            }
            written += wrote;
        }
        tokio::time::timeout(stall, self.io.flush())
            .await
            .map_err(|_| WriteError::Stalled(stall))??;
        if self.batch.capacity() > KEEP_CAPACITY {
            self.batch = Vec::new();
        } else {
            self.batch.clear();
        }
        Ok(())
    }

    /// Half-closes the socket (TCP FIN) after the close frame, within `stall`.
    pub(super) async fn shutdown(&mut self, stall: Duration) {
        // The peer may already be gone; there is nothing left to tell it either way.
        let _ = tokio::time::timeout(stall, self.io.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_coalesced_and_encoded() {
        let mut writer = FrameWriter::new(Vec::new(), Duration::from_secs(1));
        writer.text(b"{}");
        writer.text(&[b'x'; 200]);
        writer.close(1001, "shutdown");
        writer.text(b"after close");
        writer.flush().await.expect("writes to a Vec");
        let bytes = writer.io;
        assert_eq!(&bytes[..4], b"\x81\x02{}");
        assert_eq!(&bytes[4..8], &[0x81, 126, 0, 200]);
        assert_eq!(&bytes[208..], b"\x88\x0a\x03\xe9shutdown");
    }

    #[tokio::test]
    async fn long_close_reasons_are_cut_on_a_char_boundary() {
        let mut writer = FrameWriter::new(Vec::new(), Duration::from_secs(1));
        writer.close(1000, &"é".repeat(100));
        writer.flush().await.expect("writes to a Vec");
        let frame = writer.io;
        assert_eq!(frame[1] as usize, frame.len() - 2);
        assert!(frame.len() - 2 <= 125);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_stalls() {
        let (client, _server) = tokio::io::duplex(16);
        let mut writer = FrameWriter::new(client, Duration::from_millis(100));
        writer.text(&[b'x'; 1000]);
        let error = writer.flush().await.expect_err("nobody reads");
        assert!(matches!(error, WriteError::Stalled(_)), "{error}");
    }
}
