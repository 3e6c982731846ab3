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
mod tests;
