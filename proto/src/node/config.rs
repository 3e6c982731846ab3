//! What the node reconciler is started with: its addresses, static peers, blocks or
//! range, bridge mode and group filter ([`NodeConfig`]) and, with a cluster secret,
//! the gossip identity, secrets, seeds and saved members ([`GossipSetup`]). `Debug`
//! never shows the secrets.

use super::PeerSpec;
use crate::cert::Certificate;
use crate::gossip::{GossipConfig, Handover};
use crate::keys::{PrivateKey, PublicKey};
use crate::multicast::GroupFilter;
use ipnet::IpNet;
use std::net::SocketAddr;
use zeroize::Zeroizing;

/// Gossip settings: present when the node has a cluster secret. `Debug` never shows
/// the secrets.
#[derive(Clone)]
pub struct GossipSetup {
    /// Protocol timers and limits.
    pub config: GossipConfig,
    /// Cluster secrets: the first seals, all are accepted. Zeroized when dropped (the
    /// node keeps only the derived keys).
    pub secrets: Zeroizing<Vec<[u8; 32]>>,
    /// This node's WireGuard private key: it signs the node's gossip entries and
    /// authenticates its datagrams (PROTOCOL.md §6.3, §6.5).
    pub identity: PrivateKey,
    /// This node's certificate from the cluster CA (required when `config.ca` is
    /// set; PROTOCOL.md §8).
    pub certificate: Option<Certificate>,
    /// After a key rotation: the old key's hand-over to this key, announced in the
    /// record so that peers move the node to the new key (PROTOCOL.md §6.13).
    pub handover: Option<Handover>,
    /// This node's name in the mesh.
    pub name: String,
    /// Where other nodes reach this one.
    pub endpoint: SocketAddr,
    /// Boot epoch, growing across restarts.
    pub epoch: u64,
    /// Seed of the protocol's randomness.
    pub rng_seed: u64,
    /// Seeds as written (`HOST:PORT`), looked up through [`super::Effect::Resolve`].
    pub seeds: Vec<String>,
    /// Members' endpoints saved by an earlier run ([`super::Effect::PersistMembers`]): joined
    /// at start beside the seeds, so a node rejoins after a restart without `--join`.
    pub known: Vec<SocketAddr>,
}

impl std::fmt::Debug for GossipSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipSetup")
            .field("config", &self.config)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("identity", &self.identity)
            .field("certificate", &self.certificate)
            .field("handover", &self.handover)
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("epoch", &self.epoch)
            .field("rng_seed", &self.rng_seed)
            .field("seeds", &self.seeds)
            .field("known", &self.known)
            .finish()
    }
}

/// What the node is configured with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's WireGuard public key.
    pub public_key: PublicKey,
    /// Addresses given for the overlay interface.
    pub addresses: Vec<IpNet>,
    /// Peers from the config file.
    pub static_peers: Vec<PeerSpec>,
    /// Blocks given with `--block` or by the Kubernetes Node.
    pub blocks: Vec<IpNet>,
    /// `--range` with the block length claimed from it.
    pub range: Option<(IpNet, u8)>,
    /// The block claimed by an earlier run, if saved.
    pub saved_block: Option<IpNet>,
    /// Bridge mode: block gateways go on the pods' bridge.
    pub bridge: bool,
    /// Which multicast groups local members may join.
    pub group_filter: GroupFilter,
    /// Gossip, if a cluster secret is given.
    pub gossip: Option<GossipSetup>,
}
