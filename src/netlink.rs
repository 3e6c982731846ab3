//! Interface configuration over rtnetlink: MTU, addresses, link state and routes of
//! the overlay interface. Nothing else in the daemon changes kernel network state.

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A connection to the kernel's routing socket.
pub(crate) struct Netlink {
    handle: Handle,
}

fn describe(e: rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            std::io::Error::from_raw_os_error(-m.raw_code()).to_string()
        }
        other => other.to_string(),
    }
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if -m.raw_code() == libc::EEXIST)
}

impl Netlink {
    /// Opens the connection; must be called inside a tokio runtime.
    pub(crate) fn connect() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().context("cannot open a netlink socket")?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The index of interface `name`.
    pub(crate) async fn link_index(&self, name: &str) -> Result<u32> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let link = links
            .try_next()
            .await
            .map_err(|e| anyhow!("cannot find interface {name}: {}", describe(e)))?
            .ok_or_else(|| anyhow!("interface {name} disappeared"))?;
        Ok(link.header.index)
    }

    /// Sets the MTU, adds the addresses and brings the link up.
    pub(crate) async fn configure(&self, index: u32, mtu: u32, addresses: &[IpNet]) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .map_err(|e| anyhow!("cannot set MTU {mtu}: {}", describe(e)))?;
        for a in addresses {
            self.add_address(index, *a).await?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| anyhow!("cannot bring the interface up: {}", describe(e)))?;
        Ok(())
    }

    /// Adds one address (with its prefix length) to the interface.
    pub(crate) async fn add_address(&self, index: u32, address: IpNet) -> Result<()> {
        self.handle
            .address()
            .add(index, address.addr(), address.prefix_len())
            .execute()
            .await
            .map_err(|e| anyhow!("cannot add address {address}: {}", describe(e)))
    }

    /// Global-scope addresses of every interface but `exclude`, IPv4 first: the
    /// candidates for this host's underlay address.
    pub(crate) async fn global_addresses(&self, exclude: u32) -> Result<Vec<std::net::IpAddr>> {
        use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
        let mut found = self.handle.address().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = found
            .try_next()
            .await
            .map_err(|e| anyhow!("cannot list addresses: {}", describe(e)))?
        {
            if msg.header.index == exclude || msg.header.scope != AddressScope::Universe {
                continue;
            }
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    if !ip.is_loopback() {
                        out.push(*ip);
                    }
                }
            }
        }
        out.sort_by_key(|ip| ip.is_ipv6());
        out.dedup();
        Ok(out)
    }

    /// Removes one address from the interface; an address already gone is fine.
    pub(crate) async fn del_address(&self, index: u32, address: IpNet) -> Result<()> {
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(address.addr())
            .execute();
        while let Some(msg) = found
            .try_next()
            .await
            .map_err(|e| anyhow!("cannot list addresses: {}", describe(e)))?
        {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(|e| anyhow!("cannot remove address {address}: {}", describe(e)))?;
        }
        Ok(())
    }

    /// Removes the route for `prefix` through the interface; one already gone is fine.
    pub(crate) async fn del_route(&self, index: u32, prefix: IpNet) -> Result<()> {
        let message = route_message(index, prefix);
        match self.handle.route().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::ESRCH => Ok(()),
            Err(e) => Err(anyhow!("cannot remove route {prefix}: {}", describe(e))),
        }
    }

    /// Routes `prefix` into the interface. An identical route already present is fine.
    pub(crate) async fn add_route(&self, index: u32, prefix: IpNet) -> Result<()> {
        let message = route_message(index, prefix);
        match self.handle.route().add(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_exists(&e) => {
                tracing::warn!(%prefix, "a route for this prefix already exists; leaving it");
                Ok(())
            }
            Err(e) => Err(anyhow!("cannot add route {prefix}: {}", describe(e))),
        }
    }

    /// Deletes the interface (and with it its addresses and routes).
    pub(crate) async fn delete_link(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| anyhow!("cannot delete interface: {}", describe(e)))
    }
}

fn route_message(index: u32, prefix: IpNet) -> rtnetlink::packet_route::route::RouteMessage {
    match prefix {
        IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .output_interface(index)
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .output_interface(index)
            .build(),
    }
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
}
