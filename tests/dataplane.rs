//! End-to-end tests of the data plane: weftnet nodes (and wireguard-go reference peers) in
//! network namespaces on bridged and routed underlays, carrying IPv4 and IPv6 overlay traffic.
//! Run as root (`cargo test --test dataplane`); everything is created inside namespaces.

mod common;

use common::*;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// Every node listens on this UDP port (each in its own namespace).
const PORT: u16 = 51820;

/// Overlay IPv4 address of node `i` (1-based).
fn ov4(i: usize) -> String {
    format!("10.201.0.{i}")
}

/// Overlay IPv6 address of node `i` (1-based).
fn ov6(i: usize) -> String {
    format!("fd20:1::{i}")
}

/// `--address` flags for node `i`: both families, with the mesh prefix.
fn node_args(i: usize) -> Vec<String> {
    vec![
        "--address".into(),
        format!("{}/24", ov4(i)),
        "--address".into(),
        format!("{}/64", ov6(i)),
    ]
}

/// Node `i`'s host prefixes, as its peers' `allowed_ips`.
fn node_prefixes(i: usize) -> [String; 2] {
    [format!("{}/32", ov4(i)), format!("{}/128", ov6(i))]
}

fn endpoint(h: &Host, v6: bool) -> SocketAddr {
    SocketAddr::new(h.underlay(v6), PORT)
}

/// A `[[peer]]` table for node `i` (with its host prefixes).
fn peer_of(i: usize, public_key: &str, ep: Option<SocketAddr>, keepalive: Option<u16>) -> String {
    let p = node_prefixes(i);
    peer_toml(public_key, ep, &[&p[0], &p[1]], keepalive)
}

/// Start node `i` on `host` with a given private key and `[[peer]]` config.
fn start_node(host: &Host, i: usize, private_key: &str, config: &str) -> Daemon {
    let args = node_args(i);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_with_key(host, private_key, &args, config)
}

/// A full mesh: node `i + 1` on `hosts[i]`, every node a peer of every other (IPv4 underlay
/// endpoints). Checks that each daemon reports the public key of its private key.
fn mesh(hosts: &[&Host]) -> Vec<Daemon> {
    let keys: Vec<(String, String)> = hosts.iter().map(|_| keypair()).collect();
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let config: String = hosts
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, hj)| peer_of(j + 1, &keys[j].1, Some(endpoint(hj, false)), None))
                .collect();
            let d = start_node(h, i + 1, &keys[i].0, &config);
            assert_eq!(d.public_key(), keys[i].1, "public key of node {}", i + 1);
            d
        })
        .collect()
}

/// The status entry of peer `public_key` on daemon `d`.
fn peer_status(d: &Daemon, public_key: &str) -> Value {
    let st = d.status_json();
    st["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["public_key"] == public_key))
        .cloned()
        .unwrap_or_else(|| panic!("peer {public_key} not in status: {st:#}"))
}

/// The peer's endpoint as reported by `d`, if any.
fn peer_endpoint(d: &Daemon, public_key: &str) -> Option<SocketAddr> {
    peer_status(d, public_key)["endpoint"]
        .as_str()
        .map(|e| e.parse().unwrap_or_else(|_| panic!("bad endpoint {e:?}")))
}

/// `drops.<reason>` of daemon `d`.
fn drops(d: &Daemon, reason: &str) -> u64 {
    let st = d.status_json();
    st["drops"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("no drops.{reason} in status: {st:#}"))
}

fn counter(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric {key} in {v:#}"))
}

/// Waits up to 10 s for a first reply (which may need a handshake), then requires 3 more.
fn assert_ping(from: &Netns, to: &str, what: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || ping(from, to, 1)),
        "{what}: no reply from {to} within 10 s"
    );
    assert!(ping(from, to, 3), "{what}: replies from {to} stopped");
}

/// Both directions, both overlay families, between nodes `i` (on `a`) and `j` (on `b`).
fn assert_ping_pair(a: &Netns, i: usize, b: &Netns, j: usize) {
    assert_ping(a, &ov4(j), &format!("node {i} -> node {j} (IPv4)"));
    assert_ping(b, &ov4(i), &format!("node {j} -> node {i} (IPv4)"));
    assert_ping(a, &ov6(j), &format!("node {i} -> node {j} (IPv6)"));
    assert_ping(b, &ov6(i), &format!("node {j} -> node {i} (IPv6)"));
}

/// A short TCP stream; only catches a broken path (throughput lives in the benchmarks).
fn assert_iperf3(client: &Netns, server: &Netns, addr: &str, what: &str) {
    let gbps = iperf3(client, server, addr, 2);
    assert!(gbps > 0.01, "{what}: {:.1} Mbit/s", gbps * 1e3);
    eprintln!("{what}: {:.0} Mbit/s", gbps * 1e3);
}

/// A counter from `/proc/net/snmp` (e.g. `("Icmp", "InEchos")`) or `/proc/net/snmp6` (e.g.
/// `("Icmp6", "InEchos")`) inside `ns`.
fn snmp(ns: &Netns, proto: &str, field: &str) -> u64 {
    if proto == "Icmp6" {
        let text = ns.run("cat", &["/proc/net/snmp6"]);
        let name = format!("{proto}{field}");
        return text
            .lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/net/snmp6"));
    }
    let text = ns.run("cat", &["/proc/net/snmp"]);
    let prefix = format!("{proto}:");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (names, values) = (&rows[0], &rows[1]);
    let col = names
        .iter()
        .position(|n| *n == field)
        .unwrap_or_else(|| panic!("no {proto} {field} in /proc/net/snmp"));
    values[col].parse().expect("numeric counter")
}

/// A node without TUN offloads (`WEFTNET_TUN_OFFLOAD=off`, the fallback for kernels
/// without them) and a node with them carry each other's traffic: TCP super-packets
/// split on one side arrive as plain packets on the other, and plain packets from it
/// are coalesced; small and full-size packets, both families.
#[test]
fn offload_and_plain_nodes_interoperate() {
    let u = Underlay::bridge(2);
    let (h0, h1) = (u.host(0), u.host(1));
    let (k0, k1) = (keypair(), keypair());
    let args: Vec<Vec<String>> = (1..=2).map(node_args).collect();
    let args: Vec<Vec<&str>> = args
        .iter()
        .map(|a| a.iter().map(String::as_str).collect())
        .collect();
    let plain = Daemon::start_with_key_and_env(
        h0,
        &k0.0,
        &args[0],
        &peer_of(2, &k1.1, Some(endpoint(h1, false)), None),
        &[("WEFTNET_TUN_OFFLOAD", "off")],
    );
    let offload = Daemon::start_with_key(
        h1,
        &k1.0,
        &args[1],
        &peer_of(1, &k0.1, Some(endpoint(h0, false)), None),
    );
    assert_eq!(plain.status_json()["offload"], "off");
    assert_eq!(offload.status_json()["offload"], "tso");
    assert_ping_pair(h0, 1, h1, 2);
    assert_full_size_pings(h0, h1);
    assert_iperf3(h0, h1, &ov4(2), "plain node -> offload node, TCP over IPv4");
    assert_iperf3(h1, h0, &ov4(1), "offload node -> plain node, TCP over IPv4");
    assert_iperf3(h1, h0, &ov6(1), "offload node -> plain node, TCP over IPv6");
    for d in [&plain, &offload] {
        let st = d.status_json();
        assert_eq!(st["drops"]["tun_offload_malformed"], 0, "{st:#}");
        assert_eq!(st["drops"]["tun_write_errors"], 0, "{st:#}");
    }
}

/// Full-size packets (a 1420-byte tunnel MTU) cross unfragmented, both families, both
/// ways, between node 1 on `h0` and node 2 on `h1`.
fn assert_full_size_pings(h0: &Host, h1: &Host) {
    for (from, to, v6) in [(h0, 2, false), (h1, 1, false), (h0, 2, true), (h1, 1, true)] {
        let (size, dst, fam) = if v6 {
            ((1420 - 48).to_string(), ov6(to), "-6")
        } else {
            ((1420 - 28).to_string(), ov4(to), "-4")
        };
        let args = [
            "-n", "-q", fam, "-M", "do", "-s", &size, "-c", "2", "-i", "0.2", "-W", "2", &dst,
        ];
        let out = from.exec("ping", &args);
        assert!(
            out.status.success(),
            "{size}-byte ping to {dst}\n{}",
            describe(&out)
        );
    }
}

#[test]
fn two_nodes_ping_v4_v6_and_stream_tcp() {
    let u = Underlay::bridge(2);
    let (h0, h1) = (u.host(0), u.host(1));
    let d = mesh(&[h0, h1]);
    assert_ping_pair(h0, 1, h1, 2);

    // MTU: the underlay's 1500 minus 80, on the link and in the status.
    let st = d[0].status_json();
    assert_eq!(st["mtu"], 1420, "{st:#}");
    let link = h0.ip(&["link", "show", "weft0"]);
    assert!(link.contains("mtu 1420"), "{link}");
    // Full-size packets cross unfragmented, both families, both ways.
    assert_full_size_pings(h0, h1);

    assert_iperf3(h0, h1, &ov4(2), "node 1 -> node 2 TCP over IPv4");
    assert_iperf3(h1, h0, &ov6(1), "node 2 -> node 1 TCP over IPv6");

    // The status schema.
    let st = d[0].status_json();
    for key in ["interface", "public_key", "listen_port", "addresses", "mtu"] {
        assert!(!st[key].is_null(), "no {key} in status: {st:#}");
    }
    assert_eq!(st["interface"], "weft0");
    assert_eq!(st["listen_port"], PORT);
    // This kernel has TUN offloads: the streams above went through TSO and coalescing.
    assert_eq!(st["offload"], "tso", "{st:#}");
    assert_eq!(
        st["addresses"],
        serde_json::json!([format!("{}/24", ov4(1)), format!("{}/64", ov6(1))])
    );
    for reason in [
        "malformed_ip",
        "no_route",
        "source_not_allowed",
        "authentication",
        "replay",
        "no_session",
        "expired",
        "under_load",
        "malformed_wireguard",
        "malformed_datagram",
        "unknown_peer",
        "no_endpoint",
        "tun_write_errors",
        "tun_offload_malformed",
        "udp_send_errors",
        "udp_async_errors",
    ] {
        assert!(st["drops"][reason].is_u64(), "no drops.{reason}: {st:#}");
    }
    for key in [
        "public_key",
        "endpoint",
        "allowed_ips",
        "persistent_keepalive",
        "latest_handshake_secs",
        "rx_bytes",
        "tx_bytes",
        "rx_packets",
        "tx_packets",
    ] {
        let p = &st["peers"][0];
        assert!(
            p.as_object().is_some_and(|o| o.contains_key(key)),
            "no peers[0].{key}: {st:#}"
        );
    }

    for (me, other, other_host) in [(0, 1, h1), (1, 0, h0)] {
        let other_key = d[other].public_key();
        let p = peer_status(&d[me], &other_key);
        assert!(
            p["latest_handshake_secs"].is_u64(),
            "node {}: no handshake with its peer: {p:#}",
            me + 1
        );
        // Each side carried at least one 2 s TCP stream in each direction.
        for key in ["rx_bytes", "tx_bytes"] {
            let n = counter(&p, key);
            assert!(n > 1_000_000, "node {}: {key} = {n}: {p:#}", me + 1);
        }
        for key in ["rx_packets", "tx_packets"] {
            assert!(counter(&p, key) > 0, "node {}: {key}: {p:#}", me + 1);
        }
        assert_eq!(
            peer_endpoint(&d[me], &other_key),
            Some(endpoint(other_host, false))
        );
        let mut allowed: Vec<String> = p["allowed_ips"]
            .as_array()
            .expect("allowed_ips")
            .iter()
            .map(|v| v.as_str().expect("string").to_owned())
            .collect();
        allowed.sort();
        let mut want = node_prefixes(other + 1).to_vec();
        want.sort();
        assert_eq!(allowed, want);
    }
}

#[test]
fn three_nodes_all_pairs_ping() {
    let u = Underlay::bridge(3);
    let hosts: Vec<&Host> = u.hosts().iter().collect();
    let d = mesh(&hosts);
    for (i, from) in hosts.iter().enumerate() {
        for j in (0..3).filter(|j| *j != i) {
            assert_ping(
                from,
                &ov4(j + 1),
                &format!("node {} -> node {} (IPv4)", i + 1, j + 1),
            );
        }
    }
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        assert_ping(
            hosts[i],
            &ov6(j + 1),
            &format!("node {} -> node {} (IPv6)", i + 1, j + 1),
        );
    }
    for (i, node) in d.iter().enumerate() {
        let st = node.status_json();
        let peers = st["peers"].as_array().expect("peers");
        assert_eq!(peers.len(), 2, "node {}: {st:#}", i + 1);
        for p in peers {
            assert!(p["latest_handshake_secs"].is_u64(), "node {}: {p:#}", i + 1);
        }
    }
}

#[test]
fn routed_underlay_across_two_subnets() {
    let u = Underlay::routed(1, 1);
    let (a, b) = (u.host(0), u.host(1));
    assert_ne!(
        a.underlay_v4().octets()[..3],
        b.underlay_v4().octets()[..3],
        "different subnets"
    );
    let _d = mesh(&[a, b]);
    assert_ping_pair(a, 1, b, 2);
}

#[test]
fn ipv6_underlay_endpoint() {
    // Node 1 knows node 2 only by its IPv6 underlay address; node 2 has no endpoint for node 1
    // and must learn it (an IPv6 one) from node 1's handshake. Across the router.
    let u = Underlay::routed(1, 1);
    let (a, b) = (u.host(0), u.host(1));
    let (ka, kb) = (keypair(), keypair());
    let da = start_node(
        a,
        1,
        &ka.0,
        &peer_of(2, &kb.1, Some(endpoint(b, true)), None),
    );
    let db = start_node(b, 2, &kb.0, &peer_of(1, &ka.1, None, None));
    let config = std::fs::read_to_string(da.config_path()).expect("config");
    assert!(
        config.contains(&format!("\"[{}]:{PORT}\"", b.underlay_v6())),
        "the config uses the [v6]:port form:\n{config}"
    );
    assert_eq!(peer_endpoint(&db, &ka.1), None);
    assert_ping_pair(a, 1, b, 2);
    assert_eq!(peer_endpoint(&da, &kb.1), Some(endpoint(b, true)));
    assert_eq!(peer_endpoint(&db, &ka.1), Some(endpoint(a, true)));
}

/// weftnet node 1 on `h0`, wireguard-go node 2 on `h1`. Only the initiator gets the other's
/// endpoint, so the first packet must go the given way.
fn weftnet_and_wireguard_go(u: &Underlay, weftnet_initiates: bool) -> (Daemon, WireguardGo) {
    let (h0, h1) = (u.host(0), u.host(1));
    let (wk, wpub) = keypair();
    let a2 = [format!("{}/24", ov4(2)), format!("{}/64", ov6(2))];
    let wg = WireguardGo::start(h1, &[&a2[0], &a2[1]], PORT);
    let p1 = node_prefixes(1);
    wg.add_peer(
        &wpub,
        (!weftnet_initiates).then(|| endpoint(h0, false)),
        &[&p1[0], &p1[1]],
        None,
    );
    let d = start_node(
        h0,
        1,
        &wk,
        &peer_of(
            2,
            wg.public_key(),
            weftnet_initiates.then(|| endpoint(h1, false)),
            None,
        ),
    );
    (d, wg)
}

#[test]
fn wireguard_go_interop_weftnet_initiates() {
    let u = Underlay::bridge(2);
    let (h0, h1) = (u.host(0), u.host(1));
    let (d, wg) = weftnet_and_wireguard_go(&u, true);
    assert_ping(
        h0,
        &ov4(2),
        "weftnet -> wireguard-go (IPv4), weftnet initiates",
    );
    assert_ping(h1, &ov4(1), "wireguard-go -> weftnet (IPv4)");
    assert_ping(h0, &ov6(2), "weftnet -> wireguard-go (IPv6)");
    assert_ping(h1, &ov6(1), "wireguard-go -> weftnet (IPv6)");
    assert_iperf3(h0, h1, &ov4(2), "weftnet -> wireguard-go TCP");
    assert_iperf3(h1, h0, &ov4(1), "wireguard-go -> weftnet TCP");
    let weft_key = d.public_key();
    assert!(wg.latest_handshake(&weft_key) > 0, "{}", wg.dump());
    assert!(peer_status(&d, wg.public_key())["latest_handshake_secs"].is_u64());
    // wireguard-go learned weftnet's endpoint from the authenticated handshake.
    assert!(
        wg.dump().contains(&endpoint(h0, false).to_string()),
        "{}",
        wg.dump()
    );
}

#[test]
fn wireguard_go_interop_wireguard_go_initiates() {
    let u = Underlay::bridge(2);
    let (h0, h1) = (u.host(0), u.host(1));
    let (d, wg) = weftnet_and_wireguard_go(&u, false);
    assert_eq!(peer_endpoint(&d, wg.public_key()), None);
    assert_ping(
        h1,
        &ov4(1),
        "wireguard-go -> weftnet (IPv4), wireguard-go initiates",
    );
    assert_ping(h0, &ov4(2), "weftnet -> wireguard-go (IPv4)");
    assert_ping(h1, &ov6(1), "wireguard-go -> weftnet (IPv6)");
    assert_ping(h0, &ov6(2), "weftnet -> wireguard-go (IPv6)");
    assert_iperf3(h1, h0, &ov6(1), "wireguard-go -> weftnet TCP over IPv6");
    assert_iperf3(h0, h1, &ov6(2), "weftnet -> wireguard-go TCP over IPv6");
    assert_eq!(
        peer_endpoint(&d, wg.public_key()),
        Some(endpoint(h1, false)),
        "weftnet learned wireguard-go's endpoint"
    );
}

#[test]
fn source_outside_allowed_ips_is_dropped() {
    // wireguard-go (node 2) sends whatever source the kernel gives it; weftnet (node 1) allows
    // only node 2's /32 and /128 from it.
    let u = Underlay::bridge(2);
    let (h0, h1) = (u.host(0), u.host(1));
    let (d, wg) = weftnet_and_wireguard_go(&u, false);
    // Node 2's own addresses work (this also completes the handshake).
    assert_ping(h1, &ov4(1), "allowed IPv4 source");
    assert_ping(h1, &ov6(1), "allowed IPv6 source");

    let spoof4 = "10.201.0.99";
    let spoof6 = "fd20:1::99";
    h1.ip(&["addr", "add", &format!("{spoof4}/32"), "dev", wg.ifname()]);
    h1.ip(&[
        "addr",
        "add",
        &format!("{spoof6}/128"),
        "dev",
        wg.ifname(),
        "nodad",
        // Deprecated, so that only `ping -I` uses it as a source.
        "preferred_lft",
        "0",
    ]);
    // The spoofed sources still go out through the tunnel (connected routes of the /24 and /64).
    let route = h1.ip(&["route", "get", &ov4(1), "from", spoof4]);
    assert!(route.contains(wg.ifname()), "{route}");
    let route = h1.ip(&["route", "get", &ov6(1)]);
    assert!(route.contains(&format!("src {}", ov6(2))), "{route}");

    let dropped0 = drops(&d, "source_not_allowed");
    let echos4 = snmp(h0, "Icmp", "InEchos");
    let echos6 = snmp(h0, "Icmp6", "InEchos");
    let rx0 = counter(&peer_status(&d, wg.public_key()), "rx_packets");
    let spoofed_ping = |v6: bool, src: &str, dst: &str| {
        let args = [
            "-n",
            "-q",
            if v6 { "-6" } else { "-4" },
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-w",
            "2",
            "-I",
            src,
            dst,
        ];
        h1.exec("ping", &args)
    };
    let out = spoofed_ping(false, spoof4, &ov4(1));
    assert!(
        !out.status.success(),
        "reply to a spoofed IPv4 source\n{}",
        describe(&out)
    );
    let out = spoofed_ping(true, spoof6, &ov6(1));
    assert!(
        !out.status.success(),
        "reply to a spoofed IPv6 source\n{}",
        describe(&out)
    );

    assert!(
        wait_until(Duration::from_secs(5), || drops(&d, "source_not_allowed")
            >= dropped0 + 6),
        "expected 6 more source_not_allowed drops (from {dropped0}): {:#}",
        d.status_json()
    );
    assert_eq!(
        snmp(h0, "Icmp", "InEchos"),
        echos4,
        "a spoofed IPv4 echo request reached node 1's kernel"
    );
    assert_eq!(
        snmp(h0, "Icmp6", "InEchos"),
        echos6,
        "a spoofed IPv6 echo request reached node 1's kernel"
    );
    assert_eq!(
        counter(&peer_status(&d, wg.public_key()), "rx_packets"),
        rx0,
        "dropped packets must not count as received"
    );
    // The allowed source still works afterwards, both ways.
    assert_ping(h1, &ov4(1), "allowed IPv4 source after the spoofed ones");
    assert_ping(h1, &ov6(1), "allowed IPv6 source after the spoofed ones");
    assert_ping(
        h0,
        &ov4(2),
        "weftnet -> wireguard-go after the spoofed ones",
    );

    // Outbound: an address inside weftnet's own /24 that no peer owns has no route.
    let no_route0 = drops(&d, "no_route");
    assert!(!ping(h0, spoof4, 1), "{spoof4} is nobody's on node 1");
    assert!(drops(&d, "no_route") > no_route0, "{:#}", d.status_json());
}

#[test]
fn roaming_peer_endpoint_follows_authenticated_packets() {
    let u = Underlay::bridge(2);
    let (a, b) = (u.host(0), u.host(1));
    let (ka, kb) = (keypair(), keypair());
    let old = endpoint(b, false);
    // A knows B's first address; B keeps contacting A (keepalive 1 s).
    let da = start_node(a, 1, &ka.0, &peer_of(2, &kb.1, Some(old), None));
    let _db = start_node(
        b,
        2,
        &kb.0,
        &peer_of(1, &ka.1, Some(endpoint(a, false)), Some(1)),
    );
    assert_ping(a, &ov4(2), "A -> B before roaming");
    assert_ping(b, &ov4(1), "B -> A before roaming");
    assert_eq!(peer_endpoint(&da, &kb.1), Some(old));

    // B moves to a new underlay address on the same segment; the old one disappears.
    let o = b.underlay_v4().octets();
    let new_ip = Ipv4Addr::new(o[0], o[1], o[2], 200);
    b.sysctl(&[("net.ipv4.conf.eth0.promote_secondaries", "1")]);
    b.ip(&["addr", "add", &format!("{new_ip}/24"), "dev", "eth0"]);
    b.ip(&[
        "addr",
        "del",
        &format!("{}/24", b.underlay_v4()),
        "dev",
        "eth0",
    ]);
    let addrs = b.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        addrs.contains(&format!("{new_ip}/24"))
            && !addrs.contains(&format!("{}/24", b.underlay_v4())),
        "{addrs}"
    );
    assert!(
        !ping(a, b.underlay_v4(), 1),
        "B's old address still answers"
    );

    let new = SocketAddr::new(new_ip.into(), PORT);
    assert!(
        wait_until(Duration::from_secs(10), || peer_endpoint(&da, &kb.1)
            == Some(new)),
        "A did not learn B's new endpoint {new}: {:#}",
        da.status_json()
    );
    assert_ping(a, &ov4(2), "A -> B after roaming");
    assert_ping(b, &ov4(1), "B -> A after roaming");
    assert_ping(a, &ov6(2), "A -> B after roaming (IPv6)");
    assert_eq!(peer_endpoint(&da, &kb.1), Some(new));
}

/// Starts a node with a custom interface name and a peer route, sends `sig`, and checks
/// that it exits successfully and removes its control socket; for a stop for good
/// (SIGINT) also its interface and routes, for a restart (the others) it keeps them.
fn assert_clean_exit_on(sig: libc::c_int) {
    let ns = Netns::new("sig");
    let ifname = "wfsig0";
    let (_, peer) = keypair();
    let config = peer_toml(
        &peer,
        Some("192.0.2.1:51820".parse().expect("addr")),
        &["10.202.0.0/24", "fd20:2::/64"],
        Some(25),
    );
    let mut args = node_args(1);
    args.extend(["--interface".into(), ifname.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = Daemon::start(&ns, &args, &config);
    assert_eq!(d.interface(), ifname);
    let socket = d.state_dir().join("weftnet.sock");
    assert!(ns.has_link(ifname), "{:?}", ns.links());
    assert!(
        socket.exists(),
        "control socket {} missing",
        socket.display()
    );
    let routes = ns.ip(&["route", "show", "10.202.0.0/24"]);
    assert!(routes.contains(ifname), "peer route missing: {routes:?}");
    let addrs = ns.ip(&["-o", "addr", "show", ifname]);

    let status = if sig == libc::SIGTERM {
        d.stop()
    } else {
        d.proc().signal(sig);
        d.proc()
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("weftnet still running 10 s after signal {sig}"))
    };
    assert!(status.success(), "exit status {status}\n{}", d.logs());
    assert!(
        !socket.exists(),
        "control socket {} left behind",
        socket.display()
    );
    let routes = ns.ip(&["route", "show", "10.202.0.0/24"]);
    if sig == libc::SIGINT {
        assert_eq!(ns.links(), vec!["lo".to_owned()], "links left behind");
        assert!(routes.trim().is_empty(), "route left behind: {routes:?}");
    } else {
        assert_eq!(ns.links(), vec!["lo".to_owned(), ifname.to_owned()]);
        assert!(routes.contains(ifname), "the route stays: {routes:?}");
        assert_eq!(ns.ip(&["-o", "addr", "show", ifname]), addrs);
    }
    let out = d.cli(&[
        "status",
        "--state-dir",
        d.state_dir().to_str().expect("utf8"),
    ]);
    assert!(
        !out.status.success(),
        "status after exit\n{}",
        describe(&out)
    );
    if sig != libc::SIGINT {
        // The next run attaches to the interface and stops for good on SIGINT.
        d.start_again();
        assert_eq!(
            ns.ip(&["-o", "addr", "show", ifname]),
            addrs,
            "nothing added twice"
        );
        d.proc().signal(libc::SIGINT);
        let status = d.proc().wait_timeout(Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "{}", d.logs());
        assert_eq!(ns.links(), vec!["lo".to_owned()], "links left behind");
    }
}

#[test]
fn sigterm_keeps_the_interface_for_the_next_run() {
    assert_clean_exit_on(libc::SIGTERM);
}

#[test]
fn sigint_removes_interface_and_socket() {
    assert_clean_exit_on(libc::SIGINT);
}

#[test]
fn sighup_and_sigquit_keep_the_interface_for_the_next_run() {
    assert_clean_exit_on(libc::SIGHUP);
    assert_clean_exit_on(libc::SIGQUIT);
}

#[test]
fn restart_reuses_default_private_key() {
    // Node 2 runs with the default key (STATE_DIR/private.key, created on first start); node 1
    // is configured with the public key node 2 reports, and still reaches it after node 2
    // restarts.
    let u = Underlay::bridge(2);
    let (a, b) = (u.host(0), u.host(1));
    let (ka, kb) = (keypair(), keypair());
    let args = node_args(2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut db = Daemon::start(b, &args, &peer_of(1, &ka.1, Some(endpoint(a, false)), None));
    let path = db.state_dir().join("private.key");
    let meta = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("default key {} not created: {e}", path.display()));
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "mode of {}",
        path.display()
    );
    let text = std::fs::read_to_string(&path).expect("read key");
    let public = db.public_key();
    assert_ne!(public, kb.1);
    assert_eq!(
        pubkey(&text),
        public,
        "status shows the stored key's public key"
    );
    let _da = start_node(
        a,
        1,
        &ka.0,
        &peer_of(2, &public, Some(endpoint(b, false)), None),
    );
    assert_ping(a, &ov4(2), "node 1 -> node 2 before the restart");

    db.restart();
    assert_eq!(db.public_key(), public, "same key after restart");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read key"),
        text,
        "key file rewritten"
    );
    assert_eq!(
        std::fs::metadata(&path).expect("key").permissions().mode() & 0o777,
        0o600
    );
    // Node 2 lost its session; its first packet starts a new handshake with the same key.
    assert_ping(b, &ov4(1), "node 2 -> node 1 after the restart");
    assert_ping(a, &ov4(2), "node 1 -> node 2 after the restart");
}

/// Sends `count` forged WireGuard handshake responses to `to` from inside `from`, as fast as
/// possible: random contents, receiver indices 0..=255 (peer slot 0), and a valid mac1 for
/// `public_key` (which anyone who knows the public key can compute) but no valid mac2. None of
/// them authenticates; more than 100 per second put the receiver "under load", where it answers
/// with cookie replies.
fn send_forged_handshake_responses(from: &Netns, to: SocketAddr, public_key: &str, count: u32) {
    const SCRIPT: &str = r#"
import base64, hashlib, os, socket, sys
pub = base64.b64decode(sys.argv[1])
host, port, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mac1_key = hashlib.blake2s(b"mac1----" + pub).digest()
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    msg = (2).to_bytes(4, "little") + os.urandom(4) + (i % 256).to_bytes(4, "little") + os.urandom(48)
    mac1 = hashlib.blake2s(msg, key=mac1_key, digest_size=16).digest()
    s.sendto(msg + mac1 + bytes(16), (host, port))
"#;
    let args = [
        "-c".to_owned(),
        SCRIPT.to_owned(),
        public_key.to_owned(),
        to.ip().to_string(),
        to.port().to_string(),
        count.to_string(),
    ];
    from.run("python3", &args);
}

#[test]
fn unauthenticated_datagrams_do_not_move_an_endpoint() {
    // Node 1 (A) and node 2 (B) are connected; host 3 (C) is not a node and floods A with
    // forged handshake responses for B's peer slot. A must keep B's endpoint: only
    // authenticated packets may change it.
    let u = Underlay::bridge(3);
    let (a, b, c) = (u.host(0), u.host(1), u.host(2));
    let d = mesh(&[a, b]);
    assert_ping(a, &ov4(2), "A -> B");
    let b_key = d[1].public_key();
    assert_eq!(peer_endpoint(&d[0], &b_key), Some(endpoint(b, false)));

    send_forged_handshake_responses(c, endpoint(a, false), &d[0].public_key(), 400);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        peer_endpoint(&d[0], &b_key),
        Some(endpoint(b, false)),
        "forged datagrams from {} moved B's endpoint on A: {:#}",
        c.underlay_v4(),
        d[0].status_json()
    );
    assert_ping(a, &ov4(2), "A -> B after the forged datagrams");
}
