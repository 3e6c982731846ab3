//! Reconciliation of the host's state with what the node wants: the addresses and
//! routes it believes are installed, and the smallest ordered list of changes that
//! turns them into the wanted ones. Applying the same wanted state twice changes
//! nothing; a change the host refused is forgotten, so the next pass tries it again.
//! After a restart the belief starts from what the host really has ([`HostState`]: the
//! persistent overlay interface keeps its addresses and routes), so the first pass
//! neither adds them twice nor removes them needlessly; only what is stale goes.

use super::blocks::Link;
use super::Effect;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

/// What an earlier run left installed, read from the host at start: the overlay's
/// addresses and the routes weftnet put into it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HostState {
    /// Addresses on the overlay interface.
    pub addresses: Vec<IpNet>,
    /// Routes into the overlay, with their preferred source.
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
}

/// What the node believes the host has.
#[derive(Debug, Default, Clone)]
pub(super) struct Installed {
    addresses: BTreeSet<(Link, IpNet)>,
    /// Routes into the overlay, with their preferred source.
    routes: BTreeMap<IpNet, Option<IpAddr>>,
}

impl Installed {
    /// The belief that matches what the host has.
    pub(super) fn adopt(host: HostState) -> Self {
        Self {
            addresses: host
                .addresses
                .into_iter()
                .map(|a| (Link::Overlay, a))
                .collect(),
            routes: host.routes.into_iter().collect(),
        }
    }

    /// Queues the changes from what is installed to `addresses` and `routes`, in an
    /// order the kernel accepts: stale routes go first (a route whose source changed
    /// is replaced), then stale addresses (before new ones, so that a moved block's
    /// address never sits beside the old one as a secondary), then new addresses,
    /// then new routes (whose source must exist). Returns whether anything changed.
    pub(super) fn reconcile(
        &mut self,
        addresses: BTreeSet<(Link, IpNet)>,
        routes: BTreeMap<IpNet, Option<IpAddr>>,
        out: &mut VecDeque<Effect>,
    ) -> bool {
        let before = out.len();
        let stale_routes: Vec<IpNet> = self
            .routes
            .iter()
            .filter(|(p, src)| routes.get(*p) != Some(*src))
            .map(|(p, _)| *p)
            .collect();
        for prefix in stale_routes {
            self.routes.remove(&prefix);
            out.push_back(Effect::DelRoute { prefix });
        }
        let stale_addresses: Vec<(Link, IpNet)> =
            self.addresses.difference(&addresses).copied().collect();
        for (link, address) in stale_addresses {
            self.addresses.remove(&(link, address));
            out.push_back(Effect::DelAddress { link, address });
        }
        for (link, address) in addresses {
            if self.addresses.insert((link, address)) {
                out.push_back(Effect::AddAddress { link, address });
            }
        }
        for (prefix, src) in routes {
            if let std::collections::btree_map::Entry::Vacant(e) = self.routes.entry(prefix) {
                e.insert(src);
                out.push_back(Effect::AddRoute { prefix, src });
            }
        }
        out.len() > before
    }

    /// The host refused `effect`: forget that it was applied (for additions), so the
    /// next pass tries again.
    pub(super) fn failed(&mut self, effect: &Effect) {
        match effect {
            Effect::AddAddress { link, address } => {
                self.addresses.remove(&(*link, *address));
            }
            Effect::AddRoute { prefix, .. } => {
                self.routes.remove(prefix);
            }
            _ => {}
        }
    }

    /// The installed routes, for status and tests.
    pub(super) fn routes(&self) -> &BTreeMap<IpNet, Option<IpAddr>> {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn the_same_state_twice_changes_nothing() {
        let mut installed = Installed::default();
        let mut out = VecDeque::new();
        let addrs: BTreeSet<_> = [(Link::Overlay, n("10.47.0.1/16"))].into();
        let routes: BTreeMap<_, _> = [(n("10.99.0.0/24"), None)].into();
        assert!(installed.reconcile(addrs.clone(), routes.clone(), &mut out));
        assert_eq!(out.len(), 2);
        out.clear();
        assert!(!installed.reconcile(addrs, routes, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn a_moved_gateway_is_a_minimal_ordered_diff() {
        let mut installed = Installed::default();
        let mut out = VecDeque::new();
        let keep: (IpNet, Option<IpAddr>) = (n("fd44::/64"), None);
        installed.reconcile(
            [(Link::Bridge, n("10.244.1.1/24"))].into(),
            [(n("10.244.0.0/16"), ip("10.244.1.1")), keep].into(),
            &mut out,
        );
        out.clear();
        installed.reconcile(
            [(Link::Bridge, n("10.244.7.1/24"))].into(),
            [(n("10.244.0.0/16"), ip("10.244.7.1")), keep].into(),
            &mut out,
        );
        let got: Vec<Effect> = out.into_iter().collect();
        assert_eq!(
            got,
            vec![
                Effect::DelRoute {
                    prefix: n("10.244.0.0/16")
                },
                Effect::DelAddress {
                    link: Link::Bridge,
                    address: n("10.244.1.1/24")
                },
                Effect::AddAddress {
                    link: Link::Bridge,
                    address: n("10.244.7.1/24")
                },
                Effect::AddRoute {
                    prefix: n("10.244.0.0/16"),
                    src: ip("10.244.7.1")
                },
            ]
        );
    }

    #[test]
    fn an_adopted_host_changes_only_what_is_stale() {
        let host = HostState {
            addresses: vec![n("10.47.3.1/16"), n("10.47.9.1/16")],
            routes: vec![(n("10.99.0.0/24"), None), (n("10.98.0.0/24"), None)],
        };
        let mut installed = Installed::adopt(host);
        let mut out = VecDeque::new();
        installed.reconcile(
            [(Link::Overlay, n("10.47.3.1/16"))].into(),
            [(n("10.99.0.0/24"), None), (n("10.97.0.0/24"), None)].into(),
            &mut out,
        );
        let got: Vec<Effect> = out.into_iter().collect();
        assert_eq!(
            got,
            vec![
                Effect::DelRoute {
                    prefix: n("10.98.0.0/24")
                },
                Effect::DelAddress {
                    link: Link::Overlay,
                    address: n("10.47.9.1/16")
                },
                Effect::AddRoute {
                    prefix: n("10.97.0.0/24"),
                    src: None
                },
            ]
        );
    }

    #[test]
    fn a_refused_change_is_tried_again() {
        let mut installed = Installed::default();
        let mut out = VecDeque::new();
        let routes: BTreeMap<_, _> = [(n("10.99.0.0/24"), None)].into();
        installed.reconcile(BTreeSet::new(), routes.clone(), &mut out);
        let refused = out.pop_front().expect("one route");
        installed.failed(&refused);
        assert!(installed.reconcile(BTreeSet::new(), routes, &mut out));
        assert_eq!(out.pop_front(), Some(refused));
    }
}
