//! Test clients for the transports: a WebSocket client on fastwebsockets (with access to raw
//! frames and bytes), an SSE client on hyper's HTTP/1 connection API that parses the event
//! stream as a browser would, and a plain HTTP GET.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use std::sync::Arc;

use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketWrite,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tidewire_shared::sse::{SseItem, SseParser};
use tokio::net::TcpStream;

use crate::support::WAIT;

/// What the WebSocket client read.
#[derive(Debug, PartialEq)]
pub(crate) enum WsItem {
    /// A text message, parsed.
    Json(Value),
    /// A WebSocket ping from the relay (only seen with auto-pong off).
    Ping,
    /// A WebSocket pong from the relay.
    Pong,
    /// A close frame: code and reason.
    Close(u16, String),
    /// The connection ended without a close frame, or failed.
    Gone(String),
}

type WriteSide = WebSocketWrite<tokio::io::WriteHalf<TokioIo<Upgraded>>>;

/// A WebSocket client on a real socket. A task of its own reads the socket and hands whole
/// messages over a channel, so that waiting for one with a timeout never cuts a frame in half
/// (fastwebsockets' `read_frame` is not cancel safe: a timeout in the middle of a big frame
/// would leave the reader inside it).
pub(crate) struct WsClient {
    items: tokio::sync::mpsc::UnboundedReceiver<WsItem>,
    writer: Arc<tokio::sync::Mutex<WriteSide>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for WsClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// What a frame the relay sent means to a test.
fn item_of(frame: &Frame<'_>) -> WsItem {
    match frame.opcode {
        OpCode::Text => {
            WsItem::Json(serde_json::from_slice(&frame.payload).expect("relay sends JSON"))
        }
        OpCode::Ping => WsItem::Ping,
        OpCode::Pong => WsItem::Pong,
        OpCode::Close if frame.payload.len() >= 2 => WsItem::Close(
            u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
            String::from_utf8_lossy(&frame.payload[2..]).into_owned(),
        ),
        OpCode::Close => WsItem::Close(1005, String::new()),
        other => panic!("unexpected {other:?} frame from the relay"),
    }
}

/// An owned copy of `frame` (to hand to the write side).
fn owned(frame: Frame<'_>) -> Frame<'static> {
    Frame::new(
        frame.fin,
        frame.opcode,
        None,
        Payload::Owned(frame.payload.to_vec()),
    )
}

/// The upgrade request for `/v1/ws` on `addr`.
fn ws_request(addr: SocketAddr) -> Request<Empty<Bytes>> {
    ws_request_to(addr, "/v1/ws")
}

fn ws_request_to(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .expect("a valid upgrade request")
}

/// Opens the raw upgraded WebSocket (no fragment collection, auto-pong on).
pub(crate) async fn ws_raw(addr: SocketAddr) -> WebSocket<TokioIo<Upgraded>> {
    let socket = TcpStream::connect(addr)
        .await
        .expect("connect to the relay");
    ws_handshake(addr, socket).await
}

/// Upgrades `socket` (connected to `addr`) to a WebSocket on `/v1/ws`.
pub(crate) async fn ws_handshake(
    addr: SocketAddr,
    socket: TcpStream,
) -> WebSocket<TokioIo<Upgraded>> {
    let (ws, _response) =
        fastwebsockets::handshake::client(&TokioExecutor::new(), ws_request(addr), socket)
            .await
            .expect("websocket handshake");
    ws
}

impl WsClient {
    /// Connects to `/v1/ws`.
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        Self::from_raw(ws_raw(addr).await)
    }

    /// Wraps an upgraded socket.
    pub(crate) fn from_raw(ws: WebSocket<TokioIo<Upgraded>>) -> Self {
        let (read, write) = ws.split(tokio::io::split);
        let writer = Arc::new(tokio::sync::Mutex::new(write));
        let (sender, items) = tokio::sync::mpsc::unbounded_channel();
        let obligations = Arc::clone(&writer);
        let reader = tokio::spawn(async move {
            let mut read = FragmentCollectorRead::new(read);
            loop {
                // Pongs and close echoes go out through the shared write side.
                let mut send = |frame: Frame<'_>| {
                    let frame = owned(frame);
                    let writer = Arc::clone(&obligations);
                    async move { writer.lock().await.write_frame(frame).await }
                };
                let item = match read.read_frame(&mut send).await {
                    Ok(frame) => item_of(&frame),
                    Err(error) => WsItem::Gone(error.to_string()),
                };
                let end = matches!(item, WsItem::Gone(_) | WsItem::Close(..));
                if sender.send(item).is_err() || end {
                    return;
                }
            }
        });
        Self {
            items,
            writer,
            reader,
        }
    }

    /// Connects to `path` (`/v1/ws?access_token=...`) and reads the `connect` advisory.
    pub(crate) async fn connected_to(addr: SocketAddr, path: &str) -> Self {
        let socket = TcpStream::connect(addr)
            .await
            .expect("connect to the relay");
        let (ws, _response) = fastwebsockets::handshake::client(
            &TokioExecutor::new(),
            ws_request_to(addr, path),
            socket,
        )
        .await
        .expect("websocket handshake");
        let mut client = Self::from_raw(ws);
        let first = client.json().await;
        assert_eq!(first["kind"], "connect", "first message: {first}");
        client
    }

    /// Connects and reads the `connect` advisory that opens every connection.
    pub(crate) async fn connected(addr: SocketAddr) -> Self {
        let mut client = Self::connect(addr).await;
        let first = client.json().await;
        assert_eq!(first["type"], "advisory", "first message: {first}");
        assert_eq!(first["kind"], "connect", "first message: {first}");
        client
    }

    /// Sends one frame.
    pub(crate) async fn send_frame(&mut self, frame: Frame<'_>) {
        self.try_send_frame(frame).await.expect("write a frame");
    }

    /// Sends one frame; the relay may have closed the connection meanwhile.
    pub(crate) async fn try_send_frame(&mut self, frame: Frame<'_>) -> Result<(), WebSocketError> {
        self.writer.lock().await.write_frame(owned(frame)).await
    }

    /// Sends a JSON message as a text frame.
    pub(crate) async fn send(&mut self, message: Value) {
        let text = message.to_string().into_bytes();
        self.send_frame(Frame::text(text.into())).await;
    }

    /// Reads the next item, waiting at most [`WAIT`].
    pub(crate) async fn item(&mut self) -> WsItem {
        self.item_within(WAIT)
            .await
            .expect("a websocket frame in time")
    }

    /// Reads the next item, `None` if nothing came within `wait`. Cancel safe.
    pub(crate) async fn item_within(&mut self, wait: Duration) -> Option<WsItem> {
        match tokio::time::timeout(wait, self.items.recv()).await {
            Err(_) => None,
            Ok(Some(item)) => Some(item),
            // The reader ended after handing over the close or the failure.
            Ok(None) => Some(WsItem::Gone("the connection ended".into())),
        }
    }

    /// The next JSON message, skipping `presence` (not this module's concern).
    pub(crate) async fn json(&mut self) -> Value {
        loop {
            match self.item().await {
                WsItem::Json(value) if value["type"] == "presence" => continue,
                WsItem::Json(value) => return value,
                WsItem::Ping | WsItem::Pong => continue,
                other => panic!("expected a JSON message, got {other:?}"),
            }
        }
    }

    /// The next JSON message, which must have this `type`.
    pub(crate) async fn expect(&mut self, kind: &str) -> Value {
        let message = self.json().await;
        assert_eq!(message["type"], kind, "expected {kind}, got {message}");
        message
    }

    /// Reads until the close frame (skipping messages); returns its code and reason.
    pub(crate) async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.item().await {
                WsItem::Close(code, reason) => return (code, reason),
                WsItem::Gone(error) => panic!("connection ended without a close frame: {error}"),
                _ => continue,
            }
        }
    }

    /// Subscribes to a fresh stream and reads the snapshot and `subscribed`; returns the latter.
    pub(crate) async fn subscribe(&mut self, stream: &str) -> Value {
        self.send(serde_json::json!({"type": "subscribe", "stream": stream}))
            .await;
        let snapshot = self.expect("snapshot").await;
        assert_eq!(snapshot["stream"], stream);
        assert_eq!(snapshot["last"], true, "one chunk for a small stream");
        let subscribed = self.expect("subscribed").await;
        assert_eq!(subscribed["stream"], stream);
        subscribed
    }
}

/// One parsed block of an event stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct SseEvent {
    /// The `event:` field.
    pub(crate) event: String,
    /// The `id:` field, if the block had one.
    pub(crate) id: Option<String>,
    /// The `data:` lines joined with LF.
    pub(crate) data: String,
    /// The `retry:` field.
    pub(crate) retry: Option<u64>,
    /// Comment lines (without the colon).
    pub(crate) comments: Vec<String>,
}

impl SseEvent {
    /// The data as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|error| panic!("data of {self:?} is not JSON: {error}"))
    }
}

/// An open `/v1/sse` response.
pub(crate) struct SseClient {
    body: Incoming,
    /// The clients' event-stream parser (`tidewire_shared::sse`).
    parser: SseParser,
    /// What the parser completed and `block` has not returned yet.
    pending: std::collections::VecDeque<SseItem>,
    /// Every byte received, for byte-exact checks.
    pub(crate) raw: Vec<u8>,
}

/// Sends `GET path` with `headers`; returns the status, the headers and the body.
pub(crate) async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Incoming) {
    get_after(addr, None, path, headers).await
}

/// [`get`], after a `GET first` on the same kept-alive connection (read to its end) if
/// `first` is given.
pub(crate) async fn get_after(
    addr: SocketAddr,
    first: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Incoming) {
    let socket = TcpStream::connect(addr)
        .await
        .expect("connect to the relay");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
        .await
        .expect("http handshake");
    tokio::spawn(connection);
    if let Some(first) = first {
        let response = send_get(&mut sender, addr, first, &[]).await;
        tokio::time::timeout(WAIT, response.into_body().collect())
            .await
            .expect("body in time")
            .expect("body");
        sender.ready().await.expect("the connection is kept alive");
    }
    let response = send_get(&mut sender, addr, path, headers).await;
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body)
}

/// Sends `GET path` with `headers` on `sender`'s connection.
async fn send_get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> hyper::Response<Incoming> {
    let mut request = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    sender
        .send_request(request)
        .await
        .expect("an http response")
}

/// `GET path` and the whole body as JSON (for refusals).
pub(crate) async fn get_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let (status, _headers, body) = get(addr, path, headers).await;
    let bytes = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&bytes).expect("a JSON body"))
}

impl SseClient {
    /// Opens `path` (e.g. `/v1/sse?stream=todos`); the answer must be 200.
    pub(crate) async fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (HeaderMap, Self) {
        Self::open_after(addr, None, path, headers).await
    }

    /// [`open`](Self::open), after a `GET first` on the same kept-alive connection if
    /// `first` is given.
    pub(crate) async fn open_after(
        addr: SocketAddr,
        first: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (HeaderMap, Self) {
        let (status, headers, body) = get_after(addr, first, path, headers).await;
        assert_eq!(status, StatusCode::OK, "GET {path}");
        let client = Self {
            body,
            parser: SseParser::new(),
            pending: std::collections::VecDeque::new(),
            raw: Vec::new(),
        };
        (headers, client)
    }

    /// The next block, `None` when the stream ended; waits at most [`WAIT`].
    pub(crate) async fn block(&mut self) -> Option<SseEvent> {
        self.block_within(WAIT).await.expect("an sse block in time")
    }

    /// The next block; the outer `None` if nothing came within `wait`. The relay ends every
    /// retry, comment and event with a blank line, so each is a block of its own.
    pub(crate) async fn block_within(&mut self, wait: Duration) -> Option<Option<SseEvent>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Some(block(item)));
            }
            assert_eq!(
                self.parser.unknown_fields(),
                0,
                "the relay wrote a field SSE does not have: {:?}",
                String::from_utf8_lossy(&self.raw)
            );
            let frame = match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return None,
                Ok(None) => return Some(None),
                Ok(Some(frame)) => frame.expect("the sse body"),
            };
            if let Ok(data) = frame.into_data() {
                self.raw.extend_from_slice(&data);
                self.pending.extend(self.parser.push(&data));
            }
        }
    }

    /// The next event (skipping comments and `presence`); panics if the stream ended.
    pub(crate) async fn event(&mut self) -> SseEvent {
        loop {
            let block = self.block().await.expect("the event stream ended early");
            if block.event.is_empty() || block.event == "presence" {
                continue;
            }
            return block;
        }
    }

    /// Skips events until one named `name`.
    pub(crate) async fn until(&mut self, name: &str) -> SseEvent {
        loop {
            let event = self.event().await;
            if event.event == name {
                return event;
            }
        }
    }

    /// The next event, which must be named `name`.
    pub(crate) async fn expect(&mut self, name: &str) -> SseEvent {
        let event = self.event().await;
        assert_eq!(event.event, name, "expected {name}, got {event:?}");
        event
    }
}

/// One item of the shared parser (`tidewire_shared::sse`) as the block it came in.
fn block(item: SseItem) -> SseEvent {
    match item {
        SseItem::Event(event) => SseEvent {
            event: event.name,
            id: event.id,
            data: event.data,
            ..SseEvent::default()
        },
        SseItem::Comment(comment) => SseEvent {
            comments: vec![comment],
            ..SseEvent::default()
        },
        SseItem::Retry(retry) => SseEvent {
            retry: Some(retry),
            ..SseEvent::default()
        },
    }
}
