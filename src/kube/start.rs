//! Start-up in Kubernetes mode, before the overlay interface exists: connect, read
//! this Node, turn its pod CIDRs into this node's blocks and the other Nodes into
//! gossip seeds, and install the CNI plugin binary. Every failure here is one line
//! for the operator.

use super::client::{connect, read_start_facts};
use super::publish::install_plugin;
use crate::config::Config;
use anyhow::{bail, Result};
use kube::Client;
use std::net::SocketAddr;

/// What the rest of the daemon needs from start-up.
pub(crate) struct Started {
    pub(crate) client: Client,
    pub(crate) from_cache: bool,
}

/// Fills `config.blocks` (unless given) and the seeds from the API server.
pub(crate) async fn prepare(config: &mut Config) -> Result<Option<Started>> {
    let Some(k) = config.kube.clone() else {
        return Ok(None);
    };
    let client = connect(&k).await?;
    let facts = read_start_facts(&client, &k, &config.state_dir).await?;
    let range = config.cluster.as_ref().and_then(|c| c.range);
    let chained = k.chained.is_some();
    if config.blocks.is_empty() && !chained {
        config.blocks = facts.pod_cidrs.clone();
    }
    if let Some((r, _)) = range {
        for b in &config.blocks {
            if b.addr().is_ipv4() == r.addr().is_ipv4() && !r.contains(b) {
                bail!("Node {}'s pod CIDR {b} is outside --range {r}: set --range to the cluster's pod CIDR (kube-controller-manager --cluster-cidr)", k.node_name);
            }
        }
    }
    if config.blocks.is_empty() && range.is_none() && !chained {
        bail!("Node {} has no spec.podCIDR and no --range is set: give --range with the cluster's pod CIDR so nodes claim blocks by gossip, or let the cluster allocate pod CIDRs (kube-controller-manager --allocate-node-cidrs)", k.node_name);
    }
    let port = config.listen_port;
    if let Some(c) = &mut config.cluster {
        for ip in &facts.seeds {
            let seed = SocketAddr::new(*ip, port).to_string();
            if !c.join.contains(&seed) {
                c.join.push(seed);
            }
        }
    }
    let plugin = install_plugin(&k.cni_bin_dir)?;
    tracing::info!(
        node = %k.node_name,
        pod_cidrs = ?facts.pod_cidrs,
        seeds = facts.seeds.len(),
        plugin = %plugin.display(),
        cached = facts.cached,
        "read this Node from the Kubernetes API"
    );
    Ok(Some(Started {
        client,
        from_cache: facts.cached,
    }))
}
