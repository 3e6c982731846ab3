//! What makes gossip authentic beyond the cluster key (PROTOCOL.md §6.3, §6.5): the
//! owner's signature of an entry's statement, the rules for which states others may
//! put on a signed statement, and the sender MAC under the sender-receiver pair key.

use super::codec::{Entry, MAC_AT, MAC_LEN, PLAIN_HEADER_LEN};
use super::member::Rank;
use crate::identity::{self, SignatureBytes};
use crate::keys::PublicKey;
use blake2::digest::Digest as _;
use blake2::Blake2s256;

const ENTRY_LABEL: &[u8] = b"weftnet entry v3";

/// The owner's signature of an entry's statement: `(key, epoch, incarnation,
/// signed state, version, body hash)` (PROTOCOL.md §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proof {
    /// The state the owner signed: `Alive` or `Left`.
    pub(crate) signed: Rank,
    /// BLAKE2s-256 of the record body.
    pub(crate) body_hash: [u8; 32],
    pub(crate) signature: SignatureBytes,
}

/// BLAKE2s-256 of an encoded record body.
pub(crate) fn body_hash(body: &[u8]) -> [u8; 32] {
    Blake2s256::digest(body).into()
}

/// The bytes an owner signs for an entry (PROTOCOL.md §6.5).
pub(crate) fn signed_message(
    key: &PublicKey,
    epoch: u64,
    incarnation: u64,
    signed: Rank,
    version: u64,
    body_hash: &[u8; 32],
) -> [u8; 16 + 32 + 8 + 8 + 1 + 8 + 32] {
    let mut m = [0u8; 105];
    m[..16].copy_from_slice(ENTRY_LABEL);
    m[16..48].copy_from_slice(key.as_bytes());
    m[48..56].copy_from_slice(&epoch.to_le_bytes());
    m[56..64].copy_from_slice(&incarnation.to_le_bytes());
    m[64] = signed as u8;
    m[65..73].copy_from_slice(&version.to_le_bytes());
    m[73..].copy_from_slice(body_hash);
    m
}

/// Whether `rank` may stand on a statement signed with `signed`: others add
/// suspicion, death and tombstones to an alive statement; only the owner says it
/// left.
pub(crate) fn rank_fits(signed: Rank, rank: Rank) -> bool {
    match signed {
        Rank::Alive => rank != Rank::Left,
        Rank::Left => matches!(rank, Rank::Left | Rank::Forgotten),
        _ => false,
    }
}

/// The sender MAC of a plaintext whose MAC field is still zero: the first 16 bytes
/// of BLAKE2s-256 keyed with the pair key (PROTOCOL.md §6.3).
pub(crate) fn sender_mac(pair_key: &[u8; 32], plaintext: &[u8]) -> [u8; MAC_LEN] {
    use blake2::digest::Mac as _;
    let mut mac = [0u8; MAC_LEN];
    if let Ok(mut m) = <blake2::Blake2sMac256 as blake2::digest::KeyInit>::new_from_slice(pair_key)
    {
        m.update(plaintext);
        mac.copy_from_slice(&m.finalize().into_bytes()[..MAC_LEN]);
    }
    mac
}

/// Whether `plaintext` (as received) carries the right sender MAC for `pair_key`.
pub(crate) fn check_sender_mac(pair_key: &[u8; 32], plaintext: &mut [u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    if plaintext.len() < PLAIN_HEADER_LEN {
        return false;
    }
    let mut got = [0u8; MAC_LEN];
    got.copy_from_slice(&plaintext[MAC_AT..MAC_AT + MAC_LEN]);
    plaintext[MAC_AT..MAC_AT + MAC_LEN].fill(0);
    let want = sender_mac(pair_key, plaintext);
    plaintext[MAC_AT..MAC_AT + MAC_LEN].copy_from_slice(&got);
    bool::from(want.ct_eq(&got))
}

impl Entry {
    /// Whether the owner's signature covers this entry's statement.
    pub(crate) fn verify(&self) -> bool {
        let m = signed_message(
            &self.key,
            self.claim.epoch,
            self.claim.incarnation,
            self.proof.signed,
            self.version,
            &self.proof.body_hash,
        );
        identity::verify(&self.key, &m, &self.proof.signature)
    }
}
