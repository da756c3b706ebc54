//! The merge pool: ephemeral per-client state (presence, cursors) that converges passively.
//!
//! Entries are keyed by client id. A write wins if its version is greater than the entry's
//! (last-writer-wins; versions are chosen by the writer, e.g. a per-client counter or a
//! timestamp). Entries expire when not refreshed within their TTL, and can be removed
//! explicitly. Nothing is persisted. Time is passed in (milliseconds), so the pool is sans-IO.

use std::collections::HashMap;

/// One client's entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolEntry<V> {
    /// The client's state.
    pub value: V,
    /// The version that wrote it.
    pub version: u64,
    /// When it expires, in the caller's milliseconds clock.
    pub expires_at_ms: u64,
}

/// What a write or removal did.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolChange<V> {
    /// A new client appeared.
    Joined(V),
    /// An existing client's state changed (or was refreshed with the same state).
    Updated {
        /// The previous state.
        old: V,
        /// The new state.
        new: V,
    },
    /// The client was removed; here is its last state.
    Left(V),
    /// The write was older than what the pool holds (or removed nothing).
    Ignored,
}

/// Last-writer-wins entries per client, with TTL expiry.
///
/// # Examples
///
/// ```
/// use tidewire_shared::merge_pool::{MergePool, PoolChange};
/// let mut pool = MergePool::new();
/// assert_eq!(pool.set("alice", "editing", 1, 0, 30_000), PoolChange::Joined("editing"));
/// assert_eq!(pool.set("alice", "idle", 0, 10, 30_000), PoolChange::Ignored);
/// assert_eq!(pool.expire(40_000), vec![("alice".to_string(), "editing")]);
/// assert!(pool.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MergePool<V> {
    entries: HashMap<String, PoolEntry<V>>,
}

impl<V> Default for MergePool<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<V: Clone + PartialEq> MergePool<V> {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` for `client` at `version`, living `ttl_ms` from `now_ms`.
    ///
    /// A write with a version not greater than the current one is ignored, except that the
    /// same version and value refreshes the expiry (a heartbeat).
    pub fn set(
        &mut self,
        client: &str,
        value: V,
        version: u64,
        now_ms: u64,
        ttl_ms: u64,
    ) -> PoolChange<V> {
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        match self.entries.get_mut(client) {
            None => {
                self.entries.insert(
                    client.to_owned(),
                    PoolEntry {
                        value: value.clone(),
                        version,
                        expires_at_ms,
                    },
                );
                PoolChange::Joined(value)
            }
            Some(entry) if version > entry.version => {
                let old = std::mem::replace(&mut entry.value, value.clone());
                entry.version = version;
                entry.expires_at_ms = expires_at_ms;
                PoolChange::Updated { old, new: value }
            }
            Some(entry) => {
                if version == entry.version && value == entry.value {
                    entry.expires_at_ms = entry.expires_at_ms.max(expires_at_ms);
                }
                PoolChange::Ignored
            }
        }
    }

    /// Removes `client` if `version` is at least the entry's version.
    pub fn remove(&mut self, client: &str, version: u64) -> PoolChange<V> {
        match self.entries.get(client) {
            Some(entry) if version >= entry.version => match self.entries.remove(client) {
                Some(entry) => PoolChange::Left(entry.value),
                None => PoolChange::Ignored,
            },
            _ => PoolChange::Ignored,
        }
    }

    /// Removes and returns every entry that expired at or before `now_ms`, sorted by client.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(String, V)> {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.expires_at_ms <= now_ms)
            .map(|(client, _)| client.clone())
            .collect();
        let mut removed: Vec<(String, V)> = expired
            .into_iter()
            .filter_map(|client| {
                let entry = self.entries.remove(&client)?;
                Some((client, entry.value))
            })
            .collect();
        removed.sort_by(|a, b| a.0.cmp(&b.0));
        removed
    }

    /// The entry of `client`.
    pub fn get(&self, client: &str) -> Option<&PoolEntry<V>> {
        self.entries.get(client)
    }

    /// Every `(client, entry)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PoolEntry<V>)> + '_ {
        self.entries
            .iter()
            .map(|(client, entry)| (client.as_str(), entry))
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no client is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_writer_wins_in_any_order() {
        let mut forward = MergePool::new();
        forward.set("a", 1, 1, 0, 100);
        forward.set("a", 2, 2, 0, 100);
        let mut backward = MergePool::new();
        backward.set("a", 2, 2, 0, 100);
        backward.set("a", 1, 1, 0, 100);
        assert_eq!(forward.get("a").map(|e| e.value), Some(2));
        assert_eq!(forward, backward);
    }

    #[test]
    fn heartbeat_extends_and_old_removal_is_ignored() {
        let mut pool = MergePool::new();
        pool.set("a", "x", 3, 0, 100);
        assert_eq!(pool.set("a", "x", 3, 50, 100), PoolChange::Ignored);
        assert!(pool.expire(120).is_empty());
        assert_eq!(pool.remove("a", 2), PoolChange::Ignored);
        assert_eq!(pool.remove("a", 3), PoolChange::Left("x"));
        assert_eq!(pool.remove("a", 3), PoolChange::Ignored);
    }
}
