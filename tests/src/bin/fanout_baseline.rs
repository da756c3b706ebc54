//! `fanout_baseline`: the physical fan-out limit of this machine, the baseline of benchmark 1.
//! A minimal tokio program that accepts WebSocket connections like the relay (`GET /v1/ws`,
//! one `subscribe`, answered with `subscribed`) and then writes the same pre-encoded event
//! frames to every socket: each event is encoded once into one `Bytes` (frame header and the
//! relay's JSON shape, `ts` = encoding time) and shared through a broadcast channel; one task
//! per socket drains everything queued and writes it in one `write_vectored` burst. No
//! PostgreSQL, no registry, no per-connection state beyond the socket.
//!
//! With `--writer-loop` one task writes every WebSocket instead (`writer_loop.rs`): the
//! same frames, without a task or a wake-up per socket, as uWebSockets fans out.
//!
//! With `--sse` it serves Server-Sent Events instead (`GET /v1/sse?stream=...`, answered
//! with a chunked `text/event-stream` like the relay's): each event is pre-encoded once as
//! the relay's SSE event (`event:`, `id:` cursor, `data:` JSON), and each burst is one HTTP
//! chunk, as the relay writes it.
//!
//! The same `loadgen` reads from it as from the relay (`--no-publish`), so the reader's cost
//! is identical and relay/limit compares the relay with this program only.
//!
//! ```text
//! fanout_baseline --listen 127.0.0.1:7400 --rate 0 --payload-bytes 64 [--sse]
//! ```

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::{Frame, OpCode, Payload};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tidewire_tests::load::wire::now_micros;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};

#[path = "fanout_baseline/writer_loop.rs"]
mod writer_loop;

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(about = "Physical fan-out limit: pre-encoded WebSocket frames to N sockets")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Events per second (0: as fast as the slowest socket drains, with backpressure).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Bytes of padding in each event (as loadgen --payload-bytes).
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Start producing once this many sockets subscribed.
    #[arg(long, default_value_t = 1)]
    wait_for: u64,
    /// Events buffered per socket before the producer waits (backpressure at rate 0).
    #[arg(long, default_value_t = 1024)]
    queue: usize,
    /// Serve Server-Sent Events (`GET /v1/sse`) instead of WebSocket.
    #[arg(long)]
    sse: bool,
    /// Write every WebSocket from one task (as uWebSockets does) instead of a task per socket.
    #[arg(long, conflicts_with = "sse")]
    writer_loop: bool,
    /// Print a line with the rate every this many seconds.
    #[arg(long, default_value_t = 5)]
    report_seconds: u64,
}

/// The seq of the last event sent. Sending the next one and subscribing take its lock, so a
/// subscriber's `subscribed` position is exactly the event before its first: an atomic counter
/// let a subscriber read the seq of an event counted but not yet sent, and then receive it
/// (the end-to-end test of this program found it).
#[derive(Debug, Default)]
struct Head(Mutex<u64>);

impl Head {
    fn lock(&self) -> MutexGuard<'_, u64> {
        // A number: a panic elsewhere cannot leave it half written.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes to `sender`, and the seq it starts after.
    fn subscribe(&self, sender: &broadcast::Sender<Bytes>) -> (broadcast::Receiver<Bytes>, u64) {
        let head = self.lock();
        (sender.subscribe(), *head)
    }
}

/// Counters printed while running.
#[derive(Debug, Default)]
struct Counters {
    subscribed: AtomicU64,
    frames_written: AtomicU64,
    lagged: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("fanout_baseline listening on {}", listener.local_addr()?);
    let (sender, _) = broadcast::channel::<Bytes>(args.queue);
    let counters = Arc::new(Counters::default());
    let seq = Arc::new(Head::default());
    let joins = args.writer_loop.then(|| {
        let (joins, joined) = mpsc::unbounded_channel();
        let (to_loop, events) = mpsc::channel(args.queue);
        tokio::spawn(writer_loop::bridge(
            sender.subscribe(),
            to_loop,
            Arc::clone(&counters),
        ));
        tokio::spawn(writer_loop::run(
            joined,
            events,
            Arc::clone(&counters),
            args.queue,
        ));
        joins
    });
    tokio::spawn(produce(
        sender.clone(),
        Arc::clone(&counters),
        Arc::clone(&seq),
        args.clone(),
    ));
    let reporter = Arc::clone(&counters);
    let every = Duration::from_secs(args.report_seconds.max(1));
    tokio::spawn(async move {
        let mut last = reporter.frames_written.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(every).await;
            let now = reporter.frames_written.load(Ordering::Relaxed);
            println!(
                "sockets {} frames/s {:.0} lagged {}",
                reporter.subscribed.load(Ordering::Relaxed),
                (now - last) as f64 / every.as_secs_f64(),
                reporter.lagged.load(Ordering::Relaxed)
            );
            last = now;
        }
    });
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let sender = sender.clone();
        let counters = Arc::clone(&counters);
        let seq = Arc::clone(&seq);
        let joins = joins.clone();
        if args.sse {
            tokio::spawn(serve_sse(socket, sender, counters, seq));
            continue;
        }
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                upgrade(
                    request,
                    sender.clone(),
                    Arc::clone(&counters),
                    Arc::clone(&seq),
                    joins.clone(),
                )
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            // A failed connection only concerns its client.
            let _ = connection.await;
        });
    }
}

/// Encodes event `seq` once: the relay's event JSON as a WebSocket frame, or (`sse`) as the
/// relay's SSE event.
fn encode(seq: u64, pad: &str, sse: bool) -> Bytes {
    let json = format!(
        r#"{{"type":"event","stream":"load-0","epoch":1,"seq":{seq},"key":"k{}","op":"upsert","data":{{"pad":"{pad}","t":0}},"ts":{}}}"#,
        seq % 1000,
        now_micros()
    );
    if sse {
        return Bytes::from(format!(
            "event: event\nid: 1;load-0,1,{seq}\ndata: {json}\n\n"
        ));
    }
    text_frame(&json)
}

/// `json` as one unmasked WebSocket text frame.
fn text_frame(json: &str) -> Bytes {
    let mut frame = Frame::new(true, OpCode::Text, None, Payload::Borrowed(json.as_bytes()));
    let mut head = [0u8; 14];
    let size = frame.fmt_head(&mut head);
    let mut bytes = BytesMut::with_capacity(size + json.len());
    bytes.put_slice(&head[..size]);
    bytes.put_slice(json.as_bytes());
    bytes.freeze()
}

/// The `subscribed` answer for `stream` at `seq`, as a WebSocket frame.
fn subscribed(stream: &str, seq: u64) -> Bytes {
    text_frame(&format!(
        r#"{{"type":"subscribed","stream":"{stream}","epoch":1,"seq":{seq},"resumed":false}}"#
    ))
}

async fn produce(
    sender: broadcast::Sender<Bytes>,
    counters: Arc<Counters>,
    seq: Arc<Head>,
    args: Args,
) {
    let Args {
        rate,
        payload_bytes,
        wait_for,
        queue,
        sse,
        ..
    } = args;
    while counters.subscribed.load(Ordering::Relaxed) < wait_for {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pad = "x".repeat(payload_bytes);
    let started = Instant::now();
    let mut produced = 0u64;
    loop {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(produced as f64 / rate);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        } else {
            // Backpressure: wait while the slowest socket is more than half a queue behind.
            while sender.len() >= queue / 2 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            // Otherwise nothing here awaits: yield when the task's budget is spent, or the
            // tasks queued behind it on its worker (a socket's task waiting for its
            // `subscribe`, the reporter) wait for as long as the readers keep up (the
            // end-to-end test of this program saw a subscriber unanswered for 30 s).
            tokio::task::consume_budget().await;
        }
        {
            let mut head = seq.lock();
            *head += 1;
            // No receivers is fine: nobody subscribed yet or everyone left.
            let _ = sender.send(encode(*head, &pad, sse));
        }
        produced += 1;
    }
}

async fn upgrade(
    mut request: Request<Incoming>,
    sender: broadcast::Sender<Bytes>,
    counters: Arc<Counters>,
    seq: Arc<Head>,
    joins: Option<mpsc::UnboundedSender<writer_loop::Join>>,
) -> Result<Response<Empty<Bytes>>, std::convert::Infallible> {
    match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok((response, upgrade)) => {
            tokio::spawn(serve(upgrade, sender, counters, seq, joins));
            Ok(response)
        }
        Err(_) => {
            let mut response = Response::new(Empty::new());
            *response.status_mut() = StatusCode::BAD_REQUEST;
            Ok(response)
        }
    }
}

/// One socket: read the subscribe, answer `subscribed`, then write every event (or hand the
/// socket to the writer loop, which does both).
async fn serve(
    upgrade: UpgradeFut,
    sender: broadcast::Sender<Bytes>,
    counters: Arc<Counters>,
    seq: Arc<Head>,
    joins: Option<mpsc::UnboundedSender<writer_loop::Join>>,
) {
    let Ok(mut websocket) = upgrade.await else {
        return;
    };
    websocket.set_auto_pong(true);
    let stream = loop {
        let Ok(frame) = websocket.read_frame().await else {
            return;
        };
        if frame.opcode != OpCode::Text {
            continue;
        }
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(&frame.payload) else {
            continue;
        };
        if message["type"] == "subscribe" {
            break message["stream"].as_str().unwrap_or("load-0").to_owned();
        }
    };
    if let Some(joins) = joins {
        // A closed loop only means the program is ending.
        let _ = joins.send((websocket.into_inner(), stream));
        return;
    }
    let (mut events, head) = seq.subscribe(&sender);
    let mut socket = websocket.into_inner();
    if socket.write_all(&subscribed(&stream, head)).await.is_err() {
        return;
    }
    counters.subscribed.fetch_add(1, Ordering::Relaxed);
    forward(&mut socket, &mut events, &counters, false).await;
    counters.subscribed.fetch_sub(1, Ordering::Relaxed);
}

/// One SSE socket: read the request head, answer with the event stream and `subscribed`,
/// then write every event, a burst per HTTP chunk.
async fn serve_sse(
    mut socket: TcpStream,
    sender: broadcast::Sender<Bytes>,
    counters: Arc<Counters>,
    seq: Arc<Head>,
) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let request = String::from_utf8_lossy(&head);
    let stream = request
        .split(['?', '&', ' '])
        .find_map(|part| part.strip_prefix("stream="))
        .unwrap_or("load-0")
        .to_owned();
    let (mut events, at) = seq.subscribe(&sender);
    let first = format!(
        "retry: 1000\n\nevent: subscribed\nid: 1;{stream},1,{at}\ndata: \
         {{\"type\":\"subscribed\",\"stream\":\"{stream}\",\"epoch\":1,\"seq\":{at},\"resumed\":false}}\n\n"
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n",
        first.len()
    );
    if socket.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    counters.subscribed.fetch_add(1, Ordering::Relaxed);
    forward(&mut socket, &mut events, &counters, true).await;
    counters.subscribed.fetch_sub(1, Ordering::Relaxed);
}

/// Writes every event to `socket` until it fails, in bursts of whatever is queued; `chunked`
/// wraps each burst in one HTTP chunk.
async fn forward<S: tokio::io::AsyncWrite + Unpin>(
    socket: &mut S,
    events: &mut broadcast::Receiver<Bytes>,
    counters: &Counters,
    chunked: bool,
) {
    const CRLF: Bytes = Bytes::from_static(b"\r\n");
    let mut burst: Vec<Bytes> = Vec::with_capacity(64);
    loop {
        if chunked {
            // The chunk-size line, filled in once the burst is known.
            burst.push(Bytes::new());
        }
        match events.recv().await {
            Ok(first) => burst.push(first),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                counters.lagged.fetch_add(missed, Ordering::Relaxed);
                burst.clear();
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
        while burst.len() < 256 {
            match events.try_recv() {
                Ok(next) => burst.push(next),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    counters.lagged.fetch_add(missed, Ordering::Relaxed);
                }
                Err(_) => break,
            }
        }
        let mut frames = burst.len();
        if chunked {
            frames -= 1;
            let size: usize = burst.iter().map(Bytes::len).sum();
            burst[0] = Bytes::from(format!("{size:x}\r\n"));
            burst.push(CRLF);
        }
        if write_burst(socket, &burst).await.is_err() {
            return;
        }
        counters
            .frames_written
            .fetch_add(frames as u64, Ordering::Relaxed);
        burst.clear();
    }
}

/// Writes every frame of `burst` with vectored writes.
async fn write_burst<S: tokio::io::AsyncWrite + Unpin>(
    socket: &mut S,
    burst: &[Bytes],
) -> std::io::Result<()> {
    let mut frame = 0;
    let mut offset = 0;
    while frame < burst.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&burst[frame][offset..]))
            .chain(burst[frame + 1..].iter().map(|bytes| IoSlice::new(bytes)))
            .collect();
        let mut written = socket.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while frame < burst.len() && written >= burst[frame].len() - offset {
            written -= burst[frame].len() - offset;
            frame += 1;
            offset = 0;
        }
        offset += written;
    }
    Ok(())
}
