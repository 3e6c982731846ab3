//! Node key rotation (PROTOCOL.md §6.13): the hand-over statement an old key signs to
//! name its successor, and the register of retired keys every node keeps.
//!
//! A node's identity is its WireGuard key, so a new key is a new member unless the
//! old key vouches for it. The rotating node signs, with the old key, the statement
//! `(label, name, old key, new key, generation)` and announces it in the new key's
//! record. A receiver that verifies it retires the old key: its entry becomes a
//! tombstone (no death, no leave, so no route is torn down), entries of a retired key
//! are no longer merged, and the member's prefixes stay with the new key. The
//! generation grows by one per rotation of a name, so a statement cannot be replayed
//! to take a name back to an older key, and a key hands over once: a second,
//! different successor for a retired key is refused.

use crate::identity::{self, SignatureBytes, Signer, SIGNATURE_LEN};
use crate::keys::PublicKey;
use std::collections::{BTreeMap, VecDeque};

const HANDOVER_LABEL: &[u8] = b"weftnet handover v1";
/// Encoded length of a hand-over: old key, new key, generation, signature.
pub const HANDOVER_LEN: usize = 32 + 32 + 8 + SIGNATURE_LEN;
/// Generations are below this bound (2^48), like the other counters of an entry.
pub const MAX_GENERATION: u64 = 1 << 48;
/// Most retired keys a node remembers; the oldest are dropped first.
pub(crate) const MAX_RETIRED: usize = 4096;

/// The old key's signed word that `new` now speaks for the node `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    /// The key being retired; it signs the statement.
    pub old: PublicKey,
    /// The successor; the record that carries the statement is this key's.
    pub new: PublicKey,
    /// 1 for a node's first rotation, one more for each next one.
    pub generation: u64,
    /// XEdDSA signature of [`signed_message`] by `old`.
    pub signature: SignatureBytes,
}

/// Why a hand-over is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    /// The signature is not the old key's over this name, these keys and generation.
    #[error("hand-over signature does not verify (forged, or for another name)")]
    Forged,
    /// The statement is carried by another key's record than the one it names.
    #[error("hand-over carried by a record of another key")]
    WrongCarrier,
    /// Old and new key are the same, or the generation is 0 or too large.
    #[error("hand-over to the same key or with an invalid generation")]
    Invalid,
    /// The name already rotated to this generation or a later one with other keys:
    /// a replayed or rolled-back statement.
    #[error("hand-over older than one already seen for this name")]
    RolledBack,
    /// The old key already handed over to another successor.
    #[error("the old key already handed over to another key")]
    Forked,
    /// The new key was itself retired: the statement would revive it.
    #[error("hand-over to a retired key")]
    ToRetired,
}

/// The bytes the old key signs (PROTOCOL.md §6.13).
pub(crate) fn signed_message(
    name: &str,
    old: &PublicKey,
    new: &PublicKey,
    generation: u64,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(HANDOVER_LABEL.len() + 1 + name.len() + 72);
    m.extend_from_slice(HANDOVER_LABEL);
    m.push(name.len().min(255) as u8);
    m.extend_from_slice(&name.as_bytes()[..name.len().min(255)]);
    m.extend_from_slice(old.as_bytes());
    m.extend_from_slice(new.as_bytes());
    m.extend_from_slice(&generation.to_le_bytes());
    m
}

impl Handover {
    /// The statement `old` signs to hand the node `name` over to `new`.
    pub fn sign(old: &Signer, name: &str, new: PublicKey, generation: u64) -> Self {
        let old_key = old.public_key();
        Self {
            old: old_key,
            new,
            generation,
            signature: old.sign(&signed_message(name, &old_key, &new, generation)),
        }
    }

    /// Checks the statement on its own, as carried by `carrier`'s record named
    /// `name`: distinct keys, a generation in range, the old key's signature.
    pub fn verify(&self, carrier: &PublicKey, name: &str) -> Result<(), HandoverError> {
        if self.new != *carrier {
            return Err(HandoverError::WrongCarrier);
        }
        if self.old == self.new || self.generation == 0 || self.generation >= MAX_GENERATION {
            return Err(HandoverError::Invalid);
        }
        let m = signed_message(name, &self.old, &self.new, self.generation);
        if identity::verify(&self.old, &m, &self.signature) {
            Ok(())
        } else {
            Err(HandoverError::Forged)
        }
    }

    /// Appends the wire form: old key, new key, generation (LE), signature.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.old.as_bytes());
        out.extend_from_slice(self.new.as_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.signature);
    }

    /// Parses exactly [`HANDOVER_LEN`] bytes; `None` for any other length. The
    /// signature is checked by [`Handover::verify`], not here.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != HANDOVER_LEN {
            return None;
        }
        let key = |at: usize| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes[at..at + 32]);
            PublicKey::from_bytes(k)
        };
        let mut g = [0u8; 8];
        g.copy_from_slice(&bytes[64..72]);
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&bytes[72..]);
        Some(Self {
            old: key(0),
            new: key(32),
            generation: u64::from_le_bytes(g),
            signature,
        })
    }
}

/// One retired key: who succeeded it, at which generation, for which name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retirement {
    pub(crate) new: PublicKey,
    pub(crate) generation: u64,
    pub(crate) name: String,
}

/// The retired keys this node knows, and the highest generation seen per name.
/// Bounded: past [`MAX_RETIRED`] keys the oldest retirement is forgotten.
#[derive(Debug, Clone, Default)]
pub(crate) struct Retired {
    keys: BTreeMap<PublicKey, Retirement>,
    order: VecDeque<PublicKey>,
    generations: BTreeMap<String, u64>,
}

impl Retired {
    /// Whether `key` was retired.
    pub(crate) fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains_key(key)
    }

    /// Whether a verified hand-over for `name` may be taken, against what this node
    /// has seen: `Ok(true)` if it is news, `Ok(false)` if it is already known.
    pub(crate) fn check(&self, h: &Handover, name: &str) -> Result<bool, HandoverError> {
        if let Some(r) = self.keys.get(&h.old) {
            return if r.new == h.new && r.generation == h.generation && r.name == name {
                Ok(false)
            } else {
                Err(HandoverError::Forked)
            };
        }
        if self.keys.contains_key(&h.new) {
            return Err(HandoverError::ToRetired);
        }
        if self
            .generations
            .get(name)
            .is_some_and(|g| h.generation <= *g)
        {
            return Err(HandoverError::RolledBack);
        }
        Ok(true)
    }

    /// Records a hand-over that [`Retired::check`] accepted as news.
    pub(crate) fn insert(&mut self, h: &Handover, name: &str) {
        if self.keys.len() >= MAX_RETIRED {
            if let Some(oldest) = self.order.pop_front() {
                self.keys.remove(&oldest);
            }
        }
        self.keys.insert(
            h.old,
            Retirement {
                new: h.new,
                generation: h.generation,
                name: name.to_string(),
            },
        );
        self.order.push_back(h.old);
        let g = self.generations.entry(name.to_string()).or_insert(0);
        *g = (*g).max(h.generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use proptest::prelude::*;

    fn signer(i: u8) -> Signer {
        Signer::new(&PrivateKey::from_bytes([i; 32]))
    }

    fn key(i: u8) -> PublicKey {
        PrivateKey::from_bytes([i; 32]).public_key()
    }

    #[test]
    fn a_hand_over_verifies_only_for_its_name_keys_and_carrier() {
        let h = Handover::sign(&signer(1), "node-a", key(2), 1);
        assert_eq!(h.verify(&key(2), "node-a"), Ok(()));
        assert_eq!(h.verify(&key(2), "node-b"), Err(HandoverError::Forged));
        assert_eq!(
            h.verify(&key(3), "node-a"),
            Err(HandoverError::WrongCarrier)
        );
        let mut g = h;
        g.generation = 2;
        assert_eq!(g.verify(&key(2), "node-a"), Err(HandoverError::Forged));
        // signed by anyone but the old key
        let mut forged = Handover::sign(&signer(3), "node-a", key(2), 1);
        forged.old = key(1);
        assert_eq!(forged.verify(&key(2), "node-a"), Err(HandoverError::Forged));
        let same = Handover::sign(&signer(2), "node-a", key(2), 1);
        assert_eq!(same.verify(&key(2), "node-a"), Err(HandoverError::Invalid));
        let zero = Handover::sign(&signer(1), "node-a", key(2), 0);
        assert_eq!(zero.verify(&key(2), "node-a"), Err(HandoverError::Invalid));
        let huge = Handover::sign(&signer(1), "node-a", key(2), MAX_GENERATION);
        assert_eq!(huge.verify(&key(2), "node-a"), Err(HandoverError::Invalid));
    }

    #[test]
    fn replayed_rolled_back_and_forked_hand_overs_are_refused() {
        let mut r = Retired::default();
        let first = Handover::sign(&signer(1), "a", key(2), 1);
        assert_eq!(r.check(&first, "a"), Ok(true));
        r.insert(&first, "a");
        assert!(r.contains(&key(1)));
        // the same statement again: known, not news
        assert_eq!(r.check(&first, "a"), Ok(false));
        // a stolen old key names another successor
        let fork = Handover::sign(&signer(1), "a", key(9), 5);
        assert_eq!(r.check(&fork, "a"), Err(HandoverError::Forked));
        let next = Handover::sign(&signer(2), "a", key(3), 2);
        assert_eq!(r.check(&next, "a"), Ok(true));
        r.insert(&next, "a");
        // back to a retired key
        let back = Handover::sign(&signer(3), "a", key(1), 3);
        assert_eq!(r.check(&back, "a"), Err(HandoverError::ToRetired));
        // another key of the same name at an older generation: rolled back
        let old = Handover::sign(&signer(7), "a", key(8), 2);
        assert_eq!(r.check(&old, "a"), Err(HandoverError::RolledBack));
        // other names are independent
        let other = Handover::sign(&signer(7), "b", key(8), 1);
        assert_eq!(r.check(&other, "b"), Ok(true));
    }

    #[test]
    fn the_register_is_bounded() {
        let mut r = Retired::default();
        for i in 0..MAX_RETIRED as u64 + 10 {
            let mut old = [0u8; 32];
            old[..8].copy_from_slice(&i.to_le_bytes());
            let h = Handover {
                old: PublicKey::from_bytes(old),
                new: key(1),
                generation: i + 1,
                signature: [0; 64],
            };
            r.insert(&h, "n");
        }
        assert_eq!(r.keys.len(), MAX_RETIRED);
        assert!(!r.contains(&PublicKey::from_bytes([0; 32])));
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            match Handover::decode(&bytes) {
                Some(h) => {
                    let mut out = Vec::new();
                    h.encode(&mut out);
                    prop_assert_eq!(out, bytes);
                }
                None => prop_assert_ne!(bytes.len(), HANDOVER_LEN),
            }
        }
    }
}
