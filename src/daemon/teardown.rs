//! Teardown by ownership: every thing `weftnet up` creates on the host is handed to a
//! [`Teardown`] the moment it exists, and removed from there in reverse order, so no
//! failure after it is created can leave it behind. Some things outlive a clean stop
//! on purpose (a bridge pods use, the guard route that keeps pod traffic off the
//! underlay while weftnet is down, the block gateways pods route through): those are
//! removed only when start-up fails, so a failed start leaves the host as it was.

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
}

struct Guard {
    created: Created,
    /// Removed at a clean stop too (else only when start-up fails).
    at_stop: bool,
}

/// What to remove, newest first.
pub(crate) struct Teardown {
    netlink: Arc<Netlink>,
    guards: Vec<Guard>,
}

impl Teardown {
    pub(crate) fn new(netlink: Arc<Netlink>) -> Self {
        Self {
            netlink,
            guards: Vec::new(),
        }
    }

    /// Takes ownership of `created`, removed at stop and on failure.
    pub(crate) fn push(&mut self, created: Created) {
        self.guards.push(Guard {
            created,
            at_stop: true,
        });
    }

    /// Takes ownership of `created`, removed only if start-up fails.
    pub(crate) fn push_until_started(&mut self, created: Created) {
        self.guards.push(Guard {
            created,
            at_stop: false,
        });
    }

    /// Start-up is complete: what only a failed start removes stays.
    pub(crate) fn started(&mut self) {
        self.guards.retain(|g| g.at_stop);
    }

    /// Removes everything still owned, newest first.
    pub(crate) async fn remove(mut self) {
        while let Some(guard) = self.guards.pop() {
            remove(&self.netlink, guard.created).await;
        }
    }
}

async fn remove(netlink: &Netlink, created: Created) {
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
    }
}

fn restore(path: &str, old: &str) {
    if let Err(e) = std::fs::write(path, old) {
        tracing::warn!(error = %e, path, "cannot restore a sysctl");
    }
}

impl Drop for Teardown {
    /// Reached with guards left only if the async removal never ran (a panic): removes
    /// what can be removed without the runtime. Interfaces go away when their devices
    /// close with the process.
    fn drop(&mut self) {
        while let Some(guard) = self.guards.pop() {
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
