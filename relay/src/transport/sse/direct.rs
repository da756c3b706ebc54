//! `GET /v1/sse` served on the socket itself, without hyper's HTTP/1 connection.
//!
//! Why: hyper keeps its read buffer (8 KiB) and its write buffer for as long as a response
//! body streams, and an SSE response streams for the connection's whole life. heaptrack
//! counted about 12 KB of hyper's per idle SSE connection, which was 19.9 KiB in all against
//! 3.9 KiB for an idle WebSocket connection (10,000 connections, docs/BENCHMARKS.md). Here
//! the accept loop peeks at a new connection's first request; if it is an event stream, the
//! request head is parsed with `httparse` and judged as through hyper (`admit`), and the
//! connection's task runs the stream itself, writing to the socket, until it ends and the
//! connection closes (`connection: close`: the end of the body is the end of the
//! connection, no chunked framing). No hyper connection, response body or handoff stays.
//! Anything else, or a request that does not parse here, is left unread for hyper, which
//! answers it (and its errors) as before. An event stream asked for later on a kept-alive
//! connection also goes through hyper.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::http::response::Parts;
use hyper::{Method, Request, Response, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::request::SseRequest;
use super::sink::Sink;
use crate::hub::Hub;
use crate::transport::admission::Admission;
use crate::transport::reset::{Reset, Socket};

/// The request line an event stream starts with.
const ROUTE: &[u8] = b"GET /v1/sse";

/// Headers a request may have to be parsed here; more goes to hyper.
const MAX_HEADERS: usize = 64;

/// How long to wait between looks at a request head that has not fully arrived.
const PARTIAL_WAIT: Duration = Duration::from_millis(5);

/// What a new connection's first bytes are.
#[derive(Debug)]
pub(crate) enum Sniffed {
    /// An event-stream request whose head is `head_len` bytes, not yet read off the socket.
    Sse {
        request: Box<Request<()>>,
        head_len: usize,
    },
    /// Anything else (or nothing yet): hyper's to serve.
    Other,
    /// Nothing arrived within the header timeout: the connection is to be dropped.
    Silent,
}

/// Looks at the first request on `stream` without reading it: waits up to `timeout` for
/// its head (at most `max_head` bytes).
pub(crate) async fn sniff(stream: &TcpStream, max_head: usize, timeout: Duration) -> Sniffed {
    match tokio::time::timeout(timeout, look(stream, max_head)).await {
        Ok(Ok(sniffed)) => sniffed,
        // The peek failed: hyper meets the same error and ends the connection.
        Ok(Err(_)) => Sniffed::Other,
        Err(_) => Sniffed::Silent,
    }
}

async fn look(stream: &TcpStream, max_head: usize) -> io::Result<Sniffed> {
    let mut buffer = vec![0; max_head.min(1024)];
    loop {
        let peeked = stream.peek(&mut buffer).await?;
        let bytes = &buffer[..peeked];
        if peeked == 0 {
            return Ok(Sniffed::Other);
        }
        if bytes.len() <= ROUTE.len() {
            if !ROUTE.starts_with(bytes) {
                return Ok(Sniffed::Other);
            }
        } else if !bytes.starts_with(ROUTE) || !matches!(bytes[ROUTE.len()], b'?' | b' ') {
            return Ok(Sniffed::Other);
        }
        match parse(bytes) {
            Parsed::Complete(request, head_len) => {
                return Ok(Sniffed::Sse { request, head_len });
            }
            Parsed::Other => return Ok(Sniffed::Other),
            Parsed::Partial if peeked == buffer.len() => {
                if buffer.len() >= max_head {
                    // Too large for us; hyper answers it with its own limit.
                    return Ok(Sniffed::Other);
                }
                buffer.resize(max_head.min(buffer.len() * 4), 0);
            }
            // A peek returns at once while any bytes are waiting: do not spin on them.
            Parsed::Partial => tokio::time::sleep(PARTIAL_WAIT).await,
        }
    }
}

enum Parsed {
    Complete(Box<Request<()>>, usize),
    Partial,
    Other,
}

/// Parses a request head; anything unusual (a body, a header that `http` refuses, too many
/// headers) is left to hyper.
fn parse(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let head_len = match head.parse(bytes) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let version = match head.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Parsed::Other,
    };
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(head.path.unwrap_or("/"))
        .version(version);
    for header in head.headers.iter() {
        let has_body = header.name.eq_ignore_ascii_case("transfer-encoding")
            || (header.name.eq_ignore_ascii_case("content-length") && header.value != b"0");
        if has_body {
            return Parsed::Other;
        }
        builder = builder.header(header.name, header.value);
    }
    match builder.body(()) {
        Ok(request) => Parsed::Complete(Box::new(request), head_len),
        Err(_) => Parsed::Other,
    }
}

/// Serves a sniffed event-stream request on `stream`, whose head is still unread: in this
/// task, which becomes the connection's SSE task.
///
/// Not an `async fn` itself: its arguments would be kept in the connection's future for as
/// long as it streams, the request's head (about 200 bytes) among them.
pub(crate) fn serve(
    hub: Arc<Hub>,
    stream: TcpStream,
    request: Box<Request<()>>,
    head_len: usize,
    reset: Reset,
) -> impl std::future::Future<Output = ()> + Send {
    let (head, answer) = answer(&hub, request, reset.clone());
    let socket = Socket::new(stream, reset, hub.reaper.clone());
    // Boxed, and done before the stream starts: a local that was borrowed across an `.await`
    // keeps its room in the future to the end (the socket, the buffers), which would be
    // every idle event stream's.
    let opening = Box::pin(open(hub.config.slow_consumer(), socket, head_len, head));
    async move {
        let Some(mut socket) = opening.await else {
            return;
        };
        match answer {
            Answer::Refuse(body) => Box::pin(refuse(&hub, &mut socket, body)).await,
            Answer::Stream(sse_request, admission) => {
                let admission = *admission;
                super::stream::run(hub, sse_request, admission, Sink::Socket(socket)).await;
            }
        }
    }
}

/// Reads the request's head off the socket and writes the response's; `None` if the client
/// goes or does not read it within `stall`.
async fn open(
    stall: Duration,
    mut socket: Socket,
    head_len: usize,
    head: BytesMut,
) -> Option<Socket> {
    let mut request_head = vec![0; head_len];
    socket.read_exact(&mut request_head).await.ok()?;
    drop(request_head);
    match tokio::time::timeout(stall, socket.write_all(&head)).await {
        Ok(Ok(())) => Some(socket),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Writes a refusal's body and ends the connection.
async fn refuse(hub: &Hub, socket: &mut Socket, body: crate::transport::Body) {
    let rest = async {
        let Ok(body) = body.collect().await;
        socket.write_all(&body.to_bytes()).await?;
        socket.shutdown().await
    };
    // A client that does not read its refusal is not waited for.
    let _ = tokio::time::timeout(hub.config.slow_consumer(), rest).await;
}

/// What to answer a sniffed request with (after its response head).
enum Answer {
    Refuse(crate::transport::Body),
    /// The admission boxed: it is moved into the stream's task, and its room here would stay.
    Stream(SseRequest, Box<Admission>),
}

/// Decides on the request, as [`handle`](super::handle) does through hyper, and adds the
/// CORS headers the router adds there; returns the response head too.
fn answer(hub: &Arc<Hub>, request: Box<Request<()>>, reset: Reset) -> (BytesMut, Answer) {
    match super::admit(hub, &request, reset) {
        Err(mut response) => {
            hub.auth
                .apply_cors(request.headers(), response.headers_mut());
            let (parts, body) = response.into_parts();
            let head = encode_head(&parts, body.size_hint().exact());
            (head, Answer::Refuse(body))
        }
        Ok((sse_request, admission)) => {
            let (mut parts, ()) = Response::new(()).into_parts();
            super::stream_headers(&mut parts.headers);
            hub.auth.apply_cors(request.headers(), &mut parts.headers);
            let head = encode_head(&parts, None);
            (head, Answer::Stream(sse_request, Box::new(admission)))
        }
    }
}

/// The response's status line and headers, with `content-length` when the body's length is
/// known and `connection: close` always.
fn encode_head(parts: &Parts, length: Option<u64>) -> BytesMut {
    let mut head = BytesMut::with_capacity(256);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(parts.status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    head.put_slice(b"\r\n");
    for (name, value) in &parts.headers {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    if let Some(length) = length {
        head.put_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.put_slice(b"connection: close\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> Option<(Box<Request<()>>, usize)> {
        match parse(bytes) {
            Parsed::Complete(request, head_len) => Some((request, head_len)),
            Parsed::Partial | Parsed::Other => None,
        }
    }

    #[test]
    fn an_event_stream_request_parses_with_its_headers() {
        let head = b"GET /v1/sse?stream=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: abc\r\n\r\n";
        let (request, head_len) = parsed(head).expect("complete");
        assert_eq!(head_len, head.len());
        assert_eq!(request.uri().query(), Some("stream=a"));
        assert_eq!(request.headers()["last-event-id"], "abc");
        assert_eq!(request.version(), Version::HTTP_11);
    }

    #[test]
    fn partial_heads_wait_and_odd_ones_go_to_hyper() {
        assert!(matches!(
            parse(b"GET /v1/sse HTTP/1.1\r\nHo"),
            Parsed::Partial
        ));
        for odd in [
            &b"GET /v1/sse HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"GET /v1/sse HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /v1/sse HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET /v1/sse HTTP/2.0\r\n\r\n",
        ] {
            assert!(matches!(parse(odd), Parsed::Other), "{odd:?}");
        }
    }

    #[test]
    fn the_head_says_where_the_body_ends() {
        let (mut parts, ()) = hyper::Response::new(()).into_parts();
        parts.status = hyper::StatusCode::FORBIDDEN;
        parts
            .headers
            .insert("content-type", "application/json".parse().expect("valid"));
        let head = encode_head(&parts, Some(12));
        assert_eq!(
            &head[..],
            b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
              content-length: 12\r\nconnection: close\r\n\r\n"
        );
        let streaming = encode_head(&parts, None);
        assert!(!streaming.windows(14).any(|w| w == b"content-length"));
    }
}
