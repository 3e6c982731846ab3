//! The anti-entropy summary of a node's view (PROTOCOL.md §6.8): entries fall into
//! 1024 leaf buckets by the first 10 bits of their key; a bucket's hash is the wrapping
//! sum of its entries' hashes, so parents (levels 5 and 0) are sums of their 32
//! children and everything updates in O(1) when an entry changes.

use super::member::Claim;
use crate::keys::PublicKey;
use blake2::digest::Digest as _;
use blake2::Blake2s256;

/// The finest level: 2^10 buckets.
pub(crate) const LEAF_LEVEL: u8 = 10;
/// Levels between a bucket and its children.
pub(crate) const STEP: u8 = 5;
/// A mismatching bucket holding at most this many entries on both sides together is
/// compared entry by entry (summaries) instead of being split further.
pub(crate) const SMALL_BUCKET: u32 = 16;

const LEAVES: usize = 1 << LEAF_LEVEL;
const MIDS: usize = 1 << STEP;

/// The leaf bucket of a key.
pub(crate) fn leaf_of(key: &PublicKey) -> usize {
    let b = key.as_bytes();
    usize::from(u16::from_be_bytes([b[0], b[1]]) >> 6)
}

/// The bucket of a key at `level` (0, 5 or 10).
#[cfg(test)]
pub(crate) fn bucket_of(key: &PublicKey, level: u8) -> usize {
    leaf_of(key) >> (LEAF_LEVEL - level)
}

fn key_at_leaf(leaf: usize) -> PublicKey {
    let v = ((leaf as u16) << 6).to_be_bytes();
    let mut b = [0u8; 32];
    b[0] = v[0];
    b[1] = v[1];
    PublicKey::from_bytes(b)
}

/// The keys of bucket `index` at `level`: `lo..hi`, `hi` open when `None`.
pub(crate) fn key_range(level: u8, index: usize) -> (PublicKey, Option<PublicKey>) {
    let shift = LEAF_LEVEL - level;
    let first = index << shift;
    let next = (index + 1) << shift;
    let hi = (next < LEAVES).then(|| key_at_leaf(next));
    (key_at_leaf(first), hi)
}

/// The children of bucket `index` at `level`, at `level + STEP`.
pub(crate) fn children(index: usize) -> std::ops::Range<usize> {
    (index << STEP)..((index + 1) << STEP)
}

/// H(entry) = first 8 bytes (little-endian u64) of
/// BLAKE2s-256(key || epoch || incarnation || rank || version).
pub(crate) fn entry_hash(key: &PublicKey, claim: &Claim, version: u64) -> u64 {
    let mut h = Blake2s256::new();
    h.update(key.as_bytes());
    h.update(claim.epoch.to_le_bytes());
    h.update(claim.incarnation.to_le_bytes());
    h.update([claim.rank as u8]);
    h.update(version.to_le_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_le_bytes(first)
}

/// Counts and hash sums per bucket at levels 10, 5 and 0.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    leaf_hash: Vec<u64>,
    leaf_count: Vec<u32>,
    mid_hash: [u64; MIDS],
    mid_count: [u32; MIDS],
    root_hash: u64,
    root_count: u32,
}

impl Tree {
    pub(crate) fn new() -> Self {
        Self {
            leaf_hash: vec![0; LEAVES],
            leaf_count: vec![0; LEAVES],
            mid_hash: [0; MIDS],
            mid_count: [0; MIDS],
            root_hash: 0,
            root_count: 0,
        }
    }

    pub(crate) fn add(&mut self, key: &PublicKey, hash: u64) {
        let leaf = leaf_of(key);
        let mid = leaf >> STEP;
        self.leaf_hash[leaf] = self.leaf_hash[leaf].wrapping_add(hash);
        self.leaf_count[leaf] += 1;
        self.mid_hash[mid] = self.mid_hash[mid].wrapping_add(hash);
        self.mid_count[mid] += 1;
        self.root_hash = self.root_hash.wrapping_add(hash);
        self.root_count += 1;
    }

    pub(crate) fn remove(&mut self, key: &PublicKey, hash: u64) {
        let leaf = leaf_of(key);
        let mid = leaf >> STEP;
        self.leaf_hash[leaf] = self.leaf_hash[leaf].wrapping_sub(hash);
        self.leaf_count[leaf] = self.leaf_count[leaf].saturating_sub(1);
        self.mid_hash[mid] = self.mid_hash[mid].wrapping_sub(hash);
        self.mid_count[mid] = self.mid_count[mid].saturating_sub(1);
        self.root_hash = self.root_hash.wrapping_sub(hash);
        self.root_count = self.root_count.saturating_sub(1);
    }

    /// `(count, hash)` of a bucket; `(0, 0)` for an index out of range.
    pub(crate) fn get(&self, level: u8, index: usize) -> (u32, u64) {
        match level {
            0 if index == 0 => (self.root_count, self.root_hash),
            STEP if index < MIDS => (self.mid_count[index], self.mid_hash[index]),
            LEAF_LEVEL if index < LEAVES => (self.leaf_count[index], self.leaf_hash[index]),
            _ => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::member::Rank;

    #[test]
    fn buckets_and_ranges() {
        let mut b = [0u8; 32];
        b[0] = 0xff;
        b[1] = 0xc0;
        let k = PublicKey::from_bytes(b);
        assert_eq!(leaf_of(&k), 1023);
        assert_eq!(bucket_of(&k, 5), 31);
        assert_eq!(bucket_of(&k, 0), 0);
        let (lo, hi) = key_range(10, 1023);
        assert!(lo <= k && hi.is_none());
        let (lo, hi) = key_range(5, 3);
        assert_eq!(lo.as_bytes()[..2], [0x18, 0x00]);
        assert_eq!(hi.expect("bounded").as_bytes()[..2], [0x20, 0x00]);
        assert_eq!(key_range(0, 0).1, None);
        assert_eq!(children(2), 64..96);
    }

    #[test]
    fn sums_are_consistent() {
        let mut t = Tree::new();
        let claim = Claim {
            epoch: 1,
            incarnation: 0,
            rank: Rank::Alive,
        };
        let keys: Vec<PublicKey> = (0..50u8)
            .map(|i| PublicKey::from_bytes([i.wrapping_mul(37); 32]))
            .collect();
        for k in &keys {
            t.add(k, entry_hash(k, &claim, 0));
        }
        for mid in 0..32 {
            let (c, h) = children(mid).fold((0, 0u64), |(c, h), leaf| {
                let (lc, lh) = t.get(10, leaf);
                (c + lc, h.wrapping_add(lh))
            });
            assert_eq!(t.get(5, mid), (c, h));
        }
        for k in &keys {
            t.remove(k, entry_hash(k, &claim, 0));
        }
        assert_eq!(t.get(0, 0), (0, 0));
        assert_eq!(t.get(5, 32), (0, 0));
    }
}
