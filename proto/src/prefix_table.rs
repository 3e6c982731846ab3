//! A longest-prefix-match table from IPv4/IPv6 prefixes to values.
//!
//! Lookups hash once per distinct prefix length present (at most 33 for IPv4, 129 for
//! IPv6, in practice two or three), so the cost does not grow with the number of peers.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest-prefix-match table.
#[derive(Debug, Clone)]
pub struct PrefixTable<T> {
    v4: Family<u32, T>,
    v6: Family<u128, T>,
}

#[derive(Debug, Clone)]
struct Family<K, T> {
    /// Prefix lengths present, longest first.
    lengths: Vec<u8>,
    /// (length, masked network bits) -> value. Hashed with foldhash (seeded per
    /// table): looked up for every packet both ways, where SipHash cost more than the
    /// rest of the lookup.
    entries: HashMap<(u8, K), T, foldhash::fast::RandomState>,
}

impl<K, T> Default for Family<K, T> {
    fn default() -> Self {
        Self {
            lengths: Vec::new(),
            entries: HashMap::default(),
        }
    }
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        Self {
            v4: Family::default(),
            v6: Family::default(),
        }
    }
}

fn mask4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

impl<K: std::hash::Hash + Eq + Copy, T> Family<K, T> {
    fn insert(&mut self, len: u8, key: K, value: T) -> Option<T> {
        if !self.lengths.contains(&len) {
            self.lengths.push(len);
            self.lengths.sort_unstable_by(|a, b| b.cmp(a));
        }
        self.entries.insert((len, key), value)
    }

    fn remove(&mut self, len: u8, key: K) -> Option<T> {
        let old = self.entries.remove(&(len, key));
        if old.is_some() && !self.entries.keys().any(|(l, _)| *l == len) {
            self.lengths.retain(|l| *l != len);
        }
        old
    }

    fn lookup(&self, mask: impl Fn(u8) -> K) -> Option<&T> {
        self.lengths
            .iter()
            .find_map(|&len| self.entries.get(&(len, mask(len))))
    }
}

impl<T> PrefixTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `prefix` (host bits are ignored), returning the value it replaced.
    pub fn insert(&mut self, prefix: IpNet, value: T) -> Option<T> {
        match prefix.trunc() {
            IpNet::V4(n) => self
                .v4
                .insert(n.prefix_len(), u32::from(n.network()), value),
            IpNet::V6(n) => self
                .v6
                .insert(n.prefix_len(), u128::from(n.network()), value),
        }
    }

    /// Removes exactly `prefix`, returning its value.
    pub fn remove(&mut self, prefix: IpNet) -> Option<T> {
        match prefix.trunc() {
            IpNet::V4(n) => self.v4.remove(n.prefix_len(), u32::from(n.network())),
            IpNet::V6(n) => self.v6.remove(n.prefix_len(), u128::from(n.network())),
        }
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.lookup(|len| mask4(a, len))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.lookup(|len| mask6(a, len))
            }
        }
    }

    /// Every prefix with its value (unordered).
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> {
        let v4 = self.v4.entries.iter().filter_map(|((len, net), v)| {
            Ipv4Net::new(Ipv4Addr::from(*net), *len)
                .ok()
                .map(|n| (IpNet::V4(n), v))
        });
        let v6 = self.v6.entries.iter().filter_map(|((len, net), v)| {
            Ipv6Net::new(Ipv6Addr::from(*net), *len)
                .ok()
                .map(|n| (IpNet::V6(n), v))
        });
        v4.chain(v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid prefix")
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = PrefixTable::new();
        t.insert(net("10.0.0.0/8"), 1);
        t.insert(net("10.47.0.0/16"), 2);
        t.insert(net("10.47.3.9/32"), 3);
        t.insert(net("0.0.0.0/0"), 4);
        t.insert(net("fd00::/8"), 5);
        t.insert(net("fd00:1::/32"), 6);
        let at = |t: &PrefixTable<i32>, s: &str| t.lookup(s.parse().expect("addr")).copied();
        assert_eq!(at(&t, "10.47.3.9"), Some(3));
        assert_eq!(at(&t, "10.47.3.10"), Some(2));
        assert_eq!(at(&t, "10.1.1.1"), Some(1));
        assert_eq!(at(&t, "192.0.2.1"), Some(4));
        assert_eq!(at(&t, "fd00:1::5"), Some(6));
        assert_eq!(at(&t, "fd00:2::5"), Some(5));
        assert_eq!(at(&t, "2001:db8::1"), None);
        assert_eq!(t.remove(net("10.47.3.9/32")), Some(3));
        assert_eq!(at(&t, "10.47.3.9"), Some(2));
        assert_eq!(t.iter().count(), 5);
    }

    proptest! {
        // The table agrees with a linear scan for the longest containing prefix.
        #[test]
        fn matches_linear_scan(
            prefixes in proptest::collection::vec((any::<u32>(), 0u8..=32), 1..20),
            probes in proptest::collection::vec(any::<u32>(), 1..50),
        ) {
            let mut t = PrefixTable::new();
            let mut list = Vec::new();
            for (i, (a, len)) in prefixes.iter().enumerate() {
                let n = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(*a), *len).expect("len ok")).trunc();
                t.insert(n, i);
                list.retain(|(p, _)| *p != n);
                list.push((n, i));
            }
            for p in probes {
                let addr = IpAddr::V4(Ipv4Addr::from(p));
                let want = list.iter().filter(|(n, _)| n.contains(&addr))
                    .max_by_key(|(n, _)| n.prefix_len()).map(|(_, v)| *v);
                prop_assert_eq!(t.lookup(addr).copied(), want);
            }
        }
    }
}
