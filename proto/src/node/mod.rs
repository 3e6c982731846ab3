//! The node reconciler: every decision the daemon makes about this node, as one sans-IO
//! state machine. It owns the gossip state machine, this node's blocks, the local
//! multicast group table and querier, and what it believes the host has installed.
//!
//! Inputs come in with the current time: gossip datagrams
//! ([`Node::handle_datagram`]), snooped IGMP/MLD packets ([`Node::handle_snooped`]),
//! resolved seed addresses ([`Node::handle_resolved`]), Kubernetes Node changes
//! ([`Node::handle_node_seeds`], [`Node::handle_node_deleted`],
//! [`Node::handle_node_added`]), operator commands ([`Node::forget`],
//! [`Node::leave`]), refused changes ([`Node::handle_failed`]) and timeouts
//! ([`Node::handle_timeout`]). Outputs are pulled: [`Node::poll_effect`] (datagrams to
//! send, packets to inject, the wanted peer set, address and route changes, blocks to
//! persist, names to resolve, warnings for the operator), [`Node::poll_timeout`] (when
//! to call back, and why), and [`Node::poll_status`] (a new status snapshot, when it
//! changed).
//!
//! - [`authority`]: what a member may claim before its prefixes become routes.
//! - `evidence`: when each peer's tunnel last carried authenticated traffic; a
//!   member declared dead with recent traffic keeps its tunnel.
//! - [`diagnose`]: warnings for the operator (silent or unresolved seeds, strangers
//!   failing authentication, shared names) and the seeds' state for status.
//! - `config`: what the node is started with ([`NodeConfig`], [`GossipSetup`]).
//! - `effect`: what the node asks the daemon to do ([`Effect`]).
//! - [`blocks`]: this node's blocks, their addresses and the routes into the overlay.
//! - [`peers`]: the wanted peer set from static peers and live members.
//! - `process`: what the node does after every input.
//! - `reconcile`: the minimal, ordered diff between wanted and installed state.
//! - [`status`]: the snapshot for `weftnet status`, probes and Kubernetes.

pub mod authority;
pub mod blocks;
mod config;
pub mod diagnose;
mod effect;
mod evidence;
pub mod peers;
mod process;
mod reconcile;
pub mod status;
#[cfg(test)]
mod tests;

pub use authority::{Authority, Certificates, NodeFacts, Refusal};
pub use blocks::{gateway, routes_needed, Blocks, Link};
pub use config::{GossipSetup, NodeConfig};
pub use diagnose::{Notice, SeedSource, SeedState, SeedStatus};
pub use effect::Effect;
pub use evidence::LIFE_EVIDENCE;
pub use peers::{split_prefixes, Peer, PeerSpec, MAX_ANNOUNCED_GROUPS, MESH_KEEPALIVE};
pub use status::{state_name, Status};

use crate::gossip::{ConfigError, Gossip, Member, NodeRecord};
use crate::keys::PublicKey;
use crate::multicast::{
    packet_source, parse_control, GroupConfig, Listeners, Querier, ReceivePolicy,
};
use diagnose::Diagnostics;
use ipnet::IpNet;
use process::own_prefixes;
pub use reconcile::HostState;
use reconcile::Installed;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// How long a new node listens to the mesh before it claims a block, so that it
/// knows the blocks already taken.
pub const CLAIM_SETTLE: Duration = Duration::from_secs(2);
/// Longest wait for a first member before claiming anyway.
pub const CLAIM_MAX_WAIT: Duration = Duration::from_secs(5);
/// How long a graceful leave may take to spread.
pub const LEAVE_DRAIN: Duration = Duration::from_secs(2);
/// How often unresolved seeds are looked up again.
pub const SEED_RETRY: Duration = Duration::from_secs(5);
/// Most member endpoints saved for a restart (and joined at start).
pub const MAX_KNOWN: usize = 64;
/// When a refused change, or a claim in a full range, is tried again.
pub const RETRY: Duration = Duration::from_secs(5);
/// How often the member list is looked at for status when no event says it changed
/// (suspicion has no event).
pub const STATUS_REFRESH: Duration = Duration::from_secs(1);

/// The node reconciler (see the module documentation).
#[derive(Debug)]
pub struct Node {
    public_key: PublicKey,
    gossip: Option<Gossip>,
    /// Addresses given for the overlay interface.
    addresses: Vec<IpNet>,
    static_peers: Vec<PeerSpec>,
    blocks: Blocks,
    installed: Installed,
    /// The peer set last handed to the data plane.
    peers: Option<Vec<PeerSpec>>,
    seeds: Vec<String>,
    /// Members' endpoints from an earlier run, joined beside the seeds.
    known: Vec<SocketAddr>,
    /// The member endpoints last saved.
    persisted: Vec<SocketAddr>,
    next_seed_retry: Option<Instant>,
    first_member_at: Option<Instant>,
    /// Names of deleted Kubernetes Nodes: their members are no peers, and are
    /// forgotten mesh-wide once they are down.
    deleted_nodes: BTreeSet<String>,
    /// Overlaps of a fixed block with another node's prefix, already logged.
    conflicts_seen: HashSet<(PublicKey, IpNet)>,
    /// The seeds' state and the rate limits of the operator's warnings.
    diagnostics: Diagnostics,
    /// What members may claim.
    authority: Authority,
    /// Chained mode: the addresses of this node's pods (host prefixes), announced
    /// beside the node's own prefixes.
    local_pods: Vec<IpNet>,
    /// When each peer's tunnel last carried authenticated traffic.
    evidence: evidence::Evidence,
    /// When the evidence keeping a dead member's tunnel runs out.
    evidence_expiry: Option<Instant>,
    groups: Listeners,
    querier: Querier,
    errors: BTreeMap<&'static str, u64>,
    effects: VecDeque<Effect>,
    leave_deadline: Option<Instant>,
    done: bool,
    retry_at: Option<Instant>,
    status: Status,
    status_changed: bool,
    next_status: Option<Instant>,
}

impl Node {
    /// A node at start: its first effects (addresses, routes, peers, seeds to look
    /// up) are ready to be polled.
    pub fn new(config: NodeConfig, now: Instant) -> Result<Self, ConfigError> {
        Self::adopting(config, HostState::default(), now)
    }

    /// A node restarted on a host that keeps what an earlier run installed (`host`):
    /// its first effects change only what is stale or missing.
    pub fn adopting(
        config: NodeConfig,
        host: HostState,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let blocks = Blocks::new(
            config.blocks,
            config.range,
            config.saved_block,
            config.bridge,
        );
        let static_prefixes = config
            .static_peers
            .iter()
            .flat_map(|p| p.peer.allowed_ips.iter().copied())
            .collect();
        let mut checks = Authority::new(config.range, &config.addresses, static_prefixes);
        match config.gossip.as_ref().map(|g| &g.config) {
            Some(g) if g.ca.is_some() && g.ca_optional => {
                // Kubernetes with a CA, until told otherwise (`trust_pod_range`).
                checks.set_certificates(Certificates::Outsiders);
            }
            Some(g) if g.ca.is_some() => checks.require_certificates(),
            _ => {}
        }
        let mut seeds = Vec::new();
        let mut known = Vec::new();
        let gossip = match config.gossip {
            Some(g) => {
                seeds = g.seeds;
                known = g.known;
                known.truncate(MAX_KNOWN);
                let me = NodeRecord {
                    public_key: config.public_key,
                    name: g.name,
                    endpoint: g.endpoint,
                    prefixes: own_prefixes(&config.addresses, &blocks.held()),
                    version: 0,
                    certificate: g.certificate,
                    handover: g.handover,
                };
                Some(Gossip::new(
                    g.config,
                    &g.secrets,
                    &g.identity,
                    me,
                    g.epoch,
                    g.rng_seed,
                    now,
                )?)
            }
            None => None,
        };
        let diagnostics = Diagnostics::new(&seeds, &known);
        let mut node = Self {
            public_key: config.public_key,
            addresses: config.addresses,
            static_peers: config.static_peers,
            blocks,
            installed: Installed::adopt(host),
            peers: None,
            seeds,
            persisted: known.clone(),
            known,
            next_seed_retry: None,
            first_member_at: None,
            deleted_nodes: BTreeSet::new(),
            conflicts_seen: HashSet::new(),
            diagnostics,
            authority: checks,
            local_pods: Vec::new(),
            evidence: evidence::Evidence::default(),
            evidence_expiry: None,
            groups: Listeners::new(GroupConfig::default(), config.group_filter),
            querier: Querier::new(GroupConfig::default(), now),
            errors: BTreeMap::new(),
            effects: VecDeque::new(),
            leave_deadline: None,
            done: false,
            retry_at: None,
            status: Status::default(),
            status_changed: false,
            next_status: None,
            gossip,
        };
        if let Some(g) = &mut node.gossip {
            let wait = if node.seeds.is_empty() && node.known.is_empty() {
                Duration::ZERO
            } else {
                CLAIM_MAX_WAIT
            };
            node.blocks.schedule_claim(now + wait);
            if !node.known.is_empty() {
                tracing::info!(
                    members = node.known.len(),
                    "rejoining through the members known before the restart"
                );
                g.join(&node.known, now);
            }
            if !node.seeds.is_empty() {
                node.effects.push_back(Effect::Resolve(node.seeds.clone()));
            }
        }
        node.process(now, true);
        Ok(node)
    }

    /// A datagram whose first byte is the gossip type, from `from`.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        let Some(g) = &mut self.gossip else {
            return;
        };
        match g.handle_datagram(from, bytes, now) {
            Ok(()) => self.diagnostics.authenticated(from, now),
            Err(e) => {
                *self.errors.entry(e.as_str()).or_default() += 1;
                tracing::trace!(%from, error = e.as_str(), "dropped gossip datagram");
                let mut notices = Vec::new();
                self.diagnostics.failed(from, e, now, &mut notices);
                self.notify(notices);
            }
        }
        self.process(now, false);
    }

    /// The data plane saw authenticated traffic from these peers at `now` (reported
    /// about twice a second for the peers whose received-packet count grew). A member
    /// declared dead that is among them keeps its tunnel for [`LIFE_EVIDENCE`] and is
    /// asked directly to refute the verdict.
    pub fn handle_peer_activity(&mut self, peers: &[PublicKey], now: Instant) {
        let mut dead_with_traffic = false;
        for key in peers {
            self.evidence.seen(*key, now);
            if let Some(g) = &mut self.gossip {
                let dead = g
                    .member(key)
                    .is_some_and(|m| m.state == crate::gossip::MemberState::Dead);
                if dead {
                    g.ask_member(key, now);
                    dead_with_traffic = true;
                }
            }
        }
        self.process(now, dead_with_traffic);
    }

    /// An IGMP or MLD packet seen on the overlay (or the bridge). Its source address
    /// is the listener whose membership it states.
    pub fn handle_snooped(&mut self, packet: &[u8], now: Instant) {
        match (parse_control(packet), packet_source(packet)) {
            (Ok(control), Some(listener)) => self.groups.handle_report(now, listener, &control),
            (Err(e), _) => tracing::trace!(error = ?e, "unparseable IGMP/MLD packet"),
            (Ok(_), None) => {}
        }
        self.process(now, false);
    }

    /// NetworkPolicy: which groups each local address may receive (PROTOCOL.md §7.11
    /// rule 3). The announced groups follow at once, both ways, from the memberships
    /// already snooped.
    pub fn set_receive_policy(&mut self, policy: ReceivePolicy, now: Instant) {
        tracing::debug!(
            restricted = policy.restricted(),
            "multicast receive policy updated"
        );
        self.groups.set_policy(policy);
        self.process(now, false);
    }

    /// The seeds asked for by [`Effect::Resolve`], looked up: each as asked with its
    /// address, or `None` if it did not resolve (it is looked up again later).
    pub fn handle_resolved(&mut self, lookups: &[(String, Option<SocketAddr>)], now: Instant) {
        let seeds: Vec<SocketAddr> = lookups.iter().filter_map(|(_, a)| *a).collect();
        let unresolved = lookups.iter().any(|(_, a)| a.is_none());
        let mut notices = Vec::new();
        self.diagnostics.resolved(lookups, &mut notices);
        self.notify(notices);
        if let Some(g) = &mut self.gossip {
            // The known members stay seeds beside the resolved ones.
            let mut all = seeds.to_vec();
            all.extend(self.known.iter().filter(|k| !seeds.contains(k)));
            if !all.is_empty() {
                g.join(&all, now);
            }
        }
        self.next_seed_retry = unresolved.then(|| now + SEED_RETRY);
        self.process(now, false);
    }

    /// Kubernetes: the other Nodes' addresses; joins through those that are not live
    /// members' endpoints yet.
    pub fn handle_node_seeds(&mut self, seeds: &[SocketAddr], now: Instant) {
        if let Some(g) = &mut self.gossip {
            let known: HashSet<IpAddr> = g
                .members()
                .iter()
                .filter(|m| m.state.is_live())
                .map(|m| m.record.endpoint.ip())
                .collect();
            let me = g.me().endpoint;
            self.diagnostics.kubernetes(seeds, me);
            let new: Vec<SocketAddr> = seeds
                .iter()
                .filter(|s| !known.contains(&s.ip()) && **s != me)
                .copied()
                .collect();
            if !new.is_empty() {
                tracing::debug!(seeds = ?new, "joining through new Nodes");
                g.join(&new, now);
            }
        }
        self.process(now, false);
    }

    /// Kubernetes: a Node was deleted; its member is no peer any more, and is
    /// forgotten mesh-wide once it is down.
    pub fn handle_node_deleted(&mut self, name: &str, now: Instant) {
        self.deleted_nodes.insert(name.to_string());
        self.forget_deleted(now);
        self.process(now, true);
    }

    /// Kubernetes: the Nodes as the API server lists them (after the first full list,
    /// and whenever a Node's pod CIDRs or addresses change). From then on a member is
    /// admitted only as its Node allows ([`authority`]).
    pub fn handle_nodes(&mut self, nodes: Vec<NodeFacts>, now: Instant) {
        if !self.authority.knows_nodes() {
            tracing::info!(
                nodes = nodes.len(),
                "the Kubernetes Nodes are known: members are admitted as their Node allows"
            );
        }
        self.authority.set_nodes(nodes);
        self.process(now, true);
    }

    /// Chained mode: the addresses of this node's pods (as the CNI plugin recorded
    /// them), announced as host prefixes from now on.
    pub fn handle_local_pods(&mut self, pods: Vec<IpAddr>, now: Instant) {
        let mut prefixes: Vec<IpNet> = pods.into_iter().map(IpNet::from).collect();
        prefixes.sort();
        prefixes.dedup();
        if prefixes != self.local_pods {
            tracing::info!(pods = prefixes.len(), "announcing this node's pods");
            self.local_pods = prefixes;
            self.announce(now);
        }
        self.process(now, false);
    }

    /// A host outside a Kubernetes cluster (`--pod-range`, with the prefix length of a
    /// block): members without a certificate (the cluster's nodes) may announce
    /// blocks inside `range` that no live member's certificate overlaps; members with
    /// one, the blocks of their certificate ([`Certificates::PodRange`]).
    pub fn trust_pod_range(&mut self, range: IpNet, block_len: u8) {
        self.authority
            .set_certificates(Certificates::PodRange(range, block_len));
    }

    /// Chained mode, from start: no member's prefix is routed until the Nodes and the
    /// Pods are listed ([`Node::handle_pod_addresses`]), and then only its own Node's
    /// pods.
    pub fn await_pod_addresses(&mut self) {
        self.authority.set_pod_addresses(BTreeMap::new());
    }

    /// Chained mode: every Node's pod addresses, as the API server lists them. From
    /// then on a member may announce only its own Node's pods ([`authority`]).
    pub fn handle_pod_addresses(&mut self, pods: BTreeMap<String, BTreeSet<IpAddr>>, now: Instant) {
        self.authority.set_pod_addresses(pods);
        self.process(now, true);
    }

    /// Kubernetes: a Node (re)appeared; a member of that name is welcome again.
    pub fn handle_node_added(&mut self, name: &str, now: Instant) {
        let readmitted = self.deleted_nodes.remove(name);
        self.process(now, readmitted);
    }

    /// `weftnet forget NODE` (a name or a base64 key): removes a dead or departed
    /// member mesh-wide; returns its key, or why not. A name that several members
    /// share is refused: the key says which one.
    pub fn forget(&mut self, node: &str, now: Instant) -> Result<PublicKey, String> {
        let Some(g) = &mut self.gossip else {
            return Err(
                "this node runs without gossip (no --secret-file): there is no member to forget"
                    .into(),
            );
        };
        let members = g.members();
        let by_key = members
            .iter()
            .find(|m| m.record.public_key.to_base64() == node);
        let named: Vec<&Member> = members.iter().filter(|m| m.record.name == node).collect();
        let member = match (by_key, named.as_slice()) {
            (Some(m), _) => m,
            (None, [m]) => *m,
            (None, []) => {
                return Err(format!(
                    "no member named {node}: see `weftnet status` for names"
                ))
            }
            (None, several) => {
                let keys: Vec<String> = several
                    .iter()
                    .map(|m| format!("{} ({})", m.record.public_key, state_name(m.state)))
                    .collect();
                return Err(format!(
                    "the name {node} is ambiguous: {} members have it ({}); forget one by its key: \
                     `weftnet forget KEY`",
                    several.len(),
                    keys.join(", ")
                ));
            }
        };
        if member.state.is_live() {
            return Err(format!(
                "{node} is {}: only dead or departed nodes can be forgotten",
                state_name(member.state)
            ));
        }
        let key = member.record.public_key;
        g.forget(&key, now);
        self.process(now, false);
        Ok(key)
    }

    /// Leaves the mesh gracefully; [`Node::is_done`] turns true once the leave has
    /// spread (or after [`LEAVE_DRAIN`]).
    pub fn leave(&mut self, now: Instant) {
        match &mut self.gossip {
            Some(g) => {
                g.leave(now);
                self.leave_deadline = Some(now + LEAVE_DRAIN);
            }
            None => self.done = true,
        }
        self.process(now, false);
    }

    /// True once a leave is complete: the daemon may stop.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The host refused `effect` (an address or route addition); it is tried again
    /// after [`RETRY`].
    pub fn handle_failed(&mut self, effect: &Effect, now: Instant) {
        self.installed.failed(effect);
        self.retry_at = Some(now + RETRY);
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut force = false;
        if let Some(g) = &mut self.gossip {
            g.handle_timeout(now);
            self.groups.handle_timeout(now);
            if self.querier.handle_timeout(now) {
                // Ask the kernel to report its memberships on the overlay interface.
                self.effects.push_back(Effect::Inject(
                    self.querier.igmp_general_query(Ipv4Addr::UNSPECIFIED),
                ));
                self.effects.push_back(Effect::Inject(
                    self.querier
                        .mld_general_query(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
                ));
            }
        }
        if self.next_seed_retry.is_some_and(|at| now >= at) {
            self.next_seed_retry = None;
            self.effects.push_back(Effect::Resolve(self.seeds.clone()));
        }
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
            force = true;
        }
        if self.evidence_expiry.is_some_and(|at| now >= at) {
            self.evidence_expiry = None;
            force = true;
        }
        self.process(now, force);
    }

    /// The next thing to do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next, and why (for logs).
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        if self.done {
            return None;
        }
        let gossip = self.gossip.as_ref();
        [
            (gossip.and_then(Gossip::poll_timeout), "gossip"),
            (self.blocks.claim_due(), "block claim"),
            (gossip.and(self.groups.poll_timeout()), "group expiry"),
            (gossip.and(self.querier.poll_timeout()), "querier"),
            (self.next_seed_retry, "seed lookup"),
            (gossip.and(self.diagnostics.poll_timeout()), "seed check"),
            (self.leave_deadline, "leave"),
            (self.retry_at, "retry"),
            (self.evidence_expiry, "evidence of life"),
            (self.next_status, "status"),
        ]
        .into_iter()
        .filter_map(|(at, why)| at.map(|at| (at, why)))
        .min_by_key(|(at, _)| *at)
    }

    /// A new status snapshot, if it changed since the last call.
    pub fn poll_status(&mut self) -> Option<Status> {
        std::mem::take(&mut self.status_changed).then(|| self.status.clone())
    }

    /// The current status snapshot.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The routes the node believes are installed (for tests and debugging).
    pub fn installed_routes(&self) -> &BTreeMap<IpNet, Option<IpAddr>> {
        self.installed.routes()
    }
}
