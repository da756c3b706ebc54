//! One SSE connection: a task subscribes the requested streams, then turns the session's
//! output into SSE events and sends them, a burst per chunk, to its [`Sink`]: through a
//! one-slot [`handoff`](super::handoff) to the response body that hyper drains as it writes
//! ([`EventBody`](super::sink::EventBody)), or straight to the socket
//! ([`direct`](super::direct)).
//!
//! The sink is the backpressure: a reader that does not read fills the socket, hyper stops
//! polling the body (the slot stays full) or the write waits, and the task waits; a chunk
//! that cannot be sent for `--slow-consumer-ms` ends the connection. The task keeps the
//! connection's [`Cursor`] and stamps every event that moves a position with `id: <cursor>`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidewire_shared::message::{Advisory, AdvisoryKind, Subscribe};
use tidewire_shared::{ClientMessage, CloseCode, Cursor, ServerMessage};
use tokio::time::Instant;

use super::frame;
use super::request::SseRequest;
use super::sink::{Chunk, SendError, Sink};
use crate::auth::Grant;
use crate::bus::registry::ConnId;
use crate::bus::DeliveryKind;
use crate::hub::Hub;
use crate::session::{Outgoing, Session};
use crate::transport::admission::{expiry, is_expired, Admission};
use crate::transport::reset::Reset;

/// Stop adding ready messages to a chunk past this many bytes. Large bursts are what make
/// fan-out cheap (one chunk, one `write` for a hundred events); 16 KiB measured slower.
const MAX_CHUNK_BYTES: usize = 32 * 1024;

/// Event data of at least this many bytes is not copied into the chunk: the chunk refers to
/// the encoded event shared by every subscriber (both sinks write the parts vectored). Below
/// it a copy is cheaper than a part.
const SHARE_FROM: usize = 512;

/// How long the last words (shutdown advisory, close event) may wait for a slow reader.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// Subscribes the request's streams and streams the session until it ends.
pub(super) async fn run(hub: Arc<Hub>, request: SseRequest, admission: Admission, sink: Sink) {
    let Admission {
        grant,
        permit,
        reset,
    } = admission;
    let _counted =
        crate::metrics::ConnectionGuard::new(&hub.metrics, crate::metrics::Transport::Sse);
    // Boxed, and the streaming state built inside it: the task's future keeps the largest set
    // of values it holds across one `.await`, and a moved-from local's slot with them. Opening
    // (the `retry:` line, a subscribe's queries per stream) runs once. With the boxed last
    // words and the single timer in `serve`, the task went from 3,968 to 1,576 bytes
    // (`size_of_val`, release build) and an idle SSE connection from 23.1 to 21.1 KiB.
    let Some(mut events) = Box::pin(open(hub, request, grant, reset, sink)).await else {
        return;
    };
    tracing::debug!(connection = %events.id, "sse open");
    events.serve().await;
    // The session (and its queue) is dropped off the workers (see `Reaper`).
    let Events {
        hub, session, sink, ..
    } = events;
    drop(sink);
    hub.reaper.bury(session);
    drop(permit);
}

/// Sends the `retry:` line, opens the session and subscribes the request's streams; `None`
/// if the reader is gone or does not take the first line.
async fn open(
    hub: Arc<Hub>,
    request: SseRequest,
    grant: Grant,
    reset: Reset,
    mut sink: Sink,
) -> Option<Events> {
    let mut chunk = BytesMut::new();
    frame::retry(&mut chunk, hub.config.options.sse_retry_ms);
    let stall = hub.config.slow_consumer();
    match sink
        .send(vec![std::mem::take(&mut chunk).freeze()], stall)
        .await
    {
        Ok(()) => {}
        Err(SendError::Stalled(_)) => {
            reset.slow_consumer(&hub.metrics, crate::metrics::Transport::Sse);
            return None;
        }
        Err(SendError::Gone) => return None,
    }
    let mut session = Session::open(Arc::clone(&hub), grant);
    let SseRequest {
        streams,
        cursor,
        filters,
    } = request;
    for (stream, filter) in streams.into_iter().zip(filters) {
        if hub.token.is_cancelled() || sink.is_closed() {
            break;
        }
        let since = cursor.get(&stream);
        let subscribe = Subscribe {
            stream,
            since,
            filter,
            snapshot: true,
        };
        session.handle(ClientMessage::Subscribe(subscribe)).await;
    }
    Some(Events {
        id: session.id(),
        hub,
        session,
        cursor,
        sink,
        chunk,
        parts: Vec::new(),
        parts_bytes: 0,
        stall,
        id_text: String::new(),
        reset,
    })
}

/// What woke the streaming loop.
enum Turn {
    /// The heartbeat or the grant's expiry is due.
    Timer,
    /// The session has something to send (`None`: it is over).
    Outgoing(Option<Outgoing>),
}

/// The state of the streaming loop.
struct Events {
    hub: Arc<Hub>,
    id: ConnId,
    session: Session,
    /// Every stream's last position sent; its encoding is the `id:` of each positioned event.
    cursor: Cursor,
    sink: Sink,
    /// The copied tail of the chunk being built (empty between bursts).
    chunk: BytesMut,
    /// The parts of the chunk before `chunk` (empty between bursts, and unless a large
    /// shared event was added).
    parts: Chunk,
    /// Bytes in `parts`.
    parts_bytes: usize,
    /// `--slow-consumer-ms`.
    stall: Duration,
    /// The encoded cursor of the last positioned event (reused buffer).
    id_text: String,
    /// Thrown when the reader is dropped as a slow consumer (see [`Reset`]).
    reset: Reset,
}

impl Events {
    async fn serve(&mut self) {
        let every = self.hub.config.sse_heartbeat();
        let mut heartbeat_at = Instant::now() + every;
        // The grant of an SSE connection cannot change (the client sends nothing).
        let mut expiry = expiry(self.session.grant());
        // One timer for the heartbeat and the expiry: each `Sleep` is 112 bytes of an idle
        // connection's task.
        let timer = tokio::time::sleep_until(earliest(heartbeat_at, expiry));
        tokio::pin!(timer);
        let token = self.hub.token.clone();
        loop {
            // What happened is handled after the `select!`, not in its arms: the futures the
            // arms wait on are gone by then, so the task's future holds either them or a
            // handler's, not both (as in the WebSocket loop). The last words are boxed: they
            // are said once.
            // Shutdown reaches the stream through its session, which closes when nudged by
            // it (`nudger.rs`), as in the WebSocket loop.
            let turn = tokio::select! {
                () = self.sink.closed() => return,
                () = &mut timer => Turn::Timer,
                outgoing = self.session.next() => Turn::Outgoing(outgoing),
            };
            let result = match turn {
                Turn::Timer if expiry.is_some_and(|at| Instant::now() >= at) => {
                    if !is_expired(self.session.grant()) {
                        // The timer ran ahead of the grant's clock: look again shortly.
                        expiry = Some(Instant::now() + Duration::from_millis(100));
                        timer.as_mut().reset(earliest(heartbeat_at, expiry));
                        continue;
                    }
                    self.close_event(
                        CloseCode::TokenExpired,
                        "token expired; reconnect with a fresh token",
                    );
                    Box::pin(self.last_words()).await;
                    return;
                }
                Turn::Timer => {
                    frame::heartbeat(&mut self.chunk);
                    self.flush().await
                }
                Turn::Outgoing(outgoing) => match self.burst(outgoing) {
                    // The session closes (going away) when the listener stops at shutdown.
                    Some(_) if token.is_cancelled() => {
                        self.shutdown_event();
                        Box::pin(self.last_words()).await;
                        return;
                    }
                    Some((code, reason)) => {
                        self.close_event(code, &reason);
                        Box::pin(self.last_words()).await;
                        return;
                    }
                    None => self.flush().await,
                },
            };
            if let Err(error) = result {
                match error {
                    SendError::Stalled(stall) => {
                        tracing::warn!(
                            connection = %self.id,
                            ?stall,
                            "slow consumer: sse writes blocked; resetting the connection"
                        );
                        self.reset
                            .slow_consumer(&self.hub.metrics, crate::metrics::Transport::Sse);
                    }
                    SendError::Gone => tracing::debug!(connection = %self.id, "sse client gone"),
                }
                return;
            }
            heartbeat_at = Instant::now() + every;
            timer.as_mut().reset(earliest(heartbeat_at, expiry));
        }
    }

    /// Adds `first` and everything else ready to the chunk; returns a close if one came.
    fn burst(&mut self, first: Option<Outgoing>) -> Option<(CloseCode, String)> {
        let mut next = first;
        if next.is_none() {
            return Some((CloseCode::Normal, "session ended".into()));
        }
        while let Some(outgoing) = next {
            match outgoing {
                Outgoing::Frame { json, position, .. } => {
                    let moved = match position {
                        Some((stream, position)) => {
                            self.cursor.set(&stream, position);
                            true
                        }
                        None => false,
                    };
                    // Events from the bus are all `event`s: no need to read their type.
                    let name = match json.delivery() {
                        Some(delivery) if delivery.kind == DeliveryKind::Event => {
                            Cow::Borrowed("event")
                        }
                        _ => frame::message_type(&json),
                    };
                    self.push(&name, &json, moved);
                }
                Outgoing::Close { code, reason } => return Some((code, reason)),
            }
            if self.chunk.len() + self.parts_bytes >= MAX_CHUNK_BYTES {
                break;
            }
            next = self.session.ready();
        }
        None
    }

    /// Adds one message as an event named `name`; `moved` says a position changed (the event
    /// gets an id).
    fn push(&mut self, name: &str, json: &Bytes, moved: bool) {
        let id = if moved {
            self.cursor.encode_into(&mut self.id_text);
            Some(self.id_text.as_str())
        } else {
            None
        };
        if json.len() < SHARE_FROM || !frame::is_one_line(json) {
            return frame::event(&mut self.chunk, name, id, json);
        }
        // `event:`, `id:` and `data: ` copied, the data itself shared, then the blank line.
        frame::event_head(&mut self.chunk, name, id);
        let head = self.chunk.split().freeze();
        self.parts_bytes += head.len() + json.len();
        self.parts.push(head);
        self.parts.push(json.clone());
        frame::event_tail(&mut self.chunk);
    }

    /// The `shutdown` advisory, the last event before the body ends at shutdown.
    fn shutdown_event(&mut self) {
        let advisory = Advisory::new(AdvisoryKind::Shutdown)
            .reason("the relay is shutting down; reconnect and resume");
        let json = Bytes::from(ServerMessage::Advisory(advisory).encode());
        self.push(&frame::message_type(&json), &json, false);
    }

    /// The SSE stand-in for a WebSocket close frame: `event: close` with the code and reason.
    fn close_event(&mut self, code: CloseCode, reason: &str) {
        tracing::debug!(connection = %self.id, code = code.code(), reason, "closing sse stream");
        let json = serde_json::json!({ "type": "close", "code": code.code(), "reason": reason });
        frame::event(&mut self.chunk, "close", None, json.to_string().as_bytes());
    }

    /// Hands over the last chunk (a close or shutdown event) and waits, within
    /// [`LAST_WORDS`] each, until hyper has taken it. A reader that stops reading now would
    /// otherwise leave hyper stuck writing the end of the body, with no deadline of its own:
    /// it is reset instead.
    async fn last_words(&mut self) {
        let taken = match self.flush_within(LAST_WORDS).await {
            Ok(()) => tokio::time::timeout(LAST_WORDS, self.sink.taken())
                .await
                .is_ok(),
            Err(SendError::Stalled(_)) => false,
            Err(SendError::Gone) => true,
        };
        if !taken {
            tracing::debug!(connection = %self.id, "last words not taken; resetting");
            self.reset.reset();
        }
    }

    async fn flush(&mut self) -> Result<(), SendError> {
        self.flush_within(self.stall).await
    }

    async fn flush_within(&mut self, stall: Duration) -> Result<(), SendError> {
        if self.chunk.is_empty() && self.parts.is_empty() {
            return Ok(());
        }
        let mut chunk = std::mem::take(&mut self.parts);
        self.parts_bytes = 0;
        if !self.chunk.is_empty() {
            // A fresh buffer per burst: an idle connection holds no chunk memory.
            chunk.push(std::mem::take(&mut self.chunk).freeze());
        }
        self.sink.send(chunk, stall).await
    }
}

/// The earlier of the next heartbeat and the grant's expiry.
fn earliest(heartbeat_at: Instant, expiry: Option<Instant>) -> Instant {
    expiry.map_or(heartbeat_at, |at| at.min(heartbeat_at))
}
