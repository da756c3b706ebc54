//! Shared replay pages: sessions that replay the same stream range (a thousand clients
//! resuming after a relay restart, or ten thousand falling behind the same burst) read one
//! query's result instead of one query each, and share its encoded frames.
//!
//! The outbox of a stream is cut into *blocks* of `--replay-page` seqs: block `b` holds seqs
//! `b * page + 1 ..= (b + 1) * page`. Two rules make sharing safe:
//!
//! - A block whose every seq was read is immutable (seqs are gap-free and never rewritten
//!   within an epoch), so it is kept, encoded once, and handed to every session that needs
//!   any part of it.
//! - A read of a block is shared only by the sessions that asked for it *before its query
//!   began*: a session joins a read while that read still waits for a pool connection, and
//!   the read is closed to newcomers the moment it has one. A session needs every event
//!   committed before it asked (it registered, or took its lag, before asking), and a query
//!   that began after it asked sees all of those, so a partial block (the head inside it) is
//!   safe to share too. A session that arrives once the query has begun waits for the next
//!   read instead. Under a lag storm this turns ten thousand reads of the head's block into a
//!   handful, and the pool is never exhausted by them.
//!
//! A [`Page`] is a view into a shared block, not a copy: a session replaying holds one
//! reference, whatever the page size. Memory is bounded by `--replay-cache-bytes` (encoded
//! JSON; oldest block evicted first); 0 turns the cache off, and every replay reads the
//! outbox directly.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use deadpool_postgres::Pool;
use tidewire_shared::{ServerMessage, StreamName};
use tokio::sync::OnceCell;

use super::outbox::{self, OutboxError};

/// One encoded event of a replay.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The event's seq.
    pub seq: u64,
    /// The complete `event` server message.
    pub json: Bytes,
    /// Commit time (microseconds since the Unix epoch), for latency metrics.
    pub ts: Option<i64>,
    /// The key's value before the event (JSON text), for filtered subscriptions: kept
    /// encoded, and counted in the cache's bytes, like the frame itself.
    pub prior: Option<Bytes>,
}

/// What [`ReplayCache::read`] found after a position: a view into a shared block.
#[derive(Debug, Clone)]
pub struct Page {
    block: Arc<Block>,
    start: usize,
}

impl Page {
    /// Events after the requested position, in seq order, up to the end of the block.
    pub fn frames(&self) -> &[Frame] {
        self.block.frames.get(self.start..).unwrap_or_default()
    }

    /// Drops the first `count` frames from the view.
    pub fn skip(&mut self, count: usize) {
        self.start = self
            .start
            .saturating_add(count)
            .min(self.block.frames.len());
    }

    /// Takes the first frame of the view.
    pub fn pop(&mut self) -> Option<Frame> {
        let frame = self.block.frames.get(self.start)?.clone();
        self.start += 1;
        Some(frame)
    }

    /// The block was complete: more events may follow it (read the next block). False when
    /// the read reached the stream's head.
    pub fn more(&self) -> bool {
        self.block.full
    }
}

/// A block of frames; `full` if it holds every seq of the block.
#[derive(Debug)]
struct Block {
    frames: Vec<Frame>,
    full: bool,
    bytes: usize,
}

type Key = (StreamName, u64, u64);

/// The outcome of one read, shared by every session that joined it.
type Shared = Result<Arc<Block>, Arc<OutboxError>>;
type Read = Arc<OnceCell<Shared>>;

/// Pending reads tolerated before abandoned ones (every joiner went away) are pruned.
const MAX_IDLE_READS: usize = 1024;

/// The shared replay pages of one relay. See the [module docs](self).
#[derive(Debug)]
pub struct ReplayCache {
    page: u64,
    capacity_bytes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Reads still waiting for a pool connection, open to sessions that need the same block.
    joinable: HashMap<Key, Read>,
    /// Kept (full) blocks.
    blocks: HashMap<Key, Arc<Block>>,
    /// The kept blocks, oldest first, with their sizes.
    kept: VecDeque<(Key, usize)>,
    kept_bytes: usize,
    hits: u64,
    reads: u64,
}

/// Counters of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayCacheStats {
    /// Replays answered by a read another session made (a kept block or a merged read).
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

    /// The events of `stream` (in `epoch`) after `after`, up to the end of `after`'s block,
    /// including every event committed before this call.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] if the outbox query fails or a row is malformed (shared with the
    /// sessions that joined the same read, as [`OutboxError::Shared`]).
    pub async fn read(
        &self,
        pool: &Pool,
        stream: &StreamName,
        epoch: u64,
        after: u64,
    ) -> Result<Page, OutboxError> {
        let index = after / self.page;
        if self.capacity_bytes == 0 {
            let client = pool.get().await?;
            let block = self.query(&client, stream, epoch, index).await?;
            return Ok(Self::slice(Arc::new(block), after));
        }
        let key: Key = (stream.clone(), epoch, index);
        let read = {
            let mut state = self.lock();
            if let Some(block) = state.blocks.get(&key) {
                let block = Arc::clone(block);
                state.hits += 1;
                return Ok(Self::slice(block, after));
            }
            if state.joinable.len() > MAX_IDLE_READS {
                // Reads whose every session went away while waiting for a connection.
                state.joinable.retain(|_, read| Arc::strong_count(read) > 1);
            }
            Arc::clone(state.joinable.entry(key.clone()).or_default())
        };
        let mut mine = false;
        let outcome = read
            .get_or_init(|| {
                mine = true;
                async {
                    let outcome = self.read_block(pool, &key, &read).await;
                    outcome.map(Arc::new).map_err(Arc::new)
                }
            })
            .await
            .clone();
        // `read_block` closed the read before its query (or when it got no connection).
        let block = outcome.map_err(OutboxError::Shared)?;
        if mine {
            if block.full {
                self.keep(&key, &block);
            }
        } else {
            self.lock().hits += 1;
        }
        Ok(Self::slice(block, after))
    }

    /// Gets a connection, closes `read` to newcomers, then queries the block.
    async fn read_block(&self, pool: &Pool, key: &Key, read: &Read) -> Result<Block, OutboxError> {
        let client = pool.get().await;
        // From here on the query sees every commit made before any joiner asked.
        self.close(key, read);
        let client = client?;
        let (stream, epoch, index) = key;
        self.query(&client, stream, *epoch, *index).await
    }

    async fn query(
        &self,
        client: &tokio_postgres::Client,
        stream: &StreamName,
        epoch: u64,
        index: u64,
    ) -> Result<Block, OutboxError> {
        self.lock().reads += 1;
        let first = index.saturating_mul(self.page);
        let limit = usize::try_from(self.page).unwrap_or(usize::MAX);
        let events = outbox::replay_on(client, stream, epoch, first, limit).await?;
        let full = events.len() == limit
            && events.first().map(|stored| stored.event.seq) == Some(first + 1)
            && events.last().map(|stored| stored.event.seq) == Some(first + self.page);
        let frames: Vec<Frame> = events
            .into_iter()
            .map(|stored| Frame {
                seq: stored.event.seq,
                ts: stored.event.ts,
                json: Bytes::from(ServerMessage::encode_event(&stored.event)),
                prior: stored.prior.map(|prior| Bytes::from(prior.to_string())),
            })
            .collect();
        let bytes = frames
            .iter()
            .map(|frame| frame.json.len() + frame.prior.as_ref().map_or(0, Bytes::len))
            .sum();
        Ok(Block {
            frames,
            full,
            bytes,
        })
    }

    fn slice(block: Arc<Block>, after: u64) -> Page {
        let start = block.frames.partition_point(|frame| frame.seq <= after);
        Page { block, start }
    }

    /// Keeps a full block (evicting the oldest) unless it is already kept or too large.
    fn keep(&self, key: &Key, block: &Arc<Block>) {
        let mut state = self.lock();
        if block.bytes > self.capacity_bytes || state.blocks.contains_key(key) {
            return;
        }
        state.blocks.insert(key.clone(), Arc::clone(block));
        state.kept.push_back((key.clone(), block.bytes));
        state.kept_bytes += block.bytes;
        while state.kept_bytes > self.capacity_bytes {
            let Some((old, bytes)) = state.kept.pop_front() else {
                break;
            };
            state.kept_bytes -= bytes;
            state.blocks.remove(&old);
        }
    }

    /// Closes `read` to newcomers (if it is still the open read of its block).
    fn close(&self, key: &Key, read: &Read) {
        let mut state = self.lock();
        if state
            .joinable
            .get(key)
            .is_some_and(|open| Arc::ptr_eq(open, read))
        {
            state.joinable.remove(key);
        }
    }
}
