//! Kubernetes mode (`weftnet up --kubernetes`): weftnet as a cluster's pod network,
//! run as a DaemonSet. Through the API server (kube + k8s-openapi) it reads this
//! node's Node (pod CIDRs, or none: then a block is claimed from --range by gossip),
//! seeds gossip from the other Nodes' InternalIP addresses, watches Nodes so that a
//! deleted Node is forgotten mesh-wide, installs the CNI plugin and its config, and
//! publishes its key and pod CIDRs as Node annotations. The mesh itself never depends
//! on the API server: while it is unreachable, everything keeps running and the
//! status says so.
//!
//! - [`nodes`]: what weftnet reads from Node objects (pure bookkeeping).
//! - [`client`]: connecting, the start-up read (with a cache), operator-facing errors.
//! - [`watch`]: the Node watch feeding the gossip shell.
//! - [`start`]: start-up before the interface exists (blocks, seeds, plugin).
//! - [`publish`]: CNI plugin and config on the node, Node annotations and condition.
//! - [`policy`], [`policy_watch`]: NetworkPolicies, Pods and Namespaces for the
//!   NetworkPolicy enforcer.

mod client;
mod nodes;
pub(crate) mod policy;
mod policy_watch;
pub(crate) mod publish;
mod start;
mod watch;

pub(crate) use publish::Publish;
pub(crate) use start::{prepare, Started};
pub(crate) use watch::Watch;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// What `weftnet status` and the readiness check know about the API server.
#[derive(Debug, Clone, Default)]
pub(crate) struct KubeView {
    pub(crate) node: String,
    pub(crate) api_reachable: bool,
    pub(crate) last_error: Option<String>,
    pub(crate) last_contact: Option<Instant>,
    /// Whether the first full Node list arrived.
    pub(crate) synced: bool,
    pub(crate) nodes: usize,
    pub(crate) cni_config: Option<PathBuf>,
    pub(crate) annotated: bool,
    /// Whether start-up used cached Node facts (API server unreachable then).
    pub(crate) started_from_cache: bool,
}

/// The `kubernetes` section of `weftnet status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KubeStatus {
    pub(crate) node: String,
    /// "reachable" or "unreachable".
    pub(crate) api_server: String,
    pub(crate) last_error: Option<String>,
    pub(crate) last_contact_secs: Option<u64>,
    pub(crate) nodes: usize,
    pub(crate) cni_config: Option<String>,
    pub(crate) annotated: bool,
    pub(crate) started_from_cache: bool,
}

impl KubeView {
    pub(crate) fn status(&self) -> KubeStatus {
        KubeStatus {
            node: self.node.clone(),
            api_server: if self.api_reachable {
                "reachable"
            } else {
                "unreachable"
            }
            .to_string(),
            last_error: self.last_error.clone(),
            last_contact_secs: self.last_contact.map(|t| t.elapsed().as_secs()),
            nodes: self.nodes,
            cni_config: self.cni_config.as_ref().map(|p| p.display().to_string()),
            annotated: self.annotated,
            started_from_cache: self.started_from_cache,
        }
    }
}

/// What the Kubernetes tasks need from the running daemon.
pub(crate) struct Running {
    pub(crate) started: Started,
    pub(crate) config: crate::config::KubeConfig,
    pub(crate) bridge: String,
    pub(crate) listen_port: u16,
    pub(crate) mtu: u32,
    pub(crate) public_key: String,
    pub(crate) endpoint: Option<std::net::SocketAddr>,
    pub(crate) commands: tokio::sync::mpsc::Sender<crate::cluster::Command>,
    pub(crate) shutdown: std::sync::Arc<tokio::sync::Notify>,
    /// The node's status snapshots (its blocks, for the CNI config and annotations).
    pub(crate) status: tokio::sync::watch::Receiver<weftnet_proto::node::Status>,
    /// NetworkPolicy enforcement: where the watched cluster goes (`None`: off).
    pub(crate) policy:
        Option<tokio::sync::watch::Sender<std::sync::Arc<weftnet_proto::policy::Cluster>>>,
    /// The host's routing (chained mode's rules and table).
    pub(crate) netlink: std::sync::Arc<crate::netlink::Netlink>,
    /// The data plane (chained mode hands it the pods' veths, for multicast).
    pub(crate) dataplane: std::sync::Arc<crate::dataplane::Dataplane>,
}

/// Starts the Node watch and the publisher; returns their tasks and the view they
/// publish on change.
pub(crate) fn spawn(
    r: Running,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    tokio::sync::watch::Receiver<KubeView>,
) {
    let (view, view_rx) = tokio::sync::watch::channel(KubeView {
        node: r.config.node_name.clone(),
        // The start-up read succeeded unless it came from the cache.
        api_reachable: !r.started.from_cache,
        last_contact: (!r.started.from_cache).then(Instant::now),
        started_from_cache: r.started.from_cache,
        ..KubeView::default()
    });
    let view = std::sync::Arc::new(view);
    let mut tasks = Vec::new();
    if let Some(out) = r.policy {
        tasks.push(tokio::spawn(policy_watch::run(
            r.started.client.clone(),
            out,
        )));
    }
    let watch = Watch {
        client: r.started.client.clone(),
        node: r.config.node_name.clone(),
        port: r.listen_port,
        commands: r.commands.clone(),
        view: std::sync::Arc::clone(&view),
        shutdown: r.shutdown,
    };
    tasks.push(tokio::spawn(watch.run()));
    if let Some(c) = r.config.chained {
        // Beside another CNI: no pod network config, annotations or condition of
        // weftnet's own; the chained task keeps the chain and the routing.
        let chained = crate::chained::Chained {
            client: r.started.client,
            config: r.config,
            require_encryption: c.require_encryption,
            netlink: r.netlink,
            dataplane: r.dataplane,
            commands: r.commands,
            view,
            status: r.status,
        };
        tasks.push(tokio::spawn(chained.run()));
        return (tasks, view_rx);
    }
    let publish = Publish {
        client: r.started.client,
        config: r.config,
        bridge: r.bridge,
        mtu: r.mtu,
        public_key: r.public_key,
        endpoint: r.endpoint,
        status: r.status,
        view,
    };
    tasks.push(tokio::spawn(publish.run()));
    (tasks, view_rx)
}
