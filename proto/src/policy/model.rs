//! The engine's input, a cluster's NetworkPolicies, Pods and Namespaces reduced to
//! what the semantics read (the daemon converts the API objects into these).

use super::selector::{Labels, Selector};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A namespaced name (`namespace/name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PodKey {
    /// The namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl PodKey {
    /// `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A transport protocol a policy port names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the API's spelling (`TCP`, `UDP`, `SCTP`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "TCP" => Self::Tcp,
            "UDP" => Self::Udp,
            "SCTP" => Self::Sctp,
            _ => return None,
        })
    }

    /// The IP protocol number (6, 17, 132).
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    /// The lower-case name nftables uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A container port with a name (what named policy ports resolve against).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamedPort {
    /// The port's name (`containerPort.name`).
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its number.
    pub port: u16,
}

/// A pod as the semantics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Namespace and name.
    pub key: PodKey,
    /// Its labels.
    pub labels: Labels,
    /// Its addresses (`status.podIPs`); none until it has been given one.
    pub ips: Vec<IpAddr>,
    /// The Node it runs on.
    pub node: Option<String>,
    /// Named container ports.
    pub ports: Vec<NamedPort>,
    /// `hostNetwork: true`: not selected by policies and no peer.
    pub host_network: bool,
}

impl Pod {
    /// The number `name`/`protocol` resolves to on this pod, if it has such a port.
    pub fn port_named(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// A namespace's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// Its labels (`kubernetes.io/metadata.name` is implied, as the API server sets it).
    pub labels: Labels,
}

/// A port reference: a number or a container port name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// A port number.
    Number(u16),
    /// A named container port.
    Name(String),
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyPort {
    /// The protocol (TCP when the API leaves it out).
    pub protocol: Protocol,
    /// The port; `None` matches every port of the protocol.
    pub port: Option<PortRef>,
    /// With a numbered port: the last port of the range.
    pub end_port: Option<u16>,
}

/// An `ipBlock`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpBlock {
    /// The range.
    pub cidr: IpNet,
    /// Ranges inside it that are not part of the block.
    pub except: Vec<IpNet>,
}

/// One entry of a rule's `from`/`to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector` (at least one is set).
    Pods {
        /// `namespaceSelector`; `None` means the policy's own namespace.
        namespaces: Option<Selector>,
        /// `podSelector`; `None` means every pod of the selected namespaces.
        pods: Option<Selector>,
    },
    /// `ipBlock`.
    Block(IpBlock),
}

/// One ingress or egress rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Rule {
    /// `from`/`to`; empty means every peer.
    pub peers: Vec<Peer>,
    /// `ports`; empty means every port and protocol.
    pub ports: Vec<PolicyPort>,
}

/// A NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Namespace and name.
    pub key: PodKey,
    /// The pods of its namespace it applies to.
    pub pod_selector: Selector,
    /// `policyTypes` as given: `(ingress, egress)`; `None` when left out.
    pub policy_types: Option<(bool, bool)>,
    /// Ingress rules.
    pub ingress: Vec<Rule>,
    /// Egress rules.
    pub egress: Vec<Rule>,
}

impl Policy {
    /// Whether it governs ingress and egress, with upstream's defaulting: without
    /// `policyTypes`, ingress always and egress when egress rules are given.
    pub fn types(&self) -> (bool, bool) {
        self.policy_types.unwrap_or((true, !self.egress.is_empty()))
    }
}

/// Everything the engine reads.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Policies by key.
    pub policies: BTreeMap<PodKey, Policy>,
    /// Pods by key.
    pub pods: BTreeMap<PodKey, Pod>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
}

/// The label the API server puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl Cluster {
    /// A namespace's labels with the implied name label (empty if it is unknown).
    pub fn namespace_labels(&self, name: &str) -> Labels {
        let mut labels = self
            .namespaces
            .get(name)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        labels
            .entry(NAMESPACE_NAME_LABEL.to_string())
            .or_insert_with(|| name.to_string());
        labels
    }
}
