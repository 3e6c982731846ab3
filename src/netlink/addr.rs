//! Interface addresses: adding one (strictly, or leaving one already there), removing
//! one (one already gone is fine), and listing an interface's or the host's.

use super::{created, failed, Netlink};
use anyhow::Result;
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressScope,
};
use rtnetlink::AddressGetRequest;
use std::net::IpAddr;

impl Netlink {
    /// Adds one address (with its prefix length) to the interface; one already there
    /// is an error.
    pub(crate) async fn add_address(&self, index: u32, address: IpNet) -> Result<()> {
        self.new_address(index, address)
            .await
            .map_err(failed(format!("cannot add address {address}")))
    }

    /// Adds one address unless it is already there (a bridge reused across restarts).
    pub(crate) async fn ensure_address(&self, index: u32, address: IpNet) -> Result<bool> {
        created(self.new_address(index, address).await)
            .map_err(failed(format!("cannot add address {address}")))
    }

    /// RTM_NEWADDR. IPv6 addresses skip duplicate address detection, so that they are
    /// usable at once, as a route's preferred source too (the overlay's and the IPAM
    /// store's addresses are unique by construction; on a TUN, which is NOARP, the
    /// kernel skips DAD anyway).
    async fn new_address(&self, index: u32, address: IpNet) -> Result<(), rtnetlink::Error> {
        let mut request = self
            .handle
            .address()
            .add(index, address.addr(), address.prefix_len());
        if address.addr().is_ipv6() {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request.execute().await
    }

    /// Removes one address from the interface; an address already gone is fine.
    pub(crate) async fn del_address(&self, index: u32, address: IpNet) -> Result<()> {
        let request = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(address.addr());
        for msg in self.list(request).await? {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(failed(format!("cannot remove address {address}")))?;
        }
        Ok(())
    }

    /// The addresses (with prefix length) of the interface.
    pub(crate) async fn addresses(&self, index: u32) -> Result<Vec<IpNet>> {
        let request = self.handle.address().get().set_link_index_filter(index);
        let mut out = Vec::new();
        for msg in self.list(request).await? {
            for ip in ips(&msg) {
                if let Ok(net) = IpNet::new(ip, msg.header.prefix_len) {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    /// Global-scope addresses of every interface but `exclude`, IPv4 first: the
    /// candidates for this host's underlay address.
    pub(crate) async fn global_addresses(&self, exclude: u32) -> Result<Vec<IpAddr>> {
        let all = self.list(self.handle.address().get()).await?;
        let mut out: Vec<IpAddr> = all
            .iter()
            .filter(|m| m.header.index != exclude && m.header.scope == AddressScope::Universe)
            .flat_map(ips)
            .filter(|ip| !ip.is_loopback())
            .collect();
        out.sort_by_key(|ip| ip.is_ipv6());
        out.dedup();
        Ok(out)
    }

    /// Runs an address dump.
    async fn list(&self, request: AddressGetRequest) -> Result<Vec<AddressMessage>> {
        request
            .execute()
            .try_collect()
            .await
            .map_err(failed("cannot list addresses"))
    }
}

/// The addresses (IFA_ADDRESS) one message carries.
fn ips(msg: &AddressMessage) -> impl Iterator<Item = IpAddr> + '_ {
    msg.attributes.iter().filter_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })
}
