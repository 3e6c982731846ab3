//! Command-line syntax (clap derive). Every `up` setting can also come from the
//! environment (`WEFTNET_<KEY>`) or the TOML config file; see [`crate::config`] for how
//! they are merged (flags win over the environment, which wins over the file).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// weftnet: an encrypted, multicast-capable full-mesh overlay network.
#[derive(Debug, Parser)]
#[command(name = "weftnet", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon in the foreground until SIGINT/SIGTERM.
    Up(Box<UpArgs>),
    /// Show this node and its peers (asks the running daemon).
    Status(StatusArgs),
    /// Print a new WireGuard private key (base64).
    Genkey(OutputArgs),
    /// Read a private key on stdin and print its public key.
    Pubkey,
    /// Print a new cluster secret (base64, 32 random bytes).
    Gensecret(OutputArgs),
    /// Announce a graceful leave to the mesh and stop the running daemon.
    Leave(StateDirArgs),
    /// Remove a dead or departed node's record from the whole mesh.
    Forget(ForgetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ForgetArgs {
    /// The node's name (as `weftnet status` shows it) or its public key.
    pub(crate) node: String,
    #[command(flatten)]
    pub(crate) state: StateDirArgs,
}

#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Write to this file (created with mode 0600) instead of stdout.
    #[arg(long, short)]
    pub(crate) output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct StateDirArgs {
    /// Directory holding the daemon's key and control socket.
    #[arg(long, env = "WEFTNET_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) state: StateDirArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// TOML config file (settings and [[peer]] tables).
    #[arg(long, short, env = "WEFTNET_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Name of the overlay interface [default: weft0].
    #[arg(long, env = "WEFTNET_INTERFACE", value_name = "NAME")]
    pub(crate) interface: Option<String>,
    /// This node's overlay address with the mesh prefix, e.g. 10.47.0.1/16; once per
    /// address family.
    #[arg(
        long,
        env = "WEFTNET_ADDRESS",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub(crate) address: Vec<String>,
    /// UDP port for WireGuard (and later gossip) traffic [default: 51820].
    #[arg(long, env = "WEFTNET_LISTEN_PORT", value_name = "PORT")]
    pub(crate) listen_port: Option<u16>,
    /// Interface MTU [default: underlay MTU minus 80].
    #[arg(long, env = "WEFTNET_MTU")]
    pub(crate) mtu: Option<u32>,
    #[command(flatten)]
    pub(crate) state: StateDirArgs,
    /// Private key file [default: STATE_DIR/private.key, created on first start].
    #[arg(long, env = "WEFTNET_PRIVATE_KEY_FILE", value_name = "FILE")]
    pub(crate) private_key_file: Option<PathBuf>,
    /// Cluster secret file (from `weftnet gensecret`); repeat to accept several during a
    /// rotation (the first one is used to send). Enables gossip.
    #[arg(
        long,
        env = "WEFTNET_SECRET_FILE",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub(crate) secret_file: Vec<PathBuf>,
    /// A member to join through (HOST:PORT); repeat for several seeds.
    #[arg(
        long,
        env = "WEFTNET_JOIN",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub(crate) join: Vec<String>,
    /// Underlay address (IP or IP:PORT) other nodes should use to reach this one
    /// [default: this host's address on the route to the seeds].
    #[arg(long, env = "WEFTNET_ADVERTISE_ADDRESS", value_name = "ADDR")]
    pub(crate) advertise_address: Option<String>,
    /// Claim an address block from this range by gossip instead of giving --address.
    #[arg(long, env = "WEFTNET_RANGE", value_name = "CIDR")]
    pub(crate) range: Option<String>,
    /// Prefix length of the block a node claims from --range [default: 24 for IPv4, 64 for IPv6].
    #[arg(long, env = "WEFTNET_BLOCK_PREFIX_LEN", value_name = "LEN")]
    pub(crate) block_prefix_len: Option<u8>,
    /// This node's name in the mesh [default: the host name].
    #[arg(long, env = "WEFTNET_NAME")]
    pub(crate) name: Option<String>,
    /// Multicast groups to carry across the mesh, as prefixes (repeatable)
    /// [default: all of 224.0.0.0/4 and ff00::/8 except link-local groups].
    #[arg(
        long,
        env = "WEFTNET_MULTICAST_ALLOW",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub(crate) multicast_allow: Vec<String>,
    /// Multicast groups never to carry (repeatable; the longest matching rule wins).
    #[arg(
        long,
        env = "WEFTNET_MULTICAST_DENY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub(crate) multicast_deny: Vec<String>,
    /// Also carry link-local groups (224.0.0.0/24, ff02::/16), e.g. mDNS 224.0.0.251.
    #[arg(long, env = "WEFTNET_MULTICAST_LINK_LOCAL")]
    pub(crate) multicast_link_local: bool,
    /// Carry IPv4 broadcast (255.255.255.255 and the overlay network's directed
    /// broadcast) to every node of the mesh.
    #[arg(long, env = "WEFTNET_BROADCAST")]
    pub(crate) broadcast: bool,
    /// Most multicast bytes per second this node sends into the mesh (0: no limit).
    #[arg(long, env = "WEFTNET_MULTICAST_RATE_LIMIT", value_name = "BYTES")]
    pub(crate) multicast_rate_limit: Option<u64>,
    /// Log filter, e.g. info, debug, weftnet=trace [default: info].
    #[arg(long, env = "WEFTNET_LOG", value_name = "FILTER")]
    pub(crate) log: Option<String>,
    /// This node's own address block (e.g. a pod CIDR), announced by gossip instead of
    /// claiming one from --range; at most one per address family.
    #[arg(
        long,
        env = "WEFTNET_BLOCK",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub(crate) block: Vec<String>,
    /// Linux bridge for pods or VMs (created if missing): the block's gateway address
    /// goes on it, and multicast crosses it through an L2 port [Kubernetes mode
    /// default: weftbr0].
    #[arg(long, env = "WEFTNET_BRIDGE", value_name = "NAME")]
    pub(crate) bridge: Option<String>,
    /// Masquerade traffic from --range to destinations outside it with the node's
    /// address (pod egress) [default: on in Kubernetes mode with --range, else off].
    #[arg(
        long,
        env = "WEFTNET_MASQUERADE",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub(crate) masquerade: Option<bool>,
    /// Serve GET /healthz and /readyz on this address, e.g. 0.0.0.0:9478.
    #[arg(long, env = "WEFTNET_HEALTH_LISTEN", value_name = "ADDR:PORT")]
    pub(crate) health_listen: Option<String>,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
}

/// Kubernetes mode (`--kubernetes`): the pod network of a cluster, run as a DaemonSet.
#[derive(Debug, Args)]
pub(crate) struct KubeArgs {
    /// Run as a Kubernetes node's pod network: read this Node's pod CIDR, seed gossip
    /// from the other Nodes, forget deleted Nodes, install the CNI plugin.
    #[arg(long, env = "WEFTNET_KUBERNETES")]
    pub(crate) kubernetes: bool,
    /// This node's Kubernetes Node name (DaemonSet: spec.nodeName through the downward
    /// API).
    #[arg(long, env = "WEFTNET_NODE_NAME", value_name = "NAME")]
    pub(crate) node_name: Option<String>,
    /// kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or the in-cluster
    /// service account].
    #[arg(long, env = "WEFTNET_KUBECONFIG", value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Where the CNI plugin binary is installed [default: /opt/cni/bin].
    #[arg(long, env = "WEFTNET_CNI_BIN_DIR", value_name = "DIR")]
    pub(crate) cni_bin_dir: Option<PathBuf>,
    /// Where the CNI network config is written [default: /etc/cni/net.d].
    #[arg(long, env = "WEFTNET_CNI_CONF_DIR", value_name = "DIR")]
    pub(crate) cni_conf_dir: Option<PathBuf>,
    /// Where the CNI plugin keeps pod address allocations, as a path on the node
    /// [default: /var/lib/cni/weftnet].
    #[arg(long, env = "WEFTNET_CNI_DATA_DIR", value_name = "DIR")]
    pub(crate) cni_data_dir: Option<PathBuf>,
}
