//! End-to-end tests of the gossip control plane: weftnet nodes that know only a cluster
//! secret and one seed find each other, claim address blocks from a range, build a full
//! WireGuard mesh, notice crashed and departed nodes, and keep strangers out.
//! Run as root (`cargo test --test mesh`); everything is created inside namespaces.
//!
//! Every wait is bounded; the bounds are generous multiples of what the protocol
//! promises (see `proto/src/gossip/config.rs`), and the measured times are printed.

mod common;

use common::mesh::*;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a mesh of a few nodes may take to converge (members alive, blocks claimed).
const CONVERGE: Duration = Duration::from_secs(30);
/// How long all pings of a full mesh may take (first contact needs a handshake).
const PING_MESH: Duration = Duration::from_secs(30);
/// The generous bound for a SIGKILLed node to be declared dead everywhere (the protocol
/// needs a probe period or a few to notice, plus the suspicion timeout of 4 s).
const DEAD_BOUND: Duration = Duration::from_secs(20);
/// How long a graceful leave may take to be seen everywhere.
const LEFT_BOUND: Duration = Duration::from_secs(5);

/// `n` range-mode nodes `n1..`, node 1 on `hosts[0]` as the seed, the others joining it.
fn start_range_mesh(hosts: &[Host], secret: &Path) -> Vec<Node> {
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let seed = (i > 0).then(|| &hosts[0]);
            start_node(
                h,
                &format!("n{}", i + 1),
                &[secret],
                seed,
                &["--range", RANGE],
            )
        })
        .collect()
}

impl Node {
    fn status(&self) -> Value {
        self.d.status_json()
    }

    /// The `cluster` object of the status (panics if there is none).
    fn cluster(&self) -> Value {
        let st = self.status();
        let c = st["cluster"].clone();
        assert!(c.is_object(), "{}: no cluster in status: {st:#}", self.name);
        c
    }

    /// `cluster.members`.
    fn members(&self) -> Vec<Value> {
        self.cluster()["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The member entry with public key `key`, if listed.
    fn member(&self, key: &str) -> Option<Value> {
        self.members().into_iter().find(|m| m["public_key"] == key)
    }

    /// The state (alive, suspect, dead, left) this node shows for `key`, if listed.
    fn state_of(&self, key: &str) -> Option<String> {
        self.member(key)
            .and_then(|m| m["state"].as_str().map(str::to_owned))
    }

    /// Public keys of the WireGuard peers.
    fn peer_keys(&self) -> Vec<String> {
        peer_keys(&self.status())
    }

    /// The block claimed from the range, if any.
    fn block(&self) -> Option<String> {
        self.cluster()["block"].as_str().map(str::to_owned)
    }

    /// The overlay address of the claimed block (its first host).
    fn block_addr(&self) -> Option<Ipv4Addr> {
        self.block().map(|b| first_host(&b))
    }
}

fn peer_keys(st: &Value) -> Vec<String> {
    st["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["public_key"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `Ok` if `node` lists exactly the keys of `others`, all alive, each with a prefix.
fn sees_all_alive(node: &Node, others: &[&Node]) -> Result<(), String> {
    let members = node.members();
    let want: BTreeSet<&str> = others.iter().map(|o| o.key.as_str()).collect();
    let alive: BTreeSet<&str> = members
        .iter()
        .filter(|m| {
            m["state"] == "alive" && m["prefixes"].as_array().is_some_and(|p| !p.is_empty())
        })
        .filter_map(|m| m["public_key"].as_str())
        .collect();
    if members.len() == others.len() && alive == want {
        Ok(())
    } else {
        Err(format!("{} lists {members:#?}", node.name))
    }
}

/// Wait until every node lists all the others alive (with their prefixes) and has
/// claimed a block if `range`; returns the time that took.
fn wait_converged(nodes: &[&Node], range: bool, bound: Duration) -> Duration {
    wait_for("mesh convergence", bound, || {
        for n in nodes {
            let others: Vec<&Node> = nodes.iter().filter(|o| o.key != n.key).copied().collect();
            sees_all_alive(n, &others)?;
            if range && n.block().is_none() {
                return Err(format!("{} has not claimed a block yet", n.name));
            }
        }
        Ok(())
    })
}

/// Ping every ordered pair `(from, to)` (`ping -c 1 -W 1`, retried) until all have
/// answered once, within `bound` in total.
fn assert_pings(pairs: &[(&Node, &Node, Ipv4Addr)], bound: Duration) -> Duration {
    let mut pending: Vec<&(&Node, &Node, Ipv4Addr)> = pairs.iter().collect();
    wait_for("pings", bound, || {
        pending.retain(|(from, _, addr)| !ping(from.d.netns(), addr, 1));
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "no reply yet for {:?}",
                pending
                    .iter()
                    .map(|(f, t, a)| format!("{} -> {} ({a})", f.name, t.name))
                    .collect::<Vec<_>>()
            ))
        }
    })
}

/// All ordered pairs of `nodes`, each to its block's address.
fn all_pairs<'a>(nodes: &[&'a Node]) -> Vec<(&'a Node, &'a Node, Ipv4Addr)> {
    let addrs: Vec<Ipv4Addr> = nodes
        .iter()
        .map(|n| {
            n.block_addr()
                .unwrap_or_else(|| panic!("{} has no block", n.name))
        })
        .collect();
    let mut pairs = Vec::new();
    for from in nodes {
        for (to, addr) in nodes.iter().zip(&addrs) {
            if from.key != to.key {
                pairs.push((*from, *to, *addr));
            }
        }
    }
    pairs
}

/// `drops.<name>` (0 if absent: gossip counters appear with their first drop).
fn drop_count(st: &Value, name: &str) -> u64 {
    st["drops"][name].as_u64().unwrap_or(0)
}

/// Gossip datagrams dropped for lack of the right secret.
fn auth_drops(st: &Value) -> u64 {
    drop_count(st, "gossip_unknown_key") + drop_count(st, "gossip_authentication")
}

fn refs(nodes: &[Node]) -> Vec<&Node> {
    nodes.iter().collect()
}

#[test]
fn five_nodes_join_through_one_seed() {
    let u = Underlay::bridge(5);
    let dir = temp_dir("mesh");
    let secret = gensecret(dir.path(), "secret");
    let t0 = Instant::now();
    let nodes = start_range_mesh(u.hosts(), &secret);
    let started = t0.elapsed();
    let all = refs(&nodes);
    let converged = wait_converged(&all, true, CONVERGE);
    eprintln!("5 nodes: started in {started:?}, converged {converged:?} later");

    // Distinct blocks from the range, each announced as the node's record prefix and
    // carried on its interface as the first host with the range's prefix length.
    let blocks: Vec<String> = nodes.iter().map(|n| n.block().expect("block")).collect();
    let distinct: BTreeSet<&String> = blocks.iter().collect();
    assert_eq!(distinct.len(), 5, "two nodes share a block: {blocks:?}");
    for ((n, block), host) in nodes.iter().zip(&blocks).zip(u.hosts()) {
        assert!(
            block.starts_with("10.47.") && block.ends_with("/24"),
            "{block}"
        );
        let want = format!("{}/16", first_host(block));
        let st = n.status();
        assert!(
            st["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| *x == want.as_str())),
            "{}: {want} not in status addresses: {st:#}",
            n.name
        );
        let link =
            n.d.netns()
                .ip(&["-o", "-4", "addr", "show", "dev", "weft0"]);
        assert!(
            link.contains(&want),
            "{}: {want} not on weft0: {link}",
            n.name
        );
        assert_eq!(st["cluster"]["name"], n.name.as_str());
        assert_eq!(st["cluster"]["claiming"], false);
        // Every other node lists this one with exactly its block.
        for o in nodes.iter().filter(|o| o.key != n.key) {
            let m = o.member(&n.key).expect("member");
            assert_eq!(
                m["prefixes"],
                serde_json::json!([block]),
                "{}: {m:#}",
                o.name
            );
            assert_eq!(m["name"], n.name.as_str());
            assert_eq!(
                m["endpoint"],
                format!("{}:{PORT}", host.underlay_v4()).as_str()
            );
        }
        // Four WireGuard peers: the live members.
        let mut peers = peer_keys(&st);
        peers.sort();
        let mut want: Vec<String> = nodes
            .iter()
            .filter(|o| o.key != n.key)
            .map(|o| o.key.clone())
            .collect();
        want.sort();
        assert_eq!(peers, want, "{}: peers", n.name);
    }

    let pinged = assert_pings(&all_pairs(&all), PING_MESH);
    eprintln!("5 nodes: all 20 ordered pairs answered in {pinged:?}");

    // The handshakes show up in the member list.
    for n in &nodes {
        for m in n.members() {
            assert!(
                m["latest_handshake_secs"].is_u64(),
                "{}: no handshake with {m:#}",
                n.name
            );
        }
    }
}

#[test]
fn killed_node_is_dropped_then_returns() {
    let u = Underlay::bridge(4);
    let dir = temp_dir("mesh");
    let secret = gensecret(dir.path(), "secret");
    let mut nodes = start_range_mesh(u.hosts(), &secret);
    let converged = wait_converged(&refs(&nodes), true, CONVERGE);
    eprintln!("4 nodes converged in {converged:?}");
    assert_pings(&all_pairs(&refs(&nodes)), PING_MESH);

    let mut victim = nodes.pop().expect("node 4");
    let block = victim.block().expect("block");
    let vaddr = first_host(&block);

    // SIGKILL: no leave message; the others must find out by probing.
    let killed = Instant::now();
    let status = victim.d.kill();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let mut suspect_at: Vec<Option<Duration>> = vec![None; nodes.len()];
    let mut dead_at: Vec<Option<Duration>> = vec![None; nodes.len()];
    let mut gone_at: Vec<Option<Duration>> = vec![None; nodes.len()];
    wait_for(
        &format!("{} dead everywhere", victim.name),
        DEAD_BOUND,
        || {
            for (i, n) in nodes.iter().enumerate() {
                let st = n.status();
                let state = st["cluster"]["members"]
                    .as_array()
                    .and_then(|ms| ms.iter().find(|m| m["public_key"] == victim.key.as_str()))
                    .and_then(|m| m["state"].as_str().map(str::to_owned));
                let now = killed.elapsed();
                match state.as_deref() {
                    Some("suspect") => {
                        suspect_at[i].get_or_insert(now);
                    }
                    Some("dead") => {
                        suspect_at[i].get_or_insert(now);
                        dead_at[i].get_or_insert(now);
                    }
                    _ => {}
                }
                if !peer_keys(&st).contains(&victim.key) {
                    gone_at[i].get_or_insert(now);
                }
            }
            if dead_at.iter().all(Option::is_some) && gone_at.iter().all(Option::is_some) {
                Ok(())
            } else {
                Err(format!(
                    "suspect at {suspect_at:?}, dead at {dead_at:?}, peer removed at {gone_at:?}"
                ))
            }
        },
    );
    eprintln!(
        "SIGKILLed {}: suspect at {suspect_at:?}, dead at {dead_at:?}, peer removed at {gone_at:?}",
        victim.name
    );
    for n in &nodes {
        // Still listed (dead, for `weftnet forget`), but no longer a peer: no key, no
        // allowed IPs for its block, no route for it.
        assert_eq!(
            n.state_of(&victim.key).as_deref(),
            Some("dead"),
            "{}",
            n.name
        );
        let st = n.status();
        assert!(!peer_keys(&st).contains(&victim.key), "{}: {st:#}", n.name);
        let allowed: Vec<Value> = st["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .flat_map(|p| p["allowed_ips"].as_array().cloned().unwrap_or_default())
            .collect();
        assert!(
            !allowed.iter().any(|a| *a == block.as_str()),
            "{}: {block} still in allowed IPs: {st:#}",
            n.name
        );
        let routes = n.d.netns().ip(&["-4", "route", "show", "dev", "weft0"]);
        assert!(
            !routes.contains(&block),
            "{}: route for {block}: {routes}",
            n.name
        );
        assert_eq!(n.peer_keys().len(), nodes.len() - 1, "{}: {st:#}", n.name);
        assert!(
            !ping(n.d.netns(), vaddr, 1),
            "{}: the dead node's address {vaddr} answers",
            n.name
        );
    }

    // Back with the same state dir: same key, same block, alive everywhere, reachable.
    let restarted = Instant::now();
    victim.d.start_again();
    assert_eq!(victim.d.public_key(), victim.key, "key after restart");
    let mut all: Vec<&Node> = refs(&nodes);
    all.push(&victim);
    let back = wait_converged(&all, true, DEAD_BOUND);
    eprintln!(
        "{} restarted: alive everywhere {back:?} after ready ({:?} after spawn)",
        victim.name,
        restarted.elapsed()
    );
    assert_eq!(
        victim.block().as_deref(),
        Some(block.as_str()),
        "block after restart"
    );
    let saved = std::fs::read_to_string(victim.d.state_dir().join("block")).expect("DIR/block");
    assert_eq!(saved.trim(), block, "persisted block");
    let pairs: Vec<_> = all_pairs(&all)
        .into_iter()
        .filter(|(f, t, _)| f.key == victim.key || t.key == victim.key)
        .collect();
    let pinged = assert_pings(&pairs, PING_MESH);
    eprintln!(
        "{}: pings to and from it answered in {pinged:?}",
        victim.name
    );
}

#[test]
fn graceful_leave_and_forget() {
    let u = Underlay::bridge(4);
    let dir = temp_dir("mesh");
    let secret = gensecret(dir.path(), "secret");
    let mut nodes = start_range_mesh(u.hosts(), &secret);
    wait_converged(&refs(&nodes), true, CONVERGE);

    let mut by_sigint = nodes.pop().expect("node 4");
    let mut by_command = nodes.pop().expect("node 3");

    // `weftnet leave`: the daemon announces its departure and exits 0 by itself.
    let sd = by_command.d.state_dir().to_path_buf();
    let left = Instant::now();
    let out = by_command
        .d
        .cli(&["leave".as_ref(), "--state-dir".as_ref(), sd.as_os_str()]);
    expect_success("weftnet leave", out);
    let status = by_command
        .d
        .proc()
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("weftnet leave: the daemon is still running"));
    assert!(status.success(), "after weftnet leave: {status}");
    // SIGINT (Ctrl-C): the same, from the signal (SIGTERM is a restart: tests/restart.rs).
    by_sigint.d.proc().signal(libc::SIGINT);
    let status = by_sigint
        .d
        .proc()
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("SIGINT: the daemon is still running"));
    assert!(status.success(), "after SIGINT: {status}");

    let seen = wait_for("departures seen", LEFT_BOUND, || {
        for n in &nodes {
            for gone in [&by_command, &by_sigint] {
                match n.state_of(&gone.key).as_deref() {
                    Some("left") => {}
                    s => return Err(format!("{} shows {} as {s:?}", n.name, gone.name)),
                }
                if n.peer_keys().contains(&gone.key) {
                    return Err(format!("{} still has {} as a peer", n.name, gone.name));
                }
            }
        }
        Ok(())
    });
    eprintln!(
        "leave + SIGINT: both shown as left everywhere {seen:?} after the stop \
         ({:?} after `weftnet leave`)",
        left.elapsed()
    );

    // Forget each departed node, from different nodes; the record vanishes everywhere.
    for (gone, from) in [(&by_command, &nodes[0]), (&by_sigint, &nodes[1])] {
        let sd = from.d.state_dir().to_path_buf();
        let out = from.d.cli(&[
            "forget".as_ref(),
            gone.name.as_ref(),
            "--state-dir".as_ref(),
            sd.as_os_str(),
        ] as &[&std::ffi::OsStr]);
        expect_success(&format!("weftnet forget {}", gone.name), out);
    }
    let forgotten = wait_for(
        "records forgotten everywhere",
        Duration::from_secs(10),
        || {
            for n in &nodes {
                for gone in [&by_command, &by_sigint] {
                    if let Some(m) = n.member(&gone.key) {
                        return Err(format!("{} still lists {m:#}", n.name));
                    }
                }
            }
            Ok(())
        },
    );
    eprintln!("forget: records gone everywhere in {forgotten:?}");
    for n in &nodes {
        assert_eq!(n.members().len(), nodes.len() - 1, "{}", n.name);
    }

    // A live node cannot be forgotten, nor an unknown one: one line, non-zero exit.
    let sd = nodes[0].d.state_dir().to_path_buf();
    for (target, words) in [
        (nodes[1].name.as_str(), &["n2", "alive"][..]),
        (nodes[1].key.as_str(), &["alive"][..]),
        ("nosuchnode", &["nosuchnode"][..]),
    ] {
        let out = nodes[0].d.cli(&[
            "forget".as_ref(),
            target.as_ref(),
            "--state-dir".as_ref(),
            sd.as_os_str(),
        ] as &[&std::ffi::OsStr]);
        assert!(
            !out.status.success(),
            "forget {target} succeeded\n{}",
            describe(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim_end();
        assert_eq!(
            err.lines().count(),
            1,
            "forget {target}: not one line:\n{err}"
        );
        assert!(
            err.starts_with("weftnet: error: "),
            "forget {target}: {err}"
        );
        for w in words {
            assert!(err.contains(w), "forget {target}: no {w:?} in {err}");
        }
    }
    assert_eq!(nodes[1].state_of(&nodes[0].key).as_deref(), Some("alive"));
    assert_eq!(nodes[0].state_of(&nodes[1].key).as_deref(), Some("alive"));
}

#[test]
fn wrong_secret_cannot_join() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("mesh");
    let good = gensecret(dir.path(), "good");
    let bad = gensecret(dir.path(), "bad");
    let range = ["--range", RANGE];
    let n1 = start_node(u.host(0), "n1", &[&good], None, &range);
    let n2 = start_node(u.host(1), "n2", &[&good], Some(u.host(0)), &range);
    wait_converged(&[&n1, &n2], true, CONVERGE);
    let before = [auth_drops(&n1.status()), auth_drops(&n2.status())];
    assert_eq!(
        before,
        [0, 0],
        "authentication drops before the stranger came"
    );

    let stranger = start_node(u.host(2), "n3", &[&bad], Some(u.host(0)), &range);
    // Long enough for several join attempts (1 s, then doubling) and for the stranger to
    // give up waiting for members and claim a block (5 s).
    wait_for(
        "stranger's join attempts rejected",
        Duration::from_secs(10),
        || {
            let drops = auth_drops(&n1.status());
            if drops >= 2 {
                Ok(())
            } else {
                Err(format!(
                    "n1 drops.gossip_unknown_key + drops.gossip_authentication = {drops}; \
                     all drops: {:#}",
                    n1.status()["drops"]
                ))
            }
        },
    );
    let stranger_block = wait_for(
        "stranger claims a block alone",
        Duration::from_secs(10),
        || {
            stranger
                .block()
                .map(|_| ())
                .ok_or_else(|| "no block yet".into())
        },
    );
    eprintln!("wrong secret: stranger claimed alone after {stranger_block:?} more");

    let st = stranger.status();
    assert_eq!(
        st["cluster"]["members"],
        serde_json::json!([]),
        "stranger: {st:#}"
    );
    assert_eq!(st["peers"], serde_json::json!([]), "stranger: {st:#}");
    for n in [&n1, &n2] {
        let st = n.status();
        assert!(
            n.member(&stranger.key).is_none(),
            "{} lists the stranger: {st:#}",
            n.name
        );
        assert!(
            !peer_keys(&st).contains(&stranger.key),
            "{}: {st:#}",
            n.name
        );
        assert_eq!(n.members().len(), 1, "{}: {st:#}", n.name);
    }
    let st1 = n1.status();
    eprintln!(
        "wrong secret: n1 drops gossip_unknown_key={} gossip_authentication={}",
        drop_count(&st1, "gossip_unknown_key"),
        drop_count(&st1, "gossip_authentication")
    );
    assert!(auth_drops(&st1) > 0, "{st1:#}");

    // No overlay traffic either way. (Knowing no one, the stranger may have picked the
    // block of a legitimate node; its own address would answer, so skip that one.)
    let own = stranger.block_addr().expect("block");
    for target in [&n1, &n2] {
        let addr = target.block_addr().expect("block");
        if addr == own {
            eprintln!(
                "wrong secret: the stranger claimed {}'s block too",
                target.name
            );
            continue;
        }
        assert!(
            !ping(stranger.d.netns(), addr, 2),
            "the stranger reaches {} at {addr}",
            target.name
        );
    }
    if n1.block_addr() != Some(own) {
        assert!(
            !ping(n1.d.netns(), own, 1),
            "n1 reaches the stranger at {own}"
        );
    }
    // The legitimate pair is unaffected.
    assert_pings(&all_pairs(&[&n1, &n2]), PING_MESH);
}

#[test]
fn secret_rotation() {
    // Mid-rotation: every node accepts both secrets; some already send with the new one
    // (new first), some still with the old one (old first). They must still form a mesh.
    let u = Underlay::bridge(3);
    let dir = temp_dir("mesh");
    let old = gensecret(dir.path(), "old");
    let new = gensecret(dir.path(), "new");
    let range = ["--range", RANGE];
    let n1 = start_node(u.host(0), "n1", &[&old, &new], None, &range);
    let n2 = start_node(u.host(1), "n2", &[&new, &old], Some(u.host(0)), &range);
    let n3 = start_node(u.host(2), "n3", &[&new, &old], Some(u.host(1)), &range);
    let all = [&n1, &n2, &n3];
    let converged = wait_converged(&all, true, CONVERGE);
    eprintln!("rotation: [old,new] + 2 x [new,old] converged in {converged:?}");
    assert_pings(&all_pairs(&all), PING_MESH);
    for n in all {
        let st = n.status();
        assert_eq!(auth_drops(&st), 0, "{}: {st:#}", n.name);
    }
}

#[test]
fn two_routed_subnets_form_one_mesh() {
    let u = Underlay::routed(2, 2);
    assert_ne!(
        u.host(0).underlay_v4().octets()[..3],
        u.host(2).underlay_v4().octets()[..3],
        "different subnets"
    );
    let dir = temp_dir("mesh");
    let secret = gensecret(dir.path(), "secret");
    let nodes = start_range_mesh(u.hosts(), &secret);
    let all = refs(&nodes);
    let converged = wait_converged(&all, true, CONVERGE);
    eprintln!("routed 2+2: converged in {converged:?}");
    // Each node advertises its own subnet's underlay address.
    for (n, h) in nodes.iter().zip(u.hosts()) {
        assert_eq!(
            n.cluster()["endpoint"],
            format!("{}:{PORT}", h.underlay_v4()).as_str(),
            "{}",
            n.name
        );
    }
    let pinged = assert_pings(&all_pairs(&all), PING_MESH);
    eprintln!("routed 2+2: all 12 ordered pairs answered in {pinged:?}");
}

#[test]
fn static_address_mode_with_gossip() {
    let u = Underlay::bridge(2);
    let dir = temp_dir("mesh");
    let secret = gensecret(dir.path(), "secret");
    let n1 = start_node(
        u.host(0),
        "n1",
        &[&secret],
        None,
        &["--address", "10.48.0.1/24"],
    );
    let n2 = start_node(
        u.host(1),
        "n2",
        &[&secret],
        Some(u.host(0)),
        &["--address", "10.48.0.2/24"],
    );
    let converged = wait_converged(&[&n1, &n2], false, CONVERGE);
    eprintln!("static addresses: converged in {converged:?}");
    for (n, other, prefix) in [(&n1, &n2, "10.48.0.2/32"), (&n2, &n1, "10.48.0.1/32")] {
        let c = n.cluster();
        assert!(c["block"].is_null(), "{}: {c:#}", n.name);
        assert_eq!(c["claiming"], false, "{}: {c:#}", n.name);
        let m = n.member(&other.key).expect("member");
        assert_eq!(
            m["prefixes"],
            serde_json::json!([prefix]),
            "{}: {m:#}",
            n.name
        );
        let st = n.status();
        let peer = st["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["public_key"] == other.key.as_str()))
            .unwrap_or_else(|| panic!("{}: no peer {}: {st:#}", n.name, other.name));
        assert_eq!(
            peer["allowed_ips"],
            serde_json::json!([prefix]),
            "{}",
            n.name
        );
    }
    let pairs = [
        (&n1, &n2, Ipv4Addr::new(10, 48, 0, 2)),
        (&n2, &n1, Ipv4Addr::new(10, 48, 0, 1)),
    ];
    assert_pings(&pairs, PING_MESH);
}

/// A host with the secret announces a half-default route as its block: no honest node
/// routes it or accepts it as the rogue's allowed IPs, the refusal is counted, and the
/// honest nodes still reach each other.
#[test]
fn a_member_cannot_capture_routes() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("rogue");
    let nodes = common::mesh::start_mesh(u.hosts(), dir.path(), |i| {
        if i < 2 {
            vec!["--range".into(), RANGE.into()]
        } else {
            vec!["--block".into(), "0.0.0.0/1".into()]
        }
    });
    let rogue = &nodes[2];
    for honest in &nodes[..2] {
        let st = honest.d.status_json();
        assert_eq!(drop_count(&st, "prefix_refused"), 1, "{st}");
        let peer = st["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["public_key"] == rogue.key.as_str()))
            .unwrap_or_else(|| panic!("the rogue is a member: {st}"));
        assert_eq!(peer["allowed_ips"], serde_json::json!([]), "{peer}");
        let routes = honest.d.netns().ip(&["route", "show", "table", "all"]);
        assert!(!routes.contains("0.0.0.0/1"), "{routes}");
    }
    let b = first_host(
        nodes[1].d.status_json()["cluster"]["block"]
            .as_str()
            .expect("block"),
    );
    assert_pings(&[(&nodes[0], &nodes[1], b)], Duration::from_secs(20));
}

/// The first node (started without `--join`) stopped with SIGTERM and started again
/// with the same command rejoins through the members it saved, keeps its block, and is
/// reachable again.
#[test]
fn the_first_node_rejoins_after_a_graceful_restart() {
    let u = Underlay::bridge(3);
    let dir = temp_dir("rejoin");
    let mut nodes = common::mesh::start_mesh(u.hosts(), dir.path(), |_| {
        vec!["--range".into(), RANGE.into()]
    });
    let block = nodes[0].block().expect("n1 has a block");
    nodes[0].d.restart();
    let took = wait_converged(&refs(&nodes), true, CONVERGE);
    eprintln!("n1 rejoined in {took:?}");
    assert_eq!(
        nodes[0].block().as_deref(),
        Some(block.as_str()),
        "same block"
    );
    assert_pings(&[(&nodes[1], &nodes[0], first_host(&block))], PING_MESH);
}
