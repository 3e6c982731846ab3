//! The packet path: threads that move packets between the TUN device and the UDP
//! socket through each peer's WireGuard session, and the timer thread that drives the
//! WireGuard timers.
//!
//! The threads come in workers (`--workers`, default one per core): worker `i` is one
//! thread that reads its TUN queues (`i`, `i + workers`, ...: [`QUEUES_PER_WORKER`] of
//! them; encrypts, sends on UDP socket `i`) and receives on UDP socket `i` (decrypts,
//! writes to the TUN). The kernel steers a flow to the TUN queue its packets were
//! last written to, so the queue a worker writes a decrypted packet to decides which
//! worker reads the flow's replies ([`Dataplane::delivery_queue`]): for a light flow
//! one of the receiving worker's own queues (request and reply on one thread), for a
//! bulk flow the queue of the flow's hash (`weftnet_proto::affinity`), so that bulk
//! flows to one peer are encrypted on several workers. On the UDP side `SO_REUSEPORT`
//! hashes each peer's address and port to one socket. A flow stays on one worker
//! each way, so TCP sees no reordering, apart from one move when a flow turns bulk
//! (segments still queued for the old worker can leave after newer ones); it moves
//! back only after a second of quiet, when none is queued. Decisions (which peer, accept or drop) are made by the sans-IO
//! `weftnet_proto::router`; this module only moves bytes and counts.
//!
//! - [`mesh`]: the peer set, an immutable snapshot swapped atomically on change.
//! - [`outbound`]: TUN -> encrypt -> UDP, with GSO batching.
//! - [`inbound`]: UDP -> decrypt -> TUN, with recvmmsg/GRO batching.
//! - [`worker`]: the thread that serves its TUN queues and one UDP socket in turn.
//! - [`counters`]: drop and error counters.
//! - [`l2`]: bridge mode's L2 port (TAP) on the pods' bridge, for multicast.
//! - [`pods`]: chained mode's pod veths (a packet socket), for multicast.
//! - [`lifecycle`]: the stop flag, and the failure signal raised when a thread dies.
//! - [`pmtu`]: path MTU probes per peer, and ICMP errors for packets too big.
//!
//! Each peer's session sits behind its own mutex, so peers never contend with each
//! other, and readers of the peer set never take a lock. Both directions of one peer
//! (and workers encrypting for the same peer) do take turns on that mutex: boringtun's
//! `Tunn` takes `&mut self` to encrypt and to decrypt (it updates its timers and byte
//! counts on both). How often a worker has to wait is counted (`lock_waits`).

mod counters;
mod inbound;
mod l2;
mod lifecycle;
mod mesh;
mod multicast;
mod outbound;
mod pmtu;
mod pods;
mod worker;

pub(crate) use counters::Counters;
pub(crate) use l2::{L2Port, L2Stats};
#[cfg(test)]
pub(crate) use mesh::PeerStats;
pub(crate) use mesh::{PeerReport, PeerSpec};
pub(crate) use multicast::GroupCounters;
pub(crate) use pods::{PodLink, PodStats};

use crate::config::MulticastConfig;
use crate::tun::Tun;
use crate::udp::Udp;
use arc_swap::ArcSwap;
use lifecycle::Lifecycle;
use mesh::Mesh;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weftnet_proto::affinity::Affinity;
use weftnet_proto::keys::{PrivateKey, PublicKey};
use weftnet_proto::multicast::{RateLimit, Replicator};
use weftnet_proto::parking::Parking;
use weftnet_proto::session::{Limiter, Output, SessionError};

/// How often the WireGuard timers run.
const TICK: Duration = Duration::from_millis(250);
/// TUN queues per worker. The kernel keeps each flow on one queue, and a queue is a
/// FIFO: a bulk TCP stream keeps its congestion window queued there (megabytes, with
/// offloads), and a packet of another flow in the same queue waits behind all of it.
/// With several queues per worker, read in turn a bounded batch at a time, another
/// flow shares the bulk flow's queue only by chance (1 in `workers` x this) and
/// otherwise waits for one batch of it, not the whole window.
pub(crate) const QUEUES_PER_WORKER: usize = 4;
/// How long the threads without a stop descriptor (L2 port, pod ports, and workers
/// if the kernel refused an eventfd) block before they look at the stop flag.
const POLL_MS: i32 = 200;
/// Buffer size: the largest IP packet plus WireGuard overhead.
const BUF: usize = 65536 + 64;

/// A byte budget at `--multicast-rate-limit`, if one is set.
fn rate_limit(multicast: &MulticastConfig) -> Option<RateLimit> {
    multicast
        .rate_limit
        .map(|r| RateLimit::new(r, r.max(64 * 1024)))
}

/// A datagram for the control plane (first byte in the gossip range).
pub(crate) type ControlDatagram = (SocketAddr, Vec<u8>);

/// Shared state of the running data plane.
pub(crate) struct Dataplane {
    key: PrivateKey,
    limiter: Limiter,
    mesh: ArcSwap<Mesh>,
    /// Serialises peer-set changes (readers never take it).
    change: Mutex<()>,
    /// The TUN queues, one per worker (never empty; queue 0 also takes the writes of
    /// the other threads).
    tun: Vec<Tun>,
    /// The UDP sockets, one per worker (as many as `tun`; socket 0 also sends for the
    /// control plane and the timers).
    udp: Vec<Udp>,
    /// Outbound multicast and broadcast state, shared by the TUN workers so that the
    /// rate limits hold for the node, not per worker.
    tx_replication: Mutex<TxReplication>,
    /// Per worker: packets (or super-packets) read from its TUN queue, and datagrams
    /// received on its UDP socket.
    lane_tun_reads: Vec<AtomicU64>,
    lane_udp_datagrams: Vec<AtomicU64>,
    /// Times a thread found a peer's session locked by another and waited.
    lock_waits: AtomicU64,
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
    /// Chained mode: the pods' veths, where their reports and group traffic are read
    /// and group traffic for member pods and queries are written.
    pods: Option<pods::Pods>,
    /// Handshake initiations from keys that are not peers yet, answered when the
    /// control plane adds them.
    parked: Mutex<Parking>,
    /// The TUN interface's MTU: the largest inner MTU searched per peer.
    mtu: u16,
    icmp_budget: pmtu::IcmpBudget,
}

/// The body of a data-plane thread.
type ThreadBody = dyn FnOnce(&Dataplane) -> anyhow::Result<()> + Send;

/// What the TUN workers share for outbound multicast and broadcast.
struct TxReplication {
    replicator: Replicator,
    broadcast_rate: Option<RateLimit>,
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
    /// Chained mode: the packet socket on the pods' veths.
    pub(crate) pods: Option<PodLink>,
    /// The TUN interface's MTU.
    pub(crate) mtu: u16,
}

impl Dataplane {
    /// A data plane with no peers yet, with a worker per UDP socket in `udp`, each
    /// reading every `udp.len()`-th TUN queue of `tun` from its own index (sockets
    /// beyond the number of queues are closed). Gossip datagrams and snooped
    /// IGMP/MLD reports go to the channels in `options` (and are dropped when those are
    /// full).
    pub(crate) fn new(
        key: PrivateKey,
        tun: Vec<Tun>,
        mut udp: Vec<Udp>,
        options: Options,
    ) -> anyhow::Result<Arc<Self>> {
        if tun.is_empty() || udp.is_empty() {
            anyhow::bail!(
                "the data plane needs a TUN queue and a UDP socket ({} queues, {} sockets)",
                tun.len(),
                udp.len()
            );
        }
        // A worker needs a queue of its own: fewer queues (a single-queue interface
        // left by an earlier run) mean fewer workers.
        udp.truncate(tun.len());
        let workers = udp.len();
        let limiter = Limiter::new(&key.public_key());
        let rate_limit = rate_limit(&options.multicast);
        let pods = options
            .pods
            .map(|link| pods::Pods::new(link, options.multicast.filter.clone()));
        Ok(Arc::new(Self {
            key,
            limiter,
            mesh: ArcSwap::from_pointee(Mesh::default()),
            change: Mutex::new(()),
            tun,
            udp,
            tx_replication: Mutex::new(TxReplication {
                replicator: Replicator::new(options.multicast.filter.clone(), rate_limit.clone()),
                broadcast_rate: rate_limit,
            }),
            lane_tun_reads: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            lane_udp_datagrams: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            lock_waits: AtomicU64::new(0),
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
            pods,
            parked: Mutex::new(Parking::default()),
            mtu: options.mtu,
            icmp_budget: pmtu::IcmpBudget::default(),
        }))
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
                self.handle_datagram(&next, &datagram, from, &mut out, &mut inbound::Rx::plain());
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

    /// Starts the workers' threads (`weft-worker` with one worker, `weft-worker-<i>`
    /// with several), the timer thread, and the
    /// L2 thread in bridge mode, the pods thread in chained mode. A thread that ends before [`Self::stop`] (an I/O
    /// error, a panic) raises [`Self::failure`].
    pub(crate) fn start(self: &Arc<Self>) -> std::io::Result<Vec<JoinHandle<()>>> {
        let spawn = |name: &str, f: Box<ThreadBody>| {
            let me = Arc::clone(self);
            self.lifecycle.spawn(name, move || f(&me))
        };
        let workers = self.workers();
        let name = |what: &str, lane: usize| match workers {
            1 => format!("weft-{what}"),
            _ => format!("weft-{what}-{lane}"),
        };
        let mut threads = Vec::with_capacity(workers + 3);
        for lane in 0..workers {
            threads.push(spawn(
                &name("worker", lane),
                Box::new(move |dp| dp.worker_loop(lane)),
            )?);
        }
        threads.push(spawn("weft-timers", Box::new(Dataplane::timer_loop))?);
        if self.l2.is_some() {
            threads.push(spawn("weft-l2", Box::new(Dataplane::l2_loop))?);
        }
        if self.pods.is_some() {
            threads.push(spawn("weft-pods", Box::new(Dataplane::pods_loop))?);
        }
        Ok(threads)
    }

    /// How many workers run (one UDP socket each).
    pub(crate) fn workers(&self) -> usize {
        self.udp.len()
    }

    /// How many queues the TUN has (each worker reads [`QUEUES_PER_WORKER`] of them,
    /// or one on a single-queue interface).
    pub(crate) fn tun_queues(&self) -> usize {
        self.tun.len()
    }

    /// The TUN queues worker `lane` reads, with their indexes.
    fn queues_of(&self, lane: usize) -> impl Iterator<Item = (usize, &Tun)> {
        self.tun
            .iter()
            .enumerate()
            .skip(lane)
            .step_by(self.workers())
    }

    /// Whether the TUN is multi-queue (false: one queue, as an interface left
    /// single-queue by an earlier run has).
    pub(crate) fn multi_queue(&self) -> bool {
        self.tun[0].multi_queue()
    }

    /// Per worker: TUN reads and UDP datagrams received so far.
    pub(crate) fn worker_counts(&self) -> Vec<(u64, u64)> {
        self.lane_tun_reads
            .iter()
            .zip(&self.lane_udp_datagrams)
            .map(|(t, u)| (t.load(Ordering::Relaxed), u.load(Ordering::Relaxed)))
            .collect()
    }

    /// Times a thread waited for a peer's session held by another thread.
    pub(crate) fn lock_waits(&self) -> u64 {
        self.lock_waits.load(Ordering::Relaxed)
    }

    /// Writes a plain packet to the TUN queue of its flow (see the module doc).
    fn write_tun(&self, packet: &[u8]) -> std::io::Result<usize> {
        self.delivery_queue(&mut None, packet).write(packet)
    }

    /// The TUN queue a packet is written to, which is the queue the kernel then sends
    /// the flow's replies to. By a worker (`worker`: its index and bulk flows), one of
    /// the worker's own queues, so that a request and its reply are handled by one
    /// thread; for a bulk flow, the queue of the flow's hash, so that bulk flows spread
    /// over the workers (`weftnet_proto::affinity`). By any other thread (`None`), the
    /// queue of the flow's hash.
    fn delivery_queue(&self, worker: &mut Option<(usize, Affinity)>, packet: &[u8]) -> &Tun {
        let queues = self.tun.len();
        let hash = weftnet_proto::flow::hash(packet);
        let index = hash as usize;
        if let Some((lane, affinity)) = worker {
            let workers = self.workers();
            if *lane < queues && !affinity.spread(hash, Instant::now()) {
                // the worker's queues are lane, lane + workers, ... (fewer than
                // `queues`, so the index stays below it)
                let own = (queues - *lane).div_ceil(workers);
                return &self.tun[*lane + (index % own) * workers];
            }
        }
        &self.tun[index % queues]
    }

    /// Locks `peer`'s state, counting a wait when another thread holds it.
    fn lock_peer<'a>(
        &self,
        peer: &'a mesh::LivePeer,
    ) -> parking_lot::MutexGuard<'a, mesh::PeerState> {
        match peer.state.try_lock() {
            Some(guard) => guard,
            None => {
                self.lock_waits.fetch_add(1, Ordering::Relaxed);
                peer.state.lock()
            }
        }
    }

    /// Asks the threads to finish: the workers notice at once (their wait includes the
    /// stop eventfd), the others within [`POLL_MS`] or a timer [`TICK`]. Their exits
    /// then signal no failure.
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
        self.tun[0].name()
    }

    /// The TUN offload path in use: `tso`, `vnet-hdr` or `off`.
    pub(crate) fn offload(&self) -> &'static str {
        self.tun[0].offload().as_str()
    }

    /// Sends a control-plane (gossip) datagram from the shared port.
    pub(crate) fn send_control(&self, bytes: &[u8], to: SocketAddr) {
        self.send(bytes, to);
    }

    pub(crate) fn peers(&self) -> Vec<PeerReport> {
        self.mesh.load().reports()
    }

    /// Sends one datagram from socket 0.
    fn send(&self, bytes: &[u8], to: SocketAddr) {
        self.send_segments(0, bytes, None, to);
    }

    /// Sends from worker `lane`'s socket.
    fn send_segments(&self, lane: usize, bytes: &[u8], segment: Option<usize>, to: SocketAddr) {
        let udp = self.udp.get(lane).unwrap_or(&self.udp[0]);
        if let Err(e) = udp.send(bytes, segment, to) {
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
