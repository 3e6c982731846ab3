//! Traffic helpers: ping, iperf3, a TCP stream kept running while a test disturbs the
//! path, and an HTTP GET from inside a namespace (the metrics).

use super::*;
use std::fmt::Display;
use std::thread::JoinHandle;

static IPERF_PORT: AtomicU32 = AtomicU32::new(0);

/// `ping -c COUNT -i 0.2 -W 1 -w DEADLINE ADDR` from inside `netns` (IPv6 if the address
/// contains ':'); true if `count` replies arrived before the deadline (ping keeps sending until
/// then, so an initial ARP/ND or handshake delay is tolerated). `addr` may be an `IpAddr`,
/// `Ipv4Addr`, `Ipv6Addr` or a string. Bounded: deadline = `ceil(count * 0.2) + 1` seconds.
pub fn ping(netns: &Netns, addr: impl Display, count: u32) -> bool {
    let addr = addr.to_string();
    let v6 = addr.contains(':');
    let count = count.max(1);
    let deadline = (count as f64 * 0.2).ceil() as u32 + 1;
    let args = [
        "-n".to_owned(),
        "-q".to_owned(),
        if v6 { "-6" } else { "-4" }.to_owned(),
        "-c".to_owned(),
        count.to_string(),
        "-i".to_owned(),
        "0.2".to_owned(),
        "-W".to_owned(),
        "1".to_owned(),
        "-w".to_owned(),
        deadline.to_string(),
        addr,
    ];
    netns
        .exec_timeout(Duration::from_secs(deadline as u64 + 5), "ping", &args)
        .status
        .success()
}

/// `(transmitted, received)` from ping's summary line ("N packets transmitted, M
/// received, ..."), or `None` when `out` has none.
pub fn ping_summary(out: &str) -> Option<(u64, u64)> {
    let nums: Vec<u64> = out
        .lines()
        .find(|l| l.contains("packets transmitted"))?
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums.as_slice() {
        [sent, received, ..] => Some((*sent, *received)),
        _ => None,
    }
}

/// The sequence numbers ping printed a reply for ("64 bytes from A: icmp_seq=N ttl=64
/// time=0.3 ms", one line per reply; run it with `-n`).
pub fn ping_answered(out: &str) -> std::collections::BTreeSet<u64> {
    out.lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

/// Run an iperf3 test from `client` to a one-shot server (`iperf3 -s -1 -B ADDR`) in `server`;
/// returns the client's `-J` report. `client_args` are extra client flags (e.g. `["-u", "-b",
/// "1G"]`, `["-P", "4"]`, `["-R"]`). Panics with both sides' output on failure.
pub fn iperf3_json(
    client: &Netns,
    server: &Netns,
    server_addr: impl Display,
    seconds: u32,
    client_args: &[&str],
) -> serde_json::Value {
    let addr = server_addr.to_string();
    let port = (20_000 + IPERF_PORT.fetch_add(1, Ordering::Relaxed) % 20_000).to_string();
    let mut srv = server.spawn(
        "iperf3",
        &["-s", "-1", "--forceflush", "-B", &addr, "-p", &port],
    );
    if !wait_until(Duration::from_secs(10), || {
        srv.stdout().contains("Server listening") || !srv.is_running()
    }) || !srv.is_running()
    {
        panic!("iperf3 server did not start\n{}", srv.logs());
    }
    let secs = seconds.max(1).to_string();
    let mut args = vec![
        "-c",
        &addr,
        "-p",
        &port,
        "-t",
        &secs,
        "-J",
        "--connect-timeout",
        "3000",
    ];
    args.extend_from_slice(client_args);
    let out = client.exec_timeout(Duration::from_secs(seconds as u64 + 20), "iperf3", &args);
    // -J output is JSON even on error (with an "error" key).
    let json: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    match json {
        Some(j) if out.status.success() && j.get("error").is_none() => {
            srv.wait_timeout(Duration::from_secs(5));
            j
        }
        _ => panic!("iperf3 client failed\n{}\n{}", describe(&out), srv.logs()),
    }
}

/// Throughput in Gbit/s of a `seconds`-long TCP iperf3 test (receiver side).
pub fn iperf3(client: &Netns, server: &Netns, server_addr: impl Display, seconds: u32) -> f64 {
    let j = iperf3_json(client, server, server_addr, seconds, &[]);
    let end = &j["end"];
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .or_else(|| end["sum"]["bits_per_second"].as_f64())
        .unwrap_or_else(|| panic!("no bits_per_second in iperf3 report: {end}"));
    bps / 1e9
}

/// A TCP iperf3 stream of `seconds` s from `client` to `server_addr` in `server`, run on a
/// thread of its own so that a test can restart or rekey the ends while it runs.
pub struct BackgroundStream {
    handle: JoinHandle<serde_json::Value>,
    seconds: u32,
}

impl BackgroundStream {
    /// Starts the stream (see [`iperf3_json`]).
    pub fn start(
        client: Netns,
        server: Netns,
        server_addr: impl Display + Send + 'static,
        seconds: u32,
    ) -> Self {
        let handle =
            std::thread::spawn(move || iperf3_json(&client, &server, server_addr, seconds, &[]));
        BackgroundStream { handle, seconds }
    }

    /// Waits for the stream to end and asserts it survived `across` (e.g. "4 restarts"):
    /// the client succeeded, bytes arrived, and the receiver ran for the full length
    /// (less one second). Prints bytes, seconds and retransmits.
    pub fn assert_survived(self, across: &str) {
        let report = self
            .handle
            .join()
            .unwrap_or_else(|_| panic!("the TCP stream failed across {across}"));
        let end = &report["end"];
        let received = end["sum_received"]["bytes"].as_u64().unwrap_or(0);
        let secs = end["sum_received"]["seconds"].as_f64().unwrap_or(0.0);
        eprintln!(
            "iperf3 across {across}: {received} bytes in {secs:.1} s, {} retransmits",
            end["sum_sent"]["retransmits"]
        );
        assert!(received > 0, "nothing received: {end:#}");
        assert!(
            secs >= f64::from(self.seconds) - 1.0,
            "the stream ended early: {end:#}"
        );
    }
}

/// `GET http://ADDR/PATH` from inside `ns` (Python's HTTP client, bounded): the status
/// code and the body.
pub fn http_get(ns: &Netns, addr: &str, path: &str) -> (u16, String) {
    const SCRIPT: &str = "import sys, urllib.request, urllib.error\n\
        try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n\
        except urllib.error.HTTPError as e:\n    r = e\n\
        sys.stdout.write(str(r.status) + '\\n' + r.read().decode())\n";
    let url = format!("http://{addr}{path}");
    let out = ns.exec_timeout(
        Duration::from_secs(15),
        "python3",
        &["-c", SCRIPT, url.as_str()],
    );
    let text = expect_success(&format!("GET {url}"), out);
    let (code, body) = text.split_once('\n').unwrap_or((&text, ""));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no status code from GET {url}: {text}"));
    (code, body.to_owned())
}
