//! End-to-end tests of the standalone cluster CA (`weftnet ca init`, `weftnet ca sign`,
//! `--ca-file`/`--cert-file`): in network namespaces, nodes with certificates of the
//! CA form a mesh; a node with the cluster secret but no certificate, or one of
//! another CA, never becomes a member; a node whose certificate allows block X and
//! that announces block Y is a member without a route to Y; a node whose certificate
//! does not fit it cannot start. Run as root (`cargo test --test cluster_ca`).

mod common;

use common::ca::{ca_init, ca_sign, keypair};
use common::mesh::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// How long after convergence a node that should never be admitted is watched.
const WATCH: Duration = Duration::from_secs(8);

struct Member {
    d: Daemon,
    name: &'static str,
    key: String,
}

/// Starts `name` on `host` with `private`, the secret, `--block block`, joining
/// `seed`, plus `extra`.
fn start(
    host: &Host,
    name: &'static str,
    private: &str,
    secret: &Path,
    block: &str,
    seed: Option<&Host>,
    extra: &[String],
) -> Member {
    let mut args: Vec<String> = vec![
        "--name".into(),
        name.into(),
        "--secret-file".into(),
        secret.display().to_string(),
        "--block".into(),
        block.into(),
    ];
    if let Some(s) = seed {
        args.push("--join".into());
        args.push(format!("{}:{PORT}", s.underlay_v4()));
    }
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start_with_key(host, private, &args, "");
    let key = d.public_key();
    Member { d, name, key }
}

fn member_state(st: &Value, key: &str) -> Option<String> {
    st["cluster"]["members"]
        .as_array()?
        .iter()
        .find(|m| m["public_key"] == key)
        .and_then(|m| m["state"].as_str().map(str::to_owned))
}

fn allowed_ips(st: &Value, key: &str) -> Vec<String> {
    st["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["public_key"] == key))
        .and_then(|p| p["allowed_ips"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn drops(st: &Value, name: &str) -> u64 {
    st["drops"][name].as_u64().unwrap_or(0)
}

#[test]
fn only_certified_members_join_and_only_with_their_blocks() {
    let u = Underlay::bridge(5);
    let dir = temp_dir("ca");
    let secret = gensecret(dir.path(), "secret");
    let ca = dir.path().join("ca");
    let rogue_ca = dir.path().join("rogue");
    ca_init(&ca);
    ca_init(&rogue_ca);
    let ca_crt = ca.join("ca.crt").display().to_string();
    let keys: Vec<(String, String)> = (0..5).map(|_| keypair()).collect();
    let trust = |cert: String, ca_crt: &str| -> Vec<String> {
        vec![
            "--ca-file".into(),
            ca_crt.to_owned(),
            "--cert-file".into(),
            cert,
        ]
    };
    // n1, n2: certified for their blocks. n3: certified for 10.47.3.0/24, announces
    // 10.47.4.0/24. n4: a certificate of another CA. n5: the secret, no certificate.
    let c1 = ca_sign(&ca, "n1", &keys[0].1, &["10.47.1.0/24"], dir.path());
    let c2 = ca_sign(&ca, "n2", &keys[1].1, &["10.47.2.0/24"], dir.path());
    let c3 = ca_sign(&ca, "n3", &keys[2].1, &["10.47.3.0/24"], dir.path());
    let c4 = ca_sign(&rogue_ca, "n4", &keys[3].1, &["10.47.5.0/24"], dir.path());
    let rogue_crt = rogue_ca.join("ca.crt").display().to_string();
    let h = u.hosts();
    let n1 = start(
        &h[0],
        "n1",
        &keys[0].0,
        &secret,
        "10.47.1.0/24",
        None,
        &trust(c1, &ca_crt),
    );
    let seed = Some(&h[0]);
    let n2 = start(
        &h[1],
        "n2",
        &keys[1].0,
        &secret,
        "10.47.2.0/24",
        seed,
        &trust(c2, &ca_crt),
    );
    let n3 = start(
        &h[2],
        "n3",
        &keys[2].0,
        &secret,
        "10.47.4.0/24",
        seed,
        &trust(c3, &ca_crt),
    );
    let n4 = start(
        &h[3],
        "n4",
        &keys[3].0,
        &secret,
        "10.47.5.0/24",
        seed,
        &trust(c4, &rogue_crt),
    );
    let n5 = start(&h[4], "n5", &keys[4].0, &secret, "10.47.6.0/24", seed, &[]);
    let certified = [&n1, &n2, &n3];
    let took = wait_for("certified members see each other", CONVERGE, || {
        for a in certified {
            let st = a.d.status_json();
            for b in certified {
                if a.key != b.key && member_state(&st, &b.key).as_deref() != Some("alive") {
                    return Err(format!("{} does not see {} alive", a.name, b.name));
                }
            }
        }
        Ok(())
    });
    eprintln!("3 certified nodes converged in {took:?}");
    // n1 and n2 reach each other over the mesh.
    wait_for("n1 pings n2", CONVERGE, || {
        ping(n1.d.netns(), "10.47.2.1", 1)
            .then_some(())
            .ok_or_else(|| "no answer".to_owned())
    });
    std::thread::sleep(WATCH);
    for a in certified {
        let st = a.d.status_json();
        for stranger in [&n4, &n5] {
            assert_eq!(
                member_state(&st, &stranger.key),
                None,
                "{} admitted {}: {st:#}",
                a.name,
                stranger.name
            );
            assert!(allowed_ips(&st, &stranger.key).is_empty(), "{st:#}");
        }
    }
    // n3 is a member, but its block Y is not routed anywhere.
    for a in [&n1, &n2] {
        let st = a.d.status_json();
        let ips = allowed_ips(&st, &n3.key);
        assert!(
            !ips.iter().any(|p| p.starts_with("10.47.4.")),
            "{} routes n3's uncertified block: {ips:?}",
            a.name
        );
        let routes = a.d.netns().ip(&["-4", "route", "show"]);
        assert!(!routes.contains("10.47.4.0/24"), "{}: {routes}", a.name);
        assert!(drops(&st, "prefix_refused") >= 1, "{}: {st:#}", a.name);
        assert!(
            a.d.logs().contains("outside the blocks of its certificate"),
            "{}: the refusal is logged with the member's name",
            a.name
        );
    }
    assert!(
        !ping(n3.d.netns(), "10.47.1.1", 2),
        "n3 reaches n1 from block Y"
    );
    // The strangers' gossip was dropped and counted as uncertified.
    let uncertified: u64 = [&n1, &n2, &n3]
        .iter()
        .map(|a| drops(&a.d.status_json(), "gossip_uncertified"))
        .sum();
    assert!(uncertified > 0, "no gossip_uncertified drops counted");
}

#[test]
fn a_certificate_that_does_not_fit_stops_the_start() {
    let u = Underlay::bridge(1);
    let dir = temp_dir("ca");
    let secret = gensecret(dir.path(), "secret");
    let ca = dir.path().join("ca");
    ca_init(&ca);
    let ca_crt = ca.join("ca.crt").display().to_string();
    let (private, _) = keypair();
    let (_, other_public) = keypair();
    let wrong_key = ca_sign(&ca, "n1", &other_public, &["10.47.1.0/24"], dir.path());
    let base = |cert: &str, ca_file: Option<&str>| -> Vec<String> {
        let mut v = vec![
            "--name".to_owned(),
            "n1".into(),
            "--secret-file".into(),
            secret.display().to_string(),
            "--block".into(),
            "10.47.1.0/24".into(),
            "--cert-file".into(),
            cert.into(),
        ];
        if let Some(c) = ca_file {
            v.push("--ca-file".into());
            v.push(c.into());
        }
        v
    };
    let cases = [
        (
            base(&wrong_key, Some(&ca_crt)),
            "issued for another public key",
        ),
        (base(&wrong_key, None), "--cert-file needs the cluster CA"),
        (
            base("/nonexistent.crt", Some(&ca_crt)),
            "cannot read node certificate",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = match Daemon::try_start_with_key(u.host(0), &private, &args, "") {
            Ok(_) => panic!("started with {args:?}"),
            Err(e) => e,
        };
        assert!(err.contains(want), "want {want:?} in:\n{err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("weftnet: error:"))
            .unwrap_or_else(|| panic!("no error line in:\n{err}"));
        assert!(line.contains(want), "{line}");
    }
}
