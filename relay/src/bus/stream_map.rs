//! A map for what one connection keeps per stream (its subscriptions, its cursor), sized for
//! the usual connection: one stream, or a few.
//!
//! A hash map reserves four buckets and their control bytes for its first entry: 417 bytes
//! per idle connection for the subscriptions alone (heaptrack, 2,000 connections). This one is
//! a sorted vector whose first allocation holds exactly one entry; a lookup (once per
//! delivery) is a binary search over at most `--max-subscriptions` names, one comparison for
//! the usual single stream.

use std::borrow::Borrow;

use litemap::LiteMap;

/// Entries sorted by key, in a vector that starts with room for one.
#[derive(Debug, Clone)]
pub struct StreamMap<K, V>(LiteMap<K, V>);

impl<K, V> Default for StreamMap<K, V> {
    fn default() -> Self {
        Self(LiteMap::new())
    }
}

impl<K: Ord, V> StreamMap<K, V> {
    /// The value under `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.0.get(key)
    }

    /// The entry under `key`: the stored key with its value.
    pub fn get_key_value<Q: Ord + ?Sized>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
    {
        let at = self.0.find_index(key).ok()?;
        self.0.get_indexed(at)
    }

    /// The value under `key`, to change.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.0.get_mut(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.0.contains_key(key)
    }

    /// Puts `value` under `key`; returns the value it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.0.is_empty() {
            // Exactly one slot: a vector's first growth would make four.
            self.0 = LiteMap::with_capacity(1);
        }
        self.0.insert(key, value)
    }

    /// Takes the value under `key` out.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let removed = self.0.remove(key);
        if self.0.is_empty() {
            // Nothing kept for a stream that is gone.
            self.0 = LiteMap::new();
        }
        removed
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::StreamMap;

    #[test]
    fn behaves_as_a_map() {
        let mut map = StreamMap::default();
        assert!(map.is_empty());
        assert_eq!(map.insert("b".to_owned(), 2), None);
        assert_eq!(map.insert("a".to_owned(), 1), None);
        assert_eq!(map.insert("c".to_owned(), 3), None);
        assert_eq!(map.insert("b".to_owned(), 20), Some(2));
        assert_eq!(map.get("b"), Some(&20));
        assert_eq!(map.get("z"), None);
        assert_eq!(map.get_key_value("c"), Some((&"c".to_owned(), &3)));
        if let Some(value) = map.get_mut("a") {
            *value += 10;
        }
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(map.remove("a"), Some(11));
        assert_eq!(map.remove("a"), None);
        assert!(map.contains_key("c") && !map.contains_key("a"));
        assert_eq!(map.len(), 2);
        assert_eq!(map.remove("b"), Some(20));
        assert_eq!(map.remove("c"), Some(3));
        assert!(map.is_empty());
    }
}
