//! Routes: the overlay's routes into the TUN (with a preferred source in bridge
//! mode), bridge mode's `unreachable` guard for the range, a pod's default route, and
//! which peer prefixes need a route at all.

use super::{created, failed, removed, Netlink};
use anyhow::Result;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteType};
use rtnetlink::RouteMessageBuilder;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

impl Netlink {
    /// Routes `prefix` into the interface. An identical route already present is fine.
    pub(crate) async fn add_route(&self, index: u32, prefix: IpNet) -> Result<()> {
        self.add_route_src(index, prefix, None).await
    }

    /// Routes `prefix` into the interface with preferred source `src` (RTA_PREFSRC).
    /// An identical route already present is fine.
    pub(crate) async fn add_route_src(
        &self,
        index: u32,
        prefix: IpNet,
        src: Option<IpAddr>,
    ) -> Result<()> {
        let mut message = to(prefix);
        message.attributes.push(RouteAttribute::Oif(index));
        if let Some(src) = src {
            message
                .attributes
                .push(RouteAttribute::PrefSource(src.into()));
        }
        let added = created(self.handle.route().add(message).execute().await)
            .map_err(failed(format!("cannot add route {prefix}")))?;
        if !added {
            tracing::warn!(%prefix, "a route for this prefix already exists; leaving it");
        }
        Ok(())
    }

    /// Removes the route for `prefix` through the interface; one already gone is fine.
    pub(crate) async fn del_route(&self, index: u32, prefix: IpNet) -> Result<()> {
        let mut message = to(prefix);
        message.attributes.push(RouteAttribute::Oif(index));
        removed(self.handle.route().del(message).execute().await)
            .map_err(failed(format!("cannot remove route {prefix}")))?;
        Ok(())
    }

    /// Adds an `unreachable` route for `prefix` with this metric, if there is none yet.
    pub(crate) async fn add_unreachable(&self, prefix: IpNet, metric: u32) -> Result<()> {
        let message = unreachable(prefix, metric);
        created(self.handle.route().add(message).execute().await)
            .map_err(failed(format!("cannot add unreachable route {prefix}")))?;
        Ok(())
    }

    /// Adds the default route of `gateway`'s family via `gateway` out of the
    /// interface; one already there is an error.
    pub(crate) async fn add_default_route(&self, index: u32, gateway: IpAddr) -> Result<()> {
        // 0.0.0.0/0 or ::/0.
        let any = match gateway {
            IpAddr::V4(_) => IpNet::V4(Ipv4Net::default()),
            IpAddr::V6(_) => IpNet::V6(Ipv6Net::default()),
        };
        let mut message = to(any);
        message
            .attributes
            .push(RouteAttribute::Gateway(gateway.into()));
        message.attributes.push(RouteAttribute::Oif(index));
        self.handle
            .route()
            .add(message)
            .execute()
            .await
            .map_err(failed(format!(
                "cannot add the default route via {gateway}"
            )))
    }
}

/// A route in the main table to `prefix`, before its next hop, type or metric.
fn to(prefix: IpNet) -> RouteMessage {
    match prefix {
        IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .build(),
    }
}

/// An `unreachable` route for `prefix` with this metric.
fn unreachable(prefix: IpNet, metric: u32) -> RouteMessage {
    let mut message = to(prefix);
    message.header.kind = RouteType::Unreachable;
    message.attributes.push(RouteAttribute::Priority(metric));
    message
}

/// The prefixes that need a route into the interface: each peer prefix not already
/// covered by the connected route of one of our own addresses.
pub(crate) fn routes_needed(own: &[IpNet], peer_prefixes: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = peer_prefixes
        .iter()
        .filter(|p| !own.iter().any(|o| o.trunc().contains(*p)))
        .copied()
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::route::RouteAddress;

    #[test]
    fn only_prefixes_outside_own_networks_get_routes() {
        let own: Vec<IpNet> = vec!["10.47.0.1/16".parse().expect("net")];
        let peers: Vec<IpNet> = ["10.47.9.0/24", "10.99.0.0/24", "fd47::/64", "10.99.0.0/24"]
            .iter()
            .map(|s| s.parse().expect("net"))
            .collect();
        let want: Vec<IpNet> = vec![
            "10.99.0.0/24".parse().expect("net"),
            "fd47::/64".parse().expect("net"),
        ];
        assert_eq!(routes_needed(&own, &peers), want);
    }

    #[test]
    fn route_destinations_are_the_network() {
        let m = to("10.1.2.3/16".parse().expect("net"));
        assert_eq!(m.header.destination_prefix_length, 16);
        let dst = Ipv4Addr::new(10, 1, 0, 0);
        assert_eq!(
            m.attributes,
            vec![RouteAttribute::Destination(RouteAddress::Inet(dst))]
        );
        let m = to("fd00::1/64".parse().expect("net"));
        assert_eq!(m.header.destination_prefix_length, 64);
        assert!(m
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet6(
                "fd00::".parse().expect("ip")
            ))));
    }
}
