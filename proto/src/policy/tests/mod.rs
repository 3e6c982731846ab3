//! The engine against hand-written upstream cases (the ones the netpol e2e tests and
//! cyclonus exercise) and, by proptest, against the reference model on random
//! clusters.

use super::reference::{allowed, End};
use super::*;
use std::collections::BTreeMap;
use std::net::IpAddr;

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ip: &str) -> Pod {
    Pod {
        key: PodKey::new(ns, name),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: vec![ip.parse().expect("ip")],
        node: Some("n1".into()),
        ports: vec![
            NamedPort {
                name: "serve-80".into(),
                protocol: TCP,
                port: 80,
            },
            NamedPort {
                name: "serve-81-udp".into(),
                protocol: UDP,
                port: 81,
            },
        ],
        host_network: false,
    }
}

fn cluster(policies: Vec<Policy>) -> Cluster {
    let mut c = Cluster::default();
    for (ns, env) in [("x", "a"), ("y", "b")] {
        c.namespaces.insert(
            ns.into(),
            Namespace {
                name: ns.into(),
                labels: [("env".to_string(), env.to_string())].into(),
            },
        );
    }
    for p in [
        pod("x", "a", &[("pod", "a")], "10.0.0.1"),
        pod("x", "b", &[("pod", "b")], "10.0.0.2"),
        pod("y", "a", &[("pod", "a")], "10.0.1.1"),
        pod("y", "b", &[("pod", "b")], "10.0.1.2"),
    ] {
        c.pods.insert(p.key.clone(), p);
    }
    for p in policies {
        c.policies.insert(p.key.clone(), p);
    }
    c
}

fn policy(
    ns: &str,
    sel: Selector,
    types: Option<(bool, bool)>,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
) -> Policy {
    Policy {
        key: PodKey::new(ns, "p"),
        pod_selector: sel,
        policy_types: types,
        ingress,
        egress,
    }
}

fn port(protocol: Protocol, port: Option<PortRef>, end_port: Option<u16>) -> PolicyPort {
    PolicyPort {
        protocol,
        port,
        end_port,
    }
}

/// The verdict of the compiled rules for pod `from` to pod `to` (keys `ns/name`).
fn verdict(c: &Cluster, from: &str, to: &str, t: Option<(Protocol, u16)>) -> bool {
    let rules = compile(c, |_| true);
    let find = |k: &str| {
        let (ns, n) = k.split_once('/').expect("ns/name");
        let key = PodKey::new(ns, n);
        (
            c.pods[&key].ips[0],
            rules.iter().find(|r| r.pod == key).expect("rules").clone(),
        )
    };
    let (src_ip, src) = find(from);
    let (dst_ip, dst) = find(to);
    let got = src.allows(Direction::Egress, dst_ip, t) && dst.allows(Direction::Ingress, src_ip, t);
    let ends = |k: &str| {
        let (ns, n) = k.split_once('/').expect("ns/name");
        let p = &c.pods[&PodKey::new(ns, n)];
        End {
            ip: p.ips[0],
            pod: Some(p),
        }
    };
    assert_eq!(
        got,
        allowed(c, ends(from), ends(to), t),
        "engine and reference disagree: {from} -> {to} {t:?}"
    );
    got
}

const ALL: [&str; 4] = ["x/a", "x/b", "y/a", "y/b"];

/// Every pair's verdict on TCP 80 as a set of allowed `(from, to)`.
fn matrix(c: &Cluster, t: Option<(Protocol, u16)>) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for f in ALL {
        for to in ALL {
            if f != to && verdict(c, f, to, t) {
                out.push((f, to));
            }
        }
    }
    out
}

#[test]
fn no_policy_everything_open() {
    let c = cluster(vec![]);
    assert_eq!(matrix(&c, Some((TCP, 80))).len(), 12);
    let rules = compile(&c, |_| true);
    assert!(rules
        .iter()
        .all(|r| r.ingress.is_none() && r.egress.is_none()));
}

#[test]
fn default_deny_ingress_in_one_namespace() {
    let c = cluster(vec![policy("x", Selector::all(), None, vec![], vec![])]);
    let m = matrix(&c, Some((TCP, 80)));
    assert!(m.iter().all(|(_, to)| to.starts_with('y')), "{m:?}");
    assert_eq!(m.len(), 6);
}

#[test]
fn default_deny_egress_and_both() {
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        Some((false, true)),
        vec![],
        vec![],
    )]);
    let m = matrix(&c, Some((UDP, 81)));
    assert!(m.iter().all(|(f, _)| f.starts_with('y')), "{m:?}");
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        Some((true, true)),
        vec![],
        vec![],
    )]);
    let m = matrix(&c, None);
    assert_eq!(m, vec![("y/a", "y/b"), ("y/b", "y/a")]);
}

#[test]
fn egress_rules_without_policy_types_imply_egress() {
    let p = policy("x", Selector::all(), None, vec![], vec![Rule::default()]);
    assert_eq!(p.types(), (true, true));
    let p = policy("x", Selector::all(), None, vec![Rule::default()], vec![]);
    assert_eq!(p.types(), (true, false));
}

#[test]
fn allow_by_pod_label_stays_in_the_namespace() {
    let rule = Rule {
        peers: vec![Peer::Pods {
            namespaces: None,
            pods: Some(Selector::labels([("pod", "b")])),
        }],
        ports: vec![],
    };
    let c = cluster(vec![policy(
        "x",
        Selector::labels([("pod", "a")]),
        None,
        vec![rule],
        vec![],
    )]);
    assert!(verdict(&c, "x/b", "x/a", Some((TCP, 80))));
    // y/b has the label but lives in another namespace.
    assert!(!verdict(&c, "y/b", "x/a", Some((TCP, 80))));
    assert!(!verdict(&c, "y/a", "x/a", Some((TCP, 80))));
    assert!(verdict(&c, "x/a", "x/b", Some((TCP, 80))));
}

#[test]
fn allow_by_namespace_label_and_by_both() {
    let ns_only = Rule {
        peers: vec![Peer::Pods {
            namespaces: Some(Selector::labels([("env", "b")])),
            pods: None,
        }],
        ports: vec![],
    };
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        None,
        vec![ns_only],
        vec![],
    )]);
    assert!(verdict(&c, "y/a", "x/a", None));
    assert!(verdict(&c, "y/b", "x/b", None));
    assert!(!verdict(&c, "x/b", "x/a", None));
    let both = Rule {
        peers: vec![Peer::Pods {
            namespaces: Some(Selector::labels([("env", "b")])),
            pods: Some(Selector::labels([("pod", "b")])),
        }],
        ports: vec![],
    };
    let c = cluster(vec![policy("x", Selector::all(), None, vec![both], vec![])]);
    assert!(verdict(&c, "y/b", "x/a", None));
    assert!(!verdict(&c, "y/a", "x/a", None));
    assert!(!verdict(&c, "x/b", "x/a", None));
    // Two separate peers (an OR), unlike one peer with both selectors (an AND).
    let either = Rule {
        peers: vec![
            Peer::Pods {
                namespaces: Some(Selector::labels([("env", "b")])),
                pods: None,
            },
            Peer::Pods {
                namespaces: None,
                pods: Some(Selector::labels([("pod", "b")])),
            },
        ],
        ports: vec![],
    };
    let c = cluster(vec![policy(
        "x",
        Selector::labels([("pod", "a")]),
        None,
        vec![either],
        vec![],
    )]);
    assert!(verdict(&c, "y/a", "x/a", None));
    assert!(verdict(&c, "x/b", "x/a", None));
}

#[test]
fn namespace_name_label_is_implied() {
    let rule = Rule {
        peers: vec![Peer::Pods {
            namespaces: Some(Selector::labels([("kubernetes.io/metadata.name", "y")])),
            pods: None,
        }],
        ports: vec![],
    };
    let c = cluster(vec![policy("x", Selector::all(), None, vec![rule], vec![])]);
    assert!(verdict(&c, "y/a", "x/a", None));
    assert!(!verdict(&c, "x/b", "x/a", None));
}

#[test]
fn match_expressions_select_peers() {
    let sel = Selector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![Requirement {
            key: "pod".into(),
            operator: Operator::NotIn,
            values: vec!["a".into()],
        }],
    };
    let rule = Rule {
        peers: vec![Peer::Pods {
            namespaces: Some(Selector::all()),
            pods: Some(sel),
        }],
        ports: vec![],
    };
    let c = cluster(vec![policy("x", Selector::all(), None, vec![rule], vec![])]);
    assert!(verdict(&c, "y/b", "x/a", None));
    assert!(!verdict(&c, "y/a", "x/b", None));
}

#[test]
fn ip_block_with_except() {
    let rule = Rule {
        peers: vec![Peer::Block(IpBlock {
            cidr: "10.0.1.0/24".parse().expect("net"),
            except: vec!["10.0.1.2/32".parse().expect("net")],
        })],
        ports: vec![],
    };
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        Some((false, true)),
        vec![],
        vec![rule],
    )]);
    assert!(verdict(&c, "x/a", "y/a", Some((TCP, 80))));
    assert!(!verdict(&c, "x/a", "y/b", Some((TCP, 80))));
    assert!(!verdict(&c, "x/a", "x/b", Some((TCP, 80))));
}

#[test]
fn ports_by_number_name_range_and_protocol() {
    let rule = |ports| Rule {
        peers: vec![],
        ports,
    };
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        None,
        vec![rule(vec![port(
            TCP,
            Some(PortRef::Name("serve-80".into())),
            None,
        )])],
        vec![],
    )]);
    assert!(verdict(&c, "y/a", "x/a", Some((TCP, 80))));
    assert!(!verdict(&c, "y/a", "x/a", Some((TCP, 81))));
    assert!(!verdict(&c, "y/a", "x/a", Some((UDP, 80))));
    assert!(!verdict(&c, "y/a", "x/a", None));
    // The named UDP port resolves to 81 only for UDP.
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        None,
        vec![rule(vec![port(
            UDP,
            Some(PortRef::Name("serve-81-udp".into())),
            None,
        )])],
        vec![],
    )]);
    assert!(verdict(&c, "y/a", "x/a", Some((UDP, 81))));
    assert!(!verdict(&c, "y/a", "x/a", Some((TCP, 81))));
    // endPort.
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        None,
        vec![rule(vec![port(TCP, Some(PortRef::Number(80)), Some(82))])],
        vec![],
    )]);
    assert!(verdict(&c, "y/a", "x/a", Some((TCP, 80))));
    assert!(verdict(&c, "y/a", "x/a", Some((TCP, 82))));
    assert!(!verdict(&c, "y/a", "x/a", Some((TCP, 83))));
    // Protocol without a port: every port of it.
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        None,
        vec![rule(vec![port(Protocol::Sctp, None, None)])],
        vec![],
    )]);
    assert!(verdict(&c, "y/a", "x/a", Some((Protocol::Sctp, 9))));
    assert!(!verdict(&c, "y/a", "x/a", Some((TCP, 9))));
}

#[test]
fn egress_named_ports_resolve_against_the_destination() {
    let mut c = cluster(vec![policy(
        "x",
        Selector::labels([("pod", "a")]),
        Some((false, true)),
        vec![],
        vec![Rule {
            peers: vec![],
            ports: vec![port(TCP, Some(PortRef::Name("web".into())), None)],
        }],
    )]);
    let set = |c: &mut Cluster, k: &str, n: u16| {
        let (ns, name) = k.split_once('/').expect("key");
        let p = c.pods.get_mut(&PodKey::new(ns, name)).expect("pod");
        p.ports.push(NamedPort {
            name: "web".into(),
            protocol: TCP,
            port: n,
        });
    };
    set(&mut c, "x/b", 8080);
    set(&mut c, "y/a", 9090);
    assert!(verdict(&c, "x/a", "x/b", Some((TCP, 8080))));
    assert!(!verdict(&c, "x/a", "x/b", Some((TCP, 9090))));
    assert!(verdict(&c, "x/a", "y/a", Some((TCP, 9090))));
    assert!(!verdict(&c, "x/a", "y/a", Some((TCP, 8080))));
    assert!(!verdict(&c, "x/a", "y/b", Some((TCP, 8080))));
}

#[test]
fn policies_add_up_and_are_listed() {
    let allow_b = Rule {
        peers: vec![Peer::Pods {
            namespaces: None,
            pods: Some(Selector::labels([("pod", "b")])),
        }],
        ports: vec![],
    };
    let mut deny = policy("x", Selector::all(), None, vec![], vec![]);
    deny.key.name = "deny".into();
    let mut allow = policy(
        "x",
        Selector::labels([("pod", "a")]),
        None,
        vec![allow_b],
        vec![],
    );
    allow.key.name = "allow".into();
    let c = cluster(vec![deny, allow]);
    assert!(verdict(&c, "x/b", "x/a", None));
    assert!(!verdict(&c, "x/a", "x/b", None));
    let rules = compile(&c, |p| p.key.name == "a" && p.key.namespace == "x");
    assert_eq!(rules.len(), 1);
    let names: Vec<String> = rules[0].policies.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["x/allow", "x/deny"]);
}

#[test]
fn host_network_pods_are_neither_selected_nor_pod_peers() {
    let mut c = cluster(vec![policy("x", Selector::all(), None, vec![], vec![])]);
    let mut h = pod("x", "h", &[], "192.0.2.1");
    h.host_network = true;
    c.pods.insert(h.key.clone(), h);
    let rules = compile(&c, |_| true);
    assert!(rules.iter().all(|r| r.pod.name != "h"));
}

#[test]
fn receivable_groups_follow_egress_ip_blocks_and_ingress() {
    let group_rule = |cidr: &str, ports: Vec<PolicyPort>| Rule {
        peers: vec![Peer::Block(IpBlock {
            cidr: cidr.parse().expect("net"),
            except: vec!["239.9.9.128/25".parse().expect("net")],
        })],
        ports,
    };
    let g = |s: &str| -> IpAddr { s.parse().expect("group") };
    let of = |c: &Cluster, key: &str| {
        compile(c, |_| true)
            .into_iter()
            .find(|r| r.pod.to_string() == key)
            .expect("pod")
            .receivable_groups()
    };
    // no policy: every group
    assert_eq!(of(&cluster(vec![]), "x/a"), None);
    // egress isolated: the groups an ipBlock covers, minus except, over UDP only
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        Some((false, true)),
        vec![],
        vec![
            group_rule(
                "239.9.9.0/24",
                vec![port(UDP, Some(PortRef::Number(6000)), None)],
            ),
            group_rule("239.1.0.0/16", vec![port(TCP, None, None)]),
        ],
    )]);
    let set = of(&c, "x/a").expect("isolated");
    assert!(set.contains(g("239.9.9.9")));
    assert!(!set.contains(g("239.9.9.200")));
    assert!(
        !set.contains(g("239.1.1.1")),
        "a TCP-only rule carries no multicast"
    );
    // ingress isolated with no rule: nothing, whatever egress allows
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        Some((true, false)),
        vec![],
        vec![],
    )]);
    assert!(of(&c, "x/a").expect("isolated").is_empty());
    assert_eq!(of(&c, "y/a"), None);
    // ingress isolated with a UDP rule from some pods, egress open: every group
    let from_b = Rule {
        peers: vec![Peer::Pods {
            namespaces: None,
            pods: Some(Selector::all()),
        }],
        ports: vec![port(UDP, None, None)],
    };
    let c = cluster(vec![policy(
        "x",
        Selector::all(),
        Some((true, false)),
        vec![from_b],
        vec![],
    )]);
    assert_eq!(of(&c, "x/a"), None);
}

mod model;
