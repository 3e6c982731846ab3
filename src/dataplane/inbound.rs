//! UDP -> session -> router -> TUN, a batch of datagrams per receive call. Control
//! (gossip) datagrams are handed to the control plane unopened. With the TUN's
//! virtio-net header on, the decrypted unicast packets of one receive call are
//! coalesced (`weftnet_proto::offload::Coalescer`): consecutive TCP segments of a flow
//! reach the kernel as one super-packet in one write. Each worker receives on its own
//! UDP socket (`super::worker`); what it writes goes to one of its own TUN queues, so
//! the kernel sends that flow's replies to the same worker, unless the flow is bulk
//! (`weftnet_proto::affinity`): then to the queue of the flow's hash.

use super::mesh::Mesh;
use super::multicast::has_multicast_dst;
use super::{Dataplane, BUF};
use crate::tun::Offload;
use crate::udp::canonical;
use anyhow::Context;
use quinn_udp::RecvMeta;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;
use weftnet_proto::affinity::Affinity;
use weftnet_proto::offload::{Coalescer, VNET_HDR_LEN};
use weftnet_proto::pmtu::probe;
use weftnet_proto::session::{identify_initiator, Initiator, Output};
use weftnet_proto::wire::{self, Datagram};

/// A worker's delivery to the TUN: its coalescer when the TUN takes super-packets.
pub(super) struct Rx {
    gro: Option<Coalescer>,
    /// The delivering worker's index and its bulk flows (None: a thread that is no
    /// worker); see [`Dataplane::delivery_queue`].
    worker: Option<(usize, Affinity)>,
}

impl Rx {
    /// Delivery one packet per write (no coalescing), from a thread that is no worker.
    pub(super) fn plain() -> Self {
        Self {
            gro: None,
            worker: None,
        }
    }
}

/// Receive buffers per UDP receive call.
const RX_BATCH: usize = 8;
/// Receive calls before the worker turns to its TUN queue.
const RX_CALLS: usize = 8;
/// Bytes received (a GRO batch may hold 64 KiB) before the same.
const RX_BATCH_BYTES: usize = 64 * 1024;

/// Receive errors that repeat forever (no valid socket, bad buffers), unlike the
/// errors ICMP reports for earlier sends (connection refused, unreachable).
fn socket_unusable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT)
    )
}

/// The receive side of a worker's UDP socket: its buffers and its delivery to the
/// TUN.
pub(super) struct UdpReader {
    lane: usize,
    /// Bytes per receive buffer (a GRO batch fits).
    slot: usize,
    storage: Vec<u8>,
    meta: Vec<RecvMeta>,
    out: Vec<u8>,
    rx: Rx,
}

impl UdpReader {
    pub(super) fn new(dp: &Dataplane, lane: usize) -> Self {
        let slot = BUF.max(1500 * dp.udp[lane].gro_segments());
        Self {
            lane,
            slot,
            storage: vec![0u8; slot * RX_BATCH],
            meta: vec![RecvMeta::default(); RX_BATCH],
            out: vec![0u8; BUF],
            rx: Rx {
                gro: (dp.tun[0].offload() != Offload::Off).then(Coalescer::new),
                worker: Some((lane, Affinity::new())),
            },
        }
    }

    /// The flows this worker sends in bulk, which its TUN reader records.
    pub(super) fn affinity(&mut self) -> Option<&mut Affinity> {
        self.rx.worker.as_mut().map(|(_, affinity)| affinity)
    }

    /// Receives until the socket is empty or a batch ([`RX_CALLS`] calls,
    /// [`RX_BATCH_BYTES`]) is done, handing each datagram to the session and the
    /// router; what a call decrypts reaches the TUN before the next call. Returns
    /// whether the socket was found empty (a call that fills fewer buffers than it
    /// has found it so, and saves the receive that would say so); fails if the
    /// socket is unusable.
    pub(super) fn pump(&mut self, dp: &Dataplane) -> anyhow::Result<bool> {
        let udp = &dp.udp[self.lane];
        let received = &dp.lane_udp_datagrams[self.lane];
        let mut bytes = 0;
        for _ in 0..RX_CALLS {
            if bytes >= RX_BATCH_BYTES {
                break;
            }
            // Fixed-size array: no allocation per receive call.
            let mut chunks = self.storage.chunks_mut(self.slot);
            let mut bufs: [IoSliceMut<'_>; RX_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or(&mut [])));
            let n = match udp.recv(&mut bufs, &mut self.meta) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if socket_unusable(&e) => {
                    return Err(e).context("receiving from the UDP socket");
                }
                Err(e) => {
                    // The error of an earlier send (e.g. port unreachable) surfaces
                    // here once; its details wait on the error queue.
                    tracing::debug!(error = %e, "UDP receive error");
                    dp.counters.add_udp_async_errors(udp.drain_errors());
                    continue;
                }
            };
            let mesh = dp.mesh.load();
            for (m, buf) in self.meta.iter().zip(bufs.iter()).take(n) {
                let from = canonical(m.addr);
                let len = m.len.min(buf.len());
                bytes += len;
                for datagram in buf[..len].chunks(m.stride.max(1)) {
                    received.fetch_add(1, Ordering::Relaxed);
                    dp.handle_datagram(&mesh, datagram, from, &mut self.out, &mut self.rx);
                }
            }
            if let Some(gro) = self.rx.gro.as_mut() {
                dp.flush_coalesced(gro, &mut self.rx.worker);
            }
            if n < RX_BATCH {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Dataplane {
    /// Writes a decrypted unicast packet to the TUN, or queues it for coalescing.
    fn deliver(&self, packet: &[u8], rx: &mut Rx) {
        match &mut rx.gro {
            Some(gro) => {
                if gro.is_full() {
                    self.flush_coalesced(gro, &mut rx.worker);
                }
                gro.push(packet);
            }
            None => {
                if let Err(e) = self.delivery_queue(&mut rx.worker, packet).write(packet) {
                    self.counters.bump_tun_write_error();
                    tracing::debug!(error = %e, "TUN write failed");
                }
            }
        }
    }

    /// Writes what the coalescer holds, one super-packet or packet per write, each to
    /// its delivery queue.
    fn flush_coalesced(&self, gro: &mut Coalescer, worker: &mut Option<(usize, Affinity)>) {
        gro.flush(|write| {
            let packet = write.get(VNET_HDR_LEN..).unwrap_or_default();
            let queue = self.delivery_queue(worker, packet);
            if let Err(e) = queue.write_offloaded(write) {
                self.counters.bump_tun_write_error();
                tracing::debug!(error = %e, "TUN write failed");
            }
        });
    }

    pub(super) fn handle_datagram(
        &self,
        mesh: &Mesh,
        datagram: &[u8],
        from: SocketAddr,
        out: &mut [u8],
        rx: &mut Rx,
    ) {
        let kind = match wire::classify(datagram) {
            Ok(k) => k,
            Err(e) => {
                self.counters.bump_malformed();
                tracing::trace!(%from, error = %e, "dropped datagram");
                return;
            }
        };
        if kind == Datagram::Control {
            match &self.control {
                Some(tx) => {
                    if tx.try_send((from, datagram.to_vec())).is_err() {
                        self.counters.bump_control_queue_full();
                    }
                }
                None => self.counters.bump_malformed(),
            }
            return;
        }
        let peer_id = match kind.receiver() {
            Some(receiver) => Datagram::peer_slot(receiver),
            None => match identify_initiator(&self.key, &self.limiter, from.ip(), datagram, out) {
                Ok(Initiator::Peer(key)) => match mesh.slot_of(&key) {
                    Some(id) => id,
                    None => {
                        // Counted, and parked: gossip may make it a peer a moment
                        // from now.
                        self.counters.bump_unknown_peer();
                        self.parked.lock().park(key, from, datagram, Instant::now());
                        tracing::debug!(%from, peer = %key, "handshake from a key that is not a peer (yet): parked");
                        return;
                    }
                },
                Ok(Initiator::CookieReply(cookie)) => {
                    self.send(cookie, from);
                    return;
                }
                Err(e) => {
                    self.counters.bump_session(e);
                    return;
                }
            },
        };
        let Some(peer) = mesh.peer(peer_id) else {
            self.counters.bump_unknown_peer();
            return;
        };
        let authenticated = !matches!(kind, Datagram::CookieReply { .. });
        let mut st = self.lock_peer(peer);
        match st.session.decapsulate(Some(from.ip()), datagram, out) {
            Output::Done => {
                if authenticated {
                    st.endpoint = Some(from);
                }
            }
            Output::CookieReply(bytes) => self.send(bytes, from),
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
                if probe::is_probe(packet) {
                    match probe::parse(packet) {
                        Ok(message) => self.probe_in(peer, message, from, out),
                        Err(_) => self.counters.bump_pmtu_probe_malformed(),
                    }
                    return;
                }
                if self.is_broadcast(packet) {
                    if self.broadcast_in(mesh, peer_id, packet) {
                        peer.rx_packets.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                if has_multicast_dst(packet) {
                    if self.multicast_in(mesh, peer_id, packet) {
                        peer.rx_packets.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                match mesh.router.inbound(peer_id, packet) {
                    Ok(_) => {
                        peer.rx_packets.fetch_add(1, Ordering::Relaxed);
                        self.deliver(packet, rx);
                    }
                    Err(reason) => {
                        self.counters.bump_router(reason);
                        tracing::debug!(%from, reason = reason.as_str(), "dropped decrypted packet");
                    }
                }
            }
            Output::Error(e) => self.counters.bump_session(e),
        }
    }
}
