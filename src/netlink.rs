//! Interface configuration over rtnetlink: MTU, addresses, link state and routes of
//! the overlay interface, and in bridge mode the pods' bridge and its L2 port. Nothing
//! else in the daemon changes kernel network state (but the forwarding sysctls).

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
        self.find_link(name)
            .await?
            .map(|(index, _)| index)
            .ok_or_else(|| anyhow!("interface {name} disappeared"))
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

    /// Adds one address unless it is already there (a bridge reused across restarts);
    /// returns whether it was added. IPv6 addresses skip duplicate address detection,
    /// so that they can be a route's preferred source at once.
    pub(crate) async fn ensure_address(&self, index: u32, address: IpNet) -> Result<bool> {
        use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
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
        match request.execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_exists(&e) => Ok(false),
            Err(e) => Err(anyhow!("cannot add address {address}: {}", describe(e))),
        }
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

    /// The index of interface `name` and whether it is a Linux bridge; `None` if there
    /// is no such interface.
    pub(crate) async fn find_link(&self, name: &str) -> Result<Option<(u32, bool)>> {
        use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let link = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => return Ok(None),
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::ENODEV => {
                return Ok(None)
            }
            Err(e) => return Err(anyhow!("cannot look up interface {name}: {}", describe(e))),
        };
        let is_bridge = link.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))))
        });
        Ok(Some((link.header.index, is_bridge)))
    }

    /// The link-layer address of interface `index`, if it has one.
    async fn link_mac(&self, index: u32) -> Result<Option<Vec<u8>>> {
        use rtnetlink::packet_route::link::LinkAttribute;
        let mut links = self.handle.link().get().match_index(index).execute();
        let link = links
            .try_next()
            .await
            .map_err(|e| anyhow!("cannot look up interface {index}: {}", describe(e)))?;
        Ok(link.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Address(mac) => Some(mac),
                _ => None,
            })
        }))
    }

    /// Makes `name` a Linux bridge with this MTU, multicast snooping off (so that it
    /// floods group traffic to every port), and up: creates it if missing, reuses it
    /// if it is a bridge. Returns its index.
    pub(crate) async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<u32> {
        use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST};
        use rtnetlink::LinkBridge;
        let index = match self.find_link(name).await? {
            Some((_, false)) => {
                return Err(anyhow!(
                    "interface {name} exists and is not a bridge: choose another --bridge, or remove it with `ip link del {name}`"
                ))
            }
            Some((index, true)) => {
                // Change the existing bridge (RTM_NEWLINK without create flags).
                let msg = LinkBridge::new(name).index(index).mcast_snooping(false).build();
                self.handle
                    .link()
                    .add(msg)
                    .set_flags(NLM_F_REQUEST | NLM_F_ACK)
                    .execute()
                    .await
                    .map_err(|e| {
                        anyhow!("cannot turn multicast snooping off on bridge {name}: {}", describe(e))
                    })?;
                index
            }
            None => {
                let msg = LinkBridge::new(name).mcast_snooping(false).mtu(mtu).build();
                self.handle
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(|e| anyhow!("cannot create bridge {name}: {}", describe(e)))?;
                self.link_index(name).await?
            }
        };
        // A fixed MAC: otherwise the bridge takes its lowest port's, and when that
        // pod's veth goes away the gateway's MAC changes under the other pods' ARP
        // caches, cutting them off until their entries expire.
        let mac = match self.link_mac(index).await? {
            Some(mac) if mac.iter().any(|b| *b != 0) => mac,
            _ => {
                let mut mac: [u8; 6] = rand::random();
                mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
                mac.to_vec()
            }
        };
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .mtu(mtu)
                    .address(mac)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot set MTU {mtu} and the address on bridge {name} and bring it up: {}",
                    describe(e)
                )
            })?;
        Ok(index)
    }

    /// Attaches interface `port` to `bridge`, sets its MTU and brings it up.
    pub(crate) async fn attach_port(&self, port: u32, bridge: u32, mtu: u32) -> Result<()> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(port)
                    .controller(bridge)
                    .mtu(mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| anyhow!("cannot attach the L2 port to the bridge: {}", describe(e)))
    }

    /// Routes `prefix` into the interface with preferred source `src` (RTA_PREFSRC).
    /// An identical route already present is fine.
    pub(crate) async fn add_route_src(
        &self,
        index: u32,
        prefix: IpNet,
        src: Option<std::net::IpAddr>,
    ) -> Result<()> {
        let mut message = route_message(index, prefix);
        if let Some(src) = src {
            use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
            let a = match src {
                std::net::IpAddr::V4(a) => RouteAddress::Inet(a),
                std::net::IpAddr::V6(a) => RouteAddress::Inet6(a),
            };
            message.attributes.push(RouteAttribute::PrefSource(a));
        }
        match self.handle.route().add(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_exists(&e) => {
                tracing::warn!(%prefix, "a route for this prefix already exists; leaving it");
                Ok(())
            }
            Err(e) => Err(anyhow!("cannot add route {prefix}: {}", describe(e))),
        }
    }

    /// Adds an `unreachable` route for `prefix` with this metric, if there is none yet;
    /// returns whether it was added.
    pub(crate) async fn add_unreachable(&self, prefix: IpNet, metric: u32) -> Result<bool> {
        match self
            .handle
            .route()
            .add(unreachable_message(prefix, metric))
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_exists(&e) => Ok(false),
            Err(e) => Err(anyhow!(
                "cannot add unreachable route {prefix}: {}",
                describe(e)
            )),
        }
    }

    /// Removes the `unreachable` route for `prefix` with this metric; one already gone
    /// is fine.
    pub(crate) async fn del_unreachable(&self, prefix: IpNet, metric: u32) -> Result<()> {
        match self
            .handle
            .route()
            .del(unreachable_message(prefix, metric))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::ESRCH => Ok(()),
            Err(e) => Err(anyhow!(
                "cannot remove unreachable route {prefix}: {}",
                describe(e)
            )),
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

fn unreachable_message(prefix: IpNet, metric: u32) -> rtnetlink::packet_route::route::RouteMessage {
    use rtnetlink::packet_route::route::RouteType;
    match prefix {
        IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .kind(RouteType::Unreachable)
            .priority(metric)
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .kind(RouteType::Unreachable)
            .priority(metric)
            .build(),
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
