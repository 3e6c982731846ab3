//! The member table: one slot per known key (this node's own included, tombstones
//! too), kept in key order, with the indexes the protocol needs kept consistent on
//! every change: the digest tree, the list of live members (for random picks) and the
//! ordered set of per-member deadlines (suspicion, reaping, tombstone expiry).

use super::codec::Proof;
use super::digest::{entry_hash, key_range, Tree};
use super::member::{Claim, Rank};
use super::record::RecordBody;
use super::replay::ReplayWindow;
use crate::keys::PublicKey;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Bound;
use std::time::Instant;

const NOT_LIVE: u32 = u32::MAX;

/// What the table knows about one key.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) claim: Claim,
    pub(crate) version: u64,
    /// Absent only in tombstones.
    pub(crate) record: Option<RecordBody>,
    /// The owner's signature of `(claim.epoch, claim.incarnation, version, record)`.
    pub(crate) proof: Proof,
    /// The pending deadline of this slot, mirrored in `Table::deadlines`.
    pub(crate) deadline: Option<Instant>,
    /// Replay state of datagrams sent by this key.
    pub(crate) replay: Option<ReplayWindow>,
    /// In a tombstone: the endpoint of the record it replaced, where datagrams of
    /// the forgotten node are still answered (so it learns of it and refutes).
    pub(crate) last_endpoint: Option<SocketAddr>,
    hash: u64,
    live_index: u32,
}

impl Slot {
    /// The entry hash (PROTOCOL.md §6.8).
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// The table. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    me: PublicKey,
    slots: BTreeMap<PublicKey, Slot>,
    live: Vec<PublicKey>,
    deadlines: BTreeSet<(Instant, PublicKey)>,
    tree: Tree,
}

impl Table {
    pub(crate) fn new(me: PublicKey) -> Self {
        Self {
            me,
            slots: BTreeMap::new(),
            live: Vec::new(),
            deadlines: BTreeSet::new(),
            tree: Tree::new(),
        }
    }

    pub(crate) fn get(&self, key: &PublicKey) -> Option<&Slot> {
        self.slots.get(key)
    }

    pub(crate) fn replay_mut(&mut self, key: &PublicKey) -> Option<&mut Option<ReplayWindow>> {
        self.slots.get_mut(key).map(|s| &mut s.replay)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Live members, this node excluded, in no particular order.
    pub(crate) fn live(&self) -> &[PublicKey] {
        &self.live
    }

    pub(crate) fn is_live(&self, key: &PublicKey) -> bool {
        self.slots
            .get(key)
            .is_some_and(|s| s.live_index != NOT_LIVE)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&PublicKey, &Slot)> {
        self.slots.iter()
    }

    /// Slots of bucket `index` at `level`.
    pub(crate) fn bucket(
        &self,
        level: u8,
        index: usize,
    ) -> impl Iterator<Item = (&PublicKey, &Slot)> {
        let (lo, hi) = key_range(level, index);
        let hi = match hi {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        self.slots.range((Bound::Included(lo), hi))
    }

    /// Inserts or replaces the membership part of a slot. `statement` is a new
    /// signed statement (its proof, and its record unless it is a tombstone); `None`
    /// keeps the current one (only the rank or deadline change), but a tombstone
    /// drops the record. A new key without a statement is not inserted.
    pub(crate) fn set(
        &mut self,
        key: PublicKey,
        claim: Claim,
        version: u64,
        statement: Option<(Proof, Option<RecordBody>)>,
        deadline: Option<Instant>,
    ) {
        let hash = entry_hash(&key, &claim, version);
        let (proof, record) = match statement {
            Some((p, r)) => (Some(p), r),
            None => (None, None),
        };
        let slot = match self.slots.get_mut(&key) {
            Some(slot) => {
                self.tree.remove(&key, slot.hash);
                slot
            }
            None => {
                let Some(proof) = proof else {
                    return;
                };
                self.slots.entry(key).or_insert(Slot {
                    claim,
                    version,
                    record: None,
                    proof,
                    deadline: None,
                    replay: None,
                    last_endpoint: None,
                    hash,
                    live_index: NOT_LIVE,
                })
            }
        };
        if let Some(p) = proof {
            slot.proof = p;
        }
        slot.claim = claim;
        slot.version = version;
        slot.hash = hash;
        if claim.rank == Rank::Forgotten {
            if let Some(r) = slot.record.take() {
                slot.last_endpoint = Some(r.endpoint());
            }
        } else if record.is_some() {
            slot.record = record;
            slot.last_endpoint = None;
        }
        if slot.deadline != deadline {
            if let Some(old) = slot.deadline {
                self.deadlines.remove(&(old, key));
            }
            if let Some(new) = deadline {
                self.deadlines.insert((new, key));
            }
            slot.deadline = deadline;
        }
        self.tree.add(&key, hash);
        let live = claim.rank.is_live() && key != self.me;
        let slot_live = slot.live_index != NOT_LIVE;
        if live && !slot_live {
            slot.live_index = self.live.len() as u32;
            self.live.push(key);
        } else if !live && slot_live {
            let at = slot.live_index as usize;
            slot.live_index = NOT_LIVE;
            self.unlist(at);
        }
    }

    fn unlist(&mut self, at: usize) {
        if at >= self.live.len() {
            return;
        }
        self.live.swap_remove(at);
        if let Some(moved) = self.live.get(at).copied() {
            if let Some(s) = self.slots.get_mut(&moved) {
                s.live_index = at as u32;
            }
        }
    }

    /// Deletes a slot entirely (a tombstone that expired).
    pub(crate) fn remove(&mut self, key: &PublicKey) {
        if let Some(slot) = self.slots.remove(key) {
            self.tree.remove(key, slot.hash);
            if let Some(d) = slot.deadline {
                self.deadlines.remove(&(d, *key));
            }
            if slot.live_index != NOT_LIVE {
                self.unlist(slot.live_index as usize);
            }
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(t, _)| t)
    }

    /// Removes and returns the earliest deadline that is due.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<PublicKey> {
        let &(t, key) = self.deadlines.first()?;
        if t > now {
            return None;
        }
        self.deadlines.remove(&(t, key));
        if let Some(s) = self.slots.get_mut(&key) {
            s.deadline = None;
        }
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn k(i: u8) -> PublicKey {
        let mut b = [0u8; 32];
        b[0] = i;
        PublicKey::from_bytes(b)
    }

    fn st() -> Option<(Proof, Option<RecordBody>)> {
        Some((
            Proof {
                signed: Rank::Alive,
                body_hash: [0; 32],
                signature: [0; 64],
            },
            None,
        ))
    }

    fn claim(rank: Rank) -> Claim {
        Claim {
            epoch: 1,
            incarnation: 0,
            rank,
        }
    }

    #[test]
    fn indexes_stay_consistent() {
        let now = Instant::now();
        let mut t = Table::new(k(0));
        t.set(k(0), claim(Rank::Alive), 0, st(), None);
        assert!(t.live().is_empty(), "self is never in the live list");
        for i in 1..=5 {
            t.set(k(i), claim(Rank::Alive), 0, st(), None);
        }
        assert_eq!(t.live().len(), 5);
        let soon = now + Duration::from_secs(1);
        t.set(k(2), claim(Rank::Suspect), 0, None, Some(soon));
        assert!(t.is_live(&k(2)));
        t.set(k(3), claim(Rank::Dead), 0, None, None);
        assert!(!t.is_live(&k(3)));
        assert_eq!(t.live().len(), 4);
        for key in t.live() {
            assert!(t.is_live(key));
        }
        assert_eq!(t.next_deadline(), Some(soon));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(t.pop_due(soon), Some(k(2)));
        assert_eq!(t.get(&k(2)).and_then(|s| s.deadline), None);
        t.remove(&k(1));
        assert_eq!(t.live().len(), 3);
        assert_eq!(t.tree().get(0, 0).0, 5);
        assert_eq!(t.bucket(10, 0).count(), 1);
        assert_eq!(t.bucket(0, 0).count(), 5);
    }
}
