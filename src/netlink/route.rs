//! Routes: the overlay's routes into the TUN (with a preferred source in bridge
//! mode), bridge mode's `unreachable` guard for the range (and finding those left
//! behind), and a pod's default route.
//! Which routes the overlay needs is the node reconciler's decision.

use super::{created, failed, removed, Netlink};
use anyhow::Result;
use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::RouteMessageBuilder;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

impl Netlink {
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

    /// Adds an `unreachable` route for `prefix` with this metric, if there is none yet;
    /// returns whether it was added.
    pub(crate) async fn add_unreachable(&self, prefix: IpNet, metric: u32) -> Result<bool> {
        let message = unreachable(prefix, metric);
        created(self.handle.route().add(message).execute().await)
            .map_err(failed(format!("cannot add unreachable route {prefix}")))
    }

    /// Removes the `unreachable` route for `prefix` with this metric; one already gone
    /// is fine. Returns whether it was there.
    pub(crate) async fn del_unreachable(&self, prefix: IpNet, metric: u32) -> Result<bool> {
        let message = unreachable(prefix, metric);
        removed(self.handle.route().del(message).execute().await)
            .map_err(failed(format!("cannot remove unreachable route {prefix}")))
    }

    /// The prefixes of the `unreachable` routes with this metric in the main table, of
    /// both address families.
    pub(crate) async fn unreachable_routes(&self, metric: u32) -> Result<Vec<IpNet>> {
        self.routes_matching(|route| unreachable_prefix(&route, metric))
            .await
    }

    /// The routes weftnet put into the interface (an earlier run's, on a persistent
    /// overlay): main table, unicast, protocol `static` (what weftnet adds; `ip route
    /// add` makes `boot` routes, and the kernel's own are `kernel`), with their
    /// preferred source.
    pub(crate) async fn routes_into(&self, index: u32) -> Result<Vec<(IpNet, Option<IpAddr>)>> {
        self.routes_into_table(index, u32::from(RouteHeader::RT_TABLE_MAIN))
            .await
    }

    /// [`Netlink::routes_into`] for the routes of `table` (chained mode's own table).
    pub(crate) async fn routes_into_table(
        &self,
        index: u32,
        table: u32,
    ) -> Result<Vec<(IpNet, Option<IpAddr>)>> {
        self.routes_matching(|route| weftnet_route(&route, index, table))
            .await
    }

    /// What `pick` takes from the routes of both address families, as the kernel
    /// lists them (every table).
    pub(super) async fn routes_matching<T>(
        &self,
        pick: impl Fn(RouteMessage) -> Option<T>,
    ) -> Result<Vec<T>> {
        let mut found = Vec::new();
        let dumps = [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ];
        for dump in dumps {
            let mut routes = self.handle.route().get(dump).execute();
            while let Some(route) = routes
                .try_next()
                .await
                .map_err(failed("cannot list routes"))?
            {
                if let Some(r) = pick(route) {
                    found.push(r);
                }
            }
        }
        Ok(found)
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

/// The destination of `route` if it is an `unreachable` route of the main table with
/// this metric.
fn unreachable_prefix(route: &RouteMessage, metric: u32) -> Option<IpNet> {
    if route.header.kind != RouteType::Unreachable {
        return None;
    }
    let mut table = u32::from(route.header.table);
    let mut priority = None;
    let mut destination = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => priority = Some(*p),
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                destination = Some(IpAddr::V4(*ip))
            }
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => {
                destination = Some(IpAddr::V6(*ip))
            }
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || priority != Some(metric) {
        return None;
    }
    IpNet::new(destination?, route.header.destination_prefix_length).ok()
}

/// `route`'s destination and preferred source if weftnet added it into interface
/// `index` (see [`Netlink::routes_into`]).
fn weftnet_route(
    route: &RouteMessage,
    index: u32,
    wanted_table: u32,
) -> Option<(IpNet, Option<IpAddr>)> {
    if route.header.kind != RouteType::Unicast || route.header.protocol != RouteProtocol::Static {
        return None;
    }
    let mut table = u32::from(route.header.table);
    let (mut oif, mut destination, mut src) = (None, None, None);
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(a) => destination = ip_of(a),
            RouteAttribute::PrefSource(a) => src = ip_of(a),
            _ => {}
        }
    }
    if table != wanted_table || oif != Some(index) {
        return None;
    }
    let prefix = IpNet::new(destination?, route.header.destination_prefix_length).ok()?;
    Some((prefix, src))
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn weftnet_routes_are_recognised_by_protocol_table_and_interface() {
        let prefix: IpNet = "10.99.0.0/24".parse().expect("net");
        let mut ours = to(prefix);
        ours.attributes.push(RouteAttribute::Oif(7));
        let src: IpAddr = "10.47.1.1".parse().expect("ip");
        ours.attributes.push(RouteAttribute::PrefSource(src.into()));
        let main = u32::from(RouteHeader::RT_TABLE_MAIN);
        assert_eq!(weftnet_route(&ours, 7, main), Some((prefix, Some(src))));
        assert_eq!(weftnet_route(&ours, 8, main), None, "another interface");
        assert_eq!(weftnet_route(&ours, 7, 51820), None, "another table");
        let mut chained = ours.clone();
        chained.attributes.push(RouteAttribute::Table(51820));
        assert_eq!(weftnet_route(&chained, 7, 51820), Some((prefix, Some(src))));
        assert_eq!(weftnet_route(&chained, 7, main), None);
        let mut by_hand = ours.clone();
        by_hand.header.protocol = RouteProtocol::Boot;
        assert_eq!(weftnet_route(&by_hand, 7, main), None, "ip route add");
        let mut guard = unreachable(prefix, 7);
        guard.attributes.push(RouteAttribute::Oif(7));
        assert_eq!(weftnet_route(&guard, 7, main), None);
    }

    #[test]
    fn guard_routes_are_recognised_by_type_table_and_metric() {
        let prefix: IpNet = "10.47.0.0/16".parse().expect("net");
        let guard = unreachable(prefix, 7);
        assert_eq!(unreachable_prefix(&guard, 7), Some(prefix));
        assert_eq!(unreachable_prefix(&guard, 8), None);
        let v6: IpNet = "fd00:47::/48".parse().expect("net");
        assert_eq!(unreachable_prefix(&unreachable(v6, 7), 7), Some(v6));
        let mut other_table = unreachable(prefix, 7);
        other_table.attributes.push(RouteAttribute::Table(100));
        assert_eq!(unreachable_prefix(&other_table, 7), None);
        let mut plain = to(prefix);
        plain.attributes.push(RouteAttribute::Priority(7));
        assert_eq!(unreachable_prefix(&plain, 7), None);
    }
}
