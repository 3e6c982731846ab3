//! Crypto-key routing: which peer an outgoing packet goes to, and whether a packet that
//! a peer's session decrypted may be delivered.
//!
//! An outgoing packet goes to the peer whose allowed prefixes hold its destination
//! (longest prefix match). A decrypted packet is accepted only if the longest prefix
//! that holds its *source* belongs to the very peer it came from; anything else is a
//! forgery or a misconfiguration and is dropped (and counted by the caller).

use crate::packet::{IpHeader, PacketError};
use crate::prefix_table::PrefixTable;
use ipnet::IpNet;

/// A peer's slot number: its index in the caller's peer list, and the upper 24 bits
/// of its WireGuard session indices.
pub type PeerId = u32;

/// Why the router dropped a packet. The names are stable: they appear in metrics and
/// in `weftnet status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a parseable IPv4/IPv6 packet.
    Malformed,
    /// No peer's allowed prefixes hold the destination.
    NoRoute,
    /// Decrypted packet whose source is not in the sending peer's prefixes.
    SourceNotAllowed,
}

impl DropReason {
    /// Every reason, for counters.
    pub const ALL: [DropReason; 3] = [Self::Malformed, Self::NoRoute, Self::SourceNotAllowed];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed_ip",
            Self::NoRoute => "no_route",
            Self::SourceNotAllowed => "source_not_allowed",
        }
    }

    /// Position in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<PacketError> for DropReason {
    fn from(_: PacketError) -> Self {
        Self::Malformed
    }
}

/// The allowed-prefix table of all peers.
#[derive(Debug, Clone, Default)]
pub struct Router {
    table: PrefixTable<PeerId>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives `peer` the prefix `prefix`. A prefix belongs to one peer: a later
    /// insertion of the same prefix moves it (as `wg set ... allowed-ips` does).
    pub fn add_prefix(&mut self, prefix: IpNet, peer: PeerId) -> Option<PeerId> {
        self.table.insert(prefix, peer)
    }

    /// Removes every prefix of `peer`.
    pub fn remove_peer(&mut self, peer: PeerId) {
        let gone: Vec<IpNet> = self
            .table
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(n, _)| n)
            .collect();
        for n in gone {
            self.table.remove(n);
        }
    }

    /// The prefixes `peer` currently owns, sorted.
    pub fn prefixes_of(&self, peer: PeerId) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self
            .table
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(n, _)| n)
            .collect();
        v.sort();
        v
    }

    /// Decides where a packet read from the TUN device goes.
    pub fn outbound(&self, packet: &[u8]) -> Result<(PeerId, IpHeader), DropReason> {
        let header = IpHeader::parse(packet)?;
        let peer = self
            .table
            .lookup(header.dst)
            .copied()
            .ok_or(DropReason::NoRoute)?;
        Ok((peer, header))
    }

    /// Decides whether a packet decrypted from `peer`'s session may be delivered.
    pub fn inbound(&self, peer: PeerId, packet: &[u8]) -> Result<IpHeader, DropReason> {
        let header = IpHeader::parse(packet)?;
        match self.table.lookup(header.src) {
            Some(owner) if *owner == peer => Ok(header),
            _ => Err(DropReason::SourceNotAllowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[3] = 20;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn router() -> Router {
        let mut r = Router::new();
        r.add_prefix("10.47.1.0/24".parse().expect("net"), 1);
        r.add_prefix("10.47.2.0/24".parse().expect("net"), 2);
        r.add_prefix("10.47.2.9/32".parse().expect("net"), 3);
        r
    }

    #[test]
    fn outbound_uses_longest_prefix() {
        let r = router();
        assert_eq!(
            r.outbound(&v4([10, 47, 0, 1], [10, 47, 2, 1])).map(|x| x.0),
            Ok(2)
        );
        assert_eq!(
            r.outbound(&v4([10, 47, 0, 1], [10, 47, 2, 9])).map(|x| x.0),
            Ok(3)
        );
        assert_eq!(
            r.outbound(&v4([10, 47, 0, 1], [10, 9, 9, 9])).map(|x| x.0),
            Err(DropReason::NoRoute)
        );
        assert_eq!(
            r.outbound(&[0x45, 0]).map(|x| x.0),
            Err(DropReason::Malformed)
        );
    }

    #[test]
    fn inbound_requires_source_of_sending_peer() {
        let r = router();
        assert!(r.inbound(1, &v4([10, 47, 1, 5], [10, 47, 0, 1])).is_ok());
        // peer 1 claims a source that belongs to peer 2
        assert_eq!(
            r.inbound(1, &v4([10, 47, 2, 5], [10, 47, 0, 1])),
            Err(DropReason::SourceNotAllowed)
        );
        // 10.47.2.9 is peer 3's even though peer 2 holds the /24
        assert_eq!(
            r.inbound(2, &v4([10, 47, 2, 9], [10, 47, 0, 1])),
            Err(DropReason::SourceNotAllowed)
        );
        assert_eq!(
            r.inbound(1, &v4([192, 0, 2, 1], [10, 47, 0, 1])),
            Err(DropReason::SourceNotAllowed)
        );
    }

    #[test]
    fn remove_peer_drops_its_prefixes() {
        let mut r = router();
        r.remove_peer(2);
        assert_eq!(r.prefixes_of(2), Vec::<IpNet>::new());
        assert_eq!(r.prefixes_of(3).len(), 1);
        assert_eq!(
            r.outbound(&v4([10, 47, 0, 1], [10, 47, 2, 1])).map(|x| x.0),
            Err(DropReason::NoRoute)
        );
    }
}
