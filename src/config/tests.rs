//! Tests of settings: layering (file, then environment, then flags), defaults, and
//! validation errors that name the problem and the fix.

use super::*;
use clap::Parser;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};

/// Serializes reading `WEFTNET_*` variables (clap reads them while parsing) with the test
/// that sets some.
static ENV: Mutex<()> = Mutex::new(());

pub(crate) fn env_lock() -> MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|e| e.into_inner())
}

/// Environment variables set while alive.
struct Vars<'a>(&'a [(&'a str, &'a str)]);

impl<'a> Vars<'a> {
    fn set(vars: &'a [(&'a str, &'a str)]) -> Self {
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        Vars(vars)
    }
}

impl Drop for Vars<'_> {
    fn drop(&mut self) {
        for (k, _) in self.0 {
            std::env::remove_var(k);
        }
    }
}

/// `weftnet up --config FILE EXTRA...` with `file` written to FILE.
fn args(extra: &[&str], file: &str) -> (UpArgs, tempfile::NamedTempFile) {
    args_env(&[], extra, file)
}

/// [`args`] with `vars` in the environment.
fn args_env(
    vars: &[(&str, &str)],
    extra: &[&str],
    file: &str,
) -> (UpArgs, tempfile::NamedTempFile) {
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    f.write_all(file.as_bytes()).expect("write");
    let path = f.path().to_str().expect("utf8").to_string();
    let mut argv = vec!["weftnet", "up", "--config", &path];
    argv.extend_from_slice(extra);
    let cli = {
        let _env = env_lock();
        let _vars = Vars::set(vars);
        crate::cli::Cli::try_parse_from(argv).expect("parses")
    };
    match cli.command {
        crate::cli::Command::Up(a) => (*a, f),
        _ => panic!("not up"),
    }
}

const PEER: &str = "public_key = \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"";

#[test]
fn flags_win_over_file_and_defaults_apply() {
    let file = format!(
        "interface = \"wfile\"\naddress = \"10.47.0.1/16\"\nlisten_port = 5000\n[[peer]]\n{PEER}\nendpoint = \"192.0.2.7:51820\"\nallowed_ips = [\"10.47.9.1/24\", \"fd47::/64\"]\npersistent_keepalive = 25\n"
    );
    let (a, _f) = args(&["--listen-port", "6000"], &file);
    let c = Config::load(&a).expect("valid");
    assert_eq!(c.interface, "wfile");
    assert_eq!(c.listen_port, 6000);
    assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert!(c.private_key_is_default);
    assert_eq!(c.peers.len(), 1);
    assert_eq!(
        c.peers[0].allowed_ips,
        vec![
            "10.47.9.0/24".parse::<IpNet>().expect("net"),
            "fd47::/64".parse().expect("net")
        ]
    );
    assert_eq!(c.peers[0].persistent_keepalive, Some(25));
}

fn error(extra: &[&str], file: &str) -> String {
    let (a, _f) = args(extra, file);
    let e = Config::load(&a).expect_err("must fail");
    let s = format!("{e:#}");
    assert!(!s.contains('\n'), "one line: {s}");
    s
}

#[test]
fn cluster_settings_from_file_and_flags() {
    let file = "[cluster]\nsecret_file = \"/etc/weftnet/secret\"\njoin = [\"192.0.2.1:51820\"]\nrange = \"10.47.0.0/16\"\nname = \"a\"\n";
    let (a, _f) = args(
        &[
            "--join",
            "192.0.2.9:51820",
            "--advertise-address",
            "198.51.100.7",
        ],
        file,
    );
    let c = Config::load(&a).expect("valid");
    let cl = c.cluster.expect("cluster mode");
    assert_eq!(
        cl.join,
        vec!["192.0.2.9:51820".to_string()],
        "flags replace the file's list"
    );
    assert_eq!(cl.secret_files, vec![PathBuf::from("/etc/weftnet/secret")]);
    assert_eq!(cl.range, Some(("10.47.0.0/16".parse().expect("net"), 24)));
    assert_eq!(cl.name, "a");
    assert_eq!(
        cl.advertise.map(|a| (a.ip.to_string(), a.port)),
        Some(("198.51.100.7".into(), None))
    );
    assert!(c.addresses.is_empty(), "--range replaces --address");
    // Without gossip there is no cluster.
    let (a, _f) = args(&["--address", "10.47.0.1/16"], "");
    assert!(Config::load(&a).expect("valid").cluster.is_none());
}

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
}

#[test]
fn kubernetes_mode_defaults_and_file_keys() {
    let s = ["--secret-file", "/x"];
    let (a, _f) = args(
        &[
            &s[..],
            &[
                "--kubernetes",
                "--node-name",
                "n1",
                "--range",
                "10.244.0.0/16",
            ],
        ]
        .concat(),
        "",
    );
    let c = Config::load(&a).expect("loads");
    let k = c.kube.expect("kube mode");
    assert_eq!(k.node_name, "n1");
    assert_eq!(k.cni_bin_dir, PathBuf::from(DEFAULT_CNI_BIN_DIR));
    assert_eq!(c.bridge.as_deref(), Some(DEFAULT_BRIDGE));
    assert!(c.masquerade, "masquerade defaults on with a range");
    assert_eq!(
        c.cluster.expect("cluster").name,
        "n1",
        "named after the Node"
    );
    let file = "health_listen = \"127.0.0.1:9478\"\nmasquerade = false\n[cluster]\nsecret_file = \"/x\"\nrange = \"10.244.0.0/16\"\n[kubernetes]\nenabled = true\nnode_name = \"n2\"\ncni_conf_dir = \"/tmp/net.d\"\n";
    let (a, _f) = args(&[], file);
    let c = Config::load(&a).expect("loads");
    assert_eq!(
        c.kube.expect("kube").cni_conf_dir,
        PathBuf::from("/tmp/net.d")
    );
    assert!(!c.masquerade);
    assert_eq!(
        c.health_listen,
        Some("127.0.0.1:9478".parse().expect("addr"))
    );
    // Without a range there is nothing to tell pod-to-pod traffic from egress.
    let (a, _f) = args(
        &[&s[..], &["--kubernetes", "--node-name", "n1"]].concat(),
        "",
    );
    assert!(!Config::load(&a).expect("loads").masquerade);
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
    assert!(error(
        &["--address", "10.47.0.1/16"],
        &format!("[[peer]]\n{PEER}\n[[peer]]\n{PEER}\n")
    )
    .contains("listed twice"));
}

/// One setting of each group, as (listen_port, cluster name, multicast rate limit, Node
/// name).
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
         [cluster]\nsecret_file = \"/x\"\njoin = \"192.0.2.1:51820\"\nadvertise_address = \"192.0.2.7\"\nrange = \"10.244.0.0/16\"\nblock_prefix_len = 24\nname = \"a\"\n\
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
    assert_eq!(c.cluster.expect("cluster").range.map(|r| r.1), Some(24));
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
            "state-dir",
            "private-key-file",
            "secret-file",
            "join",
            "advertise-address",
            "range",
            "block-prefix-len",
            "name",
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
            "health-listen",
            "metrics",
            "kubernetes",
            "node-name",
            "kubeconfig",
            "cni-bin-dir",
            "cni-conf-dir",
            "cni-data-dir",
        ]
    );
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
