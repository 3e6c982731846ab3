//! End-to-end test of `weftnet uninstall`: a bridge-mode daemon with a range and
//! masquerading is SIGKILLed (so it cleans nothing up), and `weftnet uninstall` with the
//! same config file removes what it left: the overlay interface and L2 port, the bridge
//! (kept while a pod's veth is on it), the guard route, the nat chain, the CNI files
//! and the state directory (the key only with `--purge-key`). It refuses while the
//! daemon runs, and a last run finds nothing. Also `status --config`. Run as root
//! (`cargo test --test uninstall`); everything lives in namespaces and temp dirs.

mod common;

use common::mesh::gensecret;
use common::*;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const INTERFACE: &str = "wtun0";
const PORT: &str = "wtun0-l2";
const BRIDGE: &str = "weftbr0";
const RANGE: &str = "10.244.0.0/16";

/// `weftnet uninstall` with the daemon's config file and state dir, the CNI
/// directories under `cni`, and `extra`.
fn uninstall(d: &Daemon, cni: &Path, extra: &[&str]) -> Output {
    let path = |p: &Path| p.display().to_string();
    let mut args = vec![
        "uninstall".to_string(),
        "--config".into(),
        path(d.config_path()),
        "--state-dir".into(),
        path(d.state_dir()),
        "--cni-bin-dir".into(),
        path(&cni.join("bin")),
        "--cni-conf-dir".into(),
        path(&cni.join("net.d")),
        "--cni-data-dir".into(),
        path(&cni.join("data")),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    d.cli(&args)
}

/// Stdout of a run that must succeed.
fn ok(what: &str, out: Output) -> String {
    expect_success(what, out)
}

fn guard_route(ns: &Netns) -> bool {
    ns.ip(&["route", "show", "table", "all"])
        .contains(&format!("unreachable {RANGE}"))
}

fn nat_chain(ns: &Netns) -> bool {
    ns.exec("iptables", &["-t", "nat", "-S", "WEFTNET-POSTROUTING"])
        .status
        .success()
        || ns
            .run("iptables", &["-t", "nat", "-S", "POSTROUTING"])
            .contains("WEFTNET")
}

#[test]
fn uninstall_removes_what_a_killed_daemon_left() {
    let u = Underlay::bridge(1);
    let ns = u.host(0).netns();
    let dir = temp_dir("uninstall");
    let secret = gensecret(dir.path(), "secret");
    let config = format!(
        "interface = \"{INTERFACE}\"\nbridge = \"{BRIDGE}\"\nmasquerade = true\n\
         [cluster]\nsecret_file = \"{}\"\nrange = \"{RANGE}\"\n",
        secret.display()
    );
    let mut d = Daemon::start(ns, &[], &config);
    let claimed = wait_until(Duration::from_secs(20), || {
        d.status_json()["cluster"]["block"].as_str().is_some()
    });
    assert!(claimed, "no block claimed:\n{}", d.logs());

    // `status` finds the daemon through a config file's state_dir.
    let ctl = dir.path().join("ctl.toml");
    std::fs::write(
        &ctl,
        format!("state_dir = \"{}\"\n", d.state_dir().display()),
    )
    .expect("write ctl.toml");
    let ctl = ctl.display().to_string();
    let text = ok("status --config", d.cli(&["status", "--config", &ctl]));
    assert!(text.contains(INTERFACE), "{text}");

    // The CNI files Kubernetes mode installs (this daemon is not in it), an older
    // version's conflist, and another CNI's files, which stay.
    let cni = dir.path().join("cni");
    for sub in ["bin", "net.d", "data"] {
        std::fs::create_dir_all(cni.join(sub)).expect("cni dir");
    }
    for file in [
        "net.d/00-weftnet.conflist",
        "net.d/10-weftnet.conflist",
        "net.d/10-calico.conflist",
        "bin/weftnet",
        "bin/bridge",
        "data/10.244.1.2",
    ] {
        std::fs::write(cni.join(file), "x").expect("cni file");
    }

    let refused = uninstall(&d, &cni, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "ran beside the daemon: {stderr}");
    assert!(stderr.contains("stop it first"), "{stderr}");
    assert!(ns.has_link(BRIDGE) && nat_chain(ns), "refused, yet removed");

    d.kill();
    // The overlay TUN is persistent: it outlives the process for the next run to adopt.
    assert!(ns.has_link(INTERFACE), "the persistent TUN is left behind");
    // The L2 port goes with its process; one left by a crash mid-start is removed too.
    assert!(
        wait_until(Duration::from_secs(5), || !ns.has_link(PORT)),
        "the L2 port outlived its process"
    );
    ns.ip(&["tuntap", "add", "dev", PORT, "mode", "tap"]);
    ns.ip(&["link", "set", PORT, "master", BRIDGE]);
    // A pod still on the bridge.
    ns.ip(&[
        "link",
        "add",
        "vpod",
        "type",
        "veth",
        "peer",
        "name",
        "vpod-peer",
    ]);
    ns.ip(&["link", "set", "vpod", "master", BRIDGE]);
    assert!(guard_route(ns), "no guard route left to remove");
    assert!(nat_chain(ns), "no nat chain left to remove");
    assert!(d.state_dir().join("weftnet.sock").exists());
    let key = d.state_dir().join("private.key");
    assert!(key.exists());

    let text = ok("uninstall", uninstall(&d, &cni, &[]));
    eprintln!("{text}");
    assert!(!ns.has_link(INTERFACE), "{text}");
    assert!(!ns.has_link(PORT), "{text}");
    assert!(ns.has_link(BRIDGE), "the pod's bridge stays: {text}");
    assert!(
        text.contains("kept bridge weftbr0: vpod still attached"),
        "{text}"
    );
    assert!(!guard_route(ns), "{text}");
    assert!(!nat_chain(ns), "{text}");
    let left = |p: &str| cni.join(p).exists();
    assert!(!left("net.d/00-weftnet.conflist") && !left("net.d/10-weftnet.conflist"));
    assert!(!left("bin/weftnet") && !left("data"), "{text}");
    assert!(left("net.d/10-calico.conflist") && left("bin/bridge"));
    assert!(key.exists(), "the key stays without --purge-key: {text}");
    let state: Vec<_> = std::fs::read_dir(d.state_dir())
        .expect("state dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(state, ["private.key"], "{text}");
    assert!(text.contains("uninstalled from this node but for what is kept above"));
    assert!(text.contains("weftnet.io/* annotations"), "{text}");

    // The pod is gone: the bridge goes, and the key with --purge-key.
    ns.ip(&["link", "del", "vpod"]);
    let text = ok(
        "uninstall --purge-key",
        uninstall(&d, &cni, &["--purge-key"]),
    );
    assert!(!ns.has_link(BRIDGE), "{text}");
    assert!(!d.state_dir().exists(), "{text}");
    assert!(
        text.ends_with("weftnet is uninstalled from this node\n"),
        "{text}"
    );

    let text = ok("uninstall again", uninstall(&d, &cni, &["--purge-key"]));
    assert!(text.contains("nothing left to remove"), "{text}");
    assert!(!text.contains("removed"), "{text}");
}
