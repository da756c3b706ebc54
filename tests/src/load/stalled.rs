//! Stalled consumers: WebSocket and SSE clients with a tiny receive buffer that subscribe and
//! then never read. The relay must drop each within its slow-consumer deadline. It resets
//! them (a TCP RST), so each socket learns it on its own: an error (or an end of stream)
//! becomes ready on the socket without a byte being read. Nothing is polled: a task per
//! socket parks on that readiness, so watching costs the healthy clients nothing. (A relay
//! that merely closed such a socket would never be seen to: its FIN waits behind unsent bytes
//! that the closed receive window never lets through. That is what the client sees too.)

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::histogram::{Histogram, Summary};
use super::transport;

/// Receive buffer of a stalled socket (the kernel may round it up).
const RECV_BUFFER: u32 = 4096;

/// Stalled sockets being watched, one task each.
#[derive(Debug)]
pub struct Stalled {
    watchers: Vec<JoinHandle<Option<Duration>>>,
    opened_sse: u64,
    failed: u64,
    stop: CancellationToken,
}

/// What happened to the stalled sockets.
#[derive(Debug, Clone, Serialize)]
pub struct StalledReport {
    /// Sockets opened and subscribed (WebSocket and SSE).
    pub opened: u64,
    /// Of those, SSE.
    pub opened_sse: u64,
    /// Sockets that could not connect.
    pub failed: u64,
    /// Sockets the relay disconnected before the end.
    pub disconnected: u64,
    /// Time from subscribing to being disconnected, ms.
    pub disconnect_after_ms: Summary,
}

/// Opens `ws` WebSocket and `sse` SSE stalled consumers of `stream` on `relay`.
pub async fn open(
    relay: SocketAddr,
    stream: &str,
    ws: usize,
    sse: usize,
    timeout: Duration,
) -> Stalled {
    let mut sockets = Vec::with_capacity(ws + sse);
    let mut failed = 0;
    let mut opened_sse = 0;
    let subscribe =
        serde_json::json!({"type": "subscribe", "stream": stream, "snapshot": false}).to_string();
    let ws_request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {relay}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    // The 101 head and whatever follows stay unread: this consumer never reads.
    let mut ws_bytes = ws_request.into_bytes();
    ws_bytes.extend_from_slice(&masked_text_frame(subscribe.as_bytes()));
    let sse_bytes =
        format!("GET /v1/sse?stream={stream} HTTP/1.1\r\nHost: {relay}\r\n\r\n").into_bytes();
    for index in 0..ws + sse {
        let is_sse = index >= ws;
        let request = if is_sse { &sse_bytes } else { &ws_bytes };
        match open_one(relay, request, timeout).await {
            Ok(socket) => {
                sockets.push(socket);
                opened_sse += u64::from(is_sse);
            }
            Err(_) => failed += 1,
        }
    }
    let stop = CancellationToken::new();
    let opened_at = Instant::now();
    let watchers = sockets
        .into_iter()
        .map(|socket| tokio::spawn(watch(socket, opened_at, stop.clone())))
        .collect();
    Stalled {
        watchers,
        opened_sse,
        failed,
        stop,
    }
}

async fn open_one(relay: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<TcpStream> {
    let attempt = async {
        let mut stream = transport::tcp(relay, Some(RECV_BUFFER)).await?;
        stream.write_all(request).await?;
        Ok(stream)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Holds `socket` without reading until the relay drops it (then returns how long after
/// `opened_at`) or until `stop` (then `None`).
async fn watch(socket: TcpStream, opened_at: Instant, stop: CancellationToken) -> Option<Duration> {
    tokio::select! {
        () = stop.cancelled() => None,
        dropped = dropped(&socket) => dropped.ok().map(|()| opened_at.elapsed()),
    }
}

/// Completes when the peer resets or closes `socket`, reading nothing.
///
/// # Errors
///
/// When the socket cannot be polled at all.
async fn dropped(socket: &TcpStream) -> io::Result<()> {
    loop {
        let ready = socket.ready(Interest::READABLE | Interest::ERROR).await?;
        // "Closed" readiness is final in tokio; an error is reported until taken.
        if ready.is_error() || ready.is_read_closed() {
            return Ok(());
        }
        // Bytes arrived (they stay unread): forget that and wait for the next change.
        let _ = socket.try_io(Interest::READABLE, || {
            Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
        });
    }
}

/// A client text frame (masked with a zero key, which RFC 6455 allows).
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match payload.len() {
        length @ 0..=125 => frame.push(0x80 | length as u8),
        length @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

impl Stalled {
    /// Stops watching, closes the sockets, and reports.
    pub async fn finish(self) -> StalledReport {
        self.stop.cancel();
        let opened = self.watchers.len() as u64;
        let histogram = Histogram::new();
        let mut disconnected = 0;
        for watcher in self.watchers {
            if let Ok(Some(after)) = watcher.await {
                disconnected += 1;
                histogram.record(after.as_millis() as u64);
            }
        }
        StalledReport {
            opened,
            opened_sse: self.opened_sse,
            failed: self.failed,
            disconnected,
            disconnect_after_ms: histogram.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_masked_text() {
        let frame = masked_text_frame(b"{}");
        assert_eq!(frame, vec![0x81, 0x82, 0, 0, 0, 0, b'{', b'}']);
        let long = masked_text_frame(&[b'x'; 300]);
        assert_eq!(&long[..4], &[0x81, 0x80 | 126, 1, 44]);
    }

    /// A connected pair: the client end (4 KiB receive buffer) and the accepted end.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = transport::tcp(addr, Some(RECV_BUFFER))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn a_reset_is_seen_without_reading_and_unread_bytes_are_not() {
        let (client, mut server) = pair().await;
        let watching = tokio::spawn(async move {
            let seen = tokio::time::timeout(Duration::from_secs(5), dropped(&client)).await;
            (seen.is_ok(), client)
        });
        // Bytes the client never reads do not count as a drop.
        server.write_all(&[7u8; 2048]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!watching.is_finished(), "unread bytes taken for a drop");
        server.set_zero_linger().expect("SO_LINGER 0");
        drop(server);
        let (seen, _client) = watching.await.expect("task");
        assert!(seen, "the reset was not seen");
    }

    #[tokio::test]
    async fn a_normal_close_is_seen_too() {
        let (client, server) = pair().await;
        drop(server);
        let seen = tokio::time::timeout(Duration::from_secs(5), dropped(&client)).await;
        assert!(matches!(seen, Ok(Ok(()))), "{seen:?}");
    }
}
