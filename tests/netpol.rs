//! NetworkPolicy conformance, end to end, in the spirit of the upstream `netpol` e2e
//! tests and cyclonus: two Kubernetes nodes run `weftnet up --kubernetes` against the
//! fake API server; five labelled dual-stack pods (an IPv4 and an IPv6 address each)
//! in two labelled namespaces (three on node 1, two on node 2) are wired through the
//! CNI plugin and registered as Pod objects with named ports; each serves TCP and UDP
//! on ports 80 and 81 over both families. Every case puts its policies into the API
//! server and checks every ordered pair of pods over IPv4 and IPv6, on every port and
//! protocol (160 probes, run concurrently) against the verdict the case expects, until
//! they all agree (bounded). Cases: no policy, default deny ingress, egress and both,
//! allow by pod label, by namespace label, by both, ipBlock with except (IPv4, then
//! IPv6 with port ranges), named ports and endPort, egress to a named port, and
//! changes at runtime (a pod's label, a namespace's label, a policy replaced, policies
//! deleted). Also: the host reaches its own pods whatever the policy (kubelet probes),
//! status and metrics show the policies and drops, and the table is gone after the
//! daemon stops. Multicast: a receiver whose ingress rules deny the sender gets
//! nothing while an allowed one on the same node gets everything; a sender whose
//! egress rules do not cover the group reaches nobody, on either node, until a rule
//! allows the group. Pruning, over IGMP and over MLD: a node whose only members of a
//! group are denied it refuses and counts their reports (MLD ones come from the pods'
//! link-local addresses), does not announce the group, and the sender's node sends it
//! no copies; allowing one of them at runtime makes the node announce the group again
//! without a new report, and delivery resumes.
//! Run as root (`cargo test --test netpol`).

mod common;

use common::kube_api::FakeApi;
use common::kube_node::*;
use common::mesh::*;
use common::probe::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const RANGE: &str = "10.244.0.0/16";
const CONVERGE: Duration = Duration::from_secs(40);
/// How long one probe waits for its answer (a denied probe takes this long).
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a case may take to be in force everywhere (generous: the machine is shared;
/// the benchmark measures the real delay).
const CASE_BOUND: Duration = Duration::from_secs(20);
const PORTS: [u16; 2] = [80, 81];

/// The pods: namespace, name, node index.
const PODS: [(&str, &str, usize); 5] = [
    ("x", "a", 0),
    ("x", "b", 1),
    ("x", "c", 0),
    ("y", "a", 0),
    ("y", "b", 1),
];

/// The address family a probe uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

struct Pod {
    ns: &'static str,
    name: &'static str,
    node: usize,
    netns: Netns,
    /// Its IPv4 and IPv6 addresses (the cluster is dual stack).
    ip: IpAddr,
    ip6: IpAddr,
}

impl Pod {
    fn addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.ip,
            Family::V6 => self.ip6,
        }
    }
    /// Its Pod object on `node` with `labels`, both addresses in `podIPs`.
    fn object(&self, node: &str, labels: &[(&str, &str)]) -> Value {
        let mut o = pod_object(
            self.ns,
            self.name,
            node,
            &self.ip.to_string(),
            labels,
            &named_ports(),
        );
        o["status"]["podIPs"] = json!([{"ip": self.ip.to_string()}, {"ip": self.ip6.to_string()}]);
        o
    }
    fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
    fn is(&self, key: &str) -> bool {
        self.key() == key
    }
}

struct Cluster {
    _servers: Vec<Servers>,
    pods: Vec<Pod>,
    nodes: Vec<KubeNode>,
    api: FakeApi,
    _u: Underlay,
    _dir: tempfile::TempDir,
    /// The policies of the case in force (namespace, name).
    current: Vec<(String, String)>,
}

fn named_ports() -> Vec<(&'static str, &'static str, u16)> {
    vec![
        ("serve-80-tcp", "TCP", 80),
        ("serve-81-tcp", "TCP", 81),
        ("serve-80-udp", "UDP", 80),
        ("serve-81-udp", "UDP", 81),
    ]
}

fn setup() -> Cluster {
    let u = Underlay::bridge(2);
    let dir = temp_dir("netpol");
    let k = two_node_cluster(&u, dir.path());
    // Dual stack: each Node has an IPv4 and an IPv6 pod CIDR, so every pod has both.
    for (i, name) in k.names.iter().enumerate() {
        let v4 = format!("10.244.{}.0/24", i + 1);
        let v6 = format!("fd00:10:244:{}::/64", i + 1);
        k.api
            .update_node(name, |n| n["spec"]["podCIDRs"] = json!([v4, v6]));
    }
    put_namespace(&k.api, "x", &[("ns", "x")]);
    put_namespace(&k.api, "y", &[("ns", "y")]);
    let nodes = k.start_nodes(&[u.host(0), u.host(1)], dir.path(), RANGE);
    let api = k.api;
    wait_for("nodes ready", CONVERGE, || {
        for n in &nodes {
            let st = n.status();
            let alive = st["cluster"]["members"]
                .as_array()
                .map_or(0, |ms| ms.iter().filter(|m| m["state"] == "alive").count());
            if alive != 1 || st["kubernetes"]["cni_config"].as_str().is_none() {
                return Err(format!(
                    "{}: {alive} alive, cni {}",
                    n.name, st["kubernetes"]["cni_config"]
                ));
            }
        }
        Ok(())
    });
    let mut pods = Vec::new();
    let mut servers = Vec::new();
    for (ns, name, node) in PODS {
        let netns = Netns::new(&format!("{ns}{name}"));
        let addrs: Vec<IpAddr> = nodes[node]
            .add_pod_addrs(&format!("c{ns}{name}{}", unique_id()), &netns)
            .iter()
            .map(|a| a.parse().expect("pod ip"))
            .collect();
        let family = |v4: bool| {
            *addrs
                .iter()
                .find(|a| a.is_ipv4() == v4)
                .unwrap_or_else(|| panic!("{ns}/{name}: no IPv4 and IPv6 address in {addrs:?}"))
        };
        let pod = Pod {
            ns,
            name,
            node,
            netns,
            ip: family(true),
            ip6: family(false),
        };
        api.put("pods", pod.object(&nodes[node].name, &[("pod", name)]));
        servers.push(Servers::start_dual_stack(&pod.netns, &PORTS));
        pods.push(pod);
    }
    // Both nodes know every pod before the first case.
    wait_for("pods known", Duration::from_secs(20), || {
        for n in &nodes {
            let known = n.status()["policy"]["pods_known"].as_u64().unwrap_or(0);
            if known != PODS.len() as u64 {
                return Err(format!("{} knows {known} pods", n.name));
            }
        }
        Ok(())
    });
    Cluster {
        _servers: servers,
        pods,
        nodes,
        api,
        _u: u,
        _dir: dir,
        current: Vec::new(),
    }
}

type Verdicts = BTreeMap<(usize, usize, Family, Proto, u16), bool>;

impl Cluster {
    /// Every ordered pair, address family, protocol and port, probed concurrently.
    fn probe_all(&self) -> Verdicts {
        let mut handles = Vec::new();
        for (i, from) in self.pods.iter().enumerate() {
            for (j, to) in self.pods.iter().enumerate() {
                if i == j {
                    continue;
                }
                for family in [Family::V4, Family::V6] {
                    for proto in [Proto::Tcp, Proto::Udp] {
                        for port in PORTS {
                            let (netns, ip) = (from.netns.clone(), to.addr(family));
                            handles.push((
                                (i, j, family, proto, port),
                                std::thread::spawn(move || {
                                    probe_in(&netns, ip, proto, port, PROBE_TIMEOUT)
                                }),
                            ));
                        }
                    }
                }
            }
        }
        handles
            .into_iter()
            .map(|(k, h)| (k, h.join().expect("probe thread")))
            .collect()
    }

    /// Replaces the policies in force with `policies` (namespace, name, spec).
    fn set_policies(&mut self, policies: &[(&str, &str, Value)]) {
        for (ns, name) in std::mem::take(&mut self.current) {
            self.api.delete("networkpolicies", &ns, &name);
        }
        for (ns, name, spec) in policies {
            self.api.put(
                "networkpolicies",
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": {"namespace": ns, "name": name}, "spec": spec}),
            );
            self.current.push((ns.to_string(), name.to_string()));
        }
    }

    /// Probes until every verdict, over IPv4 and IPv6 alike, is `want`'s.
    fn expect(&self, case: &str, want: impl Fn(&Pod, &Pod, Proto, u16) -> bool) -> Duration {
        self.expect_by_family(case, |from, to, _, proto, port| want(from, to, proto, port))
    }

    /// Probes until every verdict is `want`'s (within [`CASE_BOUND`]); returns how long
    /// it took, or panics with the pairs that disagree.
    fn expect_by_family(
        &self,
        case: &str,
        want: impl Fn(&Pod, &Pod, Family, Proto, u16) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.probe_all();
            let wrong: Vec<String> = got
                .iter()
                .filter(|((i, j, family, proto, port), ok)| {
                    want(&self.pods[*i], &self.pods[*j], *family, *proto, *port) != **ok
                })
                .map(|((i, j, family, proto, port), ok)| {
                    format!(
                        "{} -> {} {family:?} {proto:?}/{port}: {} (want {})",
                        self.pods[*i].key(),
                        self.pods[*j].key(),
                        if *ok { "allowed" } else { "denied" },
                        if *ok { "denied" } else { "allowed" }
                    )
                })
                .collect();
            if wrong.is_empty() {
                let took = start.elapsed();
                let allowed = got.values().filter(|v| **v).count();
                eprintln!(
                    "case {case:?}: {allowed}/{} probes allowed, as expected, after {took:?}",
                    got.len()
                );
                return took;
            }
            if start.elapsed() > CASE_BOUND {
                let mut dump = String::new();
                for n in &self.nodes {
                    dump.push_str(&format!(
                        "--- {} policy status: {}\n{}\n",
                        n.name,
                        n.status()["policy"],
                        n.ns()
                            .run("nft", &["list", "table", "inet", "weftnet_policy"])
                    ));
                }
                panic!(
                    "case {case:?}: {} verdicts wrong after {CASE_BOUND:?}:\n{}\n{dump}",
                    wrong.len(),
                    wrong.join("\n")
                );
            }
        }
    }
}

fn deny_all(types: &[&str]) -> Value {
    json!({"podSelector": {}, "policyTypes": types})
}

#[test]
fn network_policies_are_enforced_for_every_pair_port_and_protocol() {
    let mut c = setup();
    c.expect("no policy: everything open", |_, _, _, _| true);

    c.set_policies(&[("x", "deny-ingress", deny_all(&["Ingress"]))]);
    c.expect("default deny ingress in x", |_, to, _, _| to.ns != "x");
    // The host reaches its own pods whatever their policy (kubelet probes).
    let xa = &c.pods[0];
    for ip in [xa.ip, xa.ip6] {
        assert!(
            probe_in(c.nodes[xa.node].ns(), ip, Proto::Tcp, 80, PROBE_TIMEOUT),
            "node1 cannot reach its own pod x/a ({ip}) under deny-ingress"
        );
    }

    c.set_policies(&[("x", "deny-egress", deny_all(&["Egress"]))]);
    c.expect("default deny egress in x", |from, _, _, _| from.ns != "x");

    c.set_policies(&[("x", "deny-both", deny_all(&["Ingress", "Egress"]))]);
    c.expect("default deny both in x", |from, to, _, _| {
        from.ns != "x" && to.ns != "x"
    });

    c.set_policies(&[(
        "x",
        "allow-b-to-a",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    // Only x/b (same namespace) reaches x/a; y/b has the label but not the namespace.
    c.expect("allow by pod label", |from, to, _, _| {
        !to.is("x/a") || from.is("x/b")
    });

    c.set_policies(&[(
        "x",
        "allow-from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    )]);
    c.expect("allow by namespace label", |from, to, _, _| {
        !to.is("x/a") || from.ns == "y"
    });

    c.set_policies(&[(
        "x",
        "allow-y-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                      "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}}]}]}),
    )]);
    c.expect("allow by namespace and pod label", |from, to, _, _| {
        !to.is("x/a") || from.is("y/b")
    });

    // Runtime label changes: y/a becomes pod=b and is let in; then namespace y loses
    // its label and nobody is.
    c.api
        .put("pods", c.pods[3].object("node1", &[("pod", "b")]));
    c.expect("pod label changed at runtime", |from, to, _, _| {
        !to.is("x/a") || from.ns == "y"
    });
    put_namespace(&c.api, "y", &[("ns", "z")]);
    c.expect("namespace label changed at runtime", |_, to, _, _| {
        !to.is("x/a")
    });
    put_namespace(&c.api, "y", &[("ns", "y")]);
    c.api
        .put("pods", c.pods[3].object("node1", &[("pod", "a")]));

    // Egress from x/a to node2's pod CIDR except y/b.
    let yb = c.pods[4].ip;
    c.set_policies(&[(
        "x",
        "egress-block",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.244.2.0/24", "except": [format!("{yb}/32")]}}]}]}),
    )]);
    // Over IPv6 x/a is isolated for egress too, and an IPv4 ipBlock allows it nothing.
    c.expect_by_family("ipBlock with except", |from, to, family, _, _| {
        !from.is("x/a") || (family == Family::V4 && to.node == 1 && !to.is("y/b"))
    });

    // The same over IPv6 (node2's IPv6 pod CIDR except y/b), and x/a's ingress from an
    // IPv6 ipBlock except x/b on port ranges: TCP 81-90, UDP 79-80. IPv4 is denied both
    // ways: the rules name IPv6 addresses only.
    let (xb6, yb6) = (c.pods[1].ip6, c.pods[4].ip6);
    c.set_policies(&[(
        "x",
        "ipblock6",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:10:244::/48", "except": [format!("{xb6}/128")]}}],
                            "ports": [{"protocol": "TCP", "port": 81, "endPort": 90},
                                      {"protocol": "UDP", "port": 79, "endPort": 80}]}],
               "egress": [{"to": [{"ipBlock": {"cidr": "fd00:10:244:2::/64", "except": [format!("{yb6}/128")]}}]}]}),
    )]);
    c.expect_by_family(
        "IPv6 ipBlock with except, port ranges",
        |from, to, family, proto, port| {
            let v6 = family == Family::V6;
            let egress = !from.is("x/a") || (v6 && to.node == 1 && !to.is("y/b"));
            let ingress = !to.is("x/a")
                || (v6
                    && !from.is("x/b")
                    && matches!((proto, port), (Proto::Tcp, 81) | (Proto::Udp, 80)));
            egress && ingress
        },
    );

    c.set_policies(&[(
        "x",
        "ports",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"ports": [{"port": "serve-81-tcp"},
                                      {"protocol": "UDP", "port": 79, "endPort": 80}]}]}),
    )]);
    c.expect("named port and endPort", |_, to, proto, port| {
        !to.is("x/a") || matches!((proto, port), (Proto::Tcp, 81) | (Proto::Udp, 80))
    });

    c.set_policies(&[(
        "y",
        "egress-named",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": "serve-81-udp"}]}]}),
    )]);
    c.expect(
        "egress to a named port of the destination",
        |from, _, proto, port| from.ns != "y" || (proto == Proto::Udp && port == 81),
    );

    // A policy replaced in place (same name, new spec), then everything deleted.
    let spec = json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]});
    c.api.put(
        "networkpolicies",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"namespace": "y", "name": "egress-named"}, "spec": spec}),
    );
    c.expect("policy replaced at runtime", |_, to, _, _| !to.is("y/b"));

    // Status and metrics: y/b (node 2) is isolated by y/egress-named and counted drops.
    let st = c.nodes[1].status();
    let yb_status = st["policy"]["pods"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pod"] == "y/b").cloned())
        .unwrap_or_else(|| panic!("no y/b in node2's policy status: {}", st["policy"]));
    assert_eq!(yb_status["ingress"], "isolated", "{yb_status}");
    assert_eq!(
        yb_status["policies"],
        json!(["y/egress-named"]),
        "{yb_status}"
    );
    wait_for("drops counted", Duration::from_secs(10), || {
        let st = c.nodes[1].status();
        let n = st["policy"]["pods"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["pod"] == "y/b").cloned())
            .map_or(0, |p| p["ingress_drops"].as_u64().unwrap_or(0));
        if n > 0 {
            Ok(())
        } else {
            Err(format!(
                "no ingress drops counted for y/b: {}",
                st["policy"]
            ))
        }
    });
    let state = c.nodes[1].d.state_dir().display().to_string();
    let text =
        String::from_utf8_lossy(&c.nodes[1].d.cli(&["status", "--state-dir", &state]).stdout)
            .into_owned();
    assert!(
        text.contains("y/b") && text.contains("policies y/egress-named"),
        "{text}"
    );

    c.set_policies(&[]);
    c.api.delete("networkpolicies", "y", "egress-named");
    c.expect("every policy deleted", |_, _, _, _| true);

    multicast_cases(&mut c);
    pruning_cases(&mut c, Family::V4);
    pruning_cases(&mut c, Family::V6);

    // A restart (SIGTERM) keeps the table, so pods stay isolated while the daemon is
    // replaced; the next run adopts it; a stop for good (SIGINT) removes it.
    let mut node = c.nodes.pop().expect("node2");
    let ns = node.ns().clone();
    let table = |ns: &Netns| {
        ns.exec("nft", &["list", "table", "inet", "weftnet_policy"])
            .status
            .success()
    };
    assert!(node.d.stop().success(), "{}", node.d.logs());
    assert!(table(&ns), "a restart removed the policy table");
    node.d.start_again();
    assert!(node.d.stop_for_good().success(), "{}", node.d.logs());
    assert!(!table(&ns), "the policy table survived a stop for good");
}

/// Waits until `node`'s status shows pod `key` with `direction` isolated.
fn wait_isolated(node: &KubeNode, key: &str, direction: &str) {
    wait_for(&format!("{key} {direction} isolated"), CASE_BOUND, || {
        let st = node.status();
        let isolated = st["policy"]["pods"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["pod"] == key && p[direction] == "isolated")
        });
        if isolated {
            Ok(())
        } else {
            Err(format!("{}", st["policy"]))
        }
    });
}

/// In each pod of `keys`, a receiver (socat) that joins `group` (IPv4 or IPv6) on eth0
/// and prints every datagram to `port` on its stdout; paired with its pod's key.
fn join_multicast<'a>(
    c: &Cluster,
    keys: &[&'a str],
    group: &str,
    port: u16,
) -> Vec<(&'a str, Proc)> {
    let recv = if group.contains(':') {
        format!("UDP6-RECV:{port},ipv6-join-group=[{group}]:eth0")
    } else {
        format!("UDP4-RECV:{port},ip-add-membership={group}:eth0")
    };
    keys.iter()
        .map(|k| {
            let pod = c.pods.iter().find(|p| p.is(k)).expect("pod");
            (*k, pod.netns.spawn("socat", &["-u", &recv, "STDOUT"]))
        })
        .collect()
}

/// Sends `count` datagrams `TAG i` from `pod` to `group:port`.
fn send_multicast(pod: &Pod, group: &str, port: u16, tag: &str, count: usize) {
    for i in 0..count {
        let dst = format!(
            "UDP4-DATAGRAM:{group}:{port},ip-multicast-if={},ip-multicast-ttl=1",
            pod.ip
        );
        let mut cmd = pod.netns.command("socat", &["-u", "STDIN", &dst]);
        expect_success(
            "multicast send",
            run_bounded(
                &mut cmd,
                Some(format!("{tag} {i}\n").as_bytes()),
                EXEC_TIMEOUT,
            ),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn multicast_cases(c: &mut Cluster) {
    const GROUP: &str = "239.9.9.9";
    const PORT: u16 = 6000;
    const N: usize = 10;
    // y/a (node 1) admits no sender; x/c (node 1) and x/b, y/b (node 2) are open.
    let deny_ya = (
        "y",
        "deny-ya",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "nobody"}}}]}]}),
    );
    c.set_policies(std::slice::from_ref(&deny_ya));
    wait_isolated(&c.nodes[0], "y/a", "ingress");
    let receivers = ["x/c", "y/a", "x/b", "y/b"];
    let rx = join_multicast(c, &receivers, GROUP, PORT);
    wait_for(
        "the group is known on node 1",
        Duration::from_secs(20),
        || {
            let st = c.nodes[0].status();
            let remote = st["cluster"]["members"].as_array().is_some_and(|ms| {
                ms.iter().any(|m| {
                    m["groups"]
                        .as_array()
                        .is_some_and(|g| g.iter().any(|x| x == GROUP))
                })
            });
            if remote {
                Ok(())
            } else {
                Err(format!("members {}", st["cluster"]["members"]))
            }
        },
    );
    let lines = |p: &Proc, tag: &str| p.stdout().lines().filter(|l| l.starts_with(tag)).count();
    let sender = c.pods.iter().position(|p| p.is("x/a")).expect("x/a");
    send_multicast(&c.pods[sender], GROUP, PORT, "m1", N);
    for (k, p) in rx.iter().filter(|(k, _)| *k != "y/a") {
        let ok = wait_until(Duration::from_secs(5), || lines(p, "m1") >= N);
        assert!(
            ok,
            "allowed receiver {k} got {} of {N}: {:?}",
            lines(p, "m1"),
            p.stdout()
        );
    }
    let denied = &rx[1].1;
    assert_eq!(
        lines(denied, "m1"),
        0,
        "y/a's ingress rules deny x/a, yet it received {:?}",
        denied.stdout()
    );
    let ya = c.nodes[0].status()["policy"]["pods"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pod"] == "y/a").cloned())
        .expect("y/a in node1's status");
    eprintln!("multicast: y/a denied, the other receivers got {N} of {N}; y/a status {ya}");

    // x/a may send only to 10.0.0.0/8: its datagrams to the group reach nobody.
    c.set_policies(&[
        deny_ya.clone(),
        (
            "x",
            "xa-unicast-only",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}),
        ),
    ]);
    wait_isolated(&c.nodes[0], "x/a", "egress");
    send_multicast(&c.pods[sender], GROUP, PORT, "m2", N);
    std::thread::sleep(Duration::from_secs(2));
    for (k, p) in &rx {
        assert_eq!(
            lines(p, "m2"),
            0,
            "{k} received datagrams of a sender denied the group: {:?}",
            p.stdout()
        );
    }
    // A rule that covers the group lets them through again.
    c.set_policies(&[
        deny_ya,
        (
            "x",
            "xa-group",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": "239.9.9.0/24"}}], "ports": [{"protocol": "UDP", "port": PORT}]}]}),
        ),
    ]);
    wait_for("x/a's new egress rule in force", CASE_BOUND, || {
        let st = c.nodes[0].status();
        let ok = st["policy"]["pods"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["pod"] == "x/a" && p["policies"] == json!(["x/xa-group"]))
        });
        if ok {
            Ok(())
        } else {
            Err(format!("{}", st["policy"]))
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    send_multicast(&c.pods[sender], GROUP, PORT, "m3", N);
    for (k, p) in rx.iter().filter(|(k, _)| *k != "y/a") {
        let ok = wait_until(Duration::from_secs(5), || lines(p, "m3") >= N);
        assert!(
            ok,
            "receiver {k} got {} of {N} once the group was allowed",
            lines(p, "m3")
        );
    }
    assert_eq!(lines(&rx[1].1, "m3"), 0, "y/a still denies x/a");
    c.set_policies(&[]);
}

/// One group's counters in a node's status (`multicast.groups[]`).
fn group_counter(st: &Value, group: &str, key: &str) -> u64 {
    st["multicast"]["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["group"] == group))
        .map_or(0, |g| g[key].as_u64().unwrap_or(0))
}

/// Whether `node`'s status shows another member announcing `group`.
fn remote_announces(node: &KubeNode, group: &str) -> bool {
    node.status()["cluster"]["members"]
        .as_array()
        .is_some_and(|ms| {
            ms.iter().any(|m| {
                m["groups"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|x| x == group))
            })
        })
}

/// The IPv6 link-local address of `pod`'s eth0 (the source of its MLD reports).
fn link_local(pod: &Pod) -> String {
    let out = pod.netns.run(
        "ip",
        &["-j", "-6", "addr", "show", "dev", "eth0", "scope", "link"],
    );
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v[0]["addr_info"]
        .as_array()
        .and_then(|a| a.iter().find_map(|i| i["local"].as_str()))
        .unwrap_or_else(|| panic!("{}: no link-local address: {out}", pod.key()))
        .to_string()
}

/// Sends `count` datagrams `TAG i` from `pod` to the IPv6 `group:port` out of eth0
/// with hop limit 1 (python3: socat 1.7.4 has no IPv6 multicast interface option).
fn send_multicast6(pod: &Pod, group: &str, port: u16, tag: &str, count: usize) {
    let script = "import socket, sys, time\n\
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex('eth0'))\n\
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)\n\
        for i in range(int(sys.argv[4])):\n\
        \x20   s.sendto(f'{sys.argv[3]} {i}\\n'.encode(), (sys.argv[1], int(sys.argv[2])))\n\
        \x20   time.sleep(0.05)\n";
    let out = pod.netns.exec(
        "python3",
        &[
            "-c",
            script,
            group,
            &port.to_string(),
            tag,
            &count.to_string(),
        ],
    );
    expect_success("IPv6 multicast send", out);
}

/// Multicast replication pruned by policy (PROTOCOL.md §7.11 rule 3), over IPv4
/// (IGMP) or IPv6 (MLD): node 2's only pods, x/b and y/b, may receive nothing; they
/// join a group, node 2 refuses and counts their reports and does not announce it, and
/// node 1 sends it no copy of x/a's datagrams. Then x/b is allowed at runtime: node 2
/// announces the group from the memberships it already snooped (no new report: the
/// next query is minutes away) and x/b receives everything, y/b still nothing. A pod's
/// MLD reports come from its link-local address, which node 2 judges as the pod.
fn pruning_cases(c: &mut Cluster, family: Family) {
    let (group, port) = match family {
        Family::V4 => ("239.9.9.10", 6001),
        Family::V6 => ("ff05::9:10", 6002),
    };
    const N: usize = 10;
    let deny_b = |ns: &'static str| {
        (
            ns,
            "deny-b",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}),
        )
    };
    c.set_policies(&[deny_b("x"), deny_b("y")]);
    wait_isolated(&c.nodes[1], "x/b", "ingress");
    wait_isolated(&c.nodes[1], "y/b", "ingress");
    let rx = match family {
        Family::V4 => join_multicast(c, &["x/b", "y/b"], group, port),
        Family::V6 => join_multicast(c, &["x/b", "y/b"], group, port),
    };
    // The listeners node 2 sees: the pods' IPv4 addresses, or their link-local ones.
    let ips: Vec<String> = ["x/b", "y/b"]
        .iter()
        .map(|k| {
            let pod = c.pods.iter().find(|p| p.is(k)).expect("pod");
            match family {
                Family::V4 => pod.ip.to_string(),
                Family::V6 => link_local(pod),
            }
        })
        .collect();
    let send = |pod: &Pod, tag: &str| match family {
        Family::V4 => send_multicast(pod, group, port, tag, N),
        Family::V6 => send_multicast6(pod, group, port, tag, N),
    };
    let refused_now = |node: &KubeNode| {
        node.status()["multicast"]["refused_reports"]
            .as_u64()
            .unwrap_or(0)
    };
    let refused_before = refused_now(&c.nodes[1]);
    // Both joins are snooped, refused and counted; the group is not announced.
    wait_for("refused reports counted on node 2", CASE_BOUND, || {
        let m = c.nodes[1].status()["multicast"].clone();
        let denied: Vec<String> = m["denied_members"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter(|x| x["group"] == group)
                    .map(|x| x["listener"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let refused = m["refused_reports"].as_u64().unwrap_or(0);
        if refused >= refused_before + 2 && ips.iter().all(|ip| denied.contains(ip)) {
            Ok(())
        } else {
            Err(format!("{m}"))
        }
    });
    let st2 = c.nodes[1].status();
    assert!(
        !st2["multicast"]["local_groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|x| x == group)),
        "node 2 has only denied members of {group}, yet counts it as a local group: {}",
        st2["multicast"]
    );
    let refused = refused_now(&c.nodes[1]) - refused_before;
    let text = {
        let state = c.nodes[1].d.state_dir().display().to_string();
        String::from_utf8_lossy(&c.nodes[1].d.cli(&["status", "--state-dir", &state]).stdout)
            .into_owned()
    };
    assert!(
        text.contains("reports refused by network policy")
            && text.contains(&format!("{group} by {}", ips[0])),
        "{text}"
    );
    // Node 1 never hears node 2 announce the group, and sends it no copy.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !remote_announces(&c.nodes[0], group),
        "node 2 announces {group} for denied members only: {}",
        c.nodes[0].status()["cluster"]["members"]
    );
    let sender = c.pods.iter().position(|p| p.is("x/a")).expect("x/a");
    let before = c.nodes[0].status();
    let no_members = |st: &Value| st["drops"]["mcast_no_members"].as_u64().unwrap_or(0);
    send(&c.pods[sender], "p1");
    std::thread::sleep(Duration::from_secs(1));
    let after = c.nodes[0].status();
    assert_eq!(
        group_counter(&after, group, "tx_copies"),
        group_counter(&before, group, "tx_copies"),
        "node 1 sent copies of {group} to a node whose members are all denied: {}",
        after["multicast"]
    );
    assert!(
        no_members(&after) >= no_members(&before) + N as u64,
        "node 1 did not count x/a's datagrams as having no member node: {} -> {}",
        before["drops"],
        after["drops"]
    );
    assert_eq!(
        group_counter(&c.nodes[1].status(), group, "rx_packets"),
        0,
        "node 2 received copies of {group}"
    );
    let lines = |p: &Proc, tag: &str| p.stdout().lines().filter(|l| l.starts_with(tag)).count();
    for (k, p) in &rx {
        assert_eq!(lines(p, "p1"), 0, "denied {k} received {:?}", p.stdout());
    }
    eprintln!(
        "pruning: node 2 refused {refused} reports, announced nothing; node 1 sent 0 copies of {N} datagrams"
    );

    // x/b allowed at runtime: node 2 announces the group from what it already snooped.
    // (The count is read again here: the kernel repeats an unsolicited report once.)
    let refused = refused_now(&c.nodes[1]);
    let allowed_at = Instant::now();
    c.set_policies(&[
        (
            "x",
            "deny-b",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"],
                   "ingress": [{}]}),
        ),
        deny_b("y"),
    ]);
    wait_for("node 1 hears node 2 announce the group", CASE_BOUND, || {
        if remote_announces(&c.nodes[0], group) {
            Ok(())
        } else {
            Err(format!("{}", c.nodes[1].status()["multicast"]))
        }
    });
    let took = allowed_at.elapsed();
    assert_eq!(
        refused_now(&c.nodes[1]),
        refused,
        "the group came back through a new (refused or not) report rather than the policy change"
    );
    eprintln!("pruning: x/b allowed at runtime, node 1 saw node 2 announce {group} after {took:?}");
    let before = c.nodes[0].status();
    send(&c.pods[sender], "p2");
    let xb = &rx[0].1;
    let ok = wait_until(Duration::from_secs(5), || lines(xb, "p2") >= N);
    assert!(ok, "x/b got {} of {N} once allowed", lines(xb, "p2"));
    assert_eq!(lines(&rx[1].1, "p2"), 0, "y/b is still denied");
    let after = c.nodes[0].status();
    assert!(
        group_counter(&after, group, "tx_copies")
            >= group_counter(&before, group, "tx_copies") + N as u64,
        "node 1 counted no copies to node 2: {}",
        after["multicast"]
    );
    c.set_policies(&[]);
}
