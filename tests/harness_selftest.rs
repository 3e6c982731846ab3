//! Self-test of the e2e harness in `tests/common`: topologies carry traffic, wireguard-go works,
//! commands are bounded, and every guard cleans up, including while a test panics.

mod common;

use common::*;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a test body created, to verify it is all gone afterwards.
#[derive(Default)]
struct Created {
    netns: Vec<String>,
    pids: Vec<u32>,
    sockets: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Created {
    fn underlay(&mut self, u: &Underlay) {
        self.netns.extend(u.netns_names());
    }
    fn wg(&mut self, w: &WireguardGo) {
        self.pids.push(w.pid());
        self.sockets.push(wg_socket_path(w.ifname()));
    }

    /// Everything recorded is gone; nothing in the root namespace carries a harness id.
    fn assert_gone(&self) {
        let live = list_netns();
        for ns in &self.netns {
            assert!(!live.contains(ns), "namespace {ns} still exists: {live:?}");
            assert!(
                !PathBuf::from("/run/netns").join(ns).exists(),
                "/run/netns/{ns} still exists"
            );
        }
        let ids: Vec<&str> = self.netns.iter().map(|n| &n[..10]).collect();
        for link in root_links() {
            assert!(
                !ids.iter().any(|id| link.starts_with(id)),
                "root namespace link {link} left behind"
            );
        }
        for pid in &self.pids {
            assert!(!pid_alive(*pid), "process {pid} still alive");
        }
        for s in &self.sockets {
            assert!(!s.exists(), "{} still exists", s.display());
        }
        for d in &self.dirs {
            assert!(!d.exists(), "{} still exists", d.display());
        }
    }
}

#[test]
fn unique_names_are_short_and_distinct() {
    let a = unique_id();
    let b = unique_id();
    assert_ne!(a, b);
    assert_eq!(a.len(), 10);
    assert!(a.starts_with("wt"));
    assert!(unique_name("wg").len() <= 15);
}

#[test]
fn bridge_topology_pings_v4_and_v6() {
    let mut created = Created::default();
    {
        let u = Underlay::bridge(3);
        created.underlay(&u);
        let live = list_netns();
        for ns in u.netns_names() {
            assert!(live.contains(&ns), "{ns} missing from {live:?}");
        }
        let (h0, h1, h2) = (u.host(0), u.host(1), u.host(2));
        assert_ne!(h0.underlay_v4(), h1.underlay_v4());
        assert!(ping(h0, h1.underlay_v4(), 1), "h0 -> h1 v4");
        assert!(ping(h0, h1.underlay_v6(), 1), "h0 -> h1 v6");
        assert!(ping(h2, h0.underlay_v4(), 1), "h2 -> h0 v4");
        assert!(ping(h2, h0.underlay_v6(), 1), "h2 -> h0 v6");
        // Cutting a host's link stops traffic; restoring it brings it back.
        h1.set_underlay_up(false);
        assert!(!ping(h0, h1.underlay_v4(), 1), "h1 unreachable while down");
        h1.set_underlay_up(true);
        assert!(wait_until(Duration::from_secs(5), || ping(
            h0,
            h1.underlay_v4(),
            1
        )));
    }
    created.assert_gone();
}

#[test]
fn routed_topology_pings_across_router() {
    let mut created = Created::default();
    {
        let u = Underlay::routed(1, 2);
        created.underlay(&u);
        assert!(u.router().is_some());
        let (a, b0, b1) = (u.host(0), u.host(1), u.host(2));
        assert_eq!((a.side(), b0.side(), b1.side()), (0, 1, 1));
        // Different /24s on the two sides.
        assert_ne!(
            a.underlay_v4().octets()[..3],
            b0.underlay_v4().octets()[..3]
        );
        assert_eq!(
            b0.underlay_v4().octets()[..3],
            b1.underlay_v4().octets()[..3]
        );
        assert!(ping(a, b0.underlay_v4(), 1), "A -> B v4 via router");
        assert!(ping(a, b1.underlay_v6(), 1), "A -> B v6 via router");
        assert!(ping(b1, a.underlay_v4(), 1), "B -> A v4 via router");
        assert!(ping(b0, b1.underlay_v6(), 1), "B -> B v6 on-link");
        // The hop count shows the traffic was routed: TTL 64 minus one.
        let out = a.run(
            "ping",
            &["-n", "-c", "1", "-W", "1", &b0.underlay_v4().to_string()],
        );
        assert!(out.contains("ttl=63"), "expected one routed hop: {out}");
    }
    created.assert_gone();
}

#[test]
fn wireguard_go_pair_tunnels_traffic() {
    let mut created = Created::default();
    {
        let u = Underlay::bridge(2);
        created.underlay(&u);
        let (h0, h1) = (u.host(0), u.host(1));
        let w0 = WireguardGo::start(h0, &["10.99.0.1/24", "fd99::1/64"], 51820);
        let w1 = WireguardGo::start(h1, &["10.99.0.2/24", "fd99::2/64"], 51820);
        created.wg(&w0);
        created.wg(&w1);
        assert!(wg_socket_path(w0.ifname()).exists());
        assert!(h0.has_link(w0.ifname()));
        // One peer over IPv4 underlay, the other over IPv6, to exercise both.
        let e1 = SocketAddr::new(h1.underlay_v4().into(), w1.listen_port());
        let e0 = SocketAddr::new(h0.underlay_v6().into(), w0.listen_port());
        w0.add_peer(
            w1.public_key(),
            Some(e1),
            &["10.99.0.2/32", "fd99::2/128"],
            None,
        );
        w1.add_peer(
            w0.public_key(),
            Some(e0),
            &["10.99.0.1/32", "fd99::1/128"],
            Some(25),
        );
        assert!(
            wait_until(Duration::from_secs(10), || ping(h0, "10.99.0.2", 1)),
            "ping over wireguard-go tunnel\n{}\n{}",
            w0.logs(),
            w1.logs()
        );
        assert!(ping(h1, "fd99::1", 2), "IPv6 over the tunnel");
        assert!(w0.latest_handshake(w1.public_key()) > 0);
        assert!(w0.dump().contains(w1.public_key()));
    }
    created.assert_gone();
}

#[test]
fn iperf3_measures_underlay_throughput() {
    let u = Underlay::bridge(2);
    let gbps = iperf3(u.host(0), u.host(1), u.host(1).underlay_v6(), 1);
    assert!(gbps > 0.01, "implausible throughput {gbps} Gbit/s");
}

#[test]
fn exec_and_spawn_are_bounded() {
    let mut created = Created::default();
    {
        let ns = Netns::new("bnd");
        created.netns.push(ns.name().to_owned());
        let t = Instant::now();
        let out = ns.exec_timeout(Duration::from_millis(300), "sleep", &["10"]);
        assert!(!out.status.success());
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "exec timeout not enforced"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));

        let out = ns.exec("sh", &["-c", "echo out; echo err >&2; exit 3"]);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

        // A process that ignores SIGTERM is SIGKILLed after the grace period.
        let mut p = ns.spawn("sh", &["-c", "trap '' TERM; echo ready; exec sleep 100"]);
        created.pids.push(p.pid());
        assert!(wait_until(Duration::from_secs(5), || p
            .stdout()
            .contains("ready")));
        assert_eq!(ns.pids(), vec![p.pid()], "spawned pid is the real process");
        let t = Instant::now();
        let status = p.terminate(Duration::from_millis(300));
        assert!(!status.success());
        assert!(t.elapsed() < Duration::from_secs(3));

        // A stray process left in a namespace is killed when the namespace goes away.
        let out = ns.run("sh", &["-c", "sleep 100 >/dev/null 2>&1 & echo $!"]);
        let stray: u32 = out.trim().parse().unwrap();
        assert!(pid_alive(stray));
        created.pids.push(stray);
    }
    created.assert_gone();
}

#[test]
fn cleanup_happens_when_test_body_panics() {
    let mut created = Created::default();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let u = Underlay::routed(1, 1);
        created.underlay(&u);
        let w = WireguardGo::start(u.host(0), &["10.98.0.1/24"], 51820);
        created.wg(&w);
        let p = u.host(1).spawn("sleep", &["100"]);
        created.pids.push(p.pid());
        let ns = Netns::new("pan");
        created.netns.push(ns.name().to_owned());
        let d = tempfile::tempdir().unwrap();
        created.dirs.push(d.path().to_owned());
        // Everything exists right before the panic.
        let live = list_netns();
        assert!(created.netns.iter().all(|n| live.contains(n)));
        assert!(created.pids.iter().all(|p| pid_alive(*p)));
        assert!(created.sockets.iter().all(|s| s.exists()));
        panic!("intentional panic to test cleanup");
    }));
    assert!(result.is_err(), "body should have panicked");
    created.assert_gone();
}

#[test]
fn stale_namespaces_of_dead_processes_are_reaped() {
    // pid_max itself is never a valid pid, so this name's owner is certainly dead.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let name = &format!("wt{}000-stale", base36(pid_max, 5));
    assert_eq!(owner_pid(name), Some(pid_max as u32));
    let out = host_exec("ip", &["netns", "add", name]);
    assert!(out.status.success() || list_netns().iter().any(|n| n == name));
    // An orphaned process inside it must be killed as well.
    let out = host_exec(
        "ip",
        &[
            "netns",
            "exec",
            name,
            "sh",
            "-c",
            "sleep 100 >/dev/null 2>&1 & echo $!",
        ],
    );
    let sleeper: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(pid_alive(sleeper));
    let stale_dir = std::env::temp_dir().join(format!("wt{}000-test-x", base36(pid_max, 5)));
    std::fs::create_dir_all(stale_dir.join("sub")).unwrap();
    reap_stale();
    assert!(
        !list_netns().iter().any(|n| n == name),
        "stale namespace not reaped"
    );
    assert!(!stale_dir.exists(), "stale temp dir not reaped");
    assert!(!pid_alive(sleeper), "process in stale namespace survived");
}
