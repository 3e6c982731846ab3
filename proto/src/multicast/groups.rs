//! Local group membership learned by snooping the reports the kernel writes to the TUN
//! ([`GroupTable`]); the querier that keeps the kernel reporting is
//! [`super::Querier`].
//!
//! # The link
//!
//! The TUN device is a point-to-point link whose only listener is this host's kernel,
//! and the daemon plays the multicast router at its far end. So the table models one
//! listener rather than merging many hosts as RFC 3376 §6.4 does: each report states
//! the kernel's interface state for a group (or a change of it), and that state is
//! kept as reported.
//!
//! # Timers (RFC 3376 §8, RFC 3810 §9)
//!
//! - Every report that keeps a group joined sets its deadline to now + the group
//!   membership interval, robustness × query interval + query response interval
//!   (2 × 125 s + 10 s = 260 s by default). The [`super::Querier`] sends a general query
//!   every query interval, so a live membership is refreshed long before that.
//! - A leave (IGMPv2 leave, MLDv1 done, an IGMPv3/MLDv2 record that leaves the include
//!   set empty) shortens the deadline to now + the last member timeout (2 s by
//!   default, RFC 3376's last member query time of 2 × 1 s). On this link the leave is
//!   authoritative (the kernel sends it when its last socket leaves) so no
//!   group-specific query is needed before pruning; the short delay absorbs a leave
//!   followed by a rejoin (any report cancels it), so gossip does not flap. If the
//!   link ever has several listeners (a bridge), the daemon should send a
//!   group-specific query on leave ([`super::Querier::igmp_group_query`]): a remaining
//!   listener answers within the timeout and keeps the group.
//! - A group is gone when its deadline passes without a refreshing report.
//!
//! # Versions
//!
//! IGMPv1/v2 and MLDv1 reports are any-source joins (RFC 3376 §7.3.2: `IS_EX({})`),
//! kept as a separate *compat* deadline next to the IGMPv3/MLDv2 source-filter state.
//! A group is joined while either is live, so v2 and v3 reports for the same group
//! combine, and a v2 leave only shortens the v2 part (a v3 listener keeps the group).
//!
//! # Source filters
//!
//! INCLUDE/EXCLUDE source sets are kept per group ([`GroupTable::source_filter`]) for
//! status and debugging, capped at [`GroupConfig::max_sources`]. They are not used to
//! replicate: the mesh forwards a group from any source, and the receiving kernel
//! applies its sockets' source filters on delivery. A group whose include set
//! empties is left; anything else keeps it joined.

use super::policy::GroupFilter;
use super::{Control, GroupRecord, Message, RecordType};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Timers and limits of the table and the querier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Robustness variable (RFC 3376 §8.1), default 2. Also the number of startup
    /// queries.
    pub robustness: u8,
    /// Interval between general queries (§8.2), default 125 s.
    pub query_interval: Duration,
    /// Max response time put in general queries (§8.3), default 10 s.
    pub query_response_interval: Duration,
    /// How long a group survives a leave without a new report, default 2 s.
    pub last_member_timeout: Duration,
    /// Most groups tracked (and gossiped) per node, default 256. Reports for more
    /// groups are ignored and counted ([`GroupTable::overflowed`]).
    pub max_groups: usize,
    /// Most sources kept per group's source filter, default 64.
    pub max_sources: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            robustness: 2,
            query_interval: Duration::from_secs(125),
            query_response_interval: Duration::from_secs(10),
            last_member_timeout: Duration::from_secs(2),
            max_groups: 256,
            max_sources: 64,
        }
    }
}

impl GroupConfig {
    /// Group membership interval: robustness × query interval + query response
    /// interval (260 s by default).
    pub fn membership_interval(&self) -> Duration {
        self.query_interval
            .saturating_mul(u32::from(self.robustness.max(1)))
            .saturating_add(self.query_response_interval)
    }

    /// Interval between the startup queries: a quarter of the query interval.
    pub fn startup_query_interval(&self) -> Duration {
        self.query_interval / 4
    }

    /// Max response time of group-specific queries: last member timeout / robustness
    /// (1 s by default).
    pub fn last_member_query_interval(&self) -> Duration {
        self.last_member_timeout / u32::from(self.robustness.max(1))
    }
}

/// A change of the set [`GroupTable::groups`] returns: re-gossip the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupEvent {
    /// The local kernel joined the group.
    Joined(IpAddr),
    /// The group's membership ended (left or expired).
    Left(IpAddr),
}

/// A source filter mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterMode {
    /// Receive only from the listed sources.
    Include,
    /// Receive from all but the listed sources (none listed: any source).
    Exclude,
}

/// A group's current source filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceFilter {
    /// The mode.
    pub mode: FilterMode,
    /// The listed sources, sorted.
    pub sources: Vec<IpAddr>,
}

/// IGMPv3/MLDv2 state of one group.
#[derive(Debug, Clone)]
struct V3State {
    deadline: Instant,
    mode: FilterMode,
    sources: BTreeSet<IpAddr>,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    /// Deadline of the any-source membership from IGMPv1/v2 or MLDv1 reports.
    compat: Option<Instant>,
    /// Source-filter membership from IGMPv3 or MLDv2 reports.
    v3: Option<V3State>,
}

impl Entry {
    fn expire(&mut self, now: Instant) {
        if self.compat.is_some_and(|d| d <= now) {
            self.compat = None;
        }
        if self.v3.as_ref().is_some_and(|s| s.deadline <= now) {
            self.v3 = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.compat.is_none() && self.v3.is_none()
    }

    fn next_deadline(&self) -> Option<Instant> {
        match (self.compat, self.v3.as_ref().map(|s| s.deadline)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Most events queued; older ones are dropped beyond it ([`GroupTable::take_changed`]
/// still reports the change).
const MAX_EVENTS: usize = 1024;

/// The local kernel's multicast memberships on the TUN link.
#[derive(Debug, Clone)]
pub struct GroupTable {
    config: GroupConfig,
    filter: GroupFilter,
    entries: BTreeMap<IpAddr, Entry>,
    events: VecDeque<GroupEvent>,
    changed: bool,
    overflowed: u64,
}

impl GroupTable {
    /// An empty table. Reports for groups that `filter` rejects are ignored: they are
    /// never forwarded, so gossiping them would only waste the group budget (the
    /// kernel reports link-local groups such as 224.0.0.251 too).
    pub fn new(config: GroupConfig, filter: GroupFilter) -> Self {
        Self {
            config,
            filter,
            entries: BTreeMap::new(),
            events: VecDeque::new(),
            changed: false,
            overflowed: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The filter groups must pass to be tracked.
    pub fn filter(&self) -> &GroupFilter {
        &self.filter
    }

    /// Applies a message parsed from the TUN. Queries are ignored (on the TUN only
    /// the daemon is a querier).
    pub fn handle_report(&mut self, now: Instant, msg: &Control) {
        self.handle_timeout(now);
        match msg {
            Control::Igmp(m) => self.apply(now, m, |v| v < 3),
            Control::Mld(m) => self.apply(now, m, |v| v < 2),
        }
    }

    fn apply<A: Copy + Into<IpAddr>>(
        &mut self,
        now: Instant,
        msg: &Message<A>,
        compat: fn(u8) -> bool,
    ) {
        match msg {
            Message::Report { version, records } if compat(*version) => {
                for r in records {
                    self.join_compat(now, r.group.into());
                }
            }
            Message::Report { records, .. } => {
                for r in records {
                    self.apply_record(now, r);
                }
            }
            Message::Leave { group } => self.leave_compat(now, (*group).into()),
            Message::Query(_) => {}
        }
    }

    /// The entry for `group`, created if the filter and the group budget allow.
    fn entry(&mut self, group: IpAddr) -> Option<&mut Entry> {
        if !self.filter.allows(group) {
            return None;
        }
        if !self.entries.contains_key(&group) && self.entries.len() >= self.config.max_groups {
            self.overflowed += 1;
            return None;
        }
        Some(self.entries.entry(group).or_default())
    }

    /// Records a join event if `group` was not present before.
    fn joined(&mut self, group: IpAddr, was_present: bool) {
        if !was_present && self.entries.contains_key(&group) {
            self.push(GroupEvent::Joined(group));
        }
    }

    fn push(&mut self, event: GroupEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
        self.changed = true;
    }

    fn join_compat(&mut self, now: Instant, group: IpAddr) {
        let was = self.entries.contains_key(&group);
        let deadline = now + self.config.membership_interval();
        if let Some(e) = self.entry(group) {
            e.compat = Some(deadline);
        }
        self.joined(group, was);
    }

    fn leave_compat(&mut self, now: Instant, group: IpAddr) {
        let soon = now + self.config.last_member_timeout;
        if let Some(d) = self.entries.get_mut(&group).and_then(|e| e.compat.as_mut()) {
            *d = (*d).min(soon);
        }
    }

    fn apply_record<A: Copy + Into<IpAddr>>(&mut self, now: Instant, r: &GroupRecord<A>) {
        let group: IpAddr = r.group.into();
        let gmi = now + self.config.membership_interval();
        let soon = now + self.config.last_member_timeout;
        let max = self.config.max_sources;
        let sources = || r.sources.iter().map(|s| (*s).into()).take(max);
        let was = self.entries.contains_key(&group);
        match r.mode {
            RecordType::ModeIsInclude | RecordType::ChangeToInclude if r.sources.is_empty() => {
                // A leave: only state that exists is shortened.
                if let Some(s) = self.entries.get_mut(&group).and_then(|e| e.v3.as_mut()) {
                    s.mode = FilterMode::Include;
                    s.sources.clear();
                    s.deadline = s.deadline.min(soon);
                }
            }
            RecordType::ModeIsInclude | RecordType::ChangeToInclude => {
                if let Some(e) = self.entry(group) {
                    e.v3 = Some(V3State {
                        deadline: gmi,
                        mode: FilterMode::Include,
                        sources: sources().collect(),
                    });
                }
            }
            RecordType::ModeIsExclude | RecordType::ChangeToExclude => {
                if let Some(e) = self.entry(group) {
                    e.v3 = Some(V3State {
                        deadline: gmi,
                        mode: FilterMode::Exclude,
                        sources: sources().collect(),
                    });
                }
            }
            RecordType::AllowNewSources if r.sources.is_empty() => {}
            RecordType::AllowNewSources => {
                if let Some(e) = self.entry(group) {
                    let s = e.v3.get_or_insert_with(|| V3State {
                        deadline: gmi,
                        mode: FilterMode::Include,
                        sources: BTreeSet::new(),
                    });
                    s.deadline = gmi;
                    match s.mode {
                        FilterMode::Include => {
                            for src in sources() {
                                if s.sources.len() >= max {
                                    break;
                                }
                                s.sources.insert(src);
                            }
                        }
                        FilterMode::Exclude => {
                            for src in sources() {
                                s.sources.remove(&src);
                            }
                        }
                    }
                }
            }
            RecordType::BlockOldSources => {
                if let Some(s) = self.entries.get_mut(&group).and_then(|e| e.v3.as_mut()) {
                    match s.mode {
                        FilterMode::Include => {
                            for src in sources() {
                                s.sources.remove(&src);
                            }
                            if s.sources.is_empty() {
                                s.deadline = s.deadline.min(soon);
                            }
                        }
                        FilterMode::Exclude => {
                            // A full exclude list just means forwarding a bit more.
                            for src in sources() {
                                if s.sources.len() >= max {
                                    break;
                                }
                                s.sources.insert(src);
                            }
                        }
                    }
                }
            }
        }
        self.joined(group, was);
    }

    /// Expires memberships whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (group, e) in &mut self.entries {
            e.expire(now);
            if e.is_empty() {
                gone.push(*group);
            }
        }
        for group in gone {
            self.entries.remove(&group);
            self.push(GroupEvent::Left(group));
        }
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.values().filter_map(Entry::next_deadline).min()
    }

    /// The joined groups, sorted (IPv4 first), at most [`GroupConfig::max_groups`]:
    /// what this node gossips.
    pub fn groups(&self) -> Vec<IpAddr> {
        self.entries.keys().copied().collect()
    }

    /// Whether `group` is joined.
    pub fn contains(&self, group: IpAddr) -> bool {
        self.entries.contains_key(&group)
    }

    /// Number of joined groups.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no group is joined.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The group's effective source filter: `Exclude({})` while an any-source
    /// (v1/v2/MLDv1) membership is live, else the IGMPv3/MLDv2 state.
    pub fn source_filter(&self, group: IpAddr) -> Option<SourceFilter> {
        let e = self.entries.get(&group)?;
        match (&e.v3, e.compat) {
            (Some(s), None) => Some(SourceFilter {
                mode: s.mode,
                sources: s.sources.iter().copied().collect(),
            }),
            _ => Some(SourceFilter {
                mode: FilterMode::Exclude,
                sources: Vec::new(),
            }),
        }
    }

    /// The next membership change, oldest first.
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// Whether the group set changed since the last call (for a daemon that only
    /// re-gossips [`Self::groups`] and ignores the individual events).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Reports ignored because [`GroupConfig::max_groups`] groups were joined.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Forgets every membership (for example when the TUN device is recreated),
    /// emitting a `Left` event for each.
    pub fn clear(&mut self) {
        for group in std::mem::take(&mut self.entries).into_keys() {
            self.push(GroupEvent::Left(group));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicast::igmp::tests::{hex, vectors as v4};
    use crate::multicast::mld;
    use crate::multicast::mld::tests::vectors as v6;
    use crate::multicast::parse_control;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const S: Duration = Duration::from_secs(1);

    fn a(s: &str) -> IpAddr {
        s.parse().expect("addr")
    }

    fn table() -> GroupTable {
        GroupTable::new(GroupConfig::default(), GroupFilter::default())
    }

    fn feed(t: &mut GroupTable, now: Instant, packet: &str) {
        let msg = parse_control(&hex(packet)).expect("parses");
        t.handle_report(now, &msg);
    }

    fn events(t: &mut GroupTable) -> Vec<GroupEvent> {
        std::iter::from_fn(|| t.poll_event()).collect()
    }

    fn v3(group: &str, mode: RecordType, sources: &[&str]) -> Control {
        let g: Ipv4Addr = group.parse().expect("v4");
        Control::Igmp(Message::Report {
            version: 3,
            records: vec![GroupRecord {
                group: g,
                mode,
                sources: sources.iter().map(|s| s.parse().expect("v4")).collect(),
            }],
        })
    }

    fn v2(group: &str) -> Control {
        v3_as(2, group)
    }

    fn v3_as(version: u8, group: &str) -> Control {
        Control::Igmp(Message::Report {
            version,
            records: vec![GroupRecord {
                group: group.parse().expect("v4"),
                mode: RecordType::ModeIsExclude,
                sources: Vec::new(),
            }],
        })
    }

    fn v2_leave(group: &str) -> Control {
        Control::Igmp(Message::Leave {
            group: group.parse().expect("v4"),
        })
    }

    #[test]
    fn config_defaults() {
        let c = GroupConfig::default();
        assert_eq!(c.membership_interval(), 260 * S);
        assert_eq!(c.startup_query_interval(), Duration::from_millis(31_250));
        assert_eq!(c.last_member_query_interval(), S);
    }

    #[test]
    fn kernel_v3_join_then_leave() {
        let t0 = Instant::now();
        let mut t = table();
        feed(&mut t, t0, v4::V3_JOIN);
        assert_eq!(t.groups(), vec![a("239.1.2.3")]);
        assert_eq!(events(&mut t), vec![GroupEvent::Joined(a("239.1.2.3"))]);
        assert!(t.take_changed());
        assert!(!t.take_changed());
        assert_eq!(t.poll_timeout(), Some(t0 + 260 * S));
        assert_eq!(
            t.source_filter(a("239.1.2.3")),
            Some(SourceFilter {
                mode: FilterMode::Exclude,
                sources: vec![]
            })
        );
        // the retransmitted join changes nothing
        feed(&mut t, t0 + S, v4::V3_JOIN);
        assert!(events(&mut t).is_empty());

        feed(&mut t, t0 + 10 * S, v4::V3_LEAVE);
        assert_eq!(
            t.groups(),
            vec![a("239.1.2.3")],
            "kept during the last member timeout"
        );
        assert_eq!(t.poll_timeout(), Some(t0 + 12 * S));
        t.handle_timeout(t0 + 11 * S);
        assert!(t.contains(a("239.1.2.3")));
        t.handle_timeout(t0 + 12 * S);
        assert!(t.is_empty());
        assert_eq!(events(&mut t), vec![GroupEvent::Left(a("239.1.2.3"))]);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn rejoin_during_last_member_timeout_cancels_the_leave() {
        let t0 = Instant::now();
        let mut t = table();
        feed(&mut t, t0, v4::V2_JOIN);
        feed(&mut t, t0 + S, v4::V2_LEAVE);
        feed(&mut t, t0 + 2 * S, v4::V2_JOIN);
        t.handle_timeout(t0 + 10 * S);
        assert!(t.contains(a("239.1.2.3")));
        assert_eq!(events(&mut t), vec![GroupEvent::Joined(a("239.1.2.3"))]);
    }

    #[test]
    fn kernel_mld_join_and_leave() {
        let t0 = Instant::now();
        let mut t = table();
        feed(&mut t, t0, v6::V2_JOIN);
        feed(&mut t, t0, v6::V1_JOIN);
        assert_eq!(t.groups(), vec![a("ff15::1234")]);
        feed(&mut t, t0 + S, v6::V2_LEAVE);
        t.handle_timeout(t0 + 10 * S);
        assert!(t.contains(a("ff15::1234")), "the MLDv1 part is still live");
        feed(&mut t, t0 + 10 * S, v6::V1_DONE);
        t.handle_timeout(t0 + 12 * S);
        assert!(t.is_empty());
        // a query is ignored
        let q = mld::build_query(&mld::QueryParams {
            src: "fe80::1".parse().expect("v6"),
            group: None,
            max_response: 10 * S,
            robustness: 2,
            query_interval: 125 * S,
        });
        t.handle_report(t0, &parse_control(&q).expect("query"));
        assert!(t.is_empty());
    }

    #[test]
    fn expires_without_refresh_and_stays_with_refresh() {
        let t0 = Instant::now();
        let mut t = table();
        t.handle_report(t0, &v2("239.1.1.1"));
        t.handle_report(t0, &v3("239.2.2.2", RecordType::ChangeToExclude, &[]));
        for k in 1..=2u32 {
            // general queries answered for one group only
            t.handle_report(t0 + k * 125 * S, &v2("239.1.1.1"));
        }
        t.handle_timeout(t0 + 259 * S);
        assert_eq!(t.groups(), vec![a("239.1.1.1"), a("239.2.2.2")]);
        t.handle_timeout(t0 + 260 * S);
        assert_eq!(t.groups(), vec![a("239.1.1.1")]);
        t.handle_timeout(t0 + 509 * S);
        assert_eq!(t.groups(), vec![a("239.1.1.1")]);
        t.handle_timeout(t0 + 510 * S);
        assert!(t.is_empty());
    }

    #[test]
    fn include_sources_allow_block() {
        let t0 = Instant::now();
        let mut t = table();
        let g = a("232.1.1.1");
        // source-specific join, the way Linux reports it
        feed(&mut t, t0, v4::V3_ALLOW);
        assert_eq!(
            t.source_filter(g),
            Some(SourceFilter {
                mode: FilterMode::Include,
                sources: vec![a("10.47.9.9")]
            })
        );
        t.handle_report(
            t0,
            &v3("232.1.1.1", RecordType::AllowNewSources, &["10.0.0.1"]),
        );
        t.handle_report(
            t0,
            &v3("232.1.1.1", RecordType::BlockOldSources, &["10.47.9.9"]),
        );
        assert_eq!(
            t.source_filter(g).map(|f| f.sources),
            Some(vec![a("10.0.0.1")])
        );
        // blocking the last source is a leave
        t.handle_report(
            t0 + S,
            &v3("232.1.1.1", RecordType::BlockOldSources, &["10.0.0.1"]),
        );
        assert!(t.contains(g));
        t.handle_timeout(t0 + 3 * S);
        assert!(!t.contains(g));
        // BLOCK, TO_IN({}) and ALLOW({}) on an unknown group create nothing
        t.handle_report(
            t0,
            &v3("232.1.1.1", RecordType::BlockOldSources, &["10.0.0.1"]),
        );
        t.handle_report(t0, &v3("232.1.1.1", RecordType::ChangeToInclude, &[]));
        t.handle_report(t0, &v3("232.1.1.1", RecordType::AllowNewSources, &[]));
        assert!(t.is_empty());
    }

    #[test]
    fn exclude_sources() {
        let t0 = Instant::now();
        let mut t = table();
        let g = a("239.9.9.9");
        t.handle_report(
            t0,
            &v3(
                "239.9.9.9",
                RecordType::ModeIsExclude,
                &["10.0.0.1", "10.0.0.2"],
            ),
        );
        t.handle_report(
            t0,
            &v3("239.9.9.9", RecordType::AllowNewSources, &["10.0.0.1"]),
        );
        t.handle_report(
            t0,
            &v3("239.9.9.9", RecordType::BlockOldSources, &["10.0.0.3"]),
        );
        assert_eq!(
            t.source_filter(g),
            Some(SourceFilter {
                mode: FilterMode::Exclude,
                sources: vec![a("10.0.0.2"), a("10.0.0.3")]
            })
        );
        // switch to include mode
        t.handle_report(
            t0,
            &v3("239.9.9.9", RecordType::ChangeToInclude, &["10.0.0.7"]),
        );
        assert_eq!(
            t.source_filter(g),
            Some(SourceFilter {
                mode: FilterMode::Include,
                sources: vec![a("10.0.0.7")]
            })
        );
        // a v2 listener makes the effective filter any-source
        t.handle_report(t0, &v2("239.9.9.9"));
        assert_eq!(
            t.source_filter(g).map(|f| f.mode),
            Some(FilterMode::Exclude)
        );
    }

    #[test]
    fn source_lists_are_capped() {
        let t0 = Instant::now();
        let config = GroupConfig {
            max_sources: 2,
            ..GroupConfig::default()
        };
        let mut t = GroupTable::new(config, GroupFilter::default());
        let g = a("232.0.0.1");
        t.handle_report(
            t0,
            &v3(
                "232.0.0.1",
                RecordType::ModeIsInclude,
                &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            ),
        );
        assert_eq!(t.source_filter(g).map(|f| f.sources.len()), Some(2));
        t.handle_report(
            t0,
            &v3("232.0.0.1", RecordType::AllowNewSources, &["10.0.0.9"]),
        );
        assert_eq!(t.source_filter(g).map(|f| f.sources.len()), Some(2));
    }

    #[test]
    fn v2_and_v3_combine() {
        let t0 = Instant::now();
        let mut t = table();
        t.handle_report(t0, &v2("239.1.1.1"));
        t.handle_report(
            t0 + 100 * S,
            &v3("239.1.1.1", RecordType::ModeIsExclude, &[]),
        );
        // the v2 leave only ends the v2 part
        t.handle_report(t0 + 101 * S, &v2_leave("239.1.1.1"));
        t.handle_timeout(t0 + 200 * S);
        assert!(t.contains(a("239.1.1.1")));
        // the v3 leave ends the rest
        t.handle_report(
            t0 + 200 * S,
            &v3("239.1.1.1", RecordType::ChangeToInclude, &[]),
        );
        t.handle_timeout(t0 + 202 * S);
        assert!(t.is_empty());
        // v1 reports count as v2
        t.handle_report(t0, &v3_as(1, "239.1.1.1"));
        assert!(t.contains(a("239.1.1.1")));
    }

    #[test]
    fn filter_and_group_budget() {
        let t0 = Instant::now();
        let config = GroupConfig {
            max_groups: 2,
            ..GroupConfig::default()
        };
        let mut t = GroupTable::new(config, GroupFilter::default());
        t.handle_report(t0, &v2("224.0.0.251")); // link-local: filtered
        t.handle_report(t0, &v2("239.0.0.1"));
        t.handle_report(t0, &v2("239.0.0.2"));
        t.handle_report(t0, &v2("239.0.0.3"));
        assert_eq!(t.groups(), vec![a("239.0.0.1"), a("239.0.0.2")]);
        assert_eq!(t.overflowed(), 1);
        // refreshing a known group is fine when full
        t.handle_report(t0 + S, &v2("239.0.0.2"));
        assert_eq!(t.overflowed(), 1);
        t.clear();
        assert!(t.is_empty());
        assert_eq!(events(&mut t).len(), 4);
    }

    #[derive(Debug, Clone)]
    enum Op {
        V2(u8),
        V2Leave(u8),
        V3(u8, u8, Vec<u8>),
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4).prop_map(Op::V2),
            (0u8..4).prop_map(Op::V2Leave),
            (0u8..4, 1u8..=6, proptest::collection::vec(0u8..4, 0..3))
                .prop_map(|(g, m, s)| Op::V3(g, m, s)),
            (0u16..300).prop_map(Op::Wait),
        ]
    }

    /// A reference model of one group: until when a v2 membership lasts, and the v3
    /// state (deadline, include mode, sources), following the RFC 3376 rules restated
    /// for a single listener.
    #[derive(Default, Clone)]
    struct Model {
        v2: Option<u64>,
        v3: Option<(u64, bool, BTreeSet<u8>)>,
    }

    impl Model {
        fn expire(&mut self, now: u64) {
            if self.v2.is_some_and(|d| d <= now) {
                self.v2 = None;
            }
            if self.v3.as_ref().is_some_and(|s| s.0 <= now) {
                self.v3 = None;
            }
        }

        fn record(&mut self, now: u64, mode: RecordType, srcs: &BTreeSet<u8>) {
            let (gmi, soon) = (now + 260, now + 2);
            match (mode, self.v3.as_mut()) {
                (RecordType::ModeIsInclude | RecordType::ChangeToInclude, Some(s))
                    if srcs.is_empty() =>
                {
                    *s = (s.0.min(soon), true, BTreeSet::new());
                }
                (RecordType::ModeIsInclude | RecordType::ChangeToInclude, _) if srcs.is_empty() => {
                }
                (RecordType::ModeIsInclude | RecordType::ChangeToInclude, _) => {
                    self.v3 = Some((gmi, true, srcs.clone()));
                }
                (RecordType::ModeIsExclude | RecordType::ChangeToExclude, _) => {
                    self.v3 = Some((gmi, false, srcs.clone()));
                }
                (RecordType::AllowNewSources, _) if srcs.is_empty() => {}
                (RecordType::AllowNewSources, None) => self.v3 = Some((gmi, true, srcs.clone())),
                (RecordType::AllowNewSources, Some(s)) => {
                    s.0 = gmi;
                    if s.1 {
                        s.2.extend(srcs);
                    } else {
                        s.2.retain(|x| !srcs.contains(x));
                    }
                }
                (RecordType::BlockOldSources, None) => {}
                (RecordType::BlockOldSources, Some(s)) => {
                    if s.1 {
                        s.2.retain(|x| !srcs.contains(x));
                        if s.2.is_empty() {
                            s.0 = s.0.min(soon);
                        }
                    } else {
                        s.2.extend(srcs);
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn table_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
            let t0 = Instant::now();
            let mut t = table();
            let mut model: Vec<Model> = vec![Model::default(); 4];
            let mut now = 0u64;
            let group = |g: u8| IpAddr::V4(Ipv4Addr::new(239, 0, 0, g));
            let src = |s: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, s));
            for op in ops {
                let at = t0 + Duration::from_secs(now);
                for m in &mut model {
                    m.expire(now);
                }
                match op {
                    Op::Wait(s) => {
                        now += u64::from(s);
                        t.handle_timeout(t0 + Duration::from_secs(now));
                        for m in &mut model {
                            m.expire(now);
                        }
                    }
                    Op::V2(g) => {
                        t.handle_report(at, &v2(&group(g).to_string()));
                        model[usize::from(g)].v2 = Some(now + 260);
                    }
                    Op::V2Leave(g) => {
                        t.handle_report(at, &v2_leave(&group(g).to_string()));
                        let m = &mut model[usize::from(g)];
                        m.v2 = m.v2.map(|d| d.min(now + 2));
                    }
                    Op::V3(g, mode, srcs) => {
                        let texts: Vec<String> = srcs.iter().map(|s| src(*s).to_string()).collect();
                        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                        let mode = RecordType::from_code(mode).expect("1..=6");
                        t.handle_report(at, &v3(&group(g).to_string(), mode, &texts));
                        model[usize::from(g)].record(now, mode, &srcs.into_iter().collect());
                    }
                }
                // joined iff the model has a live part, with the same source filter;
                // groups sorted and unique; the next timeout lies in the future
                let groups = t.groups();
                prop_assert!(groups.windows(2).all(|w| w[0] < w[1]));
                for g in 0..4u8 {
                    let m = &model[usize::from(g)];
                    let live = m.v2.is_some() || m.v3.is_some();
                    prop_assert_eq!(t.contains(group(g)), live, "group {}", g);
                    if let (None, Some((_, include, srcs))) = (m.v2, &m.v3) {
                        let want = SourceFilter {
                            mode: if *include { FilterMode::Include } else { FilterMode::Exclude },
                            sources: srcs.iter().map(|s| src(*s)).collect(),
                        };
                        prop_assert_eq!(t.source_filter(group(g)), Some(want));
                    }
                }
                if let Some(d) = t.poll_timeout() {
                    prop_assert!(d > t0 + Duration::from_secs(now));
                }
            }
        }

        #[test]
        fn refreshed_group_never_expires(period in 1u64..260, rounds in 1usize..20) {
            // a group reported at least once per membership interval stays joined
            let t0 = Instant::now();
            let mut t = table();
            for k in 0..rounds as u64 {
                let at = t0 + Duration::from_secs(k * period);
                t.handle_timeout(at);
                t.handle_report(at, &v2("239.5.5.5"));
                prop_assert!(t.contains(a("239.5.5.5")));
            }
            let last = t0 + Duration::from_secs((rounds as u64 - 1) * period);
            t.handle_timeout(last + Duration::from_secs(259));
            prop_assert!(t.contains(a("239.5.5.5")));
            t.handle_timeout(last + Duration::from_secs(260));
            prop_assert!(!t.contains(a("239.5.5.5")));
        }
    }
}
