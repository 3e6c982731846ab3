//! Standalone policy (`[[policy]]` in the config file) end to end: three gossip nodes,
//! each with its own block; node 2 lets in only node 1's block, on port 80 (TCP and
//! UDP). Node 1 reaches node 2 on port 80 and not on 81; node 3 reaches it on no port;
//! node 2's replies and its own connections out are unaffected; the status shows the
//! entry with its drops; the table goes with the daemon.
//! Run as root (`cargo test --test netpol_standalone`).

mod common;

use common::mesh::*;
use common::probe::*;
use common::*;
use std::net::IpAddr;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_millis(1500);

#[test]
fn a_standalone_policy_admits_only_its_sources_and_ports() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("netpol-standalone");
    let secret = gensecret(dir.path(), "secret");
    let policy = "[[policy]]\nprefix = \"10.47.2.0/24\"\nallow_from = [\"10.47.1.0/24\"]\nports = [\"tcp/80\", \"udp/80\"]\n";
    let mut nodes: Vec<Daemon> = (0..3)
        .map(|i| {
            let mut args = vec![
                format!("--name=n{}", i + 1),
                format!("--secret-file={}", secret.display()),
                format!("--range={RANGE}"),
                format!("--block=10.47.{}.0/24", i + 1),
            ];
            if i > 0 {
                args.push(format!("--join={}:{PORT}", u.host(0).underlay_v4()));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Daemon::start(u.host(i), &args, if i == 1 { policy } else { "" })
        })
        .collect();
    wait_for("mesh", CONVERGE, || {
        for (i, n) in nodes.iter().enumerate() {
            let peers = n.status_json()["peers"].as_array().map_or(0, Vec::len);
            if peers != 2 {
                return Err(format!("n{} has {peers} peers", i + 1));
            }
        }
        Ok(())
    });
    let target: IpAddr = "10.47.2.1".parse().expect("ip");
    let _servers = Servers::start(u.host(1), &[80, 81]);
    let probe = |from: usize, proto, port| probe_in(u.host(from), target, proto, port, TIMEOUT);
    wait_for(
        "node 1 reaches node 2 on port 80",
        Duration::from_secs(20),
        || {
            if probe(0, Proto::Tcp, 80) && probe(0, Proto::Udp, 80) {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    );
    assert!(!probe(0, Proto::Tcp, 81), "port 81 is not allowed");
    assert!(!probe(0, Proto::Udp, 81), "port 81 is not allowed");
    for (proto, port) in [(Proto::Tcp, 80), (Proto::Udp, 80), (Proto::Tcp, 81)] {
        assert!(
            !probe(2, proto, port),
            "node 3 is not an allowed source ({proto:?}/{port})"
        );
    }
    // Node 2's own connections out (and their replies) pass.
    let _servers1 = Servers::start(u.host(2), &[80]);
    assert!(probe_in(
        u.host(1),
        "10.47.3.1".parse().expect("ip"),
        Proto::Tcp,
        80,
        TIMEOUT
    ));

    let st = nodes[1].status_json();
    let entry = &st["policy"]["pods"][0];
    assert_eq!(entry["pod"], "standalone/policy-1", "{}", st["policy"]);
    assert_eq!(entry["ingress"], "isolated");
    assert_eq!(entry["egress"], "open");
    wait_for("drops counted", Duration::from_secs(10), || {
        let n = nodes[1].status_json()["policy"]["pods"][0]["ingress_drops"]
            .as_u64()
            .unwrap_or(0);
        if n > 0 {
            Ok(())
        } else {
            Err(format!(
                "no drops yet: {}\n{}",
                nodes[1].status_json()["policy"],
                u.host(1).run("nft", &["-j", "list", "counters"])
            ))
        }
    });
    // A restart (SIGTERM) keeps the table; a stop for good (SIGINT) removes it.
    let host = u.host(1);
    let table = || {
        host.exec("nft", &["list", "table", "inet", "weftnet_policy"])
            .status
            .success()
    };
    let mut n1 = nodes.remove(1);
    assert!(n1.stop().success(), "{}", n1.logs());
    assert!(table(), "a restart removed the policy table");
    n1.start_again();
    assert!(n1.stop_for_good().success(), "{}", n1.logs());
    assert!(!table(), "the policy table survived a stop for good");
    drop(nodes);
}
