//! The NetworkPolicy watch: NetworkPolicies, Pods and Namespaces of the whole cluster
//! (peers can be anywhere; each Pod is reduced at once to what the engine reads), kept
//! current from the API server's watch streams and handed to the enforcer as one
//! [`Cluster`] snapshot after every change. Nothing is handed over before all three
//! are fully listed, so a half-known cluster never isolates a pod from peers that
//! simply were not listed yet. A relist replaces a kind's objects as a whole.

use super::client::describe_watch;
use super::policy::{namespace_of, pod_of, policy_of};
use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use weftnet_proto::policy::{Cluster, PodKey};

enum Item {
    Policy(Result<Event<NetworkPolicy>, watcher::Error>),
    Pod(Box<Result<Event<Pod>, watcher::Error>>),
    Namespace(Result<Event<Namespace>, watcher::Error>),
}

/// One kind's objects, with the relist in progress.
struct Kind<K, V> {
    live: BTreeMap<K, V>,
    relist: Option<BTreeMap<K, V>>,
    listed: bool,
}

impl<K: Ord, V> Kind<K, V> {
    fn new() -> Self {
        Self {
            live: BTreeMap::new(),
            relist: None,
            listed: false,
        }
    }

    /// Applies one event (`convert` gives the key and, unless the object is to be
    /// left out, the value); true when the live set may have changed.
    fn event<O>(&mut self, e: Event<O>, convert: impl Fn(&O) -> (K, Option<V>)) -> bool {
        match e {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(o) => {
                if let (k, Some(v)) = convert(&o) {
                    self.relist.get_or_insert_with(BTreeMap::new).insert(k, v);
                }
                false
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.listed = true;
                true
            }
            Event::Apply(o) => {
                match convert(&o) {
                    (k, Some(v)) => self.live.insert(k, v),
                    (k, None) => self.live.remove(&k),
                };
                true
            }
            Event::Delete(o) => {
                self.live.remove(&convert(&o).0);
                true
            }
        }
    }
}

fn key_of(meta: &kube::core::ObjectMeta) -> PodKey {
    PodKey::new(
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Watches until the daemon stops (the streams retry with backoff forever).
pub(crate) async fn run(client: Client, out: watch::Sender<Arc<Cluster>>) {
    let cfg = watcher::Config::default;
    let policies = watcher::watcher(Api::<NetworkPolicy>::all(client.clone()), cfg())
        .default_backoff()
        .map(Item::Policy)
        .boxed();
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), cfg())
        .default_backoff()
        .map(|e| Item::Pod(Box::new(e)))
        .boxed();
    let namespaces = watcher::watcher(Api::<Namespace>::all(client), cfg())
        .default_backoff()
        .map(Item::Namespace)
        .boxed();
    let mut items = stream::select_all([policies, pods, namespaces]);
    let mut p = Kind::new();
    let mut q = Kind::new();
    let mut n = Kind::new();
    while let Some(item) = items.next().await {
        let changed = match item {
            Item::Policy(Ok(e)) => p.event(e, |o: &NetworkPolicy| {
                let (policy, warn) = policy_of(o);
                for w in warn {
                    tracing::warn!(policy = %policy.key, problem = %w, "part of a NetworkPolicy does not parse; it matches nothing");
                }
                (policy.key.clone(), Some(policy))
            }),
            Item::Pod(b) => match *b {
                Ok(e) => q.event(e, |o: &Pod| (key_of(&o.metadata), pod_of(o))),
                Err(e) => {
                    failed(&e);
                    false
                }
            },
            Item::Namespace(Ok(e)) => n.event(e, |o: &Namespace| {
                let ns = namespace_of(o);
                (ns.name.clone(), Some(ns))
            }),
            Item::Policy(Err(e)) | Item::Namespace(Err(e)) => {
                failed(&e);
                false
            }
        };
        if changed && p.listed && q.listed && n.listed {
            out.send_replace(Arc::new(Cluster {
                policies: p.live.clone(),
                pods: q.live.clone(),
                namespaces: n.live.clone(),
            }));
        }
    }
}

fn failed(e: &watcher::Error) {
    tracing::debug!(error = %describe_watch(e), "a NetworkPolicy watch failed; retrying (the rules in force stay)");
}
