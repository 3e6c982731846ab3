//! Path MTU in the packet path (PROTOCOL.md §9): the timer thread sends each peer's
//! probes (`weftnet_proto::pmtu` decides which), the UDP thread answers probes and
//! takes acks, and the TUN thread answers a unicast packet too big for its peer's
//! path with an ICMP error written back into the TUN. The UDP socket sends with DF set
//! and never fragments (quinn-udp sets `IP_PMTUDISC_PROBE` / `IPV6_PMTUDISC_PROBE`).

use super::mesh::LivePeer;
use super::Dataplane;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use weftnet_proto::pmtu::probe::{self, Message};
use weftnet_proto::pmtu::{icmp, Probe};
use weftnet_proto::session::Output;

/// A tunnel is probed while it carried data in this window (RFC 8899: probe a path in
/// use); idle peers cost nothing.
const ACTIVE: Duration = Duration::from_secs(30);

/// ICMP errors written into the TUN per second, at most (the kernel rate-limits its
/// own too; this bounds the work a flood of large packets causes).
const ICMP_PER_SEC: u32 = 200;

/// A per-second budget of ICMP errors.
#[derive(Default)]
pub(super) struct IcmpBudget(Mutex<Option<(Instant, u32)>>);

impl IcmpBudget {
    fn take(&self, now: Instant) -> bool {
        let mut b = self.0.lock();
        match b.as_mut() {
            Some((start, n)) if now.duration_since(*start) < Duration::from_secs(1) => {
                *n += 1;
                *n <= ICMP_PER_SEC
            }
            _ => {
                *b = Some((now, 1));
                true
            }
        }
    }
}

impl Dataplane {
    /// Runs `peer`'s path MTU timers and sends its probes: only while a session is up
    /// and the endpoint known (no probe is lost for want of a handshake), and only
    /// while the tunnel carries data (within [`ACTIVE`]).
    pub(super) fn probe_tick(
        &self,
        peer: &LivePeer,
        now: Instant,
        plain: &mut [u8],
        out: &mut [u8],
    ) {
        let mut probes: Vec<Probe> = Vec::new();
        let mut st = peer.state.lock();
        let Some(to) = st.endpoint else { return };
        if st.session.stats().since_handshake.is_none() {
            return;
        }
        let tx = peer.tx_packets.load(Ordering::Relaxed);
        if tx != st.probe_seen_tx {
            st.probe_seen_tx = tx;
            st.last_tx_at = Some(now);
        }
        if st
            .last_tx_at
            .is_none_or(|t| now.duration_since(t) >= ACTIVE)
        {
            return;
        }
        st.pmtu.poll(now, &mut probes);
        for p in probes {
            let Some(n) = probe::write(
                Message::Probe {
                    id: p.id,
                    size: p.size,
                },
                plain,
            ) else {
                continue;
            };
            match st.session.encapsulate(&plain[..n], out) {
                Output::Network(bytes) => self.send(bytes, to),
                Output::Error(e) => self.counters.bump_session(e),
                _ => {}
            }
        }
        publish(peer, &st.pmtu);
    }

    /// A decrypted probe message from `peer` (whose datagram came from `from`):
    /// answers a probe with an ack, hands an ack to the search. `out` is free.
    pub(super) fn probe_in(
        &self,
        peer: &LivePeer,
        message: Message,
        from: SocketAddr,
        out: &mut [u8],
    ) {
        let mut st = peer.state.lock();
        match message {
            Message::Probe { id, size } => {
                let mut ack = [0u8; probe::MIN_LEN];
                if probe::write(Message::Ack { id, size }, &mut ack).is_none() {
                    return;
                }
                match st.session.encapsulate(&ack, out) {
                    Output::Network(bytes) => self.send(bytes, from),
                    Output::Error(e) => self.counters.bump_session(e),
                    _ => {}
                }
            }
            Message::Ack { id, size } => {
                st.pmtu.on_ack(Instant::now(), id, size);
                publish(peer, &st.pmtu);
            }
        }
    }

    /// Drops a unicast `packet` too big for its peer's path (`mtu`) and answers it
    /// with ICMP fragmentation-needed / packet-too-big into the TUN.
    pub(super) fn too_big_out(&self, packet: &[u8], mtu: usize, scratch: &mut [u8]) {
        self.counters.bump_pmtu_too_big();
        if !self.icmp_budget.take(Instant::now()) {
            return;
        }
        let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
        if let Some(n) = icmp::too_big(packet, mtu, scratch) {
            if let Err(e) = self.write_tun(&scratch[..n]) {
                self.counters.bump_tun_write_error();
                tracing::debug!(error = %e, "TUN write of an ICMP too-big error failed");
            }
        }
    }
}

/// Makes the search's MTU visible to the packet path (0: unknown).
fn publish(peer: &LivePeer, search: &weftnet_proto::pmtu::PathMtu) {
    let m = search.known_mtu().map_or(0, u32::from);
    peer.path_mtu.store(m, Ordering::Relaxed);
}
