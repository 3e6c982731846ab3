//! End-to-end test of a host outside a Kubernetes cluster as a member of its mesh (an
//! EC2 host beside EKS): two Kubernetes nodes (`weftnet up --kubernetes --ca-file`,
//! against the fake API server, pods wired by the installed CNI plugin) and two
//! standalone hosts with the cluster secret. The host the operator vouched for (a
//! certificate of the CA for its name, key and block, `--pod-range`) becomes a peer of
//! both nodes, pings a pod and is pinged by one, and receives a pod's TTL-1 group
//! traffic; the underlay has no route to the overlay's addresses, so every answer
//! crossed a tunnel. The host without a certificate is a gossip member but no node's
//! peer: its block is refused and counted on both nodes, it cannot reach a pod, and
//! it receives none of the group's traffic; restarted with a certificate, the same
//! host is admitted and reaches the pods. Run as root (`cargo test --test external`).

mod common;

use common::ca::{ca_init, ca_sign, keypair};
use common::kube_api::FakeApi;
use common::kube_node::KubeNode;
use common::mesh::*;
use common::*;
use serde_json::Value;
use std::time::Duration;

const CLUSTER_RANGE: &str = "10.244.0.0/16";
const POD_CIDRS: [&str; 2] = ["10.244.1.0/24", "10.244.2.0/24"];
/// The vouched host's block (in its certificate) and the stranger's.
const EC2_BLOCK: &str = "10.244.250.0/24";
const STRANGER_BLOCK: &str = "10.244.251.0/24";
const CONVERGE: Duration = Duration::from_secs(40);
const GROUP: &str = "239.7.7.7";

/// The peer entry for `key` in a status, if it is a peer.
fn peer(st: &Value, key: &str) -> Option<Value> {
    st["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["public_key"] == key).cloned())
}

/// Whether `key` is a peer in `st` routed for `prefix`.
fn routes(st: &Value, key: &str, prefix: &str) -> bool {
    peer(st, key).is_some_and(|p| {
        p["allowed_ips"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == prefix))
    })
}

/// Whether a member of `st` with `key` announces `group`.
fn announces(st: &Value, key: &str, group: &str) -> bool {
    st["cluster"]["members"].as_array().is_some_and(|ms| {
        ms.iter().any(|m| {
            m["public_key"] == key
                && m["groups"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|x| x == group))
        })
    })
}

/// Whether `to` answers pings from `from` within a generous bound.
fn reach(from: &Netns, to: &str) -> bool {
    wait_until(Duration::from_secs(15), || ping(from, to, 1))
}

#[test]
fn a_vouched_host_outside_the_cluster_reaches_pods_and_a_stranger_does_not() {
    let u = Underlay::bridge(4);
    let dir = temp_dir("external");
    let api = FakeApi::start_in(u.host(0), u.host(0).underlay_v4().into());
    let kubeconfig = dir.path().join("kubeconfig");
    api.kubeconfig(&kubeconfig);
    for (i, cidr) in POD_CIDRS.iter().enumerate() {
        api.add_node(
            &format!("node{}", i + 1),
            u.host(i).underlay_v4(),
            Some(cidr),
        );
    }
    let secret = gensecret(dir.path(), "secret");
    let ca = dir.path().join("ca");
    ca_init(&ca);
    let ca_crt = ca.join("ca.crt").display().to_string();
    // The Kubernetes nodes need no certificate of their own: their Nodes vouch.
    let nodes: Vec<KubeNode> = (0..2)
        .map(|i| {
            KubeNode::start_with(
                u.host(i),
                &format!("node{}", i + 1),
                &kubeconfig,
                &secret,
                dir.path(),
                CLUSTER_RANGE,
                &[format!("--ca-file={ca_crt}")],
            )
        })
        .collect();
    let seed = format!("{}:{PORT}", u.host(0).underlay_v4());
    let secret_arg = secret.display().to_string();
    // The vouched host: a certificate for its name, key and block.
    let (private, public) = keypair();
    let cert = ca_sign(&ca, "ec2-a", &public, &[EC2_BLOCK], dir.path());
    let ec2 = Daemon::start_with_key(
        u.host(2),
        &private,
        &[
            "--name",
            "ec2-a",
            "--secret-file",
            &secret_arg,
            "--ca-file",
            &ca_crt,
            "--cert-file",
            &cert,
            "--block",
            EC2_BLOCK,
            "--pod-range",
            CLUSTER_RANGE,
            "--join",
            &seed,
        ],
        "",
    );
    // The stranger: the cluster secret, but nobody vouched for it (yet).
    let (stranger_private, stranger_public) = keypair();
    let mut stranger = Daemon::start_with_key(
        u.host(3),
        &stranger_private,
        &[
            "--name",
            "ec2-b",
            "--secret-file",
            &secret_arg,
            "--block",
            STRANGER_BLOCK,
            "--join",
            &seed,
        ],
        "",
    );
    let (ec2_key, stranger_key) = (ec2.public_key(), stranger.public_key());
    let node_keys: Vec<String> = nodes.iter().map(|n| n.d.public_key()).collect();
    let took = wait_for(
        "the vouched host and the nodes route each other",
        CONVERGE,
        || {
            for n in &nodes {
                let st = n.status();
                if !routes(&st, &ec2_key, EC2_BLOCK) {
                    return Err(format!(
                        "{} does not route {EC2_BLOCK}: {}",
                        n.name, st["peers"]
                    ));
                }
            }
            let st = ec2.status_json();
            for (k, cidr) in node_keys.iter().zip(POD_CIDRS) {
                if !routes(&st, k, cidr) {
                    return Err(format!("ec2-a does not route {cidr}: {}", st["peers"]));
                }
            }
            Ok(())
        },
    );
    eprintln!("the vouched host joined in {took:?}");

    // A pod on each node; the vouched host reaches both, and each reaches it.
    let pods: Vec<(Netns, String)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let netns = Netns::new(&format!("pod{i}"));
            let ip = n.add_pod(&format!("c{i}{}", unique_id()), &netns);
            (netns, ip)
        })
        .collect();
    let ec2_addr = first_host(EC2_BLOCK).to_string();
    for (netns, ip) in &pods {
        assert!(reach(ec2.netns(), ip), "ec2-a cannot reach pod {ip}");
        assert!(reach(netns, &ec2_addr), "pod {ip} cannot reach ec2-a");
    }
    for n in &nodes {
        let p = peer(&n.status(), &ec2_key).expect("a peer");
        assert!(
            p["latest_handshake_secs"].as_u64().is_some() && p["rx_bytes"].as_u64() > Some(0),
            "{}: no tunnel traffic with ec2-a: {p}",
            n.name
        );
    }

    // The stranger is a gossip member, but no node's peer; its block is refused and
    // counted, and it cannot reach a pod.
    wait_for("the stranger is a gossip member", CONVERGE, || {
        let listed = nodes[0].status()["cluster"]["members"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["public_key"] == stranger_key.as_str()));
        listed.then_some(()).ok_or("not listed yet".to_string())
    });
    wait_for(
        "the stranger's block is refused",
        Duration::from_secs(10),
        || {
            for n in &nodes {
                let st = n.status();
                if st["drops"]["prefix_refused"].as_u64().unwrap_or(0) < 1 {
                    return Err(format!("{}: drops {}", n.name, st["drops"]));
                }
            }
            Ok(())
        },
    );
    for n in &nodes {
        let st = n.status();
        assert!(
            peer(&st, &stranger_key).is_none(),
            "{}: the stranger is a peer",
            n.name
        );
        let logs = n.d.logs();
        let refusals: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("refused a prefix"))
            .collect();
        assert!(
            refusals
                .iter()
                .any(|l| l.contains(STRANGER_BLOCK) && l.contains("ec2-b")),
            "{}: the stranger's block is not among the refusals: {refusals:#?}",
            n.name
        );
        assert!(
            !refusals
                .iter()
                .any(|l| l.contains(EC2_BLOCK) || l.contains("node=node")),
            "{}: a node's or the vouched host's block was refused: {refusals:#?}",
            n.name
        );
        assert!(
            routes(&st, &ec2_key, EC2_BLOCK),
            "{}: ec2-a lost its block",
            n.name
        );
    }
    assert!(
        !ping(stranger.netns(), &pods[0].1, 3),
        "the stranger reached a pod"
    );

    // TTL-1 group traffic from the pod on node1 reaches the vouched host (joined on
    // weft0) and never the stranger.
    let rx = |d: &Daemon| {
        d.netns().spawn(
            "socat",
            &[
                "-u",
                &format!("UDP4-RECV:5000,ip-add-membership={GROUP}:weft0"),
                "STDOUT",
            ],
        )
    };
    let (ec2_rx, stranger_rx) = (rx(&ec2), rx(&stranger));
    wait_for("node1 knows both receivers' group", JOIN_BOUND, || {
        let st = nodes[0].status();
        if announces(&st, &ec2_key, GROUP) && announces(&st, &stranger_key, GROUP) {
            Ok(())
        } else {
            Err(format!("members {}", st["cluster"]["members"]))
        }
    });
    let (sender, sender_ip) = &pods[0];
    for i in 0..5 {
        let dst =
            format!("UDP4-DATAGRAM:{GROUP}:5000,ip-multicast-if={sender_ip},ip-multicast-ttl=1");
        let mut cmd = sender.command("socat", &["-u", "STDIN", &dst]);
        expect_success(
            "multicast send",
            run_bounded(&mut cmd, Some(format!("mc {i}\n").as_bytes()), EXEC_TIMEOUT),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = wait_until(DELIVERY, || {
        ec2_rx
            .stdout()
            .lines()
            .filter(|l| l.starts_with("mc "))
            .count()
            >= 5
    });
    assert!(got, "ec2-a got {:?}\n{}", ec2_rx.stdout(), ec2_rx.logs());
    assert!(
        !stranger_rx.stdout().contains("mc "),
        "the stranger got group traffic: {:?}",
        stranger_rx.stdout()
    );
    drop(stranger_rx);

    // The operator vouches for the stranger: restarted with a certificate for its
    // key and block, the same host becomes a peer and reaches the pods.
    let cert = ca_sign(
        &ca,
        "ec2-b",
        &stranger_public,
        &[STRANGER_BLOCK],
        dir.path(),
    );
    stranger.stop();
    let stranger = Daemon::start_with_key(
        u.host(3),
        &stranger_private,
        &[
            "--name",
            "ec2-b",
            "--secret-file",
            &secret_arg,
            "--ca-file",
            &ca_crt,
            "--cert-file",
            &cert,
            "--block",
            STRANGER_BLOCK,
            "--pod-range",
            CLUSTER_RANGE,
            "--join",
            &seed,
        ],
        "",
    );
    assert_eq!(stranger.public_key(), stranger_key, "the same host");
    wait_for("the vouched-for stranger is routed", CONVERGE, || {
        for n in &nodes {
            let st = n.status();
            if !routes(&st, &stranger_key, STRANGER_BLOCK) {
                return Err(format!("{}: {}", n.name, st["peers"]));
            }
        }
        Ok(())
    });
    for (netns, ip) in &pods {
        assert!(reach(stranger.netns(), ip), "ec2-b cannot reach pod {ip}");
        assert!(
            reach(netns, &first_host(STRANGER_BLOCK).to_string()),
            "pod {ip} cannot reach ec2-b"
        );
    }
}
