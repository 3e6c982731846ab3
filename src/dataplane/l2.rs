//! The L2 path of bridge mode: the thread that reads Ethernet frames from the TAP port
//! on the pods' bridge, and the writes of group traffic and queries back to it.
//!
//! Frames whose destination MAC is multicast and that carry IPv4/IPv6 with a multicast
//! destination go the way multicast read from the TUN goes (IGMP/MLD reports snooped,
//! group traffic replicated to the peers with members; see `multicast.rs`), with this
//! thread's own `Replicator` and rate budget. Everything else (ARP, unicast, broadcast,
//! VLAN-tagged frames) is ignored: unicast pod traffic is routed by the kernel through
//! the bridge's gateway address into the TUN.

use super::counters::bump;
use super::{Dataplane, BUF};
use crate::tun::Tun;
use std::sync::atomic::{AtomicU64, Ordering};
use weftnet_proto::ethernet::{self, Mac};
use weftnet_proto::multicast::Replicator;

/// The daemon's port on the pods' bridge.
pub(crate) struct L2Port {
    pub(crate) tap: Tun,
    /// Source MAC of the frames written (random, locally administered, unicast).
    pub(crate) mac: Mac,
}

/// Counters of the L2 port (`weftnet status`: `l2`, and errors in `drops`).
#[derive(Default)]
pub(crate) struct L2Counters {
    pub(super) read: AtomicU64,
    pub(super) ignored: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) written: AtomicU64,
    pub(super) write_errors: AtomicU64,
}

/// A snapshot of [`L2Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct L2Stats {
    /// Frames read from the bridge.
    pub(crate) rx_frames: u64,
    /// Frames read that are not multicast IP (ARP, unicast, broadcast, VLAN).
    pub(crate) ignored_frames: u64,
    /// Frames dropped as malformed (short, or a broken IP packet).
    pub(crate) malformed_frames: u64,
    /// Frames written to the bridge (group traffic from peers, queries).
    pub(crate) tx_frames: u64,
    pub(crate) write_errors: u64,
}

impl L2Counters {
    pub(crate) fn snapshot(&self) -> L2Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        L2Stats {
            rx_frames: load(&self.read),
            ignored_frames: load(&self.ignored),
            malformed_frames: load(&self.malformed),
            tx_frames: load(&self.written),
            write_errors: load(&self.write_errors),
        }
    }
}

impl Dataplane {
    /// Reads frames from the L2 port until stopped; fails if it cannot be read or
    /// polled, or if there is no L2 port (the thread is started only with one).
    pub(super) fn l2_loop(&self) -> anyhow::Result<()> {
        let Some(port) = &self.l2 else {
            anyhow::bail!("no L2 port to read");
        };
        let mut replicator = Replicator::new(self.multicast.filter.clone(), self.rate_limit());
        self.drain(&port.tap, "the L2 port", |mesh, frame, scratch, batch| {
            bump(&self.l2_counters.read);
            match ethernet::multicast_ip_packet(frame) {
                Ok(Some(packet)) => {
                    self.multicast_out(mesh, &mut replicator, packet, scratch, batch, None)
                }
                Ok(None) => bump(&self.l2_counters.ignored),
                Err(e) => {
                    bump(&self.l2_counters.malformed);
                    tracing::trace!(error = %e, "dropped frame from the bridge");
                }
            }
        })
    }

    /// Writes a multicast IP packet to the bridge as an Ethernet frame; returns false
    /// without an L2 port.
    pub(super) fn write_l2(&self, packet: &[u8]) -> bool {
        let Some(port) = &self.l2 else {
            return false;
        };
        let mut frame = [0u8; BUF];
        match ethernet::multicast_frame(packet, port.mac, &mut frame) {
            Some(n) => match port.tap.write(&frame[..n]) {
                Ok(_) => bump(&self.l2_counters.written),
                Err(e) => {
                    bump(&self.l2_counters.write_errors);
                    tracing::debug!(error = %e, "writing to the L2 port failed");
                }
            },
            None => bump(&self.l2_counters.write_errors),
        }
        true
    }

    /// The L2 port's name and counters, if there is one.
    pub(crate) fn l2_stats(&self) -> Option<(String, L2Stats)> {
        self.l2
            .as_ref()
            .map(|p| (p.tap.name().to_string(), self.l2_counters.snapshot()))
    }
}
