//! End-to-end tests of the CNI plugin: the real `weftnet` binary run exactly as a
//! container runtime runs it (CNI_* variables, config on stdin, result on stdout) inside
//! a "node" namespace that holds the weftnet bridge, against "pod" namespaces.
//! Run as root (`cargo test --test cni`); everything is created inside namespaces.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const BRIDGE: &str = "weftbr0";

/// A node namespace with the bridge the daemon would create (gateway addresses on it).
fn node_with_bridge(gateways: &[&str]) -> Netns {
    let node = Netns::new("node");
    node.ip(&["link", "add", BRIDGE, "type", "bridge"]);
    for gw in gateways {
        node.ip(&["addr", "add", gw, "dev", BRIDGE, "nodad"]);
    }
    node.ip(&["link", "set", BRIDGE, "up"]);
    node
}

fn config(version: &str, ranges: &[&str], data_dir: &Path) -> Value {
    json!({
        "cniVersion": version, "name": "weftnet", "type": "weftnet", "bridge": BRIDGE,
        "ranges": ranges, "mtu": 1400, "dataDir": data_dir.display().to_string(),
        "runtimeConfig": {}, "args": {"labels": []},
    })
}

/// Runs the plugin in `node` with CNI_COMMAND=`command`, the given CNI_* variables and
/// `stdin`, as a runtime does.
fn cni(node: &Netns, command: &str, vars: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut args = vec![
        format!("CNI_COMMAND={command}"),
        "CNI_PATH=/opt/cni/bin".to_owned(),
    ];
    args.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
    args.push(env!("CARGO_BIN_EXE_weftnet").to_owned());
    let mut cmd = node.command("env", &args);
    run_bounded(&mut cmd, Some(stdin), Duration::from_secs(30))
}

fn pod_vars<'a>(id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"),
    ]
}

fn netns_path(pod: &Netns) -> String {
    format!("/var/run/netns/{}", pod.name())
}

/// A successful run's stdout as JSON (empty stdout is `null`).
fn ok_json(what: &str, out: Output) -> Value {
    let text = expect_success(what, out);
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {text}"))
}

/// A failed run: exit status 1 and the CNI error JSON on stdout; returns it.
fn err_json(what: &str, out: Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what} must exit 1\n{}",
        describe(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: error is not JSON ({e})\n{}", describe(&out)));
    assert!(
        v["code"].is_u64() && v["msg"].is_string() && v["cniVersion"].is_string(),
        "{what}: {v}"
    );
    v
}

fn add(node: &Netns, pod: &Netns, id: &str, conf: &Value) -> Value {
    let path = netns_path(pod);
    let out = cni(
        node,
        "ADD",
        &pod_vars(id, &path),
        conf.to_string().as_bytes(),
    );
    ok_json(&format!("ADD {id}"), out)
}

/// Files naming allocated addresses in the store.
fn allocated(data_dir: &Path) -> Vec<String> {
    stored(data_dir, |n| n.parse::<std::net::IpAddr>().is_ok())
}

/// The pods' link-local records (`<host veth>.link-local`) in the store.
fn link_local_records(data_dir: &Path) -> Vec<String> {
    stored(data_dir, |n| n.ends_with(".link-local"))
}

/// The file names in the store for which `keep` holds, sorted; no other file is there
/// but the lock.
fn stored(data_dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("weftnet"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock")
                .inspect(|n| {
                    assert!(
                        n.parse::<std::net::IpAddr>().is_ok() || n.ends_with(".link-local"),
                        "unexpected file {n} in the store"
                    )
                })
                .filter(|n| keep(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn add_check_del_two_pods() {
    let node = node_with_bridge(&["10.244.1.1/24"]);
    let (pod1, pod2) = (Netns::new("pod1"), Netns::new("pod2"));
    let data = temp_dir("cni");
    let conf = config("1.0.0", &["10.244.1.0/24"], data.path());

    let r1 = add(&node, &pod1, "c1", &conf);
    assert_eq!(r1["cniVersion"], "1.0.0");
    let host_if = r1["interfaces"][0]["name"]
        .as_str()
        .expect("host name")
        .to_owned();
    assert!(host_if.starts_with("wf") && host_if.len() <= 15, "{r1}");
    assert!(r1["interfaces"][0].get("sandbox").is_none(), "{r1}");
    assert_eq!(r1["interfaces"][1]["name"], "eth0");
    assert_eq!(r1["interfaces"][1]["sandbox"], netns_path(&pod1));
    assert_eq!(
        r1["interfaces"][0]["mac"].as_str().map(str::len),
        Some(17),
        "{r1}"
    );
    assert_eq!(
        r1["ips"],
        json!([{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 1}])
    );
    assert_eq!(
        r1["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}])
    );
    assert_eq!(r1["dns"], json!({}));

    // The pod side: address, MTU, MAC as reported, default route via the gateway.
    let link = pod1.ip(&["-o", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1400") && link.contains("UP"), "{link}");
    assert!(
        link.contains(r1["interfaces"][1]["mac"].as_str().expect("mac")),
        "{link}"
    );
    let addr = pod1.ip(&["-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains("10.244.1.2/24"), "{addr}");
    let route = pod1.ip(&["route", "show", "default"]);
    assert!(route.contains("via 10.244.1.1 dev eth0"), "{route}");
    // The host side: on the bridge, up.
    let host = node.ip(&["-o", "link", "show", &host_if]);
    assert!(
        host.contains(&format!("master {BRIDGE}")) && host.contains("UP"),
        "{host}"
    );

    let r2 = add(&node, &pod2, "c2", &conf);
    assert_eq!(r2["ips"][0]["address"], "10.244.1.3/24");
    assert_ne!(r2["interfaces"][0]["name"], r1["interfaces"][0]["name"]);
    assert_eq!(allocated(data.path()), ["10.244.1.2", "10.244.1.3"]);
    // Each pod's link-local address is recorded beside (the source of its MLD reports).
    let host2 = r2["interfaces"][0]["name"].as_str().expect("host name");
    let mut want = vec![
        format!("{host_if}.link-local"),
        format!("{host2}.link-local"),
    ];
    want.sort();
    assert_eq!(link_local_records(data.path()), want);
    let recorded = std::fs::read_to_string(data.path().join("weftnet").join(&want[0]))
        .expect("link-local record");
    let pod_of_first = if want[0].starts_with(&host_if) {
        &pod1
    } else {
        &pod2
    };
    let lladdr = pod_of_first.ip(&["-o", "-6", "addr", "show", "dev", "eth0", "scope", "link"]);
    assert!(
        recorded.trim().starts_with("fe80:") && lladdr.contains(&format!("{}/64", recorded.trim())),
        "recorded {recorded:?}, the pod has {lladdr}"
    );

    assert!(ping(&pod1, "10.244.1.3", 3), "pod1 cannot ping pod2");
    assert!(ping(&pod2, "10.244.1.2", 3), "pod2 cannot ping pod1");
    assert!(ping(&pod1, "10.244.1.1", 3), "pod1 cannot ping the gateway");
    assert!(ping(&pod2, "10.244.1.1", 3), "pod2 cannot ping the gateway");

    let conf_bytes = conf.to_string().into_bytes();
    let p1 = netns_path(&pod1);
    let p2 = netns_path(&pod2);
    ok_json(
        "CHECK c1",
        cni(&node, "CHECK", &pod_vars("c1", &p1), &conf_bytes),
    );
    ok_json(
        "CHECK c2",
        cni(&node, "CHECK", &pod_vars("c2", &p2), &conf_bytes),
    );

    // CHECK notices a pod that lost its address.
    pod2.ip(&["addr", "flush", "dev", "eth0"]);
    let e = err_json(
        "CHECK c2 without address",
        cni(&node, "CHECK", &pod_vars("c2", &p2), &conf_bytes),
    );
    assert_eq!(e["code"], 102, "{e}");
    assert!(
        e["msg"].as_str().unwrap_or("").contains("10.244.1.3/24"),
        "{e}"
    );

    // DEL: the veth goes, the address is freed; DEL again and DEL without a netns succeed.
    ok_json(
        "DEL c1",
        cni(&node, "DEL", &pod_vars("c1", &p1), &conf_bytes),
    );
    assert!(!pod1.has_link("eth0"), "eth0 still in pod1");
    assert!(!node.has_link(&host_if), "{host_if} still on the node");
    assert_eq!(allocated(data.path()), ["10.244.1.3"]);
    assert_eq!(
        link_local_records(data.path()),
        [format!("{host2}.link-local")]
    );
    ok_json(
        "DEL c1 again",
        cni(&node, "DEL", &pod_vars("c1", &p1), &conf_bytes),
    );
    let no_netns = [
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", ""),
    ];
    ok_json(
        "DEL c1 without netns",
        cni(&node, "DEL", &no_netns, &conf_bytes),
    );
    ok_json(
        "DEL of a never-added container",
        cni(
            &node,
            "DEL",
            &pod_vars("nobody", "/var/run/netns/wt-no-such-ns"),
            &conf_bytes,
        ),
    );
    let e = err_json(
        "CHECK c1 after DEL",
        cni(&node, "CHECK", &pod_vars("c1", &p1), &conf_bytes),
    );
    assert_eq!(e["code"], 3, "{e}");

    // The freed address goes to the next container.
    let r3 = add(&node, &pod1, "c3", &conf);
    assert_eq!(r3["ips"][0]["address"], "10.244.1.2/24");
    assert!(
        ping(&pod1, "10.244.1.1", 2),
        "the re-added pod cannot ping the gateway"
    );

    // DEL with the pod's namespace already gone: the host end went with it.
    let host3 = r3["interfaces"][0]["name"]
        .as_str()
        .expect("host name")
        .to_owned();
    let gone = netns_path(&pod1);
    drop(pod1);
    assert!(
        wait_until(Duration::from_secs(5), || !node.has_link(&host3)),
        "{host3} outlived its pod"
    );
    ok_json(
        "DEL c3 after the netns was deleted",
        cni(&node, "DEL", &pod_vars("c3", &gone), &conf_bytes),
    );
    ok_json(
        "DEL c2",
        cni(&node, "DEL", &pod_vars("c2", &p2), &conf_bytes),
    );
    assert!(
        allocated(data.path()).is_empty() && link_local_records(data.path()).is_empty(),
        "{:?} {:?}",
        allocated(data.path()),
        link_local_records(data.path())
    );
}

#[test]
fn dual_stack_and_legacy_cni_version() {
    let node = node_with_bridge(&["10.244.7.1/24", "fd00:10:244:7::1/64"]);
    let (pod1, pod2) = (Netns::new("pod1"), Netns::new("pod2"));
    let data = temp_dir("cni");
    let conf = config(
        "0.3.1",
        &["10.244.7.0/24", "fd00:10:244:7::/64"],
        data.path(),
    );
    let r1 = add(&node, &pod1, "d1", &conf);
    assert_eq!(r1["cniVersion"], "0.3.1");
    assert_eq!(
        r1["ips"],
        json!([
            {"address": "10.244.7.2/24", "gateway": "10.244.7.1", "interface": 1, "version": "4"},
            {"address": "fd00:10:244:7::2/64", "gateway": "fd00:10:244:7::1", "interface": 1, "version": "6"},
        ])
    );
    assert_eq!(
        r1["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.244.7.1"}, {"dst": "::/0", "gw": "fd00:10:244:7::1"}])
    );
    let r2 = add(&node, &pod2, "d2", &conf);
    assert_eq!(r2["ips"][1]["address"], "fd00:10:244:7::3/64");
    let route6 = pod1.ip(&["-6", "route", "show", "default"]);
    assert!(route6.contains("via fd00:10:244:7::1 dev eth0"), "{route6}");
    assert!(
        ping(&pod1, "fd00:10:244:7::3", 3),
        "pod1 cannot ping pod2 over IPv6"
    );
    assert!(
        ping(&pod2, "fd00:10:244:7::1", 3),
        "pod2 cannot ping the IPv6 gateway"
    );
    assert!(
        ping(&pod2, "10.244.7.2", 2),
        "pod2 cannot ping pod1 over IPv4"
    );

    // CHECK is not defined before 0.4.0; with 0.4.0 it passes.
    let p1 = netns_path(&pod1);
    let e = err_json(
        "CHECK 0.3.1",
        cni(
            &node,
            "CHECK",
            &pod_vars("d1", &p1),
            conf.to_string().as_bytes(),
        ),
    );
    assert_eq!(e["code"], 1, "{e}");
    assert_eq!(e["cniVersion"], "0.3.1", "{e}");
    let conf04 = config(
        "0.4.0",
        &["10.244.7.0/24", "fd00:10:244:7::/64"],
        data.path(),
    );
    ok_json(
        "CHECK 0.4.0",
        cni(
            &node,
            "CHECK",
            &pod_vars("d1", &p1),
            conf04.to_string().as_bytes(),
        ),
    );
}

#[test]
fn failed_add_rolls_back() {
    let node = node_with_bridge(&["10.244.2.1/24", "fd00:10:244:2::1/64"]);
    let data = temp_dir("cni");
    let assert_clean = |what: &str| {
        assert!(
            allocated(data.path()).is_empty(),
            "{what}: addresses kept after a failed ADD: {:?}",
            allocated(data.path())
        );
        let leftovers: Vec<String> = node
            .links()
            .into_iter()
            .filter(|l| l.starts_with("wf"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{what}: veth left on the node: {leftovers:?}"
        );
    };

    // Before the veth exists: the interface name is already taken inside the pod.
    let pod = Netns::new("pod");
    pod.ip(&["link", "add", "eth0", "type", "bridge"]);
    let conf = config("1.0.0", &["10.244.2.0/24"], data.path());
    let path = netns_path(&pod);
    let e = err_json(
        "ADD onto a taken eth0",
        cni(
            &node,
            "ADD",
            &pod_vars("r1", &path),
            conf.to_string().as_bytes(),
        ),
    );
    assert_eq!(e["code"], 100, "{e}");
    assert!(e["msg"].as_str().unwrap_or("").contains("eth0"), "{e}");
    assert_clean("taken eth0");

    // After the veth exists: the pod refuses the IPv6 address.
    let pod = Netns::new("pod");
    pod.sysctl(&[("net.ipv6.conf.default.disable_ipv6", "1")]);
    let conf = config(
        "1.0.0",
        &["10.244.2.0/24", "fd00:10:244:2::/64"],
        data.path(),
    );
    let path = netns_path(&pod);
    let e = err_json(
        "ADD into a pod without IPv6",
        cni(
            &node,
            "ADD",
            &pod_vars("r2", &path),
            conf.to_string().as_bytes(),
        ),
    );
    assert_eq!(e["code"], 100, "{e}");
    assert!(
        e["msg"].as_str().unwrap_or("").contains("fd00:10:244:2::2"),
        "{e}"
    );
    assert!(!pod.has_link("eth0"), "eth0 left in the pod");
    assert_clean("pod without IPv6");
}

#[test]
fn missing_bridge_is_try_again() {
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let data = temp_dir("cni");
    let conf = config("1.0.0", &["10.244.3.0/24"], data.path());
    let path = netns_path(&pod);
    let e = err_json(
        "ADD without a bridge",
        cni(
            &node,
            "ADD",
            &pod_vars("m1", &path),
            conf.to_string().as_bytes(),
        ),
    );
    assert_eq!(e["code"], 11, "{e}");
    let msg = e["msg"].as_str().unwrap_or("");
    assert!(
        msg.contains(BRIDGE) && msg.contains("weftnet up --kubernetes"),
        "{e}"
    );
    assert!(allocated(data.path()).is_empty());
    assert!(!pod.has_link("eth0"));
}

#[test]
fn version_and_bad_input() {
    let node = Netns::new("node");
    let out = cni(&node, "VERSION", &[], br#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(
        ok_json("VERSION", out),
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]})
    );
    let data = temp_dir("cni");
    let good = config("1.0.0", &["10.244.4.0/24"], data.path());
    let vars = pod_vars("b1", "/var/run/netns/wt-no-such-ns");
    let mut no_bridge = good.clone();
    no_bridge.as_object_mut().expect("object").remove("bridge");
    let mut bad_range = good.clone();
    bad_range["ranges"] = json!(["10.244.4.0/33"]);
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("invalid JSON", b"{\"cniVersion\": ".to_vec(), 6, "JSON"),
        (
            "missing bridge",
            no_bridge.to_string().into_bytes(),
            7,
            "\"bridge\"",
        ),
        (
            "range not a CIDR",
            bad_range.to_string().into_bytes(),
            7,
            "ranges[0]",
        ),
        (
            "unsupported version",
            config("0.2.0", &["10.244.4.0/24"], data.path())
                .to_string()
                .into_bytes(),
            1,
            "0.2.0",
        ),
    ];
    for (what, stdin, code, needle) in cases {
        for command in ["ADD", "DEL", "CHECK"] {
            let e = err_json(
                &format!("{command} with {what}"),
                cni(&node, command, &vars, &stdin),
            );
            assert_eq!(e["code"], code, "{command} with {what}: {e}");
            let msg = e["msg"].as_str().unwrap_or("");
            assert!(msg.contains(needle), "{command} with {what}: {e}");
        }
    }
    let stdin = good.to_string().into_bytes();
    for (var, vars) in [
        (
            "CNI_NETNS",
            vec![("CNI_CONTAINERID", "b1"), ("CNI_IFNAME", "eth0")],
        ),
        (
            "CNI_CONTAINERID",
            vec![("CNI_NETNS", "/var/run/netns/x"), ("CNI_IFNAME", "eth0")],
        ),
        (
            "CNI_IFNAME",
            vec![("CNI_CONTAINERID", "b1"), ("CNI_NETNS", "/var/run/netns/x")],
        ),
    ] {
        let e = err_json(
            &format!("ADD without {var}"),
            cni(&node, "ADD", &vars, &stdin),
        );
        assert_eq!(e["code"], 4, "{e}");
        assert!(e["msg"].as_str().unwrap_or("").contains(var), "{e}");
    }
    let e = err_json("ADD of a missing netns", cni(&node, "ADD", &vars, &stdin));
    assert_eq!(e["code"], 3, "{e}");
    let e = err_json("unknown command", cni(&node, "FROB", &vars, &stdin));
    assert_eq!(e["code"], 4, "{e}");
    assert!(allocated(data.path()).is_empty());
}
