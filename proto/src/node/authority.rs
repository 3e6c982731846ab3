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
mod tests;
