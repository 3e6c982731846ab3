//! Prometheus metrics (`--metrics ADDR`): `GET /metrics` in the Prometheus text
//! exposition format (version 0.0.4), encoded by `prometheus-client`. Nothing is
//! counted here: a custom [`Collector`] reads, at each scrape, what `weftnet status`
//! reads (the reconciler's status snapshot, the data plane's peers, drop and
//! multicast counters, the Kubernetes view), so the two always agree. The encoding is
//! a function of plain data ([`Snapshot`]), tested without a running node.
//!
//! Every metric is named `weftnet_*` with its unit in the name; the README lists
//! them. A number that cannot be known is left out, never faked: no member gauges
//! without gossip, no handshake age before the first handshake, no API server gauge
//! outside Kubernetes mode.

use crate::dataplane::{Dataplane, GroupCounters, PeerReport};
use crate::http::{Reply, Route};
use crate::kube::KubeView;
use hyper::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;
use weftnet_proto::gossip::MemberState;
use weftnet_proto::node::{state_name, Status};

/// The setting that asks for metrics, as error messages name it.
pub(crate) const FLAG: &str = "--metrics";

/// Every member state, in the order the `weftnet_members` series are written.
const STATES: [MemberState; 4] = [
    MemberState::Alive,
    MemberState::Suspect,
    MemberState::Dead,
    MemberState::Left,
];

/// Everything one scrape reports, read at once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// The reconciler's status (members, blocks, claiming, local groups).
    pub(crate) status: Status,
    /// The data plane's peers with their traffic.
    pub(crate) peers: Vec<PeerReport>,
    /// Drops by reason, as `weftnet status` shows them.
    pub(crate) drops: BTreeMap<String, u64>,
    /// Per-group multicast traffic.
    pub(crate) groups: Vec<(IpAddr, GroupCounters)>,
    pub(crate) dataplane_running: bool,
    /// The TUN offload path (`tso`, `vnet-hdr`, `off`).
    pub(crate) offload: &'static str,
    /// Per data-plane worker: TUN reads and UDP datagrams received (one entry per
    /// worker, TUN queue and UDP socket).
    pub(crate) workers: Vec<(u64, u64)>,
    /// Queues of the TUN, and whether it is multi-queue.
    pub(crate) tun_queues: usize,
    pub(crate) multi_queue: bool,
    /// Times a thread waited for a peer's session held by another thread.
    pub(crate) peer_lock_waits: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub(crate) start_time_seconds: f64,
    /// The node key's age in seconds, and its rotations so far.
    pub(crate) key_age_seconds: f64,
    pub(crate) key_generation: u64,
    /// Kubernetes mode only: whether the API server answers.
    pub(crate) kube_api_reachable: Option<bool>,
    /// NetworkPolicy enforcement, when on.
    pub(crate) policy: Option<crate::policy::PolicyStatus>,
    /// Chained mode only: the pod veths as multicast ports (`pod_ports` in status).
    pub(crate) pod_ports: Option<crate::dataplane::PodStats>,
}

/// Where a scrape reads from: the running daemon's shared state.
pub(crate) struct Sources {
    pub(crate) dp: Arc<Dataplane>,
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) kube: Option<watch::Receiver<KubeView>>,
    pub(crate) policy: Option<watch::Receiver<crate::policy::PolicyView>>,
    pub(crate) started: SystemTime,
    /// When the node's key was made, and its rotations so far.
    pub(crate) key: (SystemTime, u64),
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Sources {
    fn snapshot(&self) -> Snapshot {
        let status = self.status.borrow().clone();
        Snapshot {
            peers: self.dp.peers(),
            drops: crate::status::drop_counts(self.dp.counters.snapshot(), &status),
            groups: self.dp.group_counters(),
            dataplane_running: self.dp.running(),
            offload: self.dp.offload(),
            workers: self.dp.worker_counts(),
            tun_queues: self.dp.tun_queues(),
            multi_queue: self.dp.multi_queue(),
            peer_lock_waits: self.dp.lock_waits(),
            start_time_seconds: self
                .started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            key_age_seconds: SystemTime::now()
                .duration_since(self.key.0)
                .map_or(0.0, |d| d.as_secs_f64()),
            key_generation: self.key.1,
            kube_api_reachable: self.kube.as_ref().map(|k| k.borrow().api_reachable),
            policy: self.policy.as_ref().map(|p| p.borrow().status()),
            pod_ports: self.dp.pod_stats(),
            status,
        }
    }
}

/// Reads the sources at each scrape.
#[derive(Debug)]
struct Live(Sources);

impl Collector for Live {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode(&self.0.snapshot(), encoder)
    }
}

/// A labelled sample: label pairs and a value.
type Sample<V> = (Vec<(&'static str, String)>, V);

/// One family of counters; nothing is written when it has no samples.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<Sample<u64>>,
) -> std::fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One family of gauges (counts as integers, seconds as floats); nothing is written
/// when it has no samples.
fn gauges<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<Sample<V>>,
) -> std::fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One unlabelled gauge.
fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> std::fmt::Result {
    gauges(enc, name, help, vec![(Vec::new(), v)])
}

/// A yes/no gauge: 1 or 0.
fn flag(b: bool) -> u64 {
    u64::from(b)
}

/// A count as a gauge value.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Writes every metric of `s`. Counter names get `_total` from the encoder.
pub(crate) fn encode(s: &Snapshot, mut enc: DescriptorEncoder) -> std::fmt::Result {
    let enc = &mut enc;
    let st = &s.status;
    if st.clustered {
        let members = STATES
            .iter()
            .map(|state| {
                let n = st.members.iter().filter(|m| m.state == *state).count();
                (vec![("state", state_name(*state).to_string())], count(n))
            })
            .collect();
        gauges(
            enc,
            "weftnet_members",
            "Other nodes of the mesh by state, as this node sees them.",
            members,
        )?;
    }

    // Per peer, labelled by public key and, for a gossip member, its name.
    let labels: Vec<Vec<(&'static str, String)>> = s
        .peers
        .iter()
        .map(|p| {
            let mut l = vec![("public_key", p.peer.public_key.to_base64())];
            if let Some(m) = st
                .members
                .iter()
                .find(|m| m.record.public_key == p.peer.public_key)
            {
                l.push(("name", m.record.name.clone()));
            }
            l
        })
        .collect();
    let per_peer = |f: fn(&PeerReport) -> u64| -> Vec<Sample<u64>> {
        s.peers
            .iter()
            .zip(&labels)
            .map(|(p, l)| (l.clone(), f(p)))
            .collect()
    };
    counters(
        enc,
        "weftnet_peer_rx_bytes",
        "Plaintext bytes received from the peer.",
        per_peer(|p| p.stats.rx_bytes),
    )?;
    counters(
        enc,
        "weftnet_peer_tx_bytes",
        "Plaintext bytes sent to the peer.",
        per_peer(|p| p.stats.tx_bytes),
    )?;
    counters(
        enc,
        "weftnet_peer_rx_packets",
        "Packets received from the peer.",
        per_peer(|p| p.stats.rx_packets),
    )?;
    counters(
        enc,
        "weftnet_peer_tx_packets",
        "Packets sent to the peer.",
        per_peer(|p| p.stats.tx_packets),
    )?;
    gauges(
        enc,
        "weftnet_peer_path_mtu_bytes",
        "Inner MTU of the path to the peer, found by probing (absent until the peer answered a probe).",
        s.peers
            .iter()
            .zip(&labels)
            .filter_map(|(p, l)| p.stats.path_mtu.map(|m| (l.clone(), i64::from(m))))
            .collect(),
    )?;
    gauges(
        enc,
        "weftnet_peer_handshake_age_seconds",
        "Seconds since the last completed handshake with the peer (absent before the first).",
        s.peers
            .iter()
            .zip(&labels)
            .filter_map(|(p, l)| {
                p.stats
                    .since_handshake
                    .map(|d| (l.clone(), d.as_secs_f64()))
            })
            .collect(),
    )?;

    counters(
        enc,
        "weftnet_drops",
        "Dropped packets and rejected datagrams by reason (the drops of weftnet status).",
        s.drops
            .iter()
            .map(|(k, v)| (vec![("reason", k.clone())], *v))
            .collect(),
    )?;

    let per_group = |f: fn(&GroupCounters) -> u64| -> Vec<Sample<u64>> {
        s.groups
            .iter()
            .map(|(g, c)| (vec![("group", g.to_string())], f(c)))
            .collect()
    };
    counters(
        enc,
        "weftnet_multicast_tx_packets",
        "Multicast packets of the group sent into the mesh (one per packet, not per copy).",
        per_group(|c| c.tx_packets),
    )?;
    counters(
        enc,
        "weftnet_multicast_tx_bytes",
        "Multicast bytes of the group sent into the mesh.",
        per_group(|c| c.tx_bytes),
    )?;
    counters(
        enc,
        "weftnet_multicast_tx_copies",
        "Encrypted copies of the group's packets sent (one per subscribed node).",
        per_group(|c| c.tx_copies),
    )?;
    counters(
        enc,
        "weftnet_multicast_rx_packets",
        "Multicast packets of the group received from the mesh.",
        per_group(|c| c.rx_packets),
    )?;
    counters(
        enc,
        "weftnet_multicast_rx_bytes",
        "Multicast bytes of the group received from the mesh.",
        per_group(|c| c.rx_bytes),
    )?;
    counters(
        enc,
        "weftnet_multicast_drops",
        "Multicast packets of the group dropped (filtered or rate limited).",
        per_group(|c| c.drops),
    )?;
    gauge(
        enc,
        "weftnet_multicast_local_groups",
        "Multicast groups with a member on this node that may receive them (announced).",
        count(st.local_groups.len()),
    )?;
    counters(
        enc,
        "weftnet_multicast_reports_refused",
        "IGMP/MLD report records refused by NetworkPolicy: joins of a group the listener may not receive.",
        vec![(Vec::new(), st.refused_reports)],
    )?;
    gauge(
        enc,
        "weftnet_multicast_denied_members",
        "Memberships snooped but refused by NetworkPolicy (group, listener).",
        count(st.denied_members.len()),
    )?;

    gauge(
        enc,
        "weftnet_blocks",
        "Address blocks this node holds.",
        count(st.blocks.len()),
    )?;
    gauge(
        enc,
        "weftnet_claiming",
        "1 while the node is still choosing its block from --range, else 0.",
        flag(st.claiming),
    )?;
    gauge(
        enc,
        "weftnet_dataplane_running",
        "1 while the data plane threads run, 0 once one has died or they were stopped.",
        flag(s.dataplane_running),
    )?;
    gauges(
        enc,
        "weftnet_tun_offload",
        "1 for the TUN offload path in use: tso (segmentation offload), vnet-hdr (headers only) or off.",
        vec![(vec![("path", s.offload.to_string())], 1i64)],
    )?;
    gauge(
        enc,
        "weftnet_dataplane_workers",
        "Data-plane workers: threads that each read their TUN queues and receive on one UDP socket.",
        count(s.workers.len()),
    )?;
    gauge(
        enc,
        "weftnet_tun_queues",
        "Queues of the TUN device (4 per worker on a multi-queue device).",
        count(s.tun_queues),
    )?;
    gauge(
        enc,
        "weftnet_tun_multi_queue",
        "1 when the TUN device is multi-queue (IFF_MULTI_QUEUE), 0 for one queue.",
        flag(s.multi_queue),
    )?;
    let per_worker = |f: fn(&(u64, u64)) -> u64| -> Vec<Sample<u64>> {
        s.workers
            .iter()
            .enumerate()
            .map(|(i, w)| (vec![("worker", i.to_string())], f(w)))
            .collect()
    };
    counters(
        enc,
        "weftnet_worker_tun_reads",
        "Reads from the worker's TUN queue (a packet, or a TCP super-packet with offloads).",
        per_worker(|w| w.0),
    )?;
    counters(
        enc,
        "weftnet_worker_udp_datagrams",
        "Datagrams received on the worker's UDP socket.",
        per_worker(|w| w.1),
    )?;
    counters(
        enc,
        "weftnet_session_lock_waits",
        "Times a data-plane thread waited for a peer's WireGuard session held by another thread (boringtun's Tunn takes &mut for both directions).",
        vec![(Vec::new(), s.peer_lock_waits)],
    )?;
    gauge(
        enc,
        "weftnet_start_time_seconds",
        "When the daemon started, in seconds since the Unix epoch.",
        s.start_time_seconds,
    )?;
    gauge(
        enc,
        "weftnet_key_age_seconds",
        "Age of this node's key (since it was made or last rotated).",
        s.key_age_seconds,
    )?;
    gauge(
        enc,
        "weftnet_key_generation",
        "Rotations of this node's key so far (weftnet rotate-key, --key-lifetime).",
        s.key_generation,
    )?;
    if let Some(up) = s.kube_api_reachable {
        gauge(
            enc,
            "weftnet_kubernetes_api_reachable",
            "1 while the Kubernetes API server answers, else 0.",
            flag(up),
        )?;
    }
    if let Some(p) = &s.policy {
        policy_metrics(enc, p)?;
    }
    if let Some(p) = &s.pod_ports {
        pod_port_metrics(enc, p)?;
    }
    Ok(())
}

/// Chained mode: the pod veths as multicast ports, the counters of `pod_ports` in
/// `weftnet status`.
fn pod_port_metrics(
    enc: &mut DescriptorEncoder,
    p: &crate::dataplane::PodStats,
) -> std::fmt::Result {
    gauge(
        enc,
        "weftnet_pod_ports",
        "Chained mode: pod veths known as multicast ports (from the CNI plugin's records).",
        p.ports,
    )?;
    let one = |v: u64| vec![(Vec::new(), v)];
    counters(
        enc,
        "weftnet_pod_port_rx_frames",
        "Chained mode: frames to a multicast MAC read on the node (any interface).",
        one(p.rx_frames),
    )?;
    counters(
        enc,
        "weftnet_pod_port_ignored_frames",
        "Chained mode: frames read that are not IP multicast (or too big for the buffer).",
        one(p.ignored_frames),
    )?;
    counters(
        enc,
        "weftnet_pod_port_other_interface_packets",
        "Chained mode: IP multicast read from interfaces that are not a pod's veth (ignored).",
        one(p.other_interfaces),
    )?;
    counters(
        enc,
        "weftnet_pod_port_foreign_source_packets",
        "Chained mode: packets from a pod veth whose source is not that veth's pod (dropped).",
        one(p.foreign_source),
    )?;
    counters(
        enc,
        "weftnet_pod_port_malformed_frames",
        "Chained mode: malformed frames from pod veths (dropped).",
        one(p.malformed_frames),
    )?;
    counters(
        enc,
        "weftnet_pod_port_tx_frames",
        "Chained mode: frames written onto pod veths (group traffic, queries).",
        one(p.tx_frames),
    )?;
    counters(
        enc,
        "weftnet_pod_port_write_errors",
        "Chained mode: frames that could not be written onto a pod veth.",
        one(p.write_errors),
    )
}

/// NetworkPolicy gauges and the drops per local pod and direction.
fn policy_metrics(
    enc: &mut DescriptorEncoder,
    p: &crate::policy::PolicyStatus,
) -> std::fmt::Result {
    gauge(
        enc,
        "weftnet_network_policies",
        "NetworkPolicies known (cluster-wide).",
        count(p.policies),
    )?;
    gauge(
        enc,
        "weftnet_network_policy_pods_selected",
        "This node's pods selected by at least one NetworkPolicy.",
        count(p.pods.iter().filter(|x| !x.policies.is_empty()).count()),
    )?;
    counters(
        enc,
        "weftnet_network_policy_rulesets_applied",
        "NetworkPolicy rulesets applied to nftables since start.",
        vec![(Vec::new(), p.applied)],
    )?;
    let mut drops = Vec::new();
    for x in p.pods.iter().filter(|x| !x.policies.is_empty()) {
        let (ns, name) = x.pod.split_once('/').unwrap_or(("", &x.pod));
        for (dir, n) in [("ingress", x.ingress_drops), ("egress", x.egress_drops)] {
            drops.push((
                vec![
                    ("namespace", ns.to_string()),
                    ("pod", name.to_string()),
                    ("direction", dir.to_string()),
                ],
                n,
            ));
        }
    }
    counters(
        enc,
        "weftnet_network_policy_drops",
        "Packets dropped because no NetworkPolicy rule allowed them, per local pod and direction.",
        drops,
    )
}

/// A registry whose one collector is `collector`.
fn registry(collector: impl Collector) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(collector));
    r
}

/// The registry in the Prometheus text format.
fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

/// `GET /metrics`, read from `sources` at each scrape.
pub(crate) fn route(sources: Sources) -> Route {
    let registry = registry(Live(sources));
    Route {
        path: "/metrics",
        answer: Box::new(move || match render(&registry) {
            Ok(body) => Reply {
                status: StatusCode::OK,
                content_type: prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                body,
            },
            Err(_) => Reply::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n".into(),
            ),
        }),
    }
}

#[cfg(test)]
mod tests;
