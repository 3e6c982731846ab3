//! A node's record: what the mesh needs to know to reach it (key, underlay endpoint,
//! overlay prefixes, and with a cluster CA its certificate) and the limits every
//! record must respect so that it fits in one gossip datagram. The owner signs it
//! (PROTOCOL.md §6.5); the signature travels as the entry's [`super::codec::Proof`].

use super::codec;
use super::handover::Handover;
use crate::cert::Certificate;
use crate::keys::PublicKey;
use ipnet::IpNet;
use std::net::SocketAddr;

/// Longest node name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;
/// Most overlay prefixes one record may carry.
pub const MAX_PREFIXES: usize = 64;
/// Largest encoded entry (record, membership header and signature, PROTOCOL.md §6.5),
/// so that any record fits in one datagram. 64 IPv4 prefixes always fit without a
/// certificate; IPv6-heavy records hit this bound at about 42 prefixes.
pub const MAX_ENTRY_LEN: usize = 1000;

/// What a node announces about itself. Only its owner changes it; every change bumps
/// `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's WireGuard public key; also its identity in the mesh.
    pub public_key: PublicKey,
    /// A human-readable name (host name), at most [`MAX_NAME_LEN`] bytes.
    pub name: String,
    /// The underlay address where the node receives WireGuard and gossip.
    pub endpoint: SocketAddr,
    /// Overlay prefixes the node owns (crypto-key routing), at most [`MAX_PREFIXES`].
    pub prefixes: Vec<IpNet>,
    /// Bumped by the owner on every change; with the boot epoch it orders versions of
    /// the record (PROTOCOL.md §6.5).
    pub version: u64,
    /// The node's certificate from the cluster CA, when the mesh has one (§8).
    pub certificate: Option<Certificate>,
    /// After a key rotation: the old key's signed hand-over to this key (§6.13).
    pub handover: Option<Handover>,
}

/// Why a record cannot be announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("node name is {0} bytes long, at most {MAX_NAME_LEN} are allowed")]
    NameTooLong(usize),
    /// More than [`MAX_PREFIXES`] prefixes.
    #[error("{0} prefixes, at most {MAX_PREFIXES} are allowed")]
    TooManyPrefixes(usize),
    /// The encoded record is larger than [`MAX_ENTRY_LEN`] bytes.
    #[error("record encodes to {0} bytes, at most {MAX_ENTRY_LEN} fit in a gossip datagram")]
    TooLarge(usize),
    /// The record's key is not this node's key.
    #[error("a node cannot change its own public key")]
    KeyChanged,
}

impl NodeRecord {
    /// Checks the limits above. Prefixes are stored in their canonical form (host bits
    /// cleared) by [`NodeRecord::normalize`], which the gossip layer applies.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.name.len() > MAX_NAME_LEN {
            return Err(RecordError::NameTooLong(self.name.len()));
        }
        if self.prefixes.len() > MAX_PREFIXES {
            return Err(RecordError::TooManyPrefixes(self.prefixes.len()));
        }
        let len = codec::record_entry_len(self);
        if len > MAX_ENTRY_LEN {
            return Err(RecordError::TooLarge(len));
        }
        Ok(())
    }

    /// Clears host bits of every prefix (`10.0.0.1/24` becomes `10.0.0.0/24`), the form
    /// the wire requires.
    pub fn normalize(&mut self) {
        for p in &mut self.prefixes {
            *p = p.trunc();
        }
    }
}

/// The owner-controlled part of a record (name, endpoint, prefixes) as the member
/// table stores it: its validated wire encoding (PROTOCOL.md §6.5), one small
/// allocation per member, copied as is into outgoing entries. Key and version live
/// beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordBody(Box<[u8]>);

impl RecordBody {
    pub(crate) fn from_record(r: &NodeRecord) -> Self {
        let mut out = Vec::with_capacity(codec::record_entry_len(r));
        codec::encode_record_body(
            &mut out,
            &r.name,
            r.endpoint,
            &r.prefixes,
            r.certificate.as_ref(),
            r.handover.as_ref(),
        );
        Self(out.into())
    }

    /// Bytes that `codec` has already decoded and validated.
    pub(crate) fn from_validated(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn endpoint(&self) -> SocketAddr {
        codec::parse_record_body(&self.0)
            .map(|b| b.endpoint)
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// BLAKE2s-256 of the encoded body: what the owner's signature covers.
    pub(crate) fn hash(&self) -> [u8; 32] {
        codec::body_hash(&self.0)
    }

    pub(crate) fn to_record(&self, public_key: PublicKey, version: u64) -> NodeRecord {
        // The bytes were validated on the way in; the fallback is never taken.
        let b = codec::parse_record_body(&self.0).unwrap_or_else(|_| codec::Body {
            name: String::new(),
            endpoint: SocketAddr::from(([0, 0, 0, 0], 0)),
            prefixes: Vec::new(),
            certificate: None,
            handover: None,
        });
        NodeRecord {
            public_key,
            name: b.name,
            endpoint: b.endpoint,
            prefixes: b.prefixes,
            version,
            certificate: b.certificate,
            handover: b.handover,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> NodeRecord {
        NodeRecord {
            public_key: PublicKey::from_bytes([1; 32]),
            name: "node-1".into(),
            endpoint: "192.0.2.1:51820".parse().expect("addr"),
            prefixes: vec!["10.47.1.0/24".parse().expect("net")],
            version: 0,
            certificate: None,
            handover: None,
        }
    }

    #[test]
    fn limits() {
        let mut r = record();
        assert_eq!(r.validate(), Ok(()));
        r.name = "x".repeat(65);
        assert_eq!(r.validate(), Err(RecordError::NameTooLong(65)));
        r.name = "x".repeat(64);
        r.prefixes = (0..64)
            .map(|i| format!("10.{i}.0.0/16").parse().expect("net"))
            .collect();
        assert_eq!(r.validate(), Ok(()));
        r.prefixes.push("10.99.0.0/16".parse().expect("net"));
        assert_eq!(r.validate(), Err(RecordError::TooManyPrefixes(65)));
        r.prefixes = (0..60)
            .map(|i| format!("fd00:{i:x}::/64").parse().expect("net"))
            .collect();
        assert!(matches!(r.validate(), Err(RecordError::TooLarge(_))));
    }

    #[test]
    fn normalize_clears_host_bits() {
        let mut r = record();
        r.prefixes = vec!["10.47.1.9/24".parse().expect("net")];
        r.normalize();
        assert_eq!(r.prefixes[0].to_string(), "10.47.1.0/24");
    }
}
