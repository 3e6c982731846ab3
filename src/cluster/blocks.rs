//! This node's own address blocks and where their addresses and routes go: blocks given
//! with `--block` (fixed, never re-claimed), the block claimed from `--range` (or saved
//! by an earlier claim), and in bridge mode the gateway address on the pods' bridge and
//! the preferred source of the routes into the TUN.

use super::bootstrap::block_address;
use crate::netlink::routes_needed;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use weftnet_proto::keys::PublicKey;

/// Where this node's block addresses go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    /// The TUN's index.
    pub(crate) tun: u32,
    /// Bridge mode: the bridge's index (block gateways go there).
    pub(crate) bridge: Option<u32>,
    /// The range blocks are claimed from (also routed into the TUN in bridge mode).
    pub(crate) range: Option<IpNet>,
}

/// A block's gateway: its first host address with the block's prefix length.
pub(crate) fn gateway(block: IpNet) -> IpNet {
    let host = match block.network() {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    };
    IpNet::new(host, block.prefix_len()).unwrap_or(block)
}

/// The range to claim a block from: `--range`, unless `--block` gives this node a
/// block of the range's family.
pub(crate) fn claim_range(range: Option<(IpNet, u8)>, fixed: &[IpNet]) -> Option<(IpNet, u8)> {
    range.filter(|(r, _)| {
        !fixed
            .iter()
            .any(|b| b.addr().is_ipv4() == r.addr().is_ipv4())
    })
}

impl Placement {
    /// The interface and address for one of this node's blocks: the gateway on the
    /// bridge in bridge mode; else on the TUN, with the range's prefix length when the
    /// block lies in the range (so the whole range is routed into the TUN).
    pub(crate) fn address(&self, block: IpNet) -> (u32, IpNet) {
        match (self.bridge, self.range) {
            (Some(bridge), _) => (bridge, gateway(block)),
            (None, Some(r)) if r.contains(&block) => (self.tun, block_address(block, r)),
            (None, _) => (self.tun, gateway(block)),
        }
    }

    /// The routes into the TUN, each with its preferred source. Without a bridge: every
    /// peer prefix outside the TUN's own networks, no source (as before bridge mode).
    /// With one: also the whole range, and every route's source is this node's gateway
    /// of that family, so that what the node sends to remote pods has a source inside
    /// its own block (the receiving peer checks that).
    pub(crate) fn routes(
        &self,
        tun_addresses: &[IpNet],
        held: &[IpNet],
        peer_prefixes: &[IpNet],
    ) -> BTreeMap<IpNet, Option<IpAddr>> {
        if self.bridge.is_none() {
            return routes_needed(tun_addresses, peer_prefixes)
                .into_iter()
                .map(|p| (p, None))
                .collect();
        }
        let gateways: Vec<IpNet> = held.iter().map(|b| gateway(*b)).collect();
        let src = |p: &IpNet| {
            gateways
                .iter()
                .find(|g| g.addr().is_ipv4() == p.addr().is_ipv4())
                .map(|g| g.addr())
        };
        let mut own: Vec<IpNet> = tun_addresses.to_vec();
        own.extend(held.iter().copied());
        own.extend(self.range);
        let mut out: BTreeMap<IpNet, Option<IpAddr>> = routes_needed(&own, peer_prefixes)
            .into_iter()
            .map(|p| (p, src(&p)))
            .collect();
        if let Some(r) = self.range {
            out.insert(r, src(&r));
        }
        out
    }
}

/// Other nodes' prefixes that overlap one of this node's fixed blocks, as (node, prefix).
pub(crate) fn conflicts<'a>(
    fixed: &'a [IpNet],
    others: impl Iterator<Item = (PublicKey, IpNet)> + 'a,
) -> impl Iterator<Item = (PublicKey, IpNet, IpNet)> + 'a {
    others.flat_map(move |(key, p)| {
        fixed
            .iter()
            .filter(move |f| f.contains(&p.network()) || p.contains(&f.network()))
            .map(move |f| (key, p, *f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn gateways_and_addresses() {
        assert_eq!(gateway(n("10.244.1.0/24")), n("10.244.1.1/24"));
        assert_eq!(gateway(n("fd44:0:0:1::/64")), n("fd44:0:0:1::1/64"));
        let range = Some(n("10.47.0.0/16"));
        let tun = Placement {
            tun: 7,
            bridge: None,
            range,
        };
        assert_eq!(tun.address(n("10.47.3.0/24")), (7, n("10.47.3.1/16")));
        assert_eq!(tun.address(n("10.244.1.0/24")), (7, n("10.244.1.1/24")));
        let br = Placement {
            bridge: Some(9),
            ..tun
        };
        assert_eq!(br.address(n("10.47.3.0/24")), (9, n("10.47.3.1/24")));
    }

    #[test]
    fn a_fixed_block_of_the_range_family_disables_claiming() {
        let range = Some((n("10.47.0.0/16"), 24));
        assert_eq!(claim_range(range, &[n("10.47.9.0/24")]), None);
        assert_eq!(claim_range(range, &[n("fd47::/64")]), range);
        assert_eq!(claim_range(range, &[]), range);
    }

    #[test]
    fn bridge_routes_carry_the_gateway_as_source() {
        let peers = [n("10.244.2.0/24"), n("10.244.3.0/24"), n("fd44::/64")];
        let held = [n("10.244.1.0/24")];
        let p = Placement {
            tun: 1,
            bridge: Some(2),
            range: None,
        };
        let routes = p.routes(&[], &held, &peers);
        let src: Option<IpAddr> = "10.244.1.1".parse().ok();
        assert_eq!(routes.get(&peers[0]), Some(&src));
        assert_eq!(routes.get(&peers[1]), Some(&src));
        assert_eq!(routes.get(&peers[2]), Some(&None));
        // With a range: the range itself, and no per-peer routes inside it.
        let p = Placement {
            range: Some(n("10.244.0.0/16")),
            ..p
        };
        let routes = p.routes(&[], &held, &peers);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes.get(&n("10.244.0.0/16")), Some(&src));
        // Without a bridge: as before bridge mode.
        let p = Placement { bridge: None, ..p };
        let routes = p.routes(&[n("10.244.1.1/24")], &held, &peers);
        assert_eq!(routes.len(), 3);
        assert!(routes.values().all(Option::is_none));
    }

    #[test]
    fn overlapping_prefixes_conflict() {
        let k = PublicKey::from_bytes([1; 32]);
        let fixed = [n("10.244.1.0/24")];
        let others = vec![
            (k, n("10.244.1.0/25")),
            (k, n("10.244.0.0/16")),
            (k, n("10.244.2.0/24")),
        ];
        let found: Vec<_> = conflicts(&fixed, others.into_iter()).collect();
        assert_eq!(found.len(), 2);
    }
}
