//! NetworkPolicy (networking.k8s.io/v1) as a pure computation: from the cluster's
//! policies, pods and namespaces ([`Cluster`]), what each pod may send and receive
//! ([`PodRules`]: peers as address sets, ports by protocol, named ports resolved).
//!
//! The semantics are upstream's:
//! - a pod selected by no policy of a direction is open in that direction; once one
//!   policy of that direction selects it, only what some selecting policy's rule
//!   allows passes (rules add up, nothing subtracts);
//! - `policyTypes` defaults to `Ingress`, plus `Egress` when egress rules are given;
//!   a listed type with no rules denies that direction;
//! - a rule with no peers matches every peer, with no ports every port and protocol;
//! - `podSelector` alone selects pods of the policy's namespace, `namespaceSelector`
//!   alone every pod of the selected namespaces, both together the selected pods of
//!   the selected namespaces; `ipBlock` an address range minus its `except` ranges
//!   (pod addresses included);
//! - a named port resolves against the pod that receives the traffic: the policy's own
//!   pod for ingress, each destination pod for egress (an address that is no known pod
//!   never matches a named port);
//! - `endPort` extends a numbered port into a range; a port entry without a number
//!   matches its whole protocol; the protocol defaults to TCP;
//! - host-network pods are neither selected nor peers (their address is the node's).
//!
//! What the node does with the result (nftables, multicast pruning) lives in the
//! daemon; [`PodRules::allows`] is the verdict the tests check it against.
//!
//! - [`model`]: the input: policies, pods, namespaces.
//! - [`selector`]: label selectors.
//! - [`addrset`]: address sets as disjoint ranges.
//! - [`compile`]: policies to per-pod rules.

pub mod addrset;
pub mod compile;
pub mod model;
pub mod selector;

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

pub use addrset::AddrSet;
pub use compile::{compile, Allow, Direction, Peers, PodRules, PortRange, Ports};
pub use model::{
    Cluster, IpBlock, NamedPort, Namespace, Peer, Pod, PodKey, Policy, PolicyPort, PortRef,
    Protocol, Rule,
};
pub use selector::{Operator, Requirement, Selector};
