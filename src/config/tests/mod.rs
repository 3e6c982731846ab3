//! Tests of settings: the helpers, and values from each source and their defaults.
//! Validation errors are in `errors`, layering (file, then environment, then flags)
//! in `layers`.

use super::*;
use clap::Parser;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};

mod errors;
mod layers;

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
    // One worker per core unless set.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(c.workers, cores.min(MAX_WORKERS));
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
