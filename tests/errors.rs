//! End-to-end tests of weftnet's startup errors: each is a single line on stderr starting with
//! `weftnet: error: `, a non-zero exit status, a message that names the problem, and nothing
//! left behind (no interface, no control socket). Every `weftnet up` runs in its own network
//! namespace; run as root (`cargo test --test errors`).

mod common;

use common::*;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A failing command must fail well before this (a daemon that starts would be killed here).
const FAIL_TIMEOUT: Duration = Duration::from_secs(15);

/// The user `nobody`.
const NOBODY: u32 = 65534;

/// A namespace and a directory with `state/`, a valid key file `private.key` (mode 0600) and
/// room for a config file.
struct Case {
    ns: Netns,
    dir: tempfile::TempDir,
}

impl Case {
    fn new(tag: &str) -> Case {
        let ns = Netns::new(tag);
        let dir = temp_dir(tag);
        std::fs::create_dir(dir.path().join("state")).expect("create state dir");
        let case = Case { ns, dir };
        write_mode(&case.key_path(), &format!("{}\n", genkey()), 0o600);
        case
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("private.key")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("weftnet.toml")
    }

    /// `up --config FILE --state-dir DIR --private-key-file KEY EXTRA...`, with `config` written
    /// to FILE.
    fn up_args(&self, config: &str, extra: &[&str]) -> Vec<OsString> {
        std::fs::write(self.config_path(), config).expect("write config");
        let mut args: Vec<OsString> = vec![
            "up".into(),
            "--config".into(),
            self.config_path().into(),
            "--state-dir".into(),
            self.state_dir().into(),
            "--private-key-file".into(),
            self.key_path().into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        args
    }

    /// Run `weftnet up` (see [`up_args`](Self::up_args)) in the namespace.
    fn up(&self, config: &str, extra: &[&str]) -> Output {
        self.run(&[], &self.up_args(config, extra))
    }

    /// `ip netns exec NS [WRAPPER...] weftnet ARGS...`, hermetic environment, bounded.
    fn run<S: AsRef<OsStr>>(&self, wrapper: &[&str], args: &[S]) -> Output {
        self.run_bin(wrapper, Path::new(Daemon::bin()), args)
    }

    /// [`run`](Self::run) with another copy of the binary.
    fn run_bin<S: AsRef<OsStr>>(&self, wrapper: &[&str], bin: &Path, args: &[S]) -> Output {
        let mut full: Vec<&OsStr> = wrapper.iter().map(OsStr::new).collect();
        full.push(bin.as_os_str());
        full.extend(args.iter().map(AsRef::as_ref));
        let (first, rest) = full.split_first().expect("a command");
        let mut cmd = self.ns.command(&first.to_string_lossy(), rest);
        hermetic_env(&mut cmd);
        cmd.env("NO_COLOR", "1");
        run_bounded(&mut cmd, None, FAIL_TIMEOUT)
    }

    /// The failed start left no interface (other than `keep`) and no control socket behind.
    fn assert_nothing_left(&self, keep: &[&str]) {
        let mut want: Vec<String> = ["lo"].iter().chain(keep).map(|s| s.to_string()).collect();
        want.sort();
        let mut links = self.ns.links();
        links.sort();
        assert_eq!(links, want, "links after a failed start");
        let socket = self.state_dir().join("weftnet.sock");
        assert!(!socket.exists(), "{} left behind", socket.display());
    }
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The command exited with a non-zero code (not killed, e.g. by the timeout), printed nothing on
/// stdout and exactly one line on stderr, `weftnet: error: ...`, which contains every keyword.
/// Returns that line.
fn assert_error(out: &Output, keywords: &[&str]) -> String {
    let what = describe(out);
    match out.status.code() {
        Some(0) => panic!("expected a failure\n{what}"),
        Some(_) => {}
        None => panic!("expected an exit with an error, not a signal\n{what}"),
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.strip_suffix('\n').unwrap_or(&stderr);
    assert!(
        !line.contains('\n') && stderr.ends_with('\n'),
        "stderr must be exactly one line\n{what}"
    );
    assert!(
        line.starts_with("weftnet: error: "),
        "stderr must start with `weftnet: error: `\n{what}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout\n{what}");
    for k in keywords {
        assert!(line.contains(k), "the error should mention {k:?}\n{what}");
    }
    eprintln!("{line}");
    line.to_owned()
}

#[test]
fn no_cap_net_admin_as_unprivileged_user() {
    let case = Case::new("nocap");
    let state = case.state_dir();
    for dir in [case.dir.path(), &state] {
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    let nobody = format!("--reuid={NOBODY}");
    let nogroup = format!("--regid={NOBODY}");
    let wrapper = [
        "setpriv",
        &nobody,
        &nogroup,
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    // The build tree may not be reachable for `nobody` (e.g. under /root): use a link or copy
    // of the binary in the test's own directory.
    let bin = case.dir.path().join("weftnet");
    if std::fs::hard_link(Daemon::bin(), &bin).is_err() {
        std::fs::copy(Daemon::bin(), &bin).expect("copy the weftnet binary");
    }
    let out = case.run_bin(
        &wrapper,
        &bin,
        &[
            OsStr::new("up"),
            OsStr::new("--state-dir"),
            state.as_os_str(),
            OsStr::new("--address"),
            OsStr::new("10.201.0.1/24"),
        ],
    );
    assert_error(&out, &["CAP_NET_ADMIN"]);
    case.assert_nothing_left(&[]);
    // Refused before touching anything: no key was created.
    let entries: Vec<_> = std::fs::read_dir(&state).expect("state dir").collect();
    assert!(entries.is_empty(), "state dir not empty: {entries:?}");
}

#[test]
fn no_cap_net_admin_as_root() {
    let case = Case::new("nocaproot");
    let wrapper = [
        "setpriv",
        "--inh-caps=-net_admin",
        "--bounding-set=-net_admin",
    ];
    let out = case.run(&wrapper, &case.up_args("", &["--address", "10.201.0.1/24"]));
    assert_error(&out, &["CAP_NET_ADMIN"]);
    case.assert_nothing_left(&[]);
}

#[test]
fn dev_net_tun_missing() {
    let case = Case::new("notun");
    // A private mount namespace (inside the netns) where /dev/net is an empty tmpfs.
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs none /dev/net && exec \"$0\" \"$@\"",
    ];
    let out = case.run(&wrapper, &case.up_args("", &["--address", "10.201.0.1/24"]));
    assert_error(&out, &["/dev/net/tun", "missing"]);
    case.assert_nothing_left(&[]);
    assert!(
        Path::new("/dev/net/tun").exists(),
        "the host's /dev/net/tun"
    );
}

#[test]
fn udp_port_in_use_by_another_process() {
    let case = Case::new("port");
    let mut socat = case.ns.spawn("socat", &["-u", "UDP4-RECV:51999", "STDOUT"]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let out = case.ns.exec("ss", &["-Hnul", "sport = :51999"]);
            String::from_utf8_lossy(&out.stdout).contains(":51999")
        }),
        "socat did not bind\n{}",
        socat.logs()
    );
    let out = case.up(
        "",
        &["--address", "10.201.0.1/24", "--listen-port", "51999"],
    );
    assert_error(&out, &["51999", "already in use"]);
    case.assert_nothing_left(&[]);
    assert!(socat.is_running(), "{}", socat.logs());
}

#[test]
fn udp_port_in_use_by_another_daemon() {
    let case = Case::new("port2");
    let first = Daemon::start(&case.ns, &["--address", "10.201.0.1/24"], "");
    // Another state dir and interface, the same (default) port.
    let out = case.up("", &["--address", "10.201.0.2/24", "--interface", "weft1"]);
    assert_error(&out, &["51820", "already in use"]);
    assert_eq!(first.interface(), "weft0");
    case.assert_nothing_left(&["weft0"]);
    assert!(
        first.try_status_json().is_some(),
        "the first daemon is fine"
    );
}

#[test]
fn state_dir_of_a_running_daemon() {
    let case = Case::new("twice");
    let first = Daemon::start(&case.ns, &["--address", "10.201.0.1/24"], "");
    let out = case.run(
        &[],
        &[
            OsStr::new("up"),
            OsStr::new("--state-dir"),
            first.state_dir().as_os_str(),
            OsStr::new("--address"),
            OsStr::new("10.201.0.2/24"),
            OsStr::new("--interface"),
            OsStr::new("weft1"),
            OsStr::new("--listen-port"),
            OsStr::new("51821"),
        ],
    );
    assert_error(&out, &["another weftnet daemon"]);
    let mut links = case.ns.links();
    links.sort();
    assert_eq!(links, ["lo", "weft0"]);
    assert!(
        first.try_status_json().is_some(),
        "the first daemon is fine"
    );
}

#[test]
fn garbage_private_key_file() {
    let case = Case::new("badkey");
    write_mode(&case.key_path(), "this is not a key\n", 0o600);
    let out = case.up("", &["--address", "10.201.0.1/24"]);
    assert_error(&out, &["private key", "not a valid key"]);
    case.assert_nothing_left(&[]);
}

#[test]
fn loose_private_key_file_mode() {
    let case = Case::new("keymode");
    std::fs::set_permissions(case.key_path(), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let out = case.up("", &["--address", "10.201.0.1/24"]);
    assert_error(&out, &["chmod 600"]);
    case.assert_nothing_left(&[]);
}

#[test]
fn garbage_peer_public_key() {
    let case = Case::new("peerkey");
    let config = "[[peer]]\npublic_key = \"not-a-key\"\nallowed_ips = [\"10.201.0.2/32\"]\n";
    let out = case.up(config, &["--address", "10.201.0.1/24"]);
    assert_error(&out, &["public_key"]);
    case.assert_nothing_left(&[]);
}

#[test]
fn bad_address_prefix() {
    let case = Case::new("badaddr");
    for bad in [
        "10.201.0.1/33",
        "10.201.0.300/24",
        "fd20::1/129",
        "not-an-address",
    ] {
        let out = case.up("", &["--address", bad]);
        assert_error(&out, &["invalid address", bad]);
        case.assert_nothing_left(&[]);
    }
    // The same from the config file.
    let out = case.up("address = \"10.201.0.1/40\"\n", &[]);
    assert_error(&out, &["invalid address", "10.201.0.1/40"]);
    case.assert_nothing_left(&[]);
}

#[test]
fn bad_allowed_ips_prefix() {
    let case = Case::new("badallow");
    let (_, peer) = keypair();
    for bad in ["10.202.0.0/33", "fd20:2::/200", "10.202.0.0/"] {
        let out = case.up(
            &peer_toml(&peer, None, &[bad], None),
            &["--address", "10.201.0.1/24"],
        );
        assert_error(&out, &["allowed_ips", bad]);
        case.assert_nothing_left(&[]);
    }
}

#[test]
fn unknown_config_key() {
    let case = Case::new("unkkey");
    let out = case.up(
        "adress = \"10.201.0.1/24\"\n",
        &["--address", "10.201.0.1/24"],
    );
    assert_error(&out, &["unknown field", "adress"]);
    case.assert_nothing_left(&[]);
    // Also inside a [[peer]] table.
    let (_, peer) = keypair();
    let config = format!(
        "{}endpiont = \"192.0.2.1:51820\"\n",
        peer_toml(&peer, None, &["10.201.0.2/32"], None)
    );
    let out = case.up(&config, &["--address", "10.201.0.1/24"]);
    assert_error(&out, &["unknown field", "endpiont"]);
    case.assert_nothing_left(&[]);
}

#[test]
fn interface_name_taken() {
    let case = Case::new("iftaken");
    // (The dummy module may be missing; any link type will do.)
    case.ns.ip(&["link", "add", "wfbusy", "type", "bridge"]);
    let out = case.up("", &["--address", "10.201.0.1/24", "--interface", "wfbusy"]);
    assert_error(&out, &["wfbusy", "already exists"]);
    case.assert_nothing_left(&["wfbusy"]);
    // weftnet must not have touched (let alone deleted) the existing link.
    let link = case.ns.ip(&["-d", "link", "show", "wfbusy"]);
    assert!(link.contains("bridge"), "{link}");
    let addrs = case.ns.ip(&["addr", "show", "dev", "wfbusy"]);
    assert!(!addrs.contains("10.201.0.1"), "{addrs}");
}

#[test]
fn kernel_rejecting_an_address_leaves_no_interface() {
    // With IPv6 disabled in the namespace the kernel refuses the IPv6 overlay address, which
    // fails the start after the TUN interface exists: weftnet must remove it again.
    let case = Case::new("noipv6");
    case.ns.sysctl(&[
        ("net.ipv6.conf.all.disable_ipv6", "1"),
        ("net.ipv6.conf.default.disable_ipv6", "1"),
    ]);
    let out = case.up(
        "",
        &["--address", "10.201.0.1/24", "--address", "fd20:1::1/64"],
    );
    assert_error(&out, &["fd20:1::1/64"]);
    case.assert_nothing_left(&[]);
}

#[test]
fn pubkey_with_garbage_on_stdin() {
    let mut cmd = Command::new(Daemon::bin());
    cmd.arg("pubkey");
    hermetic_env(&mut cmd);
    let out = run_bounded(&mut cmd, Some(b"garbage\n"), FAIL_TIMEOUT);
    assert_error(&out, &["invalid"]);
    let out = run_bounded(&mut cmd, Some(b""), FAIL_TIMEOUT);
    assert_error(&out, &["invalid"]);
    // Sanity: a real key works and agrees with `wg pubkey`.
    let (private, public) = keypair();
    let out = run_bounded(&mut cmd, Some(private.as_bytes()), FAIL_TIMEOUT);
    assert_eq!(expect_success("weftnet pubkey", out).trim(), public);
}

#[test]
fn genkey_output_file_is_private_and_never_overwritten() {
    let dir = temp_dir("genkey");
    for sub in ["genkey", "gensecret"] {
        // A fresh host has no /etc/weftnet: the directory is created, private.
        let parent = dir.path().join(format!("{sub}.d/weftnet"));
        let path = parent.join(sub);
        let mut cmd = Command::new(Daemon::bin());
        cmd.args([OsStr::new(sub), OsStr::new("-o"), path.as_os_str()]);
        hermetic_env(&mut cmd);
        expect_success(sub, run_bounded(&mut cmd, None, FAIL_TIMEOUT));
        let mode = std::fs::metadata(&path)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{sub} -o: mode {mode:o}");
        let dir_mode = std::fs::metadata(&parent)
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(
            dir_mode & 0o777,
            0o700,
            "{sub} -o: directory mode {dir_mode:o}"
        );
        let first = std::fs::read_to_string(&path).expect("read");
        let out = run_bounded(&mut cmd, None, FAIL_TIMEOUT);
        assert_error(&out, &["already exists"]);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), first);
    }
    let key = std::fs::read_to_string(dir.path().join("genkey.d/weftnet/genkey")).expect("key");
    pubkey(&key); // wg accepts it
}

#[test]
fn other_invalid_settings() {
    let case = Case::new("settings");
    for (args, keywords) in [
        (
            &[
                "--address",
                "10.201.0.1/24",
                "--interface",
                "name-too-long-for-linux",
            ][..],
            &["invalid interface name"][..],
        ),
        (&["--address", "10.201.0.1/24", "--mtu", "100"], &["--mtu"]),
        (
            &["--address", "10.201.0.1/24", "--listen-port", "0"],
            &["--listen-port"],
        ),
        (&[], &["--address"]),
    ] {
        let out = case.up("", args);
        assert_error(&out, keywords);
        case.assert_nothing_left(&[]);
    }
}

#[test]
fn status_without_a_daemon() {
    let case = Case::new("nostatus");
    let out = case.run(
        &[],
        &[
            OsStr::new("status"),
            OsStr::new("--state-dir"),
            case.state_dir().as_os_str(),
            OsStr::new("--json"),
        ],
    );
    assert_error(&out, &["cannot reach the daemon"]);
}

#[test]
fn command_line_usage_errors_are_one_line() {
    // Errors found while parsing the command line follow the same format as all others.
    let case = Case::new("usage");
    for (args, keyword) in [
        (
            &["up", "--address", "10.201.0.1/24", "--listen-port", "99999"][..],
            "99999",
        ),
        (
            &["up", "--address", "10.201.0.1/24", "--no-such-flag"],
            "--no-such-flag",
        ),
        (&["no-such-command"], "no-such-command"),
    ] {
        let out = case.run(&[], args);
        assert_error(&out, &[keyword]);
        case.assert_nothing_left(&[]);
    }
}

/// A seed with no route to it (no route of any kind on the host) is named as the
/// problem, with the command that shows it; `--advertise-address` is not blamed.
#[test]
fn no_route_to_the_seed() {
    let case = Case::new("noroute");
    let secret = common::mesh::gensecret(case.dir.path(), "secret");
    let secret = secret.to_str().expect("utf-8 path").to_owned();
    let out = case.up(
        "",
        &[
            "--secret-file",
            &secret,
            "--join",
            "10.9.9.9:51820",
            "--range",
            "10.47.0.0/16",
        ],
    );
    let line = assert_error(
        &out,
        &["no route to the seed(s) 10.9.9.9", "ip route get 10.9.9.9"],
    );
    assert!(!line.contains("advertise"), "not blamed: {line}");
    case.assert_nothing_left(&[]);
}
