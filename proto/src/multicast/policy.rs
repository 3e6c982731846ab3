//! Which multicast groups may cross the mesh ([`GroupFilter`]), and how fast a node may
//! inject multicast into it ([`RateLimit`]).
//!
//! A group is checked in this order:
//!
//! 1. It must be a multicast address (224.0.0.0/4, ff00::/8).
//! 2. IPv6 groups of scope 0 (reserved) or 1 (interface-local, `ff01::/16` and its
//!    flagged variants) never leave the node.
//! 3. Link-local groups (IPv4 224.0.0.0/24, IPv6 scope 2 such as `ff02::/16`) pass only
//!    when [`GroupFilter::set_link_local`] enabled them. They are off by default: this
//!    block holds the link's own machinery (all-hosts, all-routers, IGMPv3/MLDv2
//!    routers, OSPF, VRRP, solicited-node groups) that must not be bridged between
//!    hosts blindly. Enable it for mDNS (224.0.0.251, ff02::fb) or LLMNR, and narrow it
//!    with rules (for example deny 224.0.0.0/24, allow 224.0.0.251/32).
//! 4. The longest matching allow/deny rule decides; no matching rule denies. The
//!    default rules allow 224.0.0.0/4 and ff00::/8: every other group is forwarded
//!    (only to nodes with members, so an unused group costs nothing). Narrower
//!    defaults such as 239.0.0.0/8 only would break the defaults of the software that
//!    needs this overlay (Hazelcast uses 224.2.2.3, JGroups 228.8.8.8 / 232.5.5.5).
//!
//! Independently of the filter, IGMP and MLD messages (and IPv6 neighbor discovery)
//! are never forwarded: reports are consumed by the local [`super::GroupTable`]
//! and each node is the querier of its own TUN link.

use crate::prefix_table::PrefixTable;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// Whether `addr` is a multicast address (224.0.0.0/4 or ff00::/8).
pub fn is_multicast(addr: IpAddr) -> bool {
    addr.is_multicast()
}

/// The scope nibble of an IPv6 multicast address (RFC 4291 §2.7): 1 interface-local,
/// 2 link-local, 5 site-local, 8 organization-local, 14 global.
pub fn ipv6_scope(addr: Ipv6Addr) -> u8 {
    addr.octets()[1] & 0x0f
}

/// Whether `group` is a link-local group: IPv4 224.0.0.0/24 or IPv6 scope 2.
pub fn is_link_local_group(group: IpAddr) -> bool {
    match group {
        IpAddr::V4(a) => a.octets()[..3] == [224, 0, 0],
        IpAddr::V6(a) => a.is_multicast() && ipv6_scope(a) == 2,
    }
}

/// Why a group may not cross the mesh. The names are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FilterReason {
    /// Not a multicast address.
    #[error("not a multicast address")]
    NotMulticast,
    /// IPv6 interface-local or reserved scope.
    #[error("interface-local multicast group")]
    NodeLocal,
    /// Link-local group and link-local forwarding is disabled.
    #[error("link-local multicast group (not enabled)")]
    LinkLocal,
    /// A deny rule matched, or no rule did.
    #[error("multicast group denied by the group filter")]
    Denied,
}

/// What a filter rule does with the groups in its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Forward.
    Allow,
    /// Do not forward.
    Deny,
}

/// Allow/deny rules by prefix, longest match wins (see the module documentation).
#[derive(Debug, Clone)]
pub struct GroupFilter {
    rules: PrefixTable<Action>,
    link_local: bool,
}

/// 224.0.0.0/4, all IPv4 multicast.
pub const IPV4_MULTICAST: IpNet = IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4);
/// ff00::/8, all IPv6 multicast.
pub const IPV6_MULTICAST: IpNet =
    IpNet::new_assert(IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8);

impl Default for GroupFilter {
    /// Allow 224.0.0.0/4 and ff00::/8, link-local groups disabled.
    fn default() -> Self {
        let mut f = Self::deny_all();
        f.allow(IPV4_MULTICAST).allow(IPV6_MULTICAST);
        f
    }
}

impl GroupFilter {
    /// A filter without rules: every group is denied.
    pub fn deny_all() -> Self {
        Self {
            rules: PrefixTable::new(),
            link_local: false,
        }
    }

    /// Adds (or replaces) a rule allowing the groups in `prefix`.
    pub fn allow(&mut self, prefix: IpNet) -> &mut Self {
        self.rules.insert(prefix.trunc(), Action::Allow);
        self
    }

    /// Adds (or replaces) a rule denying the groups in `prefix`.
    pub fn deny(&mut self, prefix: IpNet) -> &mut Self {
        self.rules.insert(prefix.trunc(), Action::Deny);
        self
    }

    /// Enables or disables forwarding of link-local groups (still subject to rules).
    pub fn set_link_local(&mut self, enabled: bool) -> &mut Self {
        self.link_local = enabled;
        self
    }

    /// Whether link-local groups are enabled.
    pub fn link_local(&self) -> bool {
        self.link_local
    }

    /// The rules, sorted by prefix.
    pub fn rules(&self) -> Vec<(IpNet, Action)> {
        let mut v: Vec<(IpNet, Action)> = self.rules.iter().map(|(n, a)| (n, *a)).collect();
        v.sort();
        v
    }

    /// Whether `group` may cross the mesh, and if not, why.
    pub fn check(&self, group: IpAddr) -> Result<(), FilterReason> {
        if !is_multicast(group) {
            return Err(FilterReason::NotMulticast);
        }
        if let IpAddr::V6(a) = group {
            if ipv6_scope(a) <= 1 {
                return Err(FilterReason::NodeLocal);
            }
        }
        if is_link_local_group(group) && !self.link_local {
            return Err(FilterReason::LinkLocal);
        }
        match self.rules.lookup(group) {
            Some(Action::Allow) => Ok(()),
            _ => Err(FilterReason::Denied),
        }
    }

    /// `check(group).is_ok()`.
    pub fn allows(&self, group: IpAddr) -> bool {
        self.check(group).is_ok()
    }
}

/// A token bucket over bytes: `burst` bytes may pass at once, refilled at
/// `bytes_per_sec`. Time is injected; a `now` earlier than the last one adds nothing.
#[derive(Debug, Clone)]
pub struct RateLimit {
    bytes_per_sec: u64,
    burst: u64,
    /// Tokens in nano-bytes (bytes × 10⁹), so refills are exact in integers.
    tokens: u128,
    last: Option<Instant>,
}

const NANOS: u128 = 1_000_000_000;

impl RateLimit {
    /// A full bucket. A packet longer than `burst` never passes, so `burst` should be
    /// at least the TUN MTU.
    pub fn new(bytes_per_sec: u64, burst: u64) -> Self {
        Self {
            bytes_per_sec,
            burst,
            tokens: u128::from(burst) * NANOS,
            last: None,
        }
    }

    /// Refill rate.
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Bucket size.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Takes `len` bytes from the bucket if it holds that many; false otherwise (and
    /// nothing is taken).
    pub fn allow(&mut self, now: Instant, len: usize) -> bool {
        let cap = u128::from(self.burst) * NANOS;
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_nanos();
            let refill = elapsed.saturating_mul(u128::from(self.bytes_per_sec));
            self.tokens = self.tokens.saturating_add(refill).min(cap);
        }
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
        let cost = (len as u128).saturating_mul(NANOS);
        if cost <= self.tokens {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn a(s: &str) -> IpAddr {
        s.parse().expect("addr")
    }

    fn n(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn default_filter() {
        let f = GroupFilter::default();
        assert_eq!(
            f.rules(),
            vec![
                (n("224.0.0.0/4"), Action::Allow),
                (n("ff00::/8"), Action::Allow)
            ]
        );
        for ok in [
            "239.1.2.3",
            "224.2.2.3",
            "228.8.8.8",
            "232.1.1.1",
            "224.0.1.1",
            "ff15::1234",
            "ff0e::1",
            "ff35::1",
            "ff05::1:3",
        ] {
            assert_eq!(f.check(a(ok)), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("10.0.0.1", FilterReason::NotMulticast),
            ("fd47::1", FilterReason::NotMulticast),
            ("224.0.0.1", FilterReason::LinkLocal),
            ("224.0.0.251", FilterReason::LinkLocal),
            ("224.0.0.22", FilterReason::LinkLocal),
            ("ff02::1", FilterReason::LinkLocal),
            ("ff02::fb", FilterReason::LinkLocal),
            ("ff02::1:ff00:1", FilterReason::LinkLocal),
            ("ff12::1", FilterReason::LinkLocal),
            ("ff32::1", FilterReason::LinkLocal),
            ("ff01::1", FilterReason::NodeLocal),
            ("ff11::1", FilterReason::NodeLocal),
            ("ff00::1", FilterReason::NodeLocal),
        ] {
            assert_eq!(f.check(a(bad)), Err(why), "{bad}");
        }
    }

    #[test]
    fn rules_longest_match_and_link_local() {
        let mut f = GroupFilter::deny_all();
        assert_eq!(f.check(a("239.1.1.1")), Err(FilterReason::Denied));
        f.allow(n("239.0.0.0/8"))
            .deny(n("239.255.0.0/16"))
            .allow(n("239.255.255.250/32"));
        assert!(f.allows(a("239.1.1.1")));
        assert!(!f.allows(a("239.255.1.1")));
        assert!(f.allows(a("239.255.255.250")));
        assert!(!f.allows(a("238.1.1.1")));
        // a rule's host bits are ignored; re-adding a prefix replaces its action
        f.deny(n("239.1.1.1/8"));
        assert!(!f.allows(a("239.1.1.1")));

        let mut f = GroupFilter::default();
        f.set_link_local(true);
        assert!(f.link_local());
        assert!(f.allows(a("224.0.0.251")));
        assert!(f.allows(a("ff02::fb")));
        assert_eq!(f.check(a("ff01::fb")), Err(FilterReason::NodeLocal));
        // only mDNS out of the link-local block
        f.deny(n("224.0.0.0/24")).allow(n("224.0.0.251/32"));
        assert!(f.allows(a("224.0.0.251")));
        assert!(!f.allows(a("224.0.0.5")));
    }

    #[test]
    fn rate_limit_bucket() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(1000, 1500);
        assert!(r.allow(t0, 1500));
        assert!(!r.allow(t0, 1));
        assert!(!r.allow(t0 + Duration::from_millis(499), 500));
        assert!(r.allow(t0 + Duration::from_millis(500), 500));
        // a long pause refills only up to the burst
        let t1 = t0 + Duration::from_secs(3600);
        assert!(r.allow(t1, 1500));
        assert!(!r.allow(t1, 1));
        // time going backwards adds nothing and does not move the clock back
        assert!(!r.allow(t0, 1));
        assert!(r.allow(t1 + Duration::from_millis(1), 1));
        // longer than the burst never passes
        let mut r = RateLimit::new(u64::MAX, 100);
        assert!(!r.allow(t0, 101));
        assert!(r.allow(t0, 100));
        assert_eq!((r.bytes_per_sec(), r.burst()), (u64::MAX, 100));
    }

    proptest! {
        #[test]
        fn rate_limit_never_exceeds_budget(
            rate in 1u64..10_000,
            burst in 0u64..5_000,
            steps in proptest::collection::vec((0u64..2_000, 0usize..3_000), 1..100),
        ) {
            let t0 = Instant::now();
            let mut r = RateLimit::new(rate, burst);
            let mut now_ms = 0u64;
            let mut passed: u128 = 0;
            for (dt, len) in steps {
                now_ms += dt;
                if r.allow(t0 + Duration::from_millis(now_ms), len) {
                    passed += len as u128;
                }
            }
            // burst plus what the elapsed time refilled
            let budget = u128::from(burst) + u128::from(rate) * u128::from(now_ms) / 1000;
            prop_assert!(passed <= budget, "{passed} > {budget}");
        }

        #[test]
        fn filter_never_allows_non_multicast_or_node_local(bits in any::<u128>(), v4 in any::<u32>()) {
            let mut f = GroupFilter::default();
            f.set_link_local(true);
            let a6 = Ipv6Addr::from(bits);
            if f.allows(IpAddr::V6(a6)) {
                prop_assert!(a6.is_multicast() && ipv6_scope(a6) >= 2);
            }
            let a4 = Ipv4Addr::from(v4);
            prop_assert_eq!(f.allows(IpAddr::V4(a4)), a4.is_multicast());
        }
    }
}
