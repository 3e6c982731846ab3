//! The authority's cases: forged routes, Kubernetes Nodes and pods, ranges, the
//! cluster CA, and hosts outside a Kubernetes cluster.

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
