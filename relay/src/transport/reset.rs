//! Resetting a client connection instead of closing it, for slow consumers.
//!
//! A client that stops reading leaves the relay's socket full of unsent bytes. Closing such a
//! socket normally does not end it: the kernel keeps it (FIN_WAIT1, an orphan) with all those
//! bytes while it waits to send them, and the client's FIN arrives only after everything
//! queued before it, which a closed receive window never lets through. The client does not
//! learn it was dropped, and the memory stays pinned for minutes. An SSE response is worse:
//! hyper, stuck writing the body, never lets the socket go at all.
//!
//! So every accepted socket is a [`Socket`] paired with a [`Reset`]: when a transport gives
//! up on a slow consumer it calls [`Reset::reset`], which makes the socket's drop abort the
//! connection (`SO_LINGER` 0: a TCP reset, the unsent bytes freed at once) and asks the
//! accept loop to drop the HTTP connection that owns it (SSE). An upgraded WebSocket owns its
//! socket itself and drops it when its loop ends. Normal closes are untouched.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::metrics::{Metrics, Transport};
use crate::reaper::Reaper;

/// The switch that turns a connection's close into a reset; shared by the accept loop (which
/// puts it in every request's extensions) and the transport serving the connection.
#[derive(Debug, Clone, Default)]
pub struct Reset {
    inner: Arc<ResetInner>,
}

#[derive(Debug, Default)]
struct ResetInner {
    armed: AtomicBool,
    requested: CancellationToken,
}

impl Reset {
    /// A switch not yet thrown.
    pub fn new() -> Self {
        Self::default()
    }

    /// The switch the accept loop put in `request`'s extensions; a fresh one (which only
    /// marks nothing) for a request that did not come through it.
    pub fn of<B>(request: &hyper::Request<B>) -> Self {
        request
            .extensions()
            .get::<Reset>()
            .cloned()
            .unwrap_or_default()
    }

    /// The connection is to end with a reset: its socket aborts when dropped, and the owner
    /// of the HTTP connection is told to drop it ([`Reset::requested`]).
    pub fn reset(&self) {
        self.inner.armed.store(true, Ordering::Release);
        self.inner.requested.cancel();
    }

    /// Drops a slow consumer: [`Reset::reset`], counted in
    /// `tidewire_slow_consumer_drops_total{transport}`.
    pub fn slow_consumer(&self, metrics: &Metrics, transport: Transport) {
        self.reset();
        metrics.slow_consumer_dropped(transport);
    }

    /// Whether [`Reset::reset`] was called.
    pub fn is_reset(&self) -> bool {
        self.inner.armed.load(Ordering::Acquire)
    }

    /// Completes once [`Reset::reset`] is called.
    pub fn requested(&self) -> WaitForCancellationFuture<'_> {
        self.inner.requested.cancelled()
    }
}

/// An accepted TCP connection that aborts instead of closing once its [`Reset`] is thrown.
#[derive(Debug)]
pub struct Socket {
    /// `None` only once dropped.
    stream: Option<TcpStream>,
    reset: Reset,
    reaper: Reaper,
}

impl Socket {
    /// Wraps `stream`; `reset` decides how it ends, and a reset socket is closed on `reaper`
    /// (the kernel frees its unsent bytes inside that `close`).
    pub fn new(stream: TcpStream, reset: Reset, reaper: Reaper) -> Self {
        Self {
            stream: Some(stream),
            reset,
            reaper,
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if self.reset.is_reset() {
            // SO_LINGER 0 makes the close (when `stream` drops) send a reset and free the
            // unsent bytes. If it fails the socket just closes normally.
            if let Err(error) = stream.set_zero_linger() {
                tracing::debug!(%error, "SO_LINGER 0 not set; closing normally");
            }
            self.reaper.bury(stream);
        }
    }
}

/// Polls `poll` on the socket's stream, or fails if it is gone.
fn with_stream<T>(
    socket: Pin<&mut Socket>,
    poll: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match socket.get_mut().stream() {
        Ok(stream) => poll(Pin::new(stream)),
        Err(error) => Poll::Ready(Err(error)),
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        with_stream(self, |stream| stream.poll_read(context, buf))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_stream(self, |stream| stream.poll_write(context, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with_stream(self, |stream| stream.poll_write_vectored(context, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream(self, |stream| stream.poll_flush(context))
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream(self, |stream| stream.poll_shutdown(context))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Accepts one connection as a [`Socket`], fills it towards a client that never reads,
    /// and drops it; returns what the client's first read then says.
    async fn drop_with_unsent_bytes(reset: bool) -> io::Result<usize> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut client = TcpStream::connect(listener.local_addr()?).await?;
        let (stream, _) = listener.accept().await?;
        let switch = Reset::new();
        let mut socket = Socket::new(stream, switch.clone(), Reaper::spawn()?);
        let chunk = vec![7u8; 64 * 1024];
        // Write until the kernel takes no more (the client does not read).
        loop {
            let write = tokio::io::AsyncWriteExt::write(&mut socket, &chunk);
            match tokio::time::timeout(Duration::from_millis(200), write).await {
                Ok(result) => {
                    result?;
                }
                Err(_) => break,
            }
        }
        if reset {
            switch.reset();
            assert!(switch.is_reset());
        }
        drop(socket);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Read everything the client can get within a second.
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(1), client.read(&mut buf)).await {
                Ok(Ok(0)) => return Ok(total),
                Ok(Ok(read)) => total += read,
                Ok(Err(error)) => return Err(error),
                Err(_) => return Ok(usize::MAX),
            }
        }
    }

    #[tokio::test]
    async fn a_reset_socket_aborts_and_the_peer_learns_at_once() {
        let outcome = drop_with_unsent_bytes(true).await;
        let error = outcome.expect_err("the peer must see a reset, not data and EOF");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    }

    #[tokio::test]
    async fn a_socket_not_reset_closes_normally() {
        // The peer reads every byte queued before the close, then EOF.
        let outcome = drop_with_unsent_bytes(false).await.expect("normal close");
        assert!(outcome > 0 && outcome != usize::MAX, "read {outcome}");
    }

    #[tokio::test]
    async fn requested_completes_once_reset() {
        let switch = Reset::new();
        assert!(!switch.is_reset());
        let waiter = switch.clone();
        let wait = tokio::spawn(async move { waiter.requested().await });
        switch.reset();
        tokio::time::timeout(Duration::from_secs(1), wait)
            .await
            .expect("requested completes")
            .expect("task");
    }
}
