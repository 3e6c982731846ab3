//! The cluster's Nodes as weftnet sees them: each Node's pod CIDRs and InternalIP
//! addresses, kept from the watch stream's events. Pure bookkeeping with no I/O, so
//! the rules (which Nodes were deleted after a re-list, which addresses are new gossip
//! seeds) are unit-tested without an API server.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// What weftnet reads from one Node object: its name, `spec.podCIDRs` (or the older
/// `spec.podCIDR`; valid prefixes only, one per family) and InternalIP addresses. The
/// type is the reconciler's, which admits members as their Node allows.
pub(crate) use weftnet_proto::node::NodeFacts;

/// Reads a Node object's facts.
pub(crate) fn facts_of(node: &Node) -> NodeFacts {
    let name = node.metadata.name.clone().unwrap_or_default();
    let spec = node.spec.as_ref();
    let mut texts: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if texts.is_empty() {
        texts.extend(spec.and_then(|s| s.pod_cidr.clone()));
    }
    let mut pod_cidrs: Vec<IpNet> = Vec::new();
    for t in &texts {
        match t.parse::<IpNet>() {
            Ok(n) => {
                let n = n.trunc();
                // At most one per family, as Kubernetes allocates them.
                if !pod_cidrs
                    .iter()
                    .any(|p| p.addr().is_ipv4() == n.addr().is_ipv4())
                {
                    pod_cidrs.push(n);
                }
            }
            Err(_) => {
                tracing::warn!(node = %name, cidr = %t, "ignoring a pod CIDR that is not a prefix")
            }
        }
    }
    let internal_ips = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|addrs| {
            addrs
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse::<IpAddr>().ok())
                .collect()
        })
        .unwrap_or_default();
    NodeFacts {
        name,
        pod_cidrs,
        internal_ips,
    }
}

/// What changed in the node set after an event.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Nodes that are gone (deleted, or missing from a fresh list).
    pub(crate) deleted: Vec<String>,
    /// Nodes that appeared (again).
    pub(crate) added: Vec<String>,
    /// Whether any other Node's addresses changed (the seed list is new).
    pub(crate) seeds_changed: bool,
    /// Whether any Node's facts changed (added, deleted, new pod CIDRs or addresses).
    pub(crate) facts_changed: bool,
}

/// The Nodes known from the watch, by name.
#[derive(Debug, Default)]
pub(crate) struct NodeSet {
    me: String,
    nodes: BTreeMap<String, NodeFacts>,
    /// Names listed since the last `Init` (a re-list in progress).
    relisting: Option<BTreeSet<String>>,
}

impl NodeSet {
    pub(crate) fn new(me: &str) -> Self {
        Self {
            me: me.to_string(),
            ..Self::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every Node's facts.
    pub(crate) fn all(&self) -> Vec<NodeFacts> {
        self.nodes.values().cloned().collect()
    }

    /// The other Nodes' InternalIP addresses, sorted.
    pub(crate) fn seed_ips(&self) -> Vec<IpAddr> {
        let ips: BTreeSet<IpAddr> = self
            .nodes
            .values()
            .filter(|n| n.name != self.me)
            .flat_map(|n| n.internal_ips.iter().copied())
            .collect();
        ips.into_iter().collect()
    }

    /// A Node was added or modified.
    pub(crate) fn apply(&mut self, facts: NodeFacts) -> Changes {
        let mut changes = Changes::default();
        if let Some(seen) = &mut self.relisting {
            seen.insert(facts.name.clone());
        }
        let old = self.nodes.insert(facts.name.clone(), facts.clone());
        changes.facts_changed = old.as_ref() != Some(&facts);
        if old.is_none() {
            changes.added.push(facts.name.clone());
        }
        if facts.name != self.me && old.map(|o| o.internal_ips) != Some(facts.internal_ips.clone())
        {
            changes.seeds_changed = true;
        }
        changes
    }

    /// A Node was deleted.
    pub(crate) fn delete(&mut self, name: &str) -> Changes {
        let mut changes = Changes::default();
        if let Some(seen) = &mut self.relisting {
            seen.remove(name);
        }
        if self.nodes.remove(name).is_some() {
            changes.seeds_changed = name != self.me;
            changes.facts_changed = true;
        }
        // Deleted even if never seen: the others may still know it by gossip.
        changes.deleted.push(name.to_string());
        changes
    }

    /// A re-list starts (after a watch broke off).
    pub(crate) fn begin_relist(&mut self) {
        self.relisting = Some(BTreeSet::new());
    }

    /// A re-list is complete: Nodes known before but not listed now were deleted
    /// while the watch was down.
    pub(crate) fn end_relist(&mut self) -> Changes {
        let mut changes = Changes::default();
        let Some(seen) = self.relisting.take() else {
            return changes;
        };
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.nodes.remove(&name);
            changes.seeds_changed |= name != self.me;
            changes.facts_changed = true;
            changes.deleted.push(name);
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, ip: &str) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            pod_cidrs: vec![],
            internal_ips: vec![ip.parse().expect("ip")],
        }
    }

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).expect("node")
    }

    #[test]
    fn reads_pod_cidrs_and_internal_ips() {
        let n = node(serde_json::json!({
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64", "10.9.9.0/24", "junk"]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.0.2.1"},
                {"type": "ExternalIP", "address": "198.51.100.1"},
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "not-an-ip"}
            ]}
        }));
        let f = facts_of(&n);
        assert_eq!(f.name, "n1");
        let want: Vec<IpNet> = vec![
            "10.244.1.0/24".parse().expect("net"),
            "fd00:10:244:1::/64".parse().expect("net"),
        ];
        assert_eq!(f.pod_cidrs, want);
        assert_eq!(
            f.internal_ips,
            vec!["192.0.2.1".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn old_single_pod_cidr_and_missing_fields() {
        let f = facts_of(&node(serde_json::json!({
            "metadata": {"name": "n2"}, "spec": {"podCIDR": "10.244.2.7/24"}
        })));
        assert_eq!(
            f.pod_cidrs,
            vec!["10.244.2.0/24".parse::<IpNet>().expect("net")]
        );
        assert!(f.internal_ips.is_empty());
        let empty = facts_of(&node(serde_json::json!({"metadata": {"name": "n3"}})));
        assert!(empty.pod_cidrs.is_empty());
    }

    #[test]
    fn seeds_exclude_this_node_and_follow_changes() {
        let mut set = NodeSet::new("me");
        assert!(!set.apply(facts("me", "192.0.2.1")).seeds_changed);
        let c = set.apply(facts("a", "192.0.2.2"));
        assert!(c.seeds_changed);
        assert_eq!(c.added, vec!["a".to_string()]);
        assert!(!set.apply(facts("a", "192.0.2.2")).seeds_changed);
        assert!(set.apply(facts("a", "192.0.2.3")).seeds_changed);
        assert_eq!(
            set.seed_ips(),
            vec!["192.0.2.3".parse::<IpAddr>().expect("ip")]
        );
        let d = set.delete("a");
        assert_eq!(d.deleted, vec!["a".to_string()]);
        assert!(set.seed_ips().is_empty());
    }

    proptest::proptest! {
        /// Whatever an API server puts in the fields weftnet reads, reading never panics
        /// and keeps only valid prefixes (one per family) and addresses.
        #[test]
        fn arbitrary_node_fields_never_panic(
            cidrs in proptest::collection::vec(".{0,40}", 0..4),
            addrs in proptest::collection::vec(("[A-Za-z]{0,12}", ".{0,40}"), 0..4),
        ) {
            let addresses: Vec<serde_json::Value> = addrs
                .iter()
                .map(|(t, a)| serde_json::json!({"type": t, "address": a}))
                .collect();
            let n = node(serde_json::json!({
                "metadata": {"name": "x"},
                "spec": {"podCIDRs": cidrs},
                "status": {"addresses": addresses}
            }));
            let f = facts_of(&n);
            proptest::prop_assert!(f.pod_cidrs.len() <= 2);
            proptest::prop_assert!(f.internal_ips.len() <= addrs.len());
        }
    }

    #[test]
    fn relist_reports_nodes_deleted_while_disconnected() {
        let mut set = NodeSet::new("me");
        for (n, ip) in [("me", "192.0.2.1"), ("a", "192.0.2.2"), ("b", "192.0.2.3")] {
            set.apply(facts(n, ip));
        }
        set.begin_relist();
        set.apply(facts("me", "192.0.2.1"));
        set.apply(facts("b", "192.0.2.3"));
        let c = set.end_relist();
        assert_eq!(c.deleted, vec!["a".to_string()]);
        assert!(c.seeds_changed);
        assert_eq!(set.len(), 2);
        // A second end without a begin changes nothing.
        assert_eq!(set.end_relist(), Changes::default());
    }
}
