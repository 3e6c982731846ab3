//! The node's multicast memberships per listener, with the policy verdict in the report
//! path ([`Listeners`], [`ReceivePolicy`]; PROTOCOL.md §7.11 rule 3).
//!
//! A listener is the source address of the IGMP/MLD reports it sends: this host's
//! kernel on the overlay interface, or a pod (or the host's bridge interface) on the
//! bridge. Each listener gets its own [`GroupTable`], so one pod's leave never cuts
//! another pod's membership short, and every membership the snooper saw is kept with
//! its listener whatever the policy says.
//!
//! The node announces a group (PROTOCOL.md §7.5) only while at least one listener that
//! the [`ReceivePolicy`] allows to receive it is a member. A report that joins a group
//! its listener may not receive is *refused*: counted ([`Listeners::refused`]), shown
//! ([`Listeners::denied`]), and it makes no one a member. Because the memberships are
//! kept, a policy change ([`Listeners::set_policy`]) takes effect at once in both
//! directions: a newly allowed listener that had reported is a member again without
//! waiting for its next report, a newly denied one stops counting.
//!
//! Reports are never "sending" (rule 1 of §7.11 does not apply to them): a report
//! asks to receive, so only the receiving verdict governs it.
//!
//! The unspecified address (`::`, `0.0.0.0`) names no listener: an IPv6 host sends its
//! MLD reports from `::` while its link-local address is tentative (duplicate address
//! detection), then from that address. So a join from `::` counts only while the
//! policy restricts no local address, and a leave from any IPv6 listener also ends the
//! `::` membership of that group (the host that joined from `::` leaves from its
//! link-local address; the membership is not left to expire on its timer).

use super::groups::{GroupConfig, GroupTable};
use super::policy::GroupFilter;
use super::{Control, GroupRecord, Message, RecordType};
use crate::policy::AddrSet;
use crate::prefix_table::PrefixTable;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// Most listeners tracked; reports from more are ignored and counted
/// ([`Listeners::overflowed`]). A node has a few hundred pods at most.
pub const MAX_LISTENERS: usize = 1024;

/// Which groups each local address may receive: for each local prefix (a pod's
/// address, a standalone `[[policy]]` prefix), `None` for any group or the set of
/// groups it may receive. An address in no prefix may receive every group. The
/// longest matching prefix decides.
#[derive(Debug, Clone, Default)]
pub struct ReceivePolicy {
    entries: Vec<(IpNet, Option<AddrSet>)>,
    table: PrefixTable<Option<AddrSet>>,
}

impl PartialEq for ReceivePolicy {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for ReceivePolicy {}

impl ReceivePolicy {
    /// The policy of these prefixes (a prefix given twice keeps its last set).
    pub fn new(entries: impl IntoIterator<Item = (IpNet, Option<AddrSet>)>) -> Self {
        let mut map = BTreeMap::new();
        for (net, groups) in entries {
            map.insert(net.trunc(), groups);
        }
        let mut table = PrefixTable::new();
        for (net, groups) in &map {
            table.insert(*net, groups.clone());
        }
        Self {
            entries: map.into_iter().collect(),
            table,
        }
    }

    /// Whether `listener` may receive `group`. The unspecified address names no one:
    /// it may receive only while no prefix is restricted.
    pub fn allows(&self, listener: IpAddr, group: IpAddr) -> bool {
        if listener.is_unspecified() {
            return self.is_open();
        }
        match self.table.lookup(listener) {
            None | Some(None) => true,
            Some(Some(groups)) => groups.contains(group),
        }
    }

    /// How many prefixes are restricted (may not receive every group).
    pub fn restricted(&self) -> usize {
        self.entries.iter().filter(|(_, g)| g.is_some()).count()
    }

    /// Whether no prefix is restricted.
    pub fn is_open(&self) -> bool {
        self.entries.iter().all(|(_, g)| g.is_none())
    }
}

/// The source address of an IPv4 or IPv6 packet (`None` if too short).
pub fn packet_source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Whether a report record asks to receive its group (a leave or a block does not).
fn joins<A>(r: &GroupRecord<A>) -> bool {
    match r.mode {
        RecordType::ModeIsExclude | RecordType::ChangeToExclude => true,
        RecordType::ModeIsInclude | RecordType::ChangeToInclude | RecordType::AllowNewSources => {
            !r.sources.is_empty()
        }
        RecordType::BlockOldSources => false,
    }
}

/// The groups an MLD message leaves: a Done, or an MLDv2 record that stops asking to
/// receive (`TO_IN {}`, `IS_IN {}`).
fn left_groups(msg: &Control) -> Vec<Ipv6Addr> {
    match msg {
        Control::Mld(Message::Leave { group }) => vec![*group],
        Control::Mld(Message::Report { records, .. }) => records
            .iter()
            .filter(|r| {
                matches!(
                    r.mode,
                    RecordType::ChangeToInclude | RecordType::ModeIsInclude
                ) && r.sources.is_empty()
            })
            .map(|r| r.group)
            .collect(),
        _ => Vec::new(),
    }
}

/// The groups a report asks to receive.
fn joined_groups(msg: &Control) -> Vec<IpAddr> {
    fn of<A: Copy + Into<IpAddr>>(m: &Message<A>) -> Vec<IpAddr> {
        match m {
            Message::Report { records, .. } => records
                .iter()
                .filter(|r| joins(r))
                .map(|r| r.group.into())
                .collect(),
            _ => Vec::new(),
        }
    }
    match msg {
        Control::Igmp(m) => of(m),
        Control::Mld(m) => of(m),
    }
}

/// Every listener's memberships, and the groups the node announces under the policy.
#[derive(Debug, Clone)]
pub struct Listeners {
    config: GroupConfig,
    filter: GroupFilter,
    policy: ReceivePolicy,
    tables: BTreeMap<IpAddr, GroupTable>,
    announced: BTreeSet<IpAddr>,
    changed: bool,
    refused: u64,
    overflowed: u64,
}

impl Listeners {
    /// No listener yet, every group open. Groups `filter` rejects are never tracked.
    pub fn new(config: GroupConfig, filter: GroupFilter) -> Self {
        Self {
            config,
            filter,
            policy: ReceivePolicy::default(),
            tables: BTreeMap::new(),
            announced: BTreeSet::new(),
            changed: false,
            refused: 0,
            overflowed: 0,
        }
    }

    /// Applies a report (or leave) that `listener` sent. Joins of groups the policy
    /// does not let `listener` receive are recorded but refused and counted.
    pub fn handle_report(&mut self, now: Instant, listener: IpAddr, msg: &Control) {
        self.expire(now);
        if !self.tables.contains_key(&listener) && self.tables.len() >= MAX_LISTENERS {
            self.overflowed += 1;
            return;
        }
        let table = self
            .tables
            .entry(listener)
            .or_insert_with(|| GroupTable::new(self.config.clone(), self.filter.clone()));
        table.handle_report(now, msg);
        for group in joined_groups(msg) {
            if table.contains(group) && !self.policy.allows(listener, group) {
                self.refused += 1;
            }
        }
        // The host that joined from `::` leaves from its own address: the `::`
        // membership of the group ends as a leave ends one (both its v1 and v2 state).
        let unspecified = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        if listener.is_ipv6() && listener != unspecified {
            if let Some(anon) = self.tables.get_mut(&unspecified) {
                for group in left_groups(msg) {
                    if anon.contains(IpAddr::V6(group)) {
                        anon.handle_report(now, &Control::Mld(Message::Leave { group }));
                        anon.handle_report(
                            now,
                            &Control::Mld(Message::Report {
                                version: 2,
                                records: vec![GroupRecord {
                                    group,
                                    mode: RecordType::ChangeToInclude,
                                    sources: vec![],
                                }],
                            }),
                        );
                    }
                }
            }
        }
        self.settle();
    }

    /// Replaces the policy; the announced groups follow at once.
    pub fn set_policy(&mut self, policy: ReceivePolicy) {
        if policy != self.policy {
            self.policy = policy;
            self.settle();
        }
    }

    /// Expires memberships whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        self.settle();
    }

    fn expire(&mut self, now: Instant) {
        for t in self.tables.values_mut() {
            t.handle_timeout(now);
        }
    }

    /// Drops empty tables and drained events, and recomputes the announced groups.
    fn settle(&mut self) {
        for t in self.tables.values_mut() {
            while t.poll_event().is_some() {}
            t.take_changed();
        }
        self.tables.retain(|_, t| !t.is_empty());
        let mut announced = BTreeSet::new();
        for (listener, t) in &self.tables {
            for group in t.groups() {
                if self.policy.allows(*listener, group) {
                    announced.insert(group);
                }
            }
        }
        if announced != self.announced {
            self.announced = announced;
            self.changed = true;
        }
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tables
            .values()
            .filter_map(GroupTable::poll_timeout)
            .min()
    }

    /// The groups with at least one allowed member, sorted: what this node announces.
    pub fn groups(&self) -> Vec<IpAddr> {
        self.announced.iter().copied().collect()
    }

    /// Whether [`Self::groups`] changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Memberships held but refused by the policy: (group, listener), sorted.
    pub fn denied(&self) -> Vec<(IpAddr, IpAddr)> {
        let mut v: Vec<(IpAddr, IpAddr)> = self
            .tables
            .iter()
            .flat_map(|(l, t)| t.groups().into_iter().map(move |g| (g, *l)))
            .filter(|(g, l)| !self.policy.allows(*l, *g))
            .collect();
        v.sort();
        v
    }

    /// Whether `listener` is an allowed member of `group`.
    pub fn is_member(&self, listener: IpAddr, group: IpAddr) -> bool {
        self.tables
            .get(&listener)
            .is_some_and(|t| t.contains(group))
            && self.policy.allows(listener, group)
    }

    /// Report records refused since start (a join of a group the listener may not
    /// receive).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Reports ignored because [`MAX_LISTENERS`] listeners were tracked, plus those
    /// ignored for a listener's full group budget.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
            + self
                .tables
                .values()
                .map(GroupTable::overflowed)
                .sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicast::parse_control;
    use std::time::Duration;

    fn a(s: &str) -> IpAddr {
        s.parse().expect("addr")
    }

    fn n(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn set(nets: &[&str]) -> AddrSet {
        let mut s = AddrSet::new();
        for x in nets {
            s.insert_net(n(x));
        }
        s
    }

    fn igmp_v2_report(group: Ipv4Addr) -> Control {
        Control::Igmp(Message::Report {
            version: 2,
            records: vec![GroupRecord {
                group,
                mode: RecordType::ModeIsExclude,
                sources: vec![],
            }],
        })
    }

    fn mld_v2(group: &str, mode: RecordType) -> Control {
        Control::Mld(Message::Report {
            version: 2,
            records: vec![GroupRecord {
                group: group.parse().expect("group"),
                mode,
                sources: vec![],
            }],
        })
    }

    const G: Ipv4Addr = Ipv4Addr::new(239, 9, 9, 9);

    #[test]
    fn a_denied_only_member_is_not_announced_and_is_counted() {
        let t0 = Instant::now();
        let mut l = Listeners::new(GroupConfig::default(), GroupFilter::default());
        // pod 10.244.2.2 may receive nothing; 10.244.2.3 only 239.1.0.0/16
        l.set_policy(ReceivePolicy::new([
            (n("10.244.2.2/32"), Some(AddrSet::new())),
            (n("10.244.2.3/32"), Some(set(&["239.1.0.0/16"]))),
        ]));
        l.handle_report(t0, a("10.244.2.2"), &igmp_v2_report(G));
        l.handle_report(t0, a("10.244.2.3"), &igmp_v2_report(G));
        assert!(l.groups().is_empty());
        assert!(!l.take_changed());
        assert_eq!(l.refused(), 2);
        assert_eq!(
            l.denied(),
            vec![
                (IpAddr::V4(G), a("10.244.2.2")),
                (IpAddr::V4(G), a("10.244.2.3"))
            ]
        );
        assert!(!l.is_member(a("10.244.2.2"), IpAddr::V4(G)));
        // an open listener (no policy selects it) makes the node announce
        l.handle_report(t0, a("10.244.2.4"), &igmp_v2_report(G));
        assert_eq!(l.groups(), vec![IpAddr::V4(G)]);
        assert!(l.take_changed());
        assert_eq!(l.refused(), 2);
        // an allowed group of the restricted pod is announced
        l.handle_report(
            t0,
            a("10.244.2.3"),
            &igmp_v2_report(Ipv4Addr::new(239, 1, 2, 3)),
        );
        assert_eq!(l.groups(), vec![a("239.1.2.3"), IpAddr::V4(G)]);
        assert_eq!(l.refused(), 2);
    }

    #[test]
    fn policy_changes_take_effect_without_a_new_report() {
        let t0 = Instant::now();
        let mut l = Listeners::new(GroupConfig::default(), GroupFilter::default());
        let deny = ReceivePolicy::new([(n("10.244.2.0/24"), Some(AddrSet::new()))]);
        l.set_policy(deny.clone());
        l.handle_report(t0, a("10.244.2.2"), &igmp_v2_report(G));
        assert!(l.groups().is_empty());
        // allowed at runtime: a member at once
        l.set_policy(ReceivePolicy::new([(
            n("10.244.2.0/24"),
            Some(set(&["239.9.9.0/24"])),
        )]));
        assert_eq!(l.groups(), vec![IpAddr::V4(G)]);
        assert!(l.take_changed());
        assert!(l.is_member(a("10.244.2.2"), IpAddr::V4(G)));
        // the same policy again changes nothing
        l.set_policy(ReceivePolicy::new([(
            n("10.244.2.0/24"),
            Some(set(&["239.9.9.0/24"])),
        )]));
        assert!(!l.take_changed());
        // denied again: withdrawn at once, and the membership still expires on time
        l.set_policy(deny);
        assert!(l.groups().is_empty());
        assert!(l.take_changed());
        assert_eq!(l.denied().len(), 1);
        let gmi = GroupConfig::default().membership_interval();
        assert_eq!(l.poll_timeout(), Some(t0 + gmi));
        l.handle_timeout(t0 + gmi);
        assert!(l.denied().is_empty());
        l.set_policy(ReceivePolicy::default());
        assert!(l.groups().is_empty(), "an expired membership came back");
    }

    #[test]
    fn one_listeners_leave_does_not_cut_anothers_membership() {
        let t0 = Instant::now();
        let mut l = Listeners::new(GroupConfig::default(), GroupFilter::default());
        l.handle_report(t0, a("10.244.1.2"), &igmp_v2_report(G));
        l.handle_report(t0, a("10.244.1.3"), &igmp_v2_report(G));
        l.handle_report(
            t0,
            a("10.244.1.2"),
            &Control::Igmp(Message::Leave { group: G }),
        );
        let t1 = t0 + Duration::from_secs(3);
        l.handle_timeout(t1);
        assert_eq!(l.groups(), vec![IpAddr::V4(G)]);
        assert!(!l.is_member(a("10.244.1.2"), IpAddr::V4(G)));
        assert!(l.is_member(a("10.244.1.3"), IpAddr::V4(G)));
        // a leave is no refused report, even for a denied group
        l.set_policy(ReceivePolicy::new([(
            n("10.244.1.3/32"),
            Some(AddrSet::new()),
        )]));
        assert!(l.groups().is_empty());
        l.handle_report(
            t1,
            a("10.244.1.3"),
            &Control::Igmp(Message::Leave { group: G }),
        );
        assert_eq!(l.refused(), 0);
    }

    #[test]
    fn mld_reports_follow_the_policy() {
        let t0 = Instant::now();
        let mut l = Listeners::new(GroupConfig::default(), GroupFilter::default());
        l.set_policy(ReceivePolicy::new([(
            n("fd00:244:2::/64"),
            Some(set(&["ff15::/16"])),
        )]));
        let pod = a("fd00:244:2::5");
        l.handle_report(t0, pod, &mld_v2("ff15::1", RecordType::ChangeToExclude));
        l.handle_report(t0, pod, &mld_v2("ff0e::1", RecordType::ChangeToExclude));
        assert_eq!(l.groups(), vec![a("ff15::1")]);
        assert_eq!(l.refused(), 1);
        assert_eq!(l.denied(), vec![(a("ff0e::1"), pod)]);
        // an MLDv2 leave of the refused group is not counted again
        l.handle_report(t0, pod, &mld_v2("ff0e::1", RecordType::ChangeToInclude));
        assert_eq!(l.refused(), 1);
        // an IPv4 policy entry never matches an IPv6 listener
        let v4only = ReceivePolicy::new([(n("10.0.0.0/8"), Some(AddrSet::new()))]);
        assert!(v4only.allows(pod, a("ff0e::1")));
        assert!(!v4only.is_open());
        assert!(ReceivePolicy::default().is_open());
    }

    fn mld_v1(group: &str) -> Control {
        Control::Mld(Message::Report {
            version: 1,
            records: vec![GroupRecord {
                group: group.parse().expect("group"),
                mode: RecordType::ModeIsExclude,
                sources: vec![],
            }],
        })
    }

    #[test]
    fn a_join_from_the_unspecified_address_ends_with_the_leave_from_the_link_local() {
        let t0 = Instant::now();
        let last = GroupConfig::default().last_member_timeout;
        let (anon, ll) = (a("::"), a("fe80::1"));
        for (join, leave) in [
            (
                mld_v2("ff05::9", RecordType::ChangeToExclude),
                mld_v2("ff05::9", RecordType::ChangeToInclude),
            ),
            (
                mld_v1("ff05::9"),
                Control::Mld(Message::Leave {
                    group: "ff05::9".parse().expect("group"),
                }),
            ),
        ] {
            let mut l = Listeners::new(GroupConfig::default(), GroupFilter::default());
            // joined during duplicate address detection, then again from fe80::1
            l.handle_report(t0, anon, &join);
            l.handle_report(t0 + Duration::from_secs(1), ll, &join);
            assert_eq!(l.groups(), vec![a("ff05::9")]);
            let t1 = t0 + Duration::from_secs(10);
            l.handle_report(t1, ll, &leave);
            // both memberships end after the last-member time, not the `::` one's 260 s
            l.handle_timeout(t1 + last);
            assert!(l.groups().is_empty(), "{join:?}: {:?}", l.denied());
            assert_eq!(l.poll_timeout(), None, "{join:?}");
        }
        // another group of `::` is left alone
        let mut l = Listeners::new(GroupConfig::default(), GroupFilter::default());
        l.handle_report(t0, anon, &mld_v2("ff05::9", RecordType::ChangeToExclude));
        l.handle_report(t0, ll, &mld_v2("ff05::a", RecordType::ChangeToExclude));
        l.handle_report(t0, ll, &mld_v2("ff05::a", RecordType::ChangeToInclude));
        l.handle_timeout(t0 + last);
        assert_eq!(l.groups(), vec![a("ff05::9")]);
    }

    #[test]
    fn a_join_from_the_unspecified_address_counts_only_under_an_open_policy() {
        let t0 = Instant::now();
        let mut l = Listeners::new(GroupConfig::default(), GroupFilter::default());
        l.handle_report(t0, a("::"), &mld_v2("ff05::9", RecordType::ChangeToExclude));
        assert_eq!(l.groups(), vec![a("ff05::9")]);
        // once any local address is restricted, `::` may be that address: refused
        l.set_policy(ReceivePolicy::new([(
            n("fd00:10:244:2::2/128"),
            Some(AddrSet::new()),
        )]));
        assert!(l.groups().is_empty());
        assert_eq!(l.denied(), vec![(a("ff05::9"), a("::"))]);
        l.handle_report(t0, a("::"), &mld_v2("ff05::9", RecordType::ModeIsExclude));
        assert_eq!(l.refused(), 1);
        assert!(
            !ReceivePolicy::new([(n("10.0.0.0/8"), Some(AddrSet::new()))])
                .allows(a("0.0.0.0"), a("239.1.1.1"))
        );
        assert!(ReceivePolicy::default().allows(a("::"), a("ff05::9")));
    }

    #[test]
    fn reports_parsed_from_packets_name_their_listener() {
        // IGMPv2 report for 239.1.2.3 from 10.244.1.2 (header checksums valid)
        let mut p = vec![
            0x46, 0xc0, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x01, 0x02, 0, 0, 10, 244, 1, 2, 239,
            1, 2, 3, 0x94, 0x04, 0x00, 0x00, 0x16, 0x00, 0, 0, 239, 1, 2, 3,
        ];
        let sum = super::super::checksum::of(&p[..24]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        let sum = super::super::checksum::of(&p[24..]);
        p[26..28].copy_from_slice(&sum.to_be_bytes());
        let msg = parse_control(&p).expect("a valid report");
        assert_eq!(packet_source(&p), Some(a("10.244.1.2")));
        let mut l = Listeners::new(GroupConfig::default(), GroupFilter::default());
        l.set_policy(ReceivePolicy::new([(
            n("10.244.1.2/32"),
            Some(AddrSet::new()),
        )]));
        l.handle_report(Instant::now(), a("10.244.1.2"), &msg);
        assert_eq!((l.groups(), l.refused()), (vec![], 1));
        assert_eq!(packet_source(&[0x45]), None);
        assert_eq!(packet_source(&[]), None);
        assert_eq!(packet_source(&[0x20; 40]), None);
    }

    #[test]
    fn listeners_are_bounded() {
        let t0 = Instant::now();
        let mut l = Listeners::new(GroupConfig::default(), GroupFilter::default());
        for i in 0..MAX_LISTENERS as u32 + 5 {
            let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.handle_report(t0, src, &igmp_v2_report(G));
        }
        assert_eq!(l.overflowed(), 5);
        assert_eq!(l.groups(), vec![IpAddr::V4(G)]);
    }
}
