#![allow(dead_code, unused_imports)]
//! End-to-end test harness for weftnet.
//!
//! Everything a test creates is owned by an RAII guard that cleans up on `Drop`, which also runs
//! while a failing test unwinds:
//!
//! * [`Netns`]: a network namespace (`ip netns add`); on drop every process left inside it is
//!   killed and the namespace is deleted. Cheap to clone (`Arc`); the namespace lives until the
//!   last clone is gone, and every [`Proc`] spawned in it holds a clone, so processes always die
//!   before their namespace is deleted.
//! * [`Proc`]: a child process (spawned via `ip netns exec NAME cmd ...`, no shell, so the PID is
//!   the real process) with stdout/stderr captured to files; on drop SIGTERM, bounded wait,
//!   SIGKILL; the captured output is printed when dropped during a panic.
//! * [`Underlay`]: bridged or routed topologies of host namespaces. The bridges live in a
//!   dedicated "switch" namespace, so nothing at all is created in the root namespace.
//! * [`Daemon`]: a `weftnet up` process with its own config file and state dir.
//! * [`WireguardGo`]: a `wireguard-go` reference peer.
//! * [`Impairment`]: loss, duplication, a blackholed pair or a partition of the underlay
//!   (nftables rules in the switch namespace), removed on drop.
//! * [`Delay`]: delay and jitter (so reordering) on a host's underlay egress, held by a
//!   thread of the test process behind a TUN and policy routing; stopped and removed on drop.
//!
//! Names are `wt` + 5 base-36 digits of the pid + 3 base-36 digits of a per-process counter
//! (10 chars, see [`unique_id`]), so parallel tests and parallel test binaries never collide.
//! Namespaces left behind by a test process that died without unwinding (SIGKILL, abort) are
//! reaped the next time a test process creates a namespace, since the owning pid is in the name.
//!
//! Every external command is bounded by a timeout; nothing waits forever.

pub mod bench;
pub mod ca;
pub mod chained;
mod daemon;
mod delay;
mod impair;
pub mod kube_api;
pub mod kube_node;
pub mod mesh;
mod netns;
pub mod probe;
mod tools;
mod underlay;
mod wg;

pub use daemon::{hermetic_env, peer_toml, Daemon};
pub use delay::Delay;
pub use impair::Impairment;
pub use netns::{reap_stale, Netns, Proc};
pub use tools::{
    http_get, iperf3, iperf3_json, ping, ping_answered, ping_summary, BackgroundStream,
};
pub use underlay::{Host, Underlay};
pub use wg::{genkey, keypair, pubkey, wg_socket_path, WireguardGo};

use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Default bound for a single external command.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Prefix of every name the harness creates.
pub const PREFIX: &str = "wt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `v` in base 36 (0-9a-z), zero-padded/truncated to `width` digits.
pub fn base36(mut v: u64, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    String::from_utf8(out).expect("ascii")
}

/// A process-unique, system-unique-while-we-live id: `wt` + pid (5 base-36 digits) + counter
/// (3 base-36 digits), e.g. `wt00a3k004`. 10 characters, leaving 5 for an interface-name suffix.
pub fn unique_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u64 % (36 * 36 * 36);
    format!(
        "{PREFIX}{}{}",
        base36(std::process::id() as u64, 5),
        base36(n, 3)
    )
}

/// A fresh unique name with `suffix` appended, suitable as a (global) interface name.
/// Panics if the result would exceed IFNAMSIZ-1 (15) characters.
pub fn unique_name(suffix: &str) -> String {
    let name = format!("{}{suffix}", unique_id());
    assert!(
        name.len() <= 15,
        "interface name {name:?} longer than 15 chars"
    );
    name
}

/// The pid encoded in a harness-created name (`wt` + 8 base-36 digits, then end or `-`/more
/// suffix chars for interface names), if `name` is one.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let id = rest.get(..8)?;
    if !id
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return None;
    }
    let pid = u32::from_str_radix(&id[..5], 36).ok()?;
    // PID_MAX_LIMIT is 2^22: anything above cannot be one of our names.
    (pid <= 1 << 22).then_some(pid)
}

/// True while a process with this pid exists and is not a zombie (an exited process nobody
/// has reaped yet, e.g. under a container init that does not reap orphans, counts as dead).
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence/permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: "pid (comm) S ...", comm may contain spaces/parens, so split at the last ')'.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z') | Some('X')
        ),
        Err(_) => false,
    }
}

/// Poll `f` (every 50 ms) until it returns true or `timeout` elapses. Returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait for a child with a deadline; `None` if it is still running at the deadline.
pub(crate) fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(25));
    }
}

/// Run `cmd` to completion with stdin from `input` (or /dev/null), stdout/stderr captured.
/// On timeout the process is SIGKILLed and a note is appended to stderr (status is then
/// "killed by signal", i.e. not success). Errors only if the command cannot be spawned.
pub fn try_run_bounded(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<Output> {
    // Output goes to anonymous files rather than pipes: nothing can block on a pipe that a
    // (grand)child keeps open.
    let mut out = tempfile::tempfile()?;
    let mut err = tempfile::tempfile()?;
    let stdin = match input {
        Some(data) => {
            let mut f = tempfile::tempfile()?;
            f.write_all(data)?;
            f.seek(SeekFrom::Start(0))?;
            Stdio::from(f)
        }
        None => Stdio::null(),
    };
    cmd.stdin(stdin)
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?);
    let mut child = cmd.spawn()?;
    let status = match wait_child(&mut child, timeout)? {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let s = child.wait()?;
            writeln!(
                err,
                "\n[harness: {cmd:?} timed out after {timeout:?}, killed]"
            )?;
            s
        }
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    out.seek(SeekFrom::Start(0))?;
    out.read_to_end(&mut stdout)?;
    err.seek(SeekFrom::Start(0))?;
    err.read_to_end(&mut stderr)?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// [`try_run_bounded`] that panics if the command cannot be spawned.
pub fn run_bounded(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    try_run_bounded(cmd, input, timeout).unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command in the root namespace (bounded by [`EXEC_TIMEOUT`]).
pub fn host_exec<S: AsRef<OsStr>>(cmd: &str, args: &[S]) -> Output {
    run_bounded(Command::new(cmd).args(args), None, EXEC_TIMEOUT)
}

/// Human-readable rendering of an [`Output`] for failure messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end()
    )
}

/// Panic (with the command's output) unless `output` is a success; returns stdout.
pub fn expect_success(what: &str, output: Output) -> String {
    if !output.status.success() {
        panic!("{what} failed\n{}", describe(&output));
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Names of all network namespaces (`ip netns list`).
pub fn list_netns() -> Vec<String> {
    let out = host_exec("ip", &["netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Names of all links in the root namespace (`ip -o link`), without `@peer` suffixes.
pub fn root_links() -> Vec<String> {
    let out = host_exec("ip", &["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Kill `pid` (SIGTERM, wait up to `grace` for it to vanish, then SIGKILL). For processes that
/// are not our children (e.g. found via `ip netns pids`); our own children go through [`Proc`].
pub(crate) fn kill_foreign(pid: u32, grace: Duration) {
    // SAFETY: plain kill(2) calls.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    if !wait_until(grace, || !pid_alive(pid)) {
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        wait_until(Duration::from_secs(2), || !pid_alive(pid));
    }
}

/// A temp dir named `<unique id>-<tag>-XXXXXX` (so stale ones can be attributed and reaped).
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{}-{tag}-", unique_id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create temp dir: {e}"))
}

/// Last `max` bytes of a file, lossily decoded (for log dumps).
pub(crate) fn tail_file(path: &std::path::Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(data) => {
            let start = data.len().saturating_sub(max);
            let prefix = if start > 0 { "[...truncated...]\n" } else { "" };
            format!("{prefix}{}", String::from_utf8_lossy(&data[start..]))
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
