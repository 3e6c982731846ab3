//! The packet path: threads that move packets between the TUN device and the UDP
//! socket through each peer's WireGuard session, and the timer thread that drives the
//! WireGuard timers. Decisions (which peer, accept or drop) are made by the sans-IO
//! `weftnet_proto::router`; this module only moves bytes and counts.
//!
//! - [`mesh`]: the peer set, an immutable snapshot swapped atomically on change.
//! - [`outbound`]: TUN -> encrypt -> UDP, with GSO batching.
//! - [`inbound`]: UDP -> decrypt -> TUN, with recvmmsg/GRO batching.
//! - [`counters`]: drop and error counters.
//! - [`l2`]: bridge mode's L2 port (TAP) on the pods' bridge, for multicast.
//! - [`lifecycle`]: the stop flag, and the failure signal raised when a thread dies.
//! - [`pmtu`]: path MTU probes per peer, and ICMP errors for packets too big.
//!
//! Each peer's session sits behind its own mutex, so peers never contend with each
//! other, and readers of the peer set never take a lock.

mod counters;
mod inbound;
mod l2;
mod lifecycle;
mod mesh;
mod multicast;
mod outbound;
mod pmtu;

pub(crate) use counters::Counters;
pub(crate) use l2::{L2Port, L2Stats};
#[cfg(test)]
pub(crate) use mesh::PeerStats;
pub(crate) use mesh::{PeerReport, PeerSpec};
pub(crate) use multicast::GroupCounters;

use crate::config::MulticastConfig;
use crate::tun::Tun;
use crate::udp::Udp;
use arc_swap::ArcSwap;
use lifecycle::Lifecycle;
use mesh::Mesh;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weftnet_proto::keys::{PrivateKey, PublicKey};
use weftnet_proto::multicast::Replicator;
use weftnet_proto::parking::Parking;
use weftnet_proto::session::{Limiter, Output, SessionError};

/// How often the WireGuard timers run.
const TICK: Duration = Duration::from_millis(250);
/// How long the I/O threads block before they look at the stop flag.
const POLL_MS: i32 = 200;
/// Buffer size: the largest IP packet plus WireGuard overhead.
const BUF: usize = 65536 + 64;

/// A datagram for the control plane (first byte in the gossip range).
pub(crate) type ControlDatagram = (SocketAddr, Vec<u8>);

/// Shared state of the running data plane.
pub(crate) struct Dataplane {
    key: PrivateKey,
    limiter: Limiter,
    mesh: ArcSwap<Mesh>,
    /// Serialises peer-set changes (readers never take it).
    change: Mutex<()>,
    tun: Tun,
    udp: Udp,
    pub(crate) counters: Counters,
    /// The stop request and the failure signal of the threads.
    lifecycle: Arc<Lifecycle>,
    control: Option<tokio::sync::mpsc::Sender<ControlDatagram>>,
    /// Snooped IGMP/MLD packets for the control plane's group table.
    snoop: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    multicast: MulticastConfig,
    /// Inbound multicast checks (filter and source); outbound replication state lives
    /// in the TUN thread.
    mcast_in: Replicator,
    group_stats: multicast::GroupStats,
    /// Directed broadcast addresses of the overlay networks.
    broadcast_addrs: Vec<std::net::Ipv4Addr>,
    /// Bridge mode: the L2 port, where group traffic from peers and queries go.
    l2: Option<L2Port>,
    l2_counters: l2::L2Counters,
    /// Handshake initiations from keys that are not peers yet, answered when the
    /// control plane adds them.
    parked: Mutex<Parking>,
    /// The TUN interface's MTU: the largest inner MTU searched per peer.
    mtu: u16,
    icmp_budget: pmtu::IcmpBudget,
}

/// The channels and settings a data plane is built with.
pub(crate) struct Options {
    /// Where gossip datagrams go (none: dropped and counted).
    pub(crate) control: Option<tokio::sync::mpsc::Sender<ControlDatagram>>,
    /// Where snooped IGMP/MLD reports go (none: dropped and counted).
    pub(crate) snoop: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    pub(crate) multicast: MulticastConfig,
    /// Directed broadcast addresses of the overlay networks (for `--broadcast`).
    pub(crate) broadcast_addrs: Vec<std::net::Ipv4Addr>,
    /// Bridge mode: the L2 port on the pods' bridge.
    pub(crate) l2: Option<L2Port>,
    /// The TUN interface's MTU.
    pub(crate) mtu: u16,
}

impl Dataplane {
    /// A data plane with no peers yet. Gossip datagrams and snooped IGMP/MLD reports
    /// go to the channels in `options` (and are dropped when those are full).
    pub(crate) fn new(key: PrivateKey, tun: Tun, udp: Udp, options: Options) -> Arc<Self> {
        let limiter = Limiter::new(&key.public_key());
        Arc::new(Self {
            key,
            limiter,
            mesh: ArcSwap::from_pointee(Mesh::default()),
            change: Mutex::new(()),
            tun,
            udp,
            counters: Counters::default(),
            lifecycle: Arc::new(Lifecycle::default()),
            control: options.control,
            snoop: options.snoop,
            mcast_in: Replicator::new(options.multicast.filter.clone(), None),
            multicast: options.multicast,
            group_stats: multicast::GroupStats::default(),
            broadcast_addrs: options.broadcast_addrs,
            l2: options.l2,
            l2_counters: l2::L2Counters::default(),
            parked: Mutex::new(Parking::default()),
            mtu: options.mtu,
            icmp_budget: pmtu::IcmpBudget::default(),
        })
    }

    /// Replaces the peer set. Peers that stay keep their sessions; new ones get fresh
    /// sessions; removed ones are dropped.
    pub(crate) fn set_peers(&self, specs: Vec<PeerSpec>) {
        let _guard = self.change.lock();
        let next = Arc::new(
            self.mesh
                .load()
                .rebuild(specs, &self.key, &self.limiter, self.mtu),
        );
        self.mesh.store(Arc::clone(&next));
        drop(_guard);
        // Initiations that arrived a moment before their key became a peer are
        // answered now rather than after the initiator's retry.
        let waiting = self
            .parked
            .lock()
            .take_peers(|k| next.slot_of(k).is_some(), Instant::now());
        if !waiting.is_empty() {
            let mut out = vec![0u8; BUF];
            for (from, datagram) in waiting {
                self.handle_datagram(&next, &datagram, from, &mut out, &mut None);
            }
        }
    }

    /// Calls the peers this node contacts first and has not called yet at once, instead
    /// of at the next timer tick (up to [`TICK`] later). For a restarted node, whose
    /// peers still know its key: its sessions are back one round trip after it learns
    /// its peers. (A peer that does not know this node yet drops the initiation, and
    /// WireGuard retries only after 5 s, so new nodes keep waiting for the tick.)
    pub(crate) fn first_contacts(&self) {
        let mut out = vec![0u8; BUF];
        for peer in self.mesh.load().iter() {
            if let Some((Output::Network(bytes), to)) = peer.first_contact(&mut out) {
                self.send(bytes, to);
            }
        }
    }

    /// Starts the TUN, UDP and timer threads (and the L2 thread in bridge mode). A
    /// thread that ends before [`Self::stop`] (an I/O error, a panic) raises
    /// [`Self::failure`].
    pub(crate) fn start(self: &Arc<Self>) -> std::io::Result<Vec<JoinHandle<()>>> {
        let spawn = |name: &str, f: fn(&Dataplane) -> anyhow::Result<()>| {
            let me = Arc::clone(self);
            self.lifecycle.spawn(name, move || f(&me))
        };
        let mut threads = vec![
            spawn("weft-tun", Dataplane::tun_loop)?,
            spawn("weft-udp", Dataplane::udp_loop)?,
            spawn("weft-timers", Dataplane::timer_loop)?,
        ];
        if self.l2.is_some() {
            threads.push(spawn("weft-l2", Dataplane::l2_loop)?);
        }
        Ok(threads)
    }

    /// Asks the threads to finish; they notice within [`POLL_MS`]. Their exits then
    /// signal no failure.
    pub(crate) fn stop(&self) {
        self.lifecycle.stop();
    }

    /// The process exits for a restart: the threads keep forwarding until it ends (no
    /// stop asked), but one that ends meanwhile signals no failure.
    pub(crate) fn exiting(&self) {
        self.lifecycle.exiting();
    }

    fn stopping(&self) -> bool {
        self.lifecycle.stopping()
    }

    /// Whether the threads are meant to be running and none has died (for the
    /// liveness probe): false after [`Self::stop`] or a failure.
    pub(crate) fn running(&self) -> bool {
        self.lifecycle.running()
    }

    /// The failure signal: `None` while the data plane works (and after a clean
    /// [`Self::stop`]); `Some("<thread name>: <error>")` once a thread returned an
    /// error, panicked or returned while no stop was asked for (the first such thread
    /// only). Wait for it with `rx.wait_for(Option::is_some).await`, or read it with
    /// `rx.borrow()`.
    pub(crate) fn failure(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.lifecycle.failure()
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    pub(crate) fn interface(&self) -> &str {
        self.tun.name()
    }

    /// The TUN offload path in use: `tso`, `vnet-hdr` or `off`.
    pub(crate) fn offload(&self) -> &'static str {
        self.tun.offload().as_str()
    }

    /// Sends a control-plane (gossip) datagram from the shared port.
    pub(crate) fn send_control(&self, bytes: &[u8], to: SocketAddr) {
        self.send(bytes, to);
    }

    pub(crate) fn peers(&self) -> Vec<PeerReport> {
        self.mesh.load().reports()
    }

    fn send(&self, bytes: &[u8], to: SocketAddr) {
        self.send_segments(bytes, None, to);
    }

    fn send_segments(&self, bytes: &[u8], segment: Option<usize>, to: SocketAddr) {
        if let Err(e) = self.udp.send(bytes, segment, to) {
            self.counters.bump_udp_send_error();
            tracing::debug!(%to, error = %e, "UDP send failed");
        }
    }

    /// WireGuard timers for every peer, and the handshake rate-limit window.
    fn timer_loop(&self) -> anyhow::Result<()> {
        let mut out = vec![0u8; BUF];
        let mut plain = vec![0u8; BUF];
        let mut last_reset = Instant::now();
        while !self.stopping() {
            if last_reset.elapsed() >= Duration::from_secs(1) {
                self.limiter.reset_count();
                last_reset = Instant::now();
            }
            let mesh = self.mesh.load_full();
            for peer in mesh.iter() {
                let (result, endpoint) = peer.tick(&mut out);
                match result {
                    Some(Output::Network(bytes)) => match endpoint {
                        Some(to) => self.send(bytes, to),
                        None => self.counters.bump_no_endpoint(),
                    },
                    Some(Output::Error(e)) if e != SessionError::Expired => {
                        self.counters.bump_session(e)
                    }
                    _ => {}
                }
                self.probe_tick(peer, Instant::now(), &mut plain, &mut out);
            }
            drop(mesh);
            std::thread::sleep(TICK);
        }
        Ok(())
    }
}
