//! NetworkPolicy enforcement on this node: the engine (`weftnet_proto::policy`)
//! decides what each local pod may send and receive; this module turns that into
//! nftables rules and keeps them current.
//!
//! - [`nft`]: the `inet weftnet_policy` table: rendering, atomic replacement,
//!   counters, removal.
//! - [`enforce`]: the task that recompiles and reapplies on every change and reports
//!   the policies in force and the drops per pod.

pub(crate) mod enforce;
pub(crate) mod nft;
pub(crate) mod standalone;

pub(crate) use enforce::{spawn, Local, PolicyStatus, PolicyView};

use crate::daemon::teardown::{Created, Lifetime, Teardown};
use anyhow::{bail, Result};
use std::sync::Arc;
use tokio::sync::watch;
use weftnet_proto::policy::Cluster;

/// The bridge-netfilter switches: with them on, frames between two pods on the same
/// bridge pass the `inet` hooks (and conntrack) like routed traffic.
const BRIDGE_NF: [&str; 2] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];

/// Enforcement, running: where to send cluster snapshots, the task, its view.
pub(crate) struct Started {
    pub(crate) cluster: watch::Sender<Arc<Cluster>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) view: watch::Receiver<PolicyView>,
}

/// Turns bridge netfilter on, installs the (empty) table and starts the enforcer for
/// the pods `local` accepts; each is owned by `teardown`. The table and the switches
/// outlive a restart (pods stay isolated while the daemon is replaced): a table an
/// earlier run left stays in force until this run's first ruleset replaces it, and
/// both are removed when the node leaves for good.
pub(crate) async fn start(local: Local, bridged: bool, teardown: &mut Teardown) -> Result<Started> {
    if bridged {
        for path in BRIDGE_NF {
            let Ok(old) = std::fs::read_to_string(path) else {
                bail!("{path} is missing, so NetworkPolicy cannot see traffic between pods on the same node: load the module (modprobe br_netfilter), or run with --network-policy=false");
            };
            if old.trim() != "1" {
                if let Err(e) = std::fs::write(path, "1") {
                    bail!("cannot turn on {path} ({e}): run weftnet with CAP_NET_ADMIN in the host's network namespace, or --network-policy=false");
                }
                teardown.push_for(
                    Created::Sysctl { path, old },
                    Lifetime::Node { created: true },
                );
            }
        }
    }
    let (cluster, rx) = watch::channel(Arc::new(Cluster::default()));
    let kept = tokio::task::spawn_blocking(nft::present)
        .await
        .map_err(|e| anyhow::anyhow!("the nft task failed: {e}"))??;
    teardown.push_for(Created::PolicyTable, Lifetime::Node { created: !kept });
    let (task, view) = spawn(local, rx, kept).await?;
    Ok(Started {
        cluster,
        task,
        view,
    })
}

/// Hands the node reconciler each new multicast receive verdict the enforcer
/// publishes (PROTOCOL.md §7.11 rule 3), so the announced groups follow the policies
/// in force; ends when either side is gone.
pub(crate) async fn follow_receive_policy(
    mut view: watch::Receiver<PolicyView>,
    commands: tokio::sync::mpsc::Sender<crate::cluster::Command>,
) {
    let mut last = weftnet_proto::multicast::ReceivePolicy::default();
    loop {
        let next = view.borrow_and_update().receive.clone();
        if next != last {
            let send = commands.send(crate::cluster::Command::ReceivePolicy(next.clone()));
            if send.await.is_err() {
                return;
            }
            last = next;
        }
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// Removes a policy table an earlier run left, when this run enforces no policy
/// (enforcement turned off across a restart). Without nft installed there is none.
pub(crate) async fn remove_leftover() {
    match tokio::task::spawn_blocking(nft::remove).await {
        Ok(Ok(true)) => tracing::info!("removed the network policy table of an earlier run"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %format!("{e:#}"), "no network policy table to check")
        }
        Err(e) => tracing::debug!(error = %e, "the nft task failed"),
    }
}

/// The text form of the `policy` section of `weftnet status`: one line per local pod
/// that a policy selects.
pub(crate) fn render_status(p: &PolicyStatus) -> String {
    let mut s = format!(
        "\nnetwork policy: {} policies, {} pods known, {} rulesets applied{}\n",
        p.policies,
        p.pods_known,
        p.applied,
        p.error
            .as_ref()
            .map(|e| format!(" (last change NOT applied: {e})"))
            .unwrap_or_default()
    );
    let selected: Vec<_> = p.pods.iter().filter(|x| !x.policies.is_empty()).collect();
    let open = p.pods.len() - selected.len();
    for x in selected {
        s.push_str(&format!(
            "  {} ({}): ingress {} ({} dropped), egress {} ({} dropped); policies {}\n",
            x.pod,
            x.addresses.join(", "),
            x.ingress,
            x.ingress_drops,
            x.egress,
            x.egress_drops,
            x.policies.join(", ")
        ));
    }
    if open > 0 {
        s.push_str(&format!(
            "  {open} local pods selected by no policy (open)\n"
        ));
    }
    s
}
