//! What a member may claim: the check every prefix a member announces passes before it
//! becomes a route or an allowed IP on this node. Whatever anyone announces, these are
//! never routed: prefixes broader than any private range (so no default or half-default
//! route), loopback, link-local, multicast and unspecified space, any member's underlay
//! endpoint, this node's own underlay address, and anything overlapping a static peer's
//! allowed IPs (gossip never overrides a static peer). With `--range`, a member's
//! prefixes of the range's family must also lie inside the range (or inside one of this
//! node's own overlay networks, for given addresses) and be no larger than a block.
//! In Kubernetes mode, once the Nodes are known, the API server is the authority: a
//! member is admitted only if a Node of its name exists whose InternalIP is the
//! member's endpoint, and its prefixes must lie in that Node's pod CIDRs (or be a
//! block claimed inside `--range`). With a cluster CA (standalone), a member's prefixes
//! must lie in the blocks of its certificate, or be a block claimed inside `--range`
//! if the certificate allows claiming (the gossip layer has already checked that the
//! certificate is the CA's, valid, and issued for the member's key and name).
//!
//! Hosts outside a Kubernetes cluster ([`Certificates::Outsiders`],
//! [`Certificates::PodRange`]): on the cluster's nodes (`--kubernetes --ca-file`) a
//! member with a Node is judged by its Node as above, and a member with no Node of its
//! name is admitted only with a certificate of the CA, and routed only for the blocks
//! of that certificate that overlap no Node's pod CIDRs and hold no Pod's address (it
//! can never claim the range, a Node's name or a pod). On the outside host, which has
//! no API server (`--pod-range`), a member with a certificate is judged by it, and a
//! member without one (a cluster node) may announce only prefixes inside the pod
//! range, no larger than a block, that overlap no live member's certificate. Each
//! refusal is counted and logged once per member and prefix.

use crate::gossip::Member;
use crate::keys::PublicKey;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Why a prefix is not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Broader than any private range, loopback, link-local, multicast or unspecified.
    Reserved,
    /// It holds a member's (or this node's) underlay address.
    Underlay,
    /// It overlaps a static peer's allowed IPs.
    StaticPeer,
    /// Outside `--range` and this node's own overlay networks.
    OutsideRange,
    /// Inside the range, but larger than a block.
    LargerThanBlock,
    /// Kubernetes: no Node of the member's name with its endpoint as InternalIP.
    NoNode,
    /// Kubernetes: outside the member's Node's pod CIDRs (and not a block of the range).
    OutsideNodePodCidrs,
    /// Cluster CA: outside the blocks of the member's certificate (and not a block of
    /// the range it may claim), or no certificate.
    OutsideCertificate,
    /// Chained mode: not the address of a Pod on the member's Node (as a host prefix).
    NotItsPod,
    /// A member outside the cluster: overlaps a Node's pod CIDRs or holds a Pod's
    /// address (whatever its certificate says).
    ClusterPods,
    /// Outside host: a member without a certificate announced a prefix outside
    /// `--pod-range`, larger than a block of it, or overlapping a certificate's blocks.
    OutsidePodRange,
}

/// How the cluster CA takes part in the checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Certificates {
    /// No CA.
    #[default]
    Off,
    /// Standalone with a CA: every member's prefixes must be in its certificate.
    Required,
    /// Kubernetes with a CA: a member with a Node is judged by its Node; one without
    /// is admitted only with a certificate, for its blocks outside the cluster's pods.
    /// Until the Nodes are known, members without a Node's vouching get nothing.
    Outsiders,
    /// A host outside a Kubernetes cluster (`--pod-range` with the prefix length of a
    /// block): members with a certificate are judged by it; members without one (the
    /// cluster's nodes) may announce blocks inside this range that no certificate of a
    /// live member overlaps.
    PodRange(IpNet, u8),
}

/// A Kubernetes Node as the authority reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The Node's name (a member's name must match it).
    pub name: String,
    /// `spec.podCIDRs`: the prefixes the member on that Node may announce.
    pub pod_cidrs: Vec<IpNet>,
    /// `status.addresses` of type InternalIP: where the member's endpoint must be.
    pub internal_ips: Vec<IpAddr>,
}

impl Refusal {
    /// A short reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved or default-covering space",
            Self::Underlay => "holds an underlay address",
            Self::StaticPeer => "overlaps a static peer's allowed IPs",
            Self::OutsideRange => "outside --range",
            Self::LargerThanBlock => "larger than a block of --range",
            Self::NoNode => "no Kubernetes Node of that name at that address",
            Self::OutsideNodePodCidrs => "outside its Node's pod CIDRs",
            Self::OutsideCertificate => "outside the blocks of its certificate",
            Self::NotItsPod => "not the address of a Pod on its Node",
            Self::ClusterPods => "overlaps the cluster's pods (a Node's pod CIDR or a Pod)",
            Self::OutsidePodRange => {
                "no certificate, and outside --pod-range, larger than a block or on a certified block"
            }
        }
    }
}

/// Space that is never routed into the overlay, and the shortest prefix length that
/// is (anything broader covers more than any private range does).
const RESERVED_V4: [&str; 5] = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/3",
    "255.255.255.255/32",
];
const RESERVED_V6: [&str; 4] = ["::/128", "::1/128", "fe80::/10", "ff00::/8"];
const BROADEST_V4: u8 = 8;
const BROADEST_V6: u8 = 16;

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The checks, with what this node knows.
#[derive(Debug, Clone, Default)]
pub struct Authority {
    /// `--range` with its block length.
    range: Option<(IpNet, u8)>,
    /// This node's own overlay networks (its given addresses, truncated).
    own_networks: Vec<IpNet>,
    /// The static peers' allowed IPs.
    statics: Vec<IpNet>,
    reserved: Vec<IpNet>,
    /// Kubernetes mode, once the Nodes are listed: the Nodes by name.
    nodes: Option<BTreeMap<String, NodeFacts>>,
    /// How the cluster CA takes part.
    certificates: Certificates,
    /// Outside host: the blocks of the live members' certificates.
    vouched: Vec<IpNet>,
    /// Chained mode (beside another CNI), once the Pods are listed: each Node's pod
    /// addresses. A member's prefixes must then be host prefixes of its own Node's pods.
    pods: Option<BTreeMap<String, BTreeSet<IpAddr>>>,
    /// Refusals already logged.
    logged: BTreeSet<(PublicKey, IpNet)>,
    refused: u64,
}

impl Authority {
    /// The checks for a node with this range, these given addresses and static peers'
    /// allowed IPs.
    pub fn new(range: Option<(IpNet, u8)>, addresses: &[IpNet], statics: Vec<IpNet>) -> Self {
        let reserved = RESERVED_V4
            .iter()
            .chain(RESERVED_V6.iter())
            .filter_map(|s| s.parse().ok())
            .collect();
        Self {
            range,
            own_networks: addresses.iter().map(IpNet::trunc).collect(),
            statics,
            reserved,
            nodes: None,
            certificates: Certificates::Off,
            vouched: Vec::new(),
            pods: None,
            logged: BTreeSet::new(),
            refused: 0,
        }
    }

    /// Whether `prefix` may be routed, given every underlay address known (members'
    /// endpoints and this node's).
    pub fn check(&self, prefix: &IpNet, underlays: &[IpAddr]) -> Result<(), Refusal> {
        let broadest = if prefix.addr().is_ipv4() {
            BROADEST_V4
        } else {
            BROADEST_V6
        };
        if prefix.prefix_len() < broadest || self.reserved.iter().any(|r| overlaps(r, prefix)) {
            return Err(Refusal::Reserved);
        }
        if underlays.iter().any(|ip| prefix.contains(ip)) {
            return Err(Refusal::Underlay);
        }
        if self.statics.iter().any(|s| overlaps(s, prefix)) {
            return Err(Refusal::StaticPeer);
        }
        if let Some((range, block_len)) = self.range {
            if range.addr().is_ipv4() == prefix.addr().is_ipv4() {
                let own = self.own_networks.iter().any(|n| n.contains(prefix));
                if !range.contains(prefix) && !own {
                    return Err(Refusal::OutsideRange);
                }
                if range.contains(prefix) && prefix.prefix_len() < block_len {
                    return Err(Refusal::LargerThanBlock);
                }
            }
        }
        Ok(())
    }

    /// Kubernetes mode: the Nodes, as listed by the API server. From the first call
    /// on, members are admitted only as their Node allows.
    pub fn set_nodes(&mut self, nodes: Vec<NodeFacts>) {
        self.nodes = Some(nodes.into_iter().map(|n| (n.name.clone(), n)).collect());
    }

    /// Chained mode: the pods' addresses by Node name (`spec.nodeName`, `podIPs`), as
    /// the API server lists them. From the first call on, a member may announce only
    /// host prefixes (/32, /128) of pods on its own Node; its Node's pod CIDRs no
    /// longer count.
    pub fn set_pod_addresses(&mut self, pods: BTreeMap<String, BTreeSet<IpAddr>>) {
        self.pods = Some(pods);
    }

    /// With a cluster CA: from now on a member's prefixes must lie in the blocks of its
    /// certificate (or be a block of the range, if the certificate allows claiming).
    pub fn require_certificates(&mut self) {
        self.certificates = Certificates::Required;
    }

    /// How the cluster CA takes part from now on ([`Certificates`]).
    pub fn set_certificates(&mut self, how: Certificates) {
        self.certificates = how;
    }

    /// Outside host: the live members, whose certificates' blocks no member without a
    /// certificate may announce.
    pub fn note_vouched(&mut self, members: &[Member]) {
        if !matches!(self.certificates, Certificates::PodRange(..)) {
            return;
        }
        self.vouched = members
            .iter()
            .filter(|m| m.state.is_live())
            .filter_map(|m| m.record.certificate.as_ref())
            .flat_map(|c| c.blocks.iter().copied())
            .collect();
    }

    /// Kubernetes with a CA, before the Nodes are listed: nobody is routed yet.
    fn awaits_nodes(&self) -> bool {
        self.certificates == Certificates::Outsiders && self.nodes.is_none()
    }

    /// Kubernetes with a CA: whether `member` is judged as a host outside the
    /// cluster (it has a certificate and no Node has its name).
    fn is_outsider(&self, member: &Member) -> bool {
        self.certificates == Certificates::Outsiders
            && member.record.certificate.is_some()
            && self
                .nodes
                .as_ref()
                .is_some_and(|nodes| !nodes.contains_key(&member.record.name))
    }

    /// Kubernetes with a CA: a member outside the cluster may announce the blocks of
    /// its certificate (never claim one), but nothing of the cluster's pods.
    fn check_outsider(&self, member: &Member, prefix: &IpNet) -> Result<(), Refusal> {
        let cert = member
            .record
            .certificate
            .as_ref()
            .ok_or(Refusal::OutsideCertificate)?;
        if !cert.blocks.iter().any(|b| b.contains(prefix)) {
            return Err(Refusal::OutsideCertificate);
        }
        let nodes = self.nodes.as_ref().ok_or(Refusal::NoNode)?;
        if nodes
            .values()
            .flat_map(|n| n.pod_cidrs.iter())
            .any(|c| overlaps(c, prefix))
        {
            return Err(Refusal::ClusterPods);
        }
        if let Some(pods) = &self.pods {
            if pods.values().flatten().any(|ip| prefix.contains(ip)) {
                return Err(Refusal::ClusterPods);
            }
        }
        Ok(())
    }

    /// Outside host: a member without a certificate (a cluster node) may announce a
    /// block inside the pod range that no live member's certificate overlaps.
    fn check_uncertified(&self, prefix: &IpNet, range: &IpNet, len: u8) -> Result<(), Refusal> {
        let inside = range.contains(prefix) && prefix.prefix_len() >= len;
        if inside && !self.vouched.iter().any(|v| overlaps(v, prefix)) {
            Ok(())
        } else {
            Err(Refusal::OutsidePodRange)
        }
    }

    /// Whether the Kubernetes API server is the authority (the Nodes are known).
    pub fn knows_nodes(&self) -> bool {
        self.nodes.is_some()
    }

    /// Whether `member` may be a peer at all: always, but in Kubernetes mode (once the
    /// Nodes are known) only with a Node of its name at its endpoint's address, or,
    /// with a CA ([`Certificates::Outsiders`]), with a certificate and no Node of its
    /// name. In Kubernetes mode with a CA, nobody before the Nodes are known.
    pub fn admits(&self, member: &Member) -> bool {
        let Some(nodes) = &self.nodes else {
            return self.certificates != Certificates::Outsiders;
        };
        match nodes.get(&member.record.name) {
            Some(n) => n.internal_ips.contains(&member.record.endpoint.ip()),
            None => self.is_outsider(member),
        }
    }

    /// [`Authority::check`], and in Kubernetes mode the member's Node.
    pub fn check_member(
        &self,
        member: &Member,
        prefix: &IpNet,
        underlays: &[IpAddr],
    ) -> Result<(), Refusal> {
        self.check(prefix, underlays)?;
        match self.certificates {
            Certificates::Outsiders if self.nodes.is_none() => return Err(Refusal::NoNode),
            Certificates::Outsiders if self.is_outsider(member) => {
                return self.check_outsider(member, prefix)
            }
            Certificates::PodRange(range, len) if member.record.certificate.is_none() => {
                return self.check_uncertified(prefix, &range, len)
            }
            _ => {}
        }
        if matches!(
            self.certificates,
            Certificates::Required | Certificates::PodRange(..)
        ) {
            let cert = member
                .record
                .certificate
                .as_ref()
                .ok_or(Refusal::OutsideCertificate)?;
            let in_blocks = cert.blocks.iter().any(|b| b.contains(prefix));
            let claimed = cert.may_claim
                && self
                    .range
                    .is_some_and(|(r, len)| r.contains(prefix) && prefix.prefix_len() >= len);
            if !in_blocks && !claimed {
                return Err(Refusal::OutsideCertificate);
            }
        }
        let Some(nodes) = &self.nodes else {
            return match &self.pods {
                // Chained mode before the Nodes are known: nothing is routed yet.
                Some(_) => Err(Refusal::NoNode),
                None => Ok(()),
            };
        };
        let node = nodes
            .get(&member.record.name)
            .filter(|n| n.internal_ips.contains(&member.record.endpoint.ip()))
            .ok_or(Refusal::NoNode)?;
        if let Some(pods) = &self.pods {
            let host = prefix.prefix_len() == prefix.max_prefix_len();
            let its_pod = pods
                .get(&node.name)
                .is_some_and(|ips| ips.contains(&prefix.addr()));
            return if host && its_pod {
                Ok(())
            } else {
                Err(Refusal::NotItsPod)
            };
        }
        let in_pod_cidrs = node.pod_cidrs.iter().any(|c| c.contains(prefix));
        // A Node without a pod CIDR of the family claims a block from the range.
        let has_family = node
            .pod_cidrs
            .iter()
            .any(|c| c.addr().is_ipv4() == prefix.addr().is_ipv4());
        let claimed_block = !has_family
            && self
                .range
                .is_some_and(|(r, len)| r.contains(prefix) && prefix.prefix_len() >= len);
        if in_pod_cidrs || claimed_block {
            Ok(())
        } else {
            Err(Refusal::OutsideNodePodCidrs)
        }
    }

    /// The unicast prefixes of `member` that may be routed; each refusal is counted,
    /// and logged once per member and prefix. In Kubernetes mode with a CA, nothing is
    /// routed until the Nodes are known, and that wait is not a refusal.
    pub fn admit(
        &mut self,
        member: &Member,
        unicast: Vec<IpNet>,
        underlays: &[IpAddr],
    ) -> Vec<IpNet> {
        let mut out = Vec::with_capacity(unicast.len());
        for prefix in unicast {
            match self.check_member(member, &prefix, underlays) {
                Ok(()) => out.push(prefix),
                Err(_) if self.awaits_nodes() => {}
                Err(why) => {
                    if self.logged.insert((member.record.public_key, prefix)) {
                        self.refused += 1;
                        tracing::warn!(
                            node = %member.record.name,
                            key = %member.record.public_key,
                            %prefix,
                            reason = why.as_str(),
                            "refused a prefix a member announced; it is not routed"
                        );
                    }
                }
            }
        }
        out
    }

    /// How many distinct (member, prefix) pairs were refused.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forged_default_metadata_and_underlay_routes_are_refused() {
        let a = Authority::new(None, &[], vec![n("10.9.0.0/16")]);
        let underlays = [ip("192.0.2.7"), ip("2001:db8::7")];
        let cases = [
            ("0.0.0.0/0", Err(Refusal::Reserved)),
            ("0.0.0.0/1", Err(Refusal::Reserved)),
            ("128.0.0.0/1", Err(Refusal::Reserved)),
            ("::/0", Err(Refusal::Reserved)),
            ("169.254.169.254/32", Err(Refusal::Reserved)),
            ("127.0.0.1/32", Err(Refusal::Reserved)),
            ("224.0.0.0/4", Err(Refusal::Reserved)),
            ("239.1.2.3/32", Err(Refusal::Reserved)),
            ("fe80::1/128", Err(Refusal::Reserved)),
            ("ff02::1/128", Err(Refusal::Reserved)),
            ("192.0.2.7/32", Err(Refusal::Underlay)),
            ("192.0.2.0/24", Err(Refusal::Underlay)),
            ("2001:db8::/64", Err(Refusal::Underlay)),
            ("10.9.1.0/24", Err(Refusal::StaticPeer)),
            ("10.0.0.0/8", Err(Refusal::StaticPeer)),
            ("10.47.3.0/24", Ok(())),
            ("fd47::/64", Ok(())),
        ];
        for (prefix, want) in cases {
            assert_eq!(a.check(&n(prefix), &underlays), want, "{prefix}");
        }
    }

    fn member(name: &str, endpoint: &str, prefixes: &[&str]) -> Member {
        Member {
            record: crate::gossip::NodeRecord {
                public_key: PublicKey::from_bytes([name.len() as u8; 32]),
                name: name.into(),
                endpoint: endpoint.parse().expect("endpoint"),
                prefixes: prefixes.iter().map(|p| n(p)).collect(),
                version: 1,
                certificate: None,
                handover: None,
            },
            state: crate::gossip::MemberState::Alive,
            epoch: 1,
            incarnation: 0,
        }
    }

    #[test]
    fn in_kubernetes_mode_a_member_needs_its_node() {
        let mut a = Authority::new(Some((n("10.244.0.0/16"), 24)), &[], vec![]);
        let m = member("node-2", "192.0.2.2:51820", &[]);
        let p = n("10.244.2.0/24");
        assert_eq!(
            a.check_member(&m, &p, &[]),
            Ok(()),
            "before the Nodes are known"
        );
        a.set_nodes(vec![
            NodeFacts {
                name: "node-2".into(),
                pod_cidrs: vec![n("10.244.2.0/24"), n("fd44:0:0:2::/64")],
                internal_ips: vec![ip("192.0.2.2")],
            },
            NodeFacts {
                name: "node-3".into(),
                pod_cidrs: vec![],
                internal_ips: vec![ip("192.0.2.3")],
            },
        ]);
        assert!(a.knows_nodes());
        assert_eq!(a.check_member(&m, &p, &[]), Ok(()));
        assert_eq!(a.check_member(&m, &n("fd44:0:0:2::/64"), &[]), Ok(()));
        assert_eq!(
            a.check_member(&m, &n("10.244.9.0/24"), &[]),
            Err(Refusal::OutsideNodePodCidrs),
            "a Node with a pod CIDR claims no block"
        );
        let claims = member("node-3", "192.0.2.3:51820", &[]);
        assert_eq!(
            a.check_member(&claims, &n("10.244.9.0/24"), &[]),
            Ok(()),
            "a claimed block"
        );
        assert_eq!(
            a.check_member(&m, &n("fd44:0:0:3::/64"), &[]),
            Err(Refusal::OutsideNodePodCidrs)
        );
        let elsewhere = member("node-2", "192.0.2.99:51820", &[]);
        assert_eq!(a.check_member(&elsewhere, &p, &[]), Err(Refusal::NoNode));
        assert!(a.admits(&m) && !a.admits(&elsewhere));
        let stranger = member("rogue", "192.0.2.3:51820", &[]);
        assert_eq!(a.check_member(&stranger, &p, &[]), Err(Refusal::NoNode));
    }

    #[test]
    fn with_a_range_prefixes_stay_inside_it_and_no_larger_than_a_block() {
        let a = Authority::new(Some((n("10.47.0.0/16"), 24)), &[n("10.48.0.1/24")], vec![]);
        assert_eq!(a.check(&n("10.47.3.0/24"), &[]), Ok(()));
        assert_eq!(a.check(&n("10.47.3.0/25"), &[]), Ok(()));
        assert_eq!(a.check(&n("10.47.0.9/32"), &[]), Ok(()));
        assert_eq!(a.check(&n("10.48.0.2/32"), &[]), Ok(()), "own network");
        assert_eq!(
            a.check(&n("10.47.0.0/16"), &[]),
            Err(Refusal::LargerThanBlock)
        );
        assert_eq!(
            a.check(&n("10.47.0.0/23"), &[]),
            Err(Refusal::LargerThanBlock)
        );
        assert_eq!(a.check(&n("10.99.0.0/24"), &[]), Err(Refusal::OutsideRange));
        assert_eq!(
            a.check(&n("172.16.0.0/12"), &[]),
            Err(Refusal::OutsideRange)
        );
        // The other family is not the range's to confine.
        assert_eq!(a.check(&n("fd44:0:0:1::/64"), &[]), Ok(()));
    }

    /// Chained mode: a member may announce its own Node's pods as host prefixes, and
    /// nothing else (not another Node's pod, not a pod CIDR, not before the Pods and
    /// Nodes are known).
    #[test]
    fn in_chained_mode_a_member_announces_only_its_nodes_pods() {
        let mut a = Authority::new(None, &[], vec![]);
        a.set_pod_addresses(BTreeMap::from([
            (
                "node-2".to_string(),
                BTreeSet::from([ip("172.31.2.10"), ip("fd31::2:10")]),
            ),
            ("node-3".to_string(), BTreeSet::from([ip("172.31.3.10")])),
        ]));
        let m = member("node-2", "192.0.2.2:51820", &[]);
        assert_eq!(
            a.check_member(&m, &n("172.31.2.10/32"), &[]),
            Err(Refusal::NoNode),
            "Nodes not known yet"
        );
        a.set_nodes(vec![NodeFacts {
            name: "node-2".into(),
            pod_cidrs: vec![n("172.31.0.0/16")],
            internal_ips: vec![ip("192.0.2.2")],
        }]);
        assert_eq!(a.check_member(&m, &n("172.31.2.10/32"), &[]), Ok(()));
        assert_eq!(a.check_member(&m, &n("fd31::2:10/128"), &[]), Ok(()));
        for (p, why) in [
            ("172.31.3.10/32", Refusal::NotItsPod),
            ("172.31.2.0/24", Refusal::NotItsPod),
            ("172.31.2.10/31", Refusal::NotItsPod),
            ("172.31.0.0/16", Refusal::NotItsPod),
            ("0.0.0.0/0", Refusal::Reserved),
        ] {
            assert_eq!(a.check_member(&m, &n(p), &[]), Err(why), "{p}");
        }
        let elsewhere = member("node-2", "192.0.2.99:51820", &[]);
        assert_eq!(
            a.check_member(&elsewhere, &n("172.31.2.10/32"), &[]),
            Err(Refusal::NoNode)
        );
    }

    /// With a cluster CA, a member with a certificate for block X cannot announce
    /// block Y; a certificate that allows claiming admits one block of the range.
    #[test]
    fn with_a_ca_prefixes_stay_in_the_certificate() {
        let ca = crate::cert::Ca::from_seed(&[1; 32]);
        let mut a = Authority::new(Some((n("10.47.0.0/16"), 24)), &[], vec![]);
        a.require_certificates();
        let mut m = member("node-x", "192.0.2.9:51820", &["10.47.3.0/24"]);
        let issue = |blocks: &[&str], claim: bool| {
            ca.issue(
                "node-x",
                *m.record.public_key.as_bytes(),
                blocks.iter().map(|b| n(b)).collect(),
                claim,
                0,
                u64::MAX,
            )
            .ok()
        };
        assert_eq!(
            a.check_member(&m, &n("10.47.3.0/24"), &[]),
            Err(Refusal::OutsideCertificate),
            "no certificate"
        );
        m.record.certificate = issue(&["10.47.3.0/24"], false);
        assert_eq!(a.check_member(&m, &n("10.47.3.0/24"), &[]), Ok(()));
        assert_eq!(a.check_member(&m, &n("10.47.3.128/25"), &[]), Ok(()));
        assert_eq!(
            a.check_member(&m, &n("10.47.4.0/24"), &[]),
            Err(Refusal::OutsideCertificate),
            "block Y"
        );
        m.record.certificate = issue(&["10.47.3.0/24"], true);
        assert_eq!(
            a.check_member(&m, &n("10.47.4.0/24"), &[]),
            Ok(()),
            "claimed"
        );
        assert_eq!(
            a.check_member(&m, &n("10.47.0.0/23"), &[]),
            Err(Refusal::LargerThanBlock)
        );
        // whatever a certificate says, reserved space is never routed
        m.record.certificate = issue(&["0.0.0.0/0"], true);
        assert_eq!(
            a.check_member(&m, &n("0.0.0.0/1"), &[]),
            Err(Refusal::Reserved)
        );
        let mut got = a.admit(&m, vec![n("10.47.9.0/24"), n("10.99.0.0/24")], &[]);
        got.sort();
        assert_eq!(got, vec![n("10.47.9.0/24")]);
    }

    /// Kubernetes with a CA: a host outside the cluster is a member only with a
    /// certificate of the CA, and is routed only for the blocks of its certificate that
    /// are not the cluster's pods; without a certificate, under a Node's name, or
    /// before the Nodes are known it gets nothing, and the Nodes' members are judged by
    /// their Nodes as before.
    #[test]
    fn in_kubernetes_mode_a_host_outside_needs_a_certificate_for_its_blocks() {
        let ca = crate::cert::Ca::from_seed(&[2; 32]);
        let mut a = Authority::new(Some((n("10.244.0.0/16"), 24)), &[], vec![]);
        a.set_certificates(Certificates::Outsiders);
        let certified = |name: &str, endpoint: &str, blocks: &[&str], claim: bool| {
            let mut m = member(name, endpoint, &[]);
            m.record.certificate = ca
                .issue(
                    name,
                    *m.record.public_key.as_bytes(),
                    blocks.iter().map(|b| n(b)).collect(),
                    claim,
                    0,
                    u64::MAX,
                )
                .ok();
            m
        };
        let ec2 = certified("ec2-a", "192.0.2.50:51820", &["10.244.250.0/24"], true);
        let node2 = member("node-2", "192.0.2.2:51820", &[]);
        let mine = n("10.244.250.0/24");
        assert!(!a.admits(&ec2) && !a.admits(&node2), "Nodes not known yet");
        assert_eq!(a.check_member(&ec2, &mine, &[]), Err(Refusal::NoNode));
        assert_eq!(
            a.check_member(&node2, &n("10.244.2.0/24"), &[]),
            Err(Refusal::NoNode)
        );
        assert!(a.admit(&node2, vec![n("10.244.2.0/24")], &[]).is_empty());
        assert_eq!(a.refused(), 0, "waiting for the Nodes is no refusal");
        a.set_nodes(vec![
            NodeFacts {
                name: "node-2".into(),
                pod_cidrs: vec![n("10.244.2.0/24")],
                internal_ips: vec![ip("192.0.2.2")],
            },
            NodeFacts {
                name: "node-3".into(),
                pod_cidrs: vec![],
                internal_ips: vec![ip("192.0.2.3")],
            },
        ]);
        // The Nodes' members, as without a CA.
        assert!(a.admits(&node2));
        assert_eq!(a.check_member(&node2, &n("10.244.2.0/24"), &[]), Ok(()));
        let node3 = member("node-3", "192.0.2.3:51820", &[]);
        assert_eq!(a.check_member(&node3, &n("10.244.9.0/24"), &[]), Ok(()));
        // The certified outsider: its blocks, and nothing else.
        assert!(a.admits(&ec2));
        assert_eq!(a.check_member(&ec2, &mine, &[]), Ok(()));
        assert_eq!(a.check_member(&ec2, &n("10.244.250.7/32"), &[]), Ok(()));
        for (p, why) in [
            ("10.244.251.0/24", Refusal::OutsideCertificate),
            ("10.244.9.0/24", Refusal::OutsideCertificate),
            ("10.244.0.0/16", Refusal::LargerThanBlock),
            ("10.99.0.0/24", Refusal::OutsideRange),
            ("0.0.0.0/0", Refusal::Reserved),
            ("192.0.2.50/32", Refusal::Underlay),
        ] {
            assert_eq!(
                a.check_member(&ec2, &n(p), &[ip("192.0.2.50")]),
                Err(why),
                "{p}"
            );
        }
        // A certificate for a Node's pod CIDR does not give it the pods.
        let greedy = certified("ec2-b", "192.0.2.51:51820", &["10.244.0.0/16"], false);
        assert!(a.admits(&greedy));
        assert_eq!(
            a.check_member(&greedy, &n("10.244.2.0/24"), &[]),
            Err(Refusal::ClusterPods)
        );
        assert_eq!(
            a.check_member(&greedy, &n("10.244.2.9/32"), &[]),
            Err(Refusal::ClusterPods)
        );
        assert_eq!(a.check_member(&greedy, &n("10.244.77.0/24"), &[]), Ok(()));
        // Under a Node's name it is that Node's member, and elsewhere it is no one.
        let impostor = certified("node-2", "192.0.2.50:51820", &["10.244.2.0/24"], false);
        assert!(!a.admits(&impostor));
        assert_eq!(
            a.check_member(&impostor, &n("10.244.2.0/24"), &[]),
            Err(Refusal::NoNode)
        );
        // Without a certificate, a host with no Node is no one.
        let stranger = member("ec2-c", "192.0.2.52:51820", &[]);
        assert!(!a.admits(&stranger));
        assert_eq!(
            a.check_member(&stranger, &n("10.244.252.0/24"), &[]),
            Err(Refusal::NoNode)
        );
        // Refusals are counted once per member and prefix.
        let before = a.refused();
        let got = a.admit(&ec2, vec![mine, n("10.244.251.0/24")], &[]);
        assert_eq!(got, vec![mine]);
        a.admit(&ec2, vec![n("10.244.251.0/24")], &[]);
        assert_eq!(a.refused(), before + 1);
        // Chained mode: no outsider holds a pod's address.
        a.set_pod_addresses(BTreeMap::from([(
            "node-3".to_string(),
            BTreeSet::from([ip("10.244.77.10")]),
        )]));
        assert_eq!(
            a.check_member(&greedy, &n("10.244.77.0/24"), &[]),
            Err(Refusal::ClusterPods)
        );
        assert_eq!(a.check_member(&greedy, &n("10.244.78.0/24"), &[]), Ok(()));
    }

    /// The host outside the cluster (`--pod-range`): the cluster's nodes, which carry
    /// no certificate, may announce blocks of the pod range but not a certified
    /// member's block; certified members are confined to their certificates.
    #[test]
    fn outside_the_cluster_uncertified_nodes_stay_in_the_pod_range() {
        let ca = crate::cert::Ca::from_seed(&[3; 32]);
        let mut a = Authority::new(None, &[], vec![]);
        a.set_certificates(Certificates::PodRange(n("10.244.0.0/16"), 24));
        let node2 = member("node-2", "192.0.2.2:51820", &[]);
        let mut ec2b = member("ec2-b", "192.0.2.51:51820", &[]);
        ec2b.record.certificate = ca
            .issue(
                "ec2-b",
                *ec2b.record.public_key.as_bytes(),
                vec![n("10.244.251.0/24")],
                false,
                0,
                u64::MAX,
            )
            .ok();
        a.note_vouched(&[node2.clone(), ec2b.clone()]);
        assert!(a.admits(&node2) && a.admits(&ec2b));
        assert_eq!(a.check_member(&node2, &n("10.244.2.0/24"), &[]), Ok(()));
        assert_eq!(a.check_member(&node2, &n("10.244.2.0/25"), &[]), Ok(()));
        for p in [
            "10.244.0.0/16",
            "10.244.0.0/23",
            "10.245.0.0/24",
            "10.244.251.0/24",
            "10.244.251.9/32",
        ] {
            assert_eq!(
                a.check_member(&node2, &n(p), &[]),
                Err(Refusal::OutsidePodRange),
                "{p}"
            );
        }
        assert_eq!(
            a.check_member(&node2, &n("0.0.0.0/0"), &[]),
            Err(Refusal::Reserved)
        );
        assert_eq!(a.check_member(&ec2b, &n("10.244.251.0/24"), &[]), Ok(()));
        assert_eq!(
            a.check_member(&ec2b, &n("10.244.2.0/24"), &[]),
            Err(Refusal::OutsideCertificate)
        );
        // A dead member's certificate vouches for nothing any more.
        let mut dead = ec2b.clone();
        dead.state = crate::gossip::MemberState::Dead;
        a.note_vouched(&[node2.clone(), dead]);
        assert_eq!(a.check_member(&node2, &n("10.244.251.0/24"), &[]), Ok(()));
    }
}
