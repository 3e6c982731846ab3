//! Network namespace and child-process guards.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex, Once};

/// Serialises `ip netns add/del` within this process (iproute2 sets up the shared /run/netns
/// mount on first use, which is racy when done concurrently).
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static REAP_STALE: Once = Once::new();

/// A network namespace that is deleted (after killing everything inside) when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Netns(Arc<NetnsInner>);

struct NetnsInner {
    name: String,
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Netns({})", self.0.name)
    }
}

impl Netns {
    /// Create a namespace named `<unique id>-<tag>` with `lo` up.
    pub fn new(tag: &str) -> Netns {
        Netns::create(format!("{}-{tag}", unique_id()))
    }

    /// Create a namespace with an exact name (must start with a [`unique_id`] so that stale
    /// reaping and leak checks recognise it).
    pub(crate) fn create(name: String) -> Netns {
        REAP_STALE.call_once(reap_stale);
        let add = |name: &str| {
            let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            host_exec("ip", &["netns", "add", name])
        };
        let mut out = add(&name);
        if !out.status.success()
            && owner_pid(&name) == Some(std::process::id())
            && list_netns().contains(&name)
        {
            // Leftover of an earlier process that had our pid (we never reuse an id).
            eprintln!("[harness] replacing stale namespace {name}");
            destroy_netns(&name);
            out = add(&name);
        }
        if !out.status.success() {
            panic!("ip netns add {name} failed\n{}", describe(&out));
        }
        let ns = Netns(Arc::new(NetnsInner { name }));
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// `ip netns exec NAME cmd args...` as a [`Command`] (not yet run), for custom setups.
    pub fn command<S: AsRef<OsStr>>(&self, cmd: &str, args: &[S]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name(), cmd]).args(args);
        c
    }

    /// Run a command inside the namespace, bounded by [`EXEC_TIMEOUT`]. Never panics on a
    /// non-zero exit; check `output.status`.
    pub fn exec<S: AsRef<OsStr>>(&self, cmd: &str, args: &[S]) -> Output {
        self.exec_timeout(EXEC_TIMEOUT, cmd, args)
    }

    pub fn exec_timeout<S: AsRef<OsStr>>(
        &self,
        timeout: Duration,
        cmd: &str,
        args: &[S],
    ) -> Output {
        run_bounded(&mut self.command(cmd, args), None, timeout)
    }

    /// Like [`exec`](Self::exec) but panics (with stdout/stderr) unless the command succeeds;
    /// returns stdout.
    pub fn run<S: AsRef<OsStr>>(&self, cmd: &str, args: &[S]) -> String {
        let out = self.exec(cmd, args);
        let what = format!(
            "[{}] {cmd} {:?}",
            self.name(),
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        );
        expect_success(&what, out)
    }

    /// `ip -n NAME args...`, must succeed; returns stdout.
    pub fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut c = Command::new("ip");
        c.args(["-n", self.name()]).args(args);
        let out = run_bounded(&mut c, None, EXEC_TIMEOUT);
        let what = format!(
            "ip -n {} {:?}",
            self.name(),
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        );
        expect_success(&what, out)
    }

    /// Set sysctls inside the namespace, e.g. `ns.sysctl(&[("net.ipv4.ip_forward", "1")])`.
    pub fn sysctl(&self, settings: &[(&str, &str)]) {
        let args: Vec<String> = std::iter::once("-qw".to_owned())
            .chain(settings.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        self.run("sysctl", &args);
    }

    /// Names of the links in this namespace.
    pub fn links(&self) -> Vec<String> {
        let out = self.ip(&["-o", "link", "show"]);
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect()
    }

    /// True if a link with this name exists in the namespace.
    pub fn has_link(&self, ifname: &str) -> bool {
        self.links().iter().any(|l| l == ifname)
    }

    /// PIDs of all processes currently inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        ns_pids(self.name())
    }

    /// Spawn a long-running process inside the namespace (`ip netns exec NAME cmd args...`,
    /// which execs, so the child's PID is the real process). Output goes to files in a private
    /// temp dir; see [`Proc`].
    pub fn spawn<S: AsRef<OsStr>>(&self, cmd: &str, args: &[S]) -> Proc {
        self.spawn_cmd(self.command(cmd, args), None)
    }

    /// Spawn a prepared command (from [`command`](Self::command), possibly with env vars set).
    /// Logs go to `log_dir/<name>.{stdout,stderr}` if given, else to a private temp dir.
    pub fn spawn_cmd(&self, cmd: Command, log_dir: Option<(&Path, &str)>) -> Proc {
        Proc::spawn(cmd, Some(self.clone()), log_dir)
    }
}

impl Drop for NetnsInner {
    fn drop(&mut self) {
        destroy_netns(&self.name);
    }
}

fn ns_pids(name: &str) -> Vec<u32> {
    match try_run_bounded(
        Command::new("ip").args(["netns", "pids", name]),
        None,
        EXEC_TIMEOUT,
    ) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Kill whatever still runs in the namespace, then delete it. Never panics (runs in Drop).
fn destroy_netns(name: &str) {
    let pids = ns_pids(name);
    for pid in &pids {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGTERM) };
    }
    for pid in pids {
        kill_foreign(pid, Duration::from_secs(3));
    }
    let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    match try_run_bounded(
        Command::new("ip").args(["netns", "del", name]),
        None,
        EXEC_TIMEOUT,
    ) {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!("[harness] ip netns del {name} failed\n{}", describe(&out)),
        Err(e) => eprintln!("[harness] ip netns del {name}: {e}"),
    }
}

/// Remove namespaces (killing what runs inside), temp dirs and wireguard-go sockets left by
/// harness processes that no longer exist (e.g. a test binary killed by SIGKILL). Runs
/// automatically once per process, before the first namespace is created.
pub fn reap_stale() {
    let me = std::process::id();
    let stale = |name: &str| matches!(owner_pid(name), Some(pid) if pid != me && !pid_alive(pid));
    for name in list_netns() {
        if stale(&name) {
            eprintln!("[harness] reaping stale namespace {name}");
            destroy_netns(&name);
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in dir.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            // Only our own `temp_dir` names: `wt` + 8 id chars + `-`.
            if file.as_bytes().get(10) == Some(&b'-')
                && stale(&file)
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/var/run/wireguard") {
        for entry in dir.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(ifname) = file.strip_suffix(".sock") {
                if stale(ifname) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// A child process guard. On drop (if still running): SIGTERM, up to 5 s grace, SIGKILL.
/// stdout/stderr are captured to files; they are printed if the guard is dropped during a panic
/// (i.e. when the test fails) and are available via [`stdout`](Self::stdout) /
/// [`stderr`](Self::stderr) / [`logs`](Self::logs).
pub struct Proc {
    child: Child,
    label: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
    // Dropped after the process is dead (fields drop after Drop::drop).
    _netns: Option<Netns>,
    _own_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proc({} pid {})", self.label, self.child.id())
    }
}

impl Proc {
    /// Spawn `cmd` with output captured. `netns` (if any) is kept alive while the process runs.
    pub fn spawn(mut cmd: Command, netns: Option<Netns>, log_dir: Option<(&Path, &str)>) -> Proc {
        let prog = cmd.get_program().to_string_lossy().into_owned();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let label = format!("{prog} {}", args.join(" "));
        let (own_dir, dir, base) = match log_dir {
            Some((d, n)) => (None, d.to_path_buf(), n.to_owned()),
            None => {
                let d = temp_dir("proc");
                let p = d.path().to_path_buf();
                (Some(d), p, "proc".to_owned())
            }
        };
        let stdout_path = dir.join(format!("{base}.stdout"));
        let stderr_path = dir.join(format!("{base}.stderr"));
        let out = std::fs::File::create(&stdout_path).expect("create stdout log");
        let err = std::fs::File::create(&stderr_path).expect("create stderr log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {label}: {e}"));
        Proc {
            child,
            label,
            stdout_path,
            stderr_path,
            status: None,
            _netns: netns,
            _own_dir: own_dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Exit status if the process has exited (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Wait up to `timeout` for the process to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_child(&mut self.child, timeout).ok().flatten();
        }
        self.status
    }

    /// Send a signal (no-op once the process has been reaped, so a recycled pid is never hit).
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.try_wait().is_none() {
            // SAFETY: the child is unreaped, so the pid still refers to it.
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL and wait. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return s;
        }
        eprintln!(
            "[harness] {} (pid {}) ignored SIGTERM for {grace:?}; SIGKILL",
            self.label,
            self.pid()
        );
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(libc::SIGKILL));
        self.status = Some(status);
        status
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Label, status and the tail (64 KiB each) of stdout/stderr, for failure messages.
    /// (Uses the last observed status; call [`try_wait`](Self::try_wait) first for a fresh one.)
    pub fn logs(&self) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "running".to_owned(),
        };
        format!(
            "=== {} (pid {}, {status}) ===\n--- stdout ---\n{}\n--- stderr ---\n{}\n=== end {} ===",
            self.label,
            self.pid(),
            tail_file(&self.stdout_path, 64 << 10).trim_end(),
            tail_file(&self.stderr_path, 64 << 10).trim_end(),
            self.label,
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.signal(libc::SIGTERM);
            if self.wait_timeout(Duration::from_secs(5)).is_none() {
                eprintln!("[harness] {} ignored SIGTERM; SIGKILL", self.label);
                let _ = self.child.kill();
                self.wait_timeout(Duration::from_secs(5));
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
