//! End-to-end tests of Kubernetes mode: three "nodes" (namespaces on a bridged underlay)
//! run `weftnet up --kubernetes` against a fake API server, and "pods" (namespaces) are
//! wired by calling the installed CNI plugin exactly as a container runtime does. Pods
//! ping and carry iperf3 across nodes, TTL-1 multicast reaches pods on the other nodes,
//! a ClusterIP-style DNAT rule sends pod traffic to a pod on another node, the mesh
//! keeps running while the API server is down, DEL frees addresses, and a deleted Node
//! disappears from every peer list. Also the errors an operator gets.
//! Run as root (`cargo test --test kubernetes`); everything is created inside namespaces.

mod common;

use common::kube_api::FakeApi;
use common::kube_node::{fake_cluster, FakeCluster, KubeNode};
use common::mesh::*;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cluster's pod range; node 3 has no podCIDR and claims a block from it.
const CLUSTER_RANGE: &str = "10.244.0.0/16";
const CONVERGE: Duration = Duration::from_secs(40);
const HEALTH: &str = "127.0.0.1:9478";

/// `weftnet up --kubernetes` for Node `name` on `host`, with the cluster range, the
/// health endpoint and its CNI directories under `dir/name`, on a node that had
/// another CNI and an older weftnet's config.
fn start_node(host: &Host, name: &str, kubeconfig: &Path, secret: &Path, dir: &Path) -> KubeNode {
    let earlier = ["10-calico.conflist", "10-weftnet.conflist"].map(|f| (f, "{}".to_string()));
    KubeNode::start_custom(host, name, dir, &earlier, |cni| {
        kube_args(name, kubeconfig, secret, cni, Some(CLUSTER_RANGE))
    })
}

/// What these tests ask of a node beyond the harness's [`KubeNode`].
impl KubeNode {
    fn health(&self, path: &str) -> u16 {
        let script = "import sys, urllib.request, urllib.error\n\
            try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=3).status)\n\
            except urllib.error.HTTPError as e:\n    print(e.code)\n\
            except Exception:\n    print(0)\n";
        let url = format!("http://{HEALTH}{path}");
        let out = self.ns().exec("python3", &["-c", script, &url]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
    /// Waits until the status shows the API server `state` ("reachable" or
    /// "unreachable").
    fn wait_api(&self, state: &str, bound: Duration) {
        wait_for(&format!("{}: API server {state}", self.name), bound, || {
            let k = &self.status()["kubernetes"];
            if k["api_server"] == state {
                Ok(())
            } else {
                Err(format!("status {k}"))
            }
        });
    }
    fn peer_keys(&self) -> Vec<String> {
        self.status()["peers"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["public_key"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The `weftnet up` arguments of a Kubernetes node (common::kube_node's), with the
/// health endpoint these tests probe.
fn kube_args(
    node: &str,
    kubeconfig: &Path,
    secret: &Path,
    cni: &Path,
    range: Option<&str>,
) -> Vec<String> {
    let mut a = common::kube_node::kube_args(node, kubeconfig, secret, cni, range);
    a.push(format!("--health-listen={HEALTH}"));
    a
}

/// Fake API with three Nodes (two with a podCIDR, the third without) and their daemons;
/// waits until all see each other and have written their CNI config.
fn start_cluster(u: &Underlay, dir: &Path) -> (FakeApi, Vec<KubeNode>) {
    let k = fake_cluster(
        u.host(0),
        &[
            ("node1", u.host(0), Some("10.244.1.0/24")),
            ("node2", u.host(1), Some("10.244.2.0/24")),
            ("node3", u.host(2), None),
        ],
        dir,
    );
    let nodes: Vec<KubeNode> = (0..3)
        .map(|i| start_node(u.host(i), &k.names[i], &k.kubeconfig, &k.secret, dir))
        .collect();
    let api = k.api;
    let took = wait_ready(&nodes);
    eprintln!("3 Kubernetes nodes converged in {took:?}");
    (api, nodes)
}

/// Waits until every node sees all the others alive, has them as peers and has
/// written its CNI config; returns how long that took.
fn wait_ready(nodes: &[KubeNode]) -> Duration {
    let others = nodes.len() - 1;
    wait_for("Kubernetes nodes ready", CONVERGE, || {
        for n in nodes {
            let st = n.status();
            let alive = st["cluster"]["members"]
                .as_array()
                .map_or(0, |ms| ms.iter().filter(|m| m["state"] == "alive").count());
            if alive != others {
                return Err(format!("{} sees {alive} alive members", n.name));
            }
            if st["kubernetes"]["cni_config"].as_str().is_none() {
                return Err(format!("{} has not written its CNI config", n.name));
            }
            if n.peer_keys().len() != others {
                return Err(format!("{} has {} peers", n.name, n.peer_keys().len()));
            }
        }
        Ok(())
    })
}

fn group_members_seen(node: &KubeNode, group: &str, count: usize) -> Result<(), String> {
    let st = node.status();
    let n = st["cluster"]["members"].as_array().map_or(0, |ms| {
        ms.iter()
            .filter(|m| {
                m["groups"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|x| x == group))
            })
            .count()
    });
    if n >= count {
        Ok(())
    } else {
        Err(format!("{} sees {n} members with {group}", node.name))
    }
}

#[test]
fn pods_get_addresses_and_talk_across_nodes_through_the_mesh() {
    // Hosts 0-2 are the nodes; host 3 is outside the cluster.
    let u = Underlay::bridge(4);
    let dir = temp_dir("kube");
    let (api, mut nodes) = start_cluster(&u, dir.path());

    // Node 3 had no podCIDR: it claimed a block from the cluster range.
    let block3 = nodes[2].status()["cluster"]["block"]
        .as_str()
        .unwrap_or_else(|| panic!("node3 claimed no block"))
        .to_string();
    assert!(block3.starts_with("10.244."), "{block3}");
    for n in &nodes {
        // Published for operators: key and pod CIDR annotations, NetworkUnavailable=False.
        wait_for("annotations", Duration::from_secs(10), || {
            let node = api.node(&n.name).ok_or("node gone")?;
            let ann = &node["metadata"]["annotations"];
            if ann["weftnet.io/public-key"] != n.d.public_key() {
                return Err(format!("{}: annotations {ann}", n.name));
            }
            if ann["weftnet.io/pod-cidrs"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                return Err(format!("{}: no pod-cidrs annotation", n.name));
            }
            let conds = node["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let has = |t: &str, s: &str| conds.iter().any(|c| c["type"] == t && c["status"] == s);
            if !has("NetworkUnavailable", "False") || !has("Ready", "True") {
                return Err(format!("{}: conditions {conds:?}", n.name));
            }
            Ok(())
        });
        // The ClusterRole grants `patch` on `nodes/status` only: every write goes there.
        let patches: Vec<String> = api
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .map(|r| r.path().to_owned())
            .collect();
        assert!(
            !patches.is_empty() && patches.iter().all(|p| p.ends_with("/status")),
            "weftnet patches Nodes only through nodes/status: {patches:?}"
        );
        assert_eq!(n.health("/healthz"), 200, "{}: /healthz", n.name);
        assert_eq!(n.health("/readyz"), 200, "{}: /readyz", n.name);
    }
    assert!(nodes[2].net_config()["ranges"][0] == block3.as_str());
    // The runtime reads the first file of net.d: weftnet's, not the other CNI's; the
    // older weftnet's config is gone.
    for n in &nodes {
        let mut names: Vec<String> = std::fs::read_dir(n.cni.join("net.d"))
            .expect("net.d")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["00-weftnet.conflist", "10-calico.conflist"],
            "{}",
            n.name
        );
    }

    // Two pods per node, wired by the plugin as a runtime would.
    let mut pods = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..2 {
            let ns = Netns::new(&format!("p{i}{j}"));
            let id = format!("c{}{}{}", i, j, unique_id());
            let ip = n.add_pod(&id, &ns);
            pods.push((i, id, ns, ip));
        }
    }
    let pod = |i: usize, j: usize| &pods[i * 2 + j];
    // Pod to pod across nodes, and to the local neighbour.
    for (a, b) in [
        ((0, 0), (1, 0)),
        ((0, 1), (2, 0)),
        ((2, 1), (1, 1)),
        ((0, 0), (0, 1)),
    ] {
        let (from, to) = (pod(a.0, a.1), pod(b.0, b.1));
        assert!(
            reach(&from.2, &to.3),
            "pod {:?} cannot ping pod {:?} ({})",
            a,
            b,
            to.3
        );
    }
    // Bulk traffic through the mesh.
    let gbps = iperf3(&pod(0, 0).2, &pod(1, 0).2, &pod(1, 0).3, 2);
    eprintln!("pod-to-pod iperf3 across nodes: {gbps:.2} Gbit/s");
    assert!(gbps > 0.0);

    // Nothing for the other node's pods crossed the underlay in clear text: the
    // pod CIDR of node 2 is routed into weft0 on node 1.
    let route = nodes[0]
        .ns()
        .run("ip", &["-4", "route", "get", &pod(1, 0).3]);
    assert!(
        route.contains("dev weft0"),
        "node1 route to a node2 pod: {route}"
    );

    // Egress leaving the cluster range is masqueraded: a host outside the cluster,
    // with no route to pod addresses, answers a pod.
    let outside = u.host(3).underlay_v4();
    assert!(
        reach(&pod(0, 0).2, outside),
        "a pod cannot reach a host outside the cluster"
    );
    let chain = nodes[0]
        .ns()
        .run("iptables", &["-t", "nat", "-S", "WEFTNET-POSTROUTING"]);
    assert!(
        chain.contains("MASQUERADE") && chain.contains(CLUSTER_RANGE),
        "{chain}"
    );

    // TTL-1 multicast from a pod on node 1 reaches pods on nodes 2 and 3.
    let group = "239.7.7.7";
    let rx: Vec<Proc> = [pod(1, 0), pod(2, 0)]
        .iter()
        .map(|p| {
            p.2.spawn(
                "socat",
                &[
                    "-u",
                    &format!("UDP4-RECV:5000,ip-add-membership={group}:eth0"),
                    "STDOUT",
                ],
            )
        })
        .collect();
    wait_for("groups gossiped", Duration::from_secs(15), || {
        group_members_seen(&nodes[0], group, 2)
    });
    for i in 0..5 {
        let dst = format!(
            "UDP4-DATAGRAM:{group}:5000,ip-multicast-if={},ip-multicast-ttl=1",
            pod(0, 0).3
        );
        let mut cmd = pod(0, 0).2.command("socat", &["-u", "STDIN", &dst]);
        expect_success(
            "multicast send",
            run_bounded(&mut cmd, Some(format!("mc {i}\n").as_bytes()), EXEC_TIMEOUT),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (k, r) in rx.iter().enumerate() {
        let ok = wait_until(Duration::from_secs(5), || {
            r.stdout().lines().filter(|l| l.starts_with("mc ")).count() >= 5
        });
        assert!(ok, "pod receiver {k} got {:?}\n{}", r.stdout(), r.logs());
    }
    drop(rx);

    // A ClusterIP-style DNAT rule on node 1 (as kube-proxy installs it) sends pod
    // traffic for a virtual IP to a pod on node 2 through the mesh.
    let backend = pod(1, 1);
    let _server = backend.2.spawn(
        "socat",
        &[
            "-u",
            "TCP-LISTEN:8080,reuseaddr,fork",
            "SYSTEM:echo from-backend",
        ],
    );
    let _server_out = backend.2.spawn(
        "socat",
        &["TCP-LISTEN:8081,reuseaddr,fork", "SYSTEM:echo from-backend"],
    );
    nodes[0].ns().run(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            "10.96.0.10/32",
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{}:8081", backend.3),
        ],
    );
    let mut answer = String::new();
    let reached = wait_until(Duration::from_secs(10), || {
        let out = pod(0, 1).2.exec(
            "socat",
            &["-T", "3", "STDIO", "TCP:10.96.0.10:80,connect-timeout=3"],
        );
        answer = String::from_utf8_lossy(&out.stdout).to_string();
        answer.contains("from-backend")
    });
    assert!(
        reached,
        "the virtual IP did not reach the backend pod: {answer:?}"
    );

    // The API server goes away: the mesh keeps running and status says so.
    api.set_down(true);
    nodes[0].wait_api("unreachable", Duration::from_secs(20));
    assert!(
        reach(&pod(0, 0).2, &pod(2, 1).3),
        "pods lost each other while the API server was down"
    );
    api.set_down(false);
    nodes[0].wait_api("reachable", Duration::from_secs(40));

    // DEL frees the address (and a repeated DEL is fine); a new pod may reuse it.
    let (_, id, ns, ip) = pod(0, 1);
    let cfg = nodes[0].net_config();
    let bridge_mac = || {
        nodes[0]
            .ns()
            .run("cat", &["/sys/class/net/weftbr0/address"])
    };
    let mac_before = bridge_mac();
    let (ok, out) = nodes[0].cni("DEL", id, Some(ns), &cfg);
    assert!(ok, "DEL failed: {out}");
    // The gateway's MAC is fixed (set by weftnet, addr_assign_type 3): a port
    // leaving the bridge must not change it under the other pods' ARP caches.
    assert_eq!(
        bridge_mac(),
        mac_before,
        "the bridge MAC changed when a pod left"
    );
    let assign = nodes[0]
        .ns()
        .run("cat", &["/sys/class/net/weftbr0/addr_assign_type"]);
    assert_eq!(assign.trim(), "3", "the bridge MAC is not a set address");
    let (ok, out) = nodes[0].cni("DEL", id, Some(ns), &cfg);
    assert!(ok, "repeated DEL failed: {out}");
    assert!(!ns.has_link("eth0"), "the pod's interface survived DEL");
    let data = nodes[0].cni.join("data");
    let still = walk(&data)
        .iter()
        .any(|f| f.file_name().is_some_and(|n| n.to_string_lossy() == *ip));
    assert!(!still, "{ip} is still allocated after DEL");
    let (ok, out) = nodes[0].cni("CHECK", id, Some(ns), &cfg);
    assert!(!ok, "CHECK passed for a deleted pod: {out}");

    // Deleting a Node from the API removes its peer everywhere: node 3 sees its own
    // Node gone and leaves; the others drop and forget it.
    let key3 = nodes[2].d.public_key();
    assert!(api.delete_node("node3"));
    wait_for(
        "node3 removed from every peer list",
        Duration::from_secs(20),
        || {
            for n in &nodes[..2] {
                if n.peer_keys().contains(&key3) {
                    return Err(format!("{} still has node3 as a peer", n.name));
                }
            }
            Ok(())
        },
    );
    let status = nodes[2].d.proc().wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "node3 did not stop cleanly after its Node was deleted: {status:?}\n{}",
        nodes[2].d.logs()
    );
    // Its masquerade rules went with it.
    let gone = nodes[2]
        .ns()
        .exec("iptables", &["-t", "nat", "-S", "WEFTNET-POSTROUTING"]);
    assert!(
        !gone.status.success(),
        "node3 left its masquerade chain behind"
    );
    if !reach(&pod(0, 0).2, &pod(1, 0).3) {
        let mut dump = String::new();
        for n in &nodes[..2] {
            dump.push_str(&format!(
                "--- {}\nstatus: {}\nroutes: {}\nlinks: {}\n",
                n.name,
                n.status(),
                n.ns().run("ip", &["route", "show", "table", "all"]),
                n.ns().run("ip", &["-br", "link"]),
            ));
        }
        panic!("node1 and node2 pods lost each other\n{dump}");
    }
}

#[test]
fn dual_stack_pods_reach_each_other_over_ipv4_and_ipv6() {
    let u = Underlay::bridge(2);
    let dir = temp_dir("kube-ds");
    let v4 = ["10.244.1.0/24", "10.244.2.0/24"];
    let k = fake_cluster(
        u.host(0),
        &[
            ("ds1", u.host(0), Some(v4[0])),
            ("ds2", u.host(1), Some(v4[1])),
        ],
        dir.path(),
    );
    for (i, name) in k.names.iter().enumerate() {
        let v6 = format!("fd00:10:244:{}::/64", i + 1);
        k.api.update_node(name, |n| {
            n["spec"]["podCIDRs"] = serde_json::json!([v4[i], v6]);
        });
    }
    let nodes: Vec<KubeNode> = (0..2)
        .map(|i| start_node(u.host(i), &k.names[i], &k.kubeconfig, &k.secret, dir.path()))
        .collect();
    wait_ready(&nodes);
    let mut pods = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let ranges = n.net_config()["ranges"].clone();
        assert_eq!(
            ranges.as_array().map(Vec::len),
            Some(2),
            "{}: ranges {ranges}",
            n.name
        );
        let ns = Netns::new(&format!("d{i}"));
        let (ok, result) = n.cni(
            "ADD",
            &format!("ds{i}{}", unique_id()),
            Some(&ns),
            &n.net_config(),
        );
        assert!(ok, "ADD: {result}");
        let ips: Vec<String> = result["ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|ip| ip["address"].as_str())
                    .map(|a| a.split('/').next().unwrap_or(a).to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(ips.len(), 2, "{}: ADD result {result}", n.name);
        pods.push((ns, ips));
    }
    for family in 0..2 {
        let to = &pods[1].1[family];
        assert!(reach(&pods[0].0, to), "pod on ds1 cannot ping {to} on ds2");
    }
    // The node itself reaches a remote pod over IPv6 too (source: its own gateway).
    assert!(
        reach(nodes[0].ns(), &pods[1].1[1]),
        "ds1 cannot ping the ds2 pod over IPv6"
    );
}

#[test]
fn restart_while_the_api_server_is_down_starts_from_the_cache() {
    let u = Underlay::bridge(2);
    let dir = temp_dir("kube-cache");
    let k = fake_cluster(
        u.host(0),
        &[
            ("r1", u.host(0), Some("10.244.1.0/24")),
            ("r2", u.host(1), Some("10.244.2.0/24")),
        ],
        dir.path(),
    );
    let mut nodes: Vec<KubeNode> = (0..2)
        .map(|i| start_node(u.host(i), &k.names[i], &k.kubeconfig, &k.secret, dir.path()))
        .collect();
    let api = k.api;
    wait_ready(&nodes);
    let pods: Vec<(Netns, String)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ns = Netns::new(&format!("r{i}"));
            let ip = n.add_pod(&format!("r{i}{}", unique_id()), &ns);
            (ns, ip)
        })
        .collect();
    assert!(
        reach(&pods[0].0, &pods[1].1),
        "pods cannot talk before the restart"
    );

    // The API server goes away and node r2's daemon restarts (a DaemonSet update): it
    // starts from the facts cached by its first run, and its pod keeps working.
    api.set_down(true);
    nodes[1].d.restart();
    let st = nodes[1].status();
    assert_eq!(
        st["kubernetes"]["started_from_cache"], true,
        "{}",
        st["kubernetes"]
    );
    assert_eq!(
        st["kubernetes"]["api_server"], "unreachable",
        "{}",
        st["kubernetes"]
    );
    wait_ready(&nodes);
    assert!(
        reach(&pods[0].0, &pods[1].1),
        "the pod on the restarted node is cut off"
    );
    assert!(
        reach(&pods[1].0, &pods[0].1),
        "the pod on the restarted node cannot reach out"
    );
    api.set_down(false);
    nodes[1].wait_api("reachable", Duration::from_secs(40));
}

/// Whether `to` answers pings from `from` within a generous bound (one ping at a time,
/// retried: a loaded CI machine may delay a first handshake or ARP).
fn reach(from: &Netns, to: impl std::fmt::Display) -> bool {
    let to = to.to_string();
    wait_until(Duration::from_secs(15), || ping(from, &to, 1))
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn expect_failure(host: &Netns, args: &[String], want: &[&str]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match Daemon::try_start(host, &args, "") {
        Ok(mut d) => {
            d.stop();
            panic!("weftnet started with {args:?}");
        }
        Err(e) => {
            for w in want {
                assert!(e.contains(w), "error for {args:?} lacks {w:?}:\n{e}");
            }
        }
    }
}

#[test]
fn operator_errors_name_the_fix() {
    let u = Underlay::bridge(1);
    let dir = temp_dir("kube-err");
    let k = fake_cluster(u.host(0), &[("lonely", u.host(0), None)], dir.path());
    let FakeCluster {
        api,
        kubeconfig,
        secret,
        ..
    } = k;
    let cni = dir.path().join("cni");
    let h = u.host(0).netns();

    // No podCIDR on the Node and no --range.
    expect_failure(
        h,
        &kube_args("lonely", &kubeconfig, &secret, &cni, None),
        &["no spec.podCIDR", "--range"],
    );
    // A Node name that does not exist.
    expect_failure(
        h,
        &kube_args("ghost", &kubeconfig, &secret, &cni, Some(CLUSTER_RANGE)),
        &["Node ghost does not exist", "--node-name"],
    );
    // Missing RBAC.
    api.set_forbidden(true);
    expect_failure(
        h,
        &kube_args("lonely", &kubeconfig, &secret, &cni, Some(CLUSTER_RANGE)),
        &["403", "ClusterRole"],
    );
    api.set_forbidden(false);
    // Missing secret file (a Secret not mounted).
    let missing = dir.path().join("no-such-secret");
    expect_failure(
        h,
        &kube_args("lonely", &kubeconfig, &missing, &cni, Some(CLUSTER_RANGE)),
        &["no-such-secret", "does not exist"],
    );
    // --kubernetes without a secret or a Node name.
    expect_failure(
        h,
        &["--kubernetes".into(), "--node-name=lonely".into()],
        &["--secret-file"],
    );
    expect_failure(
        h,
        &[
            "--kubernetes".into(),
            format!("--secret-file={}", secret.display()),
        ],
        &["--node-name"],
    );
    // A kubeconfig that does not exist.
    let mut args = kube_args(
        "lonely",
        &dir.path().join("nope"),
        &secret,
        &cni,
        Some(CLUSTER_RANGE),
    );
    args.retain(|a| !a.starts_with("--health"));
    expect_failure(h, &args, &["kubeconfig", "--kubeconfig"]);
}

/// A host holding the cluster secret but with no Node (here: using node2's name from
/// another address, and announcing node2's pod CIDR) joins the gossip but is never
/// admitted: no node takes it as a peer, and its prefix stays node2's.
#[test]
fn a_host_with_the_secret_but_no_node_is_not_admitted() {
    let u = Underlay::bridge(4);
    let dir = temp_dir("kube-rogue");
    let (_api, nodes) = start_cluster(&u, dir.path());
    let secret = dir.path().join("secret");
    let seed = format!("{}:{PORT}", u.host(0).underlay_v4());
    let rogue = Daemon::start(
        u.host(3),
        &[
            "--name",
            "node2",
            "--secret-file",
            secret.to_str().expect("path"),
            "--join",
            &seed,
            "--block",
            "10.244.2.0/24",
        ],
        "",
    );
    let rogue_key = rogue.public_key();
    wait_for("the rogue is a gossip member", CONVERGE, || {
        let listed = nodes[0].status()["cluster"]["members"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["public_key"] == rogue_key.as_str()));
        listed.then_some(()).ok_or("not listed yet".to_string())
    });
    // Give the reconcilers a moment past the gossip update, then check every node.
    std::thread::sleep(Duration::from_secs(2));
    for n in &nodes {
        let st = n.status();
        let peer = st["peers"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["public_key"] == rogue_key.as_str())
                .cloned()
        });
        assert!(peer.is_none(), "{}: the rogue is a peer: {peer:?}", n.name);
        assert!(
            st["drops"]["prefix_refused"].as_u64().unwrap_or(0) >= 1,
            "{}: {st}",
            n.name
        );
    }
    // node2's pods stay node2's: its peer entry on node1 keeps the pod CIDR.
    let node2_key = nodes[1].d.public_key();
    let st = nodes[0].status();
    let to_node2 = st["peers"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["public_key"] == node2_key.as_str())
                .cloned()
        })
        .expect("node2 is a peer");
    assert!(
        to_node2["allowed_ips"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "10.244.2.0/24")),
        "{to_node2}"
    );
}
