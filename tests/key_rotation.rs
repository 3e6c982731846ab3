//! End-to-end tests of node key rotation (PROTOCOL.md §6.13): `weftnet rotate-key`
//! on either end of a running TCP stream, and `--key-lifetime` rotating on its own.
//! Every node must end with the new key for the rotated member, no member and no
//! tunnel with the old one, and the stream must survive.
//! Run as root (`cargo test --test key_rotation`); everything is created inside
//! namespaces.

mod common;

use common::mesh::*;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Length of the TCP stream that must survive the rotations.
const STREAM_SECS: u32 = 16;
/// `--key-lifetime` of the third node.
const LIFETIME: &str = "20s";
/// How long the mesh may take to move to a new key.
const SWITCH_BOUND: Duration = Duration::from_secs(20);

/// `weftnet rotate-key --state-dir DIR`, which waits until the daemon runs with the
/// new key; returns the new key.
fn rotate_key(n: &Node) -> String {
    let out = n.d.cli(&[
        "rotate-key",
        "--state-dir",
        n.d.state_dir().to_str().expect("utf-8 path"),
    ]);
    let text = expect_success("weftnet rotate-key", out);
    assert!(text.contains("rotated the key"), "{text}");
    let key = n.d.public_key();
    assert!(text.contains(&key), "{text} does not name {key}");
    key
}

/// Whether `observer` sees `name` alive with exactly `key`, no member with `old`, and
/// no tunnel (peer) with `old`.
fn switched(observer: &Node, name: &str, key: &str, old: &str) -> Result<(), String> {
    let st = observer
        .d
        .try_status_json()
        .ok_or_else(|| format!("{}: no status", observer.name))?;
    let members = st["cluster"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let of_name: Vec<&Value> = members.iter().filter(|m| m["name"] == name).collect();
    let ok =
        of_name.len() == 1 && of_name[0]["public_key"] == key && of_name[0]["state"] == "alive";
    if !ok {
        return Err(format!("{} sees {name} as {of_name:?}", observer.name));
    }
    if members.iter().any(|m| m["public_key"] == old) {
        return Err(format!(
            "{} still has a member with the old key",
            observer.name
        ));
    }
    let peers = st["peers"].as_array().cloned().unwrap_or_default();
    if peers.iter().any(|p| p["public_key"] == old) {
        return Err(format!(
            "{} still has a tunnel with the old key",
            observer.name
        ));
    }
    if !peers.iter().any(|p| p["public_key"] == key) {
        return Err(format!("{} has no tunnel with the new key", observer.name));
    }
    Ok(())
}

#[test]
fn a_tcp_stream_survives_rotate_key_on_either_end_and_a_lifetime_rotates_on_its_own() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("rotate");
    let mut nodes = start_mesh(u.hosts(), dir.path(), |i| {
        let mut extra = vec!["--range".to_string(), RANGE.to_string()];
        if i == 2 {
            extra.extend(["--key-lifetime".to_string(), LIFETIME.to_string()]);
        }
        extra
    });
    let server_addr = nodes[1].block_host();
    let (client, server) = (nodes[0].d.netns().clone(), nodes[1].d.netns().clone());
    let stream = BackgroundStream::start(client, server, server_addr, STREAM_SECS);
    let t0 = Instant::now();
    // n1 (the client) at 3 s, n2 (the server) at 9 s.
    for (i, at) in [(0usize, 3u64), (1, 9)] {
        std::thread::sleep(Duration::from_secs(at).saturating_sub(t0.elapsed()));
        let old = nodes[i].key.clone();
        let pid = nodes[i].d.pid();
        let took = Instant::now();
        let new = rotate_key(&nodes[i]);
        assert_ne!(new, old, "{}: a new key", nodes[i].name);
        assert_eq!(nodes[i].d.pid(), pid);
        assert!(
            nodes[i].d.is_running(),
            "{}: restarted in place",
            nodes[i].name
        );
        eprintln!(
            "{} rotated at {:.1} s (rotate-key took {:?})",
            nodes[i].name,
            t0.elapsed().as_secs_f64(),
            took.elapsed()
        );
        let st = nodes[i].d.status_json();
        assert_eq!(st["key_generation"], 1, "{st:#}");
        assert!(
            st["key_age_secs"].as_u64().is_some_and(|a| a < 10),
            "{st:#}"
        );
        nodes[i].key = new;
        let name = nodes[i].name.clone();
        let (key, observers) = (nodes[i].key.clone(), [(i + 1) % 3, (i + 2) % 3]);
        let took = wait_for("the mesh moves to the new key", SWITCH_BOUND, || {
            observers
                .iter()
                .try_for_each(|&o| switched(&nodes[o], &name, &key, &old))
        });
        eprintln!("{name}: every node switched to the new key in {took:?}");
    }
    stream.assert_survived("2 rotations");

    // n3 rotates on its own once its key is LIFETIME old; the others follow.
    let n3_first = nodes[2].key.clone();
    let took = wait_for(
        "n3 rotates by --key-lifetime",
        Duration::from_secs(40),
        || {
            let st = nodes[2].d.try_status_json().ok_or("no status")?;
            let key = st["public_key"].as_str().unwrap_or_default().to_owned();
            if key == n3_first || st["key_generation"].as_u64().unwrap_or(0) < 1 {
                return Err(format!(
                    "n3 still runs with its first key: {}",
                    st["key_generation"]
                ));
            }
            let old = n3_first.clone();
            [0, 1]
                .iter()
                .try_for_each(|&o| switched(&nodes[o], "n3", &key, &old))
        },
    );
    eprintln!("n3 rotated by its lifetime and the mesh followed ({took:?} after the stream)");
    // The rotations were no leave and no death: n1 and n2 still see each other alive.
    for (a, b) in [(0, 1), (1, 0)] {
        switched(
            &nodes[a],
            &nodes[b].name.clone(),
            &nodes[b].key.clone(),
            "-",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A node without gossip (static peers name it by its key) refuses to rotate, with
/// one line that says why, and keeps running with its key.
#[test]
fn rotate_key_without_gossip_is_refused_and_changes_nothing() {
    let ns = Netns::new("rotnogossip");
    let mut d = Daemon::start(&ns, &["--address", "10.47.0.1/16"], "");
    let key = d.public_key();
    let out = d.cli(&[
        "rotate-key",
        "--state-dir",
        d.state_dir().to_str().expect("utf-8 path"),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key rotation needs gossip"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(d.is_running());
    assert_eq!(d.public_key(), key);
    assert!(!d.state_dir().join("rotated.key").exists());
}
