//! A reference model of the upstream semantics for the tests: a connection's verdict
//! read straight off the policies, one probe at a time, with no address sets, no
//! grouping and no precomputation, to check [`super::compile`] against.

use super::model::{Cluster, Peer, Pod, Policy, PortRef, Protocol, Rule};
use super::Direction;
use std::net::IpAddr;

/// One end of a connection: an address, and the pod that has it if any.
#[derive(Clone, Copy)]
pub(super) struct End<'a> {
    pub(super) ip: IpAddr,
    pub(super) pod: Option<&'a Pod>,
}

fn selecting<'a>(c: &'a Cluster, pod: &'a Pod, dir: Direction) -> Vec<&'a Policy> {
    if pod.host_network {
        return Vec::new();
    }
    c.policies
        .values()
        .filter(|p| p.key.namespace == pod.key.namespace)
        .filter(|p| p.pod_selector.matches(&pod.labels))
        .filter(|p| {
            let (i, e) = p.types();
            match dir {
                Direction::Ingress => i,
                Direction::Egress => e,
            }
        })
        .collect()
}

fn peer_matches(c: &Cluster, policy: &Policy, peer: &Peer, other: End<'_>) -> bool {
    match peer {
        Peer::Block(b) => {
            b.cidr.contains(&other.ip) && !b.except.iter().any(|e| e.contains(&other.ip))
        }
        Peer::Pods { namespaces, pods } => {
            let Some(q) = other.pod.filter(|q| !q.host_network) else {
                return false;
            };
            let ns = match namespaces {
                None => q.key.namespace == policy.key.namespace,
                Some(s) => s.matches(&c.namespace_labels(&q.key.namespace)),
            };
            ns && pods.as_ref().is_none_or(|s| s.matches(&q.labels))
        }
    }
}

fn port_matches(rule: &Rule, receiver: Option<&Pod>, t: Option<(Protocol, u16)>) -> bool {
    if rule.ports.is_empty() {
        return true;
    }
    let Some((proto, port)) = t else {
        return false;
    };
    rule.ports.iter().any(|pp| {
        pp.protocol == proto
            && match &pp.port {
                None => true,
                Some(PortRef::Number(n)) => *n <= port && port <= pp.end_port.unwrap_or(*n).max(*n),
                Some(PortRef::Name(name)) => {
                    receiver
                        .filter(|r| !r.host_network)
                        .and_then(|r| r.port_named(name, proto))
                        == Some(port)
                }
            }
    })
}

fn direction_ok(
    c: &Cluster,
    pod: &Pod,
    dir: Direction,
    other: End<'_>,
    t: Option<(Protocol, u16)>,
) -> bool {
    let policies = selecting(c, pod, dir);
    if policies.is_empty() {
        return true;
    }
    policies.iter().any(|p| {
        let rules = match dir {
            Direction::Ingress => &p.ingress,
            Direction::Egress => &p.egress,
        };
        let receiver = match dir {
            Direction::Ingress => Some(pod),
            Direction::Egress => other.pod,
        };
        rules.iter().any(|r| {
            (r.peers.is_empty() || r.peers.iter().any(|peer| peer_matches(c, p, peer, other)))
                && port_matches(r, receiver, t)
        })
    })
}

/// Whether `src` may open a connection to `dst` with `t`.
pub(super) fn allowed(c: &Cluster, src: End<'_>, dst: End<'_>, t: Option<(Protocol, u16)>) -> bool {
    let egress = src
        .pod
        .is_none_or(|p| direction_ok(c, p, Direction::Egress, dst, t));
    let ingress = dst
        .pod
        .is_none_or(|p| direction_ok(c, p, Direction::Ingress, src, t));
    egress && ingress
}
