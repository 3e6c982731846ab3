//! End-to-end tests of observability: `--metrics` serves Prometheus metrics that agree
//! with `weftnet status` (scraped from inside the node's namespace), the metrics can
//! share the probes' listener, a taken metrics port fails start-up before anything is
//! created, and `--log-format json` writes one JSON object per stderr line.
//! Run as root (`cargo test --test metrics`); everything is created inside namespaces.

mod common;

use common::mesh::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Where the metrics (and, on node 1, the probes) are served in each namespace.
const METRICS: &str = "127.0.0.1:9479";
/// How long the traffic counters may take to show a ping.
const COUNTED: Duration = Duration::from_secs(10);

/// A scrape of `/metrics`: every sample by its series (`name{labels}`).
fn scrape(ns: &Netns) -> BTreeMap<String, f64> {
    let (code, body) = http_get(ns, METRICS, "/metrics");
    assert_eq!(code, 200, "GET /metrics: {body}");
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

fn sample(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no {series} in the scrape: {m:#?}"))
}

#[test]
fn metrics_agree_with_status_and_logs_are_json() {
    let u = Underlay::bridge(2);
    let dir = temp_dir("metrics");
    // Node 1 serves the probes and the metrics on one address; node 2 only metrics.
    let nodes = start_mesh(u.hosts(), dir.path(), |i| {
        let mut a: Vec<String> = [
            "--range",
            RANGE,
            "--metrics",
            METRICS,
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if i == 0 {
            a.extend(["--health-listen".to_string(), METRICS.to_string()]);
        }
        a
    });
    let (n1, n2) = (&nodes[0], &nodes[1]);

    for n in &nodes {
        let m = scrape(n.d.netns());
        assert_eq!(
            sample(&m, "weftnet_members{state=\"alive\"}"),
            1.0,
            "{}",
            n.name
        );
        for state in ["suspect", "dead", "left"] {
            assert_eq!(
                sample(&m, &format!("weftnet_members{{state=\"{state}\"}}")),
                0.0,
                "{}",
                n.name
            );
        }
        assert_eq!(sample(&m, "weftnet_blocks"), 1.0, "{}", n.name);
        assert_eq!(sample(&m, "weftnet_claiming"), 0.0, "{}", n.name);
        assert_eq!(sample(&m, "weftnet_dataplane_running"), 1.0, "{}", n.name);
        assert!(
            sample(&m, "weftnet_start_time_seconds") > 1.0e9,
            "{}",
            n.name
        );
        assert!(!m.keys().any(|k| k.starts_with("weftnet_kubernetes")));
        // The drop reasons are those of `weftnet status`.
        let st = n.d.status_json();
        let want: BTreeSet<String> = st["drops"]
            .as_object()
            .map(|d| {
                d.keys()
                    .map(|k| format!("weftnet_drops_total{{reason=\"{k}\"}}"))
                    .collect()
            })
            .unwrap_or_default();
        let got: BTreeSet<String> = m
            .keys()
            .filter(|k| k.starts_with("weftnet_drops_total"))
            .cloned()
            .collect();
        assert!(!want.is_empty(), "{st:#}");
        assert_eq!(got, want, "{}", n.name);
    }

    // A ping from n1 to n2 shows in n1's bytes received from n2.
    let rx = format!(
        "weftnet_peer_rx_bytes_total{{public_key=\"{}\",name=\"{}\"}}",
        n2.key, n2.name
    );
    let age = format!(
        "weftnet_peer_handshake_age_seconds{{public_key=\"{}\",name=\"{}\"}}",
        n2.key, n2.name
    );
    let before = sample(&scrape(n1.d.netns()), &rx);
    let block = n2.d.status_json()["cluster"]["block"]
        .as_str()
        .map(str::to_owned)
        .expect("n2 has a block");
    assert!(ping(n1.d.netns(), first_host(&block), 3), "ping n1 -> n2");
    let took = wait_for("rx bytes to grow after a ping", COUNTED, || {
        let m = scrape(n1.d.netns());
        let now = sample(&m, &rx);
        if now <= before {
            return Err(format!("{rx} stayed {now} (was {before})"));
        }
        if !m.contains_key(&age) {
            return Err(format!("no {age} after a ping"));
        }
        Ok(())
    });
    eprintln!("rx bytes grew within {took:?} of the ping");

    // The shared listener answers the probes too; node 2 has no probes.
    let (code, body) = http_get(n1.d.netns(), METRICS, "/healthz");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(n2.d.netns(), METRICS, "/healthz");
    assert_eq!(code, 404, "{body}");

    // Every stderr line is a JSON object with a level and a message.
    for n in &nodes {
        let err = n.d.stderr();
        let mut up = false;
        for line in err.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: stderr line is not JSON ({e}): {line}", n.name));
            assert!(v["level"].is_string(), "{}: {line}", n.name);
            assert!(v["message"].is_string(), "{}: {line}", n.name);
            up |= v["message"] == "weftnet is up";
        }
        assert!(up, "{}: no \"weftnet is up\" line in:\n{err}", n.name);
    }
}

#[test]
fn a_taken_metrics_port_fails_before_anything_is_created() {
    let u = Underlay::bridge(1);
    let ns = u.host(0);
    let dir = temp_dir("metrics");
    let secret = gensecret(dir.path(), "secret");
    let first = Daemon::start(ns, &["--address", "10.47.0.1/16", "--metrics", METRICS], "");
    let links = ns.links();
    let second = Daemon::try_start(
        ns,
        &[
            "--interface",
            "weft1",
            "--listen-port",
            "51821",
            "--address",
            "10.48.0.1/16",
            "--secret-file",
            secret.to_str().expect("utf8"),
            "--metrics",
            METRICS,
        ],
        "",
    );
    let err = match second {
        Ok(d) => panic!("a second daemon on a taken metrics port started: {d:?}"),
        Err(e) => e,
    };
    assert!(
        err.contains(&format!(
            "weftnet: error: cannot listen on --metrics {METRICS}: choose a free port or another address"
        )),
        "{err}"
    );
    assert_eq!(ns.links(), links, "the failed start left links behind");
    assert!(
        first.try_status_json().is_some(),
        "the first daemon stopped"
    );
}
