//! The control plane's shell around the sans-IO node reconciler
//! (`weftnet_proto::node::Node`), which makes every decision. This task only moves
//! things: it feeds the reconciler gossip datagrams and snooped IGMP/MLD packets from
//! the data plane, commands from the control socket and the Kubernetes watch, seed
//! lookups and timeouts; it carries out the effects (datagrams, injected packets, the
//! data plane's peer set, netlink changes, the saved block, DNS lookups); and it
//! publishes the status snapshot through a `tokio::sync::watch` channel. Nothing here
//! blocks the runtime: lookups use `tokio::net::lookup_host`, file writes run on the
//! blocking pool.

mod bootstrap;

pub(crate) use bootstrap::{
    detect_underlay_ip, next_epoch, no_underlay_address, read_secrets, resolve, resolve_each,
    saved_block, saved_members,
};

use crate::dataplane::{ControlDatagram, Dataplane};
use crate::netlink::Netlink;
use anyhow::{anyhow, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};
use weftnet_proto::node::{Effect, Link, Node, Status};

/// The claimed block, in the state directory.
pub(crate) const BLOCK_FILE: &str = "block";
/// The live members' endpoints, one per line, in the state directory.
pub(crate) const MEMBERS_FILE: &str = "members";

/// Requests from the control socket and the Kubernetes watch.
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
    /// Kubernetes: every Node's facts, after a full list and on every change.
    Nodes(Vec<weftnet_proto::node::NodeFacts>),
    /// NetworkPolicy: which groups each local pod may receive.
    ReceivePolicy(weftnet_proto::multicast::ReceivePolicy),
    /// Chained mode: this node's pods, as the CNI plugin recorded them.
    LocalPods(Vec<std::net::IpAddr>),
    /// Chained mode: every Node's pod addresses, as the API server lists them.
    PodAddresses(crate::chained::pods::PodMap),
}

/// Seeds as written, each with its address if it resolved.
type Lookups = Vec<(String, Option<SocketAddr>)>;

/// The interfaces the reconciler's [`Link`]s name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Links {
    pub(crate) overlay: u32,
    pub(crate) bridge: Option<u32>,
    /// Chained mode: routes into the overlay go into this table, not the main one.
    pub(crate) table: Option<u32>,
}

impl Links {
    fn index(&self, link: Link) -> Result<u32> {
        match link {
            Link::Overlay => Ok(self.overlay),
            Link::Bridge => self
                .bridge
                .ok_or_else(|| anyhow!("an address for the bridge, but bridge mode is off")),
        }
    }
}

/// The shell around the reconciler.
pub(crate) struct Shell {
    node: Node,
    netlink: Arc<Netlink>,
    links: Links,
    /// The state directory, where the claimed block and the members are saved.
    state_dir: PathBuf,
    status: watch::Sender<Status>,
    lookups_tx: mpsc::Sender<Lookups>,
    lookups: mpsc::Receiver<Lookups>,
    /// During start-up: addresses added to links other than the overlay (they outlive
    /// the overlay interface, so a failed start must remove them).
    added: Vec<(u32, ipnet::IpNet)>,
    /// After a restart, until then: peers are called as soon as they are set (they
    /// still know this node's key).
    call_at_once_until: Option<Instant>,
}

impl Shell {
    /// A shell for `node`, and the receiving end of its status snapshots.
    pub(crate) fn new(
        node: Node,
        netlink: Arc<Netlink>,
        links: Links,
        state_dir: PathBuf,
    ) -> (Self, watch::Receiver<Status>) {
        let (status, status_rx) = watch::channel(node.status().clone());
        let (lookups_tx, lookups) = mpsc::channel(4);
        let shell = Self {
            node,
            netlink,
            links,
            state_dir,
            status,
            lookups_tx,
            lookups,
            added: Vec::new(),
            call_at_once_until: None,
        };
        (shell, status_rx)
    }

    /// This run restarted a node whose peers still know it: for `window`, the peers
    /// it contacts first are called as soon as they are set, not at the next timer
    /// tick.
    pub(crate) fn restarted(&mut self, window: std::time::Duration) {
        self.call_at_once_until = Some(Instant::now() + window);
    }

    /// Start-up: carries out the node's first effects (its addresses, routes and
    /// peers); the first refused change fails start-up. Returns the addresses added
    /// outside the overlay interface.
    pub(crate) async fn start(&mut self, dp: &Dataplane) -> Result<Vec<(u32, ipnet::IpNet)>> {
        self.carry_out(dp, true).await?;
        Ok(std::mem::take(&mut self.added))
    }

    /// Carries out the effects queued so far. With `strict` (start-up), the first
    /// refused change is returned instead of retried later.
    async fn carry_out(&mut self, dp: &Dataplane, strict: bool) -> Result<()> {
        while let Some(effect) = self.node.poll_effect() {
            match &effect {
                Effect::Transmit { to, bytes } => dp.send_control(bytes, *to),
                Effect::Inject(packet) => dp.inject(packet),
                Effect::SetPeers(peers) => {
                    dp.set_peers(peers.clone());
                    if self.call_at_once_until.is_some_and(|t| Instant::now() < t) {
                        dp.first_contacts();
                    }
                }
                Effect::PersistBlock(block) => {
                    self.persist(BLOCK_FILE, format!("{block}\n"), "the claimed block")
                }
                Effect::PersistMembers(members) => {
                    let text: String = members.iter().map(|m| format!("{m}\n")).collect();
                    self.persist(MEMBERS_FILE, text, "the known members")
                }
                Effect::Resolve(names) => spawn_lookup(names.clone(), self.lookups_tx.clone()),
                Effect::Notice(notice) => tracing::warn!("{notice}"),
                Effect::DelRoute { prefix } => {
                    let removed = match self.links.table {
                        Some(t) => {
                            self.netlink
                                .del_table_route(self.links.overlay, *prefix, t)
                                .await
                        }
                        None => self.netlink.del_route(self.links.overlay, *prefix).await,
                    };
                    if let Err(e) = removed {
                        tracing::warn!(error = %e, %prefix, "cannot remove a route");
                    }
                }
                Effect::DelAddress { link, address } => {
                    let removed = match self.links.index(*link) {
                        Ok(index) => self.netlink.del_address(index, *address).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = removed {
                        tracing::warn!(error = %e, %address, "cannot remove an address");
                    }
                }
                Effect::AddAddress { link, address } => {
                    let added = match self.links.index(*link) {
                        Ok(index) => self
                            .netlink
                            .ensure_address(index, *address)
                            .await
                            .map(|new| (index, new)),
                        Err(e) => Err(e),
                    };
                    match added {
                        Ok((index, true)) if strict && *link != Link::Overlay => {
                            self.added.push((index, *address))
                        }
                        Ok(_) => {}
                        Err(error) => self.refused(effect, error, strict)?,
                    }
                }
                Effect::AddRoute { prefix, src } => {
                    let added = match self.links.table {
                        Some(t) => {
                            self.netlink
                                .add_table_route(self.links.overlay, *prefix, t)
                                .await
                        }
                        None => {
                            self.netlink
                                .add_route_src(self.links.overlay, *prefix, *src)
                                .await
                        }
                    };
                    if let Err(error) = added {
                        self.refused(effect, error, strict)?;
                    }
                }
            }
        }
        if let Some(status) = self.node.poll_status() {
            self.status.send_replace(status);
        }
        Ok(())
    }

    fn refused(&mut self, effect: Effect, error: anyhow::Error, strict: bool) -> Result<()> {
        if strict {
            return Err(error);
        }
        tracing::warn!(error = %format!("{error:#}"), ?effect, "the host refused a change; retrying");
        self.node.handle_failed(&effect, Instant::now());
        Ok(())
    }

    /// Saves `text` as `file` in the state directory, off the runtime's thread
    /// (written to a temporary file and renamed, so a crash leaves the old one).
    fn persist(&self, file: &'static str, text: String, what: &'static str) {
        let path = self.state_dir.join(file);
        let tmp = self.state_dir.join(format!(".{file}.tmp"));
        tokio::task::spawn_blocking(move || {
            let saved = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = saved {
                tracing::warn!(error = %e, path = %path.display(), "cannot save {what}");
            }
        });
    }

    /// Runs until a leave completes (command or shutdown) or the command channel closes.
    pub(crate) async fn run(
        mut self,
        dp: Arc<Dataplane>,
        mut datagrams: mpsc::Receiver<ControlDatagram>,
        mut snooped: mpsc::Receiver<Vec<u8>>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut leave_reply: Option<oneshot::Sender<()>> = None;
        // Without gossip nobody sends datagrams or snooped reports: those channels
        // close, and are not polled after that.
        let (mut datagrams_open, mut snooped_open) = (true, true);
        let mut activity = Activity::default();
        let mut activity_tick = tokio::time::interval(ACTIVITY_PERIOD);
        activity_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let _ = self.carry_out(&dp, false).await;
            if self.node.is_done() {
                if let Some(reply) = leave_reply.take() {
                    let _ = reply.send(());
                }
                return;
            }
            let deadline = self.node.poll_timeout();
            let sleep = deadline.map(|(at, _)| tokio::time::Instant::from_std(at));
            tokio::select! {
                got = datagrams.recv(), if datagrams_open => match got {
                    Some((from, bytes)) => self.node.handle_datagram(from, &bytes, Instant::now()),
                    None => datagrams_open = false,
                },
                packet = snooped.recv(), if snooped_open => match packet {
                    Some(packet) => self.node.handle_snooped(&packet, Instant::now()),
                    None => snooped_open = false,
                },
                _ = activity_tick.tick() => {
                    let active = activity.update(&dp.peers());
                    if !active.is_empty() {
                        self.node.handle_peer_activity(&active, Instant::now());
                    }
                }
                found = self.lookups.recv() => {
                    if let Some(lookups) = found {
                        self.node.handle_resolved(&lookups, Instant::now());
                    }
                }
                cmd = commands.recv() => {
                    let now = Instant::now();
                    match cmd {
                        Some(Command::Leave(reply)) => {
                            self.node.leave(now);
                            leave_reply = Some(reply);
                        }
                        Some(Command::Forget { node, reply }) => {
                            let answer = self.node.forget(&node, now).map(|k| k.to_base64());
                            let _ = reply.send(answer);
                        }
                        Some(Command::Join(seeds)) => self.node.handle_node_seeds(&seeds, now),
                        Some(Command::NodeDeleted(name)) => self.node.handle_node_deleted(&name, now),
                        Some(Command::NodeAdded(name)) => self.node.handle_node_added(&name, now),
                        Some(Command::Nodes(nodes)) => self.node.handle_nodes(nodes, now),
                        Some(Command::ReceivePolicy(p)) => self.node.set_receive_policy(p, now),
                        Some(Command::LocalPods(pods)) => self.node.handle_local_pods(pods, now),
                        Some(Command::PodAddresses(pods)) => self.node.handle_pod_addresses(pods, now),
                        None => return,
                    }
                }
                _ = async {
                    match sleep {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some((_, why)) = deadline {
                        tracing::trace!(timer = why, "control plane timer");
                    }
                    self.node.handle_timeout(Instant::now());
                }
            }
        }
    }
}

/// How often the data plane's per-peer receive counters are read for evidence of
/// life.
const ACTIVITY_PERIOD: std::time::Duration = std::time::Duration::from_millis(500);

/// The received-packet count of each peer at the last look, to tell which peers'
/// tunnels carried authenticated traffic since.
#[derive(Default)]
struct Activity {
    rx: std::collections::HashMap<weftnet_proto::keys::PublicKey, u64>,
}

impl Activity {
    /// The peers whose received-packet count grew since the last call.
    fn update(
        &mut self,
        reports: &[crate::dataplane::PeerReport],
    ) -> Vec<weftnet_proto::keys::PublicKey> {
        let mut next = std::collections::HashMap::with_capacity(reports.len());
        let mut active = Vec::new();
        for r in reports {
            let key = r.peer.public_key;
            let rx = r.stats.rx_packets;
            if self.rx.get(&key).is_some_and(|before| rx > *before) {
                active.push(key);
            }
            next.insert(key, rx);
        }
        self.rx = next;
        active
    }
}

/// Looks the seeds up in the background and reports each with its address, if it
/// resolved (the reconciler warns about those that do not).
fn spawn_lookup(names: Vec<String>, to: mpsc::Sender<Lookups>) {
    tokio::spawn(async move {
        let found = resolve_each(&names).await;
        let unresolved: Vec<&str> = found
            .iter()
            .filter(|(_, a)| a.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !unresolved.is_empty() {
            tracing::debug!(seeds = ?unresolved, "some seeds do not resolve yet; looking again later");
        }
        let _ = to.send(found).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{PeerReport, PeerStats};
    use weftnet_proto::keys::PublicKey;
    use weftnet_proto::node::Peer;

    fn report(key: u8, rx_packets: u64) -> PeerReport {
        PeerReport {
            peer: Peer {
                public_key: PublicKey::from_bytes([key; 32]),
                endpoint: None,
                allowed_ips: Vec::new(),
                persistent_keepalive: None,
            },
            stats: PeerStats {
                rx_packets,
                ..PeerStats::default()
            },
        }
    }

    #[test]
    fn activity_names_the_peers_whose_receive_count_grew() {
        let mut a = Activity::default();
        assert!(
            a.update(&[report(1, 5), report(2, 0)]).is_empty(),
            "first look"
        );
        let active = a.update(&[report(1, 9), report(2, 0), report(3, 4)]);
        assert_eq!(active, vec![PublicKey::from_bytes([1; 32])]);
        // A peer re-added (counters from zero) is not activity by itself.
        assert!(a.update(&[report(1, 2)]).is_empty());
        assert_eq!(
            a.update(&[report(1, 3)]),
            vec![PublicKey::from_bytes([1; 32])]
        );
    }
}
