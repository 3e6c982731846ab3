//! Helpers shared by the gossip-mesh test files (`mesh.rs`, `multicast.rs`): cluster
//! secrets, a node handle, and a bounded poll that reports how long a condition took.

use super::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every node listens on this UDP port (weftnet's default, each in its own namespace).
pub const PORT: u16 = 51820;
/// The range nodes claim their blocks from.
pub const RANGE: &str = "10.47.0.0/16";

/// A cluster secret written by `weftnet gensecret -o DIR/NAME`.
pub fn gensecret(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = host_exec(
        Daemon::bin(),
        &["gensecret".as_ref(), "-o".as_ref(), path.as_os_str()] as &[&std::ffi::OsStr],
    );
    expect_success("weftnet gensecret", out);
    path
}

/// A weftnet node with gossip: its daemon, name and public key.
pub struct Node {
    pub d: Daemon,
    pub name: String,
    pub key: String,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.name, self.d)
    }
}

/// Poll `check` every 100 ms until it returns `Ok` (returns the time that took) or
/// `timeout` passes (panics with `what` and the last error).
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Duration {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(()) => return start.elapsed(),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            panic!("{what}: not within {timeout:?}; last check: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
