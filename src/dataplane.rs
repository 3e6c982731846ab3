//! The packet path: threads that move packets between the TUN device and the UDP
//! socket through each peer's WireGuard session, and the timer thread that drives the
//! WireGuard timers. Decisions (which peer, accept or drop) are made by the sans-IO
//! `weftnet_proto::router`; this module only moves bytes and counts.
//!
//! Each peer's session sits behind its own mutex, so peers never contend with each
//! other; the peer set itself is an immutable snapshot shared by all threads.

use crate::tun::{wait_readable, Tun};
use crate::udp::{canonical, Udp};
use ipnet::IpNet;
use parking_lot::Mutex;
use quinn_udp::RecvMeta;
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weftnet_proto::keys::{PrivateKey, PublicKey};
use weftnet_proto::router::{DropReason, PeerId, Router};
use weftnet_proto::session::{
    identify_initiator, Initiator, Limiter, Output, Session, SessionError,
};
use weftnet_proto::wire::{self, Datagram};

/// How often the WireGuard timers run.
const TICK: Duration = Duration::from_millis(250);
/// How long the I/O threads block before they look at the stop flag.
const POLL_MS: i32 = 200;
/// Buffer size: the largest IP packet plus WireGuard overhead.
const BUF: usize = 65536 + 64;
/// Packets read from the TUN device before their ciphertexts are flushed.
const TX_BATCH: usize = 64;
/// Receive buffers per UDP receive call.
const RX_BATCH: usize = 8;
/// Largest UDP payload one GSO send may carry.
const GSO_MAX_BYTES: usize = 65000;

/// A static description of one peer.
#[derive(Debug, Clone)]
pub(crate) struct PeerSpec {
    pub(crate) public_key: PublicKey,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) allowed_ips: Vec<IpNet>,
    pub(crate) persistent_keepalive: Option<u16>,
}

struct PeerState {
    session: Session,
    endpoint: Option<SocketAddr>,
}

/// One peer: its configuration and its session.
pub(crate) struct Peer {
    pub(crate) spec: PeerSpec,
    state: Mutex<PeerState>,
    rx_packets: AtomicU64,
    tx_packets: AtomicU64,
}

/// A snapshot of the peer set with its routing table.
pub(crate) struct Mesh {
    peers: Vec<Arc<Peer>>,
    by_key: HashMap<PublicKey, PeerId>,
    router: Router,
}

impl Mesh {
    fn peer(&self, id: PeerId) -> Option<&Arc<Peer>> {
        self.peers.get(id as usize)
    }
}

/// Packet and error counters, readable while the threads run.
#[derive(Default)]
pub(crate) struct Counters {
    router: [AtomicU64; DropReason::ALL.len()],
    session: [AtomicU64; SessionError::ALL.len()],
    malformed_datagram: AtomicU64,
    unknown_peer: AtomicU64,
    no_endpoint: AtomicU64,
    tun_write_errors: AtomicU64,
    udp_send_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Every counter by its stable name.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<(&'static str, u64)> = DropReason::ALL
            .iter()
            .map(|r| (r.as_str(), self.router[r.index()].load(Ordering::Relaxed)))
            .collect();
        v.extend(
            SessionError::ALL
                .iter()
                .map(|e| (e.as_str(), self.session[e.index()].load(Ordering::Relaxed))),
        );
        v.extend([
            (
                "malformed_datagram",
                self.malformed_datagram.load(Ordering::Relaxed),
            ),
            ("unknown_peer", self.unknown_peer.load(Ordering::Relaxed)),
            ("no_endpoint", self.no_endpoint.load(Ordering::Relaxed)),
            (
                "tun_write_errors",
                self.tun_write_errors.load(Ordering::Relaxed),
            ),
            (
                "udp_send_errors",
                self.udp_send_errors.load(Ordering::Relaxed),
            ),
        ]);
        v
    }
}

/// What `weftnet status` shows about one peer.
#[derive(Debug, Clone)]
pub(crate) struct PeerReport {
    pub(crate) public_key: PublicKey,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) allowed_ips: Vec<IpNet>,
    pub(crate) persistent_keepalive: Option<u16>,
    pub(crate) since_handshake: Option<Duration>,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
}

/// Shared state of the running data plane.
pub(crate) struct Dataplane {
    key: PrivateKey,
    limiter: Limiter,
    mesh: Mesh,
    tun: Tun,
    udp: Udp,
    pub(crate) counters: Counters,
    stop: AtomicBool,
}

impl Dataplane {
    /// Builds the peer set. Peer slots are the positions in `peers`.
    pub(crate) fn new(key: PrivateKey, peers: Vec<PeerSpec>, tun: Tun, udp: Udp) -> Arc<Self> {
        let limiter = Limiter::new(&key.public_key());
        let mut router = Router::new();
        let mut by_key = HashMap::new();
        let peers: Vec<Arc<Peer>> = peers
            .into_iter()
            .enumerate()
            .map(|(slot, spec)| {
                let slot = slot as PeerId;
                for net in &spec.allowed_ips {
                    router.add_prefix(*net, slot);
                }
                by_key.insert(spec.public_key, slot);
                let session = Session::new(
                    &key,
                    &spec.public_key,
                    None,
                    spec.persistent_keepalive,
                    slot,
                    &limiter,
                );
                Arc::new(Peer {
                    state: Mutex::new(PeerState {
                        session,
                        endpoint: spec.endpoint,
                    }),
                    spec,
                    rx_packets: AtomicU64::new(0),
                    tx_packets: AtomicU64::new(0),
                })
            })
            .collect();
        Arc::new(Self {
            key,
            limiter,
            mesh: Mesh {
                peers,
                by_key,
                router,
            },
            tun,
            udp,
            counters: Counters::default(),
            stop: AtomicBool::new(false),
        })
    }

    /// Starts the TUN, UDP and timer threads.
    pub(crate) fn start(self: &Arc<Self>) -> std::io::Result<Vec<JoinHandle<()>>> {
        let spawn = |name: &str, f: fn(&Dataplane)| {
            let me = Arc::clone(self);
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || f(&me))
        };
        Ok(vec![
            spawn("weft-tun", Dataplane::tun_loop)?,
            spawn("weft-udp", Dataplane::udp_loop)?,
            spawn("weft-timers", Dataplane::timer_loop)?,
        ])
    }

    /// Asks the threads to finish; they notice within [`POLL_MS`].
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    pub(crate) fn interface(&self) -> &str {
        self.tun.name()
    }

    pub(crate) fn peers(&self) -> Vec<PeerReport> {
        self.mesh
            .peers
            .iter()
            .map(|p| {
                let (stats, endpoint) = {
                    let st = p.state.lock();
                    (st.session.stats(), st.endpoint)
                };
                PeerReport {
                    public_key: p.spec.public_key,
                    endpoint,
                    allowed_ips: p.spec.allowed_ips.clone(),
                    persistent_keepalive: p.spec.persistent_keepalive,
                    since_handshake: stats.since_handshake,
                    rx_bytes: stats.rx_bytes,
                    tx_bytes: stats.tx_bytes,
                    rx_packets: p.rx_packets.load(Ordering::Relaxed),
                    tx_packets: p.tx_packets.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    fn send(&self, bytes: &[u8], to: SocketAddr) {
        self.send_segments(bytes, None, to);
    }

    fn send_segments(&self, bytes: &[u8], segment: Option<usize>, to: SocketAddr) {
        if let Err(e) = self.udp.send(bytes, segment, to) {
            bump(&self.counters.udp_send_errors);
            tracing::debug!(%to, error = %e, "UDP send failed");
        }
    }

    fn count_session_error(&self, e: SessionError) {
        bump(&self.counters.session[e.index()]);
    }

    /// TUN -> router -> session -> UDP. Packets are read until the device is empty (or
    /// a batch is full); their ciphertexts for one endpoint go out in one GSO send.
    fn tun_loop(&self) {
        let mut packet = vec![0u8; BUF];
        let mut scratch = vec![0u8; BUF];
        let mut batch = TxBatch::new(self.udp.max_segments());
        let mut in_batch = 0;
        while !self.stopping() {
            match self.tun.read(&mut packet) {
                Ok(n) => {
                    self.handle_outbound(&packet[..n], &mut scratch, &mut batch);
                    in_batch += 1;
                    if in_batch >= TX_BATCH {
                        batch.flush(self);
                        in_batch = 0;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    batch.flush(self);
                    in_batch = 0;
                    if let Err(e) = wait_readable(self.tun.fd(), POLL_MS) {
                        tracing::error!(error = %e, "polling the TUN device failed");
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(error = %e, "reading the TUN device failed");
                    return;
                }
            }
        }
    }

    fn handle_outbound(&self, packet: &[u8], scratch: &mut [u8], batch: &mut TxBatch) {
        let peer_id = match self.mesh.router.outbound(packet) {
            Ok((peer, _)) => peer,
            Err(reason) => {
                bump(&self.counters.router[reason.index()]);
                return;
            }
        };
        let Some(peer) = self.mesh.peer(peer_id) else {
            bump(&self.counters.router[DropReason::NoRoute.index()]);
            return;
        };
        let mut st = peer.state.lock();
        let endpoint = st.endpoint;
        match st.session.encapsulate(packet, scratch) {
            Output::Network(bytes) => {
                drop(st);
                peer.tx_packets.fetch_add(1, Ordering::Relaxed);
                match endpoint {
                    Some(to) => batch.push(self, bytes, to),
                    None => bump(&self.counters.no_endpoint),
                }
            }
            Output::Done | Output::Tunnel(_) => {}
            Output::Error(e) => self.count_session_error(e),
        }
    }

    /// UDP -> session -> router -> TUN, a batch of datagrams per receive call.
    fn udp_loop(&self) {
        let slot = BUF.max(1500 * self.udp.gro_segments());
        let mut storage = vec![0u8; slot * RX_BATCH];
        let mut meta = vec![RecvMeta::default(); RX_BATCH];
        let mut out = vec![0u8; BUF];
        while !self.stopping() {
            let mut bufs: Vec<IoSliceMut<'_>> =
                storage.chunks_mut(slot).map(IoSliceMut::new).collect();
            let n = match self.udp.recv(&mut bufs, &mut meta) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = wait_readable(self.udp.fd(), POLL_MS) {
                        tracing::error!(error = %e, "polling the UDP socket failed");
                        return;
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here (e.g. port unreachable); keep going.
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            };
            for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
                let from = canonical(m.addr);
                let len = m.len.min(buf.len());
                for datagram in buf[..len].chunks(m.stride.max(1)) {
                    self.handle_datagram(datagram, from, &mut out);
                }
            }
        }
    }

    fn handle_datagram(&self, datagram: &[u8], from: SocketAddr, out: &mut [u8]) {
        let kind = match wire::classify(datagram) {
            Ok(k) => k,
            Err(e) => {
                bump(&self.counters.malformed_datagram);
                tracing::trace!(%from, error = %e, "dropped datagram");
                return;
            }
        };
        let peer_id = match kind.receiver() {
            Some(receiver) => Datagram::peer_slot(receiver),
            None => match identify_initiator(&self.key, &self.limiter, from.ip(), datagram, out) {
                Ok(Initiator::Peer(key)) => match self.mesh.by_key.get(&key) {
                    Some(id) => *id,
                    None => {
                        bump(&self.counters.unknown_peer);
                        tracing::debug!(%from, peer = %key, "handshake from a key that is not a peer");
                        return;
                    }
                },
                Ok(Initiator::CookieReply(cookie)) => {
                    self.send(cookie, from);
                    return;
                }
                Err(e) => {
                    self.count_session_error(e);
                    return;
                }
            },
        };
        let Some(peer) = self.mesh.peer(peer_id) else {
            bump(&self.counters.unknown_peer);
            return;
        };
        let authenticated = !matches!(kind, Datagram::CookieReply { .. });
        let mut st = peer.state.lock();
        match st.session.decapsulate(Some(from.ip()), datagram, out) {
            Output::Done => {
                if authenticated {
                    st.endpoint = Some(from);
                }
            }
            Output::Network(bytes) => {
                if authenticated {
                    st.endpoint = Some(from);
                }
                self.send(bytes, from);
                // Packets queued during the handshake go out now.
                while let Output::Network(bytes) = st.session.flush_queued(out) {
                    self.send(bytes, from);
                }
            }
            Output::Tunnel(packet) => {
                st.endpoint = Some(from);
                drop(st);
                match self.mesh.router.inbound(peer_id, packet) {
                    Ok(_) => {
                        peer.rx_packets.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = self.tun.write(packet) {
                            bump(&self.counters.tun_write_errors);
                            tracing::debug!(error = %e, "TUN write failed");
                        }
                    }
                    Err(reason) => {
                        bump(&self.counters.router[reason.index()]);
                        tracing::debug!(peer = %peer.spec.public_key, reason = reason.as_str(), "dropped decrypted packet");
                    }
                }
            }
            Output::Error(e) => self.count_session_error(e),
        }
    }

    /// WireGuard timers for every peer, and the handshake rate-limit window.
    fn timer_loop(&self) {
        let mut out = vec![0u8; BUF];
        // Peers with a persistent keepalive are contacted at once, as WireGuard does.
        for peer in &self.mesh.peers {
            if peer.spec.persistent_keepalive.is_some() {
                let mut st = peer.state.lock();
                if let (Some(to), Output::Network(b)) =
                    (st.endpoint, st.session.start_handshake(&mut out))
                {
                    self.send(b, to);
                }
            }
        }
        let mut last_reset = Instant::now();
        while !self.stopping() {
            std::thread::sleep(TICK);
            if last_reset.elapsed() >= Duration::from_secs(1) {
                self.limiter.reset_count();
                last_reset = Instant::now();
            }
            for peer in &self.mesh.peers {
                let mut st = peer.state.lock();
                let endpoint = st.endpoint;
                match st.session.tick(&mut out) {
                    Output::Network(bytes) => match endpoint {
                        Some(to) => self.send(bytes, to),
                        None => bump(&self.counters.no_endpoint),
                    },
                    Output::Error(SessionError::Expired) | Output::Done | Output::Tunnel(_) => {}
                    Output::Error(e) => self.count_session_error(e),
                }
            }
        }
    }
}

/// Ciphertexts waiting to be sent: consecutive datagrams of one size to one endpoint,
/// sent with one GSO call.
struct TxBatch {
    buf: Vec<u8>,
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run; nothing may follow it in this send.
    closed: bool,
    max_segments: usize,
}

impl TxBatch {
    fn new(max_segments: usize) -> Self {
        Self {
            buf: Vec::with_capacity(GSO_MAX_BYTES),
            to: None,
            segment: 0,
            count: 0,
            closed: false,
            max_segments,
        }
    }

    fn fits(&self, len: usize, to: SocketAddr) -> bool {
        self.count > 0
            && self.to == Some(to)
            && !self.closed
            && len <= self.segment
            && self.count < self.max_segments
            && self.buf.len() + len <= GSO_MAX_BYTES
    }

    fn push(&mut self, dp: &Dataplane, datagram: &[u8], to: SocketAddr) {
        if !self.fits(datagram.len(), to) {
            self.flush(dp);
            self.to = Some(to);
            self.segment = datagram.len();
        }
        self.buf.extend_from_slice(datagram);
        self.count += 1;
        self.closed = datagram.len() < self.segment;
    }

    fn flush(&mut self, dp: &Dataplane) {
        if let (Some(to), true) = (self.to, self.count > 0) {
            let segment = (self.count > 1).then_some(self.segment);
            dp.send_segments(&self.buf, segment, to);
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
        self.to = None;
    }
}
