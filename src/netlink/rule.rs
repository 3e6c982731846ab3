//! Chained mode's policy routing: a routing table of weftnet's own holding the routes
//! into the overlay (and, with `--require-encryption`, `blackhole` routes below them),
//! and one `ip rule` per local pod (`from POD lookup TABLE`) placed ahead of the other
//! CNI's rules. Listing what an earlier run left, and removing all of it.

use super::{created, failed, removed, Netlink};
use anyhow::Result;
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{IpVersion, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn in_table(prefix: IpNet, table: u32) -> RouteMessage {
    match prefix {
        IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .table_id(table)
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .table_id(table)
            .build(),
    }
}

/// The route for `prefix` in `table` out of interface `index`.
fn through(index: u32, prefix: IpNet, table: u32) -> RouteMessage {
    let mut m = in_table(prefix, table);
    m.attributes.push(RouteAttribute::Oif(index));
    m
}

fn blackhole(prefix: IpNet, table: u32, metric: u32) -> RouteMessage {
    let mut m = in_table(prefix, table);
    m.header.kind = RouteType::BlackHole;
    m.attributes.push(RouteAttribute::Priority(metric));
    m
}

impl Netlink {
    /// Routes `prefix` into interface `index` in `table`; one already there is fine.
    pub(crate) async fn add_table_route(
        &self,
        index: u32,
        prefix: IpNet,
        table: u32,
    ) -> Result<()> {
        created(
            self.handle
                .route()
                .add(through(index, prefix, table))
                .execute()
                .await,
        )
        .map_err(failed(format!(
            "cannot add route {prefix} to table {table}"
        )))?;
        Ok(())
    }

    /// Removes the route for `prefix` into interface `index` from `table`.
    pub(crate) async fn del_table_route(
        &self,
        index: u32,
        prefix: IpNet,
        table: u32,
    ) -> Result<()> {
        removed(
            self.handle
                .route()
                .del(through(index, prefix, table))
                .execute()
                .await,
        )
        .map_err(failed(format!(
            "cannot remove route {prefix} from table {table}"
        )))?;
        Ok(())
    }

    /// Adds a `blackhole` route for `prefix` in `table` with this metric.
    pub(crate) async fn add_blackhole(&self, prefix: IpNet, table: u32, metric: u32) -> Result<()> {
        created(
            self.handle
                .route()
                .add(blackhole(prefix, table, metric))
                .execute()
                .await,
        )
        .map_err(failed(format!("cannot add blackhole route {prefix}")))?;
        Ok(())
    }

    /// Removes the `blackhole` route for `prefix`; one already gone is fine.
    pub(crate) async fn del_blackhole(&self, prefix: IpNet, table: u32, metric: u32) -> Result<()> {
        removed(
            self.handle
                .route()
                .del(blackhole(prefix, table, metric))
                .execute()
                .await,
        )
        .map_err(failed(format!("cannot remove blackhole route {prefix}")))?;
        Ok(())
    }

    /// Every route of `table`, of both families, as the kernel lists them.
    async fn table_routes(&self, table: u32) -> Result<Vec<RouteMessage>> {
        self.routes_matching(|route| (table_of(&route) == table).then_some(route))
            .await
    }

    /// The destinations of the `blackhole` routes of `table` with this metric (an
    /// earlier run's, adopted at start).
    pub(crate) async fn blackholes(&self, table: u32, metric: u32) -> Result<Vec<IpNet>> {
        let mut found = Vec::new();
        for route in self.table_routes(table).await? {
            if route.header.kind != RouteType::BlackHole
                || !route.attributes.contains(&RouteAttribute::Priority(metric))
            {
                continue;
            }
            let dst = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                _ => None,
            });
            if let Some(p) =
                dst.and_then(|d| IpNet::new(d, route.header.destination_prefix_length).ok())
            {
                found.push(p);
            }
        }
        Ok(found)
    }

    /// Removes every route of `table` (weftnet's own table, at a stop for good).
    pub(crate) async fn flush_table(&self, table: u32) -> Result<()> {
        for route in self.table_routes(table).await? {
            removed(self.handle.route().del(route).execute().await)
                .map_err(failed(format!("cannot remove a route of table {table}")))?;
        }
        Ok(())
    }

    /// Adds the rule `from ADDRESS lookup TABLE` at `priority`; one there is fine.
    pub(crate) async fn add_source_rule(
        &self,
        source: IpAddr,
        table: u32,
        priority: u32,
    ) -> Result<()> {
        let req = self
            .handle
            .rule()
            .add()
            .table_id(table)
            .priority(priority)
            .action(RuleAction::ToTable);
        let r = match source {
            IpAddr::V4(a) => req.v4().source_prefix(a, 32).execute().await,
            IpAddr::V6(a) => req.v6().source_prefix(a, 128).execute().await,
        };
        created(r).map_err(failed(format!(
            "cannot add the rule from {source} lookup {table}"
        )))?;
        Ok(())
    }

    /// The rules to `table` at `priority`, of both families.
    pub(crate) async fn source_rules(
        &self,
        table: u32,
        priority: u32,
    ) -> Result<Vec<(IpAddr, RuleMessage)>> {
        let mut found = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let mut rules = self.handle.rule().get(version).execute();
            while let Some(rule) = rules
                .try_next()
                .await
                .map_err(failed("cannot list rules"))?
            {
                if let Some(source) = source_rule(&rule, table, priority) {
                    found.push((source, rule));
                }
            }
        }
        Ok(found)
    }

    /// Removes a rule listed by [`Netlink::source_rules`]; one already gone is fine.
    pub(crate) async fn del_rule(&self, rule: RuleMessage) -> Result<()> {
        removed(self.handle.rule().del(rule).execute().await)
            .map_err(failed("cannot remove a rule"))?;
        Ok(())
    }
}

/// The table `route` is in: the header's, unless a `Table` attribute (for tables
/// above 255) overrides it.
fn table_of(route: &RouteMessage) -> u32 {
    let mut t = u32::from(route.header.table);
    for a in &route.attributes {
        if let RouteAttribute::Table(x) = a {
            t = *x;
        }
    }
    t
}

/// The source address of `rule` if it is `from ADDRESS lookup table` at `priority`.
fn source_rule(rule: &RuleMessage, table: u32, priority: u32) -> Option<IpAddr> {
    if rule.header.action != RuleAction::ToTable {
        return None;
    }
    let mut t = u32::from(rule.header.table);
    let (mut prio, mut source) = (None, None);
    for a in &rule.attributes {
        match a {
            RuleAttribute::Table(x) => t = *x,
            RuleAttribute::Priority(p) => prio = Some(*p),
            RuleAttribute::Source(s) => source = Some(*s),
            _ => {}
        }
    }
    let host = match rule.header.family {
        AddressFamily::Inet => 32,
        _ => 128,
    };
    (t == table && prio == Some(priority) && rule.header.src_len == host)
        .then_some(source)
        .flatten()
}
