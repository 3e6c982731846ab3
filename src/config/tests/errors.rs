//! Validation errors: each names the setting, the problem and the fix.

use super::*;

#[test]
fn cluster_errors_name_the_problem_and_the_fix() {
    assert!(error(
        &["--address", "10.47.0.1/16", "--join", "192.0.2.1:51820"],
        ""
    )
    .contains("needs the cluster secret"));
    assert!(error(&["--range", "10.47.0.0/16"], "").contains("needs the cluster secret"));
    let s = ["--secret-file", "/x"];
    assert!(error(&[&s[..], &["--range", "10.47.0.0/33"]].concat(), "").contains("invalid --range"));
    assert!(error(
        &[
            &s[..],
            &["--range", "10.47.0.0/16", "--block-prefix-len", "16"]
        ]
        .concat(),
        ""
    )
    .contains("invalid --block-prefix-len"));
    assert!(error(
        &[
            &s[..],
            &["--range", "10.47.0.0/16", "--address", "10.47.0.1/16"]
        ]
        .concat(),
        ""
    )
    .contains("same family"));
    assert!(error(
        &[&s[..], &["--address", "10.47.0.1/16", "--join", "nohost"]].concat(),
        ""
    )
    .contains("invalid --join"));
    assert!(error(
        &[
            &s[..],
            &["--address", "10.47.0.1/16", "--advertise-address", "x.y"]
        ]
        .concat(),
        ""
    )
    .contains("invalid --advertise-address"));
    assert!(error(&[], "[cluster]\nsecrets = \"x\"\n").contains("unknown field `secrets`"));
    // The cluster CA and the node certificate come together, with gossip.
    let a = ["--address", "10.47.0.1/16"];
    assert!(
        error(&[&s[..], &a[..], &["--ca-file", "/ca.crt"]].concat(), "")
            .contains("--ca-file needs this node's certificate: give --cert-file")
    );
    assert!(
        error(&[&s[..], &a[..], &["--cert-file", "/n.crt"]].concat(), "")
            .contains("--cert-file needs the cluster CA: give --ca-file")
    );
    assert!(error(
        &[&a[..], &["--ca-file", "/ca.crt", "--cert-file", "/n.crt"]].concat(),
        ""
    )
    .contains("--ca-file needs the cluster secret"));
    // A host outside a Kubernetes cluster: --pod-range with its certificate.
    let trust = ["--ca-file", "/ca.crt", "--cert-file", "/n.crt"];
    assert!(error(
        &[&s[..], &a[..], &["--pod-range", "10.244.0.0/16"]].concat(),
        ""
    )
    .contains("--pod-range needs the cluster CA and this host's certificate"));
    assert!(error(
        &[&s[..], &a[..], &trust[..], &["--pod-range", "10.244.0.0"]].concat(),
        ""
    )
    .contains("invalid --pod-range"));
    assert!(error(
        &[
            &s[..],
            &trust[..],
            &[
                "--kubernetes",
                "--node-name",
                "n1",
                "--pod-range",
                "10.244.0.0/16"
            ]
        ]
        .concat(),
        ""
    )
    .contains("--pod-range is for a host outside the cluster"));
}

#[test]
fn kubernetes_bridge_and_block_errors() {
    let s = ["--secret-file", "/x"];
    assert!(error(&["--kubernetes", "--node-name", "n1"], "").contains("--secret-file"));
    assert!(error(&[&s[..], &["--kubernetes"]].concat(), "").contains("--node-name"));
    assert!(error(&["--block", "10.244.1.0/24"], "").contains("--secret-file"));
    assert!(
        error(&[&s[..], &["--block", "10.244.1.0/33"]].concat(), "").contains("invalid --block")
    );
    assert!(error(
        &[
            &s[..],
            &["--block", "10.244.1.0/24", "--block", "10.244.2.0/24"]
        ]
        .concat(),
        ""
    )
    .contains("more than one --block"));
    assert!(error(
        &[
            &s[..],
            &["--range", "10.47.0.0/16", "--block", "10.244.1.0/24"]
        ]
        .concat(),
        ""
    )
    .contains("outside --range"));
    assert!(error(&["--address", "10.47.0.1/16", "--bridge", "br0"], "")
        .contains("--bridge needs gossip"));
    assert!(error(
        &[&s[..], &["--address", "10.47.0.1/16", "--masquerade"]].concat(),
        ""
    )
    .contains("--masquerade needs --range"));
    assert!(error(
        &[
            &s[..],
            &["--range", "10.47.0.0/16", "--health-listen", "9478"]
        ]
        .concat(),
        ""
    )
    .contains("invalid --health-listen"));
}

#[test]
fn errors_name_the_problem_and_the_fix() {
    assert!(error(&[], "adress = \"10.47.0.1/16\"").contains("unknown field `adress`"));
    assert!(error(&["--address", "10.47.0.300/16"], "").contains("invalid address"));
    assert!(error(&[], "").contains("--address"));
    assert!(error(
        &["--address", "10.47.0.1/16"],
        "[[peer]]\npublic_key = \"abc\"\n"
    )
    .contains("invalid public_key"));
    assert!(error(
        &["--address", "10.47.0.1/16"],
        &format!("[[peer]]\n{PEER}\nallowed_ips = [\"10.47.0.0/33\"]\n")
    )
    .contains("invalid allowed_ips"));
    assert!(error(
        &[
            "--address",
            "10.47.0.1/16",
            "--interface",
            "this-name-is-too-long"
        ],
        ""
    )
    .contains("invalid interface name"));
    assert!(error(&["--address", "10.47.0.1/16", "--mtu", "100"], "").contains("invalid --mtu"));
    assert!(
        error(&["--address", "10.47.0.1/16", "--workers", "0"], "").contains("invalid --workers 0")
    );
    assert!(error(&["--address", "10.47.0.1/16", "--workers", "65"], "").contains("from 1 to 64"));
    assert!(error(
        &["--address", "10.47.0.1/16"],
        &format!("[[peer]]\n{PEER}\n[[peer]]\n{PEER}\n")
    )
    .contains("listed twice"));
}

/// One setting of each group, as (listen_port, cluster name, multicast rate limit, Node
/// name).
#[test]
fn bad_metrics_and_log_format_name_the_fix() {
    let base = ["--address", "10.47.0.1/16"];
    let e = error(&[&base[..], &["--metrics", "9479"]].concat(), "");
    assert_eq!(
        e,
        "invalid --metrics \"9479\": give ADDR:PORT, e.g. 0.0.0.0:9479 or 127.0.0.1:9479"
    );
    let e = error(&[&base[..], &["--metrics", "0.0.0.0:0"]].concat(), "");
    assert!(e.contains("port 0") && e.contains("0.0.0.0:9479"), "{e}");
    let e = error(&base, "metrics = \"localhost\"\n");
    assert!(e.starts_with("invalid --metrics"), "{e}");
    let e = error(&[&base[..], &["--log-format", "xml"]].concat(), "");
    assert_eq!(e, "invalid --log-format \"xml\": use text or json");
    let e = error(&base, "log_format = \"logfmt\"\n");
    assert_eq!(e, "invalid --log-format \"logfmt\": use text or json");
}

#[test]
fn key_lifetime_is_a_duration_with_a_secret_and_without_a_ca() {
    let s = ["--secret-file", "/x", "--range", "10.47.0.0/16"];
    let (a, _f) = args(&s, "[cluster]\nkey_lifetime = \"30d\"\n");
    let c = Config::load(&a).expect("valid");
    assert_eq!(
        c.cluster.expect("cluster").key_lifetime,
        Some(std::time::Duration::from_secs(30 * 86_400))
    );
    assert!(
        error(&["--address", "10.47.0.1/16", "--key-lifetime", "1d"], "")
            .contains("--key-lifetime needs the cluster secret")
    );
    assert!(
        error(&[&s[..], &["--key-lifetime", "3s"]].concat(), "").contains("invalid --key-lifetime")
    );
    let e = error(
        &[
            &s[..],
            &[
                "--key-lifetime",
                "1d",
                "--ca-file",
                "/ca",
                "--cert-file",
                "/c",
            ],
        ]
        .concat(),
        "",
    );
    assert!(e.contains("cannot be used with --ca-file"), "{e}");
    let peer = format!("[[peer]]\n{PEER}\nallowed_ips = [\"10.48.0.0/24\"]\n");
    let e = error(&[&s[..], &["--key-lifetime", "1d"]].concat(), &peer);
    assert!(e.contains("cannot be used with [[peer]]"), "{e}");
}
