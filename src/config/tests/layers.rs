//! Layering: file, then environment, then flags, for every group; lists replaced,
//! switches on when any layer sets them; the control commands' `--config`.

use super::*;

fn one_per_group(c: &Config) -> (u16, String, Option<u64>, String) {
    (
        c.listen_port,
        c.cluster.as_ref().expect("cluster").name.clone(),
        c.multicast.rate_limit,
        c.kube.as_ref().expect("kube").node_name.clone(),
    )
}

#[test]
fn each_group_layers_file_then_environment_then_flags() {
    let file = "address = \"10.47.0.1/16\"\nlisten_port = 5000\n[cluster]\nsecret_file = \"/x\"\nname = \"file\"\n[multicast]\nrate_limit = 1000\n[kubernetes]\nenabled = true\nnode_name = \"n-file\"\n";
    let load = |vars: &[(&str, &str)], flags: &[&str]| {
        let (a, _f) = args_env(vars, flags, file);
        one_per_group(&Config::load(&a).expect("valid"))
    };
    assert_eq!(
        load(&[], &[]),
        (5000, "file".into(), Some(1000), "n-file".into())
    );
    let env = [
        ("WEFTNET_LISTEN_PORT", "5001"),
        ("WEFTNET_NAME", "env"),
        ("WEFTNET_MULTICAST_RATE_LIMIT", "2000"),
        ("WEFTNET_NODE_NAME", "n-env"),
    ];
    assert_eq!(
        load(&env, &[]),
        (5001, "env".into(), Some(2000), "n-env".into())
    );
    let flags = [
        "--listen-port",
        "5002",
        "--name",
        "flag",
        "--multicast-rate-limit",
        "3000",
        "--node-name",
        "n-flag",
    ];
    assert_eq!(
        load(&env, &flags),
        (5002, "flag".into(), Some(3000), "n-flag".into())
    );
}

#[test]
fn a_list_from_a_higher_layer_replaces_the_files_list() {
    let file = "address = [\"10.47.0.1/16\", \"fd47::1/64\"]\n[cluster]\nsecret_file = \"/x\"\njoin = [\"192.0.2.1:51820\", \"192.0.2.2:51820\"]\n";
    let load = |vars: &[(&str, &str)], flags: &[&str]| {
        let (a, _f) = args_env(vars, flags, file);
        let c = Config::load(&a).expect("valid");
        let addresses: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
        (addresses, c.cluster.expect("cluster").join)
    };
    assert_eq!(
        load(&[], &[]),
        (
            vec!["10.47.0.1/16".to_string(), "fd47::1/64".into()],
            vec!["192.0.2.1:51820".to_string(), "192.0.2.2:51820".into()]
        )
    );
    let env = [
        ("WEFTNET_ADDRESS", "10.48.0.1/16"),
        ("WEFTNET_JOIN", "192.0.2.3:51820,192.0.2.4:51820"),
    ];
    assert_eq!(
        load(&env, &[]),
        (
            vec!["10.48.0.1/16".to_string()],
            vec!["192.0.2.3:51820".to_string(), "192.0.2.4:51820".into()]
        )
    );
    assert_eq!(
        load(
            &env,
            &["--address", "10.49.0.1/16", "--join", "192.0.2.5:51820"]
        ),
        (
            vec!["10.49.0.1/16".to_string()],
            vec!["192.0.2.5:51820".to_string()]
        )
    );
}

#[test]
fn a_switch_is_on_when_any_layer_turns_it_on() {
    let base = "address = \"10.47.0.1/16\"\n[cluster]\nsecret_file = \"/x\"\n";
    let on = |c: &Config| (c.multicast.broadcast, c.kube.is_some());
    let (a, _f) = args(&[], base);
    assert_eq!(on(&Config::load(&a).expect("valid")), (false, false));
    let file = format!(
        "{base}[multicast]\nbroadcast = true\n[kubernetes]\nenabled = true\nnode_name = \"n1\"\n"
    );
    let (a, _f) = args_env(
        &[
            ("WEFTNET_BROADCAST", "false"),
            ("WEFTNET_KUBERNETES", "false"),
        ],
        &[],
        &file,
    );
    assert_eq!(
        on(&Config::load(&a).expect("valid")),
        (true, true),
        "the environment cannot turn off what the file turns on"
    );
    let (a, _f) = args_env(
        &[("WEFTNET_BROADCAST", "true")],
        &["--kubernetes", "--node-name", "n1"],
        base,
    );
    assert_eq!(on(&Config::load(&a).expect("valid")), (true, true));
}

#[test]
fn layering_keeps_the_files_peers_and_unset_groups() {
    let file = format!(
        "address = \"10.47.0.1/16\"\nmtu = 1400\n[cluster]\nsecret_file = [\"/a\", \"/b\"]\n[[peer]]\n{PEER}\n"
    );
    let (a, _f) = args(&["--name", "n"], &file);
    let c = Config::load(&a).expect("valid");
    assert_eq!(c.mtu, Some(1400));
    assert_eq!(c.peers.len(), 1);
    let cl = c.cluster.expect("cluster");
    assert_eq!(cl.secret_files, vec![PathBuf::from("/a"), "/b".into()]);
    assert_eq!(cl.name, "n");
}

#[test]
fn a_named_node_keeps_its_name_in_kubernetes_mode() {
    let file = "[cluster]\nsecret_file = \"/x\"\nname = \"mine\"\n[kubernetes]\nenabled = true\nnode_name = \"n1\"\n";
    let (a, _f) = args(&[], file);
    let c = Config::load(&a).expect("valid");
    assert_eq!(c.cluster.expect("cluster").name, "mine");
}

#[test]
fn every_documented_file_key_is_accepted() {
    let file = format!(
        "interface = \"w0\"\naddress = [\"fd47::1/64\"]\nlisten_port = 51821\nmtu = 1400\nstate_dir = \"/tmp/s\"\nprivate_key_file = \"/tmp/k\"\nlog = \"debug\"\nlog_format = \"json\"\nblock = \"10.244.1.0/24\"\nbridge = \"br0\"\nhealth_listen = \"127.0.0.1:9478\"\nmetrics = \"127.0.0.1:9479\"\nmasquerade = true\n\
         [cluster]\nsecret_file = \"/x\"\njoin = \"192.0.2.1:51820\"\nadvertise_address = \"192.0.2.7\"\nrange = \"10.244.0.0/16\"\nblock_prefix_len = 24\nname = \"a\"\nca_file = \"/ca.crt\"\ncert_file = \"/a.crt\"\n\
         [multicast]\nallow = [\"239.0.0.0/8\"]\ndeny = [\"239.1.0.0/16\"]\nlink_local = true\nrate_limit = 5\nbroadcast = true\n\
         [kubernetes]\nenabled = true\nnode_name = \"n1\"\nkubeconfig = \"/k\"\ncni_bin_dir = \"/b\"\ncni_conf_dir = \"/c\"\ncni_data_dir = \"/d\"\n\
         [[peer]]\n{PEER}\nendpoint = \"192.0.2.9:51820\"\nallowed_ips = [\"fd47::9/128\"]\npersistent_keepalive = 25\n"
    );
    let (a, _f) = args(&[], &file);
    let c = Config::load(&a).expect("valid");
    assert_eq!(c.interface, "w0");
    assert_eq!(c.log, "debug");
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.metrics, Some("127.0.0.1:9479".parse().expect("addr")));
    assert!(!c.private_key_is_default);
    assert_eq!(c.bridge.as_deref(), Some("br0"));
    assert_eq!(c.multicast.rate_limit, Some(5));
    let k = c.kube.expect("kube");
    assert_eq!(k.kubeconfig, Some(PathBuf::from("/k")));
    assert_eq!(k.cni_data_dir, PathBuf::from("/d"));
    let cl = c.cluster.expect("cluster");
    assert_eq!(cl.range.map(|r| r.1), Some(24));
    assert_eq!(
        cl.ca,
        Some((PathBuf::from("/ca.crt"), Some(PathBuf::from("/a.crt"))))
    );
}

/// A host outside a Kubernetes cluster: `pod_range` with the CA and its certificate;
/// a Kubernetes node: `ca_file` alone.
#[test]
fn pod_range_outside_the_cluster_and_a_ca_alone_in_it() {
    let file = "address = \"10.244.250.1/24\"\n[cluster]\nsecret_file = \"/x\"\nca_file = \"/ca.crt\"\ncert_file = \"/a.crt\"\npod_range = \"10.244.0.0/16\"\n";
    let (a, _f) = args(&[], file);
    let c = Config::load(&a).expect("valid");
    assert_eq!(
        c.cluster.expect("cluster").pod_range,
        Some(("10.244.0.0/16".parse().expect("net"), 24))
    );
    let file = "[cluster]\nsecret_file = \"/x\"\nca_file = \"/ca.crt\"\n[kubernetes]\nenabled = true\nnode_name = \"n1\"\n";
    let (a, _f) = args(&[], file);
    let c = Config::load(&a).expect("valid");
    assert_eq!(
        c.cluster.expect("cluster").ca,
        Some((PathBuf::from("/ca.crt"), None))
    );
}

#[test]
fn every_up_flag_has_its_environment_variable() {
    use clap::CommandFactory;
    let cli = crate::cli::Cli::command();
    let up = cli.find_subcommand("up").expect("up");
    let mut longs = Vec::new();
    for arg in up.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" || long == "version" {
            continue;
        }
        let want = format!("WEFTNET_{}", long.to_uppercase().replace('-', "_"));
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some(want.as_str()),
            "--{long}"
        );
        longs.push(long);
    }
    assert_eq!(
        longs,
        [
            "config",
            "interface",
            "address",
            "listen-port",
            "mtu",
            "workers",
            "state-dir",
            "private-key-file",
            "secret-file",
            "join",
            "advertise-address",
            "range",
            "block-prefix-len",
            "name",
            "ca-file",
            "cert-file",
            "pod-range",
            "key-lifetime",
            "multicast-allow",
            "multicast-deny",
            "multicast-link-local",
            "broadcast",
            "multicast-rate-limit",
            "log",
            "log-format",
            "block",
            "bridge",
            "masquerade",
            "network-policy",
            "health-listen",
            "metrics",
            "kubernetes",
            "node-name",
            "kubeconfig",
            "cni-bin-dir",
            "cni-conf-dir",
            "cni-data-dir",
            "chained",
            "require-encryption",
        ]
    );
}

#[test]
fn chained_mode_settings_and_their_errors() {
    let kube = [
        "--kubernetes",
        "--node-name",
        "n1",
        "--secret-file",
        "/x",
        "--chained",
    ];
    let (a, _f) = args(&kube, "");
    let c = Config::load(&a).expect("valid");
    let k = c.kube.expect("kube");
    assert_eq!(
        k.chained,
        Some(crate::config::Chained {
            require_encryption: false
        })
    );
    assert_eq!(c.bridge, None, "no bridge beside another CNI");
    assert!(!c.masquerade && !c.network_policy);
    let mut strict = kube.to_vec();
    strict.push("--require-encryption");
    let (a, _f) = args(&strict, "");
    let k = Config::load(&a).expect("valid").kube.expect("kube");
    assert_eq!(k.chained.map(|c| c.require_encryption), Some(true));
    for (extra, named) in [
        (vec!["--range", "10.244.0.0/16"], "--range"),
        (vec!["--bridge", "br0"], "--bridge"),
        (vec!["--network-policy"], "--network-policy"),
    ] {
        let mut argv = kube.to_vec();
        argv.extend(extra);
        let (a, _f) = args(&argv, "");
        let e = Config::load(&a).expect_err("refused").to_string();
        assert!(e.contains(named) && e.contains(": "), "{e}");
    }
    let (a, _f) = args(&["--address", "10.47.0.1/16", "--chained"], "");
    let e = Config::load(&a).expect_err("refused").to_string();
    assert!(e.contains("--kubernetes"), "{e}");
    let (a, _f) = args(
        &[
            "--kubernetes",
            "--node-name",
            "n1",
            "--secret-file",
            "/x",
            "--require-encryption",
        ],
        "",
    );
    let e = Config::load(&a).expect_err("refused").to_string();
    assert!(e.contains("--chained"), "{e}");
}

#[test]
fn metrics_and_log_format_from_each_layer() {
    let base = ["--address", "10.47.0.1/16"];
    // Defaults: no metrics, text logs.
    let (a, _f) = args(&base, "");
    let c = Config::load(&a).expect("valid");
    assert_eq!(c.metrics, None);
    assert_eq!(c.log_format, LogFormat::Text);
    // The file, then the environment over it, then a flag over both.
    let file = "metrics = \"127.0.0.1:9479\"\nlog_format = \"json\"\n";
    let (a, _f) = args(&base, file);
    let c = Config::load(&a).expect("valid");
    assert_eq!(c.metrics, Some("127.0.0.1:9479".parse().expect("addr")));
    assert_eq!(c.log_format, LogFormat::Json);
    let (a, _f) = args_env(
        &[
            ("WEFTNET_METRICS", "[::1]:9100"),
            ("WEFTNET_LOG_FORMAT", "text"),
        ],
        &base,
        file,
    );
    let c = Config::load(&a).expect("valid");
    assert_eq!(c.metrics, Some("[::1]:9100".parse().expect("addr")));
    assert_eq!(c.log_format, LogFormat::Text);
    let (a, _f) = args_env(
        &[("WEFTNET_METRICS", "[::1]:9100")],
        &[
            &base[..],
            &["--metrics", "0.0.0.0:9478", "--log-format", "JSON"],
        ]
        .concat(),
        file,
    );
    let c = Config::load(&a).expect("valid");
    assert_eq!(c.metrics, Some("0.0.0.0:9478".parse().expect("addr")));
    assert_eq!(c.log_format, LogFormat::Json);
    // The metrics may share the probes' address.
    let (a, _f) = args(
        &[
            &base[..],
            &[
                "--metrics",
                "0.0.0.0:9478",
                "--health-listen",
                "0.0.0.0:9478",
            ],
        ]
        .concat(),
        "",
    );
    let c = Config::load(&a).expect("valid");
    assert_eq!(c.metrics, c.health_listen);
}

#[test]
fn control_commands_read_the_state_dir_from_the_config_file() {
    use crate::cli::StateDirArgs;
    use std::path::{Path, PathBuf};
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("weftnet.toml");
    std::fs::write(&file, "state_dir = \"/srv/weftnet\"\n").expect("write");
    let args = |config: Option<&Path>, state_dir: Option<&str>| StateDirArgs {
        config: config.map(Path::to_path_buf),
        state_dir: state_dir.map(PathBuf::from),
    };
    let dir_of = |a: StateDirArgs| super::state_dir_of(&a).expect("resolves");
    assert_eq!(dir_of(args(None, None)), PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(
        dir_of(args(Some(&file), None)),
        PathBuf::from("/srv/weftnet")
    );
    assert_eq!(
        dir_of(args(Some(&file), Some("/run/w"))),
        PathBuf::from("/run/w")
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "state_dri = \"/x\"\n").expect("write");
    let e = format!(
        "{:#}",
        super::state_dir_of(&args(Some(&bad), None)).expect_err("typo")
    );
    assert!(e.contains("unknown field") && e.contains("line 1"), "{e}");
}
