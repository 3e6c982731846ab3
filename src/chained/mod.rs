//! Chained mode (`weftnet up --kubernetes --chained`): weftnet beside another CNI (the
//! AWS VPC CNI), which keeps assigning pod addresses and plumbing pods. weftnet adds
//! itself to the end of that CNI's plugin chain (the plugin then records each pod's
//! addresses), announces this node's pods by gossip, and sends traffic from a local
//! pod to a pod on another node through that node's tunnel by policy routing: one
//! rule per local pod, `from POD lookup 51820`, at priority 100 (ahead of the VPC
//! CNI's rules at 512 and up), and in table 51820 a route into the overlay for each
//! admitted remote pod (the reconciler's routes). Anything with no route there (the
//! VPC, the internet, the node, same-node pods, Services before DNAT) falls through
//! to the other CNI's rules as before. With `--require-encryption`, table 51820 also
//! holds a `blackhole` route (metric 4096) for every pod on another Node, so traffic
//! to a pod whose node has no tunnel up is dropped instead of sent in clear, and one
//! for every block of a certified host outside the cluster that gossip lists (alive,
//! dead or left, until it is reaped), so traffic to a vouched host whose tunnel is
//! down is dropped too. A host outside the cluster needs nothing else here: the
//! reconciler routes its admitted blocks into table 51820 as it does remote pods.
//!
//! Multicast: the plugin records each pod's host-side veth too; every poll hands the
//! data plane the veths that exist (by interface index, with their pods' addresses),
//! where it reads the pods' IGMP/MLD reports and group traffic and writes group
//! traffic for member pods (`dataplane/pods.rs`).
//!
//! - [`conflist`]: the chained network config beside the primary's.
//! - [`pods`]: the Pod watch (the authority for announced pods).

pub(crate) mod conflist;
pub(crate) mod pods;

use crate::cluster::Command;
use crate::config::KubeConfig;
use crate::kube::KubeView;
use crate::netlink::Netlink;
use ipnet::IpNet;
use pods::PodMap;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use weftnet_proto::gossip::Member;

/// weftnet's routing table in chained mode.
pub(crate) const TABLE: u32 = 51820;
/// Priority of the per-pod rules: ahead of the VPC CNI's (512, 1024, 1536).
pub(crate) const RULE_PRIORITY: u32 = 100;
/// Metric of the `--require-encryption` blackhole routes, below the overlay routes'.
pub(crate) const BLACKHOLE_METRIC: u32 = 4096;
/// How often the plugin's records and the primary's conflist are looked at.
const POLL: Duration = Duration::from_secs(1);

/// The chained-mode task.
pub(crate) struct Chained {
    pub(crate) client: kube::Client,
    pub(crate) config: KubeConfig,
    pub(crate) require_encryption: bool,
    pub(crate) netlink: Arc<Netlink>,
    pub(crate) dataplane: Arc<crate::dataplane::Dataplane>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) view: Arc<watch::Sender<KubeView>>,
    /// The node's status: the members, for the blocks of hosts outside the cluster.
    pub(crate) status: watch::Receiver<weftnet_proto::node::Status>,
}

/// What the task has installed.
#[derive(Default)]
struct Installed {
    rules: BTreeSet<IpAddr>,
    announced: Option<BTreeSet<IpAddr>>,
    blackholes: BTreeSet<IpNet>,
    conflist_error: Option<String>,
}

impl Chained {
    /// Runs until the daemon stops.
    pub(crate) async fn run(self) {
        let (pods_tx, mut pods_rx) = watch::channel(None);
        let watcher = tokio::spawn(pods::run(self.client.clone(), pods_tx));
        let mut done = Installed::default();
        match self.netlink.source_rules(TABLE, RULE_PRIORITY).await {
            Ok(found) => done.rules = found.into_iter().map(|(ip, _)| ip).collect(),
            Err(e) => tracing::warn!(error = %e, "cannot list the rules of an earlier run"),
        }
        // An earlier run's blackholes: those of pods gone since are removed once the
        // Pods are listed.
        match self.netlink.blackholes(TABLE, BLACKHOLE_METRIC).await {
            Ok(found) => done.blackholes = found.into_iter().collect(),
            Err(e) => tracing::warn!(error = %e, "cannot list the blackholes of an earlier run"),
        }
        let mut tick = tokio::time::interval(POLL);
        let mut last: Option<Arc<PodMap>> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = pods_rx.changed() => if changed.is_err() { break },
            }
            self.local_pods(&mut done).await;
            self.conflist(&mut done);
            let map = pods_rx.borrow_and_update().clone();
            if let Some(map) = map {
                if !last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &map)) {
                    let _ = self
                        .commands
                        .send(Command::PodAddresses(PodMap::clone(&map)))
                        .await;
                    last = Some(map);
                }
            }
            if let (Some(map), true) = (&last, self.require_encryption) {
                let members = self.status.borrow().members.clone();
                let wanted = blackholes(&self.config.node_name, map, &members);
                self.blackholes(wanted, &mut done).await;
            }
        }
        watcher.abort();
    }

    /// The plugin's records: a rule per local pod, and the pods announced.
    async fn local_pods(&self, done: &mut Installed) {
        let records = crate::cni::chained::records(&self.config.cni_data_dir);
        self.dataplane.set_pod_ports(ports(&records));
        let local: BTreeSet<IpAddr> = records.into_iter().map(|r| r.address).collect();
        for ip in local.difference(&done.rules.clone()) {
            match self
                .netlink
                .add_source_rule(*ip, TABLE, RULE_PRIORITY)
                .await
            {
                Ok(()) => {
                    done.rules.insert(*ip);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), pod = %ip, "cannot add the pod's rule; retrying")
                }
            }
        }
        let gone: Vec<IpAddr> = done.rules.difference(&local).copied().collect();
        if !gone.is_empty() {
            match self.netlink.source_rules(TABLE, RULE_PRIORITY).await {
                Ok(rules) => {
                    for (ip, rule) in rules.into_iter().filter(|(ip, _)| gone.contains(ip)) {
                        if let Err(e) = self.netlink.del_rule(rule).await {
                            tracing::warn!(error = %format!("{e:#}"), pod = %ip, "cannot remove a rule");
                        }
                    }
                    for ip in &gone {
                        done.rules.remove(ip);
                    }
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot list rules"),
            }
        }
        if done.announced.as_ref() != Some(&local) {
            let pods = local.iter().copied().collect();
            if self.commands.send(Command::LocalPods(pods)).await.is_ok() {
                done.announced = Some(local);
            }
        }
    }

    /// Keeps the chained conflist composed from the primary's.
    fn conflist(&self, done: &mut Installed) {
        let outcome = conflist::sync(&self.config.cni_conf_dir, &self.config.cni_data_dir);
        let (path, error) = match outcome {
            Ok(conflist::Synced::Written(p)) => (Some(p), None),
            Ok(conflist::Synced::NoPrimary) => (
                None,
                Some(format!(
                    "no primary CNI config in {} yet: weftnet chains after it once aws-node writes 10-aws.conflist",
                    self.config.cni_conf_dir.display()
                )),
            ),
            Err(e) => (None, Some(e)),
        };
        if error != done.conflist_error {
            if let Some(e) = &error {
                tracing::warn!("{e}");
            }
            done.conflist_error = error;
        }
        self.view
            .send_if_modified(|v| std::mem::replace(&mut v.cni_config, path.clone()) != path);
    }

    /// `--require-encryption`: the blackhole routes are `wanted`, no more, no less.
    async fn blackholes(&self, wanted: BTreeSet<IpNet>, done: &mut Installed) {
        for p in wanted.difference(&done.blackholes.clone()) {
            match self
                .netlink
                .add_blackhole(*p, TABLE, BLACKHOLE_METRIC)
                .await
            {
                Ok(()) => {
                    done.blackholes.insert(*p);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), pod = %p, "cannot add the blackhole route")
                }
            }
        }
        for p in done.blackholes.clone().difference(&wanted) {
            if let Err(e) = self
                .netlink
                .del_blackhole(*p, TABLE, BLACKHOLE_METRIC)
                .await
            {
                tracing::warn!(error = %format!("{e:#}"), pod = %p, "cannot remove a blackhole route");
            }
            done.blackholes.remove(p);
        }
    }
}

/// What `--require-encryption` blackholes in table 51820 (once the Pods are listed):
/// every pod of another Node, and every block of a member with a certificate (a host
/// outside the cluster; Kubernetes nodes carry none) that gossip lists, whatever its
/// state, except a block that holds a pod's address (the authority never routes such
/// a block to the host either).
fn blackholes(me: &str, pods: &PodMap, members: &[Member]) -> BTreeSet<IpNet> {
    let mut out: BTreeSet<IpNet> = pods
        .iter()
        .filter(|(node, _)| node.as_str() != me)
        .flat_map(|(_, ips)| ips.iter().map(|ip| IpNet::from(*ip)))
        .collect();
    let any_pod = |b: &IpNet| pods.values().flatten().any(|ip| b.contains(ip));
    out.extend(
        members
            .iter()
            .filter_map(|m| m.record.certificate.as_ref())
            .flat_map(|c| c.blocks.iter().copied())
            .filter(|b| !any_pod(b)),
    );
    out
}

/// The pods' veths that exist now, by interface index, each with its pods' addresses
/// (records without a veth, or whose veth is gone, have no port).
fn ports(records: &[crate::cni::chained::Record]) -> Vec<(u32, Vec<IpAddr>)> {
    let mut by_veth: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    for r in records {
        if let Some(veth) = &r.host_veth {
            by_veth.entry(veth).or_default().push(r.address);
        }
    }
    by_veth
        .into_iter()
        .filter_map(|(veth, addrs)| Some((interface_index(veth)?, addrs)))
        .collect()
}

/// The index of interface `name` in this namespace, if it exists.
fn interface_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Removes everything chained mode put on the host: the chained conflist first (new
/// pods get the primary's network alone), then the rules and the table.
pub(crate) async fn remove(netlink: &Netlink, conf_dir: &std::path::Path) {
    conflist::remove(conf_dir);
    match netlink.source_rules(TABLE, RULE_PRIORITY).await {
        Ok(rules) => {
            for (ip, rule) in rules {
                if let Err(e) = netlink.del_rule(rule).await {
                    tracing::warn!(error = %format!("{e:#}"), pod = %ip, "cannot remove a rule");
                }
            }
        }
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot list the chained rules"),
    }
    if let Err(e) = netlink.flush_table(TABLE).await {
        tracing::warn!(error = %format!("{e:#}"), "cannot empty routing table {TABLE}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weftnet_proto::cert::Certificate;
    use weftnet_proto::gossip::{MemberState, NodeRecord};
    use weftnet_proto::keys::PublicKey;

    fn member(key: u8, name: &str, state: MemberState, blocks: Option<&[&str]>) -> Member {
        let certificate = blocks.map(|bs| Certificate {
            name: name.into(),
            public_key: [key; 32],
            not_before: 0,
            not_after: u64::MAX,
            may_claim: false,
            blocks: bs.iter().map(|b| b.parse().expect("block")).collect(),
            issuer: [9; 32],
            signature: [0; 64],
        });
        Member {
            record: NodeRecord {
                public_key: PublicKey::from_bytes([key; 32]),
                name: name.into(),
                endpoint: "192.0.2.1:51820".parse().expect("addr"),
                prefixes: Vec::new(),
                version: 1,
                certificate,
                handover: None,
            },
            state,
            epoch: 1,
            incarnation: 0,
        }
    }

    #[test]
    fn strict_mode_blackholes_other_nodes_pods_and_every_listed_certified_block() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let net = |s: &str| -> IpNet { s.parse().expect("net") };
        let mut pods = PodMap::new();
        pods.entry("n1".into())
            .or_default()
            .insert(ip("172.31.1.5"));
        pods.entry("n2".into())
            .or_default()
            .insert(ip("172.31.2.5"));
        let members = [
            member(1, "n2", MemberState::Alive, None),
            member(2, "ec2-a", MemberState::Dead, Some(&["10.99.7.0/24"])),
            member(3, "ec2-b", MemberState::Left, Some(&["10.99.8.0/24"])),
            // A block holding a pod's address is never the host's.
            member(4, "ec2-c", MemberState::Alive, Some(&["172.31.2.0/24"])),
        ];
        let got = blackholes("n1", &pods, &members);
        let want: BTreeSet<IpNet> = ["172.31.2.5/32", "10.99.7.0/24", "10.99.8.0/24"]
            .into_iter()
            .map(net)
            .collect();
        assert_eq!(got, want);
    }
}
