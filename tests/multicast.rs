//! End-to-end tests of multicast over a gossip mesh: a process that joins a group on `weft0`
//! receives what processes on other nodes send to that group on their `weft0` (TTL / hop
//! limit 1 included), only nodes with a member get a copy, leaves stop the copies, filters
//! hold, and unmodified multicast tools (socat, iperf 2, mcfirst) work.
//! Run as root (`cargo test --test multicast`); everything is created inside namespaces.
//!
//! Every wait is bounded; measured times are printed.

mod common;

use common::mesh::*;
use common::*;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

const GROUP: &str = "239.1.1.1";
const GROUP6: &str = "ff05::1:3";

/// A range-mode mesh `n1..` on `hosts` (see [`common::mesh::start_mesh`]), node `i`
/// started with `--range` plus `extra(i)`.
fn start_range_mesh(hosts: &[Host], dir: &Path, extra: impl Fn(usize) -> Vec<String>) -> Vec<Node> {
    start_mesh(hosts, dir, |i| {
        let mut a = vec!["--range".to_string(), RANGE.to_string()];
        a.extend(extra(i));
        a
    })
}

impl Node {
    fn ns(&self) -> &Netns {
        self.d.netns()
    }

    fn status(&self) -> Value {
        self.d.status_json()
    }

    /// The overlay address of the claimed block (its first host).
    fn addr(&self) -> Ipv4Addr {
        let st = self.status();
        let block = st["cluster"]["block"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no block: {st:#}", self.name))
            .to_owned();
        let net: Ipv4Addr = block.split('/').next().unwrap().parse().unwrap();
        Ipv4Addr::from(u32::from(net) + 1)
    }

    /// The groups this node lists for member `other` (empty if not listed).
    fn groups_of(&self, other: &Node) -> Vec<String> {
        member_groups(&self.status(), &other.key)
    }

    /// This node's counters for `group` (all 0 if it has none).
    fn counters(&self, group: &str) -> GroupCounters {
        GroupCounters::of(&self.status(), group)
    }

    /// `drops.<name>` (0 if absent).
    fn drop_count(&self, name: &str) -> u64 {
        self.status()["drops"][name].as_u64().unwrap_or(0)
    }

    /// Wait until this node lists `group` as a local group and `others` list it for this node.
    fn wait_joined(&self, group: &str, others: &[&Node]) -> Duration {
        wait_for(
            &format!("{} joining {group}", self.name),
            JOIN_BOUND,
            || {
                let local = self.status()["multicast"]["local_groups"].clone();
                if !json_has(&local, group) {
                    return Err(format!("{} local_groups: {local}", self.name));
                }
                for o in others {
                    let g = o.groups_of(self);
                    if !g.iter().any(|x| x == group) {
                        return Err(format!("{} lists {:?} for {}", o.name, g, self.name));
                    }
                }
                Ok(())
            },
        )
    }
}

fn json_has(v: &Value, s: &str) -> bool {
    v.as_array().is_some_and(|a| a.iter().any(|x| x == s))
}

/// `multicast.groups[]` entry of one group.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct GroupCounters {
    tx_packets: u64,
    tx_copies: u64,
    rx_packets: u64,
    drops: u64,
}

impl GroupCounters {
    fn of(st: &Value, group: &str) -> GroupCounters {
        let Some(g) = st["multicast"]["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["group"] == group))
        else {
            return GroupCounters::default();
        };
        let n = |k: &str| g[k].as_u64().unwrap_or(0);
        GroupCounters {
            tx_packets: n("tx_packets"),
            tx_copies: n("tx_copies"),
            rx_packets: n("rx_packets"),
            drops: n("drops"),
        }
    }
}

/// Packets written into `node`'s weft0 by weftnet (the TUN's rx counter).
fn weft0_rx_packets(node: &Node) -> u64 {
    let out = node
        .ns()
        .run("cat", &["/sys/class/net/weft0/statistics/rx_packets"]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: bad rx_packets {out:?}: {e}", node.name))
}

/// A socat receiver joined to `group` on weft0 (IPv6 if the group contains ':'), printing
/// every datagram to its stdout.
fn receiver(node: &Node, group: &str) -> Proc {
    let addr = if group.contains(':') {
        format!("UDP6-RECV:{UDP_PORT},ipv6-join-group=[{group}]:weft0")
    } else {
        format!("UDP4-RECV:{UDP_PORT},ip-add-membership={group}:weft0")
    };
    node.ns().spawn("socat", &["-u", &addr, "STDOUT"])
}

/// Send one datagram `payload` to `group` from `node`'s weft0 with TTL / hop limit 1.
/// IPv4 with socat; IPv6 with python3, as socat 1.7.4 (Debian 12) has no
/// ipv6-multicast-if / ipv6-multicast-hops options.
fn send(node: &Node, group: &str, payload: &str) {
    let out = if group.contains(':') {
        let script = "import socket, sys\n\
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex('weft0'))\n\
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)\n\
            s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))\n";
        node.ns().exec(
            "python3",
            &["-c", script, group, &UDP_PORT.to_string(), payload],
        )
    } else {
        let dst = format!(
            "UDP4-DATAGRAM:{group}:{UDP_PORT},ip-multicast-if={},ip-multicast-ttl=1",
            node.addr()
        );
        let mut cmd = node.ns().command("socat", &["-u", "STDIN", &dst]);
        run_bounded(&mut cmd, Some(payload.as_bytes()), EXEC_TIMEOUT)
    };
    expect_success("multicast send", out);
}

/// Send `count` numbered lines `"{tag} {i}\n"` (i in `from..from+count`), 30 ms apart.
fn send_numbered(node: &Node, group: &str, tag: &str, from: u32, count: u32) {
    for i in from..from + count {
        send(node, group, &format!("{tag} {i}\n"));
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// The numbered lines with `tag` a receiver printed, in arrival order.
fn received(rx: &Proc, tag: &str) -> Vec<u32> {
    rx.stdout()
        .lines()
        .filter_map(|l| l.strip_prefix(tag)?.trim().parse().ok())
        .collect()
}

/// Wait until `rx` printed exactly `want` (in any order, no duplicates), then a little
/// longer to catch late duplicates.
fn assert_received(who: &str, rx: &Proc, tag: &str, want: &[u32]) {
    let mut sorted_want = want.to_vec();
    sorted_want.sort_unstable();
    let ok = wait_until(DELIVERY, || received(rx, tag).len() >= want.len());
    std::thread::sleep(Duration::from_millis(300));
    let mut got = received(rx, tag);
    got.sort_unstable();
    assert!(
        ok && got == sorted_want,
        "{who}: received {got:?}, want {sorted_want:?}\n{}",
        rx.logs()
    );
}

#[test]
fn ttl1_reaches_subscribed_nodes_only() {
    let u = Underlay::bridge(4);
    let dir = temp_dir("mcast");
    let nodes = start_range_mesh(u.hosts(), dir.path(), |_| vec![]);
    let [n1, n2, n3, n4] = [&nodes[0], &nodes[1], &nodes[2], &nodes[3]];
    let rx2 = receiver(n2, GROUP);
    let rx3 = receiver(n3, GROUP);
    let t2 = n2.wait_joined(GROUP, &[n1, n3, n4]);
    let t3 = n3.wait_joined(GROUP, &[n1, n2, n4]);
    eprintln!("joins seen everywhere after {t2:?} / {t3:?}");
    assert!(
        n1.groups_of(n4).is_empty()
            && n4.status()["multicast"]["local_groups"] == serde_json::json!([])
    );

    const N: u32 = 20;
    let if_rx_before = [n2, n4].map(weft0_rx_packets);
    send_numbered(n1, GROUP, "ttl1", 0, N);
    let want: Vec<u32> = (0..N).collect();
    assert_received("n2", &rx2, "ttl1", &want);
    assert_received("n3", &rx3, "ttl1", &want);

    let c1 = n1.counters(GROUP);
    assert_eq!(c1.tx_packets, N as u64, "n1 {c1:?}");
    assert_eq!(c1.tx_copies, 2 * N as u64, "n1 {c1:?}");
    for n in [n2, n3] {
        let c = n.counters(GROUP);
        assert_eq!(c.rx_packets, N as u64, "{} {c:?}", n.name);
    }
    // Independently of weftnet's counters: packets weftnet wrote into each weft0.
    let if_rx2 = weft0_rx_packets(n2) - if_rx_before[0];
    let if_rx4 = weft0_rx_packets(n4) - if_rx_before[1];
    assert!(if_rx2 >= N as u64, "n2's weft0 got {if_rx2} packets");
    assert_eq!(if_rx4, 0, "n4's weft0 got {if_rx4} packets");
    let c4 = n4.counters(GROUP);
    assert_eq!(c4, GroupCounters::default(), "n4 got traffic for {GROUP}");
}

#[test]
fn leave_stops_traffic() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("mcast");
    let nodes = start_range_mesh(u.hosts(), dir.path(), |_| vec![]);
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    let rx2 = receiver(n2, GROUP);
    let mut rx3 = receiver(n3, GROUP);
    n2.wait_joined(GROUP, &[n1, n3]);
    n3.wait_joined(GROUP, &[n1, n2]);

    send_numbered(n1, GROUP, "leave", 0, 5);
    assert_received("n3", &rx3, "leave", &[0, 1, 2, 3, 4]);
    assert_received("n2", &rx2, "leave", &[0, 1, 2, 3, 4]);

    // The last (only) socket on n3 leaves: the kernel sends a leave, n3 drops the group
    // after 2 s and gossips it.
    let t0 = Instant::now();
    rx3.terminate(Duration::from_secs(2));
    let local = wait_for("n3 dropping the group locally", LEAVE_BOUND, || {
        let l = n3.status()["multicast"]["local_groups"].clone();
        if json_has(&l, GROUP) {
            Err(format!("n3 local_groups {l}"))
        } else {
            Ok(())
        }
    });
    let gone = wait_for("the leave reaching n1 and n2", LEAVE_BOUND, || {
        for o in [n1, n2] {
            let g = o.groups_of(n3);
            if g.iter().any(|x| x == GROUP) {
                return Err(format!("{} still lists {g:?} for n3", o.name));
            }
        }
        Ok(())
    });
    let total = t0.elapsed();
    eprintln!(
        "leave: dropped on n3 {local:?} after the receiver was killed, gone from n1/n2 {gone:?} later ({total:?} in all)"
    );

    let before1 = n1.counters(GROUP);
    let before3 = n3.counters(GROUP);
    send_numbered(n1, GROUP, "leave", 5, 5);
    assert_received("n2", &rx2, "leave", &(0..10).collect::<Vec<_>>());
    let after1 = n1.counters(GROUP);
    assert_eq!(after1.tx_packets - before1.tx_packets, 5, "n1 {after1:?}");
    assert_eq!(
        after1.tx_copies - before1.tx_copies,
        5,
        "n1 still sends copies to n3 after the leave: {before1:?} -> {after1:?}"
    );
    assert_eq!(n3.counters(GROUP).rx_packets, before3.rx_packets);
    assert_eq!(before3.rx_packets, 5);
}

#[test]
fn ipv6_multicast_hop_limit_1() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("mcast");
    let nodes = start_range_mesh(u.hosts(), dir.path(), |i| {
        vec!["--address".into(), format!("fd47::{}/64", i + 1)]
    });
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    let rx2 = receiver(n2, GROUP6);
    n2.wait_joined(GROUP6, &[n1, n3]);

    const N: u32 = 20;
    send_numbered(n1, GROUP6, "v6", 0, N);
    assert_received("n2", &rx2, "v6", &(0..N).collect::<Vec<_>>());
    let c1 = n1.counters(GROUP6);
    assert_eq!(c1.tx_packets, N as u64, "n1 {c1:?}");
    assert_eq!(c1.tx_copies, N as u64, "n1 {c1:?}");
    assert_eq!(n2.counters(GROUP6).rx_packets, N as u64);
    assert_eq!(n3.counters(GROUP6), GroupCounters::default());
}

#[test]
fn filters_and_link_local() {
    const DENIED: &str = "239.9.1.1";
    const MDNS: &str = "224.0.0.251";

    // Default filter, plus a deny rule on the sender.
    {
        let u = Underlay::bridge(2);
        let dir = temp_dir("mcast");
        let nodes = start_range_mesh(u.hosts(), dir.path(), |i| {
            if i == 0 {
                vec!["--multicast-deny".into(), "239.9.0.0/16".into()]
            } else {
                vec![]
            }
        });
        let [n1, n2] = [&nodes[0], &nodes[1]];
        let rx_ok = receiver(n2, GROUP);
        let rx_denied = n2.ns().spawn(
            "socat",
            &[
                "-u",
                &format!(
                    "UDP4-RECV:{},ip-add-membership={DENIED}:weft0",
                    UDP_PORT + 1
                ),
                "STDOUT",
            ],
        );
        let rx_mdns = n2.ns().spawn(
            "socat",
            &[
                "-u",
                &format!("UDP4-RECV:{},ip-add-membership={MDNS}:weft0", UDP_PORT + 2),
                "STDOUT",
            ],
        );
        n2.wait_joined(GROUP, &[n1]);
        // The receiver's node does not deny 239.9/16, so it may well advertise it.
        let filtered_before = n1.drop_count("mcast_filtered");
        for i in 0..5 {
            send_port(n1, DENIED, UDP_PORT + 1, &format!("denied {i}\n"));
            send_port(n1, MDNS, UDP_PORT + 2, &format!("mdns {i}\n"));
            send(n1, GROUP, &format!("ok {i}\n"));
            std::thread::sleep(Duration::from_millis(30));
        }
        assert_received("n2", &rx_ok, "ok", &[0, 1, 2, 3, 4]);
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            received(&rx_denied, "denied").is_empty(),
            "denied group delivered"
        );
        assert!(
            received(&rx_mdns, "mdns").is_empty(),
            "link-local group delivered by default"
        );
        let filtered = n1.drop_count("mcast_filtered") - filtered_before;
        assert!(filtered >= 10, "mcast_filtered grew by {filtered} only");
        let d = n1.counters(DENIED);
        assert_eq!((d.drops, d.tx_copies), (5, 0), "n1 {DENIED}: {d:?}");
        let m = n1.counters(MDNS);
        assert_eq!((m.drops, m.tx_copies), (5, 0), "n1 {MDNS}: {m:?}");
        assert_eq!(n2.counters(DENIED).rx_packets, 0);
        // A link-local group is not advertised by default either.
        assert!(!n1.groups_of(n2).iter().any(|g| g == MDNS));
    }

    // --multicast-link-local on all nodes carries 224.0.0.251.
    let u = Underlay::bridge(2);
    let dir = temp_dir("mcast");
    let nodes = start_range_mesh(u.hosts(), dir.path(), |_| {
        vec!["--multicast-link-local".into()]
    });
    let [n1, n2] = [&nodes[0], &nodes[1]];
    let rx = receiver(n2, MDNS);
    n2.wait_joined(MDNS, &[n1]);
    send_numbered(n1, MDNS, "mdns", 0, 5);
    assert_received("n2", &rx, "mdns", &[0, 1, 2, 3, 4]);
    assert_eq!(n1.counters(MDNS).tx_copies, 5);
}

/// [`send`] to another UDP port (IPv4 only).
fn send_port(node: &Node, group: &str, port: u16, payload: &str) {
    let dst = format!(
        "UDP4-DATAGRAM:{group}:{port},ip-multicast-if={},ip-multicast-ttl=1",
        node.addr()
    );
    let mut cmd = node.ns().command("socat", &["-u", "STDIN", &dst]);
    expect_success(
        "multicast send",
        run_bounded(&mut cmd, Some(payload.as_bytes()), EXEC_TIMEOUT),
    );
}

#[test]
fn iperf2_and_mcfirst_work_unchanged() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("mcast");
    let nodes = start_range_mesh(u.hosts(), dir.path(), |_| vec![]);
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    let port = "5001";
    let mut srv = n2.ns().spawn(
        "iperf",
        &[
            "-s",
            "-u",
            "-B",
            &format!("{GROUP}%weft0"),
            "-p",
            port,
            "-i",
            "1",
        ],
    );
    let mut first = n3.ns().spawn(
        "mcfirst",
        &["-4", "-I", "weft0", "-c", "1", "-t", "15", GROUP, port],
    );
    n2.wait_joined(GROUP, &[n1]);
    n3.wait_joined(GROUP, &[n1]);

    let client = n1.ns().exec_timeout(
        Duration::from_secs(20),
        "iperf",
        &[
            "-c",
            GROUP,
            "-u",
            "-T",
            "1",
            "-B",
            &n1.addr().to_string(),
            "-p",
            port,
            "-b",
            "1M",
            "-t",
            "3",
        ],
    );
    let client_out = expect_success("iperf client", client);

    let status = first.wait_timeout(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "mcfirst: {status:?}\n{}",
        first.logs()
    );
    // Delivered unchanged: the TTL is still 1 (one link, no decrement).
    assert!(
        first.stdout().contains("(ttl/hops 1)"),
        "mcfirst: {}",
        first.logs()
    );

    // The server prints its report once the client's final datagrams arrive.
    let report = |s: &str| -> Option<(u64, u64)> {
        // "[  1] 0.0000-3.0168 sec  389 KBytes  1.06 Mbits/sec  0.061 ms 0/271 (0%)"
        let line = s.lines().rev().find(|l| l.trim_end().ends_with("%)"))?;
        let (lost, total) = line[..line.rfind('(')?].trim_end().rsplit_once('/')?;
        let lost: u64 = lost.split_whitespace().last()?.parse().ok()?;
        let total: u64 = total.trim().parse().ok()?;
        Some((lost, total))
    };
    let got_report = wait_until(Duration::from_secs(5), || {
        srv.stdout().contains("0.0000-3") || srv.stdout().contains(" 0.00-3")
    });
    std::thread::sleep(Duration::from_millis(300));
    srv.terminate(Duration::from_secs(2));
    let out = srv.stdout();
    let (lost, total) = report(&out).unwrap_or_else(|| {
        panic!(
            "no iperf server report (final {got_report})\n{}\nclient:\n{client_out}",
            srv.logs()
        )
    });
    eprintln!("iperf 2 server: {lost}/{total} lost");
    assert!(
        total >= 200,
        "iperf server saw only {total} datagrams\n{out}"
    );
    assert!(
        lost * 20 <= total,
        "iperf server lost {lost}/{total}\n{out}"
    );
    let c1 = n1.counters(GROUP);
    assert!(c1.tx_packets >= total, "n1 {c1:?}");
    assert!(n2.counters(GROUP).rx_packets >= total - lost);
}
