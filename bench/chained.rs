//! Chained-mode benchmark (run as root: `cargo bench --bench chained`): pod to pod
//! across two nodes beside a simulated VPC CNI (tests/common/chained.rs), on the plain
//! VPC path (a pair of pods plumbed by the primary alone, which weftnet never sees) and
//! through weftnet chained after it (a pair plumbed by the chained conflist), in one
//! run on the same machine with the daemons running for both. Measures iperf3 TCP
//! throughput (RUNS runs of SECONDS s, median) and ping round trip (COUNT pings 50 ms
//! apart, average), and prints the ratios.
//!
//! Environment: RUNS (default 3), SECONDS (default 5), COUNT (default 100).

#[path = "../tests/common/mod.rs"]
mod common;

use common::bench::{env_u64, median};
use common::chained::*;
use common::mesh::wait_for;
use common::*;

/// Average round trip in ms of `count` pings from `from` to `to`.
fn rtt_ms(from: &Pod, to: &str, count: u64) -> f64 {
    let c = count.to_string();
    let out = from
        .ns
        .run("ping", &["-c", &c, "-i", "0.05", "-W", "1", "-q", to]);
    // rtt min/avg/max/mdev = 0.046/0.061/0.090/0.010 ms
    out.lines()
        .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.starts_with("rtt")))
        .and_then(|(_, v)| v.split('/').nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no rtt in ping output: {out}"))
}

fn main() {
    let (runs, seconds, count) = (
        env_u64("RUNS", 3),
        env_u64("SECONDS", 5),
        env_u64("COUNT", 100),
    );
    let u = Underlay::bridge(3);
    let dir = temp_dir("bench-chained");
    let (h1, h2, vpc) = (u.host(0), u.host(1), u.host(2));
    let (api, n1, n2) = start_beside_vpc(h1, h2, vpc, dir.path(), &[]);
    for n in [&n1, &n2] {
        n.wait_for_conflist();
    }
    let aws = |n: &ChainedNode| n.cni.join("net.d").join("10-aws.conflist");
    let plain = (
        n1.add_pod_via(&aws(&n1), &api, "pa"),
        n2.add_pod_via(&aws(&n2), &api, "pb"),
    );
    let chained = (n1.add_pod(&api, "ca"), n2.add_pod(&api, "cb"));
    wait_for("routes through weft0", BOUND, || {
        let t = n1.table();
        t.contains(&format!("{} dev weft0", chained.1.ip))
            .then_some(())
            .ok_or(t)
    });
    assert!(
        pings(&chained.0, &chained.1.ip, 3),
        "chained pods cannot talk"
    );
    assert!(pings(&plain.0, &plain.1.ip, 3), "plain pods cannot talk");
    let mut results = Vec::new();
    for (what, (a, b)) in [("plain VPC path", &plain), ("weftnet chained", &chained)] {
        let gbps: Vec<f64> = (0..runs)
            .map(|_| iperf3(&a.ns, &b.ns, &b.ip, seconds as u32))
            .collect();
        let rtt = rtt_ms(a, &b.ip, count);
        println!(
            "{what:<16} TCP {:.2} Gbit/s (median of {runs} x {seconds} s: {gbps:.2?}), ping avg {rtt:.3} ms over {count}",
            median(gbps.clone())
        );
        results.push((median(gbps), rtt));
    }
    println!(
        "chained / plain: throughput {:.2}, round trip {:.2}",
        results[1].0 / results[0].0,
        results[1].1 / results[0].1
    );
}
