//! The Pod watch of chained mode: every Pod's addresses by Node (`spec.nodeName`,
//! `status.podIPs`), which is what the authority checks a member's announced pods
//! against, and, with `--require-encryption`, which addresses are other nodes' pods.
//! Host-network pods (their address is the Node's) and finished pods are left out.
//! Nothing is handed on before the first full list.

use crate::kube::policy::pod_of;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Pod addresses by Node name.
pub(crate) type PodMap = BTreeMap<String, BTreeSet<IpAddr>>;
/// The counted pods by (namespace, name): their Node and addresses.
type Pods = BTreeMap<(String, String), (String, Vec<IpAddr>)>;

/// A Pod's Node and addresses, if it counts (scheduled, has addresses, not host
/// network, not finished).
fn entry(p: &Pod) -> Option<(String, Vec<IpAddr>)> {
    let pod = pod_of(p)?;
    if pod.host_network || pod.ips.is_empty() {
        return None;
    }
    Some((pod.node?, pod.ips))
}

fn key(p: &Pod) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// Folds the pods into the map by Node.
pub(crate) fn by_node<'a>(pods: impl Iterator<Item = &'a (String, Vec<IpAddr>)>) -> PodMap {
    let mut map = PodMap::new();
    for (node, ips) in pods {
        map.entry(node.clone())
            .or_default()
            .extend(ips.iter().copied());
    }
    map
}

/// Watches until the daemon stops (the stream retries with backoff forever).
pub(crate) async fn run(client: Client, out: watch::Sender<Option<Arc<PodMap>>>) {
    let stream =
        watcher::watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut live: Pods = BTreeMap::new();
    let mut relist: Option<Pods> = None;
    let mut listed = false;
    while let Some(item) = stream.next().await {
        let changed = match item {
            Err(e) => {
                tracing::debug!(error = %e, "the Pod watch failed; retrying (routes stay as they are)");
                false
            }
            Ok(Event::Init) => {
                relist = Some(BTreeMap::new());
                false
            }
            Ok(Event::InitApply(p)) => {
                if let Some(e) = entry(&p) {
                    relist.get_or_insert_with(BTreeMap::new).insert(key(&p), e);
                }
                false
            }
            Ok(Event::InitDone) => {
                live = relist.take().unwrap_or_default();
                listed = true;
                true
            }
            Ok(Event::Apply(p)) => {
                match entry(&p) {
                    Some(e) => live.insert(key(&p), e),
                    None => live.remove(&key(&p)),
                };
                true
            }
            Ok(Event::Delete(p)) => {
                live.remove(&key(&p));
                true
            }
        };
        if changed && listed {
            let map = by_node(live.values());
            out.send_if_modified(|cur| {
                if cur.as_deref() == Some(&map) {
                    return false;
                }
                *cur = Some(Arc::new(map));
                true
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn only_scheduled_running_pod_network_pods_count() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "x"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"podIP": "172.31.1.5", "podIPs": [{"ip": "172.31.1.5"}, {"ip": "fd31::5"}]}}),
        );
        let (node, ips) = entry(&p).expect("counts");
        assert_eq!(node, "n1");
        assert_eq!(ips.len(), 2);
        let host = pod(serde_json::json!({"metadata": {"name": "h"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "containers": []},
            "status": {"podIP": "172.31.0.1"}}));
        assert!(entry(&host).is_none());
        let pending = pod(serde_json::json!({"metadata": {"name": "p"},
            "spec": {"containers": []}, "status": {"podIP": "172.31.1.6"}}));
        assert!(entry(&pending).is_none(), "not scheduled");
        let done = pod(serde_json::json!({"metadata": {"name": "d"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Succeeded", "podIP": "172.31.1.7"}}));
        assert!(entry(&done).is_none(), "finished");
        let map = by_node(
            [
                ("n1".to_string(), ips.clone()),
                ("n2".to_string(), vec!["172.31.2.5".parse().expect("ip")]),
            ]
            .iter(),
        );
        assert_eq!(map["n1"].len(), 2);
        assert_eq!(map["n2"].len(), 1);
    }
}
