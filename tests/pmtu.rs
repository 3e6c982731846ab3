//! Path MTU per peer (PROTOCOL.md §9), end to end: one mesh where hosts 0 and 1 share
//! a 9001-byte underlay (jumbo frames inside a VPC) and host 2 sits behind a 1500-byte
//! link (a peering or a transit gateway). Twice: behind a switch port that drops
//! larger frames silently (no ICMP: a black hole unless the tunnel MTU follows the
//! path), and behind a router that answers them with ICMP fragmentation-needed.

mod common;

use common::mesh::*;
use common::*;
use serde_json::Value;
use std::time::Duration;

/// How long an 8 MB stream may take to be sent.
const STREAM_BOUND: Duration = Duration::from_secs(60);

/// `n`'s view of member `name`'s path MTU.
fn path_mtu(n: &Node, name: &str) -> Value {
    n.d.status_json()["cluster"]["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .map_or(Value::Null, |m| m["path_mtu"].clone())
}

#[test]
fn jumbo_and_ethernet_paths_in_one_mesh_without_a_black_hole() {
    let u = Underlay::bridge(3);
    for i in 0..2 {
        u.switch()
            .ip(&["link", "set", &format!("p{i}"), "mtu", "9001"]);
        u.host(i).ip(&["link", "set", "eth0", "mtu", "9001"]);
    }
    jumbo_and_ethernet(&u);
}

#[test]
fn jumbo_and_ethernet_paths_across_a_router_that_sends_icmp() {
    // Hosts 0 and 1 on a 9001-byte segment with the router's leg; host 2 on a
    // 1500-byte segment behind it. The router answers what does not fit with ICMP.
    let u = Underlay::routed(2, 1);
    for port in ["p0", "p1", "r0"] {
        u.switch().ip(&["link", "set", port, "mtu", "9001"]);
    }
    let router = u.router().expect("routed topology");
    router.ip(&["link", "set", "eth0", "mtu", "9001"]);
    for i in 0..2 {
        u.host(i).ip(&["link", "set", "eth0", "mtu", "9001"]);
    }
    jumbo_and_ethernet(&u);
}

/// The checks of both topologies: hosts 0 and 1 jumbo, host 2 behind 1500 bytes.
fn jumbo_and_ethernet(u: &Underlay) {
    let dir = temp_dir("pmtu");
    let nodes = start_mesh(u.hosts(), dir.path(), |_| {
        vec!["--range".into(), RANGE.into()]
    });
    // weft0 follows each host's underlay: 9001 - 80 on n1 and n2, 1500 - 80 on n3.
    assert_eq!(nodes[0].d.status_json()["mtu"], 8921);
    assert_eq!(nodes[2].d.status_json()["mtu"], 1420);
    let (b, c) = (nodes[1].block_host(), nodes[2].block_host());
    // Handshakes first (probes go out once a session is up).
    assert!(ping(nodes[0].d.netns(), b, 2) && ping(nodes[0].d.netns(), c, 2));
    assert!(ping(nodes[1].d.netns(), c, 2));
    let took = wait_for("path MTUs known", Duration::from_secs(30), || {
        let got = (
            path_mtu(&nodes[0], "n2"),
            path_mtu(&nodes[0], "n3"),
            path_mtu(&nodes[2], "n1"),
        );
        // n1 -> n2: n1's weft0 MTU (the path carries 8941); n1 -> n3: 1500 - 60;
        // n3 -> n1: n3's weft0 MTU.
        if got == (8921.into(), 1440.into(), 1420.into()) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    eprintln!("path MTUs known {took:?} after the first pings");

    // Jumbo inner packets cross the jumbo path whole.
    let big = nodes[0].d.netns().exec_timeout(
        Duration::from_secs(20),
        "ping",
        &[
            "-c",
            "3",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "8000",
            &b.to_string(),
        ],
    );
    assert!(big.status.success(), "8 kB ping to n2: {}", describe(&big));

    // Too big for n3's path, DF set: answered with fragmentation-needed, MTU 1440.
    let frag = nodes[0].d.netns().exec_timeout(
        Duration::from_secs(20),
        "ping",
        &[
            "-c",
            "2",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "2000",
            &c.to_string(),
        ],
    );
    let text = describe(&frag);
    assert!(
        text.contains("mtu = 1440") || text.contains("mtu=1440"),
        "expected fragmentation needed with MTU 1440: {text}"
    );
    let st = nodes[0].d.status_json();
    assert!(
        st["drops"]["pmtu_too_big"].as_u64().unwrap_or(0) > 0,
        "{:#}",
        st["drops"]
    );

    // DF clear (from n2, whose kernel knows nothing of n3's path yet): the first
    // packet is answered with fragmentation-needed too, then n2's kernel fragments
    // to 1440 itself and the rest arrive.
    let dont = nodes[1].d.netns().exec_timeout(
        Duration::from_secs(30),
        "ping",
        &[
            "-c",
            "5",
            "-i",
            "0.5",
            "-W",
            "2",
            "-M",
            "dont",
            "-s",
            "3000",
            &c.to_string(),
        ],
    );
    let text = describe(&dont);
    let received = ping_summary(&text).map_or(0, |(_, r)| r);
    assert!(received >= 4, "DF-clear pings to n3: {text}");

    // TCP adapts per destination: streams to both complete.
    let n = 8_000_000;
    tcp_transfer(&nodes[0], &nodes[2], n, 5401, STREAM_BOUND);
    tcp_transfer(&nodes[0], &nodes[1], n, 5402, STREAM_BOUND);
    tcp_transfer(&nodes[2], &nodes[0], n, 5403, STREAM_BOUND);

    // The text status shows each member's path MTU.
    let state = nodes[0].d.state_dir().display().to_string();
    let text = expect_success("status", nodes[0].d.cli(&["status", "--state-dir", &state]));
    assert!(text.contains("path mtu 1440"), "{text}");
    assert!(text.contains("path mtu 8921"), "{text}");
}
