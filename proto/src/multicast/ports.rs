//! Chained mode's pod ports ([`PodPorts`]): which pod interfaces (the host-side veths
//! another CNI made, one per pod) get a copy of a group's traffic, learned per port
//! from the IGMP/MLD reports read on that port.
//!
//! In chained mode every pod sits on its own point-to-point link (a veth) to the node,
//! and multicast is delivered by writing the frame onto the veths of the member pods
//! only: TTL 1 traffic is never routed. A port is keyed by the daemon's handle for
//! the veth (its interface index) and carries the pod's addresses, as the chained CNI
//! plugin recorded them. Each port has its own [`GroupTable`] (the link has one
//! listener, the pod's kernel), so a pod's leave only ends its own membership, and an
//! MLD report from the pod's link-local address counts for the port it arrived on.
//!
//! [`PodPorts::admit`] checks what a port sends before anything else: a port that is
//! not a pod's is unknown, and a packet whose source is not one of the port's pod
//! addresses is foreign (a pod cannot send group traffic, or report, as another pod),
//! except that IGMP/MLD control may come from the unspecified address and MLD from an
//! IPv6 link-local one (RFC 3810 §5.2.13 makes hosts report from it).

use super::groups::{GroupConfig, GroupTable};
use super::listeners::{packet_source, MAX_LISTENERS};
use super::policy::GroupFilter;
use super::querier::Querier;
use super::{is_link_control, Control};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// A pod port: the daemon's handle for a pod's host-side interface.
pub type Port = u32;

/// Why a packet read from a pod port is not taken. The names are stable (status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortDrop {
    /// The port is no pod's (another interface, or a pod gone since).
    UnknownPort,
    /// The source address is not the pod's own.
    ForeignSource,
    /// Not a parseable IPv4/IPv6 packet.
    Malformed,
}

impl PortDrop {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownPort => "unknown_port",
            Self::ForeignSource => "foreign_source",
            Self::Malformed => "malformed",
        }
    }
}

/// The pod ports, their memberships, and who gets each group.
#[derive(Debug, Clone)]
pub struct PodPorts {
    config: GroupConfig,
    filter: GroupFilter,
    addresses: BTreeMap<Port, Vec<IpAddr>>,
    tables: BTreeMap<Port, GroupTable>,
    /// Group -> member ports, sorted: rebuilt on every change.
    members: HashMap<IpAddr, Vec<Port>>,
}

impl PodPorts {
    /// No port yet. Groups `filter` rejects are never tracked.
    pub fn new(config: GroupConfig, filter: GroupFilter) -> Self {
        Self {
            config,
            filter,
            addresses: BTreeMap::new(),
            tables: BTreeMap::new(),
            members: HashMap::new(),
        }
    }

    /// Replaces the ports (each with its pod's addresses; at most [`MAX_LISTENERS`]
    /// are kept). A port that is gone, or now has other addresses (the interface
    /// index went to another pod), loses its memberships. Returns the ports that are
    /// new (or now another pod's): send them [`Self::general_queries`], so that their
    /// pods report at once rather than at the next periodic query (a restarted node
    /// learns its pods' memberships this way).
    pub fn set_ports(&mut self, ports: impl IntoIterator<Item = (Port, Vec<IpAddr>)>) -> Vec<Port> {
        let mut next: BTreeMap<Port, Vec<IpAddr>> = BTreeMap::new();
        for (port, mut addrs) in ports {
            if next.len() >= MAX_LISTENERS && !next.contains_key(&port) {
                continue;
            }
            addrs.sort();
            addrs.dedup();
            next.insert(port, addrs);
        }
        let old = std::mem::replace(&mut self.addresses, next);
        self.tables
            .retain(|port, _| old.contains_key(port) && old.get(port) == self.addresses.get(port));
        self.rebuild();
        self.addresses
            .iter()
            .filter(|(port, addrs)| old.get(port) != Some(addrs))
            .map(|(port, _)| *port)
            .collect()
    }

    /// An IGMPv3 and an MLDv2 general query (from `0.0.0.0` and `fe80::1`, as the
    /// node's querier sends them), for a new port.
    pub fn general_queries(&self) -> [Vec<u8>; 2] {
        let q = Querier::new(self.config.clone(), Instant::now());
        [
            q.igmp_general_query(Ipv4Addr::UNSPECIFIED),
            q.mld_general_query(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        ]
    }

    /// How many ports there are.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// Whether there is no port.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// Every port (for queries, which go to all of them).
    pub fn ports(&self) -> impl Iterator<Item = Port> + '_ {
        self.addresses.keys().copied()
    }

    /// Whether `port` may send `packet` (an IP packet read from it).
    pub fn admit(&self, port: Port, packet: &[u8]) -> Result<(), PortDrop> {
        let Some(addrs) = self.addresses.get(&port) else {
            return Err(PortDrop::UnknownPort);
        };
        let src = packet_source(packet).ok_or(PortDrop::Malformed)?;
        if addrs.contains(&src) {
            return Ok(());
        }
        let control = is_link_control(packet).map_err(|_| PortDrop::Malformed)?;
        let own_link = match src {
            IpAddr::V4(a) => a.is_unspecified(),
            IpAddr::V6(a) => a.is_unspecified() || a.segments()[0] & 0xffc0 == 0xfe80,
        };
        if control && own_link {
            Ok(())
        } else {
            Err(PortDrop::ForeignSource)
        }
    }

    /// Applies a report (or leave) read from `port`; ignored for an unknown port.
    pub fn handle_report(&mut self, now: Instant, port: Port, msg: &Control) {
        if !self.addresses.contains_key(&port) {
            return;
        }
        let table = self
            .tables
            .entry(port)
            .or_insert_with(|| GroupTable::new(self.config.clone(), self.filter.clone()));
        table.handle_report(now, msg);
        self.settle(now);
    }

    /// Expires memberships whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.settle(now);
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tables
            .values()
            .filter_map(GroupTable::poll_timeout)
            .min()
    }

    /// The member ports of `group`, sorted.
    pub fn members(&self, group: IpAddr) -> &[Port] {
        self.members.get(&group).map_or(&[], Vec::as_slice)
    }

    /// Whether a port other than `except` is a member of `group`.
    pub fn has_members(&self, group: IpAddr, except: Option<Port>) -> bool {
        self.members(group).iter().any(|p| Some(*p) != except)
    }

    fn settle(&mut self, now: Instant) {
        let mut changed = false;
        for t in self.tables.values_mut() {
            t.handle_timeout(now);
            while t.poll_event().is_some() {}
            changed |= t.take_changed();
        }
        let before = self.tables.len();
        self.tables.retain(|_, t| !t.is_empty());
        if changed || before != self.tables.len() {
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        let mut members: HashMap<IpAddr, Vec<Port>> = HashMap::new();
        for (port, t) in &self.tables {
            for group in t.groups() {
                members.entry(group).or_default().push(*port);
            }
        }
        self.members = members;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicast::igmp::tests::{hex, vectors as v4};
    use crate::multicast::mld::tests::vectors as v6;
    use crate::multicast::parse_control;
    use std::time::Duration;

    fn a(s: &str) -> IpAddr {
        s.parse().expect("addr")
    }

    /// The IGMP vectors are sent by 10.47.0.1 and name 239.1.2.3 among others.
    const POD: &str = "10.47.0.1";
    const GROUP: &str = "239.1.2.3";

    fn ports() -> PodPorts {
        let mut p = PodPorts::new(GroupConfig::default(), GroupFilter::default());
        p.set_ports([(7, vec![a(POD)]), (8, vec![a("10.47.0.2")])]);
        p
    }

    fn report(p: &mut PodPorts, now: Instant, port: Port, vector: &str) {
        let packet = hex(vector);
        p.admit(port, &packet).expect("admitted");
        let control = parse_control(&packet).expect("control");
        p.handle_report(now, port, &control);
    }

    #[test]
    fn a_join_makes_only_its_port_a_member_and_a_leave_ends_it() {
        let t0 = Instant::now();
        let mut p = ports();
        report(&mut p, t0, 7, v4::V3_JOIN);
        assert_eq!(p.members(a(GROUP)), &[7]);
        assert!(p.has_members(a(GROUP), None));
        assert!(
            !p.has_members(a(GROUP), Some(7)),
            "never back to the sender"
        );
        assert!(p.members(a("239.9.9.9")).is_empty());
        report(&mut p, t0, 7, v4::V3_LEAVE);
        assert_eq!(
            p.members(a(GROUP)),
            &[7],
            "the leave waits the last member timeout"
        );
        let due = p.poll_timeout().expect("a deadline");
        assert!(due <= t0 + Duration::from_secs(2));
        p.handle_timeout(due);
        assert!(p.members(a(GROUP)).is_empty());
        assert!(p.poll_timeout().is_none());
    }

    #[test]
    fn v2_reports_and_expiry_without_queries() {
        let t0 = Instant::now();
        let mut p = ports();
        report(&mut p, t0, 7, v4::V2_JOIN);
        let g = parse_control(&hex(v4::V2_JOIN)).expect("control");
        let crate::multicast::Control::Igmp(crate::multicast::Message::Report { records, .. }) = g
        else {
            panic!("a report");
        };
        let group = IpAddr::V4(records[0].group);
        assert_eq!(p.members(group), &[7]);
        p.handle_timeout(t0 + GroupConfig::default().membership_interval());
        assert!(
            p.members(group).is_empty(),
            "no report for a membership interval"
        );
    }

    #[test]
    fn sources_are_checked_per_port() {
        let p = ports();
        let join = hex(v4::V3_JOIN);
        assert_eq!(p.admit(8, &join), Err(PortDrop::ForeignSource));
        assert_eq!(p.admit(9, &join), Err(PortDrop::UnknownPort));
        assert_eq!(p.admit(7, &[]), Err(PortDrop::Malformed));
        // Group traffic from the pod's own address only.
        let mut data = hex(v4::DATA);
        data[12..16].copy_from_slice(&[10, 47, 0, 1]);
        assert_eq!(p.admit(7, &data), Ok(()));
        assert_eq!(p.admit(8, &data), Err(PortDrop::ForeignSource));
        // Not even from 0.0.0.0: only control may be.
        data[12..16].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(p.admit(7, &data), Err(PortDrop::ForeignSource));
    }

    #[test]
    fn mld_from_the_link_local_address_counts_for_its_port() {
        let t0 = Instant::now();
        let mut p = PodPorts::new(GroupConfig::default(), GroupFilter::default());
        p.set_ports([(3, vec![a("fd31::5")]), (4, vec![a("fd31::6")])]);
        report(&mut p, t0, 3, v6::V2_JOIN);
        assert_eq!(p.members(a("ff15::1234")), &[3]);
        report(&mut p, t0, 4, v6::V1_JOIN);
        assert_eq!(p.members(a("ff15::1234")), &[3, 4]);
        report(&mut p, t0, 3, v6::V2_LEAVE);
        p.handle_timeout(t0 + Duration::from_secs(3));
        assert_eq!(p.members(a("ff15::1234")), &[4]);
        // Group traffic from a link-local address is not the pod's.
        let mut data = vec![0x60, 0, 0, 0, 0, 8, 17, 1];
        data.extend_from_slice(&"fe80::1".parse::<std::net::Ipv6Addr>().expect("a").octets());
        data.extend_from_slice(
            &"ff15::1234"
                .parse::<std::net::Ipv6Addr>()
                .expect("a")
                .octets(),
        );
        data.extend_from_slice(&[0; 8]);
        assert_eq!(p.admit(3, &data), Err(PortDrop::ForeignSource));
    }

    #[test]
    fn a_port_gone_or_reused_loses_its_memberships() {
        let t0 = Instant::now();
        let mut p = ports();
        report(&mut p, t0, 7, v4::V3_JOIN);
        // Same ports, same addresses: kept, and nothing new to query.
        let new = p.set_ports([(8, vec![a("10.47.0.2")]), (7, vec![a(POD)])]);
        assert_eq!(p.members(a(GROUP)), &[7]);
        assert!(new.is_empty());
        // Index 7 now another pod's: its memberships were the old pod's, and it is
        // queried as new.
        let new = p.set_ports([(7, vec![a("10.47.0.9")]), (5, vec![a("10.47.0.5")])]);
        assert!(p.members(a(GROUP)).is_empty());
        assert_eq!(new, vec![5, 7]);
        p.set_ports([(7, vec![a("10.47.0.9")])]);
        let [igmp, mld] = p.general_queries();
        use crate::multicast::{Control, Message};
        let general = |c: Result<Control, _>| match c {
            Ok(Control::Igmp(Message::Query(q))) => q.group.is_none(),
            Ok(Control::Mld(Message::Query(q))) => q.group.is_none(),
            _ => false,
        };
        assert!(general(parse_control(&igmp)));
        assert!(general(parse_control(&mld)));
        assert_eq!(p.len(), 1);
        assert!(p.set_ports([]).is_empty());
        assert!(p.is_empty());
        // Reports from a port that is no pod's are ignored.
        let control = parse_control(&hex(v4::V3_JOIN)).expect("control");
        p.handle_report(t0, 7, &control);
        assert!(p.members(a(GROUP)).is_empty());
        assert_eq!(p.ports().count(), 0);
    }
}
