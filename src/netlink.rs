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
            self.handle
                .address()
                .add(index, a.addr(), a.prefix_len())
                .execute()
                .await
                .map_err(|e| anyhow!("cannot add address {a}: {}", describe(e)))?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| anyhow!("cannot bring the interface up: {}", describe(e)))?;
        Ok(())
    }

    /// Routes `prefix` into the interface. An identical route already present is fine.
    pub(crate) async fn add_route(&self, index: u32, prefix: IpNet) -> Result<()> {
        let message = match prefix {
            IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(n.network(), n.prefix_len())
                .output_interface(index)
                .build(),
            IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(n.network(), n.prefix_len())
                .output_interface(index)
                .build(),
        };
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
