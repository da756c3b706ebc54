//! `ws_echo`: a WebSocket echo server built on the relay's WebSocket stack configuration, for
//! the Autobahn server cases (`scripts/test.d/30-conformance`, run by kosoku).
//!
//! It mirrors `relay/src/transport/ws/`: the hyper upgrade through
//! `fastwebsockets::upgrade`, only the read half of `after_handshake_split` (writes are
//! encoded with `Frame::fmt_head` into one buffer, as the relay's `FrameWriter` does),
//! `set_max_message_size(limit + 1)`, `auto_pong` and `auto_close` on, obligatory replies
//! (pongs, close echoes) written from a `select!` loop while the read future stays pinned,
//! fragments joined under the total size limit with UTF-8 checked at the end, and the same
//! close codes (1009 too big, 1007 invalid UTF-8, 1002 protocol error). The one difference:
//! complete text and binary messages are echoed instead of handed to a session.
//!
//! The relay's modules are private, so this is a port, not a reuse: see docs/BENCHMARKS.md
//! ("WebSocket conformance") for the public hook that would let it run the relay's own code.
//!
//! ```text
//! ws_echo --listen 127.0.0.1:9001 --max-message-bytes 67108864
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, WebSocketRead};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "WebSocket echo server on the relay's fastwebsockets configuration")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Largest message or frame in bytes (the relay's --max-message-bytes; Autobahn case 9
    /// needs 16 MiB).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    max_message_bytes: usize,
    /// How long a write may make no progress before the connection is dropped.
    #[arg(long, default_value_t = 10_000)]
    stall_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("ws_echo listening on {}", listener.local_addr()?);
    let limit = args.max_message_bytes;
    let stall = Duration::from_millis(args.stall_ms);
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Same as the relay: small frames must not wait for Nagle.
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| upgrade(request, limit, stall));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                eprintln!("http connection: {error}");
            }
        });
    }
}

async fn upgrade(
    mut request: Request<Incoming>,
    limit: usize,
    stall: Duration,
) -> Result<Response<Empty<Bytes>>, std::convert::Infallible> {
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
        return Ok(response);
    }
    match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok((response, upgrade)) => {
            tokio::spawn(echo(upgrade, limit, stall));
            Ok(response)
        }
        Err(_) => {
            let mut response = Response::new(Empty::new());
            *response.status_mut() = StatusCode::BAD_REQUEST;
            Ok(response)
        }
    }
}

/// A control frame fastwebsockets obliges us to send.
#[derive(Debug)]
struct Obligation {
    opcode: OpCode,
    payload: Vec<u8>,
}

/// How the connection ends.
#[derive(Debug)]
enum Ending {
    Close(u16, String),
    PeerClosed,
    Drop,
}

/// One echoed connection.
async fn echo(upgrade: UpgradeFut, limit: usize, stall: Duration) {
    let Ok(websocket) = upgrade.await else {
        return;
    };
    let (mut read_half, write_half) = tokio::io::split(websocket.into_inner());
    let (mut reader, _) =
        fastwebsockets::after_handshake_split(&mut read_half, tokio::io::sink(), Role::Server);
    // fastwebsockets refuses a frame whose length is >= its maximum (as in the relay).
    reader.set_max_message_size(limit.saturating_add(1));
    reader.set_auto_pong(true);
    reader.set_auto_close(true);
    let (obligation_sender, mut obligations) = mpsc::channel::<Obligation>(4);
    let mut send = move |frame: Frame<'static>| {
        let sender = obligation_sender.clone();
        let obligation = Obligation {
            opcode: frame.opcode,
            payload: Vec::from(frame.payload),
        };
        async move { sender.send(obligation).await.map_err(|_| LoopGone) }
    };
    let mut writer = Writer::new(write_half, stall);
    let mut assembler = Assembler::new(limit);
    let ending = loop {
        let step = {
            let read = read_message(&mut reader, &mut assembler, &mut send);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    Some(obligation) = obligations.recv() => {
                        writer.push(obligation.opcode, &obligation.payload);
                        if writer.flush().await.is_err() {
                            break Err(Ending::Drop);
                        }
                    }
                    read = &mut read => break Ok(read),
                }
            }
        };
        let message = match step {
            Ok(Ok(message)) => message,
            Ok(Err(error)) => break error.ending(),
            Err(ending) => break ending,
        };
        match message {
            Message::Text(text) => writer.push(OpCode::Text, &text),
            Message::Binary(data) => writer.push(OpCode::Binary, &data),
            Message::Close => break Ending::PeerClosed,
            Message::Nothing => continue,
        }
        if writer.flush().await.is_err() {
            break Ending::Drop;
        }
    };
    drop(reader);
    match ending {
        Ending::Drop => return,
        Ending::Close(code, reason) => writer.close(code, &reason),
        Ending::PeerClosed => {
            while let Ok(obligation) = obligations.try_recv() {
                writer.push(obligation.opcode, &obligation.payload);
            }
            if !writer.closed {
                writer.close(1000, "");
            }
        }
    }
    if writer.flush().await.is_err() {
        return;
    }
    writer.shutdown().await;
    // Linger for the peer's FIN (as the relay does) so our FIN does not turn into a reset.
    let mut scratch = vec![0u8; 4096];
    let drain = async { while let Ok(1..) = read_half.read(&mut scratch).await {} };
    // Timing out just means the peer kept the socket open.
    let _: Result<(), _> = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// The obligation channel's receiver is gone.
#[derive(Debug, thiserror::Error)]
#[error("the connection loop ended")]
struct LoopGone;

/// What one read produced.
#[derive(Debug)]
enum Message {
    Text(BytesMut),
    Binary(BytesMut),
    Close,
    /// A fragment, a pong or anything else that needs no answer.
    Nothing,
}

/// Why reading stopped, with the relay's close codes.
#[derive(Debug)]
enum ReadError {
    TooBig,
    InvalidUtf8,
    Protocol(WebSocketError),
    Gone,
}

impl ReadError {
    fn classify(error: WebSocketError) -> Self {
        match error {
            WebSocketError::FrameTooLarge => ReadError::TooBig,
            WebSocketError::InvalidUTF8 => ReadError::InvalidUtf8,
            WebSocketError::UnexpectedEOF
            | WebSocketError::IoError(_)
            | WebSocketError::SendError(_)
            | WebSocketError::ConnectionClosed
            | WebSocketError::HTTPError(_) => ReadError::Gone,
            other => ReadError::Protocol(other),
        }
    }

    fn ending(self) -> Ending {
        match self {
            ReadError::TooBig => Ending::Close(1009, "message too big".into()),
            ReadError::InvalidUtf8 => Ending::Close(1007, "invalid utf-8".into()),
            ReadError::Protocol(error) => Ending::Close(1002, format!("protocol error: {error}")),
            ReadError::Gone => Ending::Drop,
        }
    }
}

/// Joins fragmented messages under the total size limit (the relay's `Assembler`, keeping
/// binary payloads too since they are echoed).
#[derive(Debug)]
struct Assembler {
    opcode: Option<OpCode>,
    data: BytesMut,
    limit: usize,
}

impl Assembler {
    fn new(limit: usize) -> Self {
        Self {
            opcode: None,
            data: BytesMut::new(),
            limit,
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
                    let bytes = into_bytes(payload);
                    return Ok(match opcode {
                        OpCode::Text => Message::Text(bytes),
                        _ => Message::Binary(bytes),
                    });
                }
                self.opcode = Some(opcode);
                self.data.clear();
                self.append(&payload)?;
                Ok(Message::Nothing)
            }
            OpCode::Continuation => {
                let Some(started) = self.opcode else {
                    return Err(ReadError::Protocol(
                        WebSocketError::InvalidContinuationFrame,
                    ));
                };
                self.append(&payload)?;
                if !fin {
                    return Ok(Message::Nothing);
                }
                self.opcode = None;
                let data = std::mem::take(&mut self.data);
                match started {
                    OpCode::Text if std::str::from_utf8(&data).is_ok() => Ok(Message::Text(data)),
                    OpCode::Text => Err(ReadError::InvalidUtf8),
                    _ => Ok(Message::Binary(data)),
                }
            }
            OpCode::Close => Ok(Message::Close),
            OpCode::Ping | OpCode::Pong => Ok(Message::Nothing),
        }
    }

    fn append(&mut self, payload: &[u8]) -> Result<(), ReadError> {
        if self.data.len().saturating_add(payload.len()) > self.limit {
            return Err(ReadError::TooBig);
        }
        self.data.extend_from_slice(payload);
        Ok(())
    }
}

fn into_bytes(payload: Payload<'_>) -> BytesMut {
    match payload {
        Payload::Bytes(bytes) => bytes,
        other => BytesMut::from(&other[..]),
    }
}

/// Reads frames until one yields a [`Message`]; not cancel safe (keep it pinned).
async fn read_message<S, F, R>(
    reader: &mut WebSocketRead<S>,
    assembler: &mut Assembler,
    send: &mut F,
) -> Result<Message, ReadError>
where
    S: tokio::io::AsyncRead + Unpin,
    F: FnMut(Frame<'static>) -> R,
    R: Future<Output = Result<(), LoopGone>>,
{
    let frame = reader.read_frame(send).await.map_err(ReadError::classify)?;
    assembler.push(frame.fin, frame.opcode, frame.payload)
}

/// Coalescing frame writer (the relay's `FrameWriter`).
#[derive(Debug)]
struct Writer<W> {
    io: W,
    batch: Vec<u8>,
    stall: Duration,
    closed: bool,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn new(io: W, stall: Duration) -> Self {
        Self {
            io,
            batch: Vec::new(),
            stall,
            closed: false,
        }
    }

    fn push(&mut self, opcode: OpCode, payload: &[u8]) {
        if self.closed {
            return;
        }
        let mut frame = Frame::new(true, opcode, None, Payload::Borrowed(payload));
        let mut head = [0u8; 14];
        let size = frame.fmt_head(&mut head);
        self.batch.extend_from_slice(&head[..size]);
        self.batch.extend_from_slice(payload);
        if opcode == OpCode::Close {
            self.closed = true;
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        self.push(OpCode::Close, &payload);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let mut written = 0;
        while written < self.batch.len() {
            let wrote = tokio::time::timeout(self.stall, self.io.write(&self.batch[written..]))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if wrote == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            written += wrote;
        }
        self.io.flush().await?;
        if self.batch.capacity() > 2048 {
            self.batch = Vec::new();
        } else {
            self.batch.clear();
        }
        Ok(())
    }

    async fn shutdown(&mut self) {
        // The peer may be gone already; nothing left to tell it.
        let _ = tokio::time::timeout(self.stall, self.io.shutdown()).await;
    }
}
