//! Teardown by ownership, end to end: `weftnet up` made to fail right after each
//! start-up step (the debug build's `WEFTNET_FAIL_AT` test hook) exits non-zero and
//! leaves the host exactly as it was: links, addresses, routes, NAT rules, forwarding
//! sysctls and the control socket. A stop for a restart (SIGTERM) keeps the overlay
//! interface and the NAT chain for the next run, and a restart failing after any step
//! leaves the host as that stop left it; a stop for good (SIGINT, `weftnet leave`)
//! removes what is weftnet's alone. Both keep what pods need while weftnet is down
//! (the bridge, its gateway, the guard route). Run as root (`cargo test --test teardown`); everything lives in namespaces.

mod common;

use common::mesh::gensecret;
use common::*;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// The start-up steps, in order (see `src/daemon/mod.rs`).
const STEPS: [&str; 7] = [
    "interface",
    "advertise",
    "bridge",
    "masquerade",
    "addresses",
    "dataplane",
    "control socket",
];

const BRIDGE: &str = "weftbr0";
const RANGE: &str = "10.244.0.0/16";

/// What the host has that weftnet could change.
fn snapshot(ns: &Netns) -> String {
    let mut s = String::new();
    for args in [
        &["-br", "link"][..],
        &["-br", "addr"],
        &["route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
    ] {
        s.push_str(&ns.ip(args));
    }
    for tool in ["iptables-save", "ip6tables-save"] {
        s.push_str(&rules(&ns.run(tool, &["-t", "nat"])));
    }
    for knob in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        s.push_str(&format!("{knob} {}", ns.run("cat", &[knob])));
    }
    s
}

/// A snapshot without the links' carrier and operational states, which a daemon
/// attaching to and leaving the persistent interface changes for a moment (the
/// bridge follows its ports).
fn settled(snapshot: &str) -> String {
    snapshot
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter(|t| !matches!(*t, "UP" | "DOWN" | "UNKNOWN" | "linkdown"))
                .map(|t| t.replace("NO-CARRIER,", "").replace(",LOWER_UP", ""))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The rules and user chains of an `iptables-save` dump (the table and its built-in
/// chains may appear once the tool has been used, which is not weftnet's doing).
fn rules(dump: &str) -> String {
    const BUILTIN: [&str; 4] = [":PREROUTING", ":INPUT", ":OUTPUT", ":POSTROUTING"];
    dump.lines()
        .filter(|l| {
            l.starts_with("-A") || (l.starts_with(':') && !BUILTIN.iter().any(|b| l.starts_with(b)))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Runs `weftnet up` in bridge mode with a range and masquerading, until it exits
/// (bounded), with `fail_at` set as the test hook.
fn up_failing(host: &Host, state: &Path, secret: &Path, fail_at: &str) -> Output {
    let mut cmd = host.netns().command(
        Daemon::bin(),
        &[
            "up".as_ref(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--interface".as_ref(),
            "wtfail0".as_ref(),
            "--secret-file".as_ref(),
            secret.as_os_str(),
            "--range".as_ref(),
            RANGE.as_ref(),
            "--bridge".as_ref(),
            BRIDGE.as_ref(),
            "--masquerade".as_ref(),
        ] as &[&std::ffi::OsStr],
    );
    hermetic_env(&mut cmd);
    cmd.env("WEFTNET_FAIL_AT", fail_at).env("NO_COLOR", "1");
    run_bounded(&mut cmd, None, Duration::from_secs(30))
}

#[test]
fn a_failure_after_any_start_up_step_leaves_the_host_as_it_was() {
    let u = Underlay::bridge(1);
    let host = u.host(0);
    let dir = temp_dir("teardown");
    let secret = gensecret(dir.path(), "secret");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let before = snapshot(host.netns());
    for step in STEPS {
        let out = up_failing(host, &state, &secret, step);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{step}: weftnet up succeeded:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("start-up failed at {step}")),
            "{step}: another failure:\n{stderr}"
        );
        let after = snapshot(host.netns());
        assert_eq!(before, after, "{step}: the host changed:\n{stderr}");
        assert!(!state.join("weftnet.sock").exists(), "{step}: socket left");
    }
}

/// What a stopped node leaves for pods in every case: the bridge with its gateway, and
/// the guard route for the range.
fn assert_pods_keep_their_network(host: &Host, block: &str) {
    assert!(host.netns().has_link(BRIDGE), "the bridge stays");
    let gateway = block.replace(".0/24", ".1/24");
    let addrs = host.netns().ip(&["-br", "addr", "show", BRIDGE]);
    assert!(
        addrs.contains(&gateway),
        "the gateway {gateway} stays: {addrs}"
    );
    let routes = host.netns().ip(&["route", "show", "table", "all"]);
    assert!(
        routes.contains(&format!("unreachable {RANGE}")),
        "the guard route stays: {routes}"
    );
}

#[test]
fn a_restart_keeps_the_interface_a_failed_restart_changes_nothing_and_a_leave_removes_it() {
    let u = Underlay::bridge(1);
    let host = u.host(0);
    let dir = temp_dir("teardown");
    let secret = gensecret(dir.path(), "secret");
    let before = snapshot(host.netns());
    let secret_arg = secret.to_string_lossy().to_string();
    let mut d = Daemon::start(
        host.netns(),
        &[
            "--interface",
            "wtfail0",
            "--secret-file",
            &secret_arg,
            "--range",
            RANGE,
            "--bridge",
            BRIDGE,
            "--masquerade",
        ],
        "",
    );
    let block = {
        let ok = wait_until(Duration::from_secs(20), || {
            d.status_json()["cluster"]["block"].as_str().is_some()
        });
        assert!(ok, "no block claimed:\n{}", d.logs());
        d.status_json()["cluster"]["block"]
            .as_str()
            .expect("block")
            .to_string()
    };
    let running = snapshot(host.netns());
    assert!(running.contains("wtfail0"), "{running}");
    assert!(running.contains("WEFTNET-POSTROUTING"), "{running}");

    // SIGTERM is a restart: the overlay interface with its address and routes and
    // the NAT chain stay; the L2 port and the control socket go.
    assert!(d.stop().success(), "{}", d.logs());
    let stopped = snapshot(host.netns());
    assert!(
        stopped.contains("wtfail0 "),
        "the interface stays:\n{stopped}"
    );
    let routes = host.netns().ip(&["route", "show", RANGE]);
    assert!(routes.contains("dev wtfail0"), "its route stays: {routes}");
    assert!(!stopped.contains("-l2"), "the L2 port is gone:\n{stopped}");
    assert!(stopped.contains("WEFTNET-POSTROUTING"), "{stopped}");
    assert!(!d.state_dir().join("weftnet.sock").exists());
    assert_pods_keep_their_network(host, &block);

    // A restart failing after any step leaves the host as the last run left it: what
    // it adopted stays, what it made is removed.
    for step in STEPS {
        let out = up_failing(host, d.state_dir(), &secret, step);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("start-up failed at {step}")),
            "{step}: another failure:\n{stderr}"
        );
        assert_eq!(
            settled(&stopped),
            settled(&snapshot(host.netns())),
            "{step}: a failed restart changed the host:\n{stderr}"
        );
    }

    // SIGINT (as `weftnet leave`) stops for good: the interface and the NAT chain go,
    // what pods need stays.
    d.start_again();
    d.proc().signal(libc::SIGINT);
    let status = d
        .proc()
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running after SIGINT:\n{}", d.logs()));
    assert!(status.success(), "{status}\n{}", d.logs());
    let after = snapshot(host.netns());
    assert_ne!(before, after, "the bridge stays");
    assert!(
        !after.contains("wtfail0"),
        "the overlay interface is gone:\n{after}"
    );
    assert!(
        !after.contains("WEFTNET"),
        "the NAT chain is gone:\n{after}"
    );
    assert_pods_keep_their_network(host, &block);
    assert!(!d.state_dir().join("weftnet.sock").exists());
}

#[test]
fn a_dead_data_plane_thread_stops_the_node_loudly() {
    let ns = Netns::new("dpdead");
    let mut d = Daemon::start(
        &ns,
        &[
            "--interface",
            "wtdead0",
            "--address",
            "10.203.0.1/24",
            "--health-listen",
            "127.0.0.1:9901",
        ],
        "",
    );
    // Deleting the TUN from outside makes the data plane's reads fail.
    ns.ip(&["link", "del", "wtdead0"]);
    let status = d
        .proc()
        .wait_timeout(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the daemon kept running:\n{}", d.logs()));
    assert!(!status.success(), "exited 0:\n{}", d.logs());
    assert!(
        d.stderr().contains("the data plane stopped"),
        "no reason given:\n{}",
        d.logs()
    );
    assert!(!d.state_dir().join("weftnet.sock").exists());
}
