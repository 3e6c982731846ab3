//! The daemon's settings: the TOML file, `WEFTNET_*` environment variables and flags,
//! merged (flag > environment > file > default) and validated into a [`Config`].
//! Every validation error is one line that names the setting and the fix.

use crate::cli::UpArgs;
use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use weftnet_proto::keys::PublicKey;

pub(crate) const DEFAULT_INTERFACE: &str = "weft0";
pub(crate) const DEFAULT_PORT: u16 = 51820;
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/weftnet";
/// IPv6 (40) + UDP (8) + WireGuard data header and tag (32): the worst-case overhead.
pub(crate) const WIREGUARD_OVERHEAD: u32 = 80;
pub(crate) const MIN_MTU: u32 = 1280;

/// The state directory given, or the default.
pub(crate) fn state_dir_or_default(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// One value or a list, so `address = "10.47.0.1/16"` and a list both work.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    interface: Option<String>,
    address: Option<OneOrMany>,
    listen_port: Option<u16>,
    mtu: Option<u32>,
    state_dir: Option<PathBuf>,
    private_key_file: Option<PathBuf>,
    log: Option<String>,
    #[serde(default)]
    peer: Vec<FilePeer>,
    cluster: Option<FileCluster>,
    multicast: Option<FileMulticast>,
    block: Option<OneOrMany>,
    bridge: Option<String>,
    health_listen: Option<String>,
    masquerade: Option<bool>,
    kubernetes: Option<FileKube>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKube {
    enabled: Option<bool>,
    node_name: Option<String>,
    kubeconfig: Option<PathBuf>,
    cni_bin_dir: Option<PathBuf>,
    cni_conf_dir: Option<PathBuf>,
    cni_data_dir: Option<PathBuf>,
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
}

pub(crate) const DEFAULT_BRIDGE: &str = "weftbr0";
pub(crate) const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin";
pub(crate) const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
pub(crate) const DEFAULT_CNI_DATA_DIR: &str = "/var/lib/cni/weftnet";

fn kube_config(args: &UpArgs, file: Option<FileKube>) -> Result<Option<KubeConfig>> {
    let file = file.unwrap_or_default();
    if !args.kube.kubernetes && !file.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let node_name = args
        .kube
        .node_name
        .clone()
        .or(file.node_name)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| anyhow!("--kubernetes needs this node's Node name: give --node-name (in a DaemonSet, set NODE_NAME from fieldRef spec.nodeName and pass --node-name=$(NODE_NAME))"))?;
    Ok(Some(KubeConfig {
        node_name,
        kubeconfig: args.kube.kubeconfig.clone().or(file.kubeconfig),
        cni_bin_dir: args
            .kube
            .cni_bin_dir
            .clone()
            .or(file.cni_bin_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CNI_BIN_DIR)),
        cni_conf_dir: args
            .kube
            .cni_conf_dir
            .clone()
            .or(file.cni_conf_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CNI_CONF_DIR)),
        cni_data_dir: args
            .kube
            .cni_data_dir
            .clone()
            .or(file.cni_data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CNI_DATA_DIR)),
    }))
}

fn parse_block(text: &str) -> Result<IpNet> {
    let net = text.trim().parse::<IpNet>().map_err(|_| {
        anyhow!("invalid --block {text:?}: give this node's block as a prefix, e.g. 10.244.1.0/24")
    })?;
    let max = if net.addr().is_ipv4() { 30 } else { 126 };
    if net.prefix_len() > max || net.network().is_multicast() {
        bail!("invalid --block {net}: give a unicast prefix of length {max} or shorter, e.g. 10.244.1.0/24");
    }
    Ok(net.trunc())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMulticast {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    link_local: Option<bool>,
    rate_limit: Option<u64>,
    broadcast: Option<bool>,
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

fn multicast_config(args: &UpArgs, file: Option<FileMulticast>) -> Result<MulticastConfig> {
    let file = file.unwrap_or_default();
    let mut filter = weftnet_proto::multicast::GroupFilter::default();
    let parse = |text: &str, what: &str| -> Result<IpNet> {
        let net: IpNet = text.trim().parse().map_err(|_| {
            anyhow!("invalid --multicast-{what} {text:?}: give a multicast prefix such as 239.0.0.0/8 or ff05::/16")
        })?;
        if !net.network().is_multicast() {
            bail!("invalid --multicast-{what} {net}: not inside 224.0.0.0/4 or ff00::/8");
        }
        Ok(net)
    };
    let allow = if args.multicast_allow.is_empty() {
        file.allow.unwrap_or_default()
    } else {
        args.multicast_allow.clone()
    };
    let deny = if args.multicast_deny.is_empty() {
        file.deny.unwrap_or_default()
    } else {
        args.multicast_deny.clone()
    };
    if !allow.is_empty() {
        // An allow list replaces the default "everything".
        filter = weftnet_proto::multicast::GroupFilter::deny_all();
    }
    for a in &allow {
        filter.allow(parse(a, "allow")?);
    }
    for d in &deny {
        filter.deny(parse(d, "deny")?);
    }
    filter.set_link_local(args.multicast_link_local || file.link_local.unwrap_or(false));
    let rate_limit = args
        .multicast_rate_limit
        .or(file.rate_limit)
        .filter(|r| *r > 0);
    let broadcast = args.broadcast || file.broadcast.unwrap_or(false);
    Ok(MulticastConfig {
        filter,
        rate_limit,
        broadcast,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    secret_file: Option<OneOrMany>,
    join: Option<OneOrMany>,
    advertise_address: Option<String>,
    range: Option<String>,
    block_prefix_len: Option<u8>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeer {
    public_key: String,
    endpoint: Option<String>,
    #[serde(default)]
    allowed_ips: Vec<String>,
    persistent_keepalive: Option<u16>,
}

/// A static peer.
pub(crate) use crate::peer::Peer as PeerConfig;

/// Validated settings of `weftnet up`.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) interface: String,
    pub(crate) addresses: Vec<IpNet>,
    pub(crate) listen_port: u16,
    pub(crate) mtu: Option<u32>,
    pub(crate) state_dir: PathBuf,
    pub(crate) private_key_file: PathBuf,
    /// Whether the key file is the default one, which is created when missing.
    pub(crate) private_key_is_default: bool,
    pub(crate) log: String,
    pub(crate) peers: Vec<PeerConfig>,
    /// Gossip settings; `None` runs with static peers only.
    pub(crate) cluster: Option<ClusterConfig>,
    pub(crate) multicast: MulticastConfig,
    /// This node's own blocks (given, or a Node's pod CIDRs); at most one per family.
    pub(crate) blocks: Vec<IpNet>,
    /// The pods' bridge, with an L2 port for multicast.
    pub(crate) bridge: Option<String>,
    pub(crate) health_listen: Option<SocketAddr>,
    pub(crate) kube: Option<KubeConfig>,
    /// Masquerade egress from the range to outside it.
    pub(crate) masquerade: bool,
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
}

/// Longest node name gossip carries.
pub(crate) const MAX_NAME: usize = 64;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "weftnet".to_string())
}

fn parse_advertise(text: &str) -> Result<Advertise> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(Advertise {
            ip: sa.ip(),
            port: Some(sa.port()),
        });
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| Advertise { ip, port: None })
        .map_err(|_| {
            anyhow!("invalid --advertise-address {text:?}: give an IP address (192.0.2.7) or IP:PORT (192.0.2.7:51820)")
        })
}

fn parse_range(text: &str, block: Option<u8>) -> Result<(IpNet, u8)> {
    let range = text
        .trim()
        .parse::<IpNet>()
        .map_err(|_| anyhow!("invalid --range {text:?}: give a prefix such as 10.47.0.0/16"))?;
    let range = range.trunc();
    let (default, max) = if range.addr().is_ipv4() {
        (24, 30)
    } else {
        (64, 126)
    };
    let block = block.unwrap_or(default);
    if block <= range.prefix_len() || block > max {
        bail!(
            "invalid --block-prefix-len {block} for --range {range}: choose a length from {} to {max}",
            range.prefix_len() + 1
        );
    }
    Ok((range, block))
}

fn cluster_config(args: &UpArgs, file: Option<FileCluster>) -> Result<Option<ClusterConfig>> {
    let file = file.unwrap_or_default();
    let pick = |flag: &Vec<String>, file: Option<OneOrMany>| {
        if flag.is_empty() {
            file.map(OneOrMany::into_vec).unwrap_or_default()
        } else {
            flag.clone()
        }
    };
    let flag_secrets: Vec<String> = args
        .secret_file
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let secret_files: Vec<PathBuf> = pick(&flag_secrets, file.secret_file)
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let join = pick(&args.join, file.join);
    let advertise = args
        .advertise_address
        .clone()
        .or(file.advertise_address)
        .map(|a| parse_advertise(&a))
        .transpose()?;
    let range = args
        .range
        .clone()
        .or(file.range)
        .map(|r| parse_range(&r, args.block_prefix_len.or(file.block_prefix_len)))
        .transpose()?;
    let name = args.name.clone().or(file.name).unwrap_or_else(hostname);
    if secret_files.is_empty() {
        let needs = [
            (!join.is_empty(), "--join"),
            (range.is_some(), "--range"),
            (advertise.is_some(), "--advertise-address"),
        ];
        if let Some((_, what)) = needs.iter().find(|(used, _)| *used) {
            bail!("{what} needs the cluster secret: give --secret-file FILE (create one with `weftnet gensecret --output FILE`)");
        }
        return Ok(None);
    }
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        bail!("invalid --name {name:?}: use 1-{MAX_NAME} characters without spaces");
    }
    for seed in &join {
        if !seed.contains(':')
            || seed
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .is_none()
        {
            bail!("invalid --join {seed:?}: give HOST:PORT, e.g. 192.0.2.7:51820 or [2001:db8::7]:51820");
        }
    }
    Ok(Some(ClusterConfig {
        secret_files,
        join,
        advertise,
        range,
        name,
    }))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| format!(" (line {})", line_of(&text, s.start)))
            .unwrap_or_default();
        let msg = e.message().replace('\n', " ");
        let hint = if msg.contains("unknown field") {
            ": remove it or fix its spelling; see the config reference in README.md"
        } else {
            ": fix the file; see the config reference in README.md"
        };
        anyhow!("config file {}{at}: {msg}{hint}", path.display())
    })
}

pub(crate) fn parse_interface_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("invalid interface name {name:?}: use 1-15 characters from a-z, 0-9, '-', '_', '.'");
    }
    Ok(name.to_string())
}

fn parse_address(text: &str) -> Result<IpNet> {
    text.trim().parse::<IpNet>().map_err(|_| {
        anyhow!("invalid address {text:?}: give the overlay address with its mesh prefix length, e.g. 10.47.0.1/16 or fd47::1/64")
    })
}

fn parse_prefix(peer: usize, text: &str) -> Result<IpNet> {
    let t = text.trim();
    let net = match t.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match t.parse::<std::net::IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => bail!(
                "peer #{peer}: invalid allowed_ips entry {text:?}: use a prefix such as 10.47.9.0/24 or fd47::/64"
            ),
        },
    };
    Ok(net.trunc())
}

fn parse_endpoint(peer: usize, text: &str) -> Result<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| {
            anyhow!("peer #{peer}: invalid endpoint {text:?}: use HOST:PORT, e.g. 192.0.2.7:51820 or [2001:db8::7]:51820")
        })
}

fn parse_peer(index: usize, p: FilePeer) -> Result<PeerConfig> {
    let public_key = PublicKey::from_base64(&p.public_key).map_err(|e| {
        anyhow!("peer #{index}: invalid public_key ({e}): use the output of `weftnet pubkey` or `wg pubkey`")
    })?;
    let endpoint = p
        .endpoint
        .as_deref()
        .map(|e| parse_endpoint(index, e))
        .transpose()?;
    let allowed_ips = p
        .allowed_ips
        .iter()
        .map(|s| parse_prefix(index, s))
        .collect::<Result<Vec<_>>>()?;
    Ok(PeerConfig {
        public_key,
        endpoint,
        allowed_ips,
        persistent_keepalive: p.persistent_keepalive.filter(|k| *k > 0),
    })
}

impl Config {
    /// Merges flags (which clap already merged with the environment) over the file.
    pub(crate) fn load(args: &UpArgs) -> Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let interface = parse_interface_name(
            args.interface
                .as_deref()
                .or(file.interface.as_deref())
                .unwrap_or(DEFAULT_INTERFACE),
        )?;
        let address_texts = if args.address.is_empty() {
            file.address.map(OneOrMany::into_vec).unwrap_or_default()
        } else {
            args.address.clone()
        };
        let addresses = address_texts
            .iter()
            .map(|a| parse_address(a))
            .collect::<Result<Vec<_>>>()?;
        let cluster = cluster_config(args, file.cluster)?;
        let multicast = multicast_config(args, file.multicast)?;
        let range = cluster.as_ref().and_then(|c| c.range);
        let kube = kube_config(args, file.kubernetes)?;
        let mut cluster = cluster;
        if let (Some(k), Some(c)) = (&kube, &mut cluster) {
            // In a cluster, a node is known by its Node name.
            if args.name.is_none() {
                c.name = k.node_name.clone();
            }
        }
        if kube.is_some() && cluster.is_none() {
            bail!("--kubernetes needs the cluster secret: give --secret-file FILE (in a DaemonSet, mount the weftnet-secret Secret; create it with `weftnet gensecret`)");
        }
        let block_texts = if args.block.is_empty() {
            file.block.map(OneOrMany::into_vec).unwrap_or_default()
        } else {
            args.block.clone()
        };
        let blocks = block_texts
            .iter()
            .map(|b| parse_block(b))
            .collect::<Result<Vec<_>>>()?;
        if !blocks.is_empty() && cluster.is_none() {
            bail!("--block needs gossip to announce it: give --secret-file FILE (create one with `weftnet gensecret --output FILE`)");
        }
        for family in [true, false] {
            if blocks
                .iter()
                .filter(|b| b.addr().is_ipv4() == family)
                .count()
                > 1
            {
                bail!("more than one --block of the same family: give at most one IPv4 and one IPv6 block");
            }
        }
        if let Some((r, _)) = range {
            for b in &blocks {
                if b.addr().is_ipv4() == r.addr().is_ipv4() && !r.contains(b) {
                    bail!("--block {b} is outside --range {r}: give a block inside the range, or fix the range");
                }
            }
        }
        let bridge = args
            .bridge
            .clone()
            .or(file.bridge)
            .or_else(|| kube.as_ref().map(|_| DEFAULT_BRIDGE.to_string()))
            .map(|b| parse_interface_name(&b))
            .transpose()?;
        if bridge.is_some() && cluster.is_none() {
            bail!("--bridge needs gossip (pods get addresses from this node's block): give --secret-file FILE and --range or --block");
        }
        let health_listen = args
            .health_listen
            .clone()
            .or(file.health_listen)
            .map(|h| {
                h.parse::<SocketAddr>().map_err(|_| {
                    anyhow!("invalid --health-listen {h:?}: give ADDR:PORT, e.g. 0.0.0.0:9478 or 127.0.0.1:9478")
                })
            })
            .transpose()?;
        let masquerade = args
            .masquerade
            .or(file.masquerade)
            .unwrap_or(kube.is_some() && range.is_some());
        if masquerade && range.is_none() {
            bail!("--masquerade needs --range (the cluster's pod range), so that traffic between pods keeps its source: give --range or --masquerade=false");
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
        if addresses.iter().filter(|a| a.addr().is_ipv4()).count() > 1
            || addresses.iter().filter(|a| a.addr().is_ipv6()).count() > 1
        {
            bail!("more than one --address of the same family: give at most one IPv4 and one IPv6 address");
        }
        let listen_port = args
            .listen_port
            .or(file.listen_port)
            .unwrap_or(DEFAULT_PORT);
        if listen_port == 0 {
            bail!("invalid --listen-port 0: choose a fixed UDP port, e.g. 51820, so peers can reach this node");
        }
        let mtu = args.mtu.or(file.mtu);
        if let Some(m) = mtu {
            if !(MIN_MTU..=65535 - WIREGUARD_OVERHEAD).contains(&m) {
                bail!(
                    "invalid --mtu {m}: choose a value from {MIN_MTU} to {} (usually the underlay MTU minus {WIREGUARD_OVERHEAD})",
                    65535 - WIREGUARD_OVERHEAD
                );
            }
        }
        let state_dir = args
            .state
            .state_dir
            .clone()
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let explicit_key = args.private_key_file.clone().or(file.private_key_file);
        let private_key_is_default = explicit_key.is_none();
        let private_key_file = explicit_key.unwrap_or_else(|| state_dir.join("private.key"));
        let log = args
            .log
            .clone()
            .or(file.log)
            .unwrap_or_else(|| "info".to_string());
        let peers = file
            .peer
            .into_iter()
            .enumerate()
            .map(|(i, p)| parse_peer(i + 1, p))
            .collect::<Result<Vec<_>>>()?;
        let config = Self {
            interface,
            addresses,
            listen_port,
            mtu,
            state_dir,
            private_key_file,
            private_key_is_default,
            log,
            peers,
            cluster,
            multicast,
            blocks,
            bridge,
            health_listen,
            kube,
            masquerade,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Write;

    fn args(extra: &[&str], file: &str) -> (UpArgs, tempfile::NamedTempFile) {
        let mut f = tempfile::NamedTempFile::new().expect("tempfile");
        f.write_all(file.as_bytes()).expect("write");
        let path = f.path().to_str().expect("utf8").to_string();
        let mut argv = vec!["weftnet", "up", "--config", &path];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parses");
        match cli.command {
            crate::cli::Command::Up(a) => (*a, f),
            _ => panic!("not up"),
        }
    }

    const PEER: &str = "public_key = \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"";

    #[test]
    fn flags_win_over_file_and_defaults_apply() {
        let file = format!(
            "interface = \"wfile\"\naddress = \"10.47.0.1/16\"\nlisten_port = 5000\n[[peer]]\n{PEER}\nendpoint = \"192.0.2.7:51820\"\nallowed_ips = [\"10.47.9.1/24\", \"fd47::/64\"]\npersistent_keepalive = 25\n"
        );
        let (a, _f) = args(&["--listen-port", "6000"], &file);
        let c = Config::load(&a).expect("valid");
        assert_eq!(c.interface, "wfile");
        assert_eq!(c.listen_port, 6000);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(c.private_key_is_default);
        assert_eq!(c.peers.len(), 1);
        assert_eq!(
            c.peers[0].allowed_ips,
            vec![
                "10.47.9.0/24".parse::<IpNet>().expect("net"),
                "fd47::/64".parse().expect("net")
            ]
        );
        assert_eq!(c.peers[0].persistent_keepalive, Some(25));
    }

    fn error(extra: &[&str], file: &str) -> String {
        let (a, _f) = args(extra, file);
        let e = Config::load(&a).expect_err("must fail");
        let s = format!("{e:#}");
        assert!(!s.contains('\n'), "one line: {s}");
        s
    }

    #[test]
    fn cluster_settings_from_file_and_flags() {
        let file = "[cluster]\nsecret_file = \"/etc/weftnet/secret\"\njoin = [\"192.0.2.1:51820\"]\nrange = \"10.47.0.0/16\"\nname = \"a\"\n";
        let (a, _f) = args(
            &[
                "--join",
                "192.0.2.9:51820",
                "--advertise-address",
                "198.51.100.7",
            ],
            file,
        );
        let c = Config::load(&a).expect("valid");
        let cl = c.cluster.expect("cluster mode");
        assert_eq!(
            cl.join,
            vec!["192.0.2.9:51820".to_string()],
            "flags replace the file's list"
        );
        assert_eq!(cl.secret_files, vec![PathBuf::from("/etc/weftnet/secret")]);
        assert_eq!(cl.range, Some(("10.47.0.0/16".parse().expect("net"), 24)));
        assert_eq!(cl.name, "a");
        assert_eq!(
            cl.advertise.map(|a| (a.ip.to_string(), a.port)),
            Some(("198.51.100.7".into(), None))
        );
        assert!(c.addresses.is_empty(), "--range replaces --address");
        // Without gossip there is no cluster.
        let (a, _f) = args(&["--address", "10.47.0.1/16"], "");
        assert!(Config::load(&a).expect("valid").cluster.is_none());
    }

    #[test]
    fn cluster_errors_name_the_problem_and_the_fix() {
        assert!(error(
            &["--address", "10.47.0.1/16", "--join", "192.0.2.1:51820"],
            ""
        )
        .contains("needs the cluster secret"));
        assert!(error(&["--range", "10.47.0.0/16"], "").contains("needs the cluster secret"));
        let s = ["--secret-file", "/x"];
        assert!(
            error(&[&s[..], &["--range", "10.47.0.0/33"]].concat(), "").contains("invalid --range")
        );
        assert!(error(
            &[
                &s[..],
                &["--range", "10.47.0.0/16", "--block-prefix-len", "16"]
            ]
            .concat(),
            ""
        )
        .contains("invalid --block-prefix-len"));
        assert!(error(
            &[
                &s[..],
                &["--range", "10.47.0.0/16", "--address", "10.47.0.1/16"]
            ]
            .concat(),
            ""
        )
        .contains("same family"));
        assert!(error(
            &[&s[..], &["--address", "10.47.0.1/16", "--join", "nohost"]].concat(),
            ""
        )
        .contains("invalid --join"));
        assert!(error(
            &[
                &s[..],
                &["--address", "10.47.0.1/16", "--advertise-address", "x.y"]
            ]
            .concat(),
            ""
        )
        .contains("invalid --advertise-address"));
        assert!(error(&[], "[cluster]\nsecrets = \"x\"\n").contains("unknown field `secrets`"));
    }

    #[test]
    fn kubernetes_mode_defaults_and_file_keys() {
        let s = ["--secret-file", "/x"];
        let (a, _f) = args(
            &[
                &s[..],
                &[
                    "--kubernetes",
                    "--node-name",
                    "n1",
                    "--range",
                    "10.244.0.0/16",
                ],
            ]
            .concat(),
            "",
        );
        let c = Config::load(&a).expect("loads");
        let k = c.kube.expect("kube mode");
        assert_eq!(k.node_name, "n1");
        assert_eq!(k.cni_bin_dir, PathBuf::from(DEFAULT_CNI_BIN_DIR));
        assert_eq!(c.bridge.as_deref(), Some(DEFAULT_BRIDGE));
        assert!(c.masquerade, "masquerade defaults on with a range");
        assert_eq!(
            c.cluster.expect("cluster").name,
            "n1",
            "named after the Node"
        );
        let file = "health_listen = \"127.0.0.1:9478\"\nmasquerade = false\n[cluster]\nsecret_file = \"/x\"\nrange = \"10.244.0.0/16\"\n[kubernetes]\nenabled = true\nnode_name = \"n2\"\ncni_conf_dir = \"/tmp/net.d\"\n";
        let (a, _f) = args(&[], file);
        let c = Config::load(&a).expect("loads");
        assert_eq!(
            c.kube.expect("kube").cni_conf_dir,
            PathBuf::from("/tmp/net.d")
        );
        assert!(!c.masquerade);
        assert_eq!(
            c.health_listen,
            Some("127.0.0.1:9478".parse().expect("addr"))
        );
        // Without a range there is nothing to tell pod-to-pod traffic from egress.
        let (a, _f) = args(
            &[&s[..], &["--kubernetes", "--node-name", "n1"]].concat(),
            "",
        );
        assert!(!Config::load(&a).expect("loads").masquerade);
    }

    #[test]
    fn kubernetes_bridge_and_block_errors() {
        let s = ["--secret-file", "/x"];
        assert!(error(&["--kubernetes", "--node-name", "n1"], "").contains("--secret-file"));
        assert!(error(&[&s[..], &["--kubernetes"]].concat(), "").contains("--node-name"));
        assert!(error(&["--block", "10.244.1.0/24"], "").contains("--secret-file"));
        assert!(error(&[&s[..], &["--block", "10.244.1.0/33"]].concat(), "")
            .contains("invalid --block"));
        assert!(error(
            &[
                &s[..],
                &["--block", "10.244.1.0/24", "--block", "10.244.2.0/24"]
            ]
            .concat(),
            ""
        )
        .contains("more than one --block"));
        assert!(error(
            &[
                &s[..],
                &["--range", "10.47.0.0/16", "--block", "10.244.1.0/24"]
            ]
            .concat(),
            ""
        )
        .contains("outside --range"));
        assert!(error(&["--address", "10.47.0.1/16", "--bridge", "br0"], "")
            .contains("--bridge needs gossip"));
        assert!(error(
            &[&s[..], &["--address", "10.47.0.1/16", "--masquerade"]].concat(),
            ""
        )
        .contains("--masquerade needs --range"));
        assert!(error(
            &[
                &s[..],
                &["--range", "10.47.0.0/16", "--health-listen", "9478"]
            ]
            .concat(),
            ""
        )
        .contains("invalid --health-listen"));
    }

    #[test]
    fn errors_name_the_problem_and_the_fix() {
        assert!(error(&[], "adress = \"10.47.0.1/16\"").contains("unknown field `adress`"));
        assert!(error(&["--address", "10.47.0.300/16"], "").contains("invalid address"));
        assert!(error(&[], "").contains("--address"));
        assert!(error(
            &["--address", "10.47.0.1/16"],
            "[[peer]]\npublic_key = \"abc\"\n"
        )
        .contains("invalid public_key"));
        assert!(error(
            &["--address", "10.47.0.1/16"],
            &format!("[[peer]]\n{PEER}\nallowed_ips = [\"10.47.0.0/33\"]\n")
        )
        .contains("invalid allowed_ips"));
        assert!(error(
            &[
                "--address",
                "10.47.0.1/16",
                "--interface",
                "this-name-is-too-long"
            ],
            ""
        )
        .contains("invalid interface name"));
        assert!(error(&["--address", "10.47.0.1/16", "--mtu", "100"], "").contains("invalid --mtu"));
        assert!(error(
            &["--address", "10.47.0.1/16"],
            &format!("[[peer]]\n{PEER}\n[[peer]]\n{PEER}\n")
        )
        .contains("listed twice"));
    }
}
