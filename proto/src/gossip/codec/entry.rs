//! A membership entry on the wire (PROTOCOL.md §6.5): the claim (key, epoch,
//! incarnation, rank), the record version, the rank the owner signed, then the record
//! body (or, in a tombstone, its remaining lifetime and body hash) and the owner's
//! signature, which travel together as a [`Proof`].

use super::body::read_record_body;
use super::bytes::{addr_len, Reader};
use super::Malformed;
use crate::gossip::handover::HANDOVER_LEN;
use crate::gossip::member::{Claim, Rank};
use crate::gossip::proof::{rank_fits, Proof};
use crate::gossip::record::{NodeRecord, RecordBody, MAX_ENTRY_LEN};
use crate::identity::SIGNATURE_LEN;
use crate::keys::PublicKey;

/// Incarnations and versions are below this bound (2^48): a counter the owner bumps
/// by one per refutation or record change never gets there, so it always has room to
/// refute, and an entry beyond it is malformed.
pub(crate) const MAX_COUNTER: u64 = 1 << 48;

/// One membership entry on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: PublicKey,
    pub(crate) claim: Claim,
    pub(crate) version: u64,
    /// The record, absent in tombstones (rank `Forgotten`).
    pub(crate) record: Option<RecordBody>,
    /// Seconds a tombstone has left to live (0 for other ranks).
    pub(crate) remaining_secs: u32,
    pub(crate) proof: Proof,
}

/// Encoded length of an entry carrying `record`.
pub(crate) fn record_entry_len(record: &NodeRecord) -> usize {
    32 + 8
        + 8
        + 1
        + 8
        + 1
        + SIGNATURE_LEN
        + 2
        + record.certificate.as_ref().map_or(0, |c| c.encode().len())
        + record.handover.map_or(0, |_| HANDOVER_LEN)
        + 1
        + record.name.len()
        + addr_len(record.endpoint.ip())
        + 2
        + 1
        + record
            .prefixes
            .iter()
            .map(|p| addr_len(p.addr()) + 1)
            .sum::<usize>()
}

/// Appends one entry (PROTOCOL.md §6.5). Tombstones (rank `Forgotten`) carry
/// `remaining_secs` and the body hash instead of a record; other ranks always carry
/// one. Entries without a record outside tombstones are not sent (`false`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_entry(
    out: &mut Vec<u8>,
    key: &PublicKey,
    claim: &Claim,
    version: u64,
    record: Option<&RecordBody>,
    remaining_secs: u32,
    proof: &Proof,
) -> bool {
    if claim.rank != Rank::Forgotten && record.is_none() {
        return false;
    }
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&claim.epoch.to_le_bytes());
    out.extend_from_slice(&claim.incarnation.to_le_bytes());
    out.push(claim.rank as u8);
    out.extend_from_slice(&version.to_le_bytes());
    out.push(proof.signed as u8);
    match record {
        Some(r) if claim.rank != Rank::Forgotten => out.extend_from_slice(r.bytes()),
        _ => {
            out.extend_from_slice(&remaining_secs.to_le_bytes());
            out.extend_from_slice(&proof.body_hash);
        }
    }
    out.extend_from_slice(&proof.signature);
    true
}

/// The decoded record part of an entry.
impl Entry {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        encode_entry(
            out,
            &self.key,
            &self.claim,
            self.version,
            self.record.as_ref(),
            self.remaining_secs,
            &self.proof,
        );
    }

    /// Reads one entry (no type byte) from the front of `r`.
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let start = r.buf.len();
        let key = r.key()?;
        let epoch = r.u64()?;
        let incarnation = r.u64()?;
        let rank = Rank::from_u8(r.u8()?).ok_or(Malformed)?;
        let version = r.u64()?;
        let signed = Rank::from_u8(r.u8()?).ok_or(Malformed)?;
        if incarnation >= MAX_COUNTER || version >= MAX_COUNTER || !rank_fits(signed, rank) {
            return Err(Malformed);
        }
        let claim = Claim {
            epoch,
            incarnation,
            rank,
        };
        let (record, remaining_secs, body_hash) = if rank == Rank::Forgotten {
            (None, r.u32()?, r.array()?)
        } else {
            let before = r.buf;
            read_record_body(r)?;
            let used = before.len() - r.buf.len();
            let body = RecordBody::from_validated(&before[..used]);
            let hash = body.hash();
            (Some(body), 0, hash)
        };
        let signature = r.array()?;
        if start - r.buf.len() > MAX_ENTRY_LEN {
            return Err(Malformed);
        }
        Ok(Self {
            key,
            claim,
            version,
            record,
            remaining_secs,
            proof: Proof {
                signed,
                body_hash,
                signature,
            },
        })
    }
}

/// Decodes exactly one entry (no type byte), as the `signed_entry` fuzz target does.
pub(crate) fn decode_entry(buf: &[u8]) -> Result<Entry, Malformed> {
    let mut r = Reader { buf };
    let e = Entry::decode(&mut r)?;
    if !r.buf.is_empty() {
        return Err(Malformed);
    }
    Ok(e)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::gossip::proof::signed_message;

    /// A signed entry of node 7 with rank `rank` (a tombstone without its record).
    pub(crate) fn entry(rank: Rank) -> Entry {
        let owner = crate::keys::PrivateKey::from_bytes([7; 32]);
        let key = owner.public_key();
        let body = RecordBody::from_record(&NodeRecord {
            public_key: key,
            name: "node-7".into(),
            endpoint: "[2001:db8::7]:51820".parse().expect("addr"),
            prefixes: vec![
                "10.47.7.0/24".parse().expect("net"),
                "fd47:7::/64".parse().expect("net"),
            ],
            version: 2,
            certificate: None,
            handover: None,
        });
        let claim = Claim {
            epoch: 1_700_000_000_000,
            incarnation: 3,
            rank,
        };
        let signed = if rank == Rank::Left {
            Rank::Left
        } else {
            Rank::Alive
        };
        let body_hash = body.hash();
        let m = signed_message(&key, claim.epoch, 3, signed, 2, &body_hash);
        Entry {
            key,
            claim,
            version: 2,
            record: (rank != Rank::Forgotten).then_some(body),
            remaining_secs: if rank == Rank::Forgotten { 3600 } else { 0 },
            proof: Proof {
                signed,
                body_hash,
                signature: crate::identity::Signer::new(&owner).sign(&m),
            },
        }
    }

    #[test]
    fn entry_round_trip_length_and_signature() {
        let e = entry(Rank::Alive);
        assert!(e.verify());
        let record = e.record.clone().expect("record").to_record(e.key, 2);
        let mut one = Vec::new();
        e.encode(&mut one);
        assert_eq!(one.len(), record_entry_len(&record));
        assert_eq!(decode_entry(&one), Ok(e.clone()));
        let mut forged = e.clone();
        forged.version = 3;
        assert!(!forged.verify(), "the signature covers the version");
    }
}
