//! The engine against the reference model on random clusters (proptest).

use super::super::reference::{allowed, End};
use super::super::*;
use super::{TCP, UDP};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::IpAddr;

fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(
        prop_oneof![Just("a".to_string()), Just("b".to_string())],
        prop_oneof![Just("1".to_string()), Just("2".to_string())],
        0..=2,
    )
}

fn arb_selector() -> impl Strategy<Value = Selector> {
    let op = prop_oneof![
        Just(Operator::In),
        Just(Operator::NotIn),
        Just(Operator::Exists),
        Just(Operator::DoesNotExist)
    ];
    let req = (
        prop_oneof![Just("a"), Just("b")],
        op,
        proptest::collection::vec(prop_oneof![Just("1"), Just("2")], 0..=2),
    )
        .prop_map(|(k, operator, vs)| Requirement {
            key: k.into(),
            operator,
            values: vs.into_iter().map(String::from).collect(),
        });
    (
        proptest::collection::btree_map(
            prop_oneof![Just("a".to_string()), Just("b".to_string())],
            prop_oneof![Just("1".to_string()), Just("2".to_string())],
            0..=1,
        ),
        proptest::collection::vec(req, 0..=1),
    )
        .prop_map(|(match_labels, match_expressions)| Selector {
            match_labels,
            match_expressions,
        })
}

fn arb_peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        (proptest::option::of(arb_selector()), arb_selector()).prop_map(|(namespaces, pods)| {
            Peer::Pods {
                namespaces,
                pods: Some(pods),
            }
        }),
        arb_selector().prop_map(|s| Peer::Pods {
            namespaces: Some(s),
            pods: None
        }),
        (0u8..4, proptest::collection::vec(0u8..8, 0..=2)).prop_map(|(b, ex)| Peer::Block(
            IpBlock {
                cidr: format!("10.0.{b}.0/24").parse().expect("net"),
                except: ex
                    .iter()
                    .map(|e| format!("10.0.{b}.{e}/31")
                        .parse::<ipnet::IpNet>()
                        .expect("net")
                        .trunc())
                    .collect(),
            }
        )),
    ]
}

fn arb_port() -> impl Strategy<Value = PolicyPort> {
    let proto = prop_oneof![Just(TCP), Just(UDP), Just(Protocol::Sctp)];
    let pref = prop_oneof![
        Just(None),
        (78u16..84).prop_map(|n| Some(PortRef::Number(n))),
        prop_oneof![Just("p1"), Just("p2")].prop_map(|s| Some(PortRef::Name(s.into()))),
    ];
    (proto, pref, proptest::option::of(78u16..86)).prop_map(|(protocol, port, end)| {
        let end_port = match port {
            Some(PortRef::Number(_)) => end,
            _ => None,
        };
        PolicyPort {
            protocol,
            port,
            end_port,
        }
    })
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        proptest::collection::vec(arb_peer(), 0..=2),
        proptest::collection::vec(arb_port(), 0..=2),
    )
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![Just("x"), Just("y")],
        arb_selector(),
        proptest::option::of((any::<bool>(), any::<bool>())),
        proptest::collection::vec(arb_rule(), 0..=2),
        proptest::collection::vec(arb_rule(), 0..=2),
    )
        .prop_map(|(ns, pod_selector, policy_types, ingress, egress)| Policy {
            key: PodKey::new(ns, "p"),
            pod_selector,
            policy_types,
            ingress,
            egress,
        })
}

fn arb_pod(i: usize) -> impl Strategy<Value = Pod> {
    (
        prop_oneof![Just("x"), Just("y")],
        arb_labels(),
        78u16..84,
        78u16..84,
        any::<bool>(),
        0u8..12,
    )
        .prop_map(move |(ns, labels, p1, p2, udp, host)| Pod {
            key: PodKey::new(ns, &format!("pod{i}")),
            labels,
            ips: vec![IpAddr::from([10, 0, (i % 4) as u8, (i * 2) as u8])],
            node: None,
            ports: vec![
                NamedPort {
                    name: "p1".into(),
                    protocol: TCP,
                    port: p1,
                },
                NamedPort {
                    name: "p2".into(),
                    protocol: if udp { UDP } else { TCP },
                    port: p2,
                },
            ],
            host_network: host == 0,
        })
}

fn arb_cluster() -> impl Strategy<Value = Cluster> {
    (
        (
            arb_pod(0),
            arb_pod(1),
            arb_pod(2),
            arb_pod(3),
            arb_pod(4),
            arb_pod(5),
        ),
        proptest::collection::vec(arb_policy(), 0..=3),
        arb_labels(),
        arb_labels(),
    )
        .prop_map(|(pods, policies, lx, ly)| {
            let mut c = Cluster::default();
            c.namespaces.insert(
                "x".into(),
                Namespace {
                    name: "x".into(),
                    labels: lx,
                },
            );
            c.namespaces.insert(
                "y".into(),
                Namespace {
                    name: "y".into(),
                    labels: ly,
                },
            );
            for p in [pods.0, pods.1, pods.2, pods.3, pods.4, pods.5] {
                c.pods.insert(p.key.clone(), p);
            }
            for (i, mut p) in policies.into_iter().enumerate() {
                p.key.name = format!("p{i}");
                c.policies.insert(p.key.clone(), p);
            }
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn compiled_rules_agree_with_the_reference(c in arb_cluster()) {
        let rules = compile(&c, |_| true);
        let by_ip: BTreeMap<IpAddr, &PodRules> = rules.iter().flat_map(|r| r.addrs.iter().map(move |a| (*a, r))).collect();
        let mut ends: Vec<End<'_>> = c.pods.values().map(|p| End { ip: p.ips[0], pod: Some(p) }).collect();
        ends.push(End { ip: "10.0.3.5".parse().expect("ip"), pod: None });
        ends.push(End { ip: "10.9.9.9".parse().expect("ip"), pod: None });
        let transports = [Some((TCP, 78)), Some((TCP, 80)), Some((TCP, 83)), Some((UDP, 80)), Some((UDP, 85)), Some((Protocol::Sctp, 79)), None];
        for s in &ends {
            for d in &ends {
                if s.ip == d.ip { continue; }
                for t in transports {
                    let eg = by_ip.get(&s.ip).is_none_or(|r| r.allows(Direction::Egress, d.ip, t));
                    let ing = by_ip.get(&d.ip).is_none_or(|r| r.allows(Direction::Ingress, s.ip, t));
                    let want = allowed(&c, *s, *d, t);
                    prop_assert_eq!(eg && ing, want, "{:?} -> {:?} {:?}", s.ip, d.ip, t);
                }
            }
        }
    }

    #[test]
    fn refused_groups_could_never_be_delivered(c in arb_cluster()) {
        // Whatever receivable_groups leaves out, no UDP datagram from any source to
        // that address passes both the receiver's egress and ingress rules.
        let rules = compile(&c, |_| true);
        let mut addrs: Vec<IpAddr> = c.pods.values().map(|p| p.ips[0]).collect();
        addrs.push("10.0.3.5".parse().expect("ip"));
        addrs.push("10.9.9.9".parse().expect("ip"));
        for r in &rules {
            let receivable = r.receivable_groups();
            for group in &addrs {
                if receivable.as_ref().is_none_or(|s| s.contains(*group)) { continue; }
                for src in &addrs {
                    for port in [80u16, 81, 85, 1000] {
                        let t = Some((UDP, port));
                        prop_assert!(
                            !(r.allows(Direction::Egress, *group, t) && r.allows(Direction::Ingress, *src, t)),
                            "{} refused {:?} yet {:?} reaches it on {}", r.pod, group, src, port
                        );
                    }
                }
            }
        }
    }
}
