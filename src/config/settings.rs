//! The settings of `weftnet up`, each declared once. A group is one struct that clap
//! reads from flags and `WEFTNET_*` variables (clap puts a flag over its variable) and
//! serde reads from the TOML file (snake_case keys, unknown keys refused). The file's
//! top level is [`Settings`]; `[cluster]`, `[multicast]` and `[kubernetes]` are tables
//! of it, and `[[peer]]` exists only in the file. [`Layer::over`] stacks the flags and
//! environment over the file, field by field; `super::Config::resolve` validates.

use anyhow::{anyhow, Context};
use clap::Args;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

/// One layer of settings over a lower one.
pub(crate) trait Layer {
    /// `self` where it is set, else `lower`.
    fn over(self, lower: Self) -> Self;
}

/// A value the upper layer sets wins whole: a list from the flags replaces the file's
/// list, it does not extend it.
impl<T> Layer for Option<T> {
    fn over(self, lower: Self) -> Self {
        self.or(lower)
    }
}

/// A switch (`--broadcast`, `--kubernetes`, `--multicast-link-local`) is on when any
/// layer turns it on: a flag has no way to say "off".
impl Layer for bool {
    fn over(self, lower: Self) -> Self {
        self || lower
    }
}

/// Declares a settings group and its [`Layer`] impl, so that no field can be left out of
/// the merge. Each field is an `Option` (unset in this layer), a switch or a group.
macro_rules! settings_group {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $fty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $fty, )*
        }

        impl Layer for $name {
            fn over(self, lower: Self) -> Self {
                Self {
                    $( $field: Layer::over(self.$field, lower.$field), )*
                }
            }
        }
    };
}

settings_group! {
    /// This node and its interface (the file's top level), with the other groups.
    #[derive(Debug, Clone, Default, Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Settings {
        /// Name of the overlay interface [default: weft0].
        #[arg(long, env = "WEFTNET_INTERFACE", value_name = "NAME")]
        pub(crate) interface: Option<String>,
        /// This node's overlay address with the mesh prefix, e.g. 10.47.0.1/16; once per
        /// address family.
        #[arg(long, env = "WEFTNET_ADDRESS", value_name = "CIDR", value_delimiter = ',')]
        #[serde(default, deserialize_with = "one_or_many")]
        pub(crate) address: Option<Vec<String>>,
        /// UDP port for WireGuard (and later gossip) traffic [default: 51820].
        #[arg(long, env = "WEFTNET_LISTEN_PORT", value_name = "PORT")]
        pub(crate) listen_port: Option<u16>,
        /// Interface MTU [default: underlay MTU minus 80].
        #[arg(long, env = "WEFTNET_MTU")]
        pub(crate) mtu: Option<u32>,
        /// Data-plane workers: threads that each serve 4 TUN queues and one UDP
        /// socket [default: the number of cores].
        #[arg(long, env = "WEFTNET_WORKERS", value_name = "N")]
        pub(crate) workers: Option<usize>,
        /// Directory holding the daemon's key and control socket.
        #[arg(long, env = "WEFTNET_STATE_DIR", value_name = "DIR")]
        pub(crate) state_dir: Option<PathBuf>,
        /// Private key file [default: STATE_DIR/private.key, created on first start].
        #[arg(long, env = "WEFTNET_PRIVATE_KEY_FILE", value_name = "FILE")]
        pub(crate) private_key_file: Option<PathBuf>,
        // `[cluster]`
        #[command(flatten)]
        #[serde(default)]
        pub(crate) cluster: ClusterSettings,
        // `[multicast]`
        #[command(flatten)]
        #[serde(default)]
        pub(crate) multicast: MulticastSettings,
        /// Log filter, e.g. info, debug, weftnet=trace [default: info].
        #[arg(long, env = "WEFTNET_LOG", value_name = "FILTER")]
        pub(crate) log: Option<String>,
        /// Log line format: text or json (one JSON object per line) [default: text].
        #[arg(long, env = "WEFTNET_LOG_FORMAT", value_name = "FORMAT")]
        pub(crate) log_format: Option<String>,
        /// This node's own address block (e.g. a pod CIDR), announced by gossip instead of
        /// claiming one from --range; at most one per address family.
        #[arg(long, env = "WEFTNET_BLOCK", value_name = "CIDR", value_delimiter = ',')]
        #[serde(default, deserialize_with = "one_or_many")]
        pub(crate) block: Option<Vec<String>>,
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
        /// Enforce Kubernetes NetworkPolicies on this node's pods with nftables
        /// [default: on in Kubernetes mode].
        #[arg(
            long,
            env = "WEFTNET_NETWORK_POLICY",
            value_name = "BOOL",
            num_args = 0..=1,
            default_missing_value = "true"
        )]
        pub(crate) network_policy: Option<bool>,
        /// Serve GET /healthz and /readyz on this address, e.g. 0.0.0.0:9478.
        #[arg(long, env = "WEFTNET_HEALTH_LISTEN", value_name = "ADDR:PORT")]
        pub(crate) health_listen: Option<String>,
        /// Serve Prometheus metrics (GET /metrics) on this address, e.g. 0.0.0.0:9479; it
        /// may be the --health-listen address.
        #[arg(long, env = "WEFTNET_METRICS", value_name = "ADDR:PORT")]
        pub(crate) metrics: Option<String>,
        // `[kubernetes]`
        #[command(flatten)]
        #[serde(default)]
        pub(crate) kubernetes: KubeSettings,
        // `[[peer]]`: static peers come from the file only.
        #[arg(skip)]
        pub(crate) peer: Option<Vec<PeerSettings>>,
        // `[[policy]]`: standalone traffic policy, from the file only.
        #[arg(skip)]
        pub(crate) policy: Option<Vec<crate::policy::standalone::PolicySettings>>,
    }
}

settings_group! {
    /// Gossip (`[cluster]`): a secret turns it on.
    #[derive(Debug, Clone, Default, Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct ClusterSettings {
        /// Cluster secret file (from `weftnet gensecret`); repeat to accept several during a
        /// rotation (the first one is used to send). Enables gossip.
        #[arg(long, env = "WEFTNET_SECRET_FILE", value_name = "FILE", value_delimiter = ',')]
        #[serde(default, deserialize_with = "one_or_many")]
        pub(crate) secret_file: Option<Vec<PathBuf>>,
        /// A member to join through (HOST:PORT); repeat for several seeds.
        #[arg(long, env = "WEFTNET_JOIN", value_name = "HOST:PORT", value_delimiter = ',')]
        #[serde(default, deserialize_with = "one_or_many")]
        pub(crate) join: Option<Vec<String>>,
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
        /// Cluster CA certificate (ca.crt from `weftnet ca init`): only members with a
        /// certificate of this CA join, with the blocks it allows. Needs --cert-file,
        /// except with --kubernetes (members outside the cluster need a certificate).
        #[arg(long, env = "WEFTNET_CA_FILE", value_name = "FILE")]
        pub(crate) ca_file: Option<PathBuf>,
        /// This node's certificate from `weftnet ca sign`. Needs --ca-file.
        #[arg(long, env = "WEFTNET_CERT_FILE", value_name = "FILE")]
        pub(crate) cert_file: Option<PathBuf>,
        /// A host outside a Kubernetes cluster: the cluster's pod range. Members without
        /// a certificate (the cluster's nodes) may announce blocks inside it; needs
        /// --ca-file and --cert-file.
        #[arg(long, env = "WEFTNET_POD_RANGE", value_name = "CIDR")]
        pub(crate) pod_range: Option<String>,
        /// Rotate this node's key on its own when it is this old, e.g. 30d, 12h, 90s
        /// (as `weftnet rotate-key` does) [default: never].
        #[arg(long, env = "WEFTNET_KEY_LIFETIME", value_name = "DURATION")]
        pub(crate) key_lifetime: Option<String>,
    }
}

settings_group! {
    /// Which multicast groups cross the mesh, and how fast (`[multicast]`).
    #[derive(Debug, Clone, Default, Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct MulticastSettings {
        /// Multicast groups to carry across the mesh, as prefixes (repeatable)
        /// [default: all of 224.0.0.0/4 and ff00::/8 except link-local groups].
        #[arg(
            long = "multicast-allow",
            env = "WEFTNET_MULTICAST_ALLOW",
            value_name = "CIDR",
            value_delimiter = ','
        )]
        pub(crate) allow: Option<Vec<String>>,
        /// Multicast groups never to carry (repeatable; the longest matching rule wins).
        #[arg(
            long = "multicast-deny",
            env = "WEFTNET_MULTICAST_DENY",
            value_name = "CIDR",
            value_delimiter = ','
        )]
        pub(crate) deny: Option<Vec<String>>,
        /// Also carry link-local groups (224.0.0.0/24, ff02::/16), e.g. mDNS 224.0.0.251.
        #[arg(long = "multicast-link-local", env = "WEFTNET_MULTICAST_LINK_LOCAL")]
        #[serde(default)]
        pub(crate) link_local: bool,
        /// Carry IPv4 broadcast (255.255.255.255 and the overlay network's directed
        /// broadcast) to every node of the mesh.
        #[arg(long, env = "WEFTNET_BROADCAST")]
        #[serde(default)]
        pub(crate) broadcast: bool,
        /// Most multicast bytes per second this node sends into the mesh (0: no limit).
        #[arg(
            long = "multicast-rate-limit",
            env = "WEFTNET_MULTICAST_RATE_LIMIT",
            value_name = "BYTES"
        )]
        pub(crate) rate_limit: Option<u64>,
    }
}

settings_group! {
    /// Kubernetes mode (`--kubernetes`, `[kubernetes]`): the pod network of a cluster, run
    /// as a DaemonSet.
    #[derive(Debug, Clone, Default, Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct KubeSettings {
        /// Run as a Kubernetes node's pod network: read this Node's pod CIDR, seed gossip
        /// from the other Nodes, forget deleted Nodes, install the CNI plugin.
        #[arg(long = "kubernetes", env = "WEFTNET_KUBERNETES")]
        #[serde(default)]
        pub(crate) enabled: bool,
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
        /// Chained mode: run beside another CNI (the AWS VPC CNI) instead of as the pod
        /// network: pods keep their addresses, weftnet encrypts pod traffic between
        /// nodes (needs --kubernetes).
        #[arg(long = "chained", env = "WEFTNET_CHAINED")]
        #[serde(default)]
        pub(crate) chained: bool,
        /// Chained mode: while a peer's tunnel is not up, drop traffic to its pods
        /// instead of letting it take the other CNI's path in clear.
        #[arg(long = "require-encryption", env = "WEFTNET_REQUIRE_ENCRYPTION")]
        #[serde(default)]
        pub(crate) require_encryption: bool,
    }
}

/// A `[[peer]]` table as written (no flags: a static peer needs several settings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeerSettings {
    pub(crate) public_key: String,
    pub(crate) endpoint: Option<String>,
    #[serde(default)]
    pub(crate) allowed_ips: Vec<String>,
    pub(crate) persistent_keepalive: Option<u16>,
}

/// One value or a list, so `address = "10.47.0.1/16"` and a list both work.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

fn one_or_many<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(v) => vec![v],
        OneOrMany::Many(v) => v,
    }))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

/// Reads the config file; an error names the file, the line and the fix.
pub(crate) fn read_file(path: &Path) -> anyhow::Result<Settings> {
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
