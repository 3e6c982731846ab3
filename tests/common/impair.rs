//! Impairments of the underlay, for fault tests: loss, duplication, blackholed
//! pairs or partitions, gossip alone cut off, as nftables rules in the topology's
//! switch namespace (so the hosts and daemons under test see only a worse network).
//! Delay and reordering have no nftables form, this kernel has no netem, and an
//! nftables `queue` to an NFQUEUE handler is refused (`nft_queue` missing: "No such
//! file or directory" in both the bridge and inet families): they are in `delay.rs`
//! ([`Delay`](super::Delay): a TUN read by a thread of the test process, behind
//! policy routing in a host's namespace).
//!
//! Each [`Impairment`] is a guard owning one nftables table: dropping it removes the
//! table (the impairment ends: a partition heals); the switch namespace's deletion
//! removes it too if the test dies. Only UDP is impaired (the mesh's underlay traffic:
//! WireGuard and gossip); ARP and neighbour discovery are left alone, so that a
//! blackhole is a blackhole and not a neighbour-table failure.

use super::*;

static TABLE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// One set of impairment rules, removed on drop.
#[derive(Debug)]
pub struct Impairment {
    switch: Netns,
    family: &'static str,
    table: String,
}

impl Impairment {
    fn install(underlay: &Underlay, family: &'static str, body: &str) -> Impairment {
        let switch = underlay.switch().clone();
        let table = format!("impair{}", TABLE_COUNTER.fetch_add(1, Ordering::Relaxed));
        let script = format!("table {family} {table} {{\n{body}\n}}\n");
        let dir = temp_dir("impair");
        let path = dir.path().join("rules.nft");
        std::fs::write(&path, &script).expect("write nft script");
        let out = switch.exec("nft", &["-f".as_ref(), path.as_os_str()] as &[&OsStr]);
        assert!(
            out.status.success(),
            "nft rules did not load:\n{script}\n{}",
            describe(&out)
        );
        Impairment {
            switch,
            family,
            table,
        }
    }

    /// Drops `percent` % of the UDP datagrams crossing the underlay bridge(s), in both
    /// directions, independently at random.
    pub fn loss(underlay: &Underlay, percent: u32) -> Impairment {
        assert!(percent <= 100);
        let body = format!(
            "  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    \
             meta l4proto udp numgen random mod 100 < {percent} counter drop\n  }}"
        );
        Self::install(underlay, "bridge", &body)
    }

    /// Drops every UDP datagram between any host of `a` and any host of `b` (both
    /// directions); traffic within each group flows. One pair is `partition(&[x], &[y])`.
    pub fn partition(underlay: &Underlay, a: &[&Host], b: &[&Host]) -> Impairment {
        let set = |hs: &[&Host]| {
            hs.iter()
                .map(|h| h.underlay_v4().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let set6 = |hs: &[&Host]| {
            hs.iter()
                .map(|h| h.underlay_v6().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (a4, b4, a6, b6) = (set(a), set(b), set6(a), set6(b));
        let body = format!(
            "  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    \
             ip saddr {{ {a4} }} ip daddr {{ {b4} }} meta l4proto udp counter drop\n    \
             ip saddr {{ {b4} }} ip daddr {{ {a4} }} meta l4proto udp counter drop\n    \
             ip6 saddr {{ {a6} }} ip6 daddr {{ {b6} }} meta l4proto udp counter drop\n    \
             ip6 saddr {{ {b6} }} ip6 daddr {{ {a6} }} meta l4proto udp counter drop\n  }}"
        );
        Self::install(underlay, "bridge", &body)
    }

    /// Drops the gossip datagrams (UDP payload starting with 0x40) to and from the
    /// hosts in `cut`; their WireGuard traffic flows. Gossip sees them fail while the
    /// data plane keeps working.
    pub fn gossip_blackhole(underlay: &Underlay, cut: &[&Host]) -> Impairment {
        let set = cut
            .iter()
            .map(|h| h.underlay_v4().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let body = format!(
            "  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    \
             ip saddr {{ {set} }} meta l4proto udp @th,64,8 0x40 counter drop\n    \
             ip daddr {{ {set} }} meta l4proto udp @th,64,8 0x40 counter drop\n  }}"
        );
        Self::install(underlay, "bridge", &body)
    }

    /// Delivers `percent` % of the UDP datagrams (IPv4) between hosts twice: the copy
    /// is sent straight out of the destination's switch port (netdev `dup`), the
    /// original takes the bridge.
    pub fn duplicate(underlay: &Underlay, percent: u32) -> Impairment {
        assert!(percent <= 100);
        let hosts = underlay.hosts();
        let mut body = String::new();
        for src in hosts {
            body.push_str(&format!(
                "  chain dup_p{i} {{\n    type filter hook ingress device \"p{i}\" priority 0; policy accept;\n",
                i = src.index()
            ));
            for dst in hosts.iter().filter(|d| d.index() != src.index()) {
                body.push_str(&format!(
                    "    ip daddr {} meta l4proto udp numgen random mod 100 < {percent} counter dup to \"p{}\"\n",
                    dst.underlay_v4(),
                    dst.index()
                ));
            }
            body.push_str("  }\n");
        }
        Self::install(underlay, "netdev", &body)
    }

    /// Packets this impairment acted on (dropped or duplicated), summed over its rules.
    pub fn hits(&self) -> u64 {
        let out = self
            .switch
            .exec("nft", &["list", "table", self.family, self.table.as_str()]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Impairment {
    fn drop(&mut self) {
        let out = self.switch.exec(
            "nft",
            &["delete", "table", self.family, self.table.as_str()],
        );
        if !out.status.success() && !std::thread::panicking() {
            eprintln!(
                "[harness] could not remove nft table {} {}: {}",
                self.family,
                self.table,
                describe(&out)
            );
        }
    }
}
