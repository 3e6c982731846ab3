//! End-to-end tests of what a node tells the operator when the mesh cannot form or is
//! misconfigured: a node with the wrong cluster secret shows its seed as not answering
//! in `weftnet status` and warns on stderr, the seed warns about the stranger's
//! datagrams, and two live nodes sharing a name are reported (and `weftnet forget NAME`
//! asks for the key). Run as root (`cargo test --test diagnostics`); everything is
//! created inside namespaces.

mod common;

use common::mesh::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// How long the silent-seed warning may take: the reconciler's bound (10 s after the
/// join) plus a generous margin for start-up and a slow machine.
const SEED_WARNING: Duration = Duration::from_secs(25);

/// Start node `name` on `host` with `secret` and `--range`, joining through `seed`.
fn start(host: &Host, name: &str, secret: &Path, seed: Option<&Host>) -> Node {
    start_node(host, name, &[secret], seed, &["--range", RANGE])
}

/// `cluster.seeds` of `n`'s status.
fn seeds(n: &Node) -> Vec<Value> {
    let st = n.d.status_json();
    st["cluster"]["seeds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `n`'s stderr contains `text`.
fn wait_logged(n: &Node, text: &str, bound: Duration) -> Duration {
    wait_for(&format!("{} logs {text:?}", n.name), bound, || {
        if n.d.stderr().contains(text) {
            Ok(())
        } else {
            Err(format!("stderr so far:\n{}", n.d.stderr()))
        }
    })
}

/// `weftnet CMD ARGS... --state-dir DIR` on `n`.
fn cli(n: &Node, args: &[&str]) -> std::process::Output {
    let sd = n.d.state_dir().display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--state-dir", sd.as_str()]);
    n.d.cli(&all)
}

#[test]
fn a_node_with_the_wrong_secret_warns_and_shows_its_seed_not_answering() {
    let u = Underlay::bridge(2);
    let dir = temp_dir("diag");
    let good = gensecret(dir.path(), "good");
    let bad = gensecret(dir.path(), "bad");
    let n1 = start(u.host(0), "n1", &good, None);
    let stranger = start(u.host(1), "n2", &bad, Some(u.host(0)));
    let seed = format!("{}:{PORT}", u.host(0).underlay_v4());

    let took = wait_logged(&stranger, "no seed has answered", SEED_WARNING);
    eprintln!("wrong secret: the stranger warned after {took:?}");
    let log = stranger.d.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("no seed has answered"))
        .unwrap_or_default();
    for words in [
        seed.as_str(),
        "WARN",
        "cluster secret",
        "firewall",
        "no route",
    ] {
        assert!(line.contains(words), "no {words:?} in {line}");
    }
    assert_eq!(
        seeds(&stranger),
        vec![serde_json::json!({
            "seed": seed,
            "source": "join",
            "address": seed,
            "state": "not_answering",
        })],
        "the stranger's seeds"
    );
    let text = expect_success("weftnet status", cli(&stranger, &["status"]));
    assert!(
        text.contains(&format!("seeds: {seed} not answering")),
        "status:\n{text}"
    );

    // The seed names the stranger's address, once (its join attempts are rate-limited).
    let from = format!(
        "datagrams from {}:{PORT} fail authentication",
        u.host(1).underlay_v4()
    );
    wait_logged(&n1, &from, Duration::from_secs(10));
    let log = n1.d.stderr();
    assert!(
        log.contains("another cluster secret, or is not weftnet"),
        "{log}"
    );
    assert_eq!(log.matches(&from).count(), 1, "rate-limited:\n{log}");
    assert!(seeds(&n1).is_empty(), "n1 has no seed");
}

#[test]
fn two_nodes_sharing_a_name_are_reported_and_forget_asks_for_the_key() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("diag");
    let secret = gensecret(dir.path(), "secret");
    let n1 = start(u.host(0), "n1", &secret, None);
    let twin1 = start(u.host(1), "twin", &secret, Some(u.host(0)));
    let twin2 = start(u.host(2), "twin", &secret, Some(u.host(0)));
    let took = wait_logged(
        &n1,
        "live nodes share the name twin",
        Duration::from_secs(30),
    );
    eprintln!("shared name reported after {took:?}");
    let log = n1.d.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("share the name twin"))
        .unwrap_or_default();
    assert!(
        line.contains(&twin1.key) && line.contains(&twin2.key),
        "{line}"
    );
    for twin in [&twin1, &twin2] {
        wait_logged(
            twin,
            "share the name twin (this node among them)",
            Duration::from_secs(10),
        );
        let s = seeds(twin);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0]["state"], "answering", "{s:?}");
    }

    let out = cli(&n1, &["forget", "twin"]);
    assert!(!out.status.success(), "forget twin: {}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let err = err.trim_end();
    assert_eq!(err.lines().count(), 1, "not one line:\n{err}");
    for words in ["ambiguous", &twin1.key, &twin2.key, "weftnet forget KEY"] {
        assert!(err.contains(words), "no {words:?} in {err}");
    }
    // By key, the answer is about that member (it is alive, so it stays).
    let out = cli(&n1, &["forget", &twin1.key]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("alive"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        log.matches("share the name twin").count(),
        1,
        "once per pair:\n{log}"
    );
}
