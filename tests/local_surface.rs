//! End-to-end tests of the daemon's local surface: a flood of connections to the health
//! endpoint and the control socket, first within the file descriptor limit (the
//! connection caps close the excess at once) and then beyond it (accept fails with
//! EMFILE and is retried with backoff), leaves the daemon running, `weftnet status`
//! answering and `/healthz` at 200; the state directory ends at mode 0700. Run as root
//! (`cargo test --test local_surface`).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const HEALTH_PORT: u16 = 9478;

/// Opens `n` TCP connections to 127.0.0.1:`port` and `n` to the Unix socket `path`,
/// all non-blocking (so a full backlog never blocks), holds them `hold` seconds, then
/// closes them; prints how many were opened.
const FLOOD: &str = r#"
import socket, sys, time
port, path, n, hold = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
socks = []
for i in range(n):
    for fam, addr in ((socket.AF_INET, ("127.0.0.1", port)), (socket.AF_UNIX, path)):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(addr)
        except BlockingIOError:
            if fam == socket.AF_UNIX:
                s.close()
                continue
        except OSError:
            s.close()
            continue
        socks.append(s)
time.sleep(hold)
print(len(socks))
for s in socks:
    s.close()
"#;

/// `GET /healthz` on the health port inside `ns`: the status code.
fn healthz(ns: &Netns) -> Option<u16> {
    const SCRIPT: &str = "import sys, urllib.request, urllib.error\n\
        try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=3)\n\
        except urllib.error.HTTPError as e:\n    r = e\n\
        print(r.status)\n";
    let url = format!("http://127.0.0.1:{HEALTH_PORT}/healthz");
    let out = ns.exec_timeout(
        Duration::from_secs(10),
        "python3",
        &["-c", SCRIPT, url.as_str()],
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Floods both endpoints with `n` connections each, held for `hold` seconds; the
/// daemon must be running while they are held.
fn flood(d: &mut Daemon, n: usize, hold: f64) {
    let socket = d.state_dir().join("weftnet.sock");
    let args = [
        "-c".to_owned(),
        FLOOD.to_owned(),
        HEALTH_PORT.to_string(),
        socket.display().to_string(),
        n.to_string(),
        hold.to_string(),
    ];
    let mut p = d.netns().spawn("python3", &args);
    std::thread::sleep(Duration::from_secs_f64(hold / 2.0));
    assert!(
        d.is_running(),
        "the daemon died under the flood\n{}",
        d.logs()
    );
    let exit = p
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the flood did not end\n{}", p.logs()));
    assert!(exit.success(), "flood failed\n{}", p.logs());
    assert!(
        d.is_running(),
        "the daemon died under the flood\n{}",
        d.logs()
    );
}

/// After a flood, both endpoints answer again within a few seconds.
fn serves_again(d: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = d.try_status_json().is_some();
        let health = healthz(d.netns());
        if status && health == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving after the flood (status answers: {status}, /healthz: {health:?})\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.is_running(), "{}", d.logs());
}

/// Sets the daemon's open file limit (soft and hard) to `limit`.
fn limit_files(pid: u32, limit: u64) {
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: `rl` is a valid rlimit that outlives the call; the old limit is not asked for.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rl,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count() as u64
}

#[test]
fn a_connection_flood_leaves_the_daemon_serving() {
    let ns = Netns::new("flood");
    let health = format!("--health-listen=127.0.0.1:{HEALTH_PORT}");
    let mut d = Daemon::start(&ns, &["--address", "10.203.0.1/24", &health], "");
    assert_eq!(healthz(&ns), Some(200));
    let mode = std::fs::metadata(d.state_dir())
        .expect("state dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode, 0o700,
        "the state dir (created 0755 by the harness) is 0700"
    );
    assert_eq!(
        d.logs().matches("state directory set to mode 0700").count(),
        1,
        "logged once\n{}",
        d.logs()
    );

    // Within the file limit: the caps close what is beyond 64 connections each.
    flood(&mut d, 200, 3.0);
    serves_again(&mut d);
    assert!(
        d.logs().contains("too many connections"),
        "the refused connections are logged\n{}",
        d.logs()
    );

    // Beyond it: accept fails (EMFILE) on both endpoints and is retried.
    let pid = d.pid();
    limit_files(pid, open_files(pid) + 24);
    flood(&mut d, 200, 3.0);
    serves_again(&mut d);
    assert!(
        d.logs().contains("cannot accept connections"),
        "the accept errors are logged\n{}",
        d.logs()
    );
    let status = d.status_json();
    assert!(status.get("public_key").is_some(), "{status}");
    d.stop();
}
