//! Tests of the group table: kernel reports of every version, leaves and their
//! timeouts, source filters and their caps, the filter and group budget, and a
//! property test against a model of the timers.

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
            (RecordType::ModeIsInclude | RecordType::ChangeToInclude, _) if srcs.is_empty() => {}
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
