//! The write side of one WebSocket connection: a burst of frames goes out in as few
//! (vectored) `write` calls as the socket allows, instead of one syscall per frame.
//!
//! Frame headers and small payloads are copied into one scratch buffer; a large payload (a
//! bus delivery's JSON, shared by every subscriber) is queued as its `Bytes` handle and never
//! copied, so a connection whose peer stopped reading pins shared deliveries, not copies of
//! them. The scratch buffer is released after a large burst, so an idle connection keeps at
//! most [`KEEP_CAPACITY`] bytes. A `write` that makes no progress for the stall deadline
//! (`--slow-consumer-ms`) fails with [`WriteError::Stalled`]: the peer stopped reading and the
//! connection is dropped.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::transport::stall::within;

/// Capacity kept between bursts; a larger buffer is freed once written.
const KEEP_CAPACITY: usize = 2048;

/// Payloads up to this size are copied next to their header; larger ones are queued by
/// reference.
const COPY_BELOW: usize = 512;

/// Most buffers handed to one vectored write (Linux accepts 1024).
const MAX_IOVECS: usize = 64;

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
    /// Encoded bytes not written yet, in order: frozen parts of `scratch` and shared payloads.
    chunks: VecDeque<Bytes>,
    /// Headers and small payloads not yet moved to `chunks`.
    scratch: BytesMut,
    /// Bytes in `chunks` and `scratch`.
    pending: usize,
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
            chunks: VecDeque::new(),
            scratch: BytesMut::new(),
            pending: 0,
            stall,
            closed: false,
        }
    }

    /// Bytes queued and not yet written.
    pub(super) fn pending(&self) -> usize {
        self.pending
    }

    /// Makes room for `bytes` more in the buffer of small frames, in one allocation (a
    /// burst's size is known before its frames are copied in one by one).
    pub(super) fn reserve(&mut self, bytes: usize) {
        self.scratch.reserve(bytes);
    }

    /// Queues one unfragmented frame; ignored after a close frame.
    pub(super) fn push(&mut self, opcode: OpCode, payload: &[u8]) {
        if self.head(opcode, payload) {
            self.scratch.extend_from_slice(payload);
            self.pending += payload.len();
        }
    }

    /// Encodes the header of a frame carrying `payload`; false after a close frame.
    fn head(&mut self, opcode: OpCode, payload: &[u8]) -> bool {
        if self.closed {
            return false;
        }
        let mut frame = Frame::new(true, opcode, None, Payload::Borrowed(payload));
        // 2 bytes, plus 8 for a 64-bit length, plus 4 for a mask (never set by a server).
        let mut head = [0u8; 14];
        let size = frame.fmt_head(&mut head);
        self.scratch.extend_from_slice(&head[..size]);
        self.pending += size;
        if opcode == OpCode::Close {
            self.closed = true;
        }
        true
    }

    /// Queues a text frame (a JSON message) given as a slice (copied).
    pub(super) fn text(&mut self, json: &[u8]) {
        self.push(OpCode::Text, json);
    }

    /// Queues a text frame whose payload is shared: large payloads are not copied.
    pub(super) fn text_shared(&mut self, json: &Bytes) {
        if json.len() < COPY_BELOW {
            return self.push(OpCode::Text, json);
        }
        if self.head(OpCode::Text, json) {
            if !self.scratch.is_empty() {
                self.chunks.push_back(self.scratch.split().freeze());
            }
            self.chunks.push_back(json.clone());
            self.pending += json.len();
        }
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
        if !self.scratch.is_empty() {
            self.chunks.push_back(self.scratch.split().freeze());
        }
        while !self.chunks.is_empty() {
            let wrote = within(stall, self.write_some())
                .await
                .map_err(|_| WriteError::Stalled(stall))??;
            if wrote == 0 {
                return Err(WriteError::Closed);
            }
            self.consume(wrote);
        }
        within(stall, self.io.flush())
            .await
            .map_err(|_| WriteError::Stalled(stall))??;
        if self.scratch.capacity() > KEEP_CAPACITY {
            self.scratch = BytesMut::new();
        }
        Ok(())
    }

    /// One vectored write of the queued chunks. The slices are made anew at every poll, so
    /// they are not part of the connection's future while it waits (64 slices are 1 KiB, and
    /// the future lives as long as the connection).
    async fn write_some(&mut self) -> io::Result<usize> {
        let Self { io, chunks, .. } = self;
        poll_fn(|context| {
            if let (Some(only), 1) = (chunks.front(), chunks.len()) {
                // One chunk (a burst of small frames is one): a plain write, which a socket
                // makes with `send`; `writev` also goes through the VFS (`vfs_writev`,
                // `fdget_pos`: 5% of the relay's samples at one event per wake).
                return Pin::new(&mut *io).poll_write(context, only);
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(chunks.iter()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            Pin::new(&mut *io).poll_write_vectored(context, &slices[..count])
        })
        .await
    }

    /// Drops `written` bytes from the front of the queue.
    fn consume(&mut self, mut written: usize) {
        self.pending = self.pending.saturating_sub(written);
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.chunks.pop_front();
        }
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
    async fn shared_payloads_are_written_in_order_without_copies() {
        let mut writer = FrameWriter::new(Vec::new(), Duration::from_secs(1));
        let big = Bytes::from(vec![b'y'; 1000]);
        writer.text(b"a");
        writer.text_shared(&big);
        writer.text_shared(&Bytes::from_static(b"small"));
        writer.text_shared(&big);
        assert_eq!(writer.chunks.len(), 4, "a+head, big, small+head, big");
        assert_eq!(writer.pending(), 3 + 1004 + 7 + 1004);
        writer.flush().await.expect("writes to a Vec");
        assert_eq!(writer.pending(), 0);
        let bytes = writer.io;
        assert_eq!(&bytes[..3], b"\x81\x01a");
        assert_eq!(&bytes[3..7], &[0x81, 126, 0x03, 0xe8]);
        assert!(bytes[7..1007].iter().all(|&b| b == b'y'));
        assert_eq!(&bytes[1007..1014], b"\x81\x05small");
        assert_eq!(bytes.len(), 2018);
    }

    #[tokio::test]
    async fn a_partial_write_resumes_mid_chunk() {
        let (client, mut server) = tokio::io::duplex(100);
        let mut writer = FrameWriter::new(client, Duration::from_secs(5));
        let big = Bytes::from(vec![b'z'; 5000]);
        writer.text_shared(&big);
        writer.text(b"end");
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut all)
                .await
                .map(|_| all)
        });
        writer.flush().await.expect("the reader drains");
        drop(writer);
        let all = reader.await.expect("joined").expect("read");
        assert_eq!(all.len(), 4 + 5000 + 5);
        assert_eq!(&all[all.len() - 5..], b"\x81\x03end");
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

    /// On a paused clock: the stall is declared exactly at the deadline (the relay's default
    /// 10 s), whatever the machine is doing, and the test takes no real time.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_does_not_read_stalls() {
        let (client, _server) = tokio::io::duplex(16);
        let deadline = Duration::from_secs(10);
        let mut writer = FrameWriter::new(client, deadline);
        writer.text(&[b'x'; 1000]);
        let started = tokio::time::Instant::now();
        let error = writer.flush().await.expect_err("nobody reads");
        assert!(matches!(error, WriteError::Stalled(_)), "{error}");
        assert_eq!(started.elapsed(), deadline);
    }
}
