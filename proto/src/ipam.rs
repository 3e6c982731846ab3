//! Overlay address management without a central store: each node claims a block of
//! the cluster range (its pod CIDR or host subnet) and announces it in its gossip
//! record; a deterministic rule settles the rare case where two nodes claimed the same
//! block (for example on both sides of a partition).
//!
//! - [`choose_block`]: a node starts at a pseudo-random block derived from its public
//!   key (so restarts and different nodes spread out without coordination) and takes
//!   the first block, in increasing order with wrap-around, that overlaps nothing in
//!   `taken`. The range's first block is never chosen when the range has more than
//!   one block: it holds the range's network address and is left to operators for
//!   static assignments (gateways, service addresses).
//! - [`resolve_conflict`]: of two overlapping claims, the one from the numerically
//!   lower public key (bytewise) keeps its block; the other node must re-claim with
//!   [`choose_block`] (the winner's block now in `taken`) and announce the new block.
//!   [`must_reclaim`] applies the rule against everyone a node knows.
//!
//! The rule is a pure function of the two claims, so every node reaches the same
//! verdict from the same records, and the loser moves even if it never hears of the
//! verdict from anyone else. Start index: the first 16 bytes of
//! BLAKE2s-256("weftnet ipam v1" || public key) as a little-endian u128, modulo the
//! number of blocks.

use crate::keys::PublicKey;
use blake2::digest::Digest as _;
use blake2::Blake2s256;
use ipnet::IpNet;
use std::net::IpAddr;

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v4: bool, v: u128) -> IpAddr {
    if v4 {
        IpAddr::from((v as u32).to_be_bytes())
    } else {
        IpAddr::from(v.to_be_bytes())
    }
}

/// First and last address of a prefix as integers.
fn bounds(net: &IpNet) -> (u128, u128) {
    (to_u128(net.network()), to_u128(net.broadcast()))
}

fn start_index(me: &PublicKey, blocks: u128) -> u128 {
    let mut h = Blake2s256::new();
    h.update(b"weftnet ipam v1");
    h.update(me.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&d[..16]);
    u128::from_le_bytes(first) % blocks
}

/// Picks a free block of prefix length `block_len` inside `range` for the node `me`,
/// avoiding every prefix in `taken` (any overlap counts; other address families are
/// ignored). `None` if `block_len` does not fit the range or no block is free.
pub fn choose_block(range: IpNet, block_len: u8, taken: &[IpNet], me: &PublicKey) -> Option<IpNet> {
    let range = range.trunc();
    if block_len < range.prefix_len() || block_len > range.max_prefix_len() {
        return None;
    }
    let v4 = matches!(range, IpNet::V4(_));
    let bits = u32::from(range.max_prefix_len());
    let depth = u32::from(block_len - range.prefix_len());
    // Blocks are counted with u128: splitting ::/0 into /128s counts 2^128 - 1 blocks
    // (the last address is never chosen).
    let blocks: u128 = if depth >= 128 {
        u128::MAX
    } else {
        1u128 << depth
    };
    let shift = bits - u32::from(block_len);
    let mask: u128 = if shift >= 128 {
        u128::MAX
    } else {
        (1u128 << shift) - 1
    };
    let (base, _) = bounds(&range);
    let taken: Vec<(u128, u128)> = taken
        .iter()
        .filter(|t| matches!(t, IpNet::V4(_)) == v4)
        .map(bounds)
        .collect();
    let first_usable = u128::from(blocks > 1);
    let start = first_usable + start_index(me, blocks - first_usable);
    // Walk the blocks from `start`, wrapping once. Each step returns a free block or
    // jumps past the end of the taken prefixes that overlap the current block, so
    // every taken prefix causes at most one jump per lap.
    let mut index = start;
    let mut wrapped = false;
    for _ in 0..2 * (taken.len() + 2) {
        if wrapped && index >= start {
            return None;
        }
        let lo = base + (index << shift.min(127));
        let hi = lo | mask;
        let blocker = taken
            .iter()
            .filter(|(a, b)| *a <= hi && lo <= *b)
            .map(|&(_, b)| b)
            .max();
        let Some(end) = blocker else {
            return IpNet::new(from_u128(v4, lo), block_len).ok();
        };
        let after_end = if shift >= 128 {
            blocks
        } else {
            ((end - base) >> shift).saturating_add(1)
        };
        index = after_end.max(index + 1);
        if index >= blocks {
            if wrapped {
                return None;
            }
            wrapped = true;
            index = first_usable;
        }
    }
    None
}

/// Two overlapping claims: which key keeps its block. `None` when the blocks do not
/// overlap or both claims come from the same node.
pub fn resolve_conflict<'k>(
    a: (&'k PublicKey, IpNet),
    b: (&'k PublicKey, IpNet),
) -> Option<&'k PublicKey> {
    let (ka, na) = a;
    let (kb, nb) = b;
    if ka == kb || !overlaps(&na, &nb) {
        return None;
    }
    Some(if ka < kb { ka } else { kb })
}

/// True when two prefixes share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether node `me` must give up its block `mine` because another node's claim
/// overlaps it and wins by [`resolve_conflict`].
pub fn must_reclaim<'a>(
    me: &PublicKey,
    mine: IpNet,
    others: impl IntoIterator<Item = (&'a PublicKey, &'a IpNet)>,
) -> bool {
    others
        .into_iter()
        .any(|(k, net)| resolve_conflict((me, mine), (k, *net)).is_some_and(|w| w != me))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u8) -> PublicKey {
        PublicKey::from_bytes([i; 32])
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    #[test]
    fn picks_inside_range_avoiding_taken() {
        let range = net("10.47.0.0/16");
        let a = choose_block(range, 24, &[], &key(1)).expect("free block");
        assert!(range.contains(&a) && a.prefix_len() == 24);
        assert_ne!(a, net("10.47.0.0/24"), "first block reserved");
        assert_eq!(
            choose_block(range, 24, &[], &key(1)),
            Some(a),
            "deterministic"
        );
        let b = choose_block(range, 24, &[a], &key(1)).expect("another");
        assert_ne!(a, b);
        // a taken supernet blocks all blocks inside it
        let c = choose_block(range, 24, &[net("10.47.0.0/17")], &key(1)).expect("upper half");
        assert!(net("10.47.128.0/17").contains(&c));
        // other family ignored
        assert!(choose_block(range, 24, &[net("fd00::/8")], &key(1)).is_some());
        // bad lengths
        assert_eq!(choose_block(range, 8, &[], &key(1)), None);
        assert_eq!(choose_block(range, 33, &[], &key(1)), None);
    }

    #[test]
    fn full_and_tiny_ranges() {
        let range = net("10.47.0.0/22"); // 4 blocks of /24, first reserved
        let mut taken = Vec::new();
        for _ in 0..3 {
            let b = choose_block(range, 24, &taken, &key(9)).expect("free");
            taken.push(b);
        }
        assert_eq!(choose_block(range, 24, &taken, &key(9)), None);
        assert_eq!(choose_block(range, 24, &[range], &key(9)), None);
        // a single-block range: its only block is usable
        assert_eq!(
            choose_block(net("10.9.9.0/24"), 24, &[], &key(1)),
            Some(net("10.9.9.0/24"))
        );
        // huge IPv6 splits work
        let v6 = choose_block(net("fd47::/16"), 64, &[], &key(3)).expect("v6 block");
        assert_eq!(v6.prefix_len(), 64);
        let all = choose_block(net("::/0"), 128, &[net("::/1")], &key(3)).expect("v6 /128");
        assert!(net("8000::/1").contains(&all));
    }

    #[test]
    fn conflicts() {
        let (a, b) = (key(1), key(2));
        let n = net("10.47.3.0/24");
        assert_eq!(resolve_conflict((&a, n), (&b, n)), Some(&a));
        assert_eq!(resolve_conflict((&b, n), (&a, n)), Some(&a));
        assert_eq!(resolve_conflict((&a, n), (&b, net("10.47.4.0/24"))), None);
        assert_eq!(resolve_conflict((&a, n), (&a, n)), None);
        assert_eq!(
            resolve_conflict((&b, net("10.47.0.0/16")), (&a, n)),
            Some(&a)
        );
        assert!(must_reclaim(&b, n, [(&a, &n)]));
        assert!(!must_reclaim(&a, n, [(&b, &n)]));
    }

    proptest! {
        #[test]
        fn chosen_block_is_free_and_valid(
            seed in any::<u8>(),
            range_len in 8u8..24,
            extra in 0u8..8,
            taken_raw in proptest::collection::vec((any::<u32>(), 8u8..=32), 0..20),
        ) {
            let range = IpNet::new(IpAddr::from([10, 0, 0, 0]), range_len).expect("range").trunc();
            let block_len = range_len + extra;
            let taken: Vec<IpNet> = taken_raw
                .iter()
                .map(|(a, l)| IpNet::new(IpAddr::from(a.to_be_bytes()), *l).expect("net").trunc())
                .collect();
            let me = key(seed);
            match choose_block(range, block_len, &taken, &me) {
                Some(b) => {
                    prop_assert!(range.contains(&b));
                    prop_assert_eq!(b.prefix_len(), block_len);
                    prop_assert!(taken.iter().all(|t| !overlaps(t, &b)));
                    if extra > 0 {
                        prop_assert_ne!(b.network(), range.network());
                    }
                }
                None if extra <= 6 => {
                    // verify by brute force that nothing was free
                    let blocks = 1u32 << extra;
                    let size = 1u32 << (32 - u32::from(block_len));
                    let base = u32::from_be_bytes([10, 0, 0, 0]);
                    for i in u32::from(blocks > 1)..blocks {
                        let cand = IpNet::new(IpAddr::from((base + i * size).to_be_bytes()), block_len).expect("net");
                        prop_assert!(taken.iter().any(|t| overlaps(t, &cand)), "free {} missed", cand);
                    }
                }
                None => {}
            }
        }

        #[test]
        fn resolution_is_symmetric(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(), l1 in 16u8..=24, l2 in 16u8..=24) {
            let (ka, kb) = (PublicKey::from_bytes(a), PublicKey::from_bytes(b));
            let na = IpNet::new(IpAddr::from([10, 1, 0, 0]), l1).expect("net").trunc();
            let nb = IpNet::new(IpAddr::from([10, 1, 0, 0]), l2).expect("net").trunc();
            prop_assert_eq!(resolve_conflict((&ka, na), (&kb, nb)), resolve_conflict((&kb, nb), (&ka, na)));
            if ka != kb {
                // exactly one of the two must re-claim
                prop_assert!(must_reclaim(&ka, na, [(&kb, &nb)]) ^ must_reclaim(&kb, nb, [(&ka, &na)]));
            }
        }
    }
}
