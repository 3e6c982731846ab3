//! The enforcement task: on every change of the cluster's policies, pods or namespaces
//! (a [`watch`] of [`Cluster`]), it compiles this node's pods' rules, and when the
//! ruleset differs from the one in force, replaces the table in one transaction. It
//! reads the drop counters every few seconds and before each replacement (which
//! resets them), so the totals per pod and direction only grow, and publishes a
//! [`PolicyView`] for `weftnet status` and the metrics.

use super::nft::{self, Ruleset, Target};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use weftnet_proto::multicast::ReceivePolicy;
use weftnet_proto::policy::{compile, Cluster, Direction, Pod, PodKey, PodRules};

/// How often the drop counters are read.
const COUNTER_INTERVAL: Duration = Duration::from_secs(2);

/// What this node protects.
#[derive(Debug, Clone)]
pub(crate) enum Local {
    /// Kubernetes: the pods scheduled on this Node, by the cluster's policies; the CNI
    /// plugin's data directory tells each pod's bridge port.
    Node {
        name: String,
        cni_data: std::path::PathBuf,
    },
    /// Standalone: fixed rules per local prefix (`[[policy]]`).
    Fixed(Vec<Target>),
}

impl Local {
    fn targets(&self, cluster: &Cluster) -> Vec<Target> {
        match self {
            Local::Node { name, cni_data } => {
                compile(cluster, |p: &Pod| p.node.as_deref() == Some(name.as_str()))
                    .into_iter()
                    .map(|rules| {
                        let port = rules
                            .addrs
                            .iter()
                            .find_map(|ip| crate::cni::pod_port(cni_data, *ip));
                        Target {
                            port,
                            ..Target::pod(rules)
                        }
                    })
                    .collect()
            }
            Local::Fixed(t) => t.clone(),
        }
    }

    /// Which groups each local pod may receive, for the report path (PROTOCOL.md
    /// §7.11 rule 3). Standalone rules do not govern what a prefix receives (their
    /// `groups` limit sending only), so they leave every report open.
    fn receive_policy(&self, targets: &[Target]) -> ReceivePolicy {
        match self {
            // A pod's MLD reports come from its link-local address, which the CNI
            // plugin recorded: it is judged as the pod.
            Local::Node { cni_data, .. } => ReceivePolicy::new(targets.iter().flat_map(|t| {
                let groups = t.rules.receivable_groups();
                let link_local = t
                    .port
                    .as_deref()
                    .and_then(|port| crate::cni::pod_link_local(cni_data, port));
                t.nets
                    .iter()
                    .copied()
                    .chain(link_local.map(IpNet::from))
                    .map(move |n| (n, groups.clone()))
            })),
            Local::Fixed(_) => ReceivePolicy::default(),
        }
    }
}

/// One local pod in `weftnet status` (`policy.pods`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PodPolicy {
    /// `namespace/name`.
    pub(crate) pod: String,
    pub(crate) addresses: Vec<String>,
    /// `open` or `isolated`.
    pub(crate) ingress: String,
    pub(crate) egress: String,
    /// The policies selecting it (`namespace/name`).
    pub(crate) policies: Vec<String>,
    /// Packets dropped because no rule allowed them.
    pub(crate) ingress_drops: u64,
    pub(crate) egress_drops: u64,
}

/// The `policy` section of `weftnet status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PolicyStatus {
    /// Policies known (cluster-wide), pods known, and this node's pods.
    pub(crate) policies: usize,
    pub(crate) pods_known: usize,
    /// Rulesets applied since start.
    pub(crate) applied: u64,
    /// Seconds since the ruleset in force was applied.
    pub(crate) applied_secs_ago: Option<u64>,
    /// The last failure to apply, if the ruleset in force is not the wanted one.
    pub(crate) error: Option<String>,
    pub(crate) pods: Vec<PodPolicy>,
}

/// What the task publishes.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicyView {
    pub(crate) policies: usize,
    pub(crate) pods_known: usize,
    pub(crate) applied: u64,
    pub(crate) applied_at: Option<Instant>,
    pub(crate) error: Option<String>,
    pub(crate) rules: Vec<PodRules>,
    /// Which groups each local pod may receive (for the multicast report path).
    pub(crate) receive: ReceivePolicy,
    /// Drops per pod and direction since start.
    pub(crate) drops: BTreeMap<(PodKey, Direction), u64>,
}

impl PolicyView {
    pub(crate) fn status(&self) -> PolicyStatus {
        let state = |r: &PodRules, d| {
            if r.direction(d).is_some() {
                "isolated"
            } else {
                "open"
            }
            .to_string()
        };
        let drops = |k: &PodKey, d| self.drops.get(&(k.clone(), d)).copied().unwrap_or(0);
        PolicyStatus {
            policies: self.policies,
            pods_known: self.pods_known,
            applied: self.applied,
            applied_secs_ago: self.applied_at.map(|t| t.elapsed().as_secs()),
            error: self.error.clone(),
            pods: self
                .rules
                .iter()
                .map(|r| PodPolicy {
                    pod: r.pod.to_string(),
                    addresses: r.addrs.iter().map(ToString::to_string).collect(),
                    ingress: state(r, Direction::Ingress),
                    egress: state(r, Direction::Egress),
                    policies: r.policies.iter().map(ToString::to_string).collect(),
                    ingress_drops: drops(&r.pod, Direction::Ingress),
                    egress_drops: drops(&r.pod, Direction::Egress),
                })
                .collect(),
        }
    }
}

struct Enforcer {
    local: Local,
    view: watch::Sender<PolicyView>,
    /// The ruleset in force and its counters' last reading.
    current: Ruleset,
    last_read: HashMap<String, u64>,
    /// Drops counted by earlier generations of the table.
    base: BTreeMap<(PodKey, Direction), u64>,
}

impl Enforcer {
    /// Reads the counters of the table in force into the view.
    async fn read_counters(&mut self) {
        let read = tokio::task::spawn_blocking(nft::read_counters).await;
        let Ok(Ok(values)) = read else {
            return;
        };
        self.last_read = values;
        let mut totals = self.base.clone();
        for (name, n) in &self.last_read {
            if let Some(key) = self.current.counters.get(name) {
                *totals.entry(key.clone()).or_default() += n;
            }
        }
        self.view.send_if_modified(|v| {
            let changed = v.drops != totals;
            v.drops = totals;
            changed
        });
    }

    async fn update(&mut self, cluster: &Cluster) {
        let targets = self.local.targets(cluster);
        let receive = self.local.receive_policy(&targets);
        let ruleset = nft::render(&targets);
        let changed = ruleset.script != self.current.script;
        let mut error = None;
        if changed {
            // The replacement resets the counters: keep what they counted.
            self.read_counters().await;
            let started = Instant::now();
            let applying = ruleset.clone();
            match tokio::task::spawn_blocking(move || nft::apply(&applying)).await {
                Ok(Ok(())) => {
                    for (name, n) in std::mem::take(&mut self.last_read) {
                        if let Some(key) = self.current.counters.get(&name) {
                            *self.base.entry(key.clone()).or_default() += n;
                        }
                    }
                    tracing::debug!(pods = targets.len(), took = ?started.elapsed(), "network policy ruleset applied");
                    self.current = ruleset;
                }
                Ok(Err(e)) => error = Some(format!("{e:#}")),
                Err(e) => error = Some(format!("the nft task failed: {e}")),
            }
            if let Some(e) = &error {
                tracing::warn!(error = %e, "cannot apply the network policy ruleset; the previous one stays in force");
            }
        }
        let applied = changed && error.is_none();
        let base = self.base.clone();
        self.view.send_modify(|v| {
            v.policies = cluster.policies.len();
            v.pods_known = cluster.pods.len();
            v.rules = targets.into_iter().map(|t| t.rules).collect();
            // Reports follow the rules in force: a ruleset that failed to apply
            // leaves the previous verdict too.
            if error.is_none() {
                v.receive = receive;
            }
            if applied {
                v.applied += 1;
                v.applied_at = Some(Instant::now());
            }
            if changed {
                v.error = error;
            }
            if applied {
                // The new table counts from zero: the totals are what earlier ones counted.
                v.drops = base;
            }
        });
    }

    async fn run(mut self, mut cluster: watch::Receiver<Arc<Cluster>>) {
        let mut tick = tokio::time::interval(COUNTER_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let first = cluster.borrow_and_update().clone();
        self.update(&first).await;
        // Standalone rules never change: the sender may be gone from the start.
        let mut following = true;
        loop {
            tokio::select! {
                changed = cluster.changed(), if following => {
                    if changed.is_err() {
                        following = false;
                        continue;
                    }
                    let c = cluster.borrow_and_update().clone();
                    self.update(&c).await;
                }
                _ = tick.tick() => self.read_counters().await,
            }
        }
    }
}

/// Applies the first ruleset (so a start-up failure, such as nft missing, is one line
/// for the operator), then starts the task that follows `cluster`.
pub(crate) async fn spawn(
    local: Local,
    cluster: watch::Receiver<Arc<Cluster>>,
    kept: bool,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, watch::Receiver<PolicyView>)> {
    let first = if kept {
        // The table an earlier run of this node left (a restart) stays in force until
        // the first ruleset of this run replaces it: pods stay isolated meanwhile.
        Ruleset {
            script: String::new(),
            counters: HashMap::new(),
        }
    } else {
        let first = nft::render(&[]);
        let applying = first.clone();
        tokio::task::spawn_blocking(move || nft::apply(&applying))
            .await
            .map_err(|e| anyhow::anyhow!("the nft task failed: {e}"))??;
        first
    };
    let (view, rx) = watch::channel(PolicyView::default());
    let enforcer = Enforcer {
        local,
        view,
        current: first,
        last_read: HashMap::new(),
        base: BTreeMap::new(),
    };
    Ok((tokio::spawn(enforcer.run(cluster)), rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weftnet_proto::policy::PodKey;

    /// A pod's MLD reports come from its link-local address: the one the CNI plugin
    /// recorded for the pod's bridge port is judged as the pod.
    #[test]
    fn a_pods_recorded_link_local_address_is_judged_as_the_pod() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("weftnet");
        std::fs::create_dir_all(&store).expect("store");
        std::fs::write(store.join("wf0001.link-local"), "fe80::1\n").expect("record");
        let rules = PodRules {
            pod: PodKey::new("x", "a"),
            addrs: vec!["10.244.1.2".parse().expect("ip")],
            // ingress isolated, no rule: it may receive no group
            ingress: Some(vec![]),
            egress: None,
            policies: vec![PodKey::new("x", "deny")],
        };
        let target = Target {
            port: Some("wf0001".into()),
            ..Target::pod(rules)
        };
        let local = Local::Node {
            name: "node1".into(),
            cni_data: dir.path().to_path_buf(),
        };
        let policy = local.receive_policy(&[target]);
        let group = "ff05::9".parse().expect("group");
        assert!(!policy.allows("fe80::1".parse().expect("ip"), group));
        assert!(!policy.allows("10.244.1.2".parse().expect("ip"), group));
        // another link-local address (the host's bridge) is no local pod
        assert!(policy.allows("fe80::2".parse().expect("ip"), group));
    }
}
