//! End-to-end tests of bridge mode (`--bridge weftbr0`): "pods" (namespaces with a veth on
//! the node's bridge) on three nodes reach each other through the encrypted mesh, the node
//! itself reaches remote pods, and TTL-1 multicast from a pod reaches subscribed pods on the
//! other nodes only, and stops after they leave. Blocks are given (`--block`) or claimed
//! from `--range`. Run as root (`cargo test --test bridge`); everything lives in namespaces.

mod common;

use common::mesh::*;
use common::*;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

const BRIDGE: &str = "weftbr0";
/// Joined by pods on nodes 2 and 3.
const GROUP: &str = "239.1.2.3";
/// Joined by a pod on node 2 only.
const GROUP_B: &str = "239.1.2.4";

/// A pod: a namespace with `eth0` (a veth whose peer is on the node's bridge).
struct Pod {
    ns: Netns,
    addr: Ipv4Addr,
}

/// The first address of `block` ("10.244.1.0/24") plus `n`.
fn host_in(block: &str, n: u32) -> Ipv4Addr {
    let net: Ipv4Addr = block.split('/').next().unwrap().parse().unwrap();
    Ipv4Addr::from(u32::from(net) + n)
}

/// A pod at `block`+`n` on `node`'s bridge, default route via the block's gateway.
fn pod(node: &Node, block: &str, n: u32) -> Pod {
    let ns = Netns::new("pod");
    let port = format!("vp{n}");
    ns.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        &port,
        "netns",
        node.d.netns().name(),
    ]);
    node.d
        .netns()
        .ip(&["link", "set", &port, "master", BRIDGE, "up"]);
    let addr = host_in(block, n);
    ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        &host_in(block, 1).to_string(),
    ]);
    Pod { ns, addr }
}

/// Three nodes in bridge mode on `u` (see [`common::mesh::start_mesh`]); node `i`
/// gets `args(i)` besides `--bridge`.
fn start_nodes(u: &Underlay, dir: &Path, args: impl Fn(usize) -> Vec<String>) -> Vec<Node> {
    start_mesh(u.hosts(), dir, |i| {
        let mut a = vec!["--bridge".to_string(), BRIDGE.to_string()];
        a.extend(args(i));
        a
    })
}

fn block_of(node: &Node) -> String {
    node.d.status_json()["cluster"]["block"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no block", node.name))
        .to_owned()
}

/// Ping with a bound; panics with both nodes' status on failure.
fn must_ping(from: &Netns, to: Ipv4Addr, what: &str, nodes: &[Node]) {
    let ok = wait_until(Duration::from_secs(15), || ping(from, to, 2));
    if !ok {
        let st: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}: {:#}\n{}", n.name, n.d.status_json(), n.d.logs()))
            .collect();
        panic!("{what}: no ping replies from {to}\n{}", st.join("\n"));
    }
}

fn counters(node: &Node, group: &str) -> (u64, u64, u64) {
    let st = node.d.status_json();
    let g = st["multicast"]["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["group"] == group).cloned())
        .unwrap_or(Value::Null);
    let n = |k: &str| g[k].as_u64().unwrap_or(0);
    (n("tx_packets"), n("tx_copies"), n("rx_packets"))
}

/// The groups `node` lists for member `other`.
fn groups_of(node: &Node, other: &Node) -> Vec<String> {
    member_groups(&node.d.status_json(), &other.key)
}

fn received(rx: &Proc, tag: &str) -> usize {
    rx.stdout().lines().filter(|l| l.starts_with(tag)).count()
}

/// Waits until `member` is listed with `group` by every node in `others`.
fn wait_listed(member: &Node, group: &str, others: &[&Node], listed: bool) {
    let bound = if listed { JOIN_BOUND } else { LEAVE_BOUND };
    wait_for(
        &format!("{} {group} listed={listed}", member.name),
        bound,
        || {
            for o in others {
                let g = groups_of(o, member);
                if g.iter().any(|x| x == group) != listed {
                    return Err(format!("{} lists {g:?} for {}", o.name, member.name));
                }
            }
            Ok(())
        },
    );
}

#[test]
fn pods_behind_bridges_with_given_blocks() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("bridge");
    let nodes = start_nodes(&u, dir.path(), |i| {
        vec!["--block".into(), format!("10.244.{}.0/24", i + 1)]
    });
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    let blocks: Vec<String> = (1..=3).map(|i| format!("10.244.{i}.0/24")).collect();
    let pods: Vec<[Pod; 2]> = nodes
        .iter()
        .zip(&blocks)
        .map(|(n, b)| [pod(n, b, 10), pod(n, b, 11)])
        .collect();

    // Unicast: pod to remote pods, and the node itself to a remote pod.
    must_ping(&pods[0][0].ns, pods[1][0].addr, "pod n1 -> pod n2", &nodes);
    must_ping(&pods[0][0].ns, pods[2][1].addr, "pod n1 -> pod n3", &nodes);
    must_ping(n1.d.netns(), pods[1][1].addr, "node n1 -> pod n2", &nodes);
    let route = n1.d.netns().ip(&["route", "show", "10.244.2.0/24"]);
    assert!(route.contains("src 10.244.1.1"), "route: {route}");

    // TTL-1 multicast from a pod on n1 to pods on n2 and n3; GROUP_B only on n2.
    let rx2 = pod_group_receiver(&pods[1][0].ns, GROUP);
    let mut rx3 = pod_group_receiver(&pods[2][0].ns, GROUP);
    let rx2b = pod_group_receiver(&pods[1][1].ns, GROUP_B);
    wait_listed(n2, GROUP, &[n1, n3], true);
    wait_listed(n3, GROUP, &[n1, n2], true);
    wait_listed(n2, GROUP_B, &[n1, n3], true);
    const N: u32 = 10;
    pod_group_send(&pods[0][0].ns, pods[0][0].addr, GROUP, "a", N);
    pod_group_send(&pods[0][1].ns, pods[0][1].addr, GROUP_B, "b", N);
    let ok = wait_until(DELIVERY, || {
        received(&rx2, "a") >= N as usize
            && received(&rx3, "a") >= N as usize
            && received(&rx2b, "b") >= N as usize
    });
    assert!(
        ok,
        "n2 got {}, n3 got {}, n2/B got {}\n{}",
        received(&rx2, "a"),
        received(&rx3, "a"),
        received(&rx2b, "b"),
        n1.d.logs()
    );
    assert_eq!(counters(n1, GROUP), (N as u64, 2 * N as u64, 0));
    // Pruning: one copy per packet for GROUP_B, none reaches n3.
    assert_eq!(counters(n1, GROUP_B), (N as u64, N as u64, 0));
    assert_eq!(counters(n3, GROUP_B).2, 0, "n3 got copies of {GROUP_B}");
    let l2 = &n2.d.status_json()["l2"];
    assert!(
        l2["tx_frames"].as_u64().unwrap_or(0) >= 2 * N as u64,
        "{l2}"
    );

    // After the receivers leave, copies stop.
    rx3.terminate(Duration::from_secs(2));
    wait_listed(n3, GROUP, &[n1, n2], false);
    let before = counters(n1, GROUP);
    pod_group_send(&pods[0][0].ns, pods[0][0].addr, GROUP, "c", 5);
    let after = counters(n1, GROUP);
    assert_eq!(
        after.1 - before.1,
        5,
        "copies after n3 left: {before:?} -> {after:?}"
    );
    assert!(wait_until(DELIVERY, || received(&rx2, "c") >= 5));
    assert_eq!(
        counters(n3, GROUP).2,
        N as u64,
        "n3 got copies after leaving"
    );
    drop(pods);
}

#[test]
fn pods_behind_bridges_with_claimed_blocks() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("bridge");
    let mut nodes = start_nodes(&u, dir.path(), |_| vec!["--range".into(), RANGE.into()]);
    let blocks: Vec<String> = nodes.iter().map(block_of).collect();
    let pods: Vec<Pod> = nodes
        .iter()
        .zip(&blocks)
        .map(|(n, b)| pod(n, b, 10))
        .collect();
    must_ping(&pods[0].ns, pods[1].addr, "pod n1 -> pod n2", &nodes);
    must_ping(&pods[2].ns, pods[0].addr, "pod n3 -> pod n1", &nodes);
    must_ping(
        nodes[1].d.netns(),
        pods[2].addr,
        "node n2 -> pod n3",
        &nodes,
    );

    // The gateway is on the bridge with the block's length; the range goes into weft0.
    let n1 = &nodes[0];
    let gw = format!("{}/24", host_in(&blocks[0], 1));
    let addrs = n1.d.netns().ip(&["-4", "addr", "show", "dev", BRIDGE]);
    assert!(addrs.contains(&gw), "{BRIDGE}: {addrs}");
    let routes = n1.d.netns().ip(&["route", "show", RANGE]);
    assert!(
        routes.contains("dev weft0") && routes.contains("unreachable"),
        "{routes}"
    );

    // At a stop for a restart (SIGTERM, of n2: it joins through n1 again when
    // restarted) the L2 port goes; weft0 with its route, the bridge and the
    // unreachable guard stay.
    let ns = nodes[1].d.netns().clone();
    nodes[1].d.stop();
    assert!(!ns.has_link("weft0-l2") && ns.has_link(BRIDGE) && ns.has_link("weft0"));
    let routes = ns.ip(&["route", "show", RANGE]);
    assert!(
        routes.contains("unreachable") && routes.contains("dev weft0"),
        "{routes}"
    );
    // Pod traffic to the range now fails on the node (weft0 has no reader) instead of
    // leaving it.
    assert!(!ping(&pods[1].ns, pods[0].addr, 1));
    // Restarted, the node reuses the bridge (pods keep their veths) and its saved block.
    nodes[1].d.start_again();
    assert_eq!(block_of(&nodes[1]), blocks[1]);
    must_ping(
        &pods[1].ns,
        pods[0].addr,
        "pod n2 -> pod n1 after restart",
        &nodes,
    );
}

/// `weftnet up` in bridge mode in `ns` with `/proc/sys` mounted read-only, as in an
/// unprivileged DaemonSet pod; its state in `state`.
fn up_with_read_only_proc_sys(ns: &Netns, state: &Path, secret: &Path) -> Proc {
    let script = format!(
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys /proc/sys \
         && ! sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward' 2>/dev/null \
         && exec {} up --state-dir {} --secret-file {} --block 10.250.1.0/24 --bridge {BRIDGE} --advertise-address 192.0.2.10",
        Daemon::bin(),
        state.display(),
        secret.display()
    );
    let mut cmd = ns.command("unshare", &["-m", "sh", "-c", &script]);
    hermetic_env(&mut cmd);
    ns.spawn_cmd(cmd, None)
}

#[test]
fn a_read_only_proc_sys_works_when_forwarding_is_on_already() {
    let ns = Netns::new("rosys");
    let dir = temp_dir("rosys");
    let secret = gensecret(dir.path(), "secret");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let status = |state: &Path| {
        let mut cmd = ns.command(
            Daemon::bin(),
            &["status".as_ref(), "--state-dir".as_ref(), state.as_os_str()]
                as &[&std::ffi::OsStr],
        );
        hermetic_env(&mut cmd);
        run_bounded(&mut cmd, None, Duration::from_secs(5))
            .status
            .success()
    };

    // Forwarding off and /proc/sys read-only: one clear error, nothing left behind.
    ns.sysctl(&[("net.ipv4.ip_forward", "0")]);
    let mut p = up_with_read_only_proc_sys(&ns, &state, &secret);
    let exit = p
        .wait_timeout(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running with forwarding off:\n{}", p.logs()));
    assert!(!exit.success(), "{}", p.logs());
    assert!(
        p.stderr().contains("cannot turn on forwarding")
            && p.stderr().contains("turn it on before weftnet starts"),
        "{}",
        p.logs()
    );
    assert_eq!(ns.links(), vec!["lo".to_owned()], "nothing left behind");

    // Forwarding on beforehand: nothing is written, and the node starts.
    ns.sysctl(&[("net.ipv4.ip_forward", "1")]);
    let mut p = up_with_read_only_proc_sys(&ns, &state, &secret);
    let up = wait_until(Duration::from_secs(20), || {
        status(&state) || !p.is_running()
    });
    assert!(up && p.is_running(), "did not start:\n{}", p.logs());
    assert!(
        ns.has_link(BRIDGE) && ns.has_link("weft0"),
        "{:?}",
        ns.links()
    );
    p.signal(libc::SIGINT);
    let exit = p.wait_timeout(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "{}", p.logs());
}
