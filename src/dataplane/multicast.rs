//! Multicast (and optional broadcast) on the packet path: replicating packets read from
//! the TUN device to the peers that have members (decided by
//! `weftnet_proto::multicast::Replicator`), handing snooped IGMP/MLD reports to the
//! control plane, delivering decrypted group traffic (to the TUN, or in bridge mode as
//! Ethernet frames to the L2 port), injecting the querier's queries (to both),
//! flooding IPv4 broadcast to every peer when enabled, and per-group counters.

use super::mesh::Mesh;
use super::outbound::TxBatch;
use super::Dataplane;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;
use weftnet_proto::multicast::{McastDrop, Port, RateLimit, Replicator};
use weftnet_proto::router::PeerId;

/// Groups tracked in the per-group counters; traffic to more groups is still carried,
/// only not counted per group.
const MAX_TRACKED_GROUPS: usize = 1024;

/// Whether an IP packet's destination is multicast (a cheap look at the first bytes).
pub(super) fn has_multicast_dst(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(16).is_some_and(|b| b & 0xf0 == 0xe0),
        Some(6) => packet.get(24) == Some(&0xff),
        _ => false,
    }
}

/// The IPv4 destination of a packet, if it is IPv4.
fn ipv4_dst(packet: &[u8]) -> Option<std::net::Ipv4Addr> {
    let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
    (packet.first().map(|v| v >> 4) == Some(4)).then(|| std::net::Ipv4Addr::from(b))
}

/// Per-group traffic counters (also their JSON form in `weftnet status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct GroupCounters {
    /// Packets read from the TUN and sent into the mesh (one per packet, not per copy).
    pub(crate) tx_packets: u64,
    pub(crate) tx_bytes: u64,
    /// Encrypted copies sent (one per subscribed node).
    pub(crate) tx_copies: u64,
    pub(crate) rx_packets: u64,
    pub(crate) rx_bytes: u64,
    pub(crate) drops: u64,
}

#[derive(Default)]
pub(super) struct GroupStats(Mutex<HashMap<IpAddr, GroupCounters>>);

impl GroupStats {
    fn update(&self, group: IpAddr, f: impl FnOnce(&mut GroupCounters)) {
        let mut map = self.0.lock();
        if let Some(c) = map.get_mut(&group) {
            f(c);
        } else if map.len() < MAX_TRACKED_GROUPS {
            f(map.entry(group).or_default());
        }
    }

    pub(super) fn snapshot(&self) -> Vec<(IpAddr, GroupCounters)> {
        let mut v: Vec<_> = self.0.lock().iter().map(|(g, c)| (*g, *c)).collect();
        v.sort_by_key(|(g, _)| *g);
        v
    }
}

fn dst_of(packet: &[u8]) -> Option<IpAddr> {
    weftnet_proto::packet::IpHeader::parse(packet)
        .ok()
        .map(|h| h.dst)
}

impl Dataplane {
    /// A multicast packet read from the TUN (or the bridge, or pod port `from` in
    /// chained mode): snoop it if it is IGMP/MLD, else send one encrypted copy to
    /// every peer with a member of its group, and in chained mode write a copy onto
    /// every member pod's veth but `from`.
    pub(super) fn multicast_out(
        &self,
        mesh: &Mesh,
        replicator: &mut Replicator,
        packet: &[u8],
        scratch: &mut [u8],
        batch: &mut TxBatch,
        from: Option<Port>,
    ) {
        let local = |group| {
            self.pods
                .as_ref()
                .is_some_and(|p| p.has_members(group, from))
        };
        let rep = match replicator.outbound_with(Instant::now(), packet, &mesh.membership, local) {
            Ok(rep) => rep,
            Err(McastDrop::Control) => {
                // A pod's report makes its own veth a member, and the node announces
                // the group; other link control (neighbour discovery) stops here.
                if let (Some(pods), Some(port)) = (&self.pods, from) {
                    if !pods.report(port, packet) {
                        self.counters.bump_mcast(McastDrop::Control);
                        return;
                    }
                }
                match &self.snoop {
                    Some(tx) => {
                        if tx.try_send(packet.to_vec()).is_err() {
                            self.counters.bump_control_queue_full();
                        }
                    }
                    None => self.counters.bump_mcast(McastDrop::Control),
                }
                return;
            }
            Err(e) => {
                self.counters.bump_mcast(e);
                if let (McastDrop::Filtered | McastDrop::RateLimited, Some(g)) = (e, dst_of(packet))
                {
                    self.group_stats.update(g, |c| c.drops += 1);
                }
                return;
            }
        };
        let mut copies = 0;
        for &peer_id in rep.peers {
            if let Some(peer) = mesh.peer(peer_id) {
                // Never fragmented: a copy too big for this peer's path is dropped.
                if peer.too_big(packet.len()).is_some() {
                    self.counters.bump_mcast_too_big();
                    continue;
                }
                if self.encrypt_to(peer, packet, scratch, batch) {
                    copies += 1;
                }
            }
        }
        if let Some(pods) = &self.pods {
            pods.deliver(packet, rep.header.dst, from);
        }
        let len = packet.len() as u64;
        self.group_stats.update(rep.header.dst, |c| {
            c.tx_packets += 1;
            c.tx_bytes += len;
            c.tx_copies += copies;
        });
    }

    /// A decrypted multicast packet from `peer_id`: delivered unchanged (one link: no
    /// TTL decrement) if its source belongs to that peer and the group is allowed; in
    /// bridge mode to the bridge (whose own stack receives it too), else to the TUN.
    pub(super) fn multicast_in(&self, mesh: &Mesh, peer_id: PeerId, packet: &[u8]) -> bool {
        match self.mcast_in.inbound(&mesh.router, peer_id, packet) {
            Ok(header) => {
                let len = packet.len() as u64;
                self.group_stats.update(header.dst, |c| {
                    c.rx_packets += 1;
                    c.rx_bytes += len;
                });
                if let Some(pods) = &self.pods {
                    pods.deliver(packet, header.dst, None);
                }
                if !self.write_l2(packet) {
                    if let Err(e) = self.write_tun(packet) {
                        self.counters.bump_tun_write_error();
                        tracing::debug!(error = %e, "TUN write failed");
                    }
                }
                true
            }
            Err(e) => {
                self.counters.bump_mcast(e);
                false
            }
        }
    }

    /// Whether `packet` goes to 255.255.255.255 or one of the overlay networks'
    /// directed broadcast addresses.
    pub(super) fn is_broadcast(&self, packet: &[u8]) -> bool {
        ipv4_dst(packet).is_some_and(|d| d.is_broadcast() || self.broadcast_addrs.contains(&d))
    }

    /// A broadcast read from the TUN: one copy to every peer when enabled.
    pub(super) fn broadcast_out(
        &self,
        mesh: &Mesh,
        rate: &mut Option<RateLimit>,
        packet: &[u8],
        scratch: &mut [u8],
        batch: &mut TxBatch,
    ) {
        if !self.multicast.broadcast {
            self.counters.bump_broadcast_dropped();
            return;
        }
        if let Some(r) = rate {
            if !r.allow(Instant::now(), packet.len()) {
                self.counters.bump_mcast(McastDrop::RateLimited);
                return;
            }
        }
        for peer in mesh.iter() {
            if peer.too_big(packet.len()).is_some() {
                self.counters.bump_mcast_too_big();
                continue;
            }
            self.encrypt_to(peer, packet, scratch, batch);
        }
    }

    /// A decrypted broadcast from `peer_id`: delivered when enabled and its source
    /// belongs to that peer.
    pub(super) fn broadcast_in(&self, mesh: &Mesh, peer_id: PeerId, packet: &[u8]) -> bool {
        if !self.multicast.broadcast {
            self.counters.bump_broadcast_dropped();
            return false;
        }
        match mesh.router.inbound(peer_id, packet) {
            Ok(_) => {
                if let Err(e) = self.write_tun(packet) {
                    self.counters.bump_tun_write_error();
                    tracing::debug!(error = %e, "TUN write failed");
                }
                true
            }
            Err(reason) => {
                self.counters.bump_router(reason);
                false
            }
        }
    }

    /// Writes a locally made packet (the querier's IGMP/MLD queries) into the TUN, as
    /// if it came from the link, in bridge mode to the bridge as well, and in chained
    /// mode onto every pod's veth.
    pub(crate) fn inject(&self, packet: &[u8]) {
        if let Err(e) = self.write_tun(packet) {
            self.counters.bump_tun_write_error();
            tracing::debug!(error = %e, "injecting a packet into the TUN failed");
        }
        self.write_l2(packet);
        if let Some(pods) = &self.pods {
            pods.write_all(packet);
        }
    }

    /// Per-group counters, sorted by group.
    pub(crate) fn group_counters(&self) -> Vec<(IpAddr, GroupCounters)> {
        self.group_stats.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_multicast_destinations() {
        let mut v4 = vec![0u8; 20];
        v4[0] = 0x45;
        v4[16] = 239;
        assert!(has_multicast_dst(&v4));
        v4[16] = 10;
        assert!(!has_multicast_dst(&v4));
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[24] = 0xff;
        assert!(has_multicast_dst(&v6));
        assert!(!has_multicast_dst(&[0x45]));
        assert!(!has_multicast_dst(&[]));
    }
}
