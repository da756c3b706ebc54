//! Where an SSE connection's chunks go: through the one-slot [`handoff`](super::handoff) to
//! the response body hyper writes, or, for an event stream served without hyper
//! ([`direct`](super::direct)), straight to the socket by the connection's own task.

use std::convert::Infallible;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use hyper::body::{Body, Frame};

use super::handoff::{handoff, Giver, Gone, Taker};
use crate::transport::reset::Socket;
use crate::transport::stall::within;

/// One burst: copied framing and small events, and shared large events, in order.
pub(super) type Chunk = Vec<Bytes>;

/// Why a chunk could not be handed over.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error("the reader did not take a chunk for {0:?}")]
    Stalled(Duration),
    #[error("the response body was dropped (client gone)")]
    Gone,
}

/// The connection's way out.
#[derive(Debug)]
pub(super) enum Sink {
    /// To hyper's response body.
    Body(Giver<Chunk>),
    /// To the socket (the response head is already written).
    Socket(Socket),
}

/// The response body of the [`Sink::Body`] way: the chunks the connection's task sends, until
/// it ends.
#[derive(Debug)]
pub(super) struct EventBody {
    /// One chunk (burst) may wait between the task and hyper: enough to keep hyper busy (the
    /// task builds the next while hyper writes this one); every extra one would be memory a
    /// reader that falls behind pins (10,000 lagging readers x 4 x 32 KiB was 1.3 GiB).
    receiver: Taker<Chunk>,
    /// The rest of the chunk being handed to hyper, one part per frame.
    parts: std::vec::IntoIter<Bytes>,
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let body = self.get_mut();
        loop {
            if let Some(part) = body.parts.next() {
                return Poll::Ready(Some(Ok(Frame::data(part))));
            }
            match body.receiver.poll_take(context) {
                Poll::Ready(Some(chunk)) => body.parts = chunk.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Sink {
    /// A sink to hyper's response body, and that body.
    pub(super) fn body() -> (Self, EventBody) {
        let (giver, receiver) = handoff();
        let body = EventBody {
            receiver,
            parts: Vec::new().into_iter(),
        };
        (Self::Body(giver), body)
    }

    /// Sends `chunk`, failing if it is not taken (or written) within `stall`.
    pub(super) async fn send(&mut self, chunk: Chunk, stall: Duration) -> Result<(), SendError> {
        let sent = match self {
            Self::Body(giver) => within(stall, giver.give(chunk))
                .await
                .map(|given| given.map_err(|Gone| SendError::Gone)),
            Self::Socket(socket) => within(stall, write(socket, chunk))
                .await
                .map(|written| written.map_err(|_| SendError::Gone)),
        };
        sent.unwrap_or(Err(SendError::Stalled(stall)))
    }

    /// Completes once the client is gone: the body dropped, or the socket read its end (or
    /// anything: see [`hung_up`]).
    pub(super) async fn closed(&mut self) {
        match self {
            Self::Body(giver) => giver.closed().await,
            Self::Socket(socket) => hung_up(socket).await,
        }
    }

    /// Whether the client is known to be gone (without waiting).
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Self::Body(giver) => giver.is_closed(),
            // Only a read tells, and `closed` does the reading.
            Self::Socket(_) => false,
        }
    }

    /// Completes once the last chunk sent has left: hyper took it (a written chunk has).
    pub(super) async fn taken(&self) {
        if let Self::Body(giver) = self {
            giver.taken().await;
        }
    }
}

/// Writes a chunk's parts vectored, as hyper did for the body (one `writev` per burst, not
/// one write per part). A chunk of one part (small events are copied into one, so nearly
/// every burst of one event) is written with a plain `send`, as the WebSocket writer does:
/// `writev` goes through the VFS (`vfs_writev`, `fdget_pos`: about 5% of the WebSocket
/// relay's samples at 1,000 x 200 events/s).
async fn write(socket: &mut Socket, chunk: Chunk) -> std::io::Result<()> {
    // `write_all`, not `write_all_buf`: the latter is vectored whenever the socket is.
    if let [part] = chunk.as_slice() {
        return socket.write_all(part).await;
    }
    let mut parts = Parts {
        parts: chunk.into_iter().filter(|part| !part.is_empty()).collect(),
        first: 0,
    };
    socket.write_all_buf(&mut parts).await
}

/// A chunk as one [`Buf`], for tokio's vectored `write_all_buf`. Holds no empty part.
struct Parts {
    parts: Chunk,
    /// The first part not yet written in full.
    first: usize,
}

impl Buf for Parts {
    fn remaining(&self) -> usize {
        self.parts[self.first..].iter().map(Bytes::len).sum()
    }

    fn chunk(&self) -> &[u8] {
        self.parts.get(self.first).map_or(&[], |part| part.as_ref())
    }

    fn advance(&mut self, mut count: usize) {
        while count > 0 {
            let Some(part) = self.parts.get_mut(self.first) else {
                return;
            };
            if count < part.len() {
                part.advance(count);
                return;
            }
            count -= part.len();
            self.first += 1;
        }
    }

    fn chunks_vectored<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (part, slice) in self.parts[self.first..].iter().zip(slices.iter_mut()) {
            *slice = IoSlice::new(part);
            filled += 1;
        }
        filled
    }
}

/// Completes when the client hangs up (end of stream or an error), or sends anything: an
/// event-stream client sends nothing after its request, and reading and dropping whatever it
/// sends would be work without end.
async fn hung_up(socket: &mut Socket) {
    std::future::poll_fn(|context| {
        // On the stack, not in the connection's future.
        let mut probe = [0u8; 1];
        let mut buffer = ReadBuf::new(&mut probe);
        match Pin::new(&mut *socket).poll_read(context, &mut buffer) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_advance_across_part_boundaries() {
        let mut parts = Parts {
            parts: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")],
            first: 0,
        };
        assert_eq!(parts.remaining(), 5);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(parts.chunks_vectored(&mut slices), 2);
        parts.advance(3);
        assert_eq!((parts.remaining(), parts.chunk()), (2, &b"de"[..]));
        parts.advance(2);
        assert_eq!((parts.remaining(), parts.chunk()), (0, &b""[..]));
    }
}
