//! Guard for a running `weftnet up` daemon.

use super::*;
use std::path::{Path, PathBuf};

/// How long [`Daemon::start`] waits for `weftnet status` to succeed.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`Daemon::stop`] waits for exit after SIGTERM.
pub const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `weftnet up` process inside a namespace, with its own temp dir holding `weftnet.toml`,
/// `state/` (the `--state-dir`) and the captured `daemon.stdout` / `daemon.stderr`.
/// On drop: SIGTERM, bounded wait, SIGKILL; logs printed if the test is panicking.
pub struct Daemon {
    // Field order matters: the process dies before its directory is removed.
    proc: Proc,
    netns: Netns,
    config_path: PathBuf,
    state_dir: PathBuf,
    interface: Option<String>,
    /// Everything after the binary name, for [`restart`](Daemon::restart).
    argv: Vec<std::ffi::OsString>,
    /// Environment settings passed to every start (after the hermetic clean-up).
    env: Vec<(String, String)>,
    config_toml: String,
    starts: u32,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Daemon(ns {}, pid {})",
            self.netns.name(),
            self.proc.pid()
        )
    }
}

impl Daemon {
    /// Path of the weftnet binary under test.
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_weftnet")
    }

    /// Start `weftnet up --config FILE --state-dir DIR <args>` in `netns` and wait until
    /// `weftnet status --state-dir DIR --json` succeeds there. Panics (with the daemon's output)
    /// if it exits early or is not ready within [`DAEMON_START_TIMEOUT`].
    pub fn start(netns: &Netns, args: &[&str], config_toml: &str) -> Daemon {
        Daemon::try_start(netns, args, config_toml).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`start`](Self::start) but returns the failure (exit status + logs) as `Err`, for
    /// tests that expect startup to fail. The process is killed before `Err` is returned.
    pub fn try_start(netns: &Netns, args: &[&str], config_toml: &str) -> Result<Daemon, String> {
        Daemon::launch(netns, args, config_toml, None, &[])
    }

    /// [`start`](Self::start) with `private_key` written (mode 0600) to `DIR/private.key` and
    /// passed as `--private-key-file`.
    pub fn start_with_key(
        netns: &Netns,
        private_key: &str,
        args: &[&str],
        config_toml: &str,
    ) -> Daemon {
        Daemon::launch(netns, args, config_toml, Some(private_key), &[])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`start_with_key`](Self::start_with_key) with environment settings (for example
    /// `WEFTNET_TUN_OFFLOAD=off`), kept for restarts.
    pub fn start_with_key_and_env(
        netns: &Netns,
        private_key: &str,
        args: &[&str],
        config_toml: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::launch(netns, args, config_toml, Some(private_key), env)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`start_with_key`](Self::start_with_key) that returns the failure as `Err`, for
    /// tests that expect startup to fail.
    pub fn try_start_with_key(
        netns: &Netns,
        private_key: &str,
        args: &[&str],
        config_toml: &str,
    ) -> Result<Daemon, String> {
        Daemon::launch(netns, args, config_toml, Some(private_key), &[])
    }

    fn launch(
        netns: &Netns,
        args: &[&str],
        config_toml: &str,
        key: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Daemon, String> {
        let dir = temp_dir("daemon");
        let config_path = dir.path().join("weftnet.toml");
        let state_dir = dir.path().join("state");
        std::fs::write(&config_path, config_toml).expect("write daemon config");
        std::fs::create_dir(&state_dir).expect("create state dir");

        let mut full: Vec<&OsStr> = vec![
            OsStr::new("up"),
            OsStr::new("--config"),
            config_path.as_os_str(),
            OsStr::new("--state-dir"),
            state_dir.as_os_str(),
        ];
        let key_path = dir.path().join("private.key");
        if let Some(key) = key {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .expect("create private key file");
            writeln!(f, "{}", key.trim()).expect("write private key file");
            full.push(OsStr::new("--private-key-file"));
            full.push(key_path.as_os_str());
        }
        full.extend(args.iter().map(OsStr::new));
        let argv: Vec<std::ffi::OsString> = full.iter().map(|a| a.to_os_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let proc = spawn_daemon(netns, &argv, &env, dir.path(), "daemon");
        let interface = interface_name(args, config_toml);
        let mut d = Daemon {
            proc,
            netns: netns.clone(),
            config_path,
            state_dir,
            interface,
            argv,
            env,
            config_toml: config_toml.to_owned(),
            starts: 1,
            dir,
        };
        d.wait_ready()?;
        Ok(d)
    }

    /// Poll `weftnet status` until it answers; on failure the process is killed and its exit
    /// status and logs are returned.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        loop {
            if let Some(status) = self.proc.try_wait() {
                return Err(format!(
                    "weftnet up exited early ({status}) in {}\nconfig:\n{}\n{}",
                    self.netns.name(),
                    self.config_toml,
                    self.proc.logs()
                ));
            }
            let out = self.status_output(Duration::from_secs(5));
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let last = describe(&out);
                self.proc.terminate(Duration::from_secs(3));
                return Err(format!(
                    "weftnet not ready within {DAEMON_START_TIMEOUT:?} in {}\nlast status attempt:\n{last}\n{}",
                    self.netns.name(),
                    self.proc.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the daemon ([`stop`](Self::stop), which must exit successfully) and start it again
    /// with the same arguments, config file and state dir (so the same default key), then wait
    /// until it is ready. The new run logs to `daemon.N.{stdout,stderr}` in [`dir`](Self::dir).
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "weftnet exited with {status} on SIGTERM\n{}",
            self.proc.logs()
        );
        self.start_again();
    }

    /// SIGKILL the daemon (no graceful shutdown at all, as in a crash or power loss) and
    /// reap it; returns its exit status. Its state dir is kept for [`start_again`].
    ///
    /// [`start_again`]: Self::start_again
    pub fn kill(&mut self) -> ExitStatus {
        self.proc.signal(libc::SIGKILL);
        self.proc
            .wait_timeout(DAEMON_STOP_TIMEOUT)
            .unwrap_or_else(|| panic!("weftnet survived SIGKILL for {DAEMON_STOP_TIMEOUT:?}"))
    }

    /// Start the daemon again, after it has exited (killed, stopped, or left), with the same
    /// arguments, config file and state dir, and wait until it is ready. The new run logs to
    /// `daemon.N.{stdout,stderr}` in [`dir`](Self::dir). Panics if it is still running.
    pub fn start_again(&mut self) {
        assert!(
            !self.is_running(),
            "start_again: weftnet (pid {}) is still running",
            self.pid()
        );
        self.starts += 1;
        let base = format!("daemon.{}", self.starts);
        self.proc = spawn_daemon(&self.netns, &self.argv, &self.env, self.dir.path(), &base);
        if let Err(e) = self.wait_ready() {
            panic!("restart failed: {e}");
        }
    }

    /// Run the weftnet binary with arbitrary arguments inside the daemon's namespace (e.g.
    /// `d.cli(&["status", "--state-dir", d.state_dir().to_str().unwrap()])`).
    pub fn cli<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut cmd = self.netns.command(Daemon::bin(), args);
        hermetic_env(&mut cmd);
        run_bounded(&mut cmd, None, EXEC_TIMEOUT)
    }

    fn status_output(&self, timeout: Duration) -> Output {
        let args = [
            OsStr::new("status"),
            OsStr::new("--state-dir"),
            self.state_dir.as_os_str(),
            OsStr::new("--json"),
        ];
        let mut cmd = self.netns.command(Daemon::bin(), &args);
        hermetic_env(&mut cmd);
        run_bounded(&mut cmd, None, timeout)
    }

    /// This node's public key, from `status --json` (`public_key`).
    pub fn public_key(&self) -> String {
        let st = self.status_json();
        st["public_key"]
            .as_str()
            .unwrap_or_else(|| panic!("no public_key in status: {st}"))
            .to_owned()
    }

    /// `weftnet status --json`, parsed, or `None` if the command fails or prints no JSON
    /// (for polling, e.g. `wait_until(t, || d.try_status_json().is_some_and(|s| ...))`).
    pub fn try_status_json(&self) -> Option<serde_json::Value> {
        let out = self.status_output(EXEC_TIMEOUT);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `weftnet status --state-dir DIR --json`, parsed. Panics (with logs) on failure.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.status_output(EXEC_TIMEOUT);
        if !out.status.success() {
            panic!(
                "weftnet status failed\n{}\n{}",
                describe(&out),
                self.proc.logs()
            );
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "weftnet status --json output is not JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// SIGTERM and wait up to [`DAEMON_STOP_TIMEOUT`]; returns the exit status. If the daemon
    /// does not exit in time it is SIGKILLed and this panics.
    pub fn stop(&mut self) -> ExitStatus {
        self.proc.signal(libc::SIGTERM);
        match self.proc.wait_timeout(DAEMON_STOP_TIMEOUT) {
            Some(s) => s,
            None => {
                let logs = self.proc.logs();
                self.proc.terminate(Duration::ZERO);
                panic!("weftnet did not exit within {DAEMON_STOP_TIMEOUT:?} of SIGTERM\n{logs}");
            }
        }
    }

    /// SIGINT (stop for good: leave announced, interface and rules removed) and wait up
    /// to [`DAEMON_STOP_TIMEOUT`]; returns the exit status. Panics like [`stop`](Self::stop).
    pub fn stop_for_good(&mut self) -> ExitStatus {
        self.proc.signal(libc::SIGINT);
        match self.proc.wait_timeout(DAEMON_STOP_TIMEOUT) {
            Some(s) => s,
            None => {
                let logs = self.proc.logs();
                self.proc.terminate(Duration::ZERO);
                panic!("weftnet did not exit within {DAEMON_STOP_TIMEOUT:?} of SIGINT\n{logs}");
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
    /// Status, stdout and stderr of the daemon so far.
    pub fn logs(&self) -> String {
        self.proc.logs()
    }
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
    /// The current run's whole stdout.
    pub fn proc_stdout(&self) -> String {
        self.proc.stdout()
    }
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
    /// The overlay interface name: `--interface`, else the config's `interface = "..."`, else
    /// weftnet's default `weft0`.
    pub fn interface(&self) -> &str {
        self.interface.as_deref().unwrap_or("weft0")
    }
    /// The daemon's private temp dir (for extra files such as key files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `weftnet ARGV...` in `netns` with a hermetic environment plus `env`, logging to
/// `dir/base.*`.
fn spawn_daemon(
    netns: &Netns,
    argv: &[std::ffi::OsString],
    env: &[(String, String)],
    dir: &Path,
    base: &str,
) -> Proc {
    let mut cmd = netns.command(Daemon::bin(), argv);
    hermetic_env(&mut cmd);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.env("RUST_BACKTRACE", "1").env("NO_COLOR", "1");
    netns.spawn_cmd(cmd, Some((dir, base)))
}

/// Run weftnet only with what the test passes explicitly: drop `WEFTNET_*` settings inherited
/// from the environment, except the log filter `WEFTNET_LOG`.
pub fn hermetic_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("WEFTNET_") && k != "WEFTNET_LOG" {
            cmd.env_remove(&*k);
        }
    }
}

/// `--interface NAME` (last wins) or a top-level `interface = "NAME"` line in the TOML.
fn interface_name(args: &[&str], config_toml: &str) -> Option<String> {
    let from_args = args
        .windows(2)
        .filter(|w| w[0] == "--interface")
        .map(|w| w[1].to_owned())
        .chain(
            args.iter()
                .filter_map(|a| a.strip_prefix("--interface=").map(str::to_owned)),
        )
        .last();
    from_args.or_else(|| {
        config_toml
            .lines()
            .take_while(|l| !l.trim_start().starts_with('['))
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == "interface")
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
    })
}

/// A `[[peer]]` table for a weftnet config file, e.g.
/// `peer_toml(&key, Some(addr), &["10.47.0.2/32"], Some(25))`. IPv6 endpoints are written in
/// the `[v6]:port` form.
pub fn peer_toml(
    public_key: &str,
    endpoint: Option<std::net::SocketAddr>,
    allowed_ips: &[&str],
    persistent_keepalive: Option<u16>,
) -> String {
    let mut s = format!("[[peer]]\npublic_key = \"{}\"\n", public_key.trim());
    if let Some(e) = endpoint {
        s.push_str(&format!("endpoint = \"{e}\"\n"));
    }
    let ips: Vec<String> = allowed_ips.iter().map(|a| format!("\"{a}\"")).collect();
    s.push_str(&format!("allowed_ips = [{}]\n", ips.join(", ")));
    if let Some(k) = persistent_keepalive {
        s.push_str(&format!("persistent_keepalive = {k}\n"));
    }
    s
}
