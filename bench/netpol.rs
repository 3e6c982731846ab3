//! NetworkPolicy benchmark (run as root: `cargo bench --bench netpol`).
//!
//! On the e2e harness: two Kubernetes nodes against the fake API server, a client pod
//! on node 1 and a server pod on node 2 (real, through the CNI plugin). It measures:
//!
//! 1. **Change to enforcement**: a policy that isolates the server is put into the API
//!    server, and the client probes (TCP connect, 100 ms timeout, back to back) until
//!    it is refused; then the policy is deleted and the client probes until it is let
//!    through again. Both delays, ROUNDS times each, with 1,000 pods and 100 policies
//!    known; median and max.
//! 2. **Data-path cost**: iperf3 TCP throughput client to server, RUNS runs of SECONDS
//!    s each with no policy and with 100 policies, 10 of them selecting the server (so
//!    its packets go through its ingress chain and the shared peer sets), 1,000 pods
//!    known throughout. The runs alternate (the policies are deleted and put back in
//!    between), so a drift of the machine's speed falls on both sides. Median of each
//!    and the ratio.
//!
//! Environment: ROUNDS (default 10), RUNS (default 3), SECONDS (default 5).

#[path = "../tests/common/mod.rs"]
mod common;

use common::bench::{env_u64, median};
use common::kube_node::*;
use common::mesh::*;
use common::probe::*;
use common::*;
use serde_json::json;
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn main() {
    let rounds = env_u64("ROUNDS", 10);
    let runs = env_u64("RUNS", 3);
    let seconds = env_u64("SECONDS", 5) as u32;
    let u = Underlay::bridge(2);
    let dir = temp_dir("netpol-bench");
    let k = two_node_cluster(&u, dir.path());
    put_namespace(&k.api, "x", &[("ns", "x")]);
    let nodes = k.start_nodes(&[u.host(0), u.host(1)], dir.path(), "10.244.0.0/16");
    let api = k.api;
    wait_for("nodes ready", CONVERGE, || {
        for n in &nodes {
            if n.status()["kubernetes"]["cni_config"].as_str().is_none()
                || n.status()["peers"].as_array().map_or(0, Vec::len) != 1
            {
                return Err(format!("{} not ready", n.name));
            }
        }
        Ok(())
    });
    let client = Netns::new("client");
    let server = Netns::new("server");
    let cip = nodes[0].add_pod(&format!("cc{}", unique_id()), &client);
    let sip = nodes[1].add_pod(&format!("cs{}", unique_id()), &server);
    api.put(
        "pods",
        pod_object("x", "client", "node1", &cip, &[("app", "client")], &[]),
    );
    let sip: IpAddr = sip.parse().expect("ip");
    // The server pod, in tier `tier`.
    let server_pod = |tier: &str| {
        let labels = [("app", "server"), ("tier", tier)];
        let ports = [("http", "TCP", 80)];
        pod_object("x", "server", "node2", &sip.to_string(), &labels, &ports)
    };
    api.put("pods", server_pod("t0"));
    let _servers = Servers::start(&server, &[80]);
    let wait_open = |what: &str| {
        wait_for(what, Duration::from_secs(20), || {
            if probe_in(&client, sip, Proto::Tcp, 80, Duration::from_secs(1)) {
                Ok(())
            } else {
                Err("no".into())
            }
        })
    };
    wait_open("client reaches server");

    // 998 more pods (addresses in both nodes' blocks and beyond, on other nodes) and
    // 100 policies; 10 of them select the server and admit the client among others.
    for i in 0..998u32 {
        let ip = format!("10.244.{}.{}", 10 + i / 200, 2 + i % 200);
        let tier = format!("t{}", i % 10);
        let app = format!("app{}", i % 50);
        api.put(
            "pods",
            pod_object(
                "x",
                &format!("p{i}"),
                &format!("other{}", i % 20),
                &ip,
                &[("app", &app), ("tier", &tier)],
                &[],
            ),
        );
    }
    let policy = |i: usize| {
        let spec = json!({
            "podSelector": {"matchLabels": {"tier": format!("t{}", i % 10)}},
            "ingress": [{"from": [
                {"podSelector": {"matchLabels": {"app": format!("app{}", i % 50)}}},
                {"podSelector": {"matchLabels": {"app": "client"}}},
                {"ipBlock": {"cidr": format!("192.168.{i}.0/24"), "except": [format!("192.168.{i}.128/25")]}}
            ], "ports": [{"port": "http"}, {"port": 8000, "endPort": 8100}, {"port": 20000, "endPort": 40000}]}]
        });
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "x", "name": format!("np{i}")}, "spec": spec})
    };
    // The 100 policies in force (`on`) or none, as the server's node sees it.
    let set_policies = |on: bool| {
        for i in 0..100 {
            if on {
                api.put("networkpolicies", policy(i));
            } else {
                api.delete("networkpolicies", "x", &format!("np{i}"));
            }
        }
        let want = if on { 100 } else { 0 };
        wait_for("the policies in force", Duration::from_secs(60), || {
            let st = nodes[1].status();
            let p = &st["policy"];
            let isolated = p["pods"][0]["ingress"] == "isolated";
            if p["pods_known"] == 1000 && p["policies"] == want && isolated == on {
                Ok(())
            } else {
                Err(format!(
                    "{} pods, {} policies, server ingress {}",
                    p["pods_known"], p["policies"], p["pods"][0]["ingress"]
                ))
            }
        });
        assert!(
            probe_in(&client, sip, Proto::Tcp, 80, Duration::from_secs(1)),
            "the client is allowed"
        );
    };
    // Runs alternate between none and 100 policies, so a drift of the machine's speed
    // during the benchmark falls on both sides alike.
    let (mut open, mut loaded) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        set_policies(false);
        open.push(iperf3(&client, &server, sip, seconds));
        set_policies(true);
        loaded.push(iperf3(&client, &server, sip, seconds));
    }

    // Change to enforcement: a policy that admits nobody to the server's port 80 other
    // than a label no one has... the server is already selected, so isolate it harder:
    // relabel the server out of the tiers and put a deny-all on it.
    api.put("pods", server_pod("none"));
    let deny = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "x", "name": "deny-server"},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"]}});
    let until = |want: bool| -> Duration {
        let start = Instant::now();
        while probe_in(&client, sip, Proto::Tcp, 80, Duration::from_millis(100)) != want {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no change within 30 s"
            );
        }
        start.elapsed()
    };
    wait_open("server open again");
    let (mut deny_t, mut allow_t) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        api.put("networkpolicies", deny.clone());
        deny_t.push(until(false).as_secs_f64() * 1000.0);
        api.delete("networkpolicies", "x", "deny-server");
        allow_t.push(until(true).as_secs_f64() * 1000.0);
    }
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "netpol bench: {} cores, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        String::from_utf8_lossy(&host_exec("uname", &["-r"]).stdout).trim()
    );
    println!("policy put -> enforced (client refused): median {:.0} ms, max {:.0} ms over {rounds} rounds (probe timeout 100 ms included)", median(deny_t.clone()), max(&deny_t));
    println!(
        "policy deleted -> open again:          median {:.0} ms, max {:.0} ms",
        median(allow_t.clone()),
        max(&allow_t)
    );
    let (a, b) = (median(open.clone()), median(loaded.clone()));
    println!(
        "iperf3 pod to pod across nodes, no policy:                 median {a:.3} Gbit/s {open:?}"
    );
    println!("iperf3 with 1,000 pods and 100 policies (server selected): median {b:.3} Gbit/s {loaded:?}");
    println!("ratio loaded/none: {:.3}", b / a);
    // Each loaded run against the run with no policy just before it.
    let pairs: Vec<f64> = open.iter().zip(&loaded).map(|(o, l)| l / o).collect();
    println!(
        "ratio per pair of runs (loaded/none): median {:.3} {pairs:.3?}",
        median(pairs.clone())
    );
}
