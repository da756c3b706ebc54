//! One load-generator client: a WebSocket or SSE connection subscribed to some streams,
//! reconnecting with full-jitter backoff and resuming from its positions, feeding every
//! message to the invariant checker ([`Track`]) and every live event's end-to-end latency
//! (receive time minus the event's `ts`) to the process-wide histograms.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastwebsockets::OpCode;
use rand::Rng;
use serde::Serialize;
use serde_json::json;
use tidewire_shared::backoff::Backoff;
use tidewire_shared::cursor::Cursor;
use tidewire_shared::{Position, StreamName};
use tokio_util::sync::CancellationToken;

use super::checker::{Action, Kind, Track};
use super::histogram::Histogram;
use super::transport::{self, ConnectError};
use super::wire::{now_micros, Wire};

/// Which transport a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `GET /v1/ws`.
    Ws,
    /// `GET /v1/sse`.
    Sse,
}

/// What one client does.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Index within the process (for reports).
    pub id: usize,
    /// WebSocket or SSE.
    pub transport: Transport,
    /// Relays to connect to: the first one, then the next after each failed attempt (so a
    /// client of a dead relay moves to another one).
    pub addrs: Vec<SocketAddr>,
    /// Reconnect when nothing at all (not even a keepalive ping or SSE heartbeat) arrived for
    /// this long; `None` waits forever.
    pub silence_timeout: Option<Duration>,
    /// Streams to subscribe (raw channels are `raw:<channel>`).
    pub streams: Vec<String>,
    /// Ask for a snapshot on a fresh subscribe (WebSocket only; SSE always sends one).
    pub snapshot: bool,
    /// Resume from these positions on the first connect (catch-up benchmark).
    pub since: Vec<(String, Position)>,
    /// Reconnect after losing the connection (else the client ends).
    pub reconnect: bool,
    /// Where the client stores each stream's applied seq (slot `progress_slot + j` for its
    /// `j`-th stream), read by the engine to know when everything is drained.
    pub progress: Arc<[AtomicU64]>,
    /// The client's first slot in `progress`.
    pub progress_slot: usize,
    /// Largest backoff between reconnect attempts (full jitter from 100 ms doubling).
    pub backoff_max: Duration,
    /// Limit for TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// `SO_RCVBUF` of the socket (`None`: the kernel's autotuning).
    pub recv_buffer: Option<u32>,
}

/// Counters and histograms shared by every client of a process.
#[derive(Debug, Default)]
pub struct Shared {
    /// Live events: receive time minus commit time (`ts`), microseconds.
    pub latency: Histogram,
    /// Replayed events (before `subscribed` of a resume): receive minus commit time.
    pub catchup_latency: Histogram,
    /// Time from starting a connection attempt to every stream live, microseconds.
    pub connect_to_live: Histogram,
    /// Backoff delays chosen before reconnects, milliseconds (the jitter histogram).
    pub reconnect_delay_ms: Histogram,
    /// Time from losing a connection to every stream live again, milliseconds.
    pub outage_ms: Histogram,
    /// Events received over all clients (for rates sampled while running).
    pub events: AtomicU64,
    /// Clients whose streams were all live at least once.
    pub clients_live: AtomicU64,
    /// Connection attempts that failed (refused, timeout, reset).
    pub connect_failures: AtomicU64,
    /// Established connections that ended before the run did.
    pub disconnects: AtomicU64,
    /// Messages that did not parse.
    pub malformed: AtomicU64,
    /// `error` messages received.
    pub errors: AtomicU64,
    /// Refusals by HTTP status (503 overloaded mostly).
    pub refused: AtomicU64,
}

/// What a client reports when it ends.
#[derive(Debug, Clone)]
pub struct ClientOutcome {
    /// The spec's id.
    pub id: usize,
    /// Per stream: its name and track.
    pub tracks: Vec<(String, Track)>,
    /// Successful connections (the first included).
    pub connects: u64,
    /// When every stream first went live, measured from the client's start.
    pub time_to_live: Option<Duration>,
    /// Close codes received from the relay (WebSocket) with counts.
    pub close_codes: Vec<u16>,
    /// What the client last heard, for naming a straggler (see [`LastHeard`]).
    pub last_heard: LastHeard,
}

/// What a client last heard from the relay: enough to find a client that stopped moving in
/// the relay's log (its connection id) and to tell a dead connection from a silent session.
#[derive(Debug, Clone, Default)]
pub struct LastHeard {
    /// The relay's name for the last connection (`relay=.. connection=..` of `connect`).
    pub connection: Option<String>,
    /// Type (and advisory kind) of the last message.
    pub message: Option<String>,
    /// When the last message arrived.
    pub message_at: Option<Instant>,
    /// When the last sign of life (a message, a ping or an SSE heartbeat) arrived.
    pub alive_at: Option<Instant>,
}

/// Runs one client until `stop` is cancelled.
pub async fn run(spec: ClientSpec, shared: Arc<Shared>, stop: CancellationToken) -> ClientOutcome {
    let mut state = State {
        tracks: spec
            .streams
            .iter()
            .map(|stream| {
                let kind = if stream.starts_with("raw:") {
                    Kind::Raw
                } else {
                    Kind::Durable
                };
                (stream.clone(), Track::new(kind))
            })
            .collect(),
        shared: Arc::clone(&shared),
        progress: Arc::clone(&spec.progress),
        progress_slot: spec.progress_slot,
        ever_live: false,
        started: Instant::now(),
        time_to_live: None,
        last_heard: LastHeard::default(),
    };
    let mut outcome = ClientOutcome {
        id: spec.id,
        tracks: Vec::new(),
        connects: 0,
        time_to_live: None,
        close_codes: Vec::new(),
        last_heard: LastHeard::default(),
    };
    // A client resuming from stored positions checks the replay from there.
    for (stream, position) in &spec.since {
        if let Some((_, track)) = state.tracks.iter_mut().find(|(name, _)| name == stream) {
            track.resume_from(position.epoch, position.seq);
        }
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), spec.backoff_max);
    let mut lost_at: Option<Instant> = None;
    let mut relay = 0usize;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let attempt_started = Instant::now();
        let result = tokio::select! {
            () = stop.cancelled() => break,
            result = connect_and_serve(&spec, spec.addrs[relay % spec.addrs.len()], &mut state, &mut outcome, attempt_started, &mut lost_at) => result,
        };
        match result {
            Served::Lost { was_live } => {
                shared.disconnects.fetch_add(1, Ordering::Relaxed);
                lost_at.get_or_insert_with(Instant::now);
                if was_live {
                    backoff.reset();
                }
            }
            Served::Failed => {
                shared.connect_failures.fetch_add(1, Ordering::Relaxed);
                relay += 1;
            }
        }
        if !spec.reconnect {
            break;
        }
        // The clients' rule: full jitter in [0, min(max, 100 ms * 2^attempt)].
        let delay = backoff
            .next_delay(rand::thread_rng().gen::<f64>())
            .unwrap_or(spec.backoff_max);
        shared.reconnect_delay_ms.record(delay.as_millis() as u64);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    outcome.time_to_live = state.time_to_live;
    outcome.tracks = state.tracks;
    outcome.last_heard = state.last_heard;
    outcome
}

/// How a connection ended.
enum Served {
    /// It was established and then lost (or closed by the relay).
    Lost { was_live: bool },
    /// It could not be established.
    Failed,
}

/// The client's subscription state across connections.
struct State {
    tracks: Vec<(String, Track)>,
    shared: Arc<Shared>,
    progress: Arc<[AtomicU64]>,
    progress_slot: usize,
    ever_live: bool,
    /// When the client started.
    started: Instant,
    /// How long after `started` every stream was first live.
    time_to_live: Option<Duration>,
    last_heard: LastHeard,
}

impl State {
    fn all_live(&self) -> bool {
        self.tracks.iter().all(|(_, track)| track.live)
    }

    /// Handles one message; returns a resubscribe request (from the position, if any) when
    /// the checker found a gap or the relay dropped or could not make the subscription.
    fn handle(&mut self, json: &[u8]) -> Option<(String, Option<Position>)> {
        let Ok(wire) = Wire::parse(json) else {
            self.shared.malformed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let stream = wire.stream.as_deref().unwrap_or_default();
        let kind = wire.kind.as_ref();
        let now = Instant::now();
        self.last_heard.message = Some(match wire.advisory.as_deref() {
            Some(advisory) => format!("{kind} {advisory}"),
            None => kind.to_owned(),
        });
        self.last_heard.message_at = Some(now);
        self.last_heard.alive_at = Some(now);
        if wire.advisory.as_deref() == Some("connect") {
            self.last_heard.connection = wire.reason.as_deref().map(str::to_owned);
        }
        if kind == "error" {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            // A subscribe the relay could not serve right now (PostgreSQL or its pool busy):
            // subscribe again from the position, as the npm client does (docs/PROTOCOL.md).
            let retryable = matches!(
                wire.code.as_deref(),
                Some("unavailable" | "internal" | "overloaded")
            );
            let (_, track) = self.tracks.iter_mut().find(|(name, _)| name == stream)?;
            if !retryable || track.live {
                return None;
            }
            let position = track.position().map(|(epoch, seq)| Position { epoch, seq });
            return Some((stream.to_owned(), position));
        }
        let index = self.tracks.iter().position(|(name, _)| name == stream)?;
        let track = &mut self.tracks[index].1;
        let mut request = None;
        match kind {
            "event" => {
                self.shared.events.fetch_add(1, Ordering::Relaxed);
                let raw = track.kind() == Kind::Raw;
                let seq = if raw {
                    wire.data.and_then(|data| data.n)
                } else {
                    wire.seq
                };
                let sent = if raw {
                    wire.data.and_then(|data| data.sent)
                } else {
                    wire.ts
                };
                if let Some(sent) = sent {
                    let latency = u64::try_from(now_micros() - sent).unwrap_or(0);
                    if track.live {
                        self.shared.latency.record(latency);
                    } else {
                        self.shared.catchup_latency.record(latency);
                    }
                }
                if let (true, Some(epoch), Some(relay_seq)) = (raw, wire.epoch, wire.seq) {
                    track.raw_wire_position(epoch, relay_seq);
                }
                if let Some(seq) = seq {
                    if let Action::Resubscribe { epoch, seq } =
                        track.event(wire.epoch.unwrap_or(0), seq)
                    {
                        request = Some((stream.to_owned(), Some(Position { epoch, seq })));
                    }
                    if let Some(slot) = self.progress.get(self.progress_slot + index) {
                        slot.store(track.progress(), Ordering::Relaxed);
                    }
                }
            }
            "snapshot" if wire.last == Some(true) => {
                if let (Some(epoch), Some(seq)) = (wire.epoch, wire.seq) {
                    track.snapshot(epoch, seq);
                }
            }
            "subscribed" => {
                if let (Some(epoch), Some(seq)) = (wire.epoch, wire.seq) {
                    track.subscribed(epoch, seq);
                }
            }
            "advisory" => {
                track.advisory(
                    wire.advisory.as_deref().unwrap_or_default(),
                    wire.from,
                    wire.to,
                );
            }
            "unsubscribed" => {
                // A failed catch-up: resubscribe from the position (docs/PROTOCOL.md).
                track.live = false;
                if let Some((epoch, seq)) = track.position() {
                    request = Some((stream.to_owned(), Some(Position { epoch, seq })));
                }
            }
            _ => {}
        }
        if !self.ever_live && self.all_live() {
            self.ever_live = true;
            self.time_to_live = Some(self.started.elapsed());
            self.shared.clients_live.fetch_add(1, Ordering::Relaxed);
        }
        if kind != "event" {
            // Baselines move `applied` too (snapshots, `subscribed`), and a raw `gap` ends
            // what a channel can still hear.
            if let (Some(slot), Some((_, track))) = (
                self.progress.get(self.progress_slot + index),
                self.tracks.get(index),
            ) {
                slot.store(track.progress(), Ordering::Relaxed);
            }
        }
        request
    }
}

async fn connect_and_serve(
    spec: &ClientSpec,
    addr: SocketAddr,
    state: &mut State,
    outcome: &mut ClientOutcome,
    attempt_started: Instant,
    lost_at: &mut Option<Instant>,
) -> Served {
    match spec.transport {
        Transport::Ws => serve_ws(spec, addr, state, outcome, attempt_started, lost_at).await,
        Transport::Sse => serve_sse(spec, addr, state, outcome, attempt_started, lost_at).await,
    }
}

fn subscribe_message(stream: &str, since: Option<Position>, snapshot: bool) -> String {
    match since {
        Some(position) => json!({
            "type": "subscribe",
            "stream": stream,
            "since": {"epoch": position.epoch, "seq": position.seq},
        })
        .to_string(),
        None => json!({"type": "subscribe", "stream": stream, "snapshot": snapshot}).to_string(),
    }
}

fn note_refusal(shared: &Shared, error: &ConnectError) {
    if matches!(error, ConnectError::Status(_)) {
        shared.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// Records the connect-to-live time and the outage once every stream is live.
fn note_live(
    state: &State,
    attempt_started: Instant,
    lost_at: &mut Option<Instant>,
    noted: &mut bool,
) {
    if *noted || !state.all_live() {
        return;
    }
    *noted = true;
    state
        .shared
        .connect_to_live
        .record(attempt_started.elapsed().as_micros() as u64);
    if let Some(lost) = lost_at.take() {
        state
            .shared
            .outage_ms
            .record(lost.elapsed().as_millis() as u64);
    }
}

async fn serve_ws(
    spec: &ClientSpec,
    addr: SocketAddr,
    state: &mut State,
    outcome: &mut ClientOutcome,
    attempt_started: Instant,
    lost_at: &mut Option<Instant>,
) -> Served {
    let mut websocket =
        match transport::websocket(addr, "/v1/ws", spec.recv_buffer, spec.connect_timeout).await {
            Ok(websocket) => websocket,
            Err(error) => {
                note_refusal(&state.shared, &error);
                return Served::Failed;
            }
        };
    outcome.connects += 1;
    for (stream, track) in &mut state.tracks {
        track.resubscribed();
        let since = track.position().map(|(epoch, seq)| Position { epoch, seq });
        let message = subscribe_message(stream, since, spec.snapshot);
        if transport::send_text(&mut websocket, &message)
            .await
            .is_err()
        {
            return Served::Lost { was_live: false };
        }
    }
    let mut noted = false;
    // Pings are answered here (not by fastwebsockets) so that they count as signs of life.
    websocket.set_auto_pong(false);
    loop {
        let read = websocket.read_frame();
        let frame = match spec.silence_timeout {
            // Not cancel safe, but a timeout abandons the connection anyway.
            Some(silence) => match tokio::time::timeout(silence, read).await {
                Ok(read) => read,
                Err(_) => return Served::Lost { was_live: noted },
            },
            None => read.await,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(_) => return Served::Lost { was_live: noted },
        };
        match frame.opcode {
            OpCode::Ping => {
                state.last_heard.alive_at = Some(Instant::now());
                let payload = frame.payload.to_vec();
                let pong = fastwebsockets::Frame::pong(fastwebsockets::Payload::Owned(payload));
                if websocket.write_frame(pong).await.is_err() {
                    return Served::Lost { was_live: noted };
                }
            }
            OpCode::Text => {
                let request = state.handle(&frame.payload);
                note_live(state, attempt_started, lost_at, &mut noted);
                if let Some((stream, position)) = request {
                    if let Some((_, track)) =
                        state.tracks.iter_mut().find(|(name, _)| *name == stream)
                    {
                        track.resubscribed();
                    }
                    let message = subscribe_message(&stream, position, spec.snapshot);
                    if transport::send_text(&mut websocket, &message)
                        .await
                        .is_err()
                    {
                        return Served::Lost { was_live: noted };
                    }
                }
            }
            OpCode::Close => {
                if frame.payload.len() >= 2 {
                    outcome
                        .close_codes
                        .push(u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                }
                return Served::Lost { was_live: noted };
            }
            _ => {}
        }
    }
}

async fn serve_sse(
    spec: &ClientSpec,
    addr: SocketAddr,
    state: &mut State,
    outcome: &mut ClientOutcome,
    attempt_started: Instant,
    lost_at: &mut Option<Instant>,
) -> Served {
    let mut query = String::from("/v1/sse?");
    for (index, (stream, _)) in state.tracks.iter().enumerate() {
        if index > 0 {
            query.push('&');
        }
        query.push_str("stream=");
        query.push_str(stream);
    }
    // Resume every durable stream from its position: the SSE cursor (docs/PROTOCOL.md).
    let mut cursor = Cursor::default();
    for (stream, track) in &state.tracks {
        let position = track.position().map(|(epoch, seq)| Position { epoch, seq });
        if let (Some(position), Ok(name)) = (position, StreamName::new(stream)) {
            cursor.set(&name, position);
        }
    }
    let last_event_id = (!cursor.entries.is_empty()).then(|| cursor.encode());
    let mut events = match transport::sse(
        addr,
        &query,
        last_event_id.as_deref(),
        spec.recv_buffer,
        spec.connect_timeout,
    )
    .await
    {
        Ok(events) => events,
        Err(error) => {
            note_refusal(&state.shared, &error);
            return Served::Failed;
        }
    };
    outcome.connects += 1;
    for (_, track) in &mut state.tracks {
        track.resubscribed();
    }
    let mut noted = false;
    loop {
        let next = match spec.silence_timeout {
            // `next_event` is cancel safe: a timeout loses nothing already read.
            Some(silence) => match tokio::time::timeout(silence, events.next_event()).await {
                Ok(next) => next,
                Err(_) if events.silent_for() < silence => continue,
                Err(_) => return Served::Lost { was_live: noted },
            },
            None => events.next_event().await,
        };
        let event = match next {
            Ok(Some(event)) if event.comment => {
                state.last_heard.alive_at = Some(Instant::now());
                continue;
            }
            Ok(Some(event)) => event,
            Ok(None) | Err(_) => return Served::Lost { was_live: noted },
        };
        let request = state.handle(&event.data);
        note_live(state, attempt_started, lost_at, &mut noted);
        if request.is_some() {
            // SSE cannot resubscribe one stream: reconnect with the cursor of what was
            // applied, which replays the gap.
            return Served::Lost { was_live: noted };
        }
    }
}
