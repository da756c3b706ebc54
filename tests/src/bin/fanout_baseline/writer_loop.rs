//! `--writer-loop`: every subscribed socket written by one task, the way uWebSockets (Bun)
//! fans out, instead of a task per socket. It answers whether the per-socket task and its
//! wake-up, which the relay shares with the default mode, are what keeps a tokio program
//! below Bun. Each pass takes a batch of events, copies them once into one buffer, and offers
//! it to every socket that can take more; what a socket does not take is copied into its own
//! buffer (corked), and a socket whose write would block is written again only when its own
//! waker calls.
//!
//! Backpressure as in the default mode: while any socket has half a `--queue` of frames
//! unwritten, the loop takes no new events, so the producer waits for the slowest socket.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::sync::{broadcast, mpsc};

use super::{subscribed, Counters};

/// A WebSocket that asked to subscribe to a stream (named), not answered yet: the loop
/// answers `subscribed` at the position it has reached, so the socket misses nothing after it.
pub(crate) type Join = (TokioIo<Upgraded>, String);

/// Events taken from the producer per pass.
const BATCH: usize = 256;

/// One socket and the bytes it has not taken yet, in one buffer as uWebSockets corks them: a
/// queue of shared frames written with vectored writes cost half the loop's time at 10,000
/// sockets (reading each queued frame's pointer and length missed the cache).
struct Slot {
    socket: TokioIo<Upgraded>,
    unsent: Vec<u8>,
    /// Bytes of `unsent` already written.
    start: usize,
    dead: bool,
}

impl Slot {
    /// Bytes not taken yet. Zero means an empty buffer: `flush` empties it once drained.
    fn backlog(&self) -> usize {
        self.unsent.len() - self.start
    }

    /// Writes `bytes` after what is unsent, as much as the socket takes now; returns true when
    /// it takes no more (`cx`'s waker is then registered). With nothing unsent, the batch is
    /// written straight from its buffer, and only what the socket does not take is copied.
    fn write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> bool {
        let rest = if self.backlog() > 0 {
            bytes
        } else {
            match Pin::new(&mut self.socket).poll_write(cx, bytes) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.dead = true;
                    return false;
                }
                Poll::Ready(Ok(written)) => bytes.get(written..).unwrap_or_default(),
                Poll::Pending => bytes,
            }
        };
        if rest.is_empty() {
            return false;
        }
        self.unsent.extend_from_slice(rest);
        self.flush(cx)
    }

    /// Writes what is unsent, as much as the socket takes now; returns true when it takes no
    /// more (`cx`'s waker is then registered).
    fn flush(&mut self, cx: &mut Context<'_>) -> bool {
        while self.backlog() > 0 {
            let rest = self.unsent.get(self.start..).unwrap_or_default();
            match Pin::new(&mut self.socket).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.dead = true;
                    return false;
                }
                Poll::Ready(Ok(written)) => self.start += written,
                Poll::Pending => return true,
            }
        }
        self.unsent.clear();
        self.start = 0;
        false
    }
}

/// Forwards the producer's events to the writer loop, so that the producer's backpressure
/// (the broadcast's length) also counts the loop's sockets.
pub(crate) async fn bridge(
    mut events: broadcast::Receiver<Bytes>,
    to_loop: mpsc::Sender<Bytes>,
    counters: Arc<Counters>,
) {
    loop {
        match events.recv().await {
            Ok(event) => {
                if to_loop.send(event).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                counters.lagged.fetch_add(missed, Ordering::Relaxed);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The sockets whose write became possible again, and the loop's waker.
#[derive(Default)]
struct Ready {
    slots: Mutex<Vec<usize>>,
    loop_waker: AtomicWaker,
}

/// A socket's own waker: it notes the socket as ready and wakes the loop, so that a pass
/// without new events writes only the sockets that can take more, not all of them.
struct SlotWake {
    index: usize,
    marked: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.marked.swap(true, Ordering::AcqRel) {
            self.ready
                .slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.index);
        }
        self.ready.loop_waker.wake();
    }
}

/// A slot, its socket's waker, whether it holds half a queue or more, and whether its last
/// write would have blocked (then only its waker's call makes the loop write it again; until
/// then new batches are only appended to what it has unsent).
struct Entry {
    slot: Slot,
    wake: Arc<SlotWake>,
    waker: Waker,
    full: bool,
    blocked: bool,
}

impl Entry {
    /// Writes `batch` after what is unsent (or only what is unsent, if `batch` is empty), with
    /// the socket's own waker; returns whether the socket went away.
    fn write(&mut self, batch: &[u8]) -> bool {
        self.wake.marked.store(false, Ordering::Release);
        let mut cx = Context::from_waker(&self.waker);
        self.blocked = if batch.is_empty() {
            self.slot.flush(&mut cx)
        } else {
            self.slot.write(&mut cx, batch)
        };
        self.slot.dead
    }
}

/// The writer loop: takes new sockets and events, and writes every socket, until the events
/// end.
pub(crate) async fn run(
    mut sockets: mpsc::UnboundedReceiver<Join>,
    mut events: mpsc::Receiver<Bytes>,
    counters: Arc<Counters>,
    queue: usize,
) {
    // Half a queue of frames, in bytes once the first frame tells their size.
    let limit_frames = (queue / 2).max(1);
    let mut frame_bytes = 0usize;
    let mut batch: Vec<u8> = Vec::new();
    let mut live = 0usize;
    let ready = Arc::new(Ready::default());
    let mut entries: Vec<Option<Entry>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut full = 0usize;
    // The producer numbers events from 1 and the bridge never lags (the producer waits at
    // half a queue): the loop's count of events taken is the seq it has reached.
    let mut reached = 0u64;
    let mut woken: Vec<usize> = Vec::new();
    poll_fn(|cx| loop {
        ready.loop_waker.register(cx.waker());
        let mut touched: Vec<usize> = Vec::new();
        while let Poll::Ready(Some((socket, stream))) = sockets.poll_recv(cx) {
            counters.subscribed.fetch_add(1, Ordering::Relaxed);
            let index = free.pop().unwrap_or(entries.len());
            let wake = Arc::new(SlotWake {
                index,
                marked: AtomicBool::new(false),
                ready: Arc::clone(&ready),
            });
            let entry = Entry {
                slot: Slot {
                    socket,
                    unsent: subscribed(&stream, reached).to_vec(),
                    start: 0,
                    dead: false,
                },
                waker: Waker::from(Arc::clone(&wake)),
                wake,
                full: false,
                blocked: false,
            };
            if index == entries.len() {
                entries.push(Some(entry));
            } else {
                entries[index] = Some(entry);
            }
            touched.push(index);
            live += 1;
        }
        let polled = full == 0;
        let mut taken = 0;
        batch.clear();
        if polled {
            while taken < BATCH {
                match events.poll_recv(cx) {
                    Poll::Ready(Some(event)) => {
                        batch.extend_from_slice(&event);
                        taken += 1;
                        frame_bytes = event.len();
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            reached += taken as u64;
            counters
                .frames_written
                .fetch_add(taken as u64 * live as u64, Ordering::Relaxed);
        }
        let limit = limit_frames * frame_bytes.max(1);
        std::mem::swap(
            &mut woken,
            &mut ready.slots.lock().unwrap_or_else(PoisonError::into_inner),
        );
        for &index in &woken {
            if let Some(Some(entry)) = entries.get_mut(index) {
                entry.blocked = false;
            }
        }
        // A new batch goes to every socket; otherwise only new and woken ones are written.
        let count = entries.len();
        let mut visit = |index: usize| {
            let Some(Some(entry)) = entries.get_mut(index) else {
                return;
            };
            let gone = if entry.blocked {
                // Its waker will call: keep the batch for then.
                entry.slot.unsent.extend_from_slice(&batch);
                false
            } else {
                entry.write(&batch)
            };
            let now_full = !gone && entry.slot.backlog() >= limit;
            if now_full != entry.full {
                if now_full {
                    full += 1;
                } else {
                    full -= 1;
                }
                entry.full = now_full;
            }
            if gone {
                entries[index] = None;
                free.push(index);
                live -= 1;
                counters.subscribed.fetch_sub(1, Ordering::Relaxed);
            }
        };
        if taken > 0 {
            (0..count).for_each(&mut visit);
        } else {
            touched.iter().chain(&woken).for_each(|&index| visit(index));
        }
        woken.clear();
        // Park only when every source that could wake the loop holds its waker: the sockets'
        // channel and the sockets' writes always; the events when they were polled to the end,
        // or, while a socket is full, that socket's write.
        let waiting = if polled { taken == 0 } else { full > 0 };
        let nothing_ready = ready
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        if waiting && nothing_ready {
            return Poll::Pending;
        }
    })
    .await;
}
