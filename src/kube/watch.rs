//! The Node watch: keeps the [`NodeSet`] current from the API server's watch stream
//! and tells the gossip shell what changed (new seeds to join, deleted Nodes to
//! forget, and, once fully listed, every Node's facts, which make the API server the
//! authority for what each member may claim). If this node's own Node is deleted, the
//! daemon leaves the mesh and stops. While the API server is unreachable the watch retries with backoff, the mesh keeps
//! running on what it knows, and the status says so.

use super::client::describe_watch;
use super::nodes::{facts_of, Changes, NodeSet};
use super::KubeView;
use crate::cluster::Command;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch, Notify};

pub(crate) struct Watch {
    pub(crate) client: Client,
    pub(crate) node: String,
    pub(crate) port: u16,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) view: Arc<watch::Sender<KubeView>>,
    /// Notified when this node's own Node is deleted.
    pub(crate) shutdown: Arc<Notify>,
}

impl Watch {
    /// Runs until the daemon stops (the stream retries forever).
    pub(crate) async fn run(self) {
        let api: Api<Node> = Api::all(self.client.clone());
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut set = NodeSet::new(&self.node);
        // Whether a full list arrived: until then, a partial set of Nodes is not
        // handed to the reconciler (it would refuse members not listed yet).
        let mut listed = false;
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                Err(e) => {
                    let text = describe_watch(&e);
                    self.view.send_if_modified(|view| {
                        if view.api_reachable || view.last_error.as_deref() != Some(&text) {
                            tracing::warn!(error = %text, "the Kubernetes API server is unreachable; the mesh keeps running on what it knows");
                        }
                        let changed = view.api_reachable || view.last_error.as_deref() != Some(&text);
                        view.api_reachable = false;
                        view.last_error = Some(text);
                        changed
                    });
                    continue;
                }
            };
            self.view.send_modify(|view| {
                if !view.api_reachable && view.last_error.is_some() {
                    tracing::info!("the Kubernetes API server is reachable again");
                }
                view.api_reachable = true;
                view.last_contact = Some(Instant::now());
            });
            let changes = match event {
                Event::Init => {
                    set.begin_relist();
                    Changes::default()
                }
                Event::InitApply(node) | Event::Apply(node) => set.apply(facts_of(&node)),
                Event::Delete(node) => {
                    set.delete(node.metadata.name.as_deref().unwrap_or_default())
                }
                Event::InitDone => {
                    let mut changes = set.end_relist();
                    self.view.send_modify(|v| v.synced = true);
                    // The first full list makes the API server the authority.
                    changes.facts_changed |= !listed;
                    listed = true;
                    changes
                }
            };
            let nodes = set.len();
            self.view
                .send_if_modified(|v| std::mem::replace(&mut v.nodes, nodes) != nodes);
            if !self.handle(&set, changes, listed).await {
                return;
            }
        }
    }

    /// Passes changes on (the Nodes' facts only once fully `listed`); false once this
    /// node's own Node is gone.
    async fn handle(&self, set: &NodeSet, changes: Changes, listed: bool) -> bool {
        if listed && changes.facts_changed {
            let _ = self.commands.send(Command::Nodes(set.all())).await;
        }
        for name in changes.added {
            if name != self.node {
                let _ = self.commands.send(Command::NodeAdded(name)).await;
            }
        }
        for name in changes.deleted {
            if name == self.node {
                tracing::warn!(node = %self.node, "this Node was deleted from the cluster: leaving the mesh and stopping");
                self.shutdown.notify_one();
                return false;
            }
            tracing::info!(node = %name, "Node deleted: removing it from the mesh");
            let _ = self.commands.send(Command::NodeDeleted(name)).await;
        }
        if changes.seeds_changed {
            let seeds: Vec<SocketAddr> = set
                .seed_ips()
                .into_iter()
                .map(|ip| SocketAddr::new(ip, self.port))
                .collect();
            // Sent even when empty: status then stops listing the Nodes that are gone.
            let _ = self.commands.send(Command::Join(seeds)).await;
        }
        true
    }
}
