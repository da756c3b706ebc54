//! One WebSocket connection to the relay: the client handshake (fastwebsockets over hyper,
//! the relay's own WebSocket stack), a reader task that decodes server messages, and the
//! write half the [driver](super::driver) writes client messages to.
//!
//! The read half runs in its own task because fastwebsockets' `read_frame` is not cancel
//! safe (a cancelled read loses a partly parsed header), so it must never sit in a
//! `select!`. Frames the protocol obliges us to answer (pong, the close echo) travel back to
//! the driver through the same channel as messages, which keeps their order.

use bytes::Bytes;
use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError, WebSocketWrite,
};
use http_body_util::Empty;
use hyper::header::{AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tidewire_shared::ending::{ending, Closed, Reconnect};
use tidewire_shared::message::decode_server;
use tidewire_shared::{ClientMessage, DecodeLimits, ServerMessage};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{ClientConfig, Endpoint};
use super::error::ClientError;

/// Deepest JSON nesting accepted from the relay: serde_json's own recursion limit, so event
/// data written by SQL triggers (any depth PostgreSQL accepts up to that) still decodes.
const MAX_DEPTH: usize = 128;

/// Messages buffered between the reader task and the driver; a full buffer stops reading,
/// which pushes back on the relay through TCP.
const INBOUND_CAPACITY: usize = 256;

/// The upgraded socket's halves.
type Io = TokioIo<Upgraded>;

/// What the reader task hands the driver.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A decoded server message.
    Message(ServerMessage),
    /// A text message that failed to decode (skipped, counted).
    Malformed(String),
    /// A control frame we must send back (pong to a ping, echo of a close).
    Reply(OpCode, Vec<u8>),
    /// The relay closed the connection with this code (`None`: no code) and reason.
    Closed { code: Option<u16>, reason: String },
    /// Reading failed (connection reset, protocol error, oversize message).
    Failed(String),
}

/// An open connection.
#[derive(Debug)]
pub(crate) struct Socket {
    pub(crate) writer: Writer,
    pub(crate) inbound: mpsc::Receiver<Inbound>,
    /// The reader task; aborted when the guard is dropped.
    pub(crate) reader: ReaderGuard,
}

/// Aborts the reader task on drop, so an abandoned connection's socket is closed.
#[derive(Debug)]
pub(crate) struct ReaderGuard(JoinHandle<()>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The write half.
pub(crate) struct Writer {
    inner: WebSocketWrite<WriteHalf<Io>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Writes one client message as a text frame.
    pub(crate) async fn send(&mut self, message: &ClientMessage) -> Result<(), WebSocketError> {
        let text = message.encode();
        self.inner
            .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
            .await
    }

    /// Writes a control frame the reader was obliged to answer.
    pub(crate) async fn reply(
        &mut self,
        opcode: OpCode,
        payload: Vec<u8>,
    ) -> Result<(), WebSocketError> {
        if self.inner.is_closed() {
            return Ok(());
        }
        self.inner
            .write_frame(Frame::new(true, opcode, None, Payload::Owned(payload)))
            .await
    }

    /// Flushes what was written.
    pub(crate) async fn flush(&mut self) -> Result<(), WebSocketError> {
        self.inner.flush().await
    }

    /// Sends a close frame (best effort: the connection is being abandoned anyway).
    pub(crate) async fn close(&mut self, code: u16, reason: &str) {
        if self.inner.is_closed() {
            return;
        }
        let _ = self
            .inner
            .write_frame(Frame::close(code, reason.as_bytes()))
            .await;
        let _ = self.inner.flush().await;
    }
}

/// A failed connection attempt, and whether and when to try again.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: ClientError,
    pub(crate) reconnect: Reconnect,
}

/// Connects to the relay, performs the WebSocket handshake and starts the reader task.
///
/// # Errors
///
/// [`ClientError::Refused`] when the upgrade's answer means retrying cannot help (401/403:
/// the token is not accepted), [`ClientError::Connect`] for everything else (including the
/// timeout), with what the shared [`ending`] rule says to do next.
pub(crate) async fn connect(endpoint: &Endpoint, config: &ClientConfig) -> Result<Socket, Failed> {
    let connect_error = |reason: String| Failed {
        error: ClientError::Connect {
            url: config.url.clone(),
            reason,
        },
        reconnect: Reconnect::Resume,
    };
    let handshake = handshake(endpoint, config.token.as_deref());
    let upgraded = match tokio::time::timeout(config.connect_timeout, handshake).await {
        Err(_) => {
            return Err(connect_error(format!(
                "timed out after {:?}",
                config.connect_timeout
            )))
        }
        Ok(Err(HandshakeError::Io(error))) => return Err(connect_error(error.to_string())),
        Ok(Err(HandshakeError::WebSocket(WebSocketError::InvalidStatusCode(status)))) => {
            let verdict = ending(&Closed {
                http_status: Some(status),
                ..Closed::default()
            });
            let reason = format!(
                "http status {status} on the websocket upgrade ({})",
                verdict.name
            );
            return Err(match verdict.reconnect {
                Reconnect::NewToken | Reconnect::Never => Failed {
                    error: ClientError::Refused { reason },
                    reconnect: verdict.reconnect,
                },
                Reconnect::Resume | Reconnect::Later => Failed {
                    reconnect: verdict.reconnect,
                    ..connect_error(reason)
                },
            });
        }
        Ok(Err(HandshakeError::WebSocket(error))) => return Err(connect_error(error.to_string())),
        Ok(Ok(upgraded)) => upgraded,
    };
    let (mut read, write) = upgraded.split(tokio::io::split);
    // fastwebsockets checks each frame against this; the decoder checks the whole message.
    read.set_max_message_size(config.max_message_bytes.saturating_add(1));
    let mut read = FragmentCollectorRead::new(read);
    let limits = DecodeLimits {
        max_bytes: config.max_message_bytes,
        max_depth: MAX_DEPTH,
    };
    let (sender, inbound) = mpsc::channel(INBOUND_CAPACITY);
    let reader = tokio::spawn(async move {
        read_loop(&mut read, &sender, &limits).await;
    });
    Ok(Socket {
        writer: Writer { inner: write },
        inbound,
        reader: ReaderGuard(reader),
    })
}

#[derive(Debug)]
enum HandshakeError {
    Io(std::io::Error),
    WebSocket(WebSocketError),
}

async fn handshake(
    endpoint: &Endpoint,
    token: Option<&str>,
) -> Result<fastwebsockets::WebSocket<Io>, HandshakeError> {
    let tcp = TcpStream::connect(&endpoint.authority)
        .await
        .map_err(HandshakeError::Io)?;
    // Small messages (publishes, acks) must not wait for Nagle.
    tcp.set_nodelay(true).map_err(HandshakeError::Io)?;
    let mut request = Request::builder()
        .method("GET")
        .uri(endpoint.ws_path.as_str())
        .header(HOST, endpoint.authority.as_str())
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13");
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|error| HandshakeError::Io(std::io::Error::other(error)))?;
    let (websocket, _response) =
        fastwebsockets::handshake::client(&TokioExecutor::new(), request, tcp)
            .await
            .map_err(HandshakeError::WebSocket)?;
    Ok(websocket)
}

/// Reads frames until the connection ends, forwarding messages and obligated replies.
async fn read_loop(
    read: &mut FragmentCollectorRead<ReadHalf<Io>>,
    sender: &mpsc::Sender<Inbound>,
    limits: &DecodeLimits,
) {
    loop {
        let mut obliged = |frame: Frame<'_>| {
            let sender = sender.clone();
            let opcode = frame.opcode;
            let payload = frame.payload.to_vec();
            async move {
                sender
                    .send(Inbound::Reply(opcode, payload))
                    .await
                    .map_err(|_| std::io::Error::other("the driver is gone"))
            }
        };
        let inbound = match read.read_frame(&mut obliged).await {
            Ok(frame) => match frame.opcode {
                OpCode::Text => match decode_server(&frame.payload, limits) {
                    Ok(message) => Inbound::Message(message),
                    Err(error) => Inbound::Malformed(error.to_string()),
                },
                OpCode::Binary => Inbound::Malformed("binary frame".into()),
                OpCode::Close => {
                    let (code, reason) = parse_close(&frame.payload);
                    let _ = sender.send(Inbound::Closed { code, reason }).await;
                    return;
                }
                OpCode::Ping | OpCode::Pong | OpCode::Continuation => continue,
            },
            Err(error) => {
                let _ = sender.send(Inbound::Failed(error.to_string())).await;
                return;
            }
        };
        if sender.send(inbound).await.is_err() {
            return;
        }
    }
}

/// The code and reason of a close frame's payload.
fn parse_close(payload: &[u8]) -> (Option<u16>, String) {
    match payload {
        [high, low, reason @ ..] => (
            Some(u16::from_be_bytes([*high, *low])),
            String::from_utf8_lossy(reason).into_owned(),
        ),
        _ => (None, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(&[]), (None, String::new()));
        assert_eq!(parse_close(&[0x03]), (None, String::new()));
        assert_eq!(
            parse_close(&[0x03, 0xe9, b'b', b'y', b'e']),
            (Some(1001), "bye".into())
        );
    }
}
