//! Lean client transports for the load generator: a WebSocket over a plain TCP socket (the
//! HTTP upgrade written and parsed by hand, then fastwebsockets in client role) and an SSE
//! stream (HTTP/1.1 request, chunked body, `event:`/`id:`/`data:` lines). No hyper client per
//! connection, so 10,000 of them fit in one process.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use tidewire_shared::sse::{SseItem, SseParser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// Largest HTTP response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect or I/O failure.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The server answered with this HTTP status instead of upgrading or streaming.
    #[error("http status {0}")]
    Status(u16),
    /// The answer was not HTTP.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The attempt took too long.
    #[error("timed out")]
    Timeout,
}

/// A TCP stream that first yields bytes already read past the HTTP head.
#[derive(Debug)]
pub struct Prefixed {
    prefix: BytesMut,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let take = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..take]);
            self.prefix.advance(take);
            if self.prefix.is_empty() {
                // Give the memory back: idle connections should stay small.
                self.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(context, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(context, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Opens a TCP connection, optionally with a small receive buffer (stalled consumers).
///
/// # Errors
///
/// When the socket cannot be created or the connection fails.
pub async fn tcp(addr: SocketAddr, recv_buffer: Option<u32>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads the HTTP response head; returns the status and the bytes read past it.
async fn read_head(
    stream: &mut TcpStream,
) -> Result<(u16, Vec<(String, String)>, BytesMut), ConnectError> {
    let mut buffer = BytesMut::with_capacity(1024);
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut slots);
        match response.parse(&buffer) {
            Ok(httparse::Status::Complete(length)) => {
                let status = response
                    .code
                    .ok_or_else(|| ConnectError::Malformed("no status code".into()))?;
                let headers = response
                    .headers
                    .iter()
                    .map(|header| {
                        (
                            header.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(header.value).trim().to_owned(),
                        )
                    })
                    .collect();
                buffer.advance(length);
                return Ok((status, headers, buffer));
            }
            Ok(httparse::Status::Partial) => {}
            Err(error) => return Err(ConnectError::Malformed(format!("response head: {error}"))),
        }
        if buffer.len() > MAX_HEAD {
            return Err(ConnectError::Malformed("response head too large".into()));
        }
        if stream.read_buf(&mut buffer).await? == 0 {
            return Err(ConnectError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A client WebSocket.
pub type Ws = WebSocket<Prefixed>;

/// Connects and upgrades `GET {path}` on `addr` (e.g. `/v1/ws`).
///
/// # Errors
///
/// [`ConnectError`]; a refusal (503 overloaded, 401, ...) is [`ConnectError::Status`].
pub async fn websocket(
    addr: SocketAddr,
    path: &str,
    recv_buffer: Option<u32>,
    timeout: Duration,
) -> Result<Ws, ConnectError> {
    let attempt = async {
        let mut stream = tcp(addr, recv_buffer).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let (status, _, rest) = read_head(&mut stream).await?;
        if status != 101 {
            return Err(ConnectError::Status(status));
        }
        let mut websocket = WebSocket::after_handshake(
            Prefixed {
                prefix: rest,
                inner: stream,
            },
            Role::Client,
        );
        websocket.set_auto_pong(true);
        websocket.set_auto_close(true);
        websocket.set_max_message_size(64 << 20);
        Ok(websocket)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// Sends one text message.
///
/// # Errors
///
/// When the write fails.
pub async fn send_text(
    websocket: &mut Ws,
    text: &str,
) -> Result<(), fastwebsockets::WebSocketError> {
    websocket
        .write_frame(Frame::new(
            true,
            OpCode::Text,
            None,
            Payload::Owned(text.as_bytes().to_vec()),
        ))
        .await
}

/// An SSE response body being read.
#[derive(Debug)]
pub struct Sse {
    stream: TcpStream,
    /// Raw bytes not yet decoded from the chunked encoding.
    raw: BytesMut,
    /// Decoded body bytes not yet split into lines.
    body: BytesMut,
    /// Whether the body is chunked (else it runs to EOF).
    chunked: bool,
    /// Bytes left in the current chunk.
    chunk_left: usize,
    /// The terminating zero-size chunk arrived.
    ended: bool,
    /// The clients' event-stream parser (`tidewire_shared::sse`).
    parser: SseParser,
    /// What the parser completed and `next_event` has not returned yet.
    pending: VecDeque<SseItem>,
    /// When bytes (events or heartbeat comments) last arrived.
    last_activity: std::time::Instant,
}

/// One SSE event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (`message` when the event named none; empty for a comment).
    pub event: String,
    /// `id:`, if the event set one.
    pub id: Option<String>,
    /// `data:` lines joined with `\n` (a comment's text when `comment`).
    pub data: Vec<u8>,
    /// A comment line (`: heartbeat`), reported as a sign of life; not an event.
    pub comment: bool,
}

/// Opens `GET {path}` as an event stream, with `Last-Event-ID` if given (and `SO_RCVBUF` set
/// to `recv_buffer`, if given).
///
/// # Errors
///
/// [`ConnectError`]; a refusal is [`ConnectError::Status`].
pub async fn sse(
    addr: SocketAddr,
    path: &str,
    last_event_id: Option<&str>,
    recv_buffer: Option<u32>,
    timeout: Duration,
) -> Result<Sse, ConnectError> {
    let attempt = async {
        let mut stream = tcp(addr, recv_buffer).await?;
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let (status, headers, rest) = read_head(&mut stream).await?;
        if status != 200 {
            return Err(ConnectError::Status(status));
        }
        let chunked = headers
            .iter()
            .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
        Ok(Sse {
            stream,
            raw: rest,
            body: BytesMut::new(),
            chunked,
            chunk_left: 0,
            ended: false,
            parser: SseParser::new(),
            pending: VecDeque::new(),
            last_activity: std::time::Instant::now(),
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

impl Sse {
    /// How long since any byte arrived (heartbeat comments included).
    pub fn silent_for(&self) -> Duration {
        self.last_activity.elapsed()
    }

    /// The next complete event or comment (a heartbeat, `comment` set); `Ok(None)` at the end
    /// of the stream. `retry:` is skipped. Cancel safe: partial input stays buffered.
    ///
    /// # Errors
    ///
    /// I/O errors and malformed chunked encoding.
    pub async fn next_event(&mut self) -> io::Result<Option<SseEvent>> {
        loop {
            match self.pending.pop_front() {
                Some(SseItem::Event(event)) => {
                    return Ok(Some(SseEvent {
                        event: event.name,
                        id: event.id,
                        data: event.data.into_bytes(),
                        comment: false,
                    }))
                }
                Some(SseItem::Comment(text)) => {
                    return Ok(Some(SseEvent {
                        data: text.into_bytes(),
                        comment: true,
                        ..SseEvent::default()
                    }))
                }
                Some(SseItem::Retry(_)) => continue,
                None => {}
            }
            if !self.body.is_empty() {
                let body = self.body.split();
                self.pending.extend(self.parser.push(&body));
                continue;
            }
            if !self.decode_chunks()? {
                if self.ended || self.stream.read_buf(&mut self.raw).await? == 0 {
                    return Ok(None);
                }
                self.last_activity = std::time::Instant::now();
            }
        }
    }

    /// Moves decoded body bytes from `raw` to `body`; false if more input is needed.
    fn decode_chunks(&mut self) -> io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        if !self.chunked {
            if self.raw.is_empty() {
                return Ok(false);
            }
            let raw = self.raw.split();
            self.body.extend_from_slice(&raw);
            return Ok(true);
        }
        let mut progressed = false;
        loop {
            if self.chunk_left > 0 {
                if self.raw.is_empty() {
                    return Ok(progressed);
                }
                let take = self.chunk_left.min(self.raw.len());
                let bytes = self.raw.split_to(take);
                self.body.extend_from_slice(&bytes);
                self.chunk_left -= take;
                progressed = true;
                continue;
            }
            // A chunk header: optional CRLF ending the previous chunk, then "size\r\n".
            if self.raw.starts_with(b"\r\n") {
                self.raw.advance(2);
            }
            let Some(end) = find(&self.raw, b"\r\n") else {
                return Ok(progressed);
            };
            let size_text = std::str::from_utf8(&self.raw[..end])
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size not utf-8"))?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            self.raw.advance(end + 2);
            if size == 0 {
                self.ended = true;
                return Ok(progressed);
            }
            self.chunk_left = size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn sse_chunks_and_fields_are_decoded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = vec![0u8; 1024];
            let read = socket.read(&mut request).await.expect("read");
            let request = String::from_utf8_lossy(&request[..read]).into_owned();
            let body = "retry: 1000\n\n: hb\n\nevent: event\nid: 1;s,7,3\ndata: {\"a\":1}\n\ndata: x\r\ndata: y\n\n";
            let (first, second) = body.split_at(30);
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
                 {:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
                first.len(),
                second.len()
            );
            for piece in response.as_bytes().chunks(7) {
                socket.write_all(piece).await.expect("write");
            }
            request
        });
        let mut events = sse(
            addr,
            "/v1/sse?stream=s",
            Some("1;s,7,2"),
            None,
            Duration::from_secs(5),
        )
        .await
        .expect("connects");
        let heartbeat = events
            .next_event()
            .await
            .expect("reads")
            .expect("a comment");
        assert!(heartbeat.comment, "{heartbeat:?}");
        assert_eq!(heartbeat.data, b"hb");
        let first = events.next_event().await.expect("reads").expect("an event");
        assert_eq!(first.event, "event");
        assert_eq!(first.id.as_deref(), Some("1;s,7,3"));
        assert_eq!(first.data, b"{\"a\":1}");
        let second = events.next_event().await.expect("reads").expect("an event");
        assert_eq!(second.data, b"x\ny");
        assert_eq!(
            events.next_event().await.expect("reads"),
            None,
            "the last chunk ends the stream"
        );
        let request = server.await.expect("server");
        assert!(request.contains("Last-Event-ID: 1;s,7,2\r\n"), "{request}");
    }

    #[tokio::test]
    async fn refusals_report_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = vec![0u8; 1024];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let result = websocket(addr, "/v1/ws", None, Duration::from_secs(5)).await;
        assert!(
            matches!(result, Err(ConnectError::Status(503))),
            "a 503 refusal"
        );
    }
}
