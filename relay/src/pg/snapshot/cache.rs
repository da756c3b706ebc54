//! The relay's shared snapshot pages. A page at a fixed `(stream, epoch, at, after, limit)`
//! never changes, so one read of it serves every reader: readers that ask while it is being
//! read wait for that read, later ones get the kept page. A storm of a thousand subscribes to
//! one big stream (they share a position, see [`super::Starts`]) reads each page from
//! PostgreSQL once. Memory is bounded by `--snapshot-cache-bytes` (the oldest kept page goes
//! first); 0 keeps nothing, and concurrent readers of a page still share its read.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use deadpool_postgres::Pool;
use tokio::sync::OnceCell;

use super::page::Page;
use super::read::{read_page, PageKey, SnapshotError};
use crate::pg::outbox::OutboxError;

type Shared = Result<Arc<Page>, Arc<SnapshotError>>;
type Read = Arc<OnceCell<Shared>>;

/// Unfinished reads tolerated before abandoned ones are pruned.
const MAX_IDLE_READS: usize = 1024;

/// The shared pages. See the [module docs](self).
#[derive(Debug)]
pub struct SnapshotCache {
    capacity_bytes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Reads in flight and kept pages, by page.
    pages: HashMap<PageKey, Read>,
    /// The kept pages, oldest first, with their sizes.
    kept: VecDeque<(PageKey, usize)>,
    kept_bytes: usize,
    hits: u64,
    reads: u64,
    evictions: u64,
}

/// Counters of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotCacheStats {
    /// Pages answered by a read made for another reader (kept or in flight).
    pub hits: u64,
    /// Pages read from PostgreSQL.
    pub reads: u64,
    /// Kept pages dropped to stay within the budget.
    pub evictions: u64,
    /// Bytes of the kept pages.
    pub kept_bytes: usize,
}

impl SnapshotCache {
    /// A cache keeping at most `capacity_bytes` of pages.
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters so far.
    pub fn stats(&self) -> SnapshotCacheStats {
        let state = self.lock();
        SnapshotCacheStats {
            hits: state.hits,
            reads: state.reads,
            evictions: state.evictions,
            kept_bytes: state.kept_bytes,
        }
    }

    /// The page `key` names, read once for every reader. `chunk` is the chunk number the
    /// caller sends it as: a page read for it is encoded as that chunk (readers of one
    /// position share the numbering; HTTP readers pass 0).
    ///
    /// # Errors
    ///
    /// [`SnapshotError`] if the read failed (shared with the readers that waited for it, as
    /// [`SnapshotError::Shared`]); a failed read is not kept, the next reader tries again.
    pub async fn page(
        &self,
        pool: &Pool,
        key: &PageKey,
        chunk: u32,
    ) -> Result<Arc<Page>, SnapshotError> {
        let read = {
            let mut state = self.lock();
            if state.pages.len() > state.kept.len() + MAX_IDLE_READS {
                // Reads whose every reader went away before they completed.
                state
                    .pages
                    .retain(|_, read| read.initialized() || Arc::strong_count(read) > 1);
            }
            Arc::clone(state.pages.entry(key.clone()).or_default())
        };
        let mut mine = false;
        let outcome = read
            .get_or_init(|| {
                mine = true;
                async {
                    self.lock().reads += 1;
                    let outcome = async {
                        let mut client = pool.get().await.map_err(OutboxError::from)?;
                        read_page(&mut client, key, chunk).await
                    }
                    .await;
                    outcome.map(Arc::new).map_err(Arc::new)
                }
            })
            .await
            .clone();
        let mut state = self.lock();
        let current = state
            .pages
            .get(key)
            .is_some_and(|kept| Arc::ptr_eq(kept, &read));
        match &outcome {
            Ok(page) if mine && current => {
                let bytes = page.bytes();
                if bytes > self.capacity_bytes {
                    state.pages.remove(key);
                } else {
                    state.kept.push_back((key.clone(), bytes));
                    state.kept_bytes += bytes;
                    while state.kept_bytes > self.capacity_bytes {
                        let Some((old, size)) = state.kept.pop_front() else {
                            break;
                        };
                        state.kept_bytes -= size;
                        state.pages.remove(&old);
                        state.evictions += 1;
                    }
                }
            }
            Ok(_) if !mine => state.hits += 1,
            Ok(_) => {}
            Err(_) if current => {
                state.pages.remove(key);
            }
            Err(_) => {}
        }
        outcome.map_err(SnapshotError::Shared)
    }
}
