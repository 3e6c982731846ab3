//! Teardown by ownership: every thing `weftnet up` creates on the host is handed to a
//! [`Teardown`] the moment it exists, and removed from there in reverse order, so no
//! failure after it is created can leave it behind. What is removed depends on how
//! the daemon stops ([`Stop`]) and on each thing's [`Lifetime`]: the process's own
//! things go at every stop; the node's (the persistent overlay interface with its
//! addresses and routes, the masquerade chain) stay across a restart and go when the
//! node leaves for good; the host's (a bridge pods use, the guard route that keeps pod
//! traffic off the underlay while weftnet is down, the block gateways pods route
//! through, forwarding) stay at every stop. A failed start removes what that start
//! created and nothing it adopted from an earlier run, so a failed first start leaves
//! the host as it was and a failed restart leaves it as the last run left it.

use crate::dataplane::Dataplane;
use crate::masquerade::Masquerade;
use crate::netlink::Netlink;
use ipnet::IpNet;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

/// One thing weftnet created.
pub(crate) enum Created {
    /// An interface (the overlay TUN, the L2 port, a bridge weftnet made).
    Link { index: u32, what: &'static str },
    /// An address weftnet added to an interface that stays (the bridge).
    Address { index: u32, address: IpNet },
    /// The `unreachable` guard route for the range.
    GuardRoute { prefix: IpNet, metric: u32 },
    /// The masquerade chain.
    Masquerade(Masquerade),
    /// The NetworkPolicy table (`inet weftnet_policy`).
    PolicyTable,
    /// The running data plane threads.
    Dataplane {
        dp: Arc<Dataplane>,
        threads: Vec<JoinHandle<()>>,
    },
    /// A file (the control socket).
    File(PathBuf),
    /// A sysctl weftnet changed, with its old value.
    Sysctl { path: &'static str, old: String },
    /// Chained mode's conflist (in this directory), rules and routing table.
    Chained { conf_dir: PathBuf },
}

/// How long a thing weftnet holds stays on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Removed at every stop (data-plane threads, the control socket).
    Process,
    /// Kept across a restart, removed when the node leaves for good; if this start
    /// `created` it, also removed when start-up fails.
    Node { created: bool },
    /// Kept at every stop; removed only when start-up fails (this start made it).
    Host,
}

/// How the daemon stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Start-up failed: remove what this start created.
    Failed,
    /// SIGTERM (an upgrade, `systemctl restart`, a rolling update) or a failure at
    /// run time: keep what the next run adopts, so traffic resumes when it attaches.
    Restart,
    /// `weftnet leave`, SIGINT, or this Kubernetes Node's deletion: for good.
    Leave,
}

impl Lifetime {
    fn removed_at(self, stop: Stop) -> bool {
        match (self, stop) {
            (Lifetime::Process, _) => true,
            (Lifetime::Node { .. }, Stop::Leave) => true,
            (Lifetime::Node { created }, Stop::Failed) => created,
            (Lifetime::Node { .. }, Stop::Restart) => false,
            (Lifetime::Host, Stop::Failed) => true,
            (Lifetime::Host, _) => false,
        }
    }
}

struct Guard {
    created: Created,
    lifetime: Lifetime,
}

/// What to remove, newest first.
pub(crate) struct Teardown {
    netlink: Arc<Netlink>,
    guards: Vec<Guard>,
    /// Start-up completed (what a panic after it may remove is the process's only).
    started: bool,
}

impl Teardown {
    pub(crate) fn new(netlink: Arc<Netlink>) -> Self {
        Self {
            netlink,
            guards: Vec::new(),
            started: false,
        }
    }

    /// Takes ownership of `created`, removed at every stop and on failure.
    pub(crate) fn push(&mut self, created: Created) {
        self.push_for(created, Lifetime::Process);
    }

    /// Takes ownership of `created`, removed only if start-up fails.
    pub(crate) fn push_until_started(&mut self, created: Created) {
        self.push_for(created, Lifetime::Host);
    }

    /// Takes ownership of `created` for `lifetime`.
    pub(crate) fn push_for(&mut self, created: Created, lifetime: Lifetime) {
        self.guards.push(Guard { created, lifetime });
    }

    /// Start-up is complete.
    pub(crate) fn started(&mut self) {
        self.started = true;
    }

    /// Removes, newest first, what a `stop` removes; the rest stays on the host.
    pub(crate) async fn remove(mut self, stop: Stop) {
        while let Some(guard) = self.guards.pop() {
            if guard.lifetime.removed_at(stop) {
                remove(&self.netlink, guard.created, stop).await;
            }
        }
    }
}

async fn remove(netlink: &Netlink, created: Created, stop: Stop) {
    match created {
        Created::Link { index, what } => {
            if let Err(e) = netlink.delete_link(index).await {
                tracing::debug!(error = %e, what, "interface removal failed; closing its device removes it");
            }
        }
        Created::Address { index, address } => {
            if let Err(e) = netlink.del_address(index, address).await {
                tracing::warn!(error = %e, %address, "cannot remove an address weftnet added");
            }
        }
        Created::GuardRoute { prefix, metric } => {
            if let Err(e) = netlink.del_unreachable(prefix, metric).await {
                tracing::warn!(error = %e, %prefix, "cannot remove the guard route");
            }
        }
        Created::Masquerade(m) => {
            if let Err(e) = tokio::task::spawn_blocking(move || m.remove()).await {
                tracing::warn!(error = %e, "the masquerade cleanup did not finish");
            }
        }
        // A restart keeps everything the threads use: they forward until the process
        // exits (which ends them) instead of stopping at their next poll, up to
        // 200 ms earlier, so the next run's gap is that much shorter.
        Created::Dataplane { dp, .. } if stop == Stop::Restart => dp.exiting(),
        Created::PolicyTable => {
            match tokio::task::spawn_blocking(crate::policy::nft::remove).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot remove the network policy table")
                }
                Err(e) => tracing::warn!(error = %e, "the network policy cleanup did not finish"),
            }
        }
        Created::Dataplane { dp, threads } => {
            dp.stop();
            let joined = tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            });
            let _ = joined.await;
        }
        Created::File(path) => {
            let _ = std::fs::remove_file(&path);
        }
        Created::Sysctl { path, old } => restore(path, &old),
        Created::Chained { conf_dir } => crate::chained::remove(netlink, &conf_dir).await,
    }
}

fn restore(path: &str, old: &str) {
    if let Err(e) = std::fs::write(path, old) {
        tracing::warn!(error = %e, path, "cannot restore a sysctl");
    }
}

impl Drop for Teardown {
    /// Reached with guards left only if the async removal never ran (a panic): removes
    /// what can be removed without the runtime, as a restart would (or, before start-up
    /// completed, as a failed start would). An interface this start created goes away
    /// when its device closes with the process, unless it was already made persistent.
    fn drop(&mut self) {
        let stop = if self.started {
            Stop::Restart
        } else {
            Stop::Failed
        };
        while let Some(guard) = self.guards.pop() {
            if !guard.lifetime.removed_at(stop) {
                continue;
            }
            match guard.created {
                Created::Masquerade(m) => m.remove(),
                Created::PolicyTable => {
                    let _ = crate::policy::nft::remove();
                }
                Created::Dataplane { dp, .. } => dp.stop(),
                Created::File(path) => {
                    let _ = std::fs::remove_file(&path);
                }
                Created::Sysctl { path, old } => restore(path, &old),
                Created::Chained { conf_dir } => crate::chained::conflist::remove(&conf_dir),
                Created::Link { .. } | Created::Address { .. } | Created::GuardRoute { .. } => {}
            }
        }
    }
}

/// Test hook: in debug builds, `WEFTNET_FAIL_AT=STEP` makes start-up fail right after
/// STEP, so the tests can check that a failure at every step leaves nothing behind.
/// Release builds never fail here.
pub(crate) fn failpoint(step: &str) -> anyhow::Result<()> {
    if cfg!(debug_assertions) && std::env::var("WEFTNET_FAIL_AT").is_ok_and(|s| s == step) {
        anyhow::bail!("start-up failed at {step} (WEFTNET_FAIL_AT, a test hook)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stop_removes_what_it_should() {
        use Lifetime::*;
        let removed =
            |l: Lifetime| [Stop::Failed, Stop::Restart, Stop::Leave].map(|s| l.removed_at(s));
        assert_eq!(removed(Process), [true, true, true]);
        assert_eq!(removed(Node { created: true }), [true, false, true]);
        assert_eq!(removed(Node { created: false }), [false, false, true]);
        assert_eq!(removed(Host), [true, false, false]);
    }
}
