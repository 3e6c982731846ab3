//! The rumor queue (PROTOCOL.md §6.7): which members' entries to piggyback on outgoing
//! datagrams. Items that were sent fewest times go first, newest first among equals;
//! an item is dropped after the retransmit limit. The queue is bounded: when full, the
//! most-sent, oldest item is dropped (anti-entropy delivers it anyway).
//!
//! Items are keys, not copies of entries: the current entry is read when sending, so a
//! newer state of the same member supersedes the old rumor.

use crate::keys::PublicKey;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
pub(crate) struct News {
    order: BTreeSet<(u32, u64, PublicKey)>,
    items: BTreeMap<PublicKey, (u32, u64)>,
    counter: u64,
    max: usize,
}

impl News {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            order: BTreeSet::new(),
            items: BTreeMap::new(),
            counter: 0,
            max: max.max(1),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Queues (or re-queues with a fresh count) a member's entry.
    pub(crate) fn push(&mut self, key: PublicKey) {
        self.remove(&key);
        self.counter += 1;
        let item = (0, u64::MAX - self.counter);
        self.items.insert(key, item);
        self.order.insert((item.0, item.1, key));
        while self.items.len() > self.max {
            if let Some((_, _, k)) = self.order.pop_last() {
                self.items.remove(&k);
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.order.clear();
        self.items.clear();
    }

    pub(crate) fn remove(&mut self, key: &PublicKey) {
        if let Some((t, a)) = self.items.remove(key) {
            self.order.remove(&(t, a, *key));
        }
    }

    /// Up to `n` keys in sending order.
    pub(crate) fn candidates(&self, n: usize) -> Vec<PublicKey> {
        self.order.iter().take(n).map(|&(_, _, k)| k).collect()
    }

    /// Counts one transmission; drops the item at `limit`.
    pub(crate) fn sent(&mut self, key: &PublicKey, limit: u32) {
        if let Some((t, a)) = self.items.get(key).copied() {
            self.order.remove(&(t, a, *key));
            if t + 1 >= limit {
                self.items.remove(key);
            } else {
                self.items.insert(*key, (t + 1, a));
                self.order.insert((t + 1, a, *key));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u8) -> PublicKey {
        PublicKey::from_bytes([i; 32])
    }

    #[test]
    fn priority_limit_and_bound() {
        let mut n = News::new(3);
        n.push(k(1));
        n.push(k(2));
        assert_eq!(n.candidates(5), vec![k(2), k(1)], "newest first");
        n.sent(&k(2), 2);
        assert_eq!(n.candidates(5), vec![k(1), k(2)], "fewest sends first");
        n.sent(&k(2), 2);
        assert_eq!(n.candidates(5), vec![k(1)], "dropped at the limit");
        n.push(k(2));
        n.push(k(3));
        n.sent(&k(1), 9);
        n.push(k(4));
        assert_eq!(n.len(), 3);
        assert!(!n.candidates(5).contains(&k(1)), "most-sent dropped first");
        n.push(k(4));
        assert_eq!(n.len(), 3, "re-queue does not duplicate");
        n.remove(&k(4));
        assert_eq!(n.len(), 2);
    }
}
