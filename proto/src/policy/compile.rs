//! From policies to per-pod rules: for each pod of this node, whether each direction
//! is isolated and, if so, the list of what passes ([`Allow`]: a peer address set and
//! ports by protocol, tagged with the policy that allows it). Named ports are
//! resolved here (against the pod itself for ingress, against each destination pod
//! for egress), so what comes out is only addresses, protocols and port ranges.

use super::addrset::AddrSet;
use super::model::{Cluster, Peer, Pod, PodKey, Policy, PolicyPort, PortRef, Protocol, Rule};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A direction of traffic as seen from a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Direction {
    /// Traffic the pod receives.
    Ingress,
    /// Traffic the pod sends.
    Egress,
}

impl Direction {
    /// `ingress` or `egress`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// A port range of one protocol, inclusive (`0..=65535` is the whole protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// The protocol.
    pub protocol: Protocol,
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

impl PortRange {
    /// Whether this is every port of its protocol.
    pub fn is_whole_protocol(&self) -> bool {
        self.first == 0 && self.last == u16::MAX
    }
}

/// Which ports an [`Allow`] lets through.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ports {
    /// Every protocol and port (ICMP included).
    Any,
    /// Only these (an empty list lets nothing through).
    Only(Vec<PortRange>),
}

/// Which peers an [`Allow`] lets through.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peers {
    /// Every address.
    Any,
    /// Only these addresses.
    Only(AddrSet),
}

/// One thing a pod may send or receive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Allow {
    /// The policy whose rule this comes from.
    pub policy: PodKey,
    /// The peer addresses.
    pub peers: Peers,
    /// The ports.
    pub ports: Ports,
}

impl Allow {
    fn matches(&self, peer: IpAddr, transport: Option<(Protocol, u16)>) -> bool {
        let peer_ok = match &self.peers {
            Peers::Any => true,
            Peers::Only(set) => set.contains(peer),
        };
        let port_ok = match &self.ports {
            Ports::Any => true,
            Ports::Only(ranges) => transport.is_some_and(|(proto, port)| {
                ranges
                    .iter()
                    .any(|r| r.protocol == proto && r.first <= port && port <= r.last)
            }),
        };
        peer_ok && port_ok
    }
}

/// What one pod may receive and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRules {
    /// The pod.
    pub pod: PodKey,
    /// Its addresses.
    pub addrs: Vec<IpAddr>,
    /// `None`: open; `Some(list)`: only what the list allows (empty: nothing).
    pub ingress: Option<Vec<Allow>>,
    /// As `ingress`, for what it sends.
    pub egress: Option<Vec<Allow>>,
    /// The policies that select it, in key order.
    pub policies: Vec<PodKey>,
}

impl PodRules {
    /// The rules of `direction`.
    pub fn direction(&self, direction: Direction) -> Option<&Vec<Allow>> {
        match direction {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }

    /// Whether traffic with `peer` (the source for ingress, the destination for
    /// egress) passes in `direction`; `transport` is `None` for protocols other than
    /// TCP, UDP and SCTP.
    pub fn allows(
        &self,
        direction: Direction,
        peer: IpAddr,
        transport: Option<(Protocol, u16)>,
    ) -> bool {
        match self.direction(direction) {
            None => true,
            Some(list) => list.iter().any(|a| a.matches(peer, transport)),
        }
    }
}

impl PodRules {
    /// The multicast groups this pod may receive at all, for the report path
    /// (PROTOCOL.md §7.11 rule 3): `None` for every group, else the groups that some
    /// egress rule lets it reach over UDP (rule 2a), or none if its ingress is
    /// isolated and no ingress rule admits UDP from anyone (rule 2b can never hold).
    /// Multicast is UDP: rules limited to TCP or SCTP ports never carry it.
    pub fn receivable_groups(&self) -> Option<AddrSet> {
        let udp = |a: &&Allow| match &a.ports {
            Ports::Any => true,
            Ports::Only(ranges) => ranges.iter().any(|r| r.protocol == Protocol::Udp),
        };
        if let Some(list) = &self.ingress {
            if !list.iter().any(|a| udp(&a)) {
                return Some(AddrSet::new());
            }
        }
        let list = self.egress.as_ref()?;
        let mut groups = AddrSet::new();
        for a in list.iter().filter(udp) {
            match &a.peers {
                Peers::Any => return None,
                Peers::Only(set) => groups.extend(set),
            }
        }
        Some(groups)
    }
}

/// Whether `pod` can be selected or be a peer: it has an address and its own network.
fn eligible(pod: &Pod) -> bool {
    !pod.host_network && !pod.ips.is_empty()
}

/// The per-pod rules of every pod `local` accepts (its own pods, for a node), in key
/// order. Pods without an address or on the host network are left out.
pub fn compile(cluster: &Cluster, local: impl Fn(&Pod) -> bool) -> Vec<PodRules> {
    cluster
        .pods
        .values()
        .filter(|p| eligible(p) && local(p))
        .map(|pod| compile_pod(cluster, pod))
        .collect()
}

fn compile_pod(cluster: &Cluster, pod: &Pod) -> PodRules {
    let selecting: Vec<&Policy> = cluster
        .policies
        .values()
        .filter(|p| p.key.namespace == pod.key.namespace && p.pod_selector.matches(&pod.labels))
        .collect();
    let mut ingress: Option<Vec<Allow>> = None;
    let mut egress: Option<Vec<Allow>> = None;
    for policy in &selecting {
        let (i, e) = policy.types();
        if i {
            let list = ingress.get_or_insert_with(Vec::new);
            for rule in &policy.ingress {
                list.push(ingress_allow(cluster, policy, rule, pod));
            }
        }
        if e {
            let list = egress.get_or_insert_with(Vec::new);
            for rule in &policy.egress {
                list.extend(egress_allows(cluster, policy, rule));
            }
        }
    }
    for list in [&mut ingress, &mut egress].into_iter().flatten() {
        list.retain(|a| !matches!(&a.ports, Ports::Only(r) if r.is_empty()));
        list.retain(|a| !matches!(&a.peers, Peers::Only(s) if s.is_empty()));
        dedup(list);
    }
    PodRules {
        pod: pod.key.clone(),
        addrs: pod.ips.clone(),
        ingress,
        egress,
        policies: selecting.iter().map(|p| p.key.clone()).collect(),
    }
}

fn dedup(list: &mut Vec<Allow>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|a| seen.insert(a.clone()));
}

/// The pods a pod peer of `policy` selects.
fn peer_pods<'a>(
    cluster: &'a Cluster,
    policy: &'a Policy,
    namespaces: &'a Option<super::Selector>,
    pods: &'a Option<super::Selector>,
) -> impl Iterator<Item = &'a Pod> + 'a {
    cluster.pods.values().filter(move |q| {
        if !eligible(q) {
            return false;
        }
        let ns_ok = match namespaces {
            None => q.key.namespace == policy.key.namespace,
            Some(sel) => sel.matches(&cluster.namespace_labels(&q.key.namespace)),
        };
        ns_ok && pods.as_ref().is_none_or(|sel| sel.matches(&q.labels))
    })
}

/// The addresses of a rule's peers; `None` when the rule names no peer (every peer).
fn peer_set(cluster: &Cluster, policy: &Policy, rule: &Rule) -> Option<AddrSet> {
    if rule.peers.is_empty() {
        return None;
    }
    let mut set = AddrSet::new();
    for peer in &rule.peers {
        match peer {
            Peer::Pods { namespaces, pods } => {
                for q in peer_pods(cluster, policy, namespaces, pods) {
                    for ip in &q.ips {
                        set.insert(*ip);
                    }
                }
            }
            Peer::Block(b) => set.extend(&AddrSet::block(b.cidr, &b.except)),
        }
    }
    Some(set)
}

fn peers_of(set: Option<AddrSet>) -> Peers {
    set.map_or(Peers::Any, Peers::Only)
}

/// A policy port as a range, resolving a name against `receiver`; `None` if the
/// name does not resolve (then the entry matches nothing).
fn resolve(port: &PolicyPort, receiver: Option<&Pod>) -> Option<PortRange> {
    let (first, last) = match &port.port {
        None => (0, u16::MAX),
        Some(PortRef::Number(n)) => (*n, port.end_port.unwrap_or(*n).max(*n)),
        Some(PortRef::Name(name)) => {
            let n = receiver?.port_named(name, port.protocol)?;
            (n, n)
        }
    };
    Some(PortRange {
        protocol: port.protocol,
        first,
        last,
    })
}

fn ports_of(ports: &[PolicyPort], receiver: Option<&Pod>) -> Ports {
    if ports.is_empty() {
        return Ports::Any;
    }
    let mut ranges: Vec<PortRange> = ports.iter().filter_map(|p| resolve(p, receiver)).collect();
    ranges.sort_unstable();
    ranges.dedup();
    Ports::Only(ranges)
}

fn ingress_allow(cluster: &Cluster, policy: &Policy, rule: &Rule, pod: &Pod) -> Allow {
    Allow {
        policy: policy.key.clone(),
        peers: peers_of(peer_set(cluster, policy, rule)),
        ports: ports_of(&rule.ports, Some(pod)),
    }
}

/// An egress rule: its numbered ports hold for every peer; its named ports are
/// resolved per destination pod, which groups the peers by the ports they resolve to.
fn egress_allows(cluster: &Cluster, policy: &Policy, rule: &Rule) -> Vec<Allow> {
    let (named, numbered): (Vec<PolicyPort>, Vec<PolicyPort>) = rule
        .ports
        .iter()
        .cloned()
        .partition(|p| matches!(p.port, Some(PortRef::Name(_))));
    let set = peer_set(cluster, policy, rule);
    if named.is_empty() {
        return vec![Allow {
            policy: policy.key.clone(),
            peers: peers_of(set),
            ports: ports_of(&rule.ports, None),
        }];
    }
    let mut out = Vec::new();
    if !numbered.is_empty() {
        out.push(Allow {
            policy: policy.key.clone(),
            peers: peers_of(set.clone()),
            ports: ports_of(&numbered, None),
        });
    }
    // Destination pods: every pod whose address the peers cover.
    let mut groups: BTreeMap<Vec<PortRange>, AddrSet> = BTreeMap::new();
    for q in cluster.pods.values().filter(|q| eligible(q)) {
        let Ports::Only(ranges) = ports_of(&named, Some(q)) else {
            continue;
        };
        if ranges.is_empty() {
            continue;
        }
        for ip in &q.ips {
            if set.as_ref().is_none_or(|s| s.contains(*ip)) {
                groups.entry(ranges.clone()).or_default().insert(*ip);
            }
        }
    }
    for (ranges, addrs) in groups {
        out.push(Allow {
            policy: policy.key.clone(),
            peers: Peers::Only(addrs),
            ports: Ports::Only(ranges),
        });
    }
    out
}
