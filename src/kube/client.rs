//! Connecting to the Kubernetes API server, reading this node's Node at start-up
//! (with a cached copy in the state directory for when the API server is down), and
//! turning API errors into lines a cluster operator can act on.

use super::nodes::facts_of;
use crate::config::KubeConfig;
use anyhow::{anyhow, Result};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File in the state directory holding the last Node facts read from the API.
const CACHE_FILE: &str = "kube-node.json";
/// Longest pause between start-up attempts while the API server is unreachable.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A client for the configured cluster.
pub(crate) async fn connect(cfg: &KubeConfig) -> Result<Client> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                anyhow!(
                    "cannot read kubeconfig {} ({e}): give a valid --kubeconfig, or leave it out inside a pod to use the service account",
                    path.display()
                )
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| {
                    anyhow!(
                        "cannot use kubeconfig {} ({e}): fix its current context, cluster and user",
                        path.display()
                    )
                })?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow!("cannot find the Kubernetes API server ({e}): run weftnet in a pod with a service account, or give --kubeconfig FILE")
        })?,
    };
    let mut config = config;
    // Fail fast so status and retries stay current while the API server is down.
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(295));
    Client::try_from(config).map_err(|e| anyhow!("cannot create the Kubernetes client ({e}): check the kubeconfig's server and certificates"))
}

/// What an API error means for the operator; `None` for transient errors worth a retry.
pub(crate) fn fatal(err: &kube::Error, node: &str) -> Option<String> {
    let kube::Error::Api(resp) = err else {
        return None;
    };
    match resp.code {
        401 => Some(format!(
            "the API server rejected weftnet's credentials (401 Unauthorized: {}): check the service account token or the kubeconfig's user",
            resp.message
        )),
        403 => Some(format!(
            "weftnet may not read or patch Nodes (403 Forbidden: {}): apply the ServiceAccount, ClusterRole and ClusterRoleBinding from deploy/kubernetes/weftnet.yaml",
            resp.message
        )),
        404 => Some(format!(
            "Node {node} does not exist: --node-name must be this machine's Kubernetes Node name (in a DaemonSet, spec.nodeName through the downward API)"
        )),
        _ => None,
    }
}

/// One line about an error, for logs and status.
pub(crate) fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(resp) => format!("{} {}: {}", resp.code, resp.reason, resp.message),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// One line about a failed watch: the API error inside it, described as [`describe`]
/// does.
pub(crate) fn describe_watch(e: &kube::runtime::watcher::Error) -> String {
    use kube::runtime::watcher::Error;
    match e {
        Error::InitialListFailed(k) | Error::WatchStartFailed(k) | Error::WatchFailed(k) => {
            describe(k)
        }
        other => other.to_string(),
    }
}

/// What the daemon starts from: this Node's facts and the other Nodes' addresses.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StartFacts {
    pub(crate) pod_cidrs: Vec<IpNet>,
    /// Other Nodes' InternalIP addresses (gossip seeds).
    pub(crate) seeds: Vec<IpAddr>,
    /// Whether these came from the cache because the API server was unreachable.
    #[serde(skip)]
    pub(crate) cached: bool,
}

fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CACHE_FILE)
}

fn read_cache(state_dir: &Path) -> Option<StartFacts> {
    let text = std::fs::read_to_string(cache_path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_cache(state_dir: &Path, facts: &StartFacts) {
    let path = cache_path(state_dir);
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec(facts)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %path.display(), "cannot cache the Node facts");
    }
}

async fn read_once(client: &Client, node: &str) -> std::result::Result<StartFacts, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let me = api.get(node).await?;
    let mine = facts_of(&me);
    let list = api.list(&Default::default()).await?;
    let mut seeds: Vec<IpAddr> = list
        .items
        .iter()
        .map(facts_of)
        .filter(|f| f.name != node)
        .flat_map(|f| f.internal_ips)
        .collect();
    seeds.sort();
    seeds.dedup();
    Ok(StartFacts {
        pod_cidrs: mine.pod_cidrs,
        seeds,
        cached: false,
    })
}

/// Reads this Node and the other Nodes' addresses. Fatal API answers (no RBAC, no
/// such Node) end start-up with one line; while the API server is unreachable it
/// retries, or starts from the cached facts of an earlier run at once.
pub(crate) async fn read_start_facts(
    client: &Client,
    cfg: &KubeConfig,
    state_dir: &Path,
) -> Result<StartFacts> {
    let mut delay = Duration::from_secs(1);
    loop {
        match read_once(client, &cfg.node_name).await {
            Ok(facts) => {
                write_cache(state_dir, &facts);
                return Ok(facts);
            }
            Err(e) => {
                if let Some(line) = fatal(&e, &cfg.node_name) {
                    return Err(anyhow!(line));
                }
                if let Some(mut cached) = read_cache(state_dir) {
                    tracing::warn!(error = %describe(&e), "the Kubernetes API server is unreachable; starting from the Node facts cached by an earlier run");
                    cached.cached = true;
                    return Ok(cached);
                }
                tracing::warn!(error = %describe(&e), retry_in = ?delay, "cannot reach the Kubernetes API server to read this Node; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(kube::core::ErrorResponse {
            status: "Failure".into(),
            message: "nodes \"n1\" is forbidden".into(),
            reason: "Forbidden".into(),
            code,
        })
    }

    #[test]
    fn rbac_and_missing_node_are_fatal_with_a_fix() {
        let forbidden = fatal(&api_error(403), "n1").expect("fatal");
        assert!(forbidden.contains("ClusterRole"), "{forbidden}");
        let missing = fatal(&api_error(404), "n1").expect("fatal");
        assert!(missing.contains("--node-name"), "{missing}");
        assert!(fatal(&api_error(500), "n1").is_none());
        assert!(fatal(&api_error(429), "n1").is_none());
    }

    #[test]
    fn cache_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let facts = StartFacts {
            pod_cidrs: vec!["10.244.1.0/24".parse().expect("net")],
            seeds: vec!["192.0.2.2".parse().expect("ip")],
            cached: false,
        };
        write_cache(dir.path(), &facts);
        assert_eq!(read_cache(dir.path()), Some(facts));
    }
}
