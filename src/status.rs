//! `weftnet status`: the report the daemon serves on its control socket, and its
//! rendering as text or JSON.

use crate::cli::StatusArgs;
use crate::config::state_dir_of;
use crate::control::{request, Request};
use crate::dataplane::{Dataplane, GroupCounters, PeerReport};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use weftnet_proto::node::Peer;
use weftnet_proto::node::{split_prefixes, state_name, SeedStatus, Status};

/// This node and its peers, as served on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StatusReport {
    pub(crate) interface: String,
    pub(crate) public_key: String,
    /// Seconds since this node's key was made (or last rotated).
    #[serde(default)]
    pub(crate) key_age_secs: u64,
    /// Rotations of this node's key so far (`weftnet rotate-key`, `--key-lifetime`).
    #[serde(default)]
    pub(crate) key_generation: u64,
    pub(crate) listen_port: u16,
    pub(crate) addresses: Vec<String>,
    pub(crate) mtu: u32,
    /// The TUN offload path: `tso`, `vnet-hdr` or `off` (README, Benchmark).
    #[serde(default)]
    pub(crate) offload: String,
    /// The data-plane workers (TUN queues, UDP sockets).
    #[serde(default)]
    pub(crate) workers: WorkersStatus,
    pub(crate) peers: Vec<PeerStatus>,
    /// Gossip membership; absent without a cluster secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<ClusterStatus>,
    /// Multicast: local groups and per-group traffic.
    pub(crate) multicast: MulticastStatus,
    /// Dropped packets and rejected datagrams by reason.
    pub(crate) drops: BTreeMap<String, u64>,
    /// Bridge mode: the L2 port on the pods' bridge and its frame counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) l2: Option<L2Status>,
    /// Chained mode: the pods' veths as multicast ports, and their frame counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pod_ports: Option<crate::dataplane::PodStats>,
    /// Kubernetes mode: the API server as this node sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kubernetes: Option<crate::kube::KubeStatus>,
    /// NetworkPolicy enforcement: policies in force per local pod, drops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) policy: Option<crate::policy::PolicyStatus>,
}

/// The data-plane workers: one TUN queue and one UDP socket each.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct WorkersStatus {
    /// How many workers run.
    pub(crate) count: usize,
    /// Queues of the TUN device (one per worker).
    pub(crate) tun_queues: usize,
    /// Whether the TUN device is multi-queue (`IFF_MULTI_QUEUE`).
    pub(crate) multi_queue: bool,
    /// UDP sockets on the listening port (one per worker, `SO_REUSEPORT`).
    pub(crate) udp_sockets: usize,
    /// Per worker: reads from its TUN queue and datagrams received on its socket.
    pub(crate) tun_reads: Vec<u64>,
    pub(crate) udp_datagrams: Vec<u64>,
    /// Times a thread waited for a peer's session held by another thread.
    pub(crate) peer_lock_waits: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MulticastStatus {
    /// Groups with a member on this node (snooped from IGMP/MLD reports).
    pub(crate) local_groups: Vec<String>,
    /// NetworkPolicy: IGMP/MLD report records refused since start (joins of a group
    /// the listener may not receive; PROTOCOL.md §7.11).
    #[serde(default)]
    pub(crate) refused_reports: u64,
    /// Memberships snooped but refused by NetworkPolicy: they do not make this node
    /// announce the group.
    #[serde(default)]
    pub(crate) denied_members: Vec<DeniedMember>,
    /// Traffic per group: sent into the mesh (packets, bytes, encrypted copies),
    /// received from it, and dropped (filtered or rate limited).
    pub(crate) groups: Vec<GroupStatus>,
}

/// A membership NetworkPolicy refuses (`multicast.denied_members[]`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DeniedMember {
    pub(crate) group: String,
    /// The report's source address (the pod).
    pub(crate) listener: String,
}

/// Bridge mode's L2 port (`l2` in the JSON form).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct L2Status {
    pub(crate) port: String,
    #[serde(flatten)]
    pub(crate) counters: crate::dataplane::L2Stats,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct GroupStatus {
    pub(crate) group: String,
    #[serde(flatten)]
    pub(crate) counters: GroupCounters,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClusterStatus {
    pub(crate) name: String,
    /// The endpoint this node advertises.
    pub(crate) endpoint: Option<String>,
    /// The block claimed from --range, if any.
    pub(crate) block: Option<String>,
    /// True while the node is still choosing its block.
    pub(crate) claiming: bool,
    pub(crate) members: Vec<MemberStatus>,
    /// The seeds joined through and whether each answers.
    #[serde(default)]
    pub(crate) seeds: Vec<SeedReport>,
}

/// One seed (`cluster.seeds` in the JSON form).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SeedReport {
    /// As written with --join, else its address.
    pub(crate) seed: String,
    /// join, kubernetes or known (a member saved by an earlier run).
    pub(crate) source: String,
    /// Its address, once resolved.
    pub(crate) address: Option<String>,
    /// answering, not_answering, unresolved or this_node.
    pub(crate) state: String,
}

impl From<&SeedStatus> for SeedReport {
    fn from(s: &SeedStatus) -> Self {
        Self {
            seed: s.seed.clone(),
            source: s.source.as_str().to_string(),
            address: s.address.map(|a| a.to_string()),
            state: s.state.as_str().to_string(),
        }
    }
}

/// Most seeds the text form lists one by one.
const SEEDS_LISTED: usize = 8;

/// The text form's seeds line: every seed with its state, or, when there are many,
/// how many answer and the first of the others.
fn render_seeds(seeds: &[SeedReport]) -> String {
    let shown = |s: &SeedReport| format!("{} {}", s.seed, s.state.replace('_', " "));
    if seeds.len() <= SEEDS_LISTED {
        let list: Vec<String> = seeds.iter().map(shown).collect();
        return format!("  seeds: {}\n", list.join(", "));
    }
    let answering = seeds.iter().filter(|s| s.state == "answering").count();
    let others: Vec<&SeedReport> = seeds.iter().filter(|s| s.state != "answering").collect();
    let mut list: Vec<String> = others.iter().take(SEEDS_LISTED).map(|s| shown(s)).collect();
    if others.len() > SEEDS_LISTED {
        list.push(format!("{} more", others.len() - SEEDS_LISTED));
    }
    let mut line = format!("  seeds: {} of {} answering", answering, seeds.len());
    if !list.is_empty() {
        line.push_str(&format!("; {}", list.join(", ")));
    }
    line.push('\n');
    line
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MemberStatus {
    pub(crate) name: String,
    pub(crate) public_key: String,
    /// alive, suspect, dead or left.
    pub(crate) state: String,
    pub(crate) epoch: u64,
    pub(crate) incarnation: u64,
    pub(crate) endpoint: String,
    pub(crate) prefixes: Vec<String>,
    /// Multicast groups with a member on that node.
    pub(crate) groups: Vec<String>,
    pub(crate) latest_handshake_secs: Option<u64>,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    /// Inner MTU of the path to the member (PROTOCOL.md §9); null until known.
    #[serde(default)]
    pub(crate) path_mtu: Option<u16>,
}

/// One peer: its four [`Peer`] fields, then its traffic.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PeerStatus {
    #[serde(flatten)]
    pub(crate) peer: Peer,
    /// Seconds since the last completed handshake; null if none yet.
    pub(crate) latest_handshake_secs: Option<u64>,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
    /// Inner MTU of the path to the peer (PROTOCOL.md §9); null until the peer
    /// answered a probe.
    #[serde(default)]
    pub(crate) path_mtu: Option<u16>,
}

/// A path MTU for the text form: the number, or "unknown" before the first probe
/// was answered.
fn mtu_text(mtu: Option<u16>) -> String {
    mtu.map_or("unknown".to_string(), |m| m.to_string())
}

impl From<&PeerReport> for PeerStatus {
    fn from(report: &PeerReport) -> Self {
        let stats = &report.stats;
        Self {
            peer: report.peer.clone(),
            latest_handshake_secs: stats.since_handshake.map(|d| d.as_secs()),
            rx_bytes: stats.rx_bytes,
            tx_bytes: stats.tx_bytes,
            rx_packets: stats.rx_packets,
            tx_packets: stats.tx_packets,
            path_mtu: stats.path_mtu,
        }
    }
}

impl PeerStatus {
    fn render(&self) -> String {
        let p = &self.peer;
        let mut s = format!("\npeer: {}\n", p.public_key);
        let prefixes: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
        s.push_str(&format!(
            "  endpoint: {}\n  allowed ips: {}\n",
            p.endpoint.map_or("(none)".to_string(), |e| e.to_string()),
            if prefixes.is_empty() {
                "(none)".to_string()
            } else {
                prefixes.join(", ")
            }
        ));
        match self.latest_handshake_secs {
            Some(secs) => s.push_str(&format!("  latest handshake: {secs} seconds ago\n")),
            None => s.push_str("  latest handshake: (none)\n"),
        }
        s.push_str(&format!(
            "  transfer: {} B received, {} B sent\n",
            self.rx_bytes, self.tx_bytes
        ));
        s.push_str(&format!("  path mtu: {}\n", mtu_text(self.path_mtu)));
        if let Some(k) = p.persistent_keepalive {
            s.push_str(&format!("  persistent keepalive: every {k} seconds\n"));
        }
        s
    }
}

/// Static facts about the node that neither the data plane nor the reconciler hold.
pub(crate) struct NodeInfo {
    pub(crate) listen_port: u16,
    pub(crate) mtu: u32,
    /// When this node's key was made, and its rotations so far.
    pub(crate) key_since: std::time::SystemTime,
    pub(crate) key_generation: u64,
}

/// Dropped packets and rejected datagrams by reason (`drops` in the report, and the
/// `weftnet_drops_total` metric): the data plane's counters, then, with gossip, every
/// gossip error (zero when it never happened) and the prefixes the authority refused.
pub(crate) fn drop_counts(
    dataplane: Vec<(&'static str, u64)>,
    status: &Status,
) -> BTreeMap<String, u64> {
    let mut drops: BTreeMap<String, u64> = dataplane
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    if status.clustered {
        for e in weftnet_proto::gossip::GossipError::ALL {
            drops.insert(e.as_str().to_string(), 0);
        }
        for (k, v) in &status.errors {
            drops.insert((*k).to_string(), *v);
        }
        drops.insert("prefix_refused".to_string(), status.refused_prefixes);
    }
    drops
}

impl StatusReport {
    pub(crate) fn build(node: &NodeInfo, dp: &Dataplane, status: &Status) -> Self {
        let cluster = status.clustered.then_some(status);
        let peers = dp.peers();
        let drops = drop_counts(dp.counters.snapshot(), status);
        let local_groups: Vec<String> = status.local_groups.iter().map(|g| g.to_string()).collect();
        let cluster = cluster.map(|c| ClusterStatus {
            name: c.name.clone(),
            endpoint: c.endpoint.map(|e| e.to_string()),
            block: c.block.map(|b| b.to_string()),
            claiming: c.claiming,
            members: c
                .members
                .iter()
                .map(|m| {
                    let stats = peers
                        .iter()
                        .find(|p| p.peer.public_key == m.record.public_key)
                        .map(|p| p.stats);
                    let (unicast, groups) = split_prefixes(&m.record.prefixes);
                    MemberStatus {
                        name: m.record.name.clone(),
                        public_key: m.record.public_key.to_base64(),
                        state: state_name(m.state).to_string(),
                        epoch: m.epoch,
                        incarnation: m.incarnation,
                        endpoint: m.record.endpoint.to_string(),
                        prefixes: unicast.iter().map(|p| p.to_string()).collect(),
                        groups: groups.iter().map(|g| g.to_string()).collect(),
                        latest_handshake_secs: stats
                            .and_then(|p| p.since_handshake)
                            .map(|d| d.as_secs()),
                        rx_bytes: stats.map_or(0, |p| p.rx_bytes),
                        tx_bytes: stats.map_or(0, |p| p.tx_bytes),
                        path_mtu: stats.and_then(|p| p.path_mtu),
                    }
                })
                .collect(),
            seeds: c.seeds.iter().map(SeedReport::from).collect(),
        });
        let multicast = MulticastStatus {
            local_groups,
            refused_reports: status.refused_reports,
            denied_members: status
                .denied_members
                .iter()
                .map(|(g, l)| DeniedMember {
                    group: g.to_string(),
                    listener: l.to_string(),
                })
                .collect(),
            groups: dp
                .group_counters()
                .into_iter()
                .map(|(g, counters)| GroupStatus {
                    group: g.to_string(),
                    counters,
                })
                .collect(),
        };
        Self {
            interface: dp.interface().to_string(),
            public_key: dp.public_key().to_base64(),
            key_age_secs: std::time::SystemTime::now()
                .duration_since(node.key_since)
                .unwrap_or_default()
                .as_secs(),
            key_generation: node.key_generation,
            listen_port: node.listen_port,
            addresses: status.addresses.iter().map(|a| a.to_string()).collect(),
            mtu: node.mtu,
            offload: dp.offload().to_string(),
            workers: {
                let counts = dp.worker_counts();
                WorkersStatus {
                    count: dp.workers(),
                    tun_queues: dp.tun_queues(),
                    multi_queue: dp.multi_queue(),
                    udp_sockets: dp.workers(),
                    tun_reads: counts.iter().map(|c| c.0).collect(),
                    udp_datagrams: counts.iter().map(|c| c.1).collect(),
                    peer_lock_waits: dp.lock_waits(),
                }
            },
            peers: peers.iter().map(PeerStatus::from).collect(),
            cluster,
            multicast,
            drops,
            l2: dp
                .l2_stats()
                .map(|(port, counters)| L2Status { port, counters }),
            pod_ports: dp.pod_stats(),
            kubernetes: None,
            policy: None,
        }
    }

    fn render(&self) -> String {
        let mut s = format!(
            "interface: {}\n  public key: {}\n  key age: {}s (rotations: {})\n  listening port: {}\n  addresses: {}\n  mtu: {}\n  offload: {}\n",
            self.interface,
            self.public_key,
            self.key_age_secs,
            self.key_generation,
            self.listen_port,
            self.addresses.join(", "),
            self.mtu,
            self.offload
        );
        s.push_str(&format!(
            "  workers: {} (TUN queues: {}{}, UDP sockets: {})\n",
            self.workers.count,
            self.workers.tun_queues,
            if self.workers.multi_queue {
                ", multi-queue"
            } else {
                ""
            },
            self.workers.udp_sockets
        ));
        if let Some(c) = &self.cluster {
            s.push_str(&format!(
                "  name: {}\n  advertised endpoint: {}\n",
                c.name,
                c.endpoint.as_deref().unwrap_or("(unknown)")
            ));
            if let Some(b) = &c.block {
                s.push_str(&format!("  block: {b}\n"));
            } else if c.claiming {
                s.push_str("  block: (claiming)\n");
            }
            if !c.seeds.is_empty() {
                s.push_str(&render_seeds(&c.seeds));
            }
            s.push_str(&format!("\nmembers: {}\n", c.members.len()));
            for m in &c.members {
                let hs = m
                    .latest_handshake_secs
                    .map_or("-".to_string(), |h| format!("{h}s"));
                s.push_str(&format!(
                    "  {:<16} {:<8} inc {:<3} {:<22} {:<20} handshake {:<6} rx {} tx {} path mtu {}\n    key {}\n",
                    m.name,
                    m.state,
                    m.incarnation,
                    m.endpoint,
                    m.prefixes.join(","),
                    hs,
                    m.rx_bytes,
                    m.tx_bytes,
                    mtu_text(m.path_mtu),
                    m.public_key
                ));
            }
            let statics: Vec<&PeerStatus> = self
                .peers
                .iter()
                .filter(|p| {
                    let key = p.peer.public_key.to_base64();
                    !c.members.iter().any(|m| m.public_key == key)
                })
                .collect();
            for p in statics {
                s.push_str(&p.render());
            }
        } else {
            for p in &self.peers {
                s.push_str(&p.render());
            }
        }
        let m = &self.multicast;
        if !m.local_groups.is_empty()
            || !m.groups.is_empty()
            || m.refused_reports > 0
            || !m.denied_members.is_empty()
        {
            s.push_str(&format!(
                "\nmulticast: local groups {}\n",
                if self.multicast.local_groups.is_empty() {
                    "(none)".to_string()
                } else {
                    self.multicast.local_groups.join(", ")
                }
            ));
            for g in &self.multicast.groups {
                let c = &g.counters;
                s.push_str(&format!(
                    "  {:<24} sent {} pkts {} B ({} copies), received {} pkts {} B, dropped {}\n",
                    g.group,
                    c.tx_packets,
                    c.tx_bytes,
                    c.tx_copies,
                    c.rx_packets,
                    c.rx_bytes,
                    c.drops
                ));
            }
            if m.refused_reports > 0 || !m.denied_members.is_empty() {
                let denied: Vec<String> = m
                    .denied_members
                    .iter()
                    .map(|d| format!("{} by {}", d.group, d.listener))
                    .collect();
                s.push_str(&format!(
                    "  reports refused by network policy: {}; memberships refused: {}\n",
                    m.refused_reports,
                    if denied.is_empty() {
                        "(none)".to_string()
                    } else {
                        denied.join(", ")
                    }
                ));
            }
        }
        let drops: Vec<String> = self
            .drops
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !drops.is_empty() {
            s.push_str(&format!("\ndrops: {}\n", drops.join(" ")));
        }
        if let Some(l2) = &self.l2 {
            let c = &l2.counters;
            s.push_str(&format!(
                "\nL2 port {}: {} frames read ({} ignored, {} malformed), {} written, {} write errors\n",
                l2.port, c.rx_frames, c.ignored_frames, c.malformed_frames, c.tx_frames, c.write_errors
            ));
        }
        if let Some(p) = &self.pod_ports {
            s.push_str(&format!(
                "\npod veths: {} (multicast ports): {} frames read ({} ignored, {} from other interfaces, {} with a foreign source, {} malformed), {} written, {} write errors\n",
                p.ports, p.rx_frames, p.ignored_frames, p.other_interfaces, p.foreign_source, p.malformed_frames, p.tx_frames, p.write_errors
            ));
        }
        if let Some(k) = &self.kubernetes {
            s.push_str(&format!(
                "\nkubernetes: node {}, API server {}{}, {} nodes, CNI config {}\n",
                k.node,
                k.api_server,
                k.last_error
                    .as_ref()
                    .filter(|_| k.api_server != "reachable")
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                k.nodes,
                k.cni_config.as_deref().unwrap_or("(not written yet)")
            ));
        }
        if let Some(p) = &self.policy {
            s.push_str(&crate::policy::render_status(p));
        }
        s
    }
}

/// `weftnet status`.
pub(crate) fn run(args: StatusArgs) -> Result<()> {
    let dir = state_dir_of(&args.state)?;
    let value = request(&dir, &Request::Status)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let report: StatusReport = serde_json::from_value(value)?;
        print!("{}", report.render());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
