//! End-to-end test of chained mode (`weftnet up --kubernetes --chained`), beside a
//! simulated AWS VPC CNI. Two "nodes" and a "VPC host" are namespaces on one underlay
//! where pod addresses are routed with no overlay, as the VPC routes secondary
//! addresses (each host has a route to each node's pod range via that node). Pods are
//! plumbed by a primary plugin that is not weftnet: the reference `ptp` and
//! `host-local` plugins (Debian's containernetworking-plugins), which give each pod a
//! /32 host route on a veth, as the VPC CNI does. The test runs the chained conflist
//! that weftnet composes from `10-aws.conflist` exactly as a runtime does (each plugin
//! in order, `prevResult` passed on). It shows:
//! - pod to pod across nodes arrives with the original addresses, while counters on
//!   the underlay see no packet carrying a pod address and nothing between the nodes
//!   but UDP to port 51820;
//! - same-node and pod-to-VPC traffic take the primary's path, untouched;
//! - a restart (SIGTERM) keeps the rules and leaks nothing in clear;
//! - with `--require-encryption` and the peer down, nothing leaks in clear;
//! - DEL removes a pod's record and rule; removing weftnet (uninstall, stop for good)
//!   removes the chained config, rules and table and restores plain VPC routing;
//! - removing weftnet (both nodes stop for good, one after the other) is not an
//!   outage: a ping between pods on the two nodes moves from the tunnel back to the
//!   VPC's plain path with every echo answered;
//! - TTL-1 multicast from a pod reaches the member pods on the other node and on its
//!   own, and no other pod (not even as a frame on its link); a leave stops delivery;
//!   a restarted node relearns its pods' memberships at once; no group traffic
//!   crosses the underlay in clear; the metrics carry the pod ports' counters;
//! - a host outside the cluster on the VPC, vouched for by a certificate of the
//!   cluster CA, and the pods on both nodes ping each other through the tunnels (the
//!   pods see the host's own address), though the VPC routes the pods' addresses in
//!   clear; the host and the pods share a multicast group both ways; with `--require-encryption`, once the host has left, its block is
//!   blackholed on the nodes and nothing goes out in clear.
//!
//! Run as root (`cargo test --test chained`); everything is created inside namespaces.

mod common;

use common::ca::{ca_init, ca_sign, keypair};
use common::chained::*;
use common::mesh::{
    member_groups, pod_group_receiver, pod_group_send, wait_for, DELIVERY, JOIN_BOUND, LEAVE_BOUND,
    UDP_PORT,
};
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Counters on a host's underlay interface: packets to a 239/8 group (counted
/// whatever else they match), packets carrying a pod address, UDP to port 51820
/// between the nodes, and anything else between the nodes.
fn install_counters(ns: &Netns, nodes: &[String]) {
    let set = nodes.join(", ");
    let script = format!(
        "table inet cap {{\n\
         counter group {{}}\n counter clear {{}}\n counter wg {{}}\n counter other {{}}\n\
         chain c {{\n\
           ip daddr 239.0.0.0/8 counter name group\n\
           ip saddr {PODS} counter name clear accept\n\
           ip daddr {PODS} counter name clear accept\n\
           ip saddr {{ {set} }} ip daddr {{ {set} }} udp dport 51820 counter name wg accept\n\
           ip saddr {{ {set} }} ip daddr {{ {set} }} counter name other accept\n\
         }}\n\
         chain pre {{ type filter hook prerouting priority -300; iifname \"eth0\" jump c; }}\n\
         chain post {{ type filter hook postrouting priority 300; oifname \"eth0\" jump c; }}\n\
         }}\n"
    );
    let mut cmd = ns.command("nft", &["-f", "-"]);
    let out = run_bounded(&mut cmd, Some(script.as_bytes()), EXEC_TIMEOUT);
    assert!(out.status.success(), "nft: {}", describe(&out));
}

fn counter(ns: &Netns, table: &str, name: &str) -> u64 {
    let family = if table == "cap" { "inet" } else { "ip" };
    let text = ns.run("nft", &["list", "counter", family, table, name]);
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {text}"))
}

/// Counts echo requests from `src` to `dst` arriving in the pod's own namespace.
fn watch_arrivals(pod: &Pod, src: &str) {
    let script = format!(
        "table ip seen {{\n counter echo {{}}\n chain in {{\n type filter hook input priority 0;\n\
         ip saddr {src} ip daddr {} icmp type echo-request counter name echo\n }}\n}}\n",
        pod.ip
    );
    let mut cmd = pod.ns.command("nft", &["-f", "-"]);
    let out = run_bounded(&mut cmd, Some(script.as_bytes()), EXEC_TIMEOUT);
    assert!(out.status.success(), "nft: {}", describe(&out));
}

/// Where the node routes a packet from `from` (arriving on its veth) to `to`.
fn route_dev(node: &ChainedNode, from: &Pod, to: &str) -> String {
    let out = node.ns().ip(&[
        "-j", "route", "get", to, "from", &from.ip, "iif", &from.veth,
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v[0]["dev"].as_str().unwrap_or_default().to_string()
}

/// Removing weftnet is not an outage: pods on the two nodes ping each other every
/// 50 ms while node1 and then node2 stop for good (`weftnet leave`, as at the
/// DaemonSet's removal). Their traffic moves from the tunnel back to the VPC's plain
/// path, and every echo is answered (the last half second's aside: ping stops at the
/// count, so a reply still on its way then is late, not lost).
#[test]
fn removing_weftnet_is_not_an_outage() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("chained");
    let (h1, h2, vpc) = (u.host(0), u.host(1), u.host(2));
    let (api, mut n1, mut n2) = start_beside_vpc(h1, h2, vpc, dir.path(), &[]);
    for n in [&n1, &n2] {
        n.wait_for_conflist();
    }
    let a1 = n1.add_pod(&api, "a1");
    let b1 = n2.add_pod(&api, "b1");
    wait_for(
        "a1 -> b1 through the tunnel",
        Duration::from_secs(30),
        || {
            let dev = route_dev(&n1, &a1, &b1.ip);
            if dev == "weft0" && route_dev(&n2, &b1, &a1.ip) == "weft0" && pings(&a1, &b1.ip, 1) {
                Ok(())
            } else {
                Err(format!("a1 -> b1 via {dev:?}"))
            }
        },
    );
    let count = 160u64;
    let mut ping = a1.ns.spawn(
        "ping",
        &[
            "-n",
            "-i",
            "0.05",
            "-W",
            "1",
            "-c",
            &count.to_string(),
            "-w",
            "20",
            &b1.ip,
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(n1.d.stop_for_good().success(), "{}", n1.d.logs());
    std::thread::sleep(Duration::from_secs(2));
    assert!(n2.d.stop_for_good().success(), "{}", n2.d.logs());
    let _ = ping.wait_timeout(Duration::from_secs(30));
    let out = ping.stdout();
    let answered = ping_answered(&out);
    let lost: Vec<u64> = (1..=count - 10)
        .filter(|seq| !answered.contains(seq))
        .collect();
    assert!(
        lost.is_empty(),
        "echoes lost while weftnet was removed: {lost:?}\n{out}"
    );
    assert_ne!(
        route_dev(&n1, &a1, &b1.ip),
        "weft0",
        "the plain VPC path is back"
    );
    assert!(pings(&a1, &b1.ip, 3), "plain VPC routing works");
}

#[test]
fn chained_beside_a_vpc_style_cni() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("chained");
    let (h1, h2, vpc) = (u.host(0), u.host(1), u.host(2));
    let strict = ["--require-encryption"];
    let (api, n1, mut n2) = start_beside_vpc(h1, h2, vpc, dir.path(), &strict);
    let nodes = [h1.underlay_v4().to_string(), h2.underlay_v4().to_string()];
    for h in [h1, h2] {
        install_counters(h, &nodes);
    }
    for n in [&n1, &n2] {
        n.wait_for_conflist();
    }
    let list: Value =
        serde_json::from_str(&std::fs::read_to_string(n1.chained_conflist()).expect("read"))
            .expect("json");
    assert_eq!(list["name"], "aws-cni");
    assert_eq!(list["plugins"][0]["type"], "ptp");
    assert_eq!(list["plugins"][1]["type"], "weftnet");

    let a1 = n1.add_pod(&api, "a1");
    let a2 = n1.add_pod(&api, "a2");
    let b1 = n2.add_pod(&api, "b1");
    // CHECK of the whole chain's weftnet entry passes on the pod it recorded.
    let mut check = list["plugins"][1].clone();
    check["name"] = list["name"].clone();
    check["cniVersion"] = list["cniVersion"].clone();
    check["prevResult"] = a1.result.clone();
    let (ok, out) = n1.plugin("weftnet", "CHECK", &a1.id, &a1.ns, &check);
    assert!(ok, "CHECK: {out}");

    // Each node routes the other's pod into the tunnel, from its own pods only.
    for (n, remote, local) in [(&n1, &b1, &a1), (&n2, &a1, &b1)] {
        wait_for(
            &format!("{}: route to {}", n.name, remote.ip),
            BOUND,
            || {
                let t = n.table();
                let rules = n.rules();
                if !t.contains(&format!("{} dev weft0", remote.ip)) {
                    return Err(format!("table 51820: {t}"));
                }
                if !rules.contains(&format!("100:\tfrom {} lookup 51820", local.ip)) {
                    return Err(format!("rules: {rules}"));
                }
                Ok(())
            },
        );
    }

    // Pod to pod across nodes: arrives with the original addresses; the underlay
    // carries only UDP 51820 between the nodes, never a pod address.
    watch_arrivals(&b1, &a1.ip);
    let clear = |h: &Host| counter(h, "cap", "clear");
    let (c1, c2) = (clear(h1), clear(h2));
    let wg = counter(h1, "cap", "wg");
    assert!(
        pings(&a1, &b1.ip, 10),
        "a1 cannot ping b1 through the tunnel"
    );
    assert!(
        counter(&b1.ns, "seen", "echo") >= 5,
        "b1 did not see a1's own address"
    );
    assert_eq!(
        (clear(h1), clear(h2)),
        (c1, c2),
        "pod addresses crossed the underlay in clear"
    );
    assert!(
        counter(h1, "cap", "wg") >= wg + 10,
        "the pings did not go through UDP 51820"
    );
    assert_eq!(route_dev(&n1, &a1, &b1.ip), "weft0");

    // Same node and pod to VPC: the primary's path, untouched.
    assert!(pings(&a1, &a2.ip, 3), "a1 cannot ping a2 on the same node");
    assert_eq!(route_dev(&n1, &a1, &a2.ip), a2.veth);
    let vpc_ip = vpc.underlay_v4().to_string();
    assert!(pings(&a1, &vpc_ip, 3), "a1 cannot reach the VPC host");
    assert_eq!(route_dev(&n1, &a1, &vpc_ip), "eth0");
    assert!(
        clear(h1) > c1,
        "pod-to-VPC traffic should leave with the pod's address, as before"
    );
    assert_eq!(
        counter(h1, "cap", "other") + counter(h2, "cap", "other"),
        0,
        "something other than UDP 51820 crossed between the nodes"
    );

    // A restart (SIGTERM, as in an upgrade) keeps the rules, and in strict mode
    // nothing leaves in clear while the new run rejoins; then the tunnel carries on.
    let (c1, c2) = (clear(h1), clear(h2));
    let mut n1 = n1;
    n1.d.restart();
    assert!(
        n1.rules().contains(&format!("from {} lookup 51820", a1.ip)),
        "the rule outlived the restart"
    );
    let _ = pings(&a1, &b1.ip, 3);
    wait_for("node1 routes b1 again", BOUND, || {
        let t = n1.table();
        t.contains(&format!("{} dev weft0", b1.ip))
            .then_some(())
            .ok_or(t)
    });
    assert!(
        pings(&a1, &b1.ip, 5),
        "a1 cannot ping b1 after node1's restart"
    );
    assert_eq!(
        (clear(h1), clear(h2)),
        (c1, c2),
        "pod addresses crossed the underlay in clear around the restart"
    );

    // DEL through the chain: the record and the rule go.
    n1.chain("DEL", &a2.id, &a2.ns, Some(&a2.result));
    n1.chain("DEL", &a2.id, &a2.ns, Some(&a2.result));
    wait_for("a2's rule removed", BOUND, || {
        let r = n1.rules();
        (!r.contains(&format!("from {} lookup", a2.ip)))
            .then_some(())
            .ok_or(r)
    });

    // --require-encryption, peer down: nothing in clear, before and after the peer
    // is declared dead (then a blackhole route is all that is left for its pods).
    n2.d.kill();
    let (c1, c2) = (clear(h1), clear(h2));
    assert!(
        !pings(&a1, &b1.ip, 5),
        "b1 answered with its node's weftnet down"
    );
    wait_for("node1 drops node2's route", Duration::from_secs(60), || {
        let t = n1.table();
        let gone = !t.contains(&format!("{} dev weft0", b1.ip));
        let hole = t.contains(&format!("blackhole {}", b1.ip));
        (gone && hole).then_some(()).ok_or(t)
    });
    assert!(
        !pings(&a1, &b1.ip, 5),
        "b1 answered with its node's weftnet down"
    );
    assert_eq!(
        (clear(h1), clear(h2)),
        (c1, c2),
        "traffic leaked in clear with the peer down"
    );

    // Removing weftnet: uninstall on node2 (its daemon is gone), stop for good on
    // node1. The VPC path is back, in clear, and aws-node's config is untouched.
    let path = |p: &Path| p.display().to_string();
    let out = n2.d.cli(&[
        "uninstall".to_string(),
        "--config".into(),
        path(n2.d.config_path()),
        "--state-dir".into(),
        path(n2.d.state_dir()),
        "--cni-bin-dir".into(),
        path(&n2.cni.join("bin")),
        "--cni-conf-dir".into(),
        path(&n2.cni.join("net.d")),
        "--cni-data-dir".into(),
        path(&n2.cni.join("data")),
    ]);
    assert!(out.status.success(), "uninstall: {}", describe(&out));
    assert!(n1.d.stop_for_good().success(), "{}", n1.d.logs());
    for n in [&n1, &n2] {
        assert!(
            !n.chained_conflist().exists(),
            "{}: chained conflist left",
            n.name
        );
        assert!(n.cni.join("net.d").join("10-aws.conflist").exists());
        assert!(
            !n.rules().contains("lookup 51820"),
            "{}: rules left: {}",
            n.name,
            n.rules()
        );
        assert_eq!(n.table().trim(), "", "{}: table 51820 left", n.name);
    }
    let c1 = clear(h1);
    assert!(pings(&a1, &b1.ip, 3), "plain VPC routing is not back");
    assert!(clear(h1) > c1, "the VPC path carries pod addresses again");
}

/// Where the nodes of the multicast test serve their metrics (in their namespaces).
const METRICS: &str = "127.0.0.1:9479";

/// The outside host's block (in its certificate), off the VPC and the underlay.
const HOST_BLOCK: &str = "10.99.7.0/24";

/// Counters on a host's underlay interface: packets carrying a pod address or an
/// address of [`HOST_BLOCK`] (clear text), and UDP to port 51820.
fn install_outside_counters(ns: &Netns) {
    let script = format!(
        "table inet out {{\n counter clear {{}}\n counter wg {{}}\n\
         chain c {{\n\
           ip saddr {{ {PODS}, {HOST_BLOCK} }} counter name clear accept\n\
           ip daddr {{ {PODS}, {HOST_BLOCK} }} counter name clear accept\n\
           udp dport 51820 counter name wg accept\n\
         }}\n\
         chain pre {{ type filter hook prerouting priority -300; iifname \"eth0\" jump c; }}\n\
         chain post {{ type filter hook postrouting priority 300; oifname \"eth0\" jump c; }}\n\
         }}\n"
    );
    let mut cmd = ns.command("nft", &["-f", "-"]);
    let out = run_bounded(&mut cmd, Some(script.as_bytes()), EXEC_TIMEOUT);
    assert!(out.status.success(), "nft: {}", describe(&out));
}

fn outside_counter(ns: &Netns, name: &str) -> u64 {
    let text = ns.run("nft", &["list", "counter", "inet", "out", name]);
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {text}"))
}

#[test]
fn a_certified_host_outside_the_cluster_and_chained_pods() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("chained-outside");
    let (h1, h2, vpc) = (u.host(0), u.host(1), u.host(2));
    let ca = dir.path().join("ca");
    ca_init(&ca);
    let ca_crt = ca.join("ca.crt").display().to_string();
    let ca_arg = format!("--ca-file={ca_crt}");
    let (api, n1, n2) =
        start_beside_vpc(h1, h2, vpc, dir.path(), &["--require-encryption", &ca_arg]);
    // As in a VPC, anything else leaves the nodes toward the VPC (here its host): a
    // packet for the host's block that weftnet did not take would show there.
    for h in [h1, h2] {
        h.ip(&[
            "route",
            "replace",
            "default",
            "via",
            &vpc.underlay_v4().to_string(),
        ]);
    }
    // The outside host runs on the VPC host, which routes the pods' addresses to
    // their nodes in clear (`route_vpc`): weftnet's routes must win.
    let (private, public) = keypair();
    let cert = ca_sign(&ca, "ec2-a", &public, &[HOST_BLOCK], dir.path());
    let secret = dir.path().join("secret").display().to_string();
    let seed = format!("{}:51820", h1.underlay_v4());
    let mut host = Daemon::start_with_key(
        vpc,
        &private,
        &[
            "--name",
            "ec2-a",
            "--secret-file",
            &secret,
            "--ca-file",
            &ca_crt,
            "--cert-file",
            &cert,
            "--block",
            HOST_BLOCK,
            "--pod-range",
            PODS,
            "--join",
            &seed,
        ],
        "",
    );
    for n in [&n1, &n2] {
        n.wait_for_conflist();
    }
    let pods = [n1.add_pod(&api, "oa"), n2.add_pod(&api, "ob")];
    for ns in [h1, h2, vpc] {
        install_outside_counters(ns);
    }
    let routed = format!("{HOST_BLOCK} dev weft0");
    let took = wait_for("the nodes and the host route each other", BOUND, || {
        for n in [&n1, &n2] {
            let t = n.table();
            if !t.contains(&routed) {
                return Err(format!("{}: table 51820: {t}", n.name));
            }
        }
        let main = vpc.ip(&["route", "show"]);
        for p in &pods {
            if !main.contains(&format!("{} dev weft0", p.ip)) {
                return Err(format!("the host does not route {}: {main}", p.ip));
            }
        }
        Ok(())
    });
    eprintln!("the host and the chained nodes route each other after {took:?}");

    let host_ip = common::mesh::first_host(HOST_BLOCK).to_string();
    for p in &pods {
        watch_arrivals(p, &host_ip);
        let ok = wait_until(Duration::from_secs(15), || {
            let out = vpc.exec(
                "ping",
                &[
                    "-c", "2", "-i", "0.2", "-W", "1", "-q", "-I", &host_ip, &p.ip,
                ],
            );
            out.status.success()
        });
        assert!(ok, "the host cannot reach pod {}", p.ip);
        let seen = {
            let text = p.ns.run("nft", &["list", "counter", "ip", "seen", "echo"]);
            text.split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert!(seen > 0, "pod {} saw no echo from {host_ip}", p.ip);
        assert!(pings(p, &host_ip, 3), "pod {} cannot reach the host", p.ip);
    }
    for ns in [h1, h2, vpc] {
        assert_eq!(
            outside_counter(ns, "clear"),
            0,
            "a pod's or the host's address crossed the underlay in clear"
        );
    }
    assert!(
        outside_counter(vpc, "wg") > 0,
        "no tunnel traffic at the host"
    );

    // The host and the pods are members of one group: the host joins on weft0, pod
    // oa on its eth0; TTL-1 traffic from pod ob reaches both, and the host's reaches
    // oa. Nothing of the group crosses the underlay in clear.
    let host_rx = vpc.spawn(
        "socat",
        &[
            "-u",
            &format!("UDP4-RECV:{UDP_PORT},ip-add-membership={GROUP_H}:weft0"),
            "STDOUT",
        ],
    );
    let pod_rx = pod_group_receiver(&pods[0].ns, GROUP_H);
    let host_key = host.public_key();
    wait_for("the group known both ways", JOIN_BOUND, || {
        let on_node = member_groups(&n2.d.status_json(), &host_key);
        let on_host = member_groups(&host.status_json(), &n1.d.public_key());
        if on_node.iter().any(|g| g == GROUP_H) && on_host.iter().any(|g| g == GROUP_H) {
            Ok(())
        } else {
            Err(format!(
                "node2 sees the host in {on_node:?}, the host sees node1 in {on_host:?}"
            ))
        }
    });
    pod_group_send(&pods[1].ns, &pods[1].ip, GROUP_H, "pod", 5);
    pod_group_send(vpc, &host_ip, GROUP_H, "host", 5);
    let lines = |rx: &Proc, tag: &str| {
        rx.stdout()
            .lines()
            .filter(|l| l.starts_with(&format!("{tag} ")))
            .count()
    };
    assert!(
        wait_until(DELIVERY, || lines(&host_rx, "pod") == 5
            && lines(&pod_rx, "host") == 5),
        "group traffic: the host got {} of 5 from pod ob, pod oa {} of 5 from the host",
        lines(&host_rx, "pod"),
        lines(&pod_rx, "host")
    );
    assert_eq!(
        lines(&pod_rx, "pod"),
        5,
        "pod oa got pod ob's group traffic"
    );
    for ns in [h1, h2, vpc] {
        assert_eq!(
            outside_counter(ns, "clear"),
            0,
            "group traffic crossed the underlay in clear"
        );
    }

    // --require-encryption: the host leaves for good; its route goes, a blackhole
    // for its block stays, and nothing goes toward it in clear.
    assert!(host.stop_for_good().success(), "{}", host.logs());
    let hole = format!("blackhole {HOST_BLOCK}");
    for n in [&n1, &n2] {
        wait_for(
            &format!("{}: the host's block blackholed", n.name),
            BOUND,
            || {
                let t = n.table();
                (!t.contains(&routed) && t.contains(&hole))
                    .then_some(())
                    .ok_or(t)
            },
        );
    }
    for p in &pods {
        assert!(!pings(p, &host_ip, 3), "the host answered after it left");
    }
    for ns in [h1, h2] {
        assert_eq!(
            outside_counter(ns, "clear"),
            0,
            "traffic to the host's block left a node in clear"
        );
    }
}

const GROUP: &str = "239.1.1.1";
const GROUP_B: &str = "239.2.2.2";
/// The group the host outside the cluster shares with the pods.
const GROUP_H: &str = "239.3.3.3";

/// Counts, in the pod's own namespace, every packet arriving for `group` (the frame
/// reached its link, whether or not a socket takes it).
fn watch_group(pod: &Pod, group: &str) {
    let script = format!(
        "table ip mc {{\n counter g {{}}\n chain pre {{\n type filter hook prerouting priority -300;\n\
         ip daddr {group} counter name g\n }}\n}}\n"
    );
    let mut cmd = pod.ns.command("nft", &["-f", "-"]);
    let out = run_bounded(&mut cmd, Some(script.as_bytes()), EXEC_TIMEOUT);
    assert!(out.status.success(), "nft: {}", describe(&out));
}

/// Sends one datagram "`tag`" to `group` from the pod with the source address
/// `source` (not the pod's), TTL 1, through a raw socket.
fn forge(pod: &Pod, source: &str, group: &str, tag: &str) {
    let script = format!(
        "import socket, struct\n\
         payload = b'{tag}\\n'\n\
         udp = struct.pack('!HHHH', {UDP_PORT}, {UDP_PORT}, 8 + len(payload), 0) + payload\n\
         ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0x4000, 1, 17, 0,\n\
             socket.inet_aton('{source}'), socket.inet_aton('{group}'))\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)\n\
         s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton('{}'))\n\
         s.sendto(ip + udp, ('{group}', 0))\n",
        pod.ip
    );
    expect_success(
        "forged send",
        run_bounded(
            &mut pod.ns.command("python3", &["-c", &script]),
            None,
            EXEC_TIMEOUT,
        ),
    );
}

fn received(rx: &Proc, tag: &str) -> usize {
    rx.stdout().lines().filter(|l| l.starts_with(tag)).count()
}

/// The groups `node` lists for member `other`.
fn groups_of(node: &ChainedNode, other: &ChainedNode) -> Vec<String> {
    member_groups(&node.d.status_json(), &other.d.public_key())
}

/// Waits until `node` lists (or no longer lists) `group` for `other`.
fn wait_listed(node: &ChainedNode, other: &ChainedNode, group: &str, listed: bool) {
    let bound = if listed { JOIN_BOUND } else { LEAVE_BOUND };
    let what = format!("{} lists {group} for {}: {listed}", node.name, other.name);
    wait_for(&what, bound, || {
        let g = groups_of(node, other);
        (g.iter().any(|x| x == group) == listed)
            .then_some(())
            .ok_or(format!("{g:?}"))
    });
}

/// `(tx_packets, tx_copies, rx_packets)` of `group` on `node`.
fn group_counters(node: &ChainedNode, group: &str) -> (u64, u64, u64) {
    let st = node.d.status_json();
    let g = st["multicast"]["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["group"] == group).cloned())
        .unwrap_or(Value::Null);
    let n = |k: &str| g[k].as_u64().unwrap_or(0);
    (n("tx_packets"), n("tx_copies"), n("rx_packets"))
}

#[test]
fn multicast_between_chained_pods() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("chained-mc");
    let (h1, h2, vpc) = (u.host(0), u.host(1), u.host(2));
    let (api, n1, n2) = start_beside_vpc(h1, h2, vpc, dir.path(), &["--metrics", METRICS]);
    let nodes = [h1.underlay_v4().to_string(), h2.underlay_v4().to_string()];
    for h in [h1, h2] {
        install_counters(h, &nodes);
    }
    for n in [&n1, &n2] {
        n.wait_for_conflist();
    }
    // a1 sends; a2 (same node) and b1 join GROUP; b2 joins only GROUP_B.
    let a1 = n1.add_pod(&api, "a1");
    let a2 = n1.add_pod(&api, "a2");
    let b1 = n2.add_pod(&api, "b1");
    let b2 = n2.add_pod(&api, "b2");
    wait_for("node1 routes b1", BOUND, || {
        let t = n1.table();
        t.contains(&format!("{} dev weft0", b1.ip))
            .then_some(())
            .ok_or(t)
    });
    assert!(
        pings(&a1, &b1.ip, 3),
        "a1 cannot ping b1 through the tunnel"
    );
    for p in [&a2, &b1, &b2] {
        watch_group(p, GROUP);
    }
    let rx_a2 = pod_group_receiver(&a2.ns, GROUP);
    let mut rx_b1 = pod_group_receiver(&b1.ns, GROUP);
    let rx_b2 = pod_group_receiver(&b2.ns, GROUP_B);
    wait_listed(&n1, &n2, GROUP, true);
    wait_listed(&n1, &n2, GROUP_B, true);
    wait_listed(&n2, &n1, GROUP, true);
    // The pods' own veths are the members (the reports were read there).
    wait_for("node2 knows its pod veths", BOUND, || {
        let p = n2.d.status_json()["pod_ports"].clone();
        (p["ports"].as_u64() == Some(2))
            .then_some(())
            .ok_or(p.to_string())
    });

    let group = |h: &Host| counter(h, "cap", "group");
    let clear = |h: &Host| counter(h, "cap", "clear");
    let (c1, c2) = (clear(h1), clear(h2));
    const N: u32 = 10;
    pod_group_send(&a1.ns, &a1.ip, GROUP, "a", N);
    pod_group_send(&a1.ns, &a1.ip, GROUP_B, "b", 5);
    let ok = wait_until(DELIVERY, || {
        received(&rx_b1, "a") >= N as usize
            && received(&rx_a2, "a") >= N as usize
            && received(&rx_b2, "b") >= 5
    });
    assert!(
        ok,
        "b1 got {} ({} at its link), a2 got {} ({} at its link), b2 got {} of GROUP_B\nnode1: {}\nnode2: {}",
        received(&rx_b1, "a"),
        counter(&b1.ns, "mc", "g"),
        received(&rx_a2, "a"),
        counter(&a2.ns, "mc", "g"),
        received(&rx_b2, "b"),
        n1.d.status_json(),
        n2.d.status_json()
    );
    assert_eq!(
        counter(&b2.ns, "mc", "g"),
        0,
        "b2, no member of {GROUP}, got frames of it"
    );
    // One encrypted copy per packet, to node2 only; node2 took them all.
    assert_eq!(group_counters(&n1, GROUP), (N as u64, N as u64, 0));
    assert_eq!(group_counters(&n2, GROUP).2, N as u64);
    let pods2 = n2.d.status_json()["pod_ports"].clone();
    assert!(
        pods2["tx_frames"].as_u64().unwrap_or(0) >= (N + 5) as u64,
        "{pods2}"
    );
    assert_eq!(pods2["foreign_source"], 0, "{pods2}");

    // a2 sends to GROUP_B as a1 (a raw socket forging the source): dropped at a2's
    // veth and counted, b2 gets nothing.
    let foreign = |n: &ChainedNode| n.d.status_json()["pod_ports"]["foreign_source"].as_u64();
    let before = foreign(&n1).unwrap_or(0);
    forge(&a2, &a1.ip, GROUP_B, "spoof");
    wait_for("node1 counts the forged source", BOUND, || {
        let n = foreign(&n1).unwrap_or(0);
        (n > before).then_some(()).ok_or(n.to_string())
    });
    // The metrics carry the same pod port counters as the status.
    let status = n1.d.status_json()["pod_ports"].clone();
    let (code, body) = http_get(n1.ns(), METRICS, "/metrics");
    assert_eq!(code, 200, "GET /metrics: {body}");
    let sample = |series: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
    };
    assert_eq!(sample("weftnet_pod_ports"), 2, "{body}");
    assert_eq!(
        Some(sample("weftnet_pod_port_foreign_source_packets_total")),
        status["foreign_source"].as_u64(),
        "status: {status}"
    );
    assert!(sample("weftnet_pod_port_rx_frames_total") > 0, "{body}");
    pod_group_send(&a1.ns, &a1.ip, GROUP_B, "e", 1);
    assert!(wait_until(DELIVERY, || received(&rx_b2, "e") >= 1));
    assert_eq!(
        received(&rx_b2, "spoof"),
        0,
        "a forged source crossed the mesh"
    );

    // b1 leaves: node2 stops announcing the group, copies stop; a2 still gets them.
    let b1_seen = counter(&b1.ns, "mc", "g");
    rx_b1.terminate(Duration::from_secs(2));
    wait_listed(&n1, &n2, GROUP, false);
    let before = group_counters(&n1, GROUP);
    pod_group_send(&a1.ns, &a1.ip, GROUP, "c", 5);
    assert!(
        wait_until(DELIVERY, || received(&rx_a2, "c") >= 5),
        "a2 got {} after b1 left",
        received(&rx_a2, "c")
    );
    let after = group_counters(&n1, GROUP);
    assert_eq!(after.0 - before.0, 5, "{before:?} -> {after:?}");
    assert_eq!(after.1, before.1, "copies to node2 after b1 left");
    assert_eq!(group_counters(&n2, GROUP).2, N as u64);
    assert_eq!(
        counter(&b1.ns, "mc", "g"),
        b1_seen,
        "b1 got frames after leaving"
    );

    // A restart of node1 (SIGTERM, as in an upgrade): the new run queries every pod
    // veth as it learns it, so a2 is a member again within its answer's delay (10 s
    // at most), well before the querier's second startup query (31 s).
    let mut n1 = n1;
    n1.d.restart();
    wait_for(
        "node1 relearns a2's membership",
        Duration::from_secs(20),
        || {
            let local = n1.d.status_json()["multicast"]["local_groups"].clone();
            let member = local
                .as_array()
                .is_some_and(|gs| gs.iter().any(|g| g == GROUP));
            member.then_some(()).ok_or(local.to_string())
        },
    );
    pod_group_send(&a1.ns, &a1.ip, GROUP, "d", 5);
    assert!(
        wait_until(DELIVERY, || received(&rx_a2, "d") >= 5),
        "a2 got {} after node1's restart",
        received(&rx_a2, "d")
    );

    // Nothing of it crossed the underlay in clear.
    assert_eq!(
        (group(h1), group(h2)),
        (0, 0),
        "group traffic on the underlay"
    );
    assert_eq!(
        (clear(h1), clear(h2)),
        (c1, c2),
        "pod addresses crossed the underlay in clear"
    );
    drop((a1, a2, b1, b2));
}
