//! The peer set this node wants: its static peers and every live gossip member that is
//! not a deleted Kubernetes Node, each with the prefixes and multicast groups its
//! record announces and the rule for who makes first contact.

use super::authority::Authority;
use crate::gossip::Member;
use crate::keys::PublicKey;
use ipnet::IpNet;
use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};

/// Keepalive for gossiped peers, so that every pair keeps a live tunnel (and NAT
/// mappings stay open).
pub const MESH_KEEPALIVE: u16 = 25;

/// Most multicast groups one node announces: they ride in the record's prefix list
/// (as /32 or /128 multicast addresses, PROTOCOL.md §6), which holds 64 entries.
pub const MAX_ANNOUNCED_GROUPS: usize = 48;

/// One peer, defined once: who it is, where to reach it, which prefixes it may send
/// from and receive. A static peer of the config file is one; [`PeerSpec`] adds what
/// gossip knows, the daemon's status report adds traffic counters. With the `serde`
/// feature its form is the one `weftnet status --json` shows (`public_key` in base64,
/// `endpoint` as `HOST:PORT` or null, `allowed_ips` as prefixes).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Peer {
    /// The peer's WireGuard public key.
    #[cfg_attr(feature = "serde", serde(with = "crate::keys::base64_serde"))]
    pub public_key: PublicKey,
    /// Where to send until the peer roams (configured or gossiped).
    pub endpoint: Option<SocketAddr>,
    /// Crypto-key routing: the inner addresses the peer may send from and receives.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives; `None` sends none.
    pub persistent_keepalive: Option<u16>,
}

/// What the control plane says about one peer: the data plane's input.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSpec {
    /// Key, endpoint (the configured or gossiped one), prefixes, keepalive.
    pub peer: Peer,
    /// Multicast groups with a member on that peer.
    pub groups: Vec<IpAddr>,
    /// Start a handshake as soon as the peer is added (with a persistent keepalive).
    /// Gossiped pairs set it on one side only, so that the two do not duel.
    pub first_contact: bool,
}

/// Splits a record's prefixes into unicast prefixes (routes, allowed IPs, still to be
/// checked by the authority) and the multicast groups the node has members of
/// (full-length multicast addresses). A prefix that overlaps multicast space otherwise
/// (`224.0.0.0/4`, `ff00::/8`, or anything covering them, such as `0.0.0.0/0`) is
/// neither, and is ignored.
pub fn split_prefixes(prefixes: &[IpNet]) -> (Vec<IpNet>, Vec<IpAddr>) {
    let mut unicast = Vec::new();
    let mut groups = Vec::new();
    for p in prefixes {
        let space: IpNet = if p.addr().is_ipv4() {
            IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(224, 0, 0, 0), 4)
                    .expect("4 is a valid IPv4 prefix length"),
            )
        } else {
            IpNet::V6(
                ipnet::Ipv6Net::new(std::net::Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8)
                    .expect("8 is a valid IPv6 prefix length"),
            )
        };
        let multicast_space = space.contains(&p.network()) || p.contains(&space.network());
        if !multicast_space {
            unicast.push(*p);
        } else if p.prefix_len() == p.max_prefix_len() {
            groups.push(p.addr());
        }
    }
    (unicast, groups)
}

/// The wanted peer set: the static peers, then each live member (by key, once) that
/// is not a deleted Kubernetes Node and that the `authority` admits, with the prefixes
/// it allows (checked against every known underlay address). A member whose key is
/// in `alive_by_traffic` (declared dead, but its tunnel carried traffic lately) counts
/// as live. Of a gossiped pair, the lower key makes first contact and the other
/// answers.
pub(super) fn wanted(
    me: &PublicKey,
    statics: &[PeerSpec],
    members: &[Member],
    (deleted_nodes, alive_by_traffic): (&BTreeSet<String>, &BTreeSet<PublicKey>),
    authority: &mut Authority,
    underlays: &[IpAddr],
) -> Vec<PeerSpec> {
    authority.note_vouched(members);
    let mut seen: HashSet<PublicKey> = statics.iter().map(|p| p.peer.public_key).collect();
    let mut specs = statics.to_vec();
    let live = members.iter().filter(|m| {
        (m.state.is_live() || alive_by_traffic.contains(&m.record.public_key))
            && !deleted_nodes.contains(&m.record.name)
    });
    for m in live {
        if !authority.admits(m) {
            // Counted and logged (once per prefix) like any refusal.
            authority.admit(m, split_prefixes(&m.record.prefixes).0, underlays);
            continue;
        }
        if m.record.public_key != *me && seen.insert(m.record.public_key) {
            let (unicast, groups) = split_prefixes(&m.record.prefixes);
            let allowed_ips = authority.admit(m, unicast, underlays);
            specs.push(PeerSpec {
                peer: Peer {
                    public_key: m.record.public_key,
                    endpoint: Some(m.record.endpoint),
                    allowed_ips,
                    persistent_keepalive: Some(MESH_KEEPALIVE),
                },
                groups,
                first_contact: *me < m.record.public_key,
            });
        }
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{MemberState, NodeRecord};

    fn n(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn record_prefixes_split_into_unicast_and_groups() {
        let p: Vec<IpNet> = [
            "10.47.3.0/24",
            "239.1.2.3/32",
            "ff05::1:3/128",
            "224.0.0.0/4",
            "fd47::1/128",
            "0.0.0.0/0",
            "128.0.0.0/1",
            "::/0",
        ]
        .iter()
        .map(|s| n(s))
        .collect();
        let (unicast, groups) = split_prefixes(&p);
        assert_eq!(unicast, vec![p[0], p[4]]);
        assert_eq!(groups, vec![p[1].addr(), p[2].addr()]);
    }

    fn member(key: u8, name: &str, state: MemberState) -> Member {
        Member {
            record: NodeRecord {
                public_key: PublicKey::from_bytes([key; 32]),
                name: name.into(),
                endpoint: SocketAddr::from(([192, 0, 2, key], 51820)),
                prefixes: vec![n(&format!("10.47.{key}.0/24")), n("239.1.1.1/32")],
                version: 1,
                certificate: None,
                handover: None,
            },
            state,
            epoch: 1,
            incarnation: 0,
        }
    }

    #[test]
    fn live_members_become_peers_and_the_lower_key_calls() {
        let me = PublicKey::from_bytes([5; 32]);
        let statics = vec![PeerSpec {
            peer: Peer {
                public_key: PublicKey::from_bytes([9; 32]),
                endpoint: None,
                allowed_ips: vec![n("10.9.0.0/16")],
                persistent_keepalive: None,
            },
            groups: vec![],
            first_contact: true,
        }];
        let members = vec![
            member(3, "a", MemberState::Alive),
            member(7, "b", MemberState::Suspect),
            member(8, "c", MemberState::Dead),
            member(9, "static", MemberState::Alive),
            member(10, "gone", MemberState::Alive),
        ];
        let deleted: BTreeSet<String> = ["gone".to_string()].into();
        let mut authority = Authority::new(None, &[], vec![n("10.9.0.0/16")]);
        let peers = wanted(
            &me,
            &statics,
            &members,
            (&deleted, &BTreeSet::new()),
            &mut authority,
            &[],
        );
        let keys: Vec<u8> = peers
            .iter()
            .map(|p| p.peer.public_key.as_bytes()[0])
            .collect();
        assert_eq!(keys, vec![9, 3, 7]);
        assert!(!peers[1].first_contact, "a higher key waits");
        assert!(peers[2].first_contact, "the lower key calls");
        assert_eq!(peers[1].peer.allowed_ips, vec![n("10.47.3.0/24")]);
        assert_eq!(peers[1].groups, vec![n("239.1.1.1/32").addr()]);
        assert_eq!(peers[1].peer.persistent_keepalive, Some(MESH_KEEPALIVE));
    }
}
