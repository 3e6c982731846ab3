//! NetworkPolicy conformance, end to end, in the spirit of the upstream `netpol` e2e
//! tests and cyclonus: two Kubernetes nodes run `weftnet up --kubernetes` against the
//! fake API server; five labelled pods in two labelled namespaces (three on node 1,
//! two on node 2) are wired through the CNI plugin and registered as Pod objects with
//! named ports; each serves TCP and UDP on ports 80 and 81. Every case puts its
//! policies into the API server and checks every ordered pair of pods on every port
//! and protocol (80 probes, run concurrently) against the verdict the case expects,
//! until they all agree (bounded). Cases: no policy, default deny ingress, egress and
//! both, allow by pod label, by namespace label, by both, ipBlock with except, named
//! ports and endPort, egress to a named port, and changes at runtime (a pod's label,
//! a namespace's label, a policy replaced, policies deleted). Also: the host reaches
//! its own pods whatever the policy (kubelet probes), status and metrics show the
//! policies and drops, and the table is gone after the daemon stops. Multicast: a
//! receiver whose ingress rules deny the sender gets nothing while an allowed one on
//! the same node gets everything; a sender whose egress rules do not cover the group
//! reaches nobody, on either node, until a rule allows the group. Pruning: a node
//! whose only members of a group are denied it refuses and counts their reports, does
//! not announce the group, and the sender's node sends it no copies; allowing one of
//! them at runtime makes the node announce the group again without a new report, and
//! delivery resumes.
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

struct Pod {
    ns: &'static str,
    name: &'static str,
    node: usize,
    netns: Netns,
    ip: IpAddr,
}

impl Pod {
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
        let ip = nodes[node].add_pod(&format!("c{ns}{name}{}", unique_id()), &netns);
        api.put(
            "pods",
            pod_object(
                ns,
                name,
                &nodes[node].name,
                &ip,
                &[("pod", name)],
                &named_ports(),
            ),
        );
        servers.push(Servers::start(&netns, &PORTS));
        pods.push(Pod {
            ns,
            name,
            node,
            netns,
            ip: ip.parse().expect("pod ip"),
        });
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

type Verdicts = BTreeMap<(usize, usize, Proto, u16), bool>;

impl Cluster {
    /// Every ordered pair, protocol and port, probed concurrently.
    fn probe_all(&self) -> Verdicts {
        let mut handles = Vec::new();
        for (i, from) in self.pods.iter().enumerate() {
            for (j, to) in self.pods.iter().enumerate() {
                if i == j {
                    continue;
                }
                for proto in [Proto::Tcp, Proto::Udp] {
                    for port in PORTS {
                        let (netns, ip) = (from.netns.clone(), to.ip);
                        handles.push((
                            (i, j, proto, port),
                            std::thread::spawn(move || {
                                probe_in(&netns, ip, proto, port, PROBE_TIMEOUT)
                            }),
                        ));
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

    /// Probes until every verdict is `want`'s (within [`CASE_BOUND`]); returns how long
    /// it took, or panics with the pairs that disagree.
    fn expect(&self, case: &str, want: impl Fn(&Pod, &Pod, Proto, u16) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.probe_all();
            let wrong: Vec<String> = got
                .iter()
                .filter(|((i, j, proto, port), ok)| {
                    want(&self.pods[*i], &self.pods[*j], *proto, *port) != **ok
                })
                .map(|((i, j, proto, port), ok)| {
                    format!(
                        "{} -> {} {proto:?}/{port}: {} (want {})",
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
    assert!(
        probe_in(c.nodes[xa.node].ns(), xa.ip, Proto::Tcp, 80, PROBE_TIMEOUT),
        "node1 cannot reach its own pod x/a under deny-ingress"
    );

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
    let ya = c.pods[3].ip.to_string();
    c.api.put(
        "pods",
        pod_object("y", "a", "node1", &ya, &[("pod", "b")], &named_ports()),
    );
    c.expect("pod label changed at runtime", |from, to, _, _| {
        !to.is("x/a") || from.ns == "y"
    });
    put_namespace(&c.api, "y", &[("ns", "z")]);
    c.expect("namespace label changed at runtime", |_, to, _, _| {
        !to.is("x/a")
    });
    put_namespace(&c.api, "y", &[("ns", "y")]);
    c.api.put(
        "pods",
        pod_object("y", "a", "node1", &ya, &[("pod", "a")], &named_ports()),
    );

    // Egress from x/a to node2's pod CIDR except y/b.
    let yb = c.pods[4].ip;
    c.set_policies(&[(
        "x",
        "egress-block",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.244.2.0/24", "except": [format!("{yb}/32")]}}]}]}),
    )]);
    c.expect("ipBlock with except", |from, to, _, _| {
        !from.is("x/a") || (to.node == 1 && !to.is("y/b"))
    });

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
    pruning_cases(&mut c);

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

/// In each pod of `keys`, a receiver (socat) that joins `group` on eth0 and prints
/// every datagram to `port` on its stdout; paired with its pod's key.
fn join_multicast<'a>(
    c: &Cluster,
    keys: &[&'a str],
    group: &str,
    port: u16,
) -> Vec<(&'a str, Proc)> {
    keys.iter()
        .map(|k| {
            let pod = c.pods.iter().find(|p| p.is(k)).expect("pod");
            let recv = format!("UDP4-RECV:{port},ip-add-membership={group}:eth0");
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

/// Multicast replication pruned by policy (PROTOCOL.md §7.11 rule 3): node 2's only
/// pods, x/b and y/b, may receive nothing; they join a group, node 2 refuses and counts
/// their reports and does not announce it, and node 1 sends it no copy of x/a's
/// datagrams. Then x/b is allowed at runtime: node 2 announces the group from the
/// memberships it already snooped (no new report: the next query is minutes away) and
/// x/b receives everything, y/b still nothing.
fn pruning_cases(c: &mut Cluster) {
    const GROUP: &str = "239.9.9.10";
    const PORT: u16 = 6001;
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
    let rx = join_multicast(c, &["x/b", "y/b"], GROUP, PORT);
    let ips: Vec<String> = ["x/b", "y/b"]
        .iter()
        .map(|k| c.pods.iter().find(|p| p.is(k)).expect("pod").ip.to_string())
        .collect();
    // Both joins are snooped, refused and counted; the group is not announced.
    wait_for("refused reports counted on node 2", CASE_BOUND, || {
        let m = c.nodes[1].status()["multicast"].clone();
        let denied: Vec<String> = m["denied_members"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter(|x| x["group"] == GROUP)
                    .map(|x| x["listener"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let refused = m["refused_reports"].as_u64().unwrap_or(0);
        if refused >= 2 && ips.iter().all(|ip| denied.contains(ip)) {
            Ok(())
        } else {
            Err(format!("{m}"))
        }
    });
    let st2 = c.nodes[1].status();
    assert!(
        !st2["multicast"]["local_groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|x| x == GROUP)),
        "node 2 has only denied members of {GROUP}, yet counts it as a local group: {}",
        st2["multicast"]
    );
    let refused = st2["multicast"]["refused_reports"].as_u64().unwrap_or(0);
    let text = {
        let state = c.nodes[1].d.state_dir().display().to_string();
        String::from_utf8_lossy(&c.nodes[1].d.cli(&["status", "--state-dir", &state]).stdout)
            .into_owned()
    };
    assert!(
        text.contains("reports refused by network policy")
            && text.contains(&format!("{GROUP} by {}", ips[0])),
        "{text}"
    );
    // Node 1 never hears node 2 announce the group, and sends it no copy.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !remote_announces(&c.nodes[0], GROUP),
        "node 2 announces {GROUP} for denied members only: {}",
        c.nodes[0].status()["cluster"]["members"]
    );
    let sender = c.pods.iter().position(|p| p.is("x/a")).expect("x/a");
    let before = c.nodes[0].status();
    let no_members = |st: &Value| st["drops"]["mcast_no_members"].as_u64().unwrap_or(0);
    send_multicast(&c.pods[sender], GROUP, PORT, "p1", N);
    std::thread::sleep(Duration::from_secs(1));
    let after = c.nodes[0].status();
    assert_eq!(
        group_counter(&after, GROUP, "tx_copies"),
        group_counter(&before, GROUP, "tx_copies"),
        "node 1 sent copies of {GROUP} to a node whose members are all denied: {}",
        after["multicast"]
    );
    assert!(
        no_members(&after) >= no_members(&before) + N as u64,
        "node 1 did not count x/a's datagrams as having no member node: {} -> {}",
        before["drops"],
        after["drops"]
    );
    assert_eq!(
        group_counter(&c.nodes[1].status(), GROUP, "rx_packets"),
        0,
        "node 2 received copies of {GROUP}"
    );
    let lines = |p: &Proc, tag: &str| p.stdout().lines().filter(|l| l.starts_with(tag)).count();
    for (k, p) in &rx {
        assert_eq!(lines(p, "p1"), 0, "denied {k} received {:?}", p.stdout());
    }
    eprintln!(
        "pruning: node 2 refused {refused} reports, announced nothing; node 1 sent 0 copies of {N} datagrams"
    );

    // x/b allowed at runtime: node 2 announces the group from what it already snooped.
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
        if remote_announces(&c.nodes[0], GROUP) {
            Ok(())
        } else {
            Err(format!("{}", c.nodes[1].status()["multicast"]))
        }
    });
    let took = allowed_at.elapsed();
    let st2 = c.nodes[1].status();
    assert_eq!(
        st2["multicast"]["refused_reports"].as_u64().unwrap_or(0),
        refused,
        "the group came back through a new (refused or not) report rather than the policy change"
    );
    eprintln!("pruning: x/b allowed at runtime, node 1 saw node 2 announce {GROUP} after {took:?}");
    let before = c.nodes[0].status();
    send_multicast(&c.pods[sender], GROUP, PORT, "p2", N);
    let xb = &rx[0].1;
    let ok = wait_until(Duration::from_secs(5), || lines(xb, "p2") >= N);
    assert!(ok, "x/b got {} of {N} once allowed", lines(xb, "p2"));
    assert_eq!(lines(&rx[1].1, "p2"), 0, "y/b is still denied");
    let after = c.nodes[0].status();
    assert!(
        group_counter(&after, GROUP, "tx_copies")
            >= group_counter(&before, GROUP, "tx_copies") + N as u64,
        "node 1 counted no copies to node 2: {}",
        after["multicast"]
    );
    c.set_policies(&[]);
}
