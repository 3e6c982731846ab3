//! The daemon's settings, resolved: the layers of [`settings`] (the TOML file, then
//! `WEFTNET_*` environment variables, then flags) are stacked, defaults applied and
//! everything validated into a [`Config`]. Every validation error is one line that names
//! the setting and the fix.

mod parse;
pub(crate) mod settings;
#[cfg(test)]
pub(crate) mod tests;

use crate::cli::{StateDirArgs, UpArgs};
use anyhow::{anyhow, bail, Result};
use ipnet::IpNet;
use parse::*;
use settings::{ClusterSettings, KubeSettings, Layer, MulticastSettings, Settings};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

pub(crate) use parse::{parse_interface_name, parse_range};

pub(crate) const DEFAULT_INTERFACE: &str = "weft0";
pub(crate) const DEFAULT_PORT: u16 = 51820;
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/weftnet";
/// IPv6 (40) + UDP (8) + WireGuard data header and tag (32): the worst-case overhead.
pub(crate) const WIREGUARD_OVERHEAD: u32 = 80;
pub(crate) const MIN_MTU: u32 = 1280;
/// Most data-plane workers (`--workers`); the kernel allows 256 TUN queues.
pub(crate) const MAX_WORKERS: usize = 64;
pub(crate) const DEFAULT_BRIDGE: &str = "weftbr0";
pub(crate) const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin";
pub(crate) const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
pub(crate) const DEFAULT_CNI_DATA_DIR: &str = "/var/lib/cni/weftnet";
/// Longest node name gossip carries.
pub(crate) const MAX_NAME: usize = 64;

/// The state directory given, or the default.
pub(crate) fn state_dir_or_default(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The state directory of `status`, `leave` and `forget`: `--state-dir` (or
/// `WEFTNET_STATE_DIR`), else the config file's `state_dir`, else the default.
pub(crate) fn state_dir_of(args: &StateDirArgs) -> Result<PathBuf> {
    let file = match &args.config {
        Some(path) => settings::read_file(path)?.state_dir,
        None => None,
    };
    Ok(state_dir_or_default(args.state_dir.clone().over(file)))
}

/// The settings of `args`: its flags and environment over its config file, not yet
/// validated.
pub(crate) fn stacked(args: &UpArgs) -> Result<Settings> {
    let file = match &args.config {
        Some(path) => settings::read_file(path)?,
        None => Settings::default(),
    };
    Ok(args.settings.clone().over(file))
}

/// Settings of Kubernetes mode.
#[derive(Debug, Clone)]
pub(crate) struct KubeConfig {
    /// This node's Node object.
    pub(crate) node_name: String,
    /// kubeconfig file; `None` infers ($KUBECONFIG, ~/.kube/config, in-cluster).
    pub(crate) kubeconfig: Option<PathBuf>,
    pub(crate) cni_bin_dir: PathBuf,
    pub(crate) cni_conf_dir: PathBuf,
    /// The CNI plugin's allocation directory, as a path on the node.
    pub(crate) cni_data_dir: PathBuf,
    /// Chained mode (beside another CNI), with or without `--require-encryption`.
    pub(crate) chained: Option<Chained>,
}

/// Chained mode's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chained {
    /// Drop traffic to a peer's pods while its tunnel is not up.
    pub(crate) require_encryption: bool,
}

/// Which multicast groups cross the mesh, and how fast.
#[derive(Debug, Clone)]
pub(crate) struct MulticastConfig {
    pub(crate) filter: weftnet_proto::multicast::GroupFilter,
    /// Bytes per second; `None` is unlimited (also applies to broadcast).
    pub(crate) rate_limit: Option<u64>,
    /// Whether IPv4 broadcast is flooded to every node.
    pub(crate) broadcast: bool,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Example port of `--health-listen` in error messages.
const HEALTH_PORT: u16 = 9478;
/// Example port of `--metrics` in error messages.
const METRICS_PORT: u16 = 9479;

/// A static peer of the config file.
pub(crate) use weftnet_proto::node::Peer as PeerConfig;

/// Validated settings of `weftnet up`.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) interface: String,
    pub(crate) addresses: Vec<IpNet>,
    pub(crate) listen_port: u16,
    pub(crate) mtu: Option<u32>,
    /// Data-plane workers (TUN queues, UDP sockets).
    pub(crate) workers: usize,
    pub(crate) state_dir: PathBuf,
    pub(crate) private_key_file: PathBuf,
    /// Whether the key file is the default one, which is created when missing.
    pub(crate) private_key_is_default: bool,
    pub(crate) log: String,
    pub(crate) log_format: LogFormat,
    pub(crate) peers: Vec<PeerConfig>,
    /// Gossip settings; `None` runs with static peers only.
    pub(crate) cluster: Option<ClusterConfig>,
    pub(crate) multicast: MulticastConfig,
    /// This node's own blocks (given, or a Node's pod CIDRs); at most one per family.
    pub(crate) blocks: Vec<IpNet>,
    /// The pods' bridge, with an L2 port for multicast.
    pub(crate) bridge: Option<String>,
    pub(crate) health_listen: Option<SocketAddr>,
    /// Where Prometheus metrics are served (may equal `health_listen`).
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) kube: Option<KubeConfig>,
    /// Masquerade egress from the range to outside it.
    pub(crate) masquerade: bool,
    /// Enforce NetworkPolicies (Kubernetes mode).
    pub(crate) network_policy: bool,
    /// Standalone policy (`[[policy]]`): rules per local prefix.
    pub(crate) policies: Vec<crate::policy::nft::Target>,
}

/// Where other nodes reach this one, when set by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Advertise {
    pub(crate) ip: std::net::IpAddr,
    pub(crate) port: Option<u16>,
}

/// Settings of the gossip control plane.
#[derive(Debug, Clone)]
pub(crate) struct ClusterConfig {
    pub(crate) secret_files: Vec<PathBuf>,
    /// Seeds as written (resolved at each join attempt, so DNS names may move).
    pub(crate) join: Vec<String>,
    pub(crate) advertise: Option<Advertise>,
    /// Range to claim a block from, with the block's prefix length.
    pub(crate) range: Option<(IpNet, u8)>,
    pub(crate) name: String,
    /// The cluster CA certificate and this node's certificate (in Kubernetes mode the
    /// node's own certificate is optional).
    pub(crate) ca: Option<(PathBuf, Option<PathBuf>)>,
    /// A host outside a Kubernetes cluster: the cluster's pod range, with the block
    /// length, where members without a certificate may announce blocks.
    pub(crate) pod_range: Option<(IpNet, u8)>,
    /// Rotate the node's key on its own when it is this old.
    pub(crate) key_lifetime: Option<std::time::Duration>,
}

/// Parses each text of an optional list.
fn parse_all<T>(texts: Option<Vec<String>>, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    texts.unwrap_or_default().iter().map(|t| parse(t)).collect()
}

/// `[cluster]`: `None` without a secret (static peers only).
fn cluster_config(s: ClusterSettings) -> Result<Option<ClusterConfig>> {
    let secret_files = s.secret_file.unwrap_or_default();
    let join = s.join.unwrap_or_default();
    let advertise = s
        .advertise_address
        .as_deref()
        .map(parse_advertise)
        .transpose()?;
    let range = s
        .range
        .as_deref()
        .map(|r| parse_range(r, s.block_prefix_len))
        .transpose()?;
    let name = s.name.unwrap_or_else(hostname);
    let ca = match (s.ca_file, s.cert_file) {
        (Some(ca), cert) => Some((ca, cert)),
        (None, None) => None,
        (None, Some(_)) => bail!("--cert-file needs the cluster CA: give --ca-file FILE (the ca.crt of `weftnet ca init`)"),
    };
    let pod_range = s
        .pod_range
        .as_deref()
        .map(|r| parse_pod_range(r, s.block_prefix_len))
        .transpose()?;
    if pod_range.is_some() && !ca.as_ref().is_some_and(|(_, cert)| cert.is_some()) {
        bail!("--pod-range needs the cluster CA and this host's certificate: give --ca-file FILE and --cert-file FILE (the Kubernetes nodes admit a host outside the cluster only with a certificate)");
    }
    if secret_files.is_empty() {
        let needs = [
            (!join.is_empty(), "--join"),
            (range.is_some(), "--range"),
            (advertise.is_some(), "--advertise-address"),
            (ca.is_some(), "--ca-file"),
            (pod_range.is_some(), "--pod-range"),
            (s.key_lifetime.is_some(), "--key-lifetime"),
        ];
        if let Some((_, what)) = needs.iter().find(|(used, _)| *used) {
            bail!("{what} needs the cluster secret: give --secret-file FILE (create one with `weftnet gensecret --output FILE`)");
        }
        return Ok(None);
    }
    check_name(&name)?;
    for seed in &join {
        check_join(seed)?;
    }
    let key_lifetime = s
        .key_lifetime
        .as_deref()
        .map(crate::rotation::parse_lifetime)
        .transpose()?;
    if key_lifetime.is_some() && ca.as_ref().is_some_and(|(_, cert)| cert.is_some()) {
        bail!("--key-lifetime cannot be used with --ca-file: with a cluster CA a new key needs a certificate from the CA, which the node cannot sign itself; rotate by hand (new key, `weftnet ca sign`, restart)");
    }
    Ok(Some(ClusterConfig {
        secret_files,
        join,
        advertise,
        range,
        name,
        ca,
        pod_range,
        key_lifetime,
    }))
}

/// `--pod-range`: the cluster's pod range, with the block length of `--block-prefix-len`.
fn parse_pod_range(text: &str, block: Option<u8>) -> Result<(IpNet, u8)> {
    let range = text.trim().parse::<IpNet>().map_err(|_| {
        anyhow!("invalid --pod-range {text:?}: give the cluster's pod range, such as 10.244.0.0/16")
    })?;
    let range = range.trunc();
    let (default, max) = if range.addr().is_ipv4() {
        (24, 32)
    } else {
        (64, 128)
    };
    let block = block.unwrap_or(default);
    if block < range.prefix_len() || block > max {
        bail!(
            "invalid --block-prefix-len {block} for --pod-range {range}: give the cluster's block length, from {} to {max}",
            range.prefix_len()
        );
    }
    Ok((range, block))
}

/// `[multicast]`.
fn multicast_config(s: MulticastSettings) -> Result<MulticastConfig> {
    let allow = s.allow.unwrap_or_default();
    let mut filter = if allow.is_empty() {
        weftnet_proto::multicast::GroupFilter::default()
    } else {
        // An allow list replaces the default "everything".
        weftnet_proto::multicast::GroupFilter::deny_all()
    };
    for a in &allow {
        filter.allow(parse_multicast(a, "allow")?);
    }
    for d in s.deny.unwrap_or_default() {
        filter.deny(parse_multicast(&d, "deny")?);
    }
    filter.set_link_local(s.link_local);
    Ok(MulticastConfig {
        filter,
        rate_limit: s.rate_limit.filter(|r| *r > 0),
        broadcast: s.broadcast,
    })
}

/// `[kubernetes]`: `None` unless enabled.
fn kube_config(s: KubeSettings) -> Result<Option<KubeConfig>> {
    if !s.enabled {
        if s.chained || s.require_encryption {
            bail!("--chained and --require-encryption need --kubernetes (chained mode runs beside another CNI in a cluster): add --kubernetes");
        }
        return Ok(None);
    }
    if s.require_encryption && !s.chained {
        bail!("--require-encryption is for chained mode (as the pod network weftnet always encrypts): add --chained, or leave --require-encryption out");
    }
    let node_name = s
        .node_name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| anyhow!("--kubernetes needs this node's Node name: give --node-name (in a DaemonSet, set NODE_NAME from fieldRef spec.nodeName and pass --node-name=$(NODE_NAME))"))?;
    let dir = |d: Option<PathBuf>, default: &str| d.unwrap_or_else(|| PathBuf::from(default));
    Ok(Some(KubeConfig {
        node_name,
        kubeconfig: s.kubeconfig,
        cni_bin_dir: dir(s.cni_bin_dir, DEFAULT_CNI_BIN_DIR),
        cni_conf_dir: dir(s.cni_conf_dir, DEFAULT_CNI_CONF_DIR),
        cni_data_dir: dir(s.cni_data_dir, DEFAULT_CNI_DATA_DIR),
        chained: s.chained.then_some(Chained {
            require_encryption: s.require_encryption,
        }),
    }))
}

impl Config {
    /// Reads the config file (`--config`), puts the flags and environment over it and
    /// validates the result.
    pub(crate) fn load(args: &UpArgs) -> Result<Self> {
        Self::resolve(stacked(args)?)
    }

    /// Applies the defaults to stacked settings and validates them.
    pub(crate) fn resolve(s: Settings) -> Result<Self> {
        let interface = parse_interface_name(s.interface.as_deref().unwrap_or(DEFAULT_INTERFACE))?;
        let addresses = parse_all(s.address, parse_address)?;
        let named = s.cluster.name.is_some();
        let mut cluster = cluster_config(s.cluster)?;
        let multicast = multicast_config(s.multicast)?;
        let range = cluster.as_ref().and_then(|c| c.range);
        let kube = kube_config(s.kubernetes)?;
        if let (Some(k), Some(c), false) = (&kube, &mut cluster, named) {
            // In a cluster, a node is known by its Node name.
            c.name = k.node_name.clone();
        }
        if let (Some(c), None) = (&cluster, &kube) {
            if matches!(c.ca, Some((_, None))) {
                bail!("--ca-file needs this node's certificate: give --cert-file FILE (sign one with `weftnet ca sign`)");
            }
        }
        if kube.is_some() && cluster.as_ref().is_some_and(|c| c.pod_range.is_some()) {
            bail!("--pod-range is for a host outside the cluster; a Kubernetes node learns the pods from the API server: remove --pod-range");
        }
        if kube.is_some() && cluster.is_none() {
            bail!("--kubernetes needs the cluster secret: give --secret-file FILE (in a DaemonSet, mount the weftnet-secret Secret; create it with `weftnet gensecret`)");
        }
        let blocks = parse_all(s.block, parse_block)?;
        if !blocks.is_empty() && cluster.is_none() {
            bail!("--block needs gossip to announce it: give --secret-file FILE (create one with `weftnet gensecret --output FILE`)");
        }
        if more_than_one_per_family(&blocks) {
            bail!("more than one --block of the same family: give at most one IPv4 and one IPv6 block");
        }
        if let Some((r, _)) = range {
            for b in &blocks {
                if b.addr().is_ipv4() == r.addr().is_ipv4() && !r.contains(b) {
                    bail!("--block {b} is outside --range {r}: give a block inside the range, or fix the range");
                }
            }
        }
        let chained = kube.as_ref().is_some_and(|k| k.chained.is_some());
        if chained
            && (s.bridge.is_some()
                || range.is_some()
                || !blocks.is_empty()
                || !addresses.is_empty())
        {
            bail!("--chained keeps the other CNI's pod addresses: remove --bridge, --range, --block and --address");
        }
        let bridge = s
            .bridge
            .or_else(|| {
                kube.as_ref()
                    .filter(|_| !chained)
                    .map(|_| DEFAULT_BRIDGE.to_string())
            })
            .map(|b| parse_interface_name(&b))
            .transpose()?;
        if bridge.is_some() && cluster.is_none() {
            bail!("--bridge needs gossip (pods get addresses from this node's block): give --secret-file FILE and --range or --block");
        }
        let health_listen = s
            .health_listen
            .as_deref()
            .map(|t| parse_listen("--health-listen", HEALTH_PORT, t))
            .transpose()?;
        let metrics = s
            .metrics
            .as_deref()
            .map(|t| parse_listen("--metrics", METRICS_PORT, t))
            .transpose()?;
        let log_format = s
            .log_format
            .as_deref()
            .map(parse_log_format)
            .transpose()?
            .unwrap_or_default();
        let masquerade = s.masquerade.unwrap_or(kube.is_some() && range.is_some());
        if masquerade && range.is_none() {
            bail!("--masquerade needs --range (the cluster's pod range), so that traffic between pods keeps its source: give --range or --masquerade=false");
        }
        let network_policy = s.network_policy.unwrap_or(kube.is_some() && !chained);
        if network_policy && chained {
            bail!("--network-policy is not available with --chained yet (the other CNI's policy engine stays in charge): leave --network-policy out");
        }
        let policies = crate::policy::standalone::targets(s.policy.as_deref().unwrap_or_default())?;
        if !policies.is_empty() && kube.is_some() {
            bail!("[[policy]] is for standalone hosts; in Kubernetes mode use NetworkPolicies: remove the [[policy]] tables");
        }
        if network_policy && kube.is_none() {
            bail!("--network-policy needs --kubernetes (NetworkPolicies come from the API server): add --kubernetes, or leave --network-policy out");
        }
        if addresses.is_empty() && range.is_none() && blocks.is_empty() && kube.is_none() {
            bail!("no overlay address: give one with --address, e.g. --address 10.47.0.1/16 (or --range with --secret-file to claim a block by gossip)");
        }
        if let Some((r, _)) = range {
            if addresses
                .iter()
                .any(|a| a.addr().is_ipv4() == r.addr().is_ipv4())
            {
                bail!("--address and --range {r} are of the same family: give one or the other");
            }
        }
        if more_than_one_per_family(&addresses) {
            bail!("more than one --address of the same family: give at most one IPv4 and one IPv6 address");
        }
        let listen_port = s.listen_port.unwrap_or(DEFAULT_PORT);
        if listen_port == 0 {
            bail!("invalid --listen-port 0: choose a fixed UDP port, e.g. 51820, so peers can reach this node");
        }
        if let Some(m) = s.mtu {
            if !(MIN_MTU..=65535 - WIREGUARD_OVERHEAD).contains(&m) {
                bail!(
                    "invalid --mtu {m}: choose a value from {MIN_MTU} to {} (usually the underlay MTU minus {WIREGUARD_OVERHEAD})",
                    65535 - WIREGUARD_OVERHEAD
                );
            }
        }
        let workers = match s.workers {
            Some(n) if (1..=MAX_WORKERS).contains(&n) => n,
            Some(n) => bail!(
                "invalid --workers {n}: choose a value from 1 to {MAX_WORKERS} (usually the number of cores, the default)"
            ),
            None => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WORKERS),
        };
        let state_dir = state_dir_or_default(s.state_dir);
        let private_key_is_default = s.private_key_file.is_none();
        let private_key_file = s
            .private_key_file
            .unwrap_or_else(|| state_dir.join("private.key"));
        let peers = s
            .peer
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, p)| parse_peer(i + 1, p))
            .collect::<Result<Vec<_>>>()?;
        if !peers.is_empty() && cluster.as_ref().is_some_and(|c| c.key_lifetime.is_some()) {
            bail!("--key-lifetime cannot be used with [[peer]] entries: static peers name this node by its key on their side and cannot follow a rotation; remove the key lifetime or the static peers");
        }
        let config = Self {
            interface,
            addresses,
            listen_port,
            mtu: s.mtu,
            workers,
            state_dir,
            private_key_file,
            private_key_is_default,
            log: s.log.unwrap_or_else(|| "info".to_string()),
            log_format,
            peers,
            cluster,
            multicast,
            blocks,
            bridge,
            health_listen,
            metrics,
            kube,
            masquerade,
            network_policy,
            policies,
        };
        config.check_peers()?;
        Ok(config)
    }

    fn check_peers(&self) -> Result<()> {
        let mut keys = HashSet::new();
        let mut prefixes = HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if !keys.insert(p.public_key) {
                bail!(
                    "peer #{}: public_key {} is listed twice: remove the duplicate [[peer]]",
                    i + 1,
                    p.public_key
                );
            }
            for net in &p.allowed_ips {
                if !prefixes.insert(*net) {
                    bail!("peer #{}: allowed_ips {net} is given to two peers: a prefix belongs to one peer", i + 1);
                }
            }
        }
        Ok(())
    }
}

/// Whether `nets` holds two prefixes of one address family.
fn more_than_one_per_family(nets: &[IpNet]) -> bool {
    [true, false]
        .iter()
        .any(|&v4| nets.iter().filter(|n| n.addr().is_ipv4() == v4).count() > 1)
}
