//! End-to-end tests of the data-plane workers (`--workers`): several TUN queues and UDP
//! sockets carrying parallel TCP streams whole and in order, and what `status` and the
//! metrics say about them, across restarts onto a persistent TUN of either queue mode.
//! Run as root (`cargo test --test workers`); everything is created inside namespaces.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const PORT: u16 = 51820;
const METRICS: &str = "127.0.0.1:9479";
/// Parallel TCP streams each way, and bytes per stream.
const STREAMS: usize = 8;
const STREAM_BYTES: usize = 8 << 20;

fn ov4(i: usize) -> String {
    format!("10.211.0.{i}")
}

/// Starts node `i` on `host` with `workers` workers and `peer` (node `j` on `peer_host`).
fn start_node(
    host: &Host,
    i: usize,
    key: &str,
    workers: usize,
    peer: (&Host, usize, &str),
    extra: &[&str],
) -> Daemon {
    let (peer_host, j, peer_key) = peer;
    let config = peer_toml(
        peer_key,
        Some(SocketAddr::new(peer_host.underlay(false), PORT)),
        &[&format!("{}/32", ov4(j))],
        None,
    );
    let address = format!("{}/24", ov4(i));
    let workers = workers.to_string();
    let mut args = vec!["--address", &address, "--workers", &workers];
    args.extend_from_slice(extra);
    Daemon::start_with_key(host, key, &args, &config)
}

fn assert_ping(from: &Netns, to: &str, what: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || ping(from, to, 1)),
        "{what}: no reply from {to} within 10 s"
    );
}

/// Sends `STREAMS` connections of `STREAM_BYTES` each (stream `k`: its index, then bytes
/// from a generator seeded with `k`) and prints, per stream, the length and SHA-256 of
/// what was sent (`client HOST PORT`) or of what arrived (`server HOST PORT`).
const STREAMS_PY: &str = r#"
import hashlib, random, socket, struct, sys, threading
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
n, size = int(sys.argv[4]), int(sys.argv[5])
def payload(k):
    return struct.pack("!I", k) + random.Random(k).randbytes(size)
results = {}
def serve(conn):
    h, total, head = hashlib.sha256(), 0, b""
    while True:
        b = conn.recv(1 << 20)
        if not b:
            break
        if len(head) < 4:
            head += b[:4 - len(head)]
        h.update(b)
        total += len(b)
    results[struct.unpack("!I", head)[0]] = (total, h.hexdigest())
    conn.close()
def send(k):
    s = socket.create_connection((host, port), timeout=60)
    s.sendall(payload(k))
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
threads = []
if mode == "server":
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port))
    l.listen(n)
    print("listening", flush=True)
    for _ in range(n):
        c, _ = l.accept()
        c.settimeout(60)
        t = threading.Thread(target=serve, args=(c,))
        t.start()
        threads.append(t)
else:
    for k in range(n):
        p = payload(k)
        results[k] = (len(p), hashlib.sha256(p).hexdigest())
        t = threading.Thread(target=send, args=(k,))
        t.start()
        threads.append(t)
for t in threads:
    t.join()
for k in sorted(results):
    print(k, *results[k])
"#;

/// Starts a stream server on `addr` in `ns`; waits until it listens.
fn stream_server(ns: &Netns, addr: &str, port: u16) -> Proc {
    let (n, size, port) = (
        STREAMS.to_string(),
        STREAM_BYTES.to_string(),
        port.to_string(),
    );
    listening(
        ns,
        "stream server",
        &["-c", STREAMS_PY, "server", addr, &port, &n, &size],
    )
}

/// Starts `python3 ARGS` (a server, `what`) in `ns`; waits until it prints "listening".
fn listening(ns: &Netns, what: &str, args: &[&str]) -> Proc {
    let mut srv = ns.spawn("python3", args);
    assert!(
        wait_until(Duration::from_secs(10), || srv
            .stdout()
            .contains("listening")
            || !srv.is_running()),
        "{what} did not start\n{}",
        srv.logs()
    );
    assert!(srv.is_running(), "{what} exited\n{}", srv.logs());
    srv
}

fn stream_client(ns: &Netns, addr: &str, port: u16) -> Proc {
    let (n, size, port) = (
        STREAMS.to_string(),
        STREAM_BYTES.to_string(),
        port.to_string(),
    );
    ns.spawn(
        "python3",
        &["-c", STREAMS_PY, "client", addr, &port, &n, &size],
    )
}

/// Waits for a stream client or server to finish; its per-stream lines.
fn finish(p: &mut Proc, what: &str) -> Vec<String> {
    let status = p.wait_timeout(Duration::from_secs(120));
    assert!(
        status.is_some_and(|s| s.success()),
        "{what} failed or timed out\n{}",
        p.logs()
    );
    p.stdout()
        .lines()
        .filter(|l| !l.starts_with("listening"))
        .map(str::to_owned)
        .collect()
}

fn workers(d: &Daemon) -> Value {
    let st = d.status_json();
    st["workers"].clone()
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|n| n.as_u64().unwrap_or_else(|| panic!("not a number: {n}")))
        .collect()
}

/// Two nodes on one bridge with four workers each, the tunnel working both ways.
fn two_nodes_with_four_workers() -> (Underlay, Daemon, Daemon) {
    let u = Underlay::bridge(2);
    let (h0, h1) = (u.host(0), u.host(1));
    let (k0, k1) = (keypair(), keypair());
    let d0 = start_node(h0, 1, &k0.0, 4, (h1, 2, &k1.1), &[]);
    let d1 = start_node(h1, 2, &k1.0, 4, (h0, 1, &k0.1), &[]);
    assert_ping(h0, &ov4(2), "node 1 -> node 2");
    assert_ping(h1, &ov4(1), "node 2 -> node 1");
    (u, d0, d1)
}

#[test]
fn parallel_tcp_streams_on_four_workers_arrive_whole_both_ways() {
    let (u, d0, d1) = two_nodes_with_four_workers();
    let (h0, h1) = (u.host(0), u.host(1));

    // Eight streams each way at once: encryption and decryption of one peer on both
    // nodes, on several workers.
    let mut srv1 = stream_server(h1, &ov4(2), 5401);
    let mut srv0 = stream_server(h0, &ov4(1), 5402);
    let mut cli0 = stream_client(h0, &ov4(2), 5401);
    let mut cli1 = stream_client(h1, &ov4(1), 5402);
    for (cli, srv, what) in [
        (&mut cli0, &mut srv1, "node 1 -> node 2"),
        (&mut cli1, &mut srv0, "node 2 -> node 1"),
    ] {
        let sent = finish(cli, &format!("{what} client"));
        let got = finish(srv, &format!("{what} server"));
        assert_eq!(sent.len(), STREAMS, "{what}: {sent:?}");
        assert_eq!(got, sent, "{what}: streams arrived changed or short");
        eprintln!("{what}: {STREAMS} streams of {STREAM_BYTES} bytes arrived whole");
    }

    for (d, name) in [(&d0, "node 1"), (&d1, "node 2")] {
        let w = workers(d);
        assert_eq!(w["count"], 4, "{name}: {w:#}");
        assert_eq!(w["multi_queue"], true, "{name}: {w:#}");
        let reads = numbers(&w["tun_reads"]);
        let received = numbers(&w["udp_datagrams"]);
        eprintln!("{name}: TUN reads per worker {reads:?}, datagrams per socket {received:?}, peer lock waits {}", w["peer_lock_waits"]);
        // The flows were spread over the TUN queues (8 flows on one of 4 queues has a
        // chance of 4 in 65,536)...
        let busy = reads.iter().filter(|&&n| n >= 50).count();
        assert!(
            busy >= 2,
            "{name}: flows not spread over the workers: {reads:?}"
        );
        // ... while every datagram of the one peer reached one socket (SO_REUSEPORT
        // hashes its address and port), so none was decrypted out of order.
        let sockets = received.iter().filter(|&&n| n > 0).count();
        assert_eq!(
            sockets, 1,
            "{name}: one peer's datagrams on several sockets: {received:?}"
        );
    }
    // No datagram was refused as a replay (decrypted out of order) or forged, and no
    // write or send failed.
    for (d, name) in [(&d0, "node 1"), (&d1, "node 2")] {
        let drops = d.status_json()["drops"].clone();
        for reason in [
            "replay",
            "authentication",
            "tun_write_errors",
            "tun_offload_malformed",
            "udp_send_errors",
        ] {
            assert_eq!(drops[reason], 0, "{name}: drops.{reason}: {drops:#}");
        }
    }
}

/// A scrape of `/metrics` from inside `ns`: every sample by its series.
fn scrape(ns: &Netns) -> BTreeMap<String, f64> {
    const SCRIPT: &str = "import sys, urllib.request\n\
        sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n";
    let url = format!("http://{METRICS}/metrics");
    let out = ns.exec_timeout(Duration::from_secs(15), "python3", &["-c", SCRIPT, &url]);
    expect_success("GET /metrics", out)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A UDP echo server (`server ADDR PORT`), or a client (`client ADDR PORT FLOWS
/// ROUNDS`) that sends ROUNDS requests one at a time on each of FLOWS sockets (one
/// source port each) and prints how many replies came back.
const ECHO_PY: &str = r#"
import socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "server":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    print("listening", flush=True)
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(d, a)
flows, rounds = int(sys.argv[4]), int(sys.argv[5])
socks = []
for _ in range(flows):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(2.0)
    c.connect((host, port))
    socks.append(c)
replies = 0
for _ in range(rounds):
    for c in socks:
        c.send(b"ping")
        try:
            c.recv(64)
            replies += 1
        except socket.timeout:
            pass
print("replies", replies, flush=True)
"#;

/// Per worker: (TUN reads, UDP datagrams) from `status`.
fn worker_counts(d: &Daemon) -> Vec<(u64, u64)> {
    let w = workers(d);
    numbers(&w["tun_reads"])
        .into_iter()
        .zip(numbers(&w["udp_datagrams"]))
        .collect()
}

/// Request and reply on one thread: a light flow's replies are read by the worker that
/// received its requests (it writes them to its own TUN queue, and the kernel steers
/// the flow's replies there), not by the worker of the flow's hash, which would have
/// to be woken as well. Eight UDP flows with four workers per node: were the replies
/// read by the workers of the flows' hashes, all eight would land on the receiving
/// worker with a chance of 1 in 65,536. (The bulk flows of the test above still
/// spread over the workers.)
#[test]
fn a_light_flows_replies_are_read_by_the_worker_that_received_it() {
    const FLOWS: usize = 8;
    const ROUNDS: usize = 25;
    let (u, d0, d1) = two_nodes_with_four_workers();
    let (h0, h1) = (u.host(0), u.host(1));

    let _srv = listening(
        h1,
        "echo server",
        &["-c", ECHO_PY, "server", &ov4(2), "5403"],
    );
    let before = [worker_counts(&d0), worker_counts(&d1)];
    let (flows, rounds) = (FLOWS.to_string(), ROUNDS.to_string());
    let mut cli = h0.spawn(
        "python3",
        &["-c", ECHO_PY, "client", &ov4(2), "5403", &flows, &rounds],
    );
    let lines = finish(&mut cli, "echo client");
    let want = format!("replies {}", FLOWS * ROUNDS);
    assert_eq!(lines, [want], "{}", cli.logs());

    for ((d, name), before) in [(&d0, "node 1"), (&d1, "node 2")].into_iter().zip(before) {
        let after = worker_counts(d);
        let delta: Vec<(u64, u64)> = after
            .iter()
            .zip(&before)
            .map(|(a, b)| (a.0 - b.0, a.1 - b.1))
            .collect();
        eprintln!("{name}: (TUN reads, datagrams) per worker during the exchange: {delta:?}");
        // All of the peer's datagrams reach one worker (SO_REUSEPORT's hash of its
        // address) ...
        let receiving: Vec<usize> = (0..delta.len()).filter(|&i| delta[i].1 > 0).collect();
        assert_eq!(receiving.len(), 1, "{name}: {delta:?}");
        let r = receiving[0];
        // ... and that worker read what went back: every reply on the echo's node, and
        // on the client's node every request after each flow's first one (the first
        // goes out on the queue of the kernel's choice; the reply then steers the flow).
        let elsewhere: u64 = (0..delta.len())
            .filter(|&i| i != r)
            .map(|i| delta[i].0)
            .sum();
        // (A little slack for what the kernel sends on its own, such as IPv6 router
        // solicitations.)
        let allowed = if name == "node 1" {
            FLOWS as u64 + 4
        } else {
            4
        };
        assert!(
            elsewhere <= allowed,
            "{name}: {elsewhere} TUN reads on workers that did not receive the peer's \
             datagrams (at most {allowed}): {delta:?}"
        );
        assert!(
            delta[r].0 >= (FLOWS * ROUNDS) as u64 - FLOWS as u64,
            "{name}: {delta:?}"
        );
    }
}

/// Status, metrics and the link agree on the workers; restarts attach to the persistent
/// TUN whatever its queue mode: a multi-queue one with any worker count, an old
/// single-queue one with one worker (kept, with its addresses, rather than recreated).
#[test]
fn status_and_metrics_report_workers_and_restarts_keep_the_tun() {
    let u = Underlay::bridge(2);
    let (h0, h1) = (u.host(0), u.host(1));
    let (k0, k1) = (keypair(), keypair());
    let _peer = start_node(h1, 2, &k1.0, 2, (h0, 1, &k0.1), &[]);
    let metrics = ["--metrics", METRICS];

    let mut d = start_node(h0, 1, &k0.0, 3, (h1, 2, &k1.1), &metrics);
    assert_ping(h0, &ov4(2), "3 workers");
    let w = workers(&d);
    for (key, want) in [("count", 3), ("tun_queues", 12), ("udp_sockets", 3)] {
        assert_eq!(w[key], want, "{key}: {w:#}");
    }
    assert_eq!(w["multi_queue"], true, "{w:#}");
    assert_eq!(numbers(&w["tun_reads"]).len(), 3, "{w:#}");
    let text = expect_success(
        "weftnet status",
        d.cli(&[
            "status",
            "--state-dir",
            d.state_dir().to_str().expect("utf-8"),
        ]),
    );
    assert!(
        text.contains("workers: 3 (TUN queues: 12, multi-queue, UDP sockets: 3)"),
        "{text}"
    );
    let link = h0.ip(&["-d", "link", "show", "weft0"]);
    assert!(link.contains("multi_queue"), "{link}");
    let m = scrape(h0);
    for (series, want) in [
        ("weftnet_dataplane_workers", 3.0),
        ("weftnet_tun_queues", 12.0),
        ("weftnet_tun_multi_queue", 1.0),
    ] {
        assert_eq!(m.get(series), Some(&want), "{series}: {m:#?}");
    }
    let reads: f64 = (0..3)
        .map(|i| m[&format!("weftnet_worker_tun_reads_total{{worker=\"{i}\"}}")])
        .sum();
    assert!(reads >= 1.0, "the pings were read from some queue: {m:#?}");
    assert!(m.contains_key("weftnet_session_lock_waits_total"), "{m:#?}");

    // A second daemon cannot take queues of the multi-queue weft0 the first one reads.
    let second = Daemon::try_start(
        h0,
        &[
            "--address",
            "10.211.0.9/24",
            "--listen-port",
            "51821",
            "--workers",
            "2",
        ],
        "",
    );
    match second {
        Ok(_) => panic!("a second daemon attached to the weft0 another one reads"),
        Err(e) => assert!(e.contains("cannot attach"), "{e}"),
    }
    assert_ping(h0, &ov4(2), "the first daemon after the second was refused");

    // SIGTERM keeps the interface; a run with 2 workers attaches to 8 of its queues,
    // and a run with 1 to 4 of them (the device stays multi-queue).
    for n in [2, 1] {
        assert!(d.stop().success(), "{}", d.logs());
        assert!(h0.has_link("weft0"), "the interface outlives SIGTERM");
        d = start_node(h0, 1, &k0.0, n, (h1, 2, &k1.1), &[]);
        assert_ping(h0, &ov4(2), &format!("{n} workers after a restart"));
        let w = workers(&d);
        assert_eq!(w["count"], n, "{w:#}");
        assert_eq!(w["tun_queues"], 4 * n, "{w:#}");
        assert_eq!(w["multi_queue"], true, "{w:#}");
    }

    // An old single-queue weft0 (as a weftnet before multi-queue left it, or as
    // `ip tuntap` makes it): a run asking for 3 workers attaches to it with one, and
    // says so.
    assert!(d.stop_for_good().success(), "{}", d.logs());
    assert!(!h0.has_link("weft0"), "SIGINT removes the interface");
    h0.ip(&["tuntap", "add", "dev", "weft0", "mode", "tun"]);
    assert!(h0.has_link("weft0"), "ip tuntap made weft0");
    d = start_node(h0, 1, &k0.0, 3, (h1, 2, &k1.1), &[]);
    assert_ping(h0, &ov4(2), "3 workers asked on a single-queue interface");
    let w = workers(&d);
    assert_eq!(w["count"], 1, "{w:#}");
    assert_eq!(w["tun_queues"], 1, "{w:#}");
    assert_eq!(w["multi_queue"], false, "{w:#}");
    assert!(d.logs().contains("single-queue TUN"), "{}", d.logs());
}
