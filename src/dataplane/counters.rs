//! Drop and error counters of the data plane, by stable name (PROTOCOL.md §3).

use std::sync::atomic::{AtomicU64, Ordering};
use weftnet_proto::multicast::McastDrop;
use weftnet_proto::router::DropReason;
use weftnet_proto::session::SessionError;

/// Packet and error counters, readable while the threads run.
#[derive(Default)]
pub(crate) struct Counters {
    router: [AtomicU64; DropReason::ALL.len()],
    session: [AtomicU64; SessionError::ALL.len()],
    mcast: [AtomicU64; McastDrop::ALL.len()],
    malformed_datagram: AtomicU64,
    unknown_peer: AtomicU64,
    no_endpoint: AtomicU64,
    control_queue_full: AtomicU64,
    broadcast_dropped: AtomicU64,
    tun_write_errors: AtomicU64,
    tun_offload_malformed: AtomicU64,
    udp_send_errors: AtomicU64,
    udp_async_errors: AtomicU64,
    pmtu_too_big: AtomicU64,
    mcast_too_big: AtomicU64,
    pmtu_probe_malformed: AtomicU64,
}

/// Adds one to a counter (the data plane's counters are all relaxed).
pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn bump_router(&self, r: DropReason) {
        bump(&self.router[r.index()]);
    }
    pub(crate) fn bump_session(&self, e: SessionError) {
        bump(&self.session[e.index()]);
    }
    pub(crate) fn bump_mcast(&self, e: McastDrop) {
        bump(&self.mcast[e.index()]);
    }
    pub(crate) fn bump_malformed(&self) {
        bump(&self.malformed_datagram);
    }
    pub(crate) fn bump_unknown_peer(&self) {
        bump(&self.unknown_peer);
    }
    pub(crate) fn bump_no_endpoint(&self) {
        bump(&self.no_endpoint);
    }
    pub(crate) fn bump_broadcast_dropped(&self) {
        bump(&self.broadcast_dropped);
    }
    pub(crate) fn bump_control_queue_full(&self) {
        bump(&self.control_queue_full);
    }
    pub(crate) fn bump_tun_write_error(&self) {
        bump(&self.tun_write_errors);
    }
    pub(crate) fn bump_tun_offload_malformed(&self) {
        bump(&self.tun_offload_malformed);
    }
    pub(crate) fn bump_udp_send_error(&self) {
        bump(&self.udp_send_errors);
    }
    pub(crate) fn bump_pmtu_too_big(&self) {
        bump(&self.pmtu_too_big);
    }
    pub(crate) fn bump_mcast_too_big(&self) {
        bump(&self.mcast_too_big);
    }
    pub(crate) fn bump_pmtu_probe_malformed(&self) {
        bump(&self.pmtu_probe_malformed);
    }
    pub(crate) fn add_udp_async_errors(&self, n: u64) {
        if n > 0 {
            self.udp_async_errors.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Every counter by its stable name.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut v: Vec<(&'static str, u64)> = DropReason::ALL
            .iter()
            .map(|r| (r.as_str(), load(&self.router[r.index()])))
            .collect();
        v.extend(
            SessionError::ALL
                .iter()
                .map(|e| (e.as_str(), load(&self.session[e.index()]))),
        );
        v.extend(
            McastDrop::ALL
                .iter()
                .filter(|e| **e != McastDrop::NotMulticast)
                .map(|e| (e.as_str(), load(&self.mcast[e.index()]))),
        );
        v.extend([
            ("malformed_datagram", load(&self.malformed_datagram)),
            ("unknown_peer", load(&self.unknown_peer)),
            ("no_endpoint", load(&self.no_endpoint)),
            ("control_queue_full", load(&self.control_queue_full)),
            ("broadcast_dropped", load(&self.broadcast_dropped)),
            ("tun_write_errors", load(&self.tun_write_errors)),
            ("tun_offload_malformed", load(&self.tun_offload_malformed)),
            ("udp_send_errors", load(&self.udp_send_errors)),
            ("udp_async_errors", load(&self.udp_async_errors)),
            ("pmtu_too_big", load(&self.pmtu_too_big)),
            ("mcast_too_big", load(&self.mcast_too_big)),
            ("pmtu_probe_malformed", load(&self.pmtu_probe_malformed)),
        ]);
        v
    }
}
