//! End-to-end test of `--broadcast`: an IPv4 broadcast to the overlay network's
//! directed broadcast address reaches every other node when enabled, and is dropped
//! and counted when not. Run as root; everything lives in network namespaces.

mod common;

use common::mesh::gensecret;
use common::*;
use std::time::Duration;

/// Starts `n` gossip nodes with static overlay addresses 10.61.0.(i+1)/24 on `u`,
/// all joining the first, with `extra` flags.
fn mesh(u: &Underlay, secret: &str, extra: &[&str]) -> Vec<Daemon> {
    (0..u.hosts().len())
        .map(|i| {
            let h = u.host(i);
            let address = format!("10.61.0.{}/24", i + 1);
            let name = format!("b{}", i + 1);
            let join = format!("{}:51820", u.host(0).underlay_v4());
            let mut args = vec![
                "--address",
                &address,
                "--name",
                &name,
                "--secret-file",
                secret,
            ];
            if i > 0 {
                args.extend(["--join", join.as_str()]);
            }
            args.extend_from_slice(extra);
            Daemon::start(h, &args, "")
        })
        .collect()
}

fn all_peered(nodes: &[Daemon]) -> bool {
    nodes.iter().all(|d| {
        d.status_json()["peers"]
            .as_array()
            .is_some_and(|p| p.len() == nodes.len() - 1)
    })
}

#[test]
fn broadcast_reaches_every_node_only_when_enabled() {
    let dir = temp_dir("bcast");
    let secret = gensecret(dir.path(), "secret").display().to_string();
    for enabled in [true, false] {
        let u = Underlay::bridge(3);
        let extra: &[&str] = if enabled { &["--broadcast"] } else { &[] };
        let nodes = mesh(&u, &secret, extra);
        assert!(
            wait_until(Duration::from_secs(30), || all_peered(&nodes)),
            "mesh formed"
        );
        // Receivers on nodes 1 and 3, the sender on node 2.
        let mut receivers: Vec<Proc> = [0, 2]
            .iter()
            .map(|&i| {
                u.host(i)
                    .spawn("socat", &["-u", "UDP4-RECV:6000,reuseaddr", "STDOUT"])
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        for n in 0..5 {
            let line = format!("broadcast {n}");
            let out = u.host(1).exec(
                "sh",
                &[
                    "-c",
                    &format!("echo '{line}' | socat -u STDIN UDP4-DATAGRAM:10.61.0.255:6000,broadcast,bind=10.61.0.2"),
                ],
            );
            expect_success("socat sender", out);
            std::thread::sleep(Duration::from_millis(100));
        }
        let got = |p: &Proc| {
            p.stdout()
                .lines()
                .filter(|l| l.starts_with("broadcast "))
                .count()
        };
        if enabled {
            assert!(
                wait_until(Duration::from_secs(10), || receivers
                    .iter()
                    .all(|p| got(p) == 5)),
                "every broadcast reaches nodes 1 and 3: {:?}",
                receivers.iter().map(got).collect::<Vec<_>>()
            );
        } else {
            std::thread::sleep(Duration::from_secs(2));
            assert!(
                receivers.iter().all(|p| got(p) == 0),
                "no broadcast without --broadcast"
            );
            let dropped = nodes[1].status_json()["drops"]["broadcast_dropped"]
                .as_u64()
                .unwrap_or(0);
            assert!(
                dropped >= 5,
                "the sender counts dropped broadcasts: {dropped}"
            );
        }
        for r in &mut receivers {
            r.terminate(Duration::from_secs(2));
        }
    }
}
