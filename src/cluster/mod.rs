//! The gossip control plane's shell. It owns the sans-IO `weftnet_proto::gossip::Gossip`
//! state machine, feeds it the control datagrams the data plane receives and its
//! timeouts, sends what it returns through the shared UDP port, and applies the
//! membership view to this node: the data plane's peer set, routes into the overlay
//! interface, and, with `--range`, this node's own address block (claimed, persisted,
//! and re-claimed if another node wins it); blocks given with `--block` and bridge
//! mode's placement of block addresses are in [`blocks`].

mod blocks;
mod bootstrap;

pub(crate) use blocks::{claim_range, gateway, Placement};

pub(crate) use bootstrap::{detect_underlay_ip, next_epoch, read_secrets, resolve, saved_block};

use crate::dataplane::{ControlDatagram, Dataplane, PeerSpec};
use crate::netlink::Netlink;
use crate::peer::Peer;
use ipnet::IpNet;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use weftnet_proto::gossip::{Event, Gossip, Member, MemberState};
use weftnet_proto::ipam;
use weftnet_proto::keys::PublicKey;
use weftnet_proto::multicast::{parse_control, GroupConfig, GroupFilter, GroupTable, Querier};

/// Keepalive for gossiped peers, so that every pair keeps a live tunnel (and NAT
/// mappings stay open).
const MESH_KEEPALIVE: u16 = 25;
/// How long a new node listens to the mesh before it claims a block, so that it
/// knows the blocks already taken.
const CLAIM_SETTLE: Duration = Duration::from_secs(2);
/// Longest wait for a first member before claiming anyway.
const CLAIM_MAX_WAIT: Duration = Duration::from_secs(5);
/// How long a graceful leave may take to spread.
const LEAVE_DRAIN: Duration = Duration::from_secs(2);
/// How often unresolved seeds are looked up again.
const SEED_RETRY: Duration = Duration::from_secs(5);

/// Requests from the control socket.
pub(crate) enum Command {
    Leave(oneshot::Sender<()>),
    Forget {
        node: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Kubernetes: the other Nodes' addresses changed; join through them.
    Join(Vec<SocketAddr>),
    /// Kubernetes: a Node was deleted; drop and forget the member of that name.
    NodeDeleted(String),
    /// Kubernetes: a Node (re)appeared; a member of that name is welcome again.
    NodeAdded(String),
}

/// What `weftnet status` shows of the cluster.
#[derive(Default, Clone)]
pub(crate) struct ClusterView {
    pub(crate) name: String,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) members: Vec<Member>,
    pub(crate) block: Option<IpNet>,
    pub(crate) claiming: bool,
    pub(crate) errors: BTreeMap<&'static str, u64>,
    /// Multicast groups with a member on this node.
    pub(crate) local_groups: Vec<IpAddr>,
}

/// Block claiming with `--range`.
struct Claim {
    range: IpNet,
    block_len: u8,
    block: Option<IpNet>,
    /// When to claim if no block is held yet.
    due: Option<Instant>,
    state_file: PathBuf,
}

pub(crate) struct Cluster {
    gossip: Gossip,
    dp: Arc<Dataplane>,
    netlink: Arc<Netlink>,
    index: u32,
    static_peers: Vec<PeerSpec>,
    /// Addresses on the interface (given ones and, without a bridge, the blocks').
    addresses: Vec<IpNet>,
    /// Routes into the interface, with their preferred source.
    routes: BTreeMap<IpNet, Option<IpAddr>>,
    /// Blocks given with `--block`: announced, never re-claimed.
    fixed: Vec<IpNet>,
    /// Where block addresses go (TUN, or the bridge in bridge mode).
    placement: Placement,
    /// Overlaps of a fixed block with another node's prefix, already logged.
    conflicts_seen: HashSet<(PublicKey, IpNet)>,
    claim: Option<Claim>,
    seeds: Vec<String>,
    view: Arc<Mutex<ClusterView>>,
    first_member_at: Option<Instant>,
    next_view_refresh: Instant,
    /// This node's unicast prefixes as announced (given addresses, claimed block).
    own_prefixes: Vec<IpNet>,
    /// Names of deleted Kubernetes Nodes: their members are no peers, and are
    /// forgotten mesh-wide once they are down.
    deleted_nodes: BTreeSet<String>,
    /// Local multicast memberships snooped from the TUN, and the link's querier.
    groups: GroupTable,
    querier: Querier,
}

/// Most multicast groups one node announces: they ride in the record's prefix list
/// (as /32 or /128 multicast addresses, PROTOCOL.md §6), which holds 64 entries.
pub(crate) const MAX_ANNOUNCED_GROUPS: usize = 48;

/// Splits a record's prefixes into unicast prefixes (routes, allowed IPs) and the
/// multicast groups the node has members of (full-length multicast addresses). A
/// prefix that touches multicast space otherwise is neither, and is ignored.
pub(crate) fn split_prefixes(prefixes: &[IpNet]) -> (Vec<IpNet>, Vec<IpAddr>) {
    let mut unicast = Vec::new();
    let mut groups = Vec::new();
    for p in prefixes {
        let multicast_space = p.network().is_multicast() || p.broadcast().is_multicast();
        if !multicast_space {
            unicast.push(*p);
        } else if p.prefix_len() == p.max_prefix_len() {
            groups.push(p.addr());
        }
    }
    (unicast, groups)
}

/// How often the status view is refreshed when nothing changes.
const VIEW_REFRESH: Duration = Duration::from_secs(1);

impl Cluster {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        gossip: Gossip,
        dp: Arc<Dataplane>,
        netlink: Arc<Netlink>,
        index: u32,
        static_peers: Vec<PeerSpec>,
        addresses: Vec<IpNet>,
        range: Option<(IpNet, u8, Option<IpNet>, PathBuf)>,
        seeds: Vec<String>,
        view: Arc<Mutex<ClusterView>>,
        group_filter: GroupFilter,
    ) -> Self {
        let own_prefixes = gossip.me().prefixes.clone();
        let placement = Placement {
            tun: index,
            bridge: None,
            range: range.as_ref().map(|r| r.0),
        };
        let claim = range.map(|(range, block_len, block, state_file)| Claim {
            range,
            block_len,
            block,
            due: None,
            state_file,
        });
        Self {
            gossip,
            dp,
            netlink,
            index,
            static_peers,
            addresses,
            routes: BTreeMap::new(),
            fixed: Vec::new(),
            placement,
            conflicts_seen: HashSet::new(),
            claim,
            seeds,
            view,
            first_member_at: None,
            deleted_nodes: BTreeSet::new(),
            next_view_refresh: Instant::now(),
            own_prefixes,
            groups: GroupTable::new(GroupConfig::default(), group_filter),
            querier: Querier::new(GroupConfig::default(), Instant::now()),
        }
    }

    /// This node's blocks given with `--block` (already in its gossip record), and the
    /// bridge whose gateway addresses they get in bridge mode. A given block of the
    /// range's family replaces claiming.
    pub(crate) fn with_blocks(mut self, fixed: Vec<IpNet>, bridge: Option<u32>) -> Self {
        self.placement.bridge = bridge;
        if let Some(c) = &self.claim {
            if claim_range(Some((c.range, c.block_len)), &fixed).is_none() {
                self.claim = None;
            }
        }
        self.fixed = fixed;
        self
    }

    /// This node's blocks: the given ones and the claimed one.
    fn held_blocks(&self) -> Vec<IpNet> {
        let mut held = self.fixed.clone();
        held.extend(self.claim.as_ref().and_then(|c| c.block));
        held
    }

    /// Logs, once each, other nodes' prefixes that overlap a block given with --block.
    fn report_conflicts(&mut self, members: &[Member]) {
        let others = members.iter().filter(|m| m.state.is_live()).flat_map(|m| {
            split_prefixes(&m.record.prefixes)
                .0
                .into_iter()
                .map(move |p| (m.record.public_key, p))
        });
        for (key, prefix, block) in blocks::conflicts(&self.fixed, others) {
            if self.conflicts_seen.insert((key, prefix)) {
                tracing::error!(%block, other = %prefix, node = %key, "another node announces a prefix that overlaps this node's --block; it is not moved: give the nodes disjoint blocks");
            }
        }
    }

    /// Runs until a leave completes (command or shutdown) or the channels close.
    pub(crate) async fn run(
        mut self,
        mut datagrams: mpsc::Receiver<ControlDatagram>,
        mut snooped: mpsc::Receiver<Vec<u8>>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let now = Instant::now();
        let seeds = resolve(&self.seeds);
        let mut next_seed_retry = (seeds.len() < self.seeds.len()).then(|| now + SEED_RETRY);
        if !seeds.is_empty() {
            self.gossip.join(&seeds, now);
        }
        if let Some(c) = &mut self.claim {
            if c.block.is_none() {
                c.due = Some(if self.seeds.is_empty() {
                    now
                } else {
                    now + CLAIM_MAX_WAIT
                });
            }
        }
        self.apply(now).await;
        let mut leave_reply: Option<(oneshot::Sender<()>, Instant)> = None;
        loop {
            let mut deadline = self.gossip.poll_timeout();
            for extra in [
                self.claim.as_ref().and_then(|c| c.due),
                self.groups.poll_timeout(),
                self.querier.poll_timeout(),
                next_seed_retry,
                leave_reply.as_ref().map(|(_, at)| *at),
            ]
            .into_iter()
            .flatten()
            {
                deadline = Some(deadline.map_or(extra, |d| d.min(extra)));
            }
            let sleep = deadline.map(tokio::time::Instant::from_std);
            tokio::select! {
                got = datagrams.recv() => match got {
                    Some((from, bytes)) => {
                        if let Err(e) = self.gossip.handle_datagram(from, &bytes, Instant::now()) {
                            *self.view.lock().errors.entry(e.as_str()).or_default() += 1;
                            tracing::trace!(%from, error = e.as_str(), "dropped gossip datagram");
                        }
                    }
                    None => return,
                },
                packet = snooped.recv() => match packet {
                    Some(packet) => match parse_control(&packet) {
                        Ok(control) => self.groups.handle_report(Instant::now(), &control),
                        Err(e) => tracing::trace!(error = ?e, "unparseable IGMP/MLD packet"),
                    },
                    None => return,
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Leave(reply)) => {
                        self.gossip.leave(Instant::now());
                        leave_reply = Some((reply, Instant::now() + LEAVE_DRAIN));
                    }
                    Some(Command::Forget { node, reply }) => {
                        let _ = reply.send(self.forget(&node));
                    }
                    Some(Command::Join(seeds)) => self.join_new(&seeds, Instant::now()),
                    Some(Command::NodeDeleted(name)) => {
                        self.deleted_nodes.insert(name);
                        self.forget_deleted(Instant::now());
                        self.sync_peers(&self.gossip.members()).await;
                    }
                    Some(Command::NodeAdded(name)) => {
                        if self.deleted_nodes.remove(&name) {
                            self.sync_peers(&self.gossip.members()).await;
                        }
                    }
                    None => return,
                },
                _ = async {
                    match sleep {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let now = Instant::now();
            self.gossip.handle_timeout(now);
            self.groups.handle_timeout(now);
            if self.querier.handle_timeout(now) {
                // Ask the kernel to report its memberships on the overlay interface.
                self.dp.inject(
                    &self
                        .querier
                        .igmp_general_query(std::net::Ipv4Addr::UNSPECIFIED),
                );
                self.dp.inject(
                    &self
                        .querier
                        .mld_general_query(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
                );
            }
            if self.groups.take_changed() {
                while self.groups.poll_event().is_some() {}
                self.announce(now);
            }
            if next_seed_retry.is_some_and(|at| now >= at) {
                let seeds = resolve(&self.seeds);
                if !seeds.is_empty() {
                    self.gossip.join(&seeds, now);
                }
                next_seed_retry = (seeds.len() < self.seeds.len()).then(|| now + SEED_RETRY);
            }
            self.flush();
            self.apply(now).await;
            if let Some((_, at)) = &leave_reply {
                if now >= *at || self.gossip.poll_timeout().is_none() {
                    if let Some((reply, _)) = leave_reply.take() {
                        let _ = reply.send(());
                    }
                    return;
                }
            }
        }
    }

    /// Announces this node's unicast prefixes and multicast groups.
    fn announce(&mut self, now: Instant) {
        let mut prefixes = self.own_prefixes.clone();
        let groups = self.groups.groups();
        if groups.len() > MAX_ANNOUNCED_GROUPS {
            tracing::warn!(
                groups = groups.len(),
                max = MAX_ANNOUNCED_GROUPS,
                "more local multicast groups than a record carries; announcing the first ones"
            );
        }
        prefixes.extend(
            groups
                .into_iter()
                .take(MAX_ANNOUNCED_GROUPS)
                .map(IpNet::from),
        );
        if let Err(e) = self.gossip.update_record(|r| r.prefixes = prefixes, now) {
            tracing::error!(error = %e, "cannot announce this node's prefixes and groups");
        }
        self.flush();
    }

    /// Local multicast groups (snooped), for status.
    fn local_groups(&self) -> Vec<IpAddr> {
        self.groups.groups()
    }

    fn flush(&mut self) {
        while let Some((to, bytes)) = self.gossip.poll_transmit() {
            self.dp.send_control(&bytes, to);
        }
    }

    /// Joins through the addresses that are not live members' endpoints yet.
    fn join_new(&mut self, seeds: &[SocketAddr], now: Instant) {
        let known: HashSet<IpAddr> = self
            .gossip
            .members()
            .iter()
            .filter(|m| m.state.is_live())
            .map(|m| m.record.endpoint.ip())
            .collect();
        let new: Vec<SocketAddr> = seeds
            .iter()
            .filter(|s| !known.contains(&s.ip()) && **s != self.gossip.me().endpoint)
            .copied()
            .collect();
        if !new.is_empty() {
            tracing::debug!(seeds = ?new, "joining through new Nodes");
            self.gossip.join(&new, now);
            self.flush();
        }
    }

    /// Forgets the members of deleted Nodes that are down (a live one would refute
    /// the tombstone; it leaves by itself when it sees its Node deleted).
    fn forget_deleted(&mut self, now: Instant) {
        if self.deleted_nodes.is_empty() {
            return;
        }
        let keys: Vec<PublicKey> = self
            .gossip
            .members()
            .iter()
            .filter(|m| self.deleted_nodes.contains(&m.record.name) && !m.state.is_live())
            .map(|m| m.record.public_key)
            .collect();
        for key in keys {
            self.gossip.forget(&key, now);
        }
        self.flush();
    }

    fn forget(&mut self, node: &str) -> Result<String, String> {
        let members = self.gossip.members();
        let member = members
            .iter()
            .find(|m| m.record.name == node || m.record.public_key.to_base64() == node)
            .ok_or_else(|| format!("no member named {node}: see `weftnet status` for names"))?;
        if member.state.is_live() {
            return Err(format!(
                "{node} is {}: only dead or departed nodes can be forgotten",
                state_name(member.state)
            ));
        }
        let key = member.record.public_key;
        self.gossip.forget(&key, Instant::now());
        self.flush();
        Ok(key.to_base64())
    }

    /// Applies events and pending work: peers, routes, block claims.
    async fn apply(&mut self, now: Instant) {
        let mut changed = false;
        while let Some(event) = self.gossip.poll_event() {
            changed = true;
            match &event {
                Event::Up(r) => {
                    tracing::info!(name = %r.name, key = %r.public_key, endpoint = %r.endpoint, "member up")
                }
                Event::Updated(r) => {
                    tracing::debug!(name = %r.name, key = %r.public_key, "member updated")
                }
                Event::Down { public_key, state } => {
                    tracing::info!(key = %public_key, state = state_name(*state), "member down")
                }
                Event::Forgotten(k) => tracing::info!(key = %k, "member forgotten"),
            }
        }
        // The member list is O(n) to build: only when something changed, a claim is
        // pending, or once a second for the status view.
        let claim_pending = self
            .claim
            .as_ref()
            .is_some_and(|c| c.block.is_none() || changed);
        if !changed && !claim_pending && now < self.next_view_refresh {
            return;
        }
        self.next_view_refresh = now + VIEW_REFRESH;
        let members = self.gossip.members();
        if self.first_member_at.is_none() && members.iter().any(|m| m.state.is_live()) {
            self.first_member_at = Some(now);
            if let Some(c) = &mut self.claim {
                if c.block.is_none() {
                    c.due = Some(now + CLAIM_SETTLE);
                }
            }
        }
        if changed {
            self.forget_deleted(now);
        }
        if changed && !self.fixed.is_empty() {
            self.report_conflicts(&members);
        }
        let claimed = self.claim_if_needed(now, &members).await;
        if changed || claimed {
            self.sync_peers(&members).await;
        }
        let mut view = self.view.lock();
        view.members = members;
        view.block = self
            .claim
            .as_ref()
            .and_then(|c| c.block)
            .or_else(|| self.fixed.first().copied());
        view.claiming = self.claim.as_ref().is_some_and(|c| c.block.is_none());
        view.endpoint = Some(self.gossip.me().endpoint);
        view.local_groups = self.local_groups();
    }

    /// Claims a block when one is due or ours was lost; returns whether it did.
    async fn claim_if_needed(&mut self, now: Instant, members: &[Member]) -> bool {
        let me = self.gossip.me().public_key;
        let Some(c) = &mut self.claim else {
            return false;
        };
        let others: Vec<(PublicKey, IpNet)> = members
            .iter()
            .filter(|m| m.state.is_live())
            .flat_map(|m| {
                m.record
                    .prefixes
                    .iter()
                    .map(move |p| (m.record.public_key, *p))
            })
            .collect();
        let lost = c
            .block
            .is_some_and(|b| ipam::must_reclaim(&me, b, others.iter().map(|(k, p)| (k, p))));
        let due = c.block.is_none() && c.due.is_some_and(|d| now >= d);
        if !lost && !due {
            return false;
        }
        let taken: Vec<IpNet> = others.iter().map(|(_, p)| *p).collect();
        let Some(block) = ipam::choose_block(c.range, c.block_len, &taken, &me) else {
            tracing::error!(range = %c.range, "no free block left in the range; retrying");
            c.due = Some(now + Duration::from_secs(5));
            return false;
        };
        let old = c.block.replace(block);
        c.due = None;
        if lost {
            tracing::warn!(old = ?old, new = %block, "another node won our block; claimed a new one");
        } else {
            tracing::info!(%block, "claimed address block");
        }
        if let Err(e) = std::fs::write(&c.state_file, format!("{block}\n")) {
            tracing::warn!(error = %e, path = %c.state_file.display(), "cannot persist the claimed block");
        }
        if let Some(old) = old {
            self.own_prefixes.retain(|p| *p != old);
        }
        self.own_prefixes.push(block);
        self.announce(now);
        let (index, new_addr) = self.placement.address(block);
        if let Some(old) = old {
            let (old_index, old_addr) = self.placement.address(old);
            self.addresses.retain(|a| *a != old_addr);
            if let Err(e) = self.netlink.del_address(old_index, old_addr).await {
                tracing::warn!(error = %e, "cannot remove the old block address");
            }
        }
        match self.netlink.ensure_address(index, new_addr).await {
            Ok(()) if index == self.index => self.addresses.push(new_addr),
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "cannot add the claimed block's address"),
        }
        true
    }

    async fn sync_peers(&mut self, members: &[Member]) {
        let me = self.gossip.me().public_key;
        let mut seen: HashSet<PublicKey> = self
            .static_peers
            .iter()
            .map(|p| p.peer.public_key)
            .collect();
        let mut specs = self.static_peers.clone();
        let wanted = members
            .iter()
            .filter(|m| m.state.is_live() && !self.deleted_nodes.contains(&m.record.name));
        for m in wanted {
            if seen.insert(m.record.public_key) {
                let (allowed_ips, groups) = split_prefixes(&m.record.prefixes);
                specs.push(PeerSpec {
                    peer: Peer {
                        public_key: m.record.public_key,
                        endpoint: Some(m.record.endpoint),
                        allowed_ips,
                        persistent_keepalive: Some(MESH_KEEPALIVE),
                    },
                    groups,
                    // The lower key makes first contact; the other answers.
                    first_contact: me < m.record.public_key,
                });
            }
        }
        let prefixes: Vec<IpNet> = specs
            .iter()
            .flat_map(|s| s.peer.allowed_ips.clone())
            .collect();
        self.dp.set_peers(specs);
        let wanted = self
            .placement
            .routes(&self.addresses, &self.held_blocks(), &prefixes);
        // Gone, or its preferred source changed (a claimed block moved): removed first.
        let stale: Vec<IpNet> = self
            .routes
            .iter()
            .filter(|(p, src)| wanted.get(*p) != Some(*src))
            .map(|(p, _)| *p)
            .collect();
        for gone in stale {
            if let Err(e) = self.netlink.del_route(self.index, gone).await {
                tracing::warn!(error = %e, "cannot remove a route");
            }
            self.routes.remove(&gone);
        }
        for (new, src) in wanted {
            if self.routes.contains_key(&new) {
                continue;
            }
            match self.netlink.add_route_src(self.index, new, src).await {
                Ok(()) => {
                    self.routes.insert(new, src);
                }
                Err(e) => tracing::warn!(error = %e, "cannot add a route"),
            }
        }
    }
}

pub(crate) fn state_name(s: MemberState) -> &'static str {
    match s {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_prefixes_split_into_unicast_and_groups() {
        let p: Vec<IpNet> = [
            "10.47.3.0/24",
            "239.1.2.3/32",
            "ff05::1:3/128",
            "224.0.0.0/4",
            "fd47::1/128",
        ]
        .iter()
        .map(|s| s.parse().expect("net"))
        .collect();
        let (unicast, groups) = split_prefixes(&p);
        assert_eq!(unicast, vec![p[0], p[4]]);
        assert_eq!(groups, vec![p[1].addr(), p[2].addr()]);
    }
}
