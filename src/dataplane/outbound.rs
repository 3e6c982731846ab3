//! TUN -> router -> session -> UDP. Packets are read until the device is empty (or a
//! batch is full); consecutive ciphertexts of one size for one endpoint leave in one
//! UDP GSO send. With the TUN's offloads on, one read may be a TCP super-packet of up
//! to 64 KiB: it is split into MTU-sized packets (`weftnet_proto::offload::split`)
//! whose ciphertexts then leave together in one or two GSO sends.

use super::mesh::{LivePeer, Mesh};
use super::multicast::has_multicast_dst;
use super::{Dataplane, BUF, POLL_MS};
use crate::tun::{wait_readable, Offload, Tun};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use weftnet_proto::multicast::{RateLimit, Replicator};
use weftnet_proto::offload::split;
use weftnet_proto::session::Output;

/// Packets read from the TUN device before their ciphertexts are flushed.
const TX_BATCH: usize = 64;
/// Largest UDP payload one GSO send may carry.
const GSO_MAX_BYTES: usize = 65000;

impl Dataplane {
    /// Reads the TUN device until stopped; fails if it cannot be read or polled.
    pub(super) fn tun_loop(&self) -> anyhow::Result<()> {
        // One byte budget for multicast and one for broadcast, each at the rate limit.
        let mut replicator = Replicator::new(self.multicast.filter.clone(), self.rate_limit());
        let mut broadcast_rate = self.rate_limit();
        self.drain(
            &self.tun,
            "the TUN device",
            |mesh, packet, scratch, batch| {
                if self.is_broadcast(packet) {
                    self.broadcast_out(mesh, &mut broadcast_rate, packet, scratch, batch);
                } else if has_multicast_dst(packet) {
                    self.multicast_out(mesh, &mut replicator, packet, scratch, batch);
                } else {
                    self.handle_outbound(mesh, packet, scratch, batch);
                }
            },
        )
    }

    /// A byte budget at `--multicast-rate-limit`, if one is set.
    pub(super) fn rate_limit(&self) -> Option<RateLimit> {
        self.multicast
            .rate_limit
            .map(|r| RateLimit::new(r, r.max(64 * 1024)))
    }

    /// Reads `device` (the TUN, or the L2 port) until stopped, handing each packet or
    /// frame to `handle` with the current peer set, a scratch buffer and the send batch.
    /// The batch is flushed every [`TX_BATCH`] reads and whenever the device is empty;
    /// the peer set is reloaded at each flush. Fails if `device` (named `what` in the
    /// error) cannot be read or polled.
    pub(super) fn drain(
        &self,
        device: &Tun,
        what: &str,
        mut handle: impl FnMut(&Mesh, &[u8], &mut [u8], &mut TxBatch),
    ) -> anyhow::Result<()> {
        let mut buf = vec![0u8; BUF];
        let mut scratch = vec![0u8; BUF];
        let offloaded = device.offload() != Offload::Off;
        // One segment of a super-packet at a time.
        let mut segment = if offloaded {
            vec![0u8; BUF]
        } else {
            Vec::new()
        };
        let mut batch = TxBatch::new(self.udp.max_segments());
        let mut in_batch = 0;
        let mut mesh = self.mesh.load_full();
        while !self.stopping() {
            match device.read(&mut buf) {
                Ok(n) if offloaded => {
                    let read = &mut buf[..n];
                    let split = split(read, &mut segment, |packet| {
                        handle(&mesh, packet, &mut scratch, &mut batch)
                    });
                    if let Err(e) = split {
                        self.counters.bump_tun_offload_malformed();
                        tracing::debug!(error = %e, "dropped a malformed offload read");
                    }
                    in_batch += 1;
                    if in_batch >= TX_BATCH {
                        batch.flush(self);
                        in_batch = 0;
                        mesh = self.mesh.load_full();
                    }
                }
                Ok(n) => {
                    handle(&mesh, &buf[..n], &mut scratch, &mut batch);
                    in_batch += 1;
                    if in_batch >= TX_BATCH {
                        batch.flush(self);
                        in_batch = 0;
                        mesh = self.mesh.load_full();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    batch.flush(self);
                    in_batch = 0;
                    wait_readable(device.fd(), POLL_MS)
                        .with_context(|| format!("polling {what}"))?;
                    mesh = self.mesh.load_full();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("reading {what}")),
            }
        }
        Ok(())
    }

    fn handle_outbound(&self, mesh: &Mesh, packet: &[u8], scratch: &mut [u8], batch: &mut TxBatch) {
        let peer_id = match mesh.router.outbound(packet) {
            Ok((peer, _)) => peer,
            Err(reason) => {
                self.counters.bump_router(reason);
                return;
            }
        };
        let Some(peer) = mesh.peer(peer_id) else {
            self.counters
                .bump_router(weftnet_proto::router::DropReason::NoRoute);
            return;
        };
        self.encrypt_to(peer, packet, scratch, batch);
    }

    /// Encrypts `packet` for `peer` and queues it for the peer's endpoint; returns
    /// whether a datagram was queued (without a session the packet waits for the
    /// handshake instead).
    pub(super) fn encrypt_to(
        &self,
        peer: &LivePeer,
        packet: &[u8],
        scratch: &mut [u8],
        batch: &mut TxBatch,
    ) -> bool {
        let mut st = peer.state.lock();
        let endpoint = st.endpoint;
        match st.session.encapsulate(packet, scratch) {
            Output::Network(bytes) => {
                drop(st);
                peer.tx_packets.fetch_add(1, Ordering::Relaxed);
                match endpoint {
                    Some(to) => {
                        batch.push(self, bytes, to);
                        return true;
                    }
                    None => self.counters.bump_no_endpoint(),
                }
            }
            Output::Done | Output::Tunnel(_) | Output::CookieReply(_) => {}
            Output::Error(e) => self.counters.bump_session(e),
        }
        false
    }
}

/// Ciphertexts waiting to be sent: consecutive datagrams of one size to one endpoint,
/// sent with one GSO call.
pub(super) struct TxBatch {
    buf: Vec<u8>,
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run; nothing may follow it in this send.
    closed: bool,
    max_segments: usize,
}

impl TxBatch {
    pub(super) fn new(max_segments: usize) -> Self {
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

    pub(super) fn push(&mut self, dp: &Dataplane, datagram: &[u8], to: SocketAddr) {
        if !self.fits(datagram.len(), to) {
            self.flush(dp);
            self.to = Some(to);
            self.segment = datagram.len();
        }
        self.buf.extend_from_slice(datagram);
        self.count += 1;
        self.closed = datagram.len() < self.segment;
    }

    pub(super) fn flush(&mut self, dp: &Dataplane) {
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
