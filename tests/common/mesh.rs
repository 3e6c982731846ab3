//! Helpers shared by the gossip-mesh test files (`mesh.rs`, `multicast.rs`, `faults.rs`,
//! `pmtu.rs`, ...): cluster secrets, a node handle, a TCP transfer between two nodes,
//! and a bounded poll that reports how long a condition took.

use super::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every node listens on this UDP port (weftnet's default, each in its own namespace).
pub const PORT: u16 = 51820;
/// The range nodes claim their blocks from.
pub const RANGE: &str = "10.47.0.0/16";

/// A cluster secret written by `weftnet gensecret -o DIR/NAME`.
pub fn gensecret(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = host_exec(
        Daemon::bin(),
        &["gensecret".as_ref(), "-o".as_ref(), path.as_os_str()] as &[&std::ffi::OsStr],
    );
    expect_success("weftnet gensecret", out);
    path
}

/// A weftnet node with gossip: its daemon, name and public key.
pub struct Node {
    pub d: Daemon,
    pub name: String,
    pub key: String,
}

impl Node {
    /// The overlay address of this node's block (its first host), read from its status;
    /// panics when it has claimed none.
    pub fn block_host(&self) -> std::net::Ipv4Addr {
        let st = self.d.status_json();
        let block = st["cluster"]["block"]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no block: {st:#}", self.name))
            .to_owned();
        first_host(&block)
    }
}

/// Sends `bytes` zero bytes over TCP (socat) from `from` to `to`'s block address on
/// `port`, counted at the receiver; the sender may take up to `bound`. Panics unless
/// every byte arrives. Returns how long the transfer took.
pub fn tcp_transfer(from: &Node, to: &Node, bytes: u64, port: u16, bound: Duration) -> Duration {
    let addr = to.block_host();
    let mut server = to.d.netns().spawn(
        "bash",
        &[
            "-c",
            &format!("socat -u TCP-LISTEN:{port},bind={addr},reuseaddr STDOUT | wc -c"),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let sent = from.d.netns().exec_timeout(
        bound,
        "bash",
        &[
            "-c",
            &format!(
                "head -c {bytes} /dev/zero | socat -u STDIN TCP:{addr}:{port},connect-timeout=5"
            ),
        ],
    );
    assert!(sent.status.success(), "sender failed: {}", describe(&sent));
    server.wait_timeout(Duration::from_secs(30));
    let took = t0.elapsed();
    let received: u64 = server.stdout().trim().parse().unwrap_or(0);
    assert_eq!(
        received,
        bytes,
        "{} -> {}: stream incomplete: {}",
        from.name,
        to.name,
        server.logs()
    );
    took
}

/// The multicast groups a status (`st`, as JSON) lists for the member with public key
/// `key` (none when it lists no such member).
pub fn member_groups(st: &serde_json::Value, key: &str) -> Vec<String> {
    st["cluster"]["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["public_key"] == key))
        .and_then(|m| m["groups"].as_array())
        .map(|gs| {
            gs.iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.name, self.d)
    }
}

/// `10.47.3.0/24` -> `10.47.3.1`: a block's first host, its overlay address.
pub fn first_host(block: &str) -> std::net::Ipv4Addr {
    let net: std::net::Ipv4Addr = block
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("bad block {block:?}"));
    std::net::Ipv4Addr::from(u32::from(net) + 1)
}

/// Start node `name` on `host` with `secrets` (the first one sends), joining through
/// `seed` if given, plus `extra` flags (e.g. `--range`).
pub fn start_node(
    host: &Host,
    name: &str,
    secrets: &[&Path],
    seed: Option<&Host>,
    extra: &[&str],
) -> Node {
    let mut args: Vec<String> = vec!["--name".into(), name.into()];
    for s in secrets {
        args.push("--secret-file".into());
        args.push(s.display().to_string());
    }
    if let Some(seed) = seed {
        args.push("--join".into());
        args.push(format!("{}:{PORT}", seed.underlay_v4()));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start(host, &args, "");
    let key = d.public_key();
    Node {
        d,
        name: name.to_owned(),
        key,
    }
}

/// Poll `check` every 100 ms until it returns `Ok` (returns the time that took) or
/// `timeout` passes (panics with `what` and the last error).
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Duration {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(()) => return start.elapsed(),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            panic!("{what}: not within {timeout:?}; last check: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How long a multicast join may take to show up in another node's member list (the
/// kernel reports at once, the daemon gossips within about a second).
pub const JOIN_BOUND: Duration = Duration::from_secs(10);
/// How long a leave may take to disappear from the other nodes' member lists (the group
/// is dropped locally 2 s after the leave, the gossip update takes about a second more).
pub const LEAVE_BOUND: Duration = Duration::from_secs(10);
/// How long datagrams may take to arrive after the last one was sent.
pub const DELIVERY: Duration = Duration::from_secs(5);
/// UDP port the multicast test traffic uses.
pub const UDP_PORT: u16 = 5000;

/// A socket in `ns` joined to the IPv4 `group` on its `eth0` (a pod's), printing what
/// it receives on [`UDP_PORT`].
pub fn pod_group_receiver(ns: &Netns, group: &str) -> Proc {
    let addr = format!("UDP4-RECV:{UDP_PORT},ip-add-membership={group}:eth0");
    ns.spawn("socat", &["-u", &addr, "STDOUT"])
}

/// Sends `count` lines "`tag` i" to `group` from `ns` (a pod with address `from`)
/// with TTL 1, 30 ms apart.
pub fn pod_group_send(
    ns: &Netns,
    from: impl std::fmt::Display,
    group: &str,
    tag: &str,
    count: u32,
) {
    let dst = format!("UDP4-DATAGRAM:{group}:{UDP_PORT},ip-multicast-if={from},ip-multicast-ttl=1");
    for i in 0..count {
        let mut cmd = ns.command("socat", &["-u", "STDIN", &dst]);
        let line = format!("{tag} {i}\n");
        expect_success(
            "multicast send",
            run_bounded(&mut cmd, Some(line.as_bytes()), EXEC_TIMEOUT),
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// How long a gossip mesh of a few nodes may take to converge.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// A gossip mesh `n1..` on `hosts` (n1 the seed): node `i` runs with the cluster
/// secret, `--name`, `--join` n1 (except n1 itself) and `extra(i)`. Waits until every
/// node holds a block, sees all the others alive and knows their blocks.
pub fn start_mesh(hosts: &[Host], dir: &Path, extra: impl Fn(usize) -> Vec<String>) -> Vec<Node> {
    let secret = gensecret(dir, "secret");
    let nodes: Vec<Node> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let name = format!("n{}", i + 1);
            let mut args: Vec<String> = vec![
                "--name".into(),
                name.clone(),
                "--secret-file".into(),
                secret.display().to_string(),
            ];
            if i > 0 {
                args.push("--join".into());
                args.push(format!("{}:{PORT}", hosts[0].underlay_v4()));
            }
            args.extend(extra(i));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let d = Daemon::start(h, &args, "");
            let key = d.public_key();
            Node { d, name, key }
        })
        .collect();
    let took = wait_for("mesh convergence", CONVERGE, || {
        for n in &nodes {
            let st = n.d.status_json();
            let c = &st["cluster"];
            if c["block"].as_str().is_none() {
                return Err(format!("{} has no block yet", n.name));
            }
            let alive = c["members"]
                .as_array()
                .map_or(0, |ms| ms.iter().filter(|m| m["state"] == "alive").count());
            if alive != nodes.len() - 1 {
                return Err(format!("{} sees {alive} alive members", n.name));
            }
        }
        // Every node knows every other node's block: a block is claimed after the
        // join, so a member can be alive before its block has reached everyone (a first
        // ping would then be lost on the way back). Known, not routed: a test may start
        // a member whose block the others refuse.
        for n in &nodes {
            let members = n.d.status_json()["cluster"]["members"].clone();
            for other in nodes.iter().filter(|o| o.key != n.key) {
                let block = other.d.status_json()["cluster"]["block"].clone();
                let known = members.as_array().is_some_and(|ms| {
                    ms.iter().any(|m| {
                        m["public_key"] == other.key.as_str()
                            && m["prefixes"]
                                .as_array()
                                .is_some_and(|ps| ps.contains(&block))
                    })
                });
                if !known {
                    return Err(format!(
                        "{} does not know {}'s block {block}",
                        n.name, other.name
                    ));
                }
            }
        }
        Ok(())
    });
    eprintln!("{} nodes converged in {took:?}", nodes.len());
    nodes
}
