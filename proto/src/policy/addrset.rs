//! Address sets as sorted, disjoint, non-adjacent inclusive ranges, one list per
//! family: what an `ipBlock` with `except` becomes (a range minus ranges), what the
//! pods a selector picks become (single addresses), and what nftables interval sets
//! are written from.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Sorted, disjoint, non-adjacent inclusive ranges of one family (v4 as u128 too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Ranges(Vec<(u128, u128)>);

impl Ranges {
    fn insert(&mut self, lo: u128, hi: u128) {
        self.0.push((lo, hi));
        self.0.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(self.0.len());
        for &(l, h) in &self.0 {
            match out.last_mut() {
                Some(last) if l <= last.1.saturating_add(1) => last.1 = last.1.max(h),
                _ => out.push((l, h)),
            }
        }
        self.0 = out;
    }

    fn remove(&mut self, lo: u128, hi: u128) {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(l, h) in &self.0 {
            if h < lo || l > hi {
                out.push((l, h));
                continue;
            }
            if l < lo {
                out.push((l, lo - 1));
            }
            if h > hi {
                out.push((hi + 1, h));
            }
        }
        self.0 = out;
    }

    fn contains(&self, v: u128) -> bool {
        let i = self.0.partition_point(|&(_, h)| h < v);
        self.0.get(i).is_some_and(|&(l, _)| l <= v)
    }

    fn extend(&mut self, other: &Ranges) {
        for &(l, h) in &other.0 {
            self.insert(l, h);
        }
    }
}

/// A set of IPv4 and IPv6 addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AddrSet {
    v4: Ranges,
    v6: Ranges,
}

fn bounds(net: &IpNet) -> (bool, u128, u128) {
    match net {
        IpNet::V4(n) => (
            true,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn key(addr: IpAddr) -> (bool, u128) {
    match addr {
        IpAddr::V4(a) => (true, u128::from(u32::from(a))),
        IpAddr::V6(a) => (false, u128::from(a)),
    }
}

impl AddrSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// `cidr` minus every `except` range (an `ipBlock`).
    pub fn block(cidr: IpNet, except: &[IpNet]) -> Self {
        let mut s = Self::new();
        s.insert_net(cidr);
        for e in except {
            s.remove_net(*e);
        }
        s
    }

    fn family(&mut self, v4: bool) -> &mut Ranges {
        if v4 {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Adds one address.
    pub fn insert(&mut self, addr: IpAddr) {
        let (v4, k) = key(addr);
        self.family(v4).insert(k, k);
    }

    /// Adds a prefix.
    pub fn insert_net(&mut self, net: IpNet) {
        let (v4, lo, hi) = bounds(&net);
        self.family(v4).insert(lo, hi);
    }

    /// Removes a prefix.
    pub fn remove_net(&mut self, net: IpNet) {
        let (v4, lo, hi) = bounds(&net);
        self.family(v4).remove(lo, hi);
    }

    /// Adds every address of `other`.
    pub fn extend(&mut self, other: &AddrSet) {
        self.v4.extend(&other.v4);
        self.v6.extend(&other.v6);
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (v4, k) = key(addr);
        if v4 {
            self.v4.contains(k)
        } else {
            self.v6.contains(k)
        }
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.0.is_empty() && self.v6.0.is_empty()
    }

    /// The IPv4 ranges, inclusive, in order.
    pub fn v4_ranges(&self) -> impl Iterator<Item = (Ipv4Addr, Ipv4Addr)> + '_ {
        // The values were built from u32s.
        self.v4
            .0
            .iter()
            .map(|&(l, h)| (Ipv4Addr::from(l as u32), Ipv4Addr::from(h as u32)))
    }

    /// The IPv6 ranges, inclusive, in order.
    pub fn v6_ranges(&self) -> impl Iterator<Item = (Ipv6Addr, Ipv6Addr)> + '_ {
        self.v6
            .0
            .iter()
            .map(|&(l, h)| (Ipv6Addr::from(l), Ipv6Addr::from(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }
    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn block_with_except() {
        let s = AddrSet::block(
            net("10.0.0.0/16"),
            &[net("10.0.1.0/24"), net("10.0.5.7/32")],
        );
        assert!(s.contains(ip("10.0.0.1")));
        assert!(!s.contains(ip("10.0.1.9")));
        assert!(s.contains(ip("10.0.2.0")));
        assert!(!s.contains(ip("10.0.5.7")));
        assert!(s.contains(ip("10.0.5.8")));
        assert!(!s.contains(ip("10.1.0.0")));
        assert!(!s.contains(ip("::1")));
        let r: Vec<_> = s.v4_ranges().collect();
        assert_eq!(r.len(), 3, "{r:?}");
    }

    #[test]
    fn whole_space_and_v6() {
        let s = AddrSet::block(
            net("0.0.0.0/0"),
            &[net("0.0.0.0/32"), net("255.255.255.255/32")],
        );
        assert!(s.contains(ip("1.2.3.4")));
        assert!(!s.contains(ip("255.255.255.255")));
        let s6 = AddrSet::block(net("::/0"), &[net("fd00::/8")]);
        assert!(s6.contains(ip("2001:db8::1")));
        assert!(!s6.contains(ip("fd00::1")));
        assert!(!s6.contains(ip("1.2.3.4")));
    }

    #[test]
    fn adjacent_addresses_merge() {
        let mut s = AddrSet::new();
        s.insert(ip("10.0.0.2"));
        s.insert(ip("10.0.0.1"));
        s.insert(ip("10.0.0.3"));
        assert_eq!(s.v4_ranges().count(), 1);
    }

    proptest! {
        #[test]
        fn matches_a_naive_model(
            base in 0u32..1024,
            len in 22u8..=32,
            excepts in proptest::collection::vec((0u32..1024, 24u8..=32), 0..4),
            probes in proptest::collection::vec(0u32..1024, 16),
        ) {
            let mk = |v: u32, l: u8| -> IpNet {
                ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | v), l)
                    .map(|n| IpNet::V4(n.trunc()))
                    .expect("prefix")
            };
            let cidr = mk(base, len);
            let ex: Vec<IpNet> = excepts.iter().map(|&(v, l)| mk(v, l)).collect();
            let s = AddrSet::block(cidr, &ex);
            for p in probes {
                let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | p));
                let want = cidr.contains(&a) && !ex.iter().any(|e| e.contains(&a));
                prop_assert_eq!(s.contains(a), want);
            }
        }
    }
}
