//! TUN -> router -> session -> UDP. Packets are read until the device is empty (or a
//! batch is full); consecutive ciphertexts of one size for one endpoint leave in one
//! UDP GSO send. With the TUN's offloads on, one read may be a TCP super-packet of up
//! to 64 KiB: it is split into MTU-sized packets (`weftnet_proto::offload::split`)
//! whose ciphertexts then leave together in one or two GSO sends. Each worker reads
//! its own TUN queues (`super::worker`) and sends on its own UDP socket.

use super::mesh::{LivePeer, Mesh};
use super::multicast::has_multicast_dst;
use super::{Dataplane, BUF, POLL_MS};
use crate::tun::{wait_readable, Offload, Tun};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use weftnet_proto::affinity::Affinity;
use weftnet_proto::flow;
use weftnet_proto::multicast::RateLimit;
use weftnet_proto::offload::{split, VNET_HDR_LEN};
use weftnet_proto::session::Output;

/// Reads from a TUN queue before their ciphertexts are flushed and the worker turns
/// to its next queue or its UDP socket.
const TX_BATCH: usize = 64;
/// Bytes read from a TUN queue (one super-packet, or about 45 plain packets) before
/// the same: the most another flow's packet waits for at this queue.
const TX_BATCH_BYTES: usize = 64 * 1024;
/// Largest UDP payload one GSO send may carry.
const GSO_MAX_BYTES: usize = 65000;

/// The read side of a TUN queue (or the L2 port): its buffers and the send batch
/// its ciphertexts wait in.
pub(super) struct TunReader {
    buf: Vec<u8>,
    scratch: Vec<u8>,
    /// One segment of a super-packet at a time (empty without offloads).
    segment: Vec<u8>,
    offloaded: bool,
    batch: TxBatch,
}

impl TunReader {
    /// A reader of `device` whose ciphertexts leave from worker `lane`'s socket.
    pub(super) fn new(dp: &Dataplane, device: &Tun, lane: usize) -> Self {
        let offloaded = device.offload() != Offload::Off;
        Self {
            buf: vec![0u8; BUF],
            scratch: vec![0u8; BUF],
            segment: if offloaded {
                vec![0u8; BUF]
            } else {
                Vec::new()
            },
            offloaded,
            batch: TxBatch::new(dp.udp[lane].max_segments(), lane),
        }
    }

    /// Reads `device` until it is empty or a batch ([`TX_BATCH`] reads,
    /// [`TX_BATCH_BYTES`]) is done, handing each packet or frame to `handle` with the
    /// current peer set, a scratch buffer and the send batch, then sends the batch.
    /// With `woke` (the device was empty before), the first read's ciphertexts leave
    /// at once rather than after one more read, so a lone packet is not delayed.
    /// Each read is counted in `reads`, if given, and each TCP super-packet read is
    /// recorded in `affinity`, if given (its flow is bulk). Returns whether the device
    /// was found empty; fails if it cannot be read (named `what` in the error).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pump(
        &mut self,
        dp: &Dataplane,
        device: &Tun,
        what: &str,
        mut woke: bool,
        reads: Option<&AtomicU64>,
        mut affinity: Option<&mut Affinity>,
        mut handle: impl FnMut(&Mesh, &[u8], &mut [u8], &mut TxBatch),
    ) -> anyhow::Result<bool> {
        let mesh = dp.mesh.load();
        let (mut count, mut bytes) = (0, 0);
        let empty = loop {
            if count >= TX_BATCH || bytes >= TX_BATCH_BYTES {
                break false;
            }
            match device.read(&mut self.buf) {
                Ok(n) => {
                    if let Some(reads) = reads {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    count += 1;
                    bytes += n;
                    let (scratch, batch) = (&mut self.scratch, &mut self.batch);
                    if self.offloaded {
                        let read = &mut self.buf[..n];
                        let split = split(read, &mut self.segment, |packet| {
                            handle(&mesh, packet, scratch, batch)
                        });
                        match split {
                            Ok(segments) if segments > 1 => {
                                if let Some(affinity) = affinity.as_deref_mut() {
                                    // the split left addresses and ports as they were
                                    let packet = self.buf.get(VNET_HDR_LEN..n).unwrap_or_default();
                                    affinity.sent_bulk(flow::hash(packet), Instant::now());
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                dp.counters.bump_tun_offload_malformed();
                                tracing::debug!(error = %e, "dropped a malformed offload read");
                            }
                        }
                    } else {
                        handle(&mesh, &self.buf[..n], scratch, batch);
                    }
                    if woke {
                        self.batch.flush(dp);
                        woke = false;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.batch.flush(dp);
                    return Err(e).with_context(|| format!("reading {what}"));
                }
            }
        };
        self.batch.flush(dp);
        Ok(empty)
    }
}

impl Dataplane {
    /// Where a packet read from the TUN goes: to every node (broadcast), to the
    /// group's nodes (multicast), or to the peer that routes its destination.
    pub(super) fn route_out(
        &self,
        mesh: &Mesh,
        packet: &[u8],
        scratch: &mut [u8],
        batch: &mut TxBatch,
    ) {
        if self.is_broadcast(packet) {
            // One byte budget for multicast and one for broadcast, each at the rate
            // limit, for all workers together.
            let mut shared = self.tx_replication.lock();
            self.broadcast_out(mesh, &mut shared.broadcast_rate, packet, scratch, batch);
        } else if has_multicast_dst(packet) {
            let mut shared = self.tx_replication.lock();
            self.multicast_out(mesh, &mut shared.replicator, packet, scratch, batch, None);
        } else {
            self.handle_outbound(mesh, packet, scratch, batch);
        }
    }

    /// A byte budget at `--multicast-rate-limit`, if one is set.
    pub(super) fn rate_limit(&self) -> Option<RateLimit> {
        super::rate_limit(&self.multicast)
    }

    /// Reads `device` (the L2 port) until stopped, handing each frame to `handle`
    /// (see [`TunReader::pump`]); its ciphertexts leave from worker 0's socket. Fails
    /// if `device` (named `what` in the error) cannot be read or polled.
    pub(super) fn drain(
        &self,
        device: &Tun,
        what: &str,
        mut handle: impl FnMut(&Mesh, &[u8], &mut [u8], &mut TxBatch),
    ) -> anyhow::Result<()> {
        let mut reader = TunReader::new(self, device, 0);
        let mut woke = false;
        while !self.stopping() {
            if reader.pump(self, device, what, woke, None, None, &mut handle)? {
                woke = wait_readable(device.fd(), POLL_MS)
                    .with_context(|| format!("polling {what}"))?;
            } else {
                woke = false;
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
        if let Some(mtu) = peer.too_big(packet.len()) {
            self.too_big_out(packet, mtu, scratch);
            return;
        }
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
        let mut st = self.lock_peer(peer);
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

/// Endpoints with a run of ciphertexts open at once (multicast fan-out, several peers).
const MAX_RUNS: usize = 8;

/// Ciphertexts waiting to be sent, as one run per endpoint: consecutive datagrams of
/// one size (the last may be shorter) to one endpoint, sent with one GSO call. Copies of
/// a multicast packet for N nodes thus leave in N sends per batch, not N per packet.
pub(super) struct TxBatch {
    runs: Vec<Run>,
    max_segments: usize,
    /// The worker whose socket sends.
    lane: usize,
}

struct Run {
    buf: Vec<u8>,
    to: SocketAddr,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run; nothing may follow it in this send.
    closed: bool,
}

impl Run {
    fn fits(&self, len: usize, max_segments: usize) -> bool {
        self.count > 0
            && !self.closed
            && len <= self.segment
            && self.count < max_segments
            && self.buf.len() + len <= GSO_MAX_BYTES
    }

    fn flush(&mut self, send: &mut impl FnMut(&[u8], Option<usize>, SocketAddr)) {
        if self.count > 0 {
            let segment = (self.count > 1).then_some(self.segment);
            send(&self.buf, segment, self.to);
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }
}

impl TxBatch {
    pub(super) fn new(max_segments: usize, lane: usize) -> Self {
        Self {
            runs: Vec::with_capacity(MAX_RUNS),
            max_segments,
            lane,
        }
    }

    pub(super) fn push(&mut self, dp: &Dataplane, datagram: &[u8], to: SocketAddr) {
        let lane = self.lane;
        self.push_with(datagram, to, &mut |b, seg, to| {
            dp.send_segments(lane, b, seg, to)
        });
    }

    pub(super) fn flush(&mut self, dp: &Dataplane) {
        let lane = self.lane;
        self.flush_with(&mut |b, seg, to| dp.send_segments(lane, b, seg, to));
    }

    /// Queues `datagram` for `to`; runs that cannot take it go to `send` first.
    fn push_with(
        &mut self,
        datagram: &[u8],
        to: SocketAddr,
        send: &mut impl FnMut(&[u8], Option<usize>, SocketAddr),
    ) {
        let i = match self.runs.iter().position(|r| r.to == to) {
            Some(i) => i,
            None => {
                // A free run (flushed, empty), or a new one, or make room.
                match self.runs.iter().position(|r| r.count == 0) {
                    Some(i) => i,
                    None if self.runs.len() < MAX_RUNS => {
                        self.runs.push(Run {
                            buf: Vec::with_capacity(GSO_MAX_BYTES),
                            to,
                            segment: 0,
                            count: 0,
                            closed: false,
                        });
                        self.runs.len() - 1
                    }
                    None => {
                        self.flush_with(send);
                        0
                    }
                }
            }
        };
        let max_segments = self.max_segments;
        let run = &mut self.runs[i];
        if run.to != to || !run.fits(datagram.len(), max_segments) {
            run.flush(send);
            run.to = to;
            run.segment = datagram.len();
        }
        run.buf.extend_from_slice(datagram);
        run.count += 1;
        run.closed = datagram.len() < run.segment;
    }

    /// Sends every open run.
    fn flush_with(&mut self, send: &mut impl FnMut(&[u8], Option<usize>, SocketAddr)) {
        for run in &mut self.runs {
            run.flush(send);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Sent = Vec<(Vec<u8>, Option<usize>, SocketAddr)>;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, i], 51820))
    }

    #[test]
    fn copies_for_several_endpoints_leave_in_one_send_each() {
        let mut b = TxBatch::new(64, 0);
        let mut sent: Sent = Vec::new();
        let mut send = |buf: &[u8], seg: Option<usize>, to| sent.push((buf.to_vec(), seg, to));
        // Three copies of each of five packets, interleaved as multicast replication
        // produces them.
        for p in 0..5u8 {
            for n in 1..=3 {
                b.push_with(&[p; 100], addr(n), &mut send);
            }
        }
        b.flush_with(&mut send);
        assert_eq!(sent.len(), 3);
        for (i, (buf, seg, to)) in sent.iter().enumerate() {
            assert_eq!(*to, addr(i as u8 + 1));
            assert_eq!(*seg, Some(100));
            let want: Vec<u8> = (0..5u8).flat_map(|p| [p; 100]).collect();
            assert_eq!(buf, &want);
        }
    }

    #[test]
    fn a_short_datagram_ends_a_run_and_order_per_endpoint_is_kept() {
        let mut b = TxBatch::new(64, 0);
        let mut sent: Sent = Vec::new();
        let mut send = |buf: &[u8], seg: Option<usize>, to| sent.push((buf.to_vec(), seg, to));
        b.push_with(&[1; 100], addr(1), &mut send);
        b.push_with(&[2; 60], addr(1), &mut send);
        b.push_with(&[3; 100], addr(1), &mut send);
        b.push_with(&[4; 50], addr(1), &mut send);
        b.flush_with(&mut send);
        let lens: Vec<(usize, Option<usize>)> = sent.iter().map(|s| (s.0.len(), s.1)).collect();
        assert_eq!(lens, vec![(160, Some(100)), (150, Some(100))]);
        assert_eq!(sent[0].0[100], 2);
        assert_eq!(sent[1].0[0], 3);
    }

    #[test]
    fn segment_limit_and_too_many_endpoints_flush_early() {
        let mut b = TxBatch::new(2, 0);
        let sent = std::cell::RefCell::new(Sent::new());
        let mut send =
            |buf: &[u8], seg: Option<usize>, to| sent.borrow_mut().push((buf.to_vec(), seg, to));
        for _ in 0..3 {
            b.push_with(&[0; 10], addr(1), &mut send);
        }
        assert_eq!(sent.borrow().len(), 1, "two segments at most per send");
        for n in 2..=(MAX_RUNS as u8 + 1) {
            b.push_with(&[n; 10], addr(n), &mut send);
        }
        // The ninth endpoint needed room: everything open was sent.
        assert_eq!(sent.borrow().len(), 1 + MAX_RUNS);
        b.flush_with(&mut send);
        assert_eq!(sent.borrow().len(), 2 + MAX_RUNS);
        let total: usize = sent.borrow().iter().map(|s| s.0.len()).sum();
        assert_eq!(total, 10 * (3 + MAX_RUNS));
    }
}
