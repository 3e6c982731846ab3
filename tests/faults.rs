//! Fault tests: the mesh under an impaired underlay (`common::Impairment`: loss,
//! duplication, a partition; `common::Delay`: delay, jitter and so reordering),
//! restarts, churn, and the first packets to a new member.
//! Run as root (`cargo test --test faults`); everything is created inside namespaces
//! and every wait is bounded. The whole file runs in a few minutes; the soak's length
//! is `WEFTNET_SOAK_SECS` (60 s by default; README "Testing" gives the long command).
//!
//! "No false death" is read from the daemons' own logs: every member-down event is
//! logged (`member down`), so a node that never logs one after a point in time never
//! declared a member dead (nor tore its tunnel down) after it.

mod common;

use common::mesh::*;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long a 32 MB stream across an impaired underlay may take to be sent.
const STREAM_BOUND: Duration = Duration::from_secs(120);
/// How long a killed, cut off or restarted member may take to be seen in its new state.
const MEMBERSHIP: Duration = Duration::from_secs(30);

fn range_mesh(u: &Underlay, dir: &std::path::Path) -> Vec<Node> {
    start_mesh(u.hosts(), dir, |_| vec!["--range".into(), RANGE.into()])
}

fn cluster(n: &Node) -> Value {
    n.d.status_json()["cluster"].clone()
}

/// `name`'s view: member name -> state.
fn states(n: &Node) -> Vec<(String, String)> {
    cluster(n)["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("?").to_owned(),
                        m["state"].as_str().unwrap_or("?").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn alive_count(n: &Node) -> usize {
    states(n).iter().filter(|(_, s)| s == "alive").count()
}

/// Member-down events this node logged so far.
fn downs(n: &Node) -> usize {
    let (out, err) = (n.d.proc_stdout(), n.d.stderr());
    out.matches("member down").count() + err.matches("member down").count()
}

fn drop_count(n: &Node, name: &str) -> u64 {
    n.d.status_json()["drops"][name].as_u64().unwrap_or(0)
}

/// Every node sees all others alive.
fn all_alive(nodes: &[Node]) -> Result<(), String> {
    for n in nodes {
        let alive = alive_count(n);
        if alive != nodes.len() - 1 {
            return Err(format!("{} sees {:?}", n.name, states(n)));
        }
    }
    Ok(())
}

/// A background `ping -i 0.1` from `from` to `to` for `secs` seconds; `finish` returns
/// what it saw.
struct Pinger {
    proc: Proc,
    what: String,
    count: u64,
}

/// What a `Pinger` saw.
struct Pings {
    sent: u64,
    received: u64,
    /// Sequence numbers that got no reply, among all but the last `TAIL`.
    lost: Vec<u64>,
}

/// The last pings of a run are not judged: with `-c N -w D`, ping stops at the N-th
/// reply, so a reply still on its way when that arrives (a late one, not a lost one)
/// would count as lost. Every test's impairment and heal happen long before its tail.
const TAIL: u64 = 5;

impl Pinger {
    fn start(from: &Node, to: Ipv4Addr, secs: u32) -> Pinger {
        let count = u64::from(secs) * 10;
        let deadline = (secs + 5).to_string();
        let proc = from.d.netns().spawn(
            "ping",
            &[
                "-n",
                "-4",
                "-i",
                "0.1",
                "-W",
                "1",
                "-c",
                &count.to_string(),
                "-w",
                &deadline,
                &to.to_string(),
            ],
        );
        Pinger {
            proc,
            what: format!("{} -> {to}", from.name),
            count,
        }
    }

    fn finish(mut self) -> Pings {
        let _ = self.proc.wait_timeout(Duration::from_secs(120));
        let out = self.proc.stdout();
        let Some((sent, received)) = ping_summary(&out) else {
            panic!("{}: no ping summary in {out:?}", self.what)
        };
        let answered = ping_answered(&out);
        let lost = (1..=self.count.saturating_sub(TAIL))
            .filter(|seq| !answered.contains(seq))
            .collect();
        Pings {
            sent,
            received,
            lost,
        }
    }
}

/// A 6-node mesh split 3+3 long enough for each side to declare the other dead, then
/// healed: one mesh again, distinct blocks, no member-down event anywhere after the
/// heal (before the fix each side applied the other's verdicts about its own members:
/// 6-7 false deaths, tunnels torn down, pings lost for seconds), and not one ping
/// lost between nodes that were never cut off.
#[test]
fn partition_3_3_heals_without_false_deaths() {
    let u = Underlay::bridge(6);
    let dir = temp_dir("faults");
    let nodes = range_mesh(&u, dir.path());
    let (a, b): (Vec<&Host>, Vec<&Host>) = u.hosts().iter().partition(|h| h.index() < 3);
    let addrs: Vec<Ipv4Addr> = nodes.iter().map(Node::block_host).collect();
    // Pairs that are never cut off, pinged through the split and the heal. Each
    // tunnel is up before the count starts: the first packet of a mesh is
    // `the_first_ping_to_a_just_joined_member_arrives`'s case, not this test's.
    for (from, to) in [(0, 1), (1, 2), (3, 4), (5, 3)] {
        assert!(
            ping(nodes[from].d.netns(), addrs[to], 3),
            "n{} -> n{} before the split",
            from + 1,
            to + 1
        );
    }
    let secs = 70;
    let pingers = vec![
        Pinger::start(&nodes[0], addrs[1], secs),
        Pinger::start(&nodes[1], addrs[2], secs),
        Pinger::start(&nodes[3], addrs[4], secs),
        Pinger::start(&nodes[5], addrs[3], secs),
    ];
    std::thread::sleep(Duration::from_secs(3));
    let cut = Impairment::partition(&u, &a, &b);
    let split = wait_for("each side declares the other dead", MEMBERSHIP, || {
        for (i, n) in nodes.iter().enumerate() {
            let dead = states(n).iter().filter(|(_, s)| s == "dead").count();
            let alive = alive_count(n);
            if dead != 3 || alive != 2 {
                return Err(format!("n{} sees {:?}", i + 1, states(n)));
            }
        }
        Ok(())
    });
    eprintln!("split after {split:?}");
    std::thread::sleep(Duration::from_secs(10));
    let before: Vec<usize> = nodes.iter().map(downs).collect();
    assert!(
        before.iter().all(|d| *d >= 3),
        "each node logged the other side's deaths: {before:?}"
    );
    drop(cut);
    let healed = wait_for("the heal", Duration::from_secs(60), || all_alive(&nodes));
    eprintln!("healed after {healed:?}");
    std::thread::sleep(Duration::from_secs(10));
    for (n, b) in nodes.iter().zip(&before) {
        assert_eq!(
            downs(n),
            *b,
            "{} declared a member dead after the heal:\n{}",
            n.name,
            n.d.stderr()
        );
    }
    all_alive(&nodes).expect("one mesh");
    let blocks: BTreeSet<String> = nodes
        .iter()
        .map(|n| cluster(n)["block"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(blocks.len(), 6, "duplicate blocks: {blocks:?}");
    for p in pingers {
        let what = p.what.clone();
        let Pings {
            sent,
            received,
            lost,
        } = p.finish();
        eprintln!("{what}: {received}/{sent}");
        assert!(sent >= 600, "{what}: only {sent} sent");
        assert!(
            lost.is_empty(),
            "{what}: pings lost between nodes never cut off: {lost:?}"
        );
    }
    // Across the former split, traffic flows again.
    for (i, j) in [(0, 3), (4, 1), (2, 5)] {
        assert!(
            ping(nodes[i].d.netns(), addrs[j], 3),
            "n{} -> n{}",
            i + 1,
            j + 1
        );
    }
}

/// A member whose gossip is cut off (its WireGuard traffic still flows) is declared
/// dead, but a tunnel that carries traffic is evidence of life: it is not torn down, no
/// ping through it is lost, and when gossip returns the member is alive again with
/// the same session (its handshake was never redone).
#[test]
fn a_dead_verdict_keeps_a_tunnel_that_carries_traffic() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("faults");
    let nodes = range_mesh(&u, dir.path());
    let addr = nodes[2].block_host();
    assert!(ping(nodes[0].d.netns(), addr, 3));
    let handshake_age = |n: &Node, key: &str| -> Option<u64> {
        n.d.status_json()["peers"]
            .as_array()?
            .iter()
            .find(|p| p["public_key"] == key)?["latest_handshake_secs"]
            .as_u64()
    };
    let age_before = handshake_age(&nodes[0], &nodes[2].key).expect("a session with n3");
    let t0 = Instant::now();
    let secs = 40;
    let pinger = Pinger::start(&nodes[0], addr, secs);
    let cut = Impairment::gossip_blackhole(&u, &[u.host(2)]);
    let dead = wait_for("n3 declared dead by n1", MEMBERSHIP, || {
        let s = states(&nodes[0]);
        s.iter()
            .any(|(name, st)| name == "n3" && st == "dead")
            .then_some(())
            .ok_or_else(|| format!("{s:?}"))
    });
    eprintln!("n3 dead at n1 after {dead:?}; tunnel kept by its traffic");
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        handshake_age(&nodes[0], &nodes[2].key).is_some(),
        "n3 is still n1's peer"
    );
    drop(cut);
    wait_for("n3 alive again", MEMBERSHIP, || all_alive(&nodes));
    let Pings {
        sent,
        received,
        lost,
    } = pinger.finish();
    eprintln!("n1 -> n3 through the verdict: {received}/{sent}");
    assert!(
        lost.is_empty(),
        "pings lost while n3 was declared dead: {lost:?}"
    );
    let age_after = handshake_age(&nodes[0], &nodes[2].key).expect("a session with n3");
    let elapsed = t0.elapsed().as_secs();
    // The same session: its age kept growing (a new one would be seconds old). A
    // rekey (every 2 minutes) cannot fall in this window unless the session was old.
    if age_before + elapsed < 110 {
        assert!(
            age_after + 2 >= age_before + elapsed,
            "the session was replaced: {age_before} s old before, {age_after} s after {elapsed} s"
        );
    }
}

/// With 5 % of the underlay's datagrams lost in both directions, a TCP stream across
/// the mesh completes and no member is declared dead.
#[test]
fn five_percent_loss_tcp_stream_completes_without_false_death() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("faults");
    let nodes = range_mesh(&u, dir.path());
    let addr = nodes[2].block_host();
    assert!(ping(nodes[0].d.netns(), addr, 3));
    let before: Vec<usize> = nodes.iter().map(downs).collect();
    let loss = Impairment::loss(&u, 5);
    let took = tcp_transfer(&nodes[0], &nodes[2], 32_000_000, 5301, STREAM_BOUND);
    eprintln!(
        "32 MB over 5 % loss in {took:?} ({} datagrams dropped)",
        loss.hits()
    );
    // Keep the loss on for a while more: membership must hold.
    std::thread::sleep(Duration::from_secs(30));
    assert!(loss.hits() > 20, "the loss was real: {}", loss.hits());
    for (n, b) in nodes.iter().zip(&before) {
        assert_eq!(downs(n), *b, "{}: false death:\n{}", n.name, n.d.stderr());
    }
    all_alive(&nodes).expect("everyone alive");
}

/// Duplicated datagrams (20 %) break neither membership nor traffic.
#[test]
fn duplication_breaks_neither_membership_nor_traffic() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("faults");
    let nodes = range_mesh(&u, dir.path());
    let addr = nodes[1].block_host();
    // The tunnel is up before the impairment (its first handshake is not the point).
    assert!(ping(nodes[0].d.netns(), addr, 3));
    let before: Vec<usize> = nodes.iter().map(downs).collect();
    let dup = Impairment::duplicate(&u, 20);
    let p = Pinger::start(&nodes[0], addr, 20);
    let Pings { sent, lost, .. } = p.finish();
    assert!(dup.hits() > 20, "datagrams were duplicated: {}", dup.hits());
    assert!(sent >= 190, "only {sent} pings sent");
    assert!(lost.is_empty(), "pings lost under duplication: {lost:?}");
    for (n, b) in nodes.iter().zip(&before) {
        assert_eq!(downs(n), *b, "{}: false death:\n{}", n.name, n.d.stderr());
    }
    all_alive(&nodes).expect("everyone alive");
    assert!(
        drop_count(&nodes[1], "replay") + drop_count(&nodes[1], "gossip_replay") > 0,
        "duplicates were refused as replays"
    );
}

/// Round-trip times of `count` pings (`-i 0.1`) from `from` to `to`, in ms: (min, avg,
/// max), from ping's summary; panics unless every reply arrived.
fn rtt(from: &Node, to: Ipv4Addr, count: u32) -> (f64, f64, f64) {
    let deadline = (count / 10 + 10).to_string();
    let out = from.d.netns().exec_timeout(
        Duration::from_secs(count as u64 / 10 + 20),
        "ping",
        &[
            "-n",
            "-q",
            "-4",
            "-i",
            "0.1",
            "-c",
            &count.to_string(),
            "-w",
            &deadline,
            &to.to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && ping_summary(&text).map(|(_, r)| r) == Some(u64::from(count)),
        "{} -> {to}: pings lost: {}",
        from.name,
        describe(&out)
    );
    // "rtt min/avg/max/mdev = 0.041/0.052/0.071/0.009 ms"
    let nums: Vec<f64> = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .map(|v| {
            v.trim()
                .trim_end_matches("ms")
                .split('/')
                .filter_map(|x| x.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match nums.as_slice() {
        [min, avg, max, ..] => (*min, *avg, *max),
        _ => panic!("no rtt summary in {text:?}"),
    }
}

/// 50 ms +- 20 ms on every host's underlay egress, from before the daemons start: the
/// mesh converges, a TCP stream across it completes although its datagrams arrive out
/// of order, and no member is ever declared dead.
#[test]
fn delay_and_reordering_keep_membership_and_tcp() {
    let u = Underlay::bridge(4);
    let dir = temp_dir("faults");
    let delays = Delay::everywhere(&u, Duration::from_millis(50), Duration::from_millis(20));
    let nodes = range_mesh(&u, dir.path());
    let addr = nodes[3].block_host();
    wait_for("a first ping n1 -> n4", MEMBERSHIP, || {
        ping(nodes[0].d.netns(), addr, 3)
            .then_some(())
            .ok_or_else(|| "no reply".to_owned())
    });
    let took = tcp_transfer(&nodes[0], &nodes[3], 32_000_000, 5302, STREAM_BOUND);
    let reordered: u64 = delays.iter().map(Delay::reordered).sum();
    let delayed: u64 = delays.iter().map(Delay::delayed).sum();
    eprintln!(
        "32 MB over 50 +- 20 ms in {took:?} ({delayed} datagrams delayed, {reordered} reordered)"
    );
    // Keep the delay on for a while more: membership must hold.
    std::thread::sleep(Duration::from_secs(20));
    for n in &nodes {
        assert_eq!(downs(n), 0, "{}: false death:\n{}", n.name, n.d.stderr());
    }
    all_alive(&nodes).expect("everyone alive");
    assert!(delayed > 5000, "the stream was delayed: {delayed}");
    assert!(reordered > 100, "datagrams were reordered: {reordered}");
    for d in &delays {
        assert_eq!((d.dropped(), d.send_errors()), (0, 0), "{d:?}");
    }
}

/// Pings across the mesh see the added delay (each way is held once: a round trip
/// gains 100 +- 40 ms), and lose it again when the delay is removed.
#[test]
fn pings_see_the_underlay_delay() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("faults");
    let nodes = range_mesh(&u, dir.path());
    let addr = nodes[2].block_host();
    assert!(ping(nodes[0].d.netns(), addr, 3));
    let (_, base, _) = rtt(&nodes[0], addr, 20);
    let delays = Delay::everywhere(&u, Duration::from_millis(50), Duration::from_millis(20));
    let (min, avg, max) = rtt(&nodes[0], addr, 50);
    eprintln!("rtt n1 -> n3: {base:.2} ms without delay; min/avg/max {min:.1}/{avg:.1}/{max:.1} ms with 50 +- 20 ms each way");
    assert!(
        min >= 60.0,
        "no round trip can be shorter than 2 x 30 ms: {min}"
    );
    assert!(
        (80.0..=300.0).contains(&avg),
        "the round trip gains about 100 ms: {avg} (without: {base})"
    );
    assert!(max - min >= 10.0, "the jitter shows: {min}..{max}");
    assert!(delays.iter().all(|d| d.delayed() > 0), "{delays:?}");
    drop(delays);
    let (_, after, _) = rtt(&nodes[0], addr, 20);
    eprintln!("rtt n1 -> n3 once the delay is removed: {after:.2} ms");
    assert!(
        after < base + 20.0,
        "the delay is gone: {after} ms (before: {base})"
    );
}

/// A node restarted 20 times (SIGTERM, start with the same state) rejoins each time:
/// the others see it alive and it answers pings.
#[test]
fn a_node_restarted_twenty_times_rejoins_each_time() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("faults");
    let mut nodes = range_mesh(&u, dir.path());
    let addr = nodes[2].block_host();
    let mut took = Vec::new();
    for round in 1..=20 {
        nodes[2].d.restart();
        let t = wait_for(&format!("rejoin after restart {round}"), MEMBERSHIP, || {
            all_alive(&nodes)
        });
        took.push(t);
        assert!(
            ping(nodes[0].d.netns(), addr, 2),
            "restart {round}: n3 unreachable"
        );
    }
    eprintln!("rejoined after each restart within {:?}", took.iter().max());
}

/// A just-joined member's first pings arrive, with a 4 s bound (below WireGuard's 5 s
/// handshake retry). Nodes have static overlay addresses, so a new member can send at
/// once: it learns the whole mesh from its seed in one exchange and pings every member
/// as soon as it lists them, so its handshakes reach members that learn of it only by
/// rumor a moment later (parked there, answered when they do). Then every member
/// pings it as soon as it lists it alive.
#[test]
fn the_first_ping_to_a_just_joined_member_arrives() {
    let u = Underlay::bridge(8);
    let dir = temp_dir("faults");
    let hosts = u.hosts();
    let secret = gensecret(dir.path(), "secret");
    let overlay = |i: usize| Ipv4Addr::new(10, 48, 0, i as u8 + 1);
    let start = |i: usize| {
        let seed = (i > 0).then(|| &hosts[0]);
        let address = format!("{}/24", overlay(i));
        start_node(
            &hosts[i],
            &format!("n{}", i + 1),
            &[&secret],
            seed,
            &["--address", &address],
        )
    };
    let mut nodes: Vec<Node> = (0..4).map(start).collect();
    wait_for("mesh", MEMBERSHIP, || all_alive(&nodes));
    for i in 4..8 {
        let new = start(i);
        wait_for("the new member lists the mesh", MEMBERSHIP, || {
            let alive = alive_count(&new);
            (alive == nodes.len())
                .then_some(())
                .ok_or_else(|| format!("{:?}", states(&new)))
        });
        let mut first: Vec<(Ipv4Addr, Proc)> = (0..nodes.len())
            .map(|j| {
                let a = overlay(j);
                let p = new
                    .d
                    .netns()
                    .spawn("ping", &["-n", "-q", "-c", "1", "-W", "4", &a.to_string()]);
                (a, p)
            })
            .collect();
        for (a, p) in &mut first {
            let status = p.wait_timeout(Duration::from_secs(10));
            assert!(
                status.is_some_and(|s| s.success()),
                "{} -> {a}: the first ping was lost\n{}",
                new.name,
                p.logs()
            );
        }
        for old in &nodes {
            wait_for("listed alive", MEMBERSHIP, || {
                let ok = states(old)
                    .iter()
                    .any(|(n, s)| *n == new.name && s == "alive");
                ok.then_some(()).ok_or_else(|| format!("{:?}", states(old)))
            });
            let out = old.d.netns().exec(
                "ping",
                &["-n", "-c", "1", "-W", "4", &overlay(i).to_string()],
            );
            assert!(
                out.status.success(),
                "{} -> {}: the first ping was lost\n{}",
                old.name,
                new.name,
                describe(&out)
            );
        }
        nodes.push(new);
    }
}

/// Resident memory (kB) and open descriptors of a process.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// A soak with churn: two long-lived nodes while two others restart, crash and come
/// back in turn, with traffic throughout. The long-lived daemons' memory and open
/// descriptors do not grow (after a warm-up). `WEFTNET_SOAK_SECS` sets the length.
#[test]
fn soak_with_churn_keeps_memory_and_descriptors_flat() {
    let secs: u64 = std::env::var("WEFTNET_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let u = Underlay::bridge(4);
    let dir = temp_dir("faults");
    let mut nodes = range_mesh(&u, dir.path());
    let addr1 = nodes[1].block_host();
    let churn = |nodes: &mut Vec<Node>, round: u64| {
        let i = 2 + (round % 2) as usize;
        if round % 3 == 0 {
            nodes[i].d.kill();
            nodes[i].d.start_again();
        } else {
            nodes[i].d.restart();
        }
        wait_for("rejoin", MEMBERSHIP, || all_alive(nodes));
        assert!(ping(nodes[0].d.netns(), addr1, 2));
    };
    // Warm-up: a few rounds, so that buffers and tables reach their working size.
    for round in 0..4 {
        churn(&mut nodes, round);
    }
    let pids = [nodes[0].d.pid(), nodes[1].d.pid()];
    let start: Vec<(u64, usize)> = pids.iter().map(|p| rss_and_fds(*p)).collect();
    let t0 = Instant::now();
    let mut round = 4;
    let mut peak = start.clone();
    while t0.elapsed() < Duration::from_secs(secs) {
        churn(&mut nodes, round);
        round += 1;
        for (k, p) in pids.iter().enumerate() {
            let now = rss_and_fds(*p);
            peak[k] = (peak[k].0.max(now.0), peak[k].1.max(now.1));
        }
    }
    let end: Vec<(u64, usize)> = pids.iter().map(|p| rss_and_fds(*p)).collect();
    eprintln!(
        "soak {secs} s, {} churn rounds: (RSS kB, fds) start {start:?}, end {end:?}, peak {peak:?}",
        round - 4
    );
    for k in 0..2 {
        assert!(start[k].0 > 0, "no RSS read");
        // Allocator noise is allowed; a leak per round is not.
        assert!(
            end[k].0 <= start[k].0 + 4096.max(start[k].0 / 10),
            "n{}: RSS grew from {} kB to {} kB",
            k + 1,
            start[k].0,
            end[k].0
        );
        assert!(
            end[k].1 <= start[k].1 + 2,
            "n{}: descriptors grew from {} to {}",
            k + 1,
            start[k].1,
            end[k].1
        );
    }
}

/// Sends the kernel fails afterwards are counted: a node whose seed is a silent
/// address on its own subnet (neighbour resolution fails, the kernel reports the
/// sends as unreachable) shows `drops.udp_async_errors` growing.
#[test]
fn failed_sends_are_counted() {
    let u = Underlay::bridge(1);
    let dir = temp_dir("faults");
    let secret = gensecret(dir.path(), "secret");
    let h = u.host(0);
    let silent = {
        let o = h.underlay_v4().octets();
        Ipv4Addr::new(o[0], o[1], o[2], 200)
    };
    let seed = format!("{silent}:{PORT}");
    let d = Daemon::start(
        h,
        &[
            "--name",
            "lonely",
            "--secret-file",
            secret.to_str().expect("utf-8 path"),
            "--join",
            &seed,
            "--range",
            RANGE,
        ],
        "",
    );
    let n = Node {
        key: d.public_key(),
        d,
        name: "lonely".into(),
    };
    let took = wait_for("a counted send failure", Duration::from_secs(30), || {
        let errors = drop_count(&n, "udp_async_errors") + drop_count(&n, "udp_send_errors");
        (errors > 0)
            .then_some(())
            .ok_or_else(|| format!("{}", n.d.status_json()["drops"]))
    });
    eprintln!("first send failure counted after {took:?}");
}
