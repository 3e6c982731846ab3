//! The benchmark script (`bench/throughput.sh`) end to end, shortened: every part this
//! machine's test dependencies let it run (the raw veth, wireguard-go, weftnet node to
//! node and pod to pod, the head to head, the idle daemon; boringtun-cli is not a test
//! dependency), one short run each, with the debug build. Checks that the script
//! finishes, reports every figure in its JSON, and leaves no namespace, interface or
//! process behind. The figures' values are not checked (a debug build, on a machine
//! running other tests): speed is measured by the benchmark, not by tests.
//! Run as root (`cargo test --test bench_script`); the script creates its own namespaces.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Longer than the shortened script ever takes (about a minute); a hang fails the test.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(360);

fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {v}"));
    assert!(x > 0.0, "{what}: {x}");
    x
}

#[test]
fn throughput_script_reports_every_figure_and_cleans_up() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let results = temp_dir("bench");
    let mut cmd = Command::new("bash");
    cmd.arg(repo.join("bench/throughput.sh"))
        .env("WEFTNET_BIN", Daemon::bin())
        .env("IMPLS", "raw wireguard-go weftnet weftnet-pods")
        .env("RUNS", "1")
        .env("SECONDS_PER_RUN", "1")
        .env("STREAMS_LIST", "1")
        .env("PINGS", "200")
        .env("IDLE_PEERS", "10 20")
        .env("IDLE_SECS", "1")
        .env("RESULTS_DIR", results.path());
    let mut script = Proc::spawn(cmd, None, None);
    let pid = script.pid();
    let Some(status) = script.wait_timeout(SCRIPT_TIMEOUT) else {
        // SIGTERM: the script's trap stops what it started and deletes its namespaces.
        script.terminate(Duration::from_secs(30));
        panic!(
            "the script ran longer than {SCRIPT_TIMEOUT:?}:\n{}",
            script.logs()
        );
    };
    let output = script.logs();
    assert!(status.success(), "the script failed ({status}):\n{output}");

    // Nothing left behind: the namespaces and UAPI sockets are named by the script's pid.
    let namespaces = list_netns();
    for ns in ["wbA", "wbB", "wbPA", "wbPB"] {
        let name = format!("{ns}-{pid}");
        assert!(!namespaces.contains(&name), "namespace {name} left behind");
    }
    for ifname in ["wbwgA", "wbwgB"] {
        let sock = format!("/var/run/wireguard/{ifname}{pid}.sock");
        assert!(!Path::new(&sock).exists(), "{sock} left behind");
    }

    let json: Vec<_> = std::fs::read_dir(results.path())
        .expect("results dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(json.len(), 1, "one result file: {json:?}\n{output}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json[0]).expect("read"))
        .expect("the result file is JSON");

    let results = &doc["results"];
    for name in ["raw", "wireguard-go", "weftnet", "weftnet-pods"] {
        let r = &results[name];
        assert_eq!(r["status"], "ok", "{name}: {r:#}");
        positive(&r["tcp"]["1"]["median_gbps"], &format!("{name} tcp1"));
        for kind in ["udp64", "udp1400", "udploss"] {
            positive(
                &r[kind]["packets_per_second"],
                &format!("{name} {kind} packets per second"),
            );
        }
        positive(&r["lat"]["p50_us"], &format!("{name} idle p50"));
        positive(&r["latbulk"]["p50_us"], &format!("{name} p50 under bulk"));
        if name != "raw" {
            // the tunnel daemons' CPU over the tunnel's round trips
            positive(
                &r["lat"]["cpu_us_per_rt"],
                &format!("{name} CPU per round trip"),
            );
        }
    }
    // Node to node, the tunnel's round trip is measured against the raw veth's.
    for name in ["wireguard-go", "weftnet"] {
        assert!(
            results[name]["lat"]["added_p50_us"].is_number(),
            "{name}: {:#}",
            results[name]["lat"]
        );
    }
    for key in [
        "tcp1 weftnet/wireguard-go",
        "tcp1 weftnet/raw",
        "tcp1 weftnet-pods/raw",
    ] {
        positive(&doc["ratios"][key], key);
    }

    let h2h = &doc["head_to_head"];
    for name in ["raw", "wireguard-go", "weftnet"] {
        let r = &h2h["results"][name];
        assert_eq!(r["round_trips"], 200, "{name}: {r:#}");
        positive(&r["p50_us"], &format!("head to head {name} p50"));
        positive(
            &h2h["tcp"][name]["1"]["median_gbps"],
            &format!("head to head {name} tcp1"),
        );
        if name != "raw" {
            assert!(r["added_p50_us"].is_number(), "{name}: {r:#}");
            positive(&r["cpu_us_per_rt"], &format!("head to head {name} CPU"));
        }
    }
    for key in ["tcp1 weftnet/wireguard-go", "tcp1 weftnet/raw"] {
        positive(&h2h["ratios"][key], key);
    }

    let idle = doc["idle"].as_array().expect("idle figures");
    let peers: Vec<_> = idle.iter().map(|x| x["peers"].clone()).collect();
    assert_eq!(peers, [10, 20], "{idle:?}");
    for x in idle {
        positive(&x["rss_mib"], "idle RSS");
    }
    assert!(output.contains("head to head, idle"), "{output}");
}
