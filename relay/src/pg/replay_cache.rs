//! Shared replay pages: sessions that replay the same stream range (a thousand clients
//! resuming after a relay restart, or falling behind the same burst) read one query's result
//! instead of one query each, and share its encoded frames.
//!
//! The outbox of a stream is cut into *blocks* of `--replay-page` seqs: block `b` holds seqs
//! `b * page + 1 ..= (b + 1) * page`. A block whose every seq was read is immutable (seqs are
//! gap-free and never rewritten within an epoch), so it is kept, encoded once, and handed to
//! every session that needs any part of it. A block read while the head was inside it (a
//! partial block) is never kept and only used by the session whose read produced it: another
//! session may have subscribed after that read began, and must see events committed since.
//! Concurrent reads of one block are merged (single flight): the first session queries, the
//! others wait for it and, if the result is partial, query again themselves.
//!
//! Memory is bounded by `--replay-cache-bytes` (encoded JSON; oldest block evicted first);
//! 0 turns the cache off, and every replay reads the outbox directly.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tidewire_shared::{ServerMessage, StreamName};
use tokio::sync::OnceCell;

use super::outbox::{self, OutboxError};
use deadpool_postgres::Pool;

/// One encoded event of a replay.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The event's seq.
    pub seq: u64,
    /// The complete `event` server message.
    pub json: Bytes,
    /// Commit time (microseconds since the Unix epoch), for latency metrics.
    pub ts: Option<i64>,
}

/// What [`ReplayCache::read`] found after a position.
#[derive(Debug, Clone)]
pub struct Page {
    /// Events after the requested position, in seq order, up to the end of the block.
    pub frames: Vec<Frame>,
    /// The block was complete: more events may follow it (read the next block). False when
    /// the read reached the stream's head.
    pub more: bool,
}

/// A block of frames; `full` if it holds every seq of the block.
#[derive(Debug)]
struct Block {
    frames: Vec<Frame>,
    full: bool,
    bytes: usize,
}

type Key = (StreamName, u64, u64);

/// Slots not holding a kept block tolerated before unused ones are pruned.
const MAX_IDLE_SLOTS: usize = 1024;
type Slot = Arc<OnceCell<Arc<Block>>>;

/// The shared replay pages of one relay. See the [module docs](self).
#[derive(Debug)]
pub struct ReplayCache {
    page: u64,
    capacity_bytes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Blocks being read or kept, by `(stream, epoch, block)`.
    slots: HashMap<Key, Slot>,
    /// Kept (full) blocks, oldest first, with their sizes.
    kept: VecDeque<(Key, usize)>,
    kept_bytes: usize,
    hits: u64,
    reads: u64,
}

/// Counters of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayCacheStats {
    /// Replays answered from a block another session read.
    pub hits: u64,
    /// Outbox queries made for replays.
    pub reads: u64,
    /// Encoded bytes kept.
    pub kept_bytes: usize,
}

impl ReplayCache {
    /// A cache of blocks of `page` seqs holding at most `capacity_bytes` of encoded events.
    pub fn new(page: usize, capacity_bytes: usize) -> Self {
        Self {
            page: u64::try_from(page.max(1)).unwrap_or(u64::MAX),
            capacity_bytes,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent; a panic elsewhere cannot
        // corrupt them.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters so far.
    pub fn stats(&self) -> ReplayCacheStats {
        let state = self.lock();
        ReplayCacheStats {
            hits: state.hits,
            reads: state.reads,
            kept_bytes: state.kept_bytes,
        }
    }

    /// The events of `stream` (in `epoch`) after `after`, up to the end of `after`'s block.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] if the outbox query fails or a row is malformed.
    pub async fn read(
        &self,
        pool: &Pool,
        stream: &StreamName,
        epoch: u64,
        after: u64,
    ) -> Result<Page, OutboxError> {
        let index = after / self.page;
        if self.capacity_bytes == 0 {
            let block = self.query(pool, stream, epoch, index).await?;
            return Ok(self.slice(&block, after));
        }
        let key: Key = (stream.clone(), epoch, index);
        let slot = {
            let mut state = self.lock();
            if state.slots.len() > state.kept.len() + MAX_IDLE_SLOTS {
                // Slots whose read was cancelled (the session went away mid-query) and that
                // nobody waits on.
                state
                    .slots
                    .retain(|_, slot| slot.initialized() || Arc::strong_count(slot) > 1);
            }
            Arc::clone(state.slots.entry(key.clone()).or_default())
        };
        let mut mine = false;
        let read = slot
            .get_or_try_init(|| {
                mine = true;
                async { self.query(pool, stream, epoch, index).await.map(Arc::new) }
            })
            .await;
        let block = match read {
            Ok(block) => Arc::clone(block),
            Err(error) => {
                self.forget(&key, &slot);
                return Err(error);
            }
        };
        if block.full {
            self.keep(&key, &slot, &block, mine);
            return Ok(self.slice(&block, after));
        }
        self.forget(&key, &slot);
        if mine {
            return Ok(self.slice(&block, after));
        }
        // Read before this session may have subscribed: read again.
        let block = self.query(pool, stream, epoch, index).await?;
        Ok(self.slice(&block, after))
    }

    async fn query(
        &self,
        pool: &Pool,
        stream: &StreamName,
        epoch: u64,
        index: u64,
    ) -> Result<Block, OutboxError> {
        self.lock().reads += 1;
        let first = index.saturating_mul(self.page);
        let limit = usize::try_from(self.page).unwrap_or(usize::MAX);
        let events = outbox::replay(pool, stream, epoch, first, limit).await?;
        let full = events.len() == limit
            && events.first().map(|event| event.seq) == Some(first + 1)
            && events.last().map(|event| event.seq) == Some(first + self.page);
        let frames: Vec<Frame> = events
            .into_iter()
            .map(|event| Frame {
                seq: event.seq,
                ts: event.ts,
                json: Bytes::from(ServerMessage::Event(event).encode()),
            })
            .collect();
        let bytes = frames.iter().map(|frame| frame.json.len()).sum();
        Ok(Block {
            frames,
            full,
            bytes,
        })
    }

    fn slice(&self, block: &Block, after: u64) -> Page {
        Page {
            frames: block
                .frames
                .iter()
                .filter(|frame| frame.seq > after)
                .cloned()
                .collect(),
            more: block.full,
        }
    }

    /// Records a full block: counted as a hit for sessions that did not read it, and kept
    /// (evicting the oldest) by the session that did.
    fn keep(&self, key: &Key, slot: &Slot, block: &Block, mine: bool) {
        let mut state = self.lock();
        if !mine {
            state.hits += 1;
            return;
        }
        if block.bytes > self.capacity_bytes {
            if state
                .slots
                .get(key)
                .is_some_and(|kept| Arc::ptr_eq(kept, slot))
            {
                state.slots.remove(key);
            }
            return;
        }
        state.kept.push_back((key.clone(), block.bytes));
        state.kept_bytes += block.bytes;
        while state.kept_bytes > self.capacity_bytes {
            let Some((old, bytes)) = state.kept.pop_front() else {
                break;
            };
            state.kept_bytes -= bytes;
            state.slots.remove(&old);
        }
    }

    /// Drops a partial block's slot (if it is still the one in the map).
    fn forget(&self, key: &Key, slot: &Slot) {
        let mut state = self.lock();
        if state
            .slots
            .get(key)
            .is_some_and(|kept| Arc::ptr_eq(kept, slot))
        {
            state.slots.remove(key);
        }
    }
}
