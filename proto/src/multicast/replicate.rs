//! The multicast routing decisions: which peers get a copy of a multicast packet read
//! from the TUN ([`Replicator::outbound`]), and whether a multicast packet decrypted
//! from a peer may be written to the TUN ([`Replicator::inbound`]).
//!
//! Outbound, in order: the packet must parse (`mcast_malformed`) and have a multicast
//! destination (`not_multicast`: route it as unicast instead); IGMP/MLD/ND control
//! traffic is never forwarded (`mcast_control`: snoop it instead); the group must pass
//! the [`GroupFilter`] (`mcast_filtered`); some other node must have a member
//! (`mcast_no_members`); and the node's multicast rate limit, charged with the packet
//! length once however many copies are sent, must allow it (`mcast_rate_limited`).
//! The copies go to every node whose gossiped group list holds the destination, never
//! to this node itself, each peer once.
//!
//! Inbound: the source must belong to the sending peer's prefixes, exactly as for
//! unicast ([`Router::inbound`], `mcast_source_not_allowed`), the destination must be
//! multicast and pass the filter, and control traffic is refused. TTL / hop limit is
//! not decremented: the mesh is one link. Whether this node still has a member is not
//! checked: gossip may lag by a moment, and the kernel drops packets for groups no
//! socket joined.

use super::policy::{is_multicast, GroupFilter, RateLimit};
use super::{is_link_control, ParseError};
use crate::packet::IpHeader;
use crate::router::{DropReason, PeerId, Router};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Most groups accepted per node from gossip; more are ignored.
pub const MAX_GROUPS_PER_NODE: usize = 256;

/// Why a multicast packet was not replicated or delivered. The names are stable: they
/// appear in metrics and in `weftnet status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum McastDrop {
    /// Not a parseable IPv4/IPv6 packet, or an IPv6 extension chain that cannot be
    /// walked.
    Malformed,
    /// The destination is not multicast (the caller routes it as unicast).
    NotMulticast,
    /// IGMP, MLD or neighbor discovery: link control, never forwarded.
    Control,
    /// The group is rejected by the [`GroupFilter`].
    Filtered,
    /// No other node has a member of the group.
    NoMembers,
    /// The node's multicast rate limit is exhausted.
    RateLimited,
    /// Decrypted packet whose source is not in the sending peer's prefixes.
    SourceNotAllowed,
}

impl McastDrop {
    /// Every reason, for counters.
    pub const ALL: [McastDrop; 7] = [
        Self::Malformed,
        Self::NotMulticast,
        Self::Control,
        Self::Filtered,
        Self::NoMembers,
        Self::RateLimited,
        Self::SourceNotAllowed,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "mcast_malformed",
            Self::NotMulticast => "not_multicast",
            Self::Control => "mcast_control",
            Self::Filtered => "mcast_filtered",
            Self::NoMembers => "mcast_no_members",
            Self::RateLimited => "mcast_rate_limited",
            Self::SourceNotAllowed => "mcast_source_not_allowed",
        }
    }

    /// Position in [`McastDrop::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<DropReason> for McastDrop {
    fn from(r: DropReason) -> Self {
        match r {
            DropReason::SourceNotAllowed => Self::SourceNotAllowed,
            DropReason::Malformed | DropReason::NoRoute => Self::Malformed,
        }
    }
}

impl From<ParseError> for McastDrop {
    fn from(_: ParseError) -> Self {
        Self::Malformed
    }
}

/// The mesh's group membership: which peers have members of which group. Rebuilt or
/// updated by the daemon from every node's gossiped group list.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    local: Option<PeerId>,
    by_group: HashMap<IpAddr, Vec<PeerId>>,
    by_peer: HashMap<PeerId, Vec<IpAddr>>,
}

impl Membership {
    /// An empty map. `local` is this node's own id if it has one in the caller's
    /// numbering: its groups are never stored, so no copy is ever sent to itself.
    pub fn new(local: Option<PeerId>) -> Self {
        Self {
            local,
            ..Self::default()
        }
    }

    /// Replaces `peer`'s groups. Non-multicast addresses and duplicates are dropped,
    /// and at most [`MAX_GROUPS_PER_NODE`] groups are kept.
    pub fn set_peer_groups(&mut self, peer: PeerId, groups: impl IntoIterator<Item = IpAddr>) {
        self.remove_peer(peer);
        if Some(peer) == self.local {
            return;
        }
        let mut list: Vec<IpAddr> = groups
            .into_iter()
            .filter(|g| is_multicast(*g))
            .take(MAX_GROUPS_PER_NODE * 4)
            .collect();
        list.sort_unstable();
        list.dedup();
        list.truncate(MAX_GROUPS_PER_NODE);
        for g in &list {
            let peers = self.by_group.entry(*g).or_default();
            if let Err(at) = peers.binary_search(&peer) {
                peers.insert(at, peer);
            }
        }
        if !list.is_empty() {
            self.by_peer.insert(peer, list);
        }
    }

    /// Forgets `peer`'s groups (it left the mesh).
    pub fn remove_peer(&mut self, peer: PeerId) {
        let Some(old) = self.by_peer.remove(&peer) else {
            return;
        };
        for g in old {
            if let Some(peers) = self.by_group.get_mut(&g) {
                peers.retain(|p| *p != peer);
                if peers.is_empty() {
                    self.by_group.remove(&g);
                }
            }
        }
    }

    /// The peers with a member of `group`, sorted, each once.
    pub fn members(&self, group: IpAddr) -> &[PeerId] {
        self.by_group.get(&group).map_or(&[], Vec::as_slice)
    }

    /// `peer`'s groups, sorted.
    pub fn groups_of(&self, peer: PeerId) -> &[IpAddr] {
        self.by_peer.get(&peer).map_or(&[], Vec::as_slice)
    }

    /// Number of groups with at least one member.
    pub fn group_count(&self) -> usize {
        self.by_group.len()
    }
}

/// A packet to replicate: its header and the peers that each get one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication<'m> {
    /// The packet's IP header.
    pub header: IpHeader,
    /// The recipients, sorted, each once, never this node.
    pub peers: &'m [PeerId],
}

/// Multicast forwarding policy of one node.
#[derive(Debug, Clone)]
pub struct Replicator {
    filter: GroupFilter,
    rate: Option<RateLimit>,
}

impl Replicator {
    /// A replicator with a group filter and an optional rate limit on the multicast
    /// this node injects into the mesh.
    pub fn new(filter: GroupFilter, rate: Option<RateLimit>) -> Self {
        Self { filter, rate }
    }

    /// The group filter.
    pub fn filter(&self) -> &GroupFilter {
        &self.filter
    }

    /// Decides which peers get a copy of `packet`, read from the TUN. Allocates
    /// nothing: the peer list is borrowed from `members`. On
    /// [`McastDrop::Control`] the caller snoops the packet instead
    /// ([`super::parse_control`], [`super::GroupTable::handle_report`]).
    pub fn outbound<'m>(
        &mut self,
        now: Instant,
        packet: &[u8],
        members: &'m Membership,
    ) -> Result<Replication<'m>, McastDrop> {
        self.outbound_with(now, packet, members, |_| false)
    }

    /// [`Self::outbound`] for a node that also delivers on its own links (chained
    /// mode's pod ports): `local(group)` says whether a local member gets a copy. The
    /// packet then passes with no peer to send to, and the rate limit is charged once
    /// for all copies, local and remote.
    pub fn outbound_with<'m>(
        &mut self,
        now: Instant,
        packet: &[u8],
        members: &'m Membership,
        local: impl FnOnce(IpAddr) -> bool,
    ) -> Result<Replication<'m>, McastDrop> {
        let header = IpHeader::parse(packet).map_err(|_| McastDrop::Malformed)?;
        self.admit(&header, packet)?;
        let peers = members.members(header.dst);
        if peers.is_empty() && !local(header.dst) {
            return Err(McastDrop::NoMembers);
        }
        if let Some(rate) = &mut self.rate {
            if !rate.allow(now, header.total_len) {
                return Err(McastDrop::RateLimited);
            }
        }
        Ok(Replication { header, peers })
    }

    /// Decides whether a multicast packet decrypted from `peer`'s session may be
    /// written to the TUN (unchanged: no TTL decrement).
    pub fn inbound(
        &self,
        router: &Router,
        peer: PeerId,
        packet: &[u8],
    ) -> Result<IpHeader, McastDrop> {
        let header = router.inbound(peer, packet)?;
        self.admit(&header, packet)?;
        Ok(header)
    }

    /// The checks both directions share: a multicast destination, not IGMP/MLD/ND
    /// link control, and a group the filter allows.
    fn admit(&self, header: &IpHeader, packet: &[u8]) -> Result<(), McastDrop> {
        if !is_multicast(header.dst) {
            return Err(McastDrop::NotMulticast);
        }
        if is_link_control(packet)? {
            return Err(McastDrop::Control);
        }
        self.filter
            .check(header.dst)
            .map_err(|_| McastDrop::Filtered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicast::igmp::tests::{hex, vectors as v4};
    use crate::multicast::mld::tests::vectors as v6;
    use proptest::prelude::*;
    use std::time::Duration;

    fn a(s: &str) -> IpAddr {
        s.parse().expect("addr")
    }

    /// UDP-ish IPv4 packet of `len` bytes from `src` to `dst` with TTL 1.
    fn v4(src: &str, dst: &str, len: u16) -> Vec<u8> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (a(src), a(dst)) else {
            panic!("v4 only");
        };
        let mut p = vec![0u8; usize::from(len)];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[8] = 1;
        p[9] = 17;
        p[12..16].copy_from_slice(&s.octets());
        p[16..20].copy_from_slice(&d.octets());
        p
    }

    /// IPv6 UDP packet with hop limit 1.
    fn v6(src: &str, dst: &str) -> Vec<u8> {
        let (IpAddr::V6(s), IpAddr::V6(d)) = (a(src), a(dst)) else {
            panic!("v6 only");
        };
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, 1];
        p.extend_from_slice(&s.octets());
        p.extend_from_slice(&d.octets());
        p.extend_from_slice(&[0; 8]);
        p
    }

    fn members() -> Membership {
        let mut m = Membership::new(Some(0));
        m.set_peer_groups(0, [a("239.1.2.3")]); // ourselves: ignored
        m.set_peer_groups(
            2,
            [
                a("239.1.2.3"),
                a("ff15::1234"),
                a("239.1.2.3"),
                a("10.0.0.1"),
            ],
        );
        m.set_peer_groups(1, [a("239.1.2.3")]);
        m.set_peer_groups(3, [a("239.9.9.9")]);
        m
    }

    #[test]
    fn membership_map() {
        let mut m = members();
        assert_eq!(m.members(a("239.1.2.3")), &[1, 2]);
        assert_eq!(m.members(a("ff15::1234")), &[2]);
        assert_eq!(m.members(a("10.0.0.1")), &[] as &[PeerId]);
        assert_eq!(m.groups_of(2), &[a("239.1.2.3"), a("ff15::1234")]);
        assert_eq!(m.groups_of(0), &[] as &[IpAddr]);
        assert_eq!(m.group_count(), 3);
        m.set_peer_groups(2, [a("239.9.9.9")]);
        assert_eq!(m.members(a("239.1.2.3")), &[1]);
        assert_eq!(m.members(a("239.9.9.9")), &[2, 3]);
        assert_eq!(m.members(a("ff15::1234")), &[] as &[PeerId]);
        m.remove_peer(3);
        m.remove_peer(3);
        assert_eq!(m.members(a("239.9.9.9")), &[2]);
        m.set_peer_groups(1, []);
        assert_eq!(m.group_count(), 1);
        // the per-node cap
        let many = (0..1000u32).map(|i| IpAddr::from([239, 0, (i >> 8) as u8, i as u8]));
        m.set_peer_groups(7, many);
        assert_eq!(m.groups_of(7).len(), MAX_GROUPS_PER_NODE);
    }

    #[test]
    fn outbound_decisions() {
        let t0 = Instant::now();
        let m = members();
        let mut r = Replicator::new(GroupFilter::default(), None);
        let out = r.outbound(t0, &hex(v4::DATA), &m).expect("replicated");
        assert_eq!(out.peers, &[1, 2]);
        assert_eq!(out.header.dst, a("239.1.2.3"));
        assert_eq!(out.header.total_len, 33);
        let out = r
            .outbound(t0, &v6("fd47::1", "ff15::1234"), &m)
            .expect("replicated");
        assert_eq!(out.peers, &[2]);

        for (packet, why) in [
            (vec![0x45, 0], McastDrop::Malformed),
            (v4("10.47.0.1", "10.47.0.2", 28), McastDrop::NotMulticast),
            (hex(v4::V3_JOIN), McastDrop::Control),
            (hex(v4::V2_JOIN), McastDrop::Control),
            (hex(v6::V2_JOIN), McastDrop::Control),
            (hex(v6::V1_JOIN), McastDrop::Control),
            (hex(v6::ROUTER_SOLICIT), McastDrop::Control),
            (v4("10.47.0.1", "224.0.0.251", 28), McastDrop::Filtered),
            (v6("fe80::1", "ff02::fb"), McastDrop::Filtered),
            (v4("10.47.0.1", "239.7.7.7", 28), McastDrop::NoMembers),
        ] {
            assert_eq!(
                r.outbound(t0, &packet, &m).map(|o| o.peers),
                Err(why),
                "{why:?}"
            );
        }
        // an IGMP packet is control even if it does not parse as IGMP
        let mut bad = hex(v4::V2_JOIN);
        bad[30] ^= 0xff;
        assert_eq!(
            r.outbound(t0, &bad, &m).map(|o| o.peers),
            Err(McastDrop::Control)
        );
    }

    #[test]
    fn outbound_rate_limit_counts_packets_not_copies() {
        let t0 = Instant::now();
        let m = members();
        let mut r = Replicator::new(GroupFilter::default(), Some(RateLimit::new(100, 100)));
        let p = v4("10.47.0.1", "239.1.2.3", 60);
        assert!(r.outbound(t0, &p, &m).is_ok());
        assert_eq!(
            r.outbound(t0, &p, &m).map(|o| o.peers),
            Err(McastDrop::RateLimited)
        );
        // no members: not charged
        let q = v4("10.47.0.1", "239.7.7.7", 60);
        assert_eq!(
            r.outbound(t0, &q, &m).map(|o| o.peers),
            Err(McastDrop::NoMembers)
        );
        assert!(r.outbound(t0 + Duration::from_millis(200), &p, &m).is_ok());
    }

    #[test]
    fn local_members_pass_without_peers_and_share_the_rate_limit() {
        let t0 = Instant::now();
        let m = members();
        let mut r = Replicator::new(GroupFilter::default(), Some(RateLimit::new(100, 100)));
        // 239.7.7.7 has no member on another node, one on a local pod port.
        let q = v4("10.47.0.1", "239.7.7.7", 60);
        let rep = r.outbound_with(t0, &q, &m, |g| g == a("239.7.7.7"));
        assert_eq!(
            rep.map(|o| (o.header.dst, o.peers.len())),
            Ok((a("239.7.7.7"), 0))
        );
        // the budget is spent for the local copy as for remote ones
        let p = v4("10.47.0.1", "239.1.2.3", 60);
        assert_eq!(
            r.outbound_with(t0, &p, &m, |_| true).map(|o| o.peers),
            Err(McastDrop::RateLimited)
        );
        // no local member: as outbound
        assert_eq!(
            r.outbound_with(t0, &q, &m, |_| false).map(|o| o.peers),
            Err(McastDrop::NoMembers)
        );
        // control is never a local copy: it is snooped
        assert_eq!(
            r.outbound_with(t0, &hex(v4::V3_JOIN), &m, |_| true)
                .map(|o| o.peers),
            Err(McastDrop::Control)
        );
    }

    #[test]
    fn inbound_decisions() {
        let mut router = Router::new();
        router.add_prefix("10.47.1.0/24".parse().expect("net"), 1);
        router.add_prefix("10.47.2.0/24".parse().expect("net"), 2);
        router.add_prefix("fd47:1::/64".parse().expect("net"), 1);
        let r = Replicator::new(GroupFilter::default(), None);
        let p = v4("10.47.1.5", "239.1.2.3", 28);
        let h = r.inbound(&router, 1, &p).expect("accepted");
        assert_eq!(h.dst, a("239.1.2.3"));
        assert!(r.inbound(&router, 1, &v6("fd47:1::5", "ff15::1")).is_ok());
        assert_eq!(r.inbound(&router, 2, &p), Err(McastDrop::SourceNotAllowed));
        assert_eq!(
            r.inbound(&router, 1, &v4("10.47.1.5", "10.47.0.1", 28)),
            Err(McastDrop::NotMulticast)
        );
        assert_eq!(
            r.inbound(&router, 1, &v4("10.47.1.5", "224.0.0.251", 28)),
            Err(McastDrop::Filtered)
        );
        let mut igmp = v4("10.47.1.5", "224.0.0.22", 28);
        igmp[9] = 2;
        assert_eq!(r.inbound(&router, 1, &igmp), Err(McastDrop::Control));
        assert_eq!(r.inbound(&router, 1, &[0x45]), Err(McastDrop::Malformed));
        // link-local IPv6 sources are not in any peer's prefixes
        assert_eq!(
            r.inbound(&router, 1, &v6("fe80::1", "ff15::1")),
            Err(McastDrop::SourceNotAllowed)
        );
    }

    #[test]
    fn drop_names_are_unique() {
        let mut names: Vec<&str> = McastDrop::ALL.iter().map(|d| d.as_str()).collect();
        for (i, d) in McastDrop::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), McastDrop::ALL.len());
    }

    proptest! {
        #[test]
        fn outbound_never_panics_and_never_targets_self(
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
            dst in prop_oneof![Just([239u8, 1, 2, 3]), Just([239, 9, 9, 9]), any::<[u8; 4]>()],
        ) {
            let t0 = Instant::now();
            let m = members();
            let mut r = Replicator::new(GroupFilter::default(), None);
            let _ = r.outbound(t0, &bytes, &m);
            let mut p = bytes.clone();
            if p.len() >= 20 {
                p[0] = 0x45;
                let len = u16::try_from(p.len()).expect("small");
                p[2..4].copy_from_slice(&len.to_be_bytes());
                p[16..20].copy_from_slice(&dst);
                if let Ok(out) = r.outbound(t0, &p, &m) {
                    prop_assert!(!out.peers.contains(&0));
                    prop_assert!(out.peers.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(out.header.total_len <= p.len());
                    prop_assert!(p[9] != 2);
                }
            }
        }
    }
}
