//! WireGuard keys and the `wireguard-go` reference peer.

use super::*;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A new base64 private key (`wg genkey`).
pub fn genkey() -> String {
    let out = host_exec::<&str>("wg", &["genkey"]);
    expect_success("wg genkey", out).trim().to_owned()
}

/// The base64 public key for a private key (`wg pubkey`).
pub fn pubkey(private_key: &str) -> String {
    let input = format!("{}\n", private_key.trim());
    let out = run_bounded(
        Command::new("wg").arg("pubkey"),
        Some(input.as_bytes()),
        EXEC_TIMEOUT,
    );
    expect_success("wg pubkey", out).trim().to_owned()
}

/// `(private, public)`.
pub fn keypair() -> (String, String) {
    let private = genkey();
    let public = pubkey(&private);
    (private, public)
}

/// The UAPI socket of a userspace WireGuard interface. The directory is shared by all
/// namespaces, which is why wireguard-go interface names must be globally unique.
pub fn wg_socket_path(ifname: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"))
}

/// A `wireguard-go -f IFNAME` reference peer inside a namespace, with a fresh key pair, its
/// listen port and addresses configured and the interface up. On drop: the process is
/// terminated (which removes the interface) and the UAPI socket is removed.
pub struct WireguardGo {
    proc: Proc,
    netns: Netns,
    ifname: String,
    private_key: String,
    public_key: String,
    listen_port: u16,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for WireguardGo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WireguardGo({} in {}, port {})",
            self.ifname,
            self.netns.name(),
            self.listen_port
        )
    }
}

impl WireguardGo {
    /// Start with a fresh key. `addresses` are CIDRs for the tunnel interface, e.g.
    /// `["10.99.0.1/24", "fd99::1/64"]`.
    pub fn start(netns: &Netns, addresses: &[&str], listen_port: u16) -> WireguardGo {
        WireguardGo::start_with_key(netns, &genkey(), addresses, listen_port)
    }

    pub fn start_with_key(
        netns: &Netns,
        private_key: &str,
        addresses: &[&str],
        listen_port: u16,
    ) -> WireguardGo {
        let ifname = unique_name("wg");
        let dir = temp_dir("wggo");
        let mut cmd = netns.command("wireguard-go", &["-f", &ifname]);
        cmd.env("LOG_LEVEL", "verbose")
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1");
        let proc = netns.spawn_cmd(cmd, Some((dir.path(), "wireguard-go")));
        let mut wg = WireguardGo {
            proc,
            netns: netns.clone(),
            ifname,
            private_key: private_key.trim().to_owned(),
            public_key: pubkey(private_key),
            listen_port,
            dir,
        };
        let sock = wg_socket_path(&wg.ifname);
        let ready = wait_until(Duration::from_secs(10), || {
            sock.exists() || !wg.proc.is_running()
        });
        if !ready || !wg.proc.is_running() {
            panic!(
                "wireguard-go {} did not come up\n{}",
                wg.ifname,
                wg.proc.logs()
            );
        }
        let key_file = wg.dir.path().join("private.key");
        std::fs::write(&key_file, format!("{}\n", wg.private_key)).expect("write key file");
        let key_file = key_file.to_string_lossy().into_owned();
        wg.wg(&[
            "set",
            &wg.ifname,
            "private-key",
            &key_file,
            "listen-port",
            &listen_port.to_string(),
        ]);
        for addr in addresses {
            wg.netns.ip(&["addr", "add", addr, "dev", &wg.ifname]);
        }
        wg.netns.ip(&["link", "set", &wg.ifname, "up"]);
        wg
    }

    /// `wg set IF peer PUB [endpoint E] allowed-ips X,Y [persistent-keepalive N]`.
    pub fn add_peer(
        &self,
        public_key: &str,
        endpoint: Option<SocketAddr>,
        allowed_ips: &[&str],
        keepalive: Option<u16>,
    ) {
        let mut args: Vec<String> = vec![
            "set".into(),
            self.ifname.clone(),
            "peer".into(),
            public_key.trim().into(),
        ];
        if let Some(e) = endpoint {
            args.extend(["endpoint".into(), e.to_string()]);
        }
        args.extend(["allowed-ips".into(), allowed_ips.join(",")]);
        if let Some(k) = keepalive {
            args.extend(["persistent-keepalive".into(), k.to_string()]);
        }
        self.wg(&args);
    }

    /// Run `wg` with arbitrary arguments inside the namespace; must succeed; returns stdout.
    pub fn wg<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.netns.exec("wg", args);
        if !out.status.success() {
            panic!(
                "wg {:?} failed\n{}\n{}",
                args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
                describe(&out),
                self.proc.logs()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `wg show IF dump` (tab-separated; first line is the interface, then one line per peer).
    pub fn dump(&self) -> String {
        self.wg(&["show", &self.ifname, "dump"])
    }

    /// Unix time of the latest handshake with `peer` (0 = never), from `wg show IF latest-handshakes`.
    pub fn latest_handshake(&self, peer: &str) -> u64 {
        self.wg(&["show", &self.ifname, "latest-handshakes"])
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(k, _)| *k == peer.trim())
            .and_then(|(_, t)| t.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }
    pub fn public_key(&self) -> &str {
        &self.public_key
    }
    pub fn private_key(&self) -> &str {
        &self.private_key
    }
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn logs(&self) -> String {
        self.proc.logs()
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(5));
        let _ = std::fs::remove_file(wg_socket_path(&self.ifname));
    }
}
