//! This node's own address blocks, the one place that knows them: blocks given with
//! `--block` or by a Kubernetes Node's pod CIDRs (fixed, never re-claimed), the block
//! claimed from `--range` (or saved by an earlier run), and where their addresses and
//! routes go: on the overlay interface, or in bridge mode the gateway on the pods'
//! bridge, with that gateway as the preferred source of the routes into the overlay.

use crate::ipam;
use crate::keys::PublicKey;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

/// The interface an address goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Link {
    /// The overlay (TUN) interface, `weft0`.
    Overlay,
    /// Bridge mode: the pods' bridge.
    Bridge,
}

/// The first host address of `net` (its network address plus one).
fn first_host(net: IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    }
}

/// A block's gateway: its first host address with the block's prefix length.
pub fn gateway(block: IpNet) -> IpNet {
    IpNet::new(first_host(block), block.prefix_len()).unwrap_or(block)
}

/// The overlay address for a block of `range` without a bridge: its first host with
/// the range's prefix length, so that the kernel routes the whole range into the
/// overlay interface.
fn range_address(block: IpNet, range: IpNet) -> IpNet {
    IpNet::new(first_host(block), range.prefix_len()).unwrap_or(block)
}

/// The prefixes that need a route into the overlay: each peer prefix not already
/// covered by the connected route of one of `own` (sorted, without duplicates).
pub fn routes_needed(own: &[IpNet], peer_prefixes: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = peer_prefixes
        .iter()
        .filter(|p| !own.iter().any(|o| o.trunc().contains(*p)))
        .copied()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What [`Blocks::claim`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClaimOutcome {
    /// Nothing was due and nothing was lost.
    Nothing,
    /// A block was claimed; `old` is the block another node won, if any.
    Claimed { old: Option<IpNet>, new: IpNet },
    /// No block of the range is free; retried later.
    RangeFull,
}

#[derive(Debug, Clone)]
struct Claim {
    range: IpNet,
    block_len: u8,
    block: Option<IpNet>,
    /// When to claim while no block is held.
    due: Option<Instant>,
}

/// This node's blocks and where their addresses and routes go.
#[derive(Debug, Clone)]
pub struct Blocks {
    /// Given with `--block` (or a Node's pod CIDRs): announced, never re-claimed.
    fixed: Vec<IpNet>,
    claim: Option<Claim>,
    /// The range blocks are claimed from (in bridge mode routed into the overlay whole).
    range: Option<IpNet>,
    /// Bridge mode: block gateways go on the bridge.
    bridge: bool,
}

impl Blocks {
    /// This node's blocks at start: `fixed` ones, and with a `range` (and its block
    /// length) a block claimed from it unless a fixed block of the range's family is
    /// given. `saved` is the block of an earlier run; it is kept if it still fits.
    pub fn new(
        fixed: Vec<IpNet>,
        range: Option<(IpNet, u8)>,
        saved: Option<IpNet>,
        bridge: bool,
    ) -> Self {
        let claim_range = range.filter(|(r, _)| {
            !fixed
                .iter()
                .any(|b| b.addr().is_ipv4() == r.addr().is_ipv4())
        });
        let claim = claim_range.map(|(range, block_len)| Claim {
            range,
            block_len,
            block: saved.filter(|b| b.prefix_len() == block_len && range.contains(b)),
            due: None,
        });
        Self {
            fixed,
            claim,
            range: range.map(|(r, _)| r),
            bridge,
        }
    }

    /// Every block this node holds: the fixed ones, then the claimed one.
    pub fn held(&self) -> Vec<IpNet> {
        let mut held = self.fixed.clone();
        held.extend(self.claim.as_ref().and_then(|c| c.block));
        held
    }

    /// The block `weftnet status` shows: the claimed one, else the first fixed one.
    pub fn shown(&self) -> Option<IpNet> {
        self.claim
            .as_ref()
            .and_then(|c| c.block)
            .or_else(|| self.fixed.first().copied())
    }

    /// Whether the node still waits to claim its block.
    pub fn claiming(&self) -> bool {
        self.claim.as_ref().is_some_and(|c| c.block.is_none())
    }

    /// The blocks given with `--block`.
    pub(super) fn fixed(&self) -> &[IpNet] {
        &self.fixed
    }

    /// Where one of this node's blocks gets its address: the gateway on the bridge
    /// in bridge mode; else on the overlay, with the range's prefix length when the
    /// block lies in the range (so the whole range is routed into the overlay).
    pub fn address(&self, block: IpNet) -> (Link, IpNet) {
        match (self.bridge, self.range) {
            (true, _) => (Link::Bridge, gateway(block)),
            (false, Some(r)) if r.contains(&block) => (Link::Overlay, range_address(block, r)),
            (false, _) => (Link::Overlay, gateway(block)),
        }
    }

    /// Every address this node wants: the `given` ones on the overlay, and each held
    /// block's address where [`Blocks::address`] puts it.
    pub fn addresses(&self, given: &[IpNet]) -> BTreeSet<(Link, IpNet)> {
        given
            .iter()
            .map(|a| (Link::Overlay, *a))
            .chain(self.held().into_iter().map(|b| self.address(b)))
            .collect()
    }

    /// The routes into the overlay, each with its preferred source, for the peers'
    /// prefixes. Without a bridge: every peer prefix outside the overlay's own
    /// networks, no source. With one: also the whole range, and every route's source
    /// is this node's gateway of that family, so that what the node sends to remote
    /// pods has a source inside its own block (the receiving peer checks that).
    pub fn routes(
        &self,
        given: &[IpNet],
        peer_prefixes: &[IpNet],
    ) -> BTreeMap<IpNet, Option<IpAddr>> {
        let held = self.held();
        if !self.bridge {
            let overlay: Vec<IpNet> = self
                .addresses(given)
                .into_iter()
                .filter(|(l, _)| *l == Link::Overlay)
                .map(|(_, a)| a)
                .collect();
            return routes_needed(&overlay, peer_prefixes)
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
        let mut own: Vec<IpNet> = given.to_vec();
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

    /// Schedules the claim of a block at `at`, if none is held (an earlier schedule
    /// is replaced).
    pub(super) fn schedule_claim(&mut self, at: Instant) {
        if let Some(c) = &mut self.claim {
            if c.block.is_none() {
                c.due = Some(at);
            }
        }
    }

    /// When a claim is due.
    pub(super) fn claim_due(&self) -> Option<Instant> {
        self.claim.as_ref().and_then(|c| c.due)
    }

    /// Claims a block when one is due, or a new one when another node won ours
    /// (`others`: the live members' keys and prefixes). `retry` is when to try again
    /// if the range is full.
    pub(super) fn claim(
        &mut self,
        now: Instant,
        retry: Instant,
        me: &PublicKey,
        others: &[(PublicKey, IpNet)],
    ) -> ClaimOutcome {
        let Some(c) = &mut self.claim else {
            return ClaimOutcome::Nothing;
        };
        let lost = c
            .block
            .is_some_and(|b| ipam::must_reclaim(me, b, others.iter().map(|(k, p)| (k, p))));
        let due = c.block.is_none() && c.due.is_some_and(|d| now >= d);
        if !lost && !due {
            return ClaimOutcome::Nothing;
        }
        let taken: Vec<IpNet> = others.iter().map(|(_, p)| *p).collect();
        let Some(new) = ipam::choose_block(c.range, c.block_len, &taken, me) else {
            c.due = Some(retry);
            return ClaimOutcome::RangeFull;
        };
        let old = c.block.replace(new);
        c.due = None;
        ClaimOutcome::Claimed { old, new }
    }

    /// The range claims come from, for logs.
    pub(super) fn claim_range(&self) -> Option<IpNet> {
        self.claim.as_ref().map(|c| c.range)
    }
}

/// Other nodes' prefixes that overlap one of `fixed`, as (node, prefix, own block).
pub(super) fn conflicts<'a>(
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
        let tun = Blocks::new(vec![], Some((n("10.47.0.0/16"), 24)), None, false);
        assert_eq!(
            tun.address(n("10.47.3.0/24")),
            (Link::Overlay, n("10.47.3.1/16"))
        );
        assert_eq!(
            tun.address(n("10.244.1.0/24")),
            (Link::Overlay, n("10.244.1.1/24"))
        );
        let br = Blocks::new(vec![], Some((n("10.47.0.0/16"), 24)), None, true);
        assert_eq!(
            br.address(n("10.47.3.0/24")),
            (Link::Bridge, n("10.47.3.1/24"))
        );
        let v6 = Blocks::new(vec![], Some((n("fd47::/48"), 64)), None, false);
        assert_eq!(
            v6.address(n("fd47:0:0:5::/64")),
            (Link::Overlay, n("fd47:0:0:5::1/48"))
        );
    }

    #[test]
    fn a_fixed_block_of_the_range_family_disables_claiming() {
        let range = Some((n("10.47.0.0/16"), 24));
        assert!(!Blocks::new(vec![n("10.47.9.0/24")], range, None, false).claiming());
        assert!(Blocks::new(vec![n("fd47::/64")], range, None, false).claiming());
        assert!(Blocks::new(vec![], range, None, false).claiming());
    }

    #[test]
    fn a_saved_block_must_fit_the_range() {
        let range = Some((n("10.47.0.0/16"), 24));
        let b = Blocks::new(vec![], range, Some(n("10.47.9.0/24")), false);
        assert_eq!(b.held(), vec![n("10.47.9.0/24")]);
        assert!(!b.claiming());
        for wrong in ["10.47.9.0/25", "10.48.9.0/24"] {
            let b = Blocks::new(vec![], range, Some(n(wrong)), false);
            assert!(b.held().is_empty(), "{wrong}");
            assert!(b.claiming());
        }
    }

    #[test]
    fn only_prefixes_outside_own_networks_get_routes() {
        let own = [n("10.47.0.1/16")];
        let peers = [
            n("10.47.9.0/24"),
            n("10.99.0.0/24"),
            n("fd47::/64"),
            n("10.99.0.0/24"),
        ];
        assert_eq!(
            routes_needed(&own, &peers),
            vec![n("10.99.0.0/24"), n("fd47::/64")]
        );
    }

    #[test]
    fn bridge_routes_carry_the_gateway_as_source() {
        let peers = [n("10.244.2.0/24"), n("10.244.3.0/24"), n("fd44::/64")];
        let held = vec![n("10.244.1.0/24")];
        let p = Blocks::new(held.clone(), None, None, true);
        let routes = p.routes(&[], &peers);
        let src: Option<IpAddr> = "10.244.1.1".parse().ok();
        assert_eq!(routes.get(&peers[0]), Some(&src));
        assert_eq!(routes.get(&peers[1]), Some(&src));
        assert_eq!(routes.get(&peers[2]), Some(&None));
        // With a range: the range itself, and no per-peer routes inside it.
        let p = Blocks::new(held.clone(), Some((n("10.244.0.0/16"), 24)), None, true);
        let routes = p.routes(&[], &peers);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes.get(&n("10.244.0.0/16")), Some(&src));
        // Without a bridge: the block's address covers the range; no sources.
        let p = Blocks::new(held, Some((n("10.244.0.0/16"), 24)), None, false);
        let routes = p.routes(&[], &peers);
        assert_eq!(routes.len(), 1);
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
