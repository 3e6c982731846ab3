//! What this node publishes for the cluster, once it knows its pod CIDRs: the CNI
//! plugin and its network config on the node (so the kubelet can start pods), and the
//! Node annotations and `NetworkUnavailable=False` condition (so operators and
//! schedulers see the pod network is up). It acts when the node's status snapshot
//! changes (a block claimed or moved); failed writes are retried.

use super::client::describe;
use super::KubeView;
use crate::config::KubeConfig;
use anyhow::{Context, Result};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weftnet_proto::node::Status;

/// Node annotations weftnet sets.
pub(crate) const ANNOTATION_PUBLIC_KEY: &str = "weftnet.io/public-key";
pub(crate) const ANNOTATION_POD_CIDRS: &str = "weftnet.io/pod-cidrs";
pub(crate) const ANNOTATION_ENDPOINT: &str = "weftnet.io/endpoint";
/// The network config file the kubelet's runtime reads. The runtime uses the first
/// file of the directory in lexical order, so the name sorts before every other
/// CNI's (`10-aws.conflist`, `10-calico.conflist`, `10-flannel.conflist`).
pub(crate) const CONFLIST: &str = "00-weftnet.conflist";
/// The name older versions wrote, removed when [`CONFLIST`] is written.
pub(crate) const OLD_CONFLIST: &str = "10-weftnet.conflist";
/// Name of the installed plugin binary (the `type` in the config).
pub(crate) const PLUGIN: &str = "weftnet";
/// How soon a failed write is retried.
const RETRY: Duration = Duration::from_secs(2);
/// How often the API server is asked for this Node, so the status knows it is
/// reachable even when the watch has nothing to say.
const PROBE_INTERVAL: Duration = Duration::from_secs(15);

pub(crate) struct Publish {
    pub(crate) client: Client,
    pub(crate) config: KubeConfig,
    pub(crate) bridge: String,
    pub(crate) mtu: u32,
    pub(crate) public_key: String,
    pub(crate) endpoint: Option<std::net::SocketAddr>,
    /// The node's status: its current blocks (given, from the Node, or claimed).
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) view: Arc<watch::Sender<KubeView>>,
}

/// Copies this executable to `dir/weftnet` (atomically, through a temporary file).
pub(crate) fn install_plugin(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the CNI plugin directory {}: check --cni-bin-dir and its hostPath mount",
            dir.display()
        )
    })?;
    let target = dir.join(PLUGIN);
    let tmp = dir.join(format!(".{PLUGIN}.tmp"));
    let exe = std::env::current_exe()
        .context("cannot find this executable to install it as the CNI plugin")?;
    std::fs::copy(&exe, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &target))
        .with_context(|| {
            format!(
                "cannot install the CNI plugin as {}: check --cni-bin-dir",
                target.display()
            )
        })?;
    Ok(target)
}

/// Writes the network config (atomically) for `blocks`, and removes the one an older
/// version wrote under another name.
pub(crate) fn write_conflist(
    cfg: &KubeConfig,
    bridge: &str,
    blocks: &[IpNet],
    mtu: u32,
) -> Result<PathBuf> {
    let dir = &cfg.cni_conf_dir;
    std::fs::create_dir_all(dir).with_context(|| {
        format!("cannot create the CNI config directory {}: check --cni-conf-dir and its hostPath mount", dir.display())
    })?;
    let path = dir.join(CONFLIST);
    let tmp = dir.join(format!(".{CONFLIST}.tmp"));
    let text = crate::cni::conflist(bridge, blocks, mtu, &cfg.cni_data_dir);
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}: check --cni-conf-dir", path.display()))?;
    let old = dir.join(OLD_CONFLIST);
    match std::fs::remove_file(&old) {
        Ok(()) => {
            tracing::info!(path = %old.display(), "removed the network config of an older weftnet")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot remove {}, written by an older weftnet: remove it by hand",
                    old.display()
                )
            })
        }
    }
    Ok(path)
}

impl Publish {
    pub(crate) async fn run(mut self) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut written: Vec<IpNet> = Vec::new();
        let mut annotated: Option<Vec<IpNet>> = None;
        let mut condition_set = false;
        let mut next_probe = tokio::time::Instant::now() + PROBE_INTERVAL;
        loop {
            let blocks = self.status.borrow_and_update().blocks.clone();
            let mut pending = false;
            if !blocks.is_empty() && blocks != written {
                let (config, bridge, mtu, b) = (
                    self.config.clone(),
                    self.bridge.clone(),
                    self.mtu,
                    blocks.clone(),
                );
                let result =
                    tokio::task::spawn_blocking(move || write_conflist(&config, &bridge, &b, mtu))
                        .await
                        .unwrap_or_else(|e| Err(anyhow::anyhow!("the write did not finish: {e}")));
                match result {
                    Ok(path) => {
                        tracing::info!(path = %path.display(), blocks = ?blocks, "wrote the CNI network config");
                        written = blocks.clone();
                        self.view.send_modify(|v| v.cni_config = Some(path));
                    }
                    Err(e) => {
                        pending = true;
                        tracing::error!(error = %format!("{e:#}"), "cannot write the CNI network config; retrying")
                    }
                }
            }
            if !blocks.is_empty() && annotated.as_ref() != Some(&blocks) {
                match self.annotate(&api, &blocks).await {
                    Ok(()) => {
                        annotated = Some(blocks.clone());
                        self.view
                            .send_if_modified(|v| !std::mem::replace(&mut v.annotated, true));
                    }
                    Err(e) => {
                        pending = true;
                        tracing::warn!(error = %describe(&e), "cannot annotate this Node; retrying")
                    }
                }
            }
            if !condition_set && !written.is_empty() {
                match self.mark_network_available(&api).await {
                    Ok(()) => condition_set = true,
                    Err(e) => {
                        pending = true;
                        tracing::warn!(error = %describe(&e), "cannot set this Node's NetworkUnavailable condition; retrying")
                    }
                }
            }
            // Wait for a change of the node's blocks, a retry, or the next probe.
            let retry = pending.then(|| tokio::time::Instant::now() + RETRY);
            let wake = retry.map_or(next_probe, |r| r.min(next_probe));
            tokio::select! {
                changed = self.status.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= next_probe {
                next_probe = tokio::time::Instant::now() + PROBE_INTERVAL;
                self.probe(&api).await;
            }
        }
    }

    /// Reads this Node to learn whether the API server answers.
    async fn probe(&self, api: &Api<Node>) {
        let result = api.get(&self.config.node_name).await;
        self.view.send_modify(|view| match result {
            Ok(_) => {
                if !view.api_reachable {
                    tracing::info!("the Kubernetes API server is reachable again");
                }
                view.api_reachable = true;
                view.last_contact = Some(std::time::Instant::now());
            }
            Err(e) => {
                let text = describe(&e);
                if view.api_reachable {
                    tracing::warn!(error = %text, "the Kubernetes API server is unreachable; the mesh keeps running on what it knows");
                }
                view.api_reachable = false;
                view.last_error = Some(text);
            }
        });
    }

    /// Sets this Node's weftnet annotations (a merge patch of `metadata.annotations`).
    async fn annotate(&self, api: &Api<Node>, blocks: &[IpNet]) -> Result<(), kube::Error> {
        let cidrs: Vec<String> = blocks.iter().map(|b| b.to_string()).collect();
        let mut annotations = serde_json::Map::new();
        annotations.insert(ANNOTATION_PUBLIC_KEY.into(), self.public_key.clone().into());
        annotations.insert(ANNOTATION_POD_CIDRS.into(), cidrs.join(",").into());
        if let Some(e) = self.endpoint {
            annotations.insert(ANNOTATION_ENDPOINT.into(), e.to_string().into());
        }
        let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
        // Through the status subresource, which applies metadata too: the ClusterRole
        // then needs `patch` on `nodes/status` only, not on every Node.
        api.patch_status(
            &self.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(|_| ())
    }

    /// Clears `NetworkUnavailable` (set by some cloud route controllers until a pod
    /// network is up). A strategic merge keeps the kubelet's other conditions.
    async fn mark_network_available(&self, api: &Api<Node>) -> Result<(), kube::Error> {
        let now = k8s_openapi::chrono::Utc::now()
            .to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Secs, true);
        let patch = serde_json::json!({ "status": { "conditions": [{
            "type": "NetworkUnavailable",
            "status": "False",
            "reason": "WeftnetIsUp",
            "message": "weftnet is running on this node",
            "lastTransitionTime": now,
            "lastHeartbeatTime": now,
        }]}});
        api.patch_status(
            &self.config.node_name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conflist_sorts_first_and_replaces_the_old_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("net.d");
        std::fs::create_dir(&conf).expect("mkdir");
        let others = [
            "05-cilium.conflist",
            "10-aws.conflist",
            "10-calico.conflist",
            "10-flannel.conflist",
        ];
        for name in others {
            std::fs::write(conf.join(name), "{}").expect("other CNI");
        }
        std::fs::write(conf.join(OLD_CONFLIST), "{}").expect("old weftnet");
        let cfg = KubeConfig {
            node_name: "node1".into(),
            kubeconfig: None,
            cni_bin_dir: dir.path().join("bin"),
            cni_conf_dir: conf.clone(),
            cni_data_dir: dir.path().join("data"),
            chained: None,
        };
        let blocks = ["10.244.1.0/24".parse().expect("net")];
        let path = write_conflist(&cfg, "weftbr0", &blocks, 1420).expect("written");
        assert_eq!(path, conf.join(CONFLIST));
        let mut names: Vec<String> = std::fs::read_dir(&conf)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names.first().map(String::as_str),
            Some(CONFLIST),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n == OLD_CONFLIST), "{names:?}");
        assert_eq!(names.len(), others.len() + 1, "{names:?}");
        // Again, with nothing old to remove.
        write_conflist(&cfg, "weftbr0", &blocks, 1420).expect("rewritten");
    }
}
