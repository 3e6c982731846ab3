//! Chained mode in the reconciler: a node announces its pods as host prefixes, and
//! routes another node's pods only once the Nodes and Pods are listed, and only the
//! pods the API server places on that node.

use super::*;
use crate::node::NodeFacts;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn chained(name: &'static str, seeds: Vec<usize>) -> Spec {
    Spec {
        range: None,
        seeds,
        ..Spec::named(name)
    }
}

#[test]
fn pods_are_announced_and_routed_only_as_the_api_server_places_them() {
    let mut net = Net::new();
    let a = net.add(chained("a", vec![]));
    let b = net.add(chained("b", vec![a]));
    for i in [a, b] {
        net.hosts[i].node.await_pod_addresses();
    }
    let now = net.now;
    net.hosts[a]
        .node
        .handle_local_pods(vec![ip("172.31.1.5"), ip("172.31.1.5")], now);
    // b also claims a pod of a's and a whole range: neither is its to announce.
    net.hosts[b].node.handle_local_pods(
        vec![ip("172.31.2.7"), ip("172.31.1.9"), ip("fd31::2:7")],
        now,
    );
    net.drain(a);
    net.drain(b);
    net.run(Duration::from_secs(6));
    let record = |i: usize| {
        net.hosts[i]
            .node
            .status()
            .members
            .iter()
            .find(|m| m.record.public_key == key_of(1 - i))
            .map(|m| m.record.prefixes.clone())
            .unwrap_or_default()
    };
    assert!(
        record(b).contains(&n("172.31.1.5/32")),
        "a announces its pod once"
    );
    assert_eq!(
        record(b)
            .iter()
            .filter(|p| **p == n("172.31.1.5/32"))
            .count(),
        1
    );
    assert!(
        net.hosts[a].routes.is_empty(),
        "nothing routed before the API is known"
    );
    let facts = |name: &str, i: usize| NodeFacts {
        name: name.into(),
        pod_cidrs: vec![],
        internal_ips: vec![addr_of(i).ip()],
    };
    let pods: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::from([
        (
            "a".to_string(),
            BTreeSet::from([ip("172.31.1.5"), ip("172.31.1.9")]),
        ),
        (
            "b".to_string(),
            BTreeSet::from([ip("172.31.2.7"), ip("fd31::2:7")]),
        ),
    ]);
    for i in [a, b] {
        let now = net.now;
        net.hosts[i]
            .node
            .handle_nodes(vec![facts("a", a), facts("b", b)], now);
        net.hosts[i].node.handle_pod_addresses(pods.clone(), now);
        net.drain(i);
    }
    net.run(Duration::from_secs(2));
    let routes: Vec<IpNet> = net.hosts[a].routes.keys().copied().collect();
    assert_eq!(routes, vec![n("172.31.2.7/32"), n("fd31::2:7/128")]);
    let routes: Vec<IpNet> = net.hosts[b].routes.keys().copied().collect();
    assert_eq!(routes, vec![n("172.31.1.5/32")]);
    // A pod moves away from b (deleted there, per the API): its route goes.
    let moved = BTreeMap::from([
        ("a".to_string(), BTreeSet::from([ip("172.31.1.5")])),
        ("b".to_string(), BTreeSet::from([ip("fd31::2:7")])),
    ]);
    let now = net.now;
    net.hosts[a].node.handle_pod_addresses(moved, now);
    net.drain(a);
    let routes: Vec<IpNet> = net.hosts[a].routes.keys().copied().collect();
    assert_eq!(routes, vec![n("fd31::2:7/128")]);
}
