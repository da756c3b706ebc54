//! One WebSocket connection after the upgrade: a single task that waits on the socket's next
//! message, the session's next output (which carries relay shutdown) and one timer (keepalive
//! ping, silence timeout, token expiry), polling the socket and the timer only when they woke
//! it (`wakes.rs`). [`FrameReader::next`] and [`Session::next`] are both cancel safe, so
//! both are recreated every turn. The pong for a ping and the echo of a close are written as
//! their frame is read, before anything a later message causes.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::OpCode;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tidewire_shared::message::{Advisory, AdvisoryKind};
use tidewire_shared::{CloseCode, ErrorCode, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::time::{Instant, Sleep};

use super::reader::{Assembler, FrameReader, Message, ReadError};
use super::wakes::Wakes;
use super::writer::{FrameWriter, WriteError};
use crate::auth::Grant;
use crate::bus::registry::ConnId;
use crate::hub::Hub;
use crate::metrics::{ConnectionGuard, Transport};
use crate::session::{Outgoing, Session};
use crate::transport::admission::{self, Admission};
use crate::transport::reset::Reset;

/// Stop adding ready messages to a burst past this many bytes (the rest follows at once).
/// The bound bounds the copy a connection holds while its reader is behind (small frames are
/// copied into the writer's buffer), and it shrinks as connections grow, so that the bursts
/// of all connections together stay within [`BURST_BUDGET_BYTES`]. Measured on 2 cores:
/// 64 KiB bursts deliver fastest at 1,000 subscribers (929k/s against 716k/s with 16 KiB),
/// 16 KiB bursts at 10,000 (830k/s against 570k/s with 64 KiB).
fn max_burst_bytes(connections: u64) -> usize {
    const MIN: usize = 16 * 1024;
    const MAX: usize = 64 * 1024;
    let connections = usize::try_from(connections.max(1)).unwrap_or(usize::MAX);
    (BURST_BUDGET_BYTES / connections).clamp(MIN, MAX)
}

/// What the write bursts of all WebSocket connections may hold together (see
/// [`max_burst_bytes`]).
const BURST_BUDGET_BYTES: usize = 160 * 1024 * 1024;

/// How long a closing connection waits for the peer's close frame and FIN.
const LINGER: Duration = Duration::from_secs(2);

type Io = TokioIo<Upgraded>;

/// How the loop ended.
#[derive(Debug)]
pub(super) enum Ending {
    /// Send a close frame with this code and reason, then linger for the peer's close.
    Close(CloseCode, String),
    /// The peer closed; the echo of its close frame (this payload) is owed.
    PeerClosed(Bytes),
    /// The socket is gone or stuck: drop it without a word.
    Drop,
}

impl Ending {
    /// How a connection ends after a read failed: with the close code the error calls for,
    /// or silently when the peer cannot receive one.
    pub(super) fn after(error: &ReadError) -> Self {
        match error.close_code() {
            Some(code) => Ending::Close(code, error.to_string()),
            None => Ending::Drop,
        }
    }
}

/// Waits for the upgrade, then runs the connection until it closes.
///
/// The task's future lives as long as the connection, and it is as large as the largest
/// set of values it holds across one `.await` (rustc keeps a moved-from local's slot). So
/// the connection is built in plain functions, and what runs rarely (handling a client
/// message, the keepalive timer, closing) is boxed, allocated only while it runs: the future
/// went from 4.1 KiB to 1.8 KiB (`size_of_val`, release build).
pub(super) async fn run(hub: Arc<Hub>, upgrade: UpgradeFut, admission: Admission) {
    if let Some(io) = upgraded(&hub, upgrade).await {
        live(hub, io, admission).await;
    }
}

/// The upgraded socket, unless the relay stops or the upgrade fails or times out first.
async fn upgraded(hub: &Hub, upgrade: UpgradeFut) -> Option<Io> {
    let upgraded = tokio::select! {
        () = hub.token.cancelled() => return None,
        upgraded = tokio::time::timeout(hub.config.header_timeout(), upgrade) => upgraded,
    };
    match upgraded {
        Ok(Ok(websocket)) => Some(websocket.into_inner()),
        Ok(Err(error)) => {
            tracing::debug!(%error, "websocket upgrade failed");
            None
        }
        Err(_) => {
            tracing::debug!("websocket upgrade timed out");
            None
        }
    }
}

/// Serves an upgraded connection, then closes it.
async fn live(hub: Arc<Hub>, io: Io, admission: Admission) {
    let Admission {
        grant,
        permit,
        reset,
    } = admission;
    let (mut connection, mut reader, mut read_half) = Connection::open(hub, io, grant, reset);
    tracing::debug!(connection = %connection.id, "websocket open");
    let ending = connection.serve(&mut reader, &mut read_half).await;
    drop(reader);
    Box::pin(connection.finish(ending, &mut read_half)).await;
    drop(permit);
}

/// What woke the loop.
enum Turn {
    /// A message from the peer, or why none can come.
    Read(Result<Message, ReadError>),
    /// The keepalive, silence or expiry timer.
    Timer,
    /// The session has something to write (`None`: it is over).
    Outgoing(Option<Outgoing>),
}

/// Everything the loop owns except the read side.
#[derive(Debug)]
struct Connection {
    hub: Arc<Hub>,
    id: ConnId,
    session: Session,
    writer: FrameWriter<WriteHalf<Io>>,
    keepalive: Duration,
    /// When the peer last sent anything (a frame, a pong, a ping).
    last_heard: Instant,
    /// When the next keepalive ping is due.
    next_ping: Instant,
    /// One timer for pings, the silence timeout and token expiry; reset only when
    /// `timer_at` changes.
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    /// Whether the socket or the timer is to be polled (`wakes.rs`).
    wakes: Wakes,
    /// Thrown when the peer is dropped as a slow consumer.
    reset: Reset,
    /// Counts the connection as open until it is dropped.
    _counted: ConnectionGuard,
}

impl Connection {
    /// A connection over `io` for the holder of `grant`, its reader and the read side.
    fn open(
        hub: Arc<Hub>,
        io: Io,
        grant: Grant,
        reset: Reset,
    ) -> (Self, FrameReader, ReadHalf<Io>) {
        let counted = ConnectionGuard::new(&hub.metrics, Transport::WebSocket);
        let (read_half, write_half) = tokio::io::split(io);
        let reader = FrameReader::new(Assembler::new(hub.config.options.max_message_bytes));
        let session = Session::open(Arc::clone(&hub), grant);
        let keepalive = hub.config.keepalive();
        let now = Instant::now();
        let connection = Connection {
            id: session.id(),
            session,
            writer: FrameWriter::new(write_half, hub.config.slow_consumer()),
            keepalive,
            last_heard: now,
            next_ping: now + keepalive,
            timer: Box::pin(tokio::time::sleep_until(now + keepalive)),
            timer_at: now + keepalive,
            wakes: Wakes::new(),
            reset,
            _counted: counted,
            hub,
        };
        (connection, reader, read_half)
    }

    async fn serve(&mut self, reader: &mut FrameReader, read_half: &mut ReadHalf<Io>) -> Ending {
        loop {
            self.arm_timer();
            // What happened is handled after the `select!`, not in its arms: the futures the
            // arms wait on are gone by then, so the task's future holds either them or a
            // handler's, not both (the task: 1,832 -> 1,720 bytes, `size_of_val`, release build).
            // Shutdown reaches the connection through its session, which closes when
            // nudged by it (`nudger.rs`): waiting on the token here put a waiter in a list
            // every connection shares, at each turn.
            let turn = self.turn(reader, read_half).await;
            let ending = match turn {
                // The cold branches are boxed (see `run`).
                Turn::Read(Ok(message)) => Box::pin(self.on_message(message)).await,
                Turn::Read(Err(error)) => Some(self.on_read_error(error)),
                Turn::Timer => Box::pin(self.on_timer()).await,
                Turn::Outgoing(outgoing) => self.on_outgoing(outgoing).await,
            };
            if let Some(ending) = ending {
                return ending;
            }
        }
    }

    /// What wakes the loop next. The socket's read half and the timer are polled first, and
    /// only when their waker marked them (`wakes.rs`); the session at every turn. All three
    /// futures are cancel safe.
    async fn turn(&mut self, reader: &mut FrameReader, read_half: &mut ReadHalf<Io>) -> Turn {
        let mut read = pin!(reader.next(read_half));
        let mut outgoing = pin!(self.session.next());
        let timer = &mut self.timer;
        let wakes = &self.wakes;
        poll_fn(|cx| loop {
            if wakes.take() {
                let mut others = wakes.context();
                if let Poll::Ready(read) = read.as_mut().poll(&mut others) {
                    wakes.mark();
                    return Poll::Ready(Turn::Read(read));
                }
                if timer.as_mut().poll(&mut others).is_ready() {
                    wakes.mark();
                    return Poll::Ready(Turn::Timer);
                }
            }
            if let Poll::Ready(outgoing) = outgoing.as_mut().poll(cx) {
                return Poll::Ready(Turn::Outgoing(outgoing));
            }
            if !wakes.park(cx) {
                return Poll::Pending;
            }
        })
        .await
    }

    /// Points the timer at the earliest of: the next ping, the silence deadline, expiry.
    fn arm_timer(&mut self) {
        let silence = self.last_heard + 2 * self.keepalive;
        let mut at = self.next_ping.min(silence);
        if let Some(expiry) = self.expiry() {
            at = at.min(expiry);
        }
        if at != self.timer_at {
            self.timer_at = at;
            self.timer.as_mut().reset(at);
            // Polled at the next turn, under its new deadline.
            self.wakes.mark();
        }
    }

    /// When the grant expires (re-read every turn: an `auth` message can replace it).
    fn expiry(&self) -> Option<Instant> {
        admission::expiry(self.session.grant())
    }

    async fn on_timer(&mut self) -> Option<Ending> {
        let now = Instant::now();
        if admission::is_expired(self.session.grant()) {
            let reason = "token expired; reconnect with a fresh token".to_owned();
            return Some(Ending::Close(CloseCode::TokenExpired, reason));
        }
        if now >= self.last_heard + 2 * self.keepalive {
            tracing::debug!(connection = %self.id, "keepalive timeout");
            let reason = format!("nothing heard for {:?}", 2 * self.keepalive);
            return Some(Ending::Close(CloseCode::KeepaliveTimeout, reason));
        }
        if now >= self.next_ping {
            self.next_ping = now + self.keepalive;
            self.writer.push(OpCode::Ping, b"");
            if let Err(error) = self.writer.flush().await {
                return Some(self.on_write_error(&error));
            }
        }
        None
    }

    /// Writes `first` and everything else ready (one burst), then flushes.
    async fn on_outgoing(&mut self, first: Option<Outgoing>) -> Option<Ending> {
        let mut next = first;
        if next.is_none() {
            // `next` yields `None` only after a close, which ended the loop already.
            return Some(Ending::Close(CloseCode::Normal, "session ended".into()));
        }
        let limit = max_burst_bytes(
            self.hub
                .metrics
                .open_connections(crate::metrics::Transport::WebSocket),
        );
        let mut frames = 0usize;
        while let Some(outgoing) = next {
            frames += 1;
            if frames == 2 {
                // A burst: room for all of it at once, instead of doubling the buffer frame by
                // frame (the buffer's growth and copies were 8% of the relay's samples).
                self.writer.reserve(limit);
            }
            match outgoing {
                Outgoing::Frame { json, .. } => self.writer.text_shared(&json),
                // The session closes (going away) when the listener stops at shutdown.
                Outgoing::Close { .. } if self.hub.token.is_cancelled() => {
                    return Some(self.on_shutdown())
                }
                Outgoing::Close { code, reason } => return Some(Ending::Close(code, reason)),
            }
            if self.writer.pending() >= limit {
                break;
            }
            next = self.session.ready();
        }
        match self.writer.flush().await {
            Ok(()) => None,
            Err(error) => Some(self.on_write_error(&error)),
        }
    }

    async fn on_message(&mut self, message: Message) -> Option<Ending> {
        self.last_heard = Instant::now();
        match message {
            // Boxed: handling a message (a subscribe's queries, a publish) is a large future.
            Message::Text(text) => Box::pin(self.session.handle_text(&text)).await,
            Message::Binary(_) => {
                let error = ServerMessage::error(
                    None,
                    ErrorCode::BadMessage,
                    "binary messages are not supported; send JSON text",
                );
                self.writer.text(error.encode().as_bytes());
                if let Err(error) = self.writer.flush().await {
                    return Some(self.on_write_error(&error));
                }
            }
            Message::Ping(payload) => {
                self.writer.push(OpCode::Pong, &payload);
                if let Err(error) = self.writer.flush().await {
                    return Some(self.on_write_error(&error));
                }
            }
            Message::Fragment | Message::Pong => {}
            Message::Close(echo) => return Some(Ending::PeerClosed(echo)),
        }
        None
    }

    fn on_read_error(&mut self, error: ReadError) -> Ending {
        tracing::debug!(connection = %self.id, %error, "websocket read ended");
        Ending::after(&error)
    }

    fn on_write_error(&self, error: &WriteError) -> Ending {
        match error {
            WriteError::Stalled(stall) => {
                tracing::warn!(
                    connection = %self.id,
                    ?stall,
                    "slow consumer: websocket writes blocked; resetting the connection"
                );
                self.reset
                    .slow_consumer(&self.hub.metrics, crate::metrics::Transport::WebSocket);
            }
            other => {
                tracing::debug!(connection = %self.id, error = %other, "websocket write failed")
            }
        }
        Ending::Drop
    }

    /// The relay is stopping: a `shutdown` advisory, then close 1001.
    fn on_shutdown(&mut self) -> Ending {
        let advisory = Advisory::new(AdvisoryKind::Shutdown)
            .reason("the relay is shutting down; reconnect and resume");
        self.writer
            .text(ServerMessage::Advisory(advisory).encode().as_bytes());
        Ending::Close(
            CloseCode::GoingAway,
            CloseCode::GoingAway.reason().to_owned(),
        )
    }

    /// Logs and counts the close, then says goodbye (see [`goodbye`]).
    async fn finish(self, ending: Ending, read_half: &mut ReadHalf<Io>) {
        let stall = self.hub.config.slow_consumer().min(LINGER);
        if let Ending::Close(code, reason) = &ending {
            tracing::debug!(connection = %self.id, code = code.code(), %reason, "closing websocket");
            self.hub.metrics.disconnect(*code);
        }
        // The session is over: leave the bus before waiting on the socket. Its queue is
        // released off the workers (see `Reaper`).
        self.hub.reaper.bury(self.session);
        let closed = goodbye(self.writer, ending, read_half, stall).await;
        if let Err(WriteError::Stalled(stall)) = closed {
            tracing::debug!(connection = %self.id, ?stall, "close frame not taken; resetting");
            self.reset.reset();
        }
    }
}

/// Ends a connection whose loop is done: sends our close frame (or, after the peer's close,
/// its echo), half-closes within `stall`, and
/// waits briefly for the peer to close so that unread input does not turn our FIN into a
/// reset that loses the frame. [`Ending::Drop`] just drops the socket.
///
/// # Errors
///
/// The [`WriteError`] of a close frame that could not be written within `stall`.
pub(super) async fn goodbye<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    ending: Ending,
    read_half: &mut ReadHalf<Io>,
    stall: Duration,
) -> Result<(), WriteError> {
    match ending {
        Ending::Drop => return Ok(()),
        Ending::Close(code, reason) => writer.close(code.code(), &reason),
        Ending::PeerClosed(echo) => writer.push(OpCode::Close, &echo),
    }
    writer.flush_within(stall).await?;
    writer.shutdown(stall).await;
    drop(writer);
    linger(read_half).await;
    Ok(())
}

/// Reads and discards until EOF, an error, or [`LINGER`].
async fn linger(read_half: &mut ReadHalf<Io>) {
    let mut scratch = vec![0u8; 4096];
    let drain = async { while let Ok(1..) = read_half.read(&mut scratch).await {} };
    // Timing out just means the peer kept the socket open; we close it now.
    let _: Result<(), _> = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::max_burst_bytes;

    #[test]
    fn bursts_shrink_as_connections_grow_within_bounds() {
        assert_eq!(max_burst_bytes(0), 64 * 1024);
        assert_eq!(max_burst_bytes(1_000), 64 * 1024);
        assert_eq!(max_burst_bytes(5_120), 32 * 1024);
        assert_eq!(max_burst_bytes(10_240), 16 * 1024);
        assert_eq!(max_burst_bytes(20_000), 16 * 1024);
        assert_eq!(max_burst_bytes(u64::MAX), 16 * 1024);
    }
}
