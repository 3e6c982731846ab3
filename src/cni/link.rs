//! Netlink work of the CNI plugin: the veth pair, its bridge port, and the pod side's
//! addresses and routes. Work inside a pod's namespace runs on a dedicated thread that
//! joins the namespace with setns(CLONE_NEWNET) and opens its own netlink socket (a
//! netlink socket belongs to the namespace of the thread that created it); the calling
//! thread never changes namespace.

use super::error::{code, CniError, Result};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

/// The host end's name: `wf` + 8 hex digits of a stable hash (FNV-1a) of the container
/// id and interface name, so DEL finds what ADD made, across plugin versions.
pub(crate) fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("wf{:08x}", (hash ^ (hash >> 32)) as u32)
}

/// What the plugin needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub(crate) index: u32,
    pub(crate) mac: Vec<u8>,
    /// The bridge (or other controller) the interface is a port of.
    pub(crate) controller: Option<u32>,
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn describe(e: &rtnetlink::Error) -> String {
    match errno(e) {
        Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
        None => e.to_string(),
    }
}

fn failed(what: String, e: &rtnetlink::Error) -> CniError {
    CniError::new(
        code::NETLINK,
        format!(
            "{what}: {}: check the node's kernel log and that the plugin runs as root",
            describe(e)
        ),
    )
    .with_details(e.to_string())
}

/// A netlink connection in the namespace of the thread that opened it.
pub(crate) struct Nl {
    handle: Handle,
}

/// Runs `work` with a fresh netlink connection on the calling thread's namespace.
pub(crate) fn on_host<T, F, Fut>(work: F) -> Result<T>
where
    F: FnOnce(Nl) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::NETLINK, format!("cannot start the I/O runtime: {e}")))?;
    runtime.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| {
            CniError::new(
                code::NETLINK,
                format!("cannot open a netlink socket: {e}: run the plugin as root"),
            )
        })?;
        tokio::spawn(conn);
        work(Nl { handle }).await
    })
}

/// Runs `work` inside the network namespace `netns` on a dedicated thread.
pub(crate) fn in_netns<T, F, Fut>(netns: &File, work: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Nl) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            // SAFETY: setns on a descriptor we hold open; it changes only this thread's
            // network namespace, and the thread ends with the work.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("cannot enter the network namespace in CNI_NETNS: {e}: pass the path of the pod's network namespace"),
                ));
            }
            on_host(work)
        });
        thread.join().unwrap_or_else(|_| {
            Err(CniError::new(
                code::NETLINK,
                "the network namespace worker thread panicked",
            ))
        })
    })
}

impl Nl {
    /// The interface called `name`, if it exists.
    pub(crate) async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        let mut found = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let msg = match found.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(failed(format!("cannot look up interface {name}"), &e)),
        };
        let mut info = LinkInfo {
            index: msg.header.index,
            mac: Vec::new(),
            controller: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::Address(mac) => info.mac = mac,
                LinkAttribute::Controller(c) => info.controller = Some(c),
                _ => {}
            }
        }
        Ok(Some(info))
    }

    /// Creates the veth pair: `host` here, `peer` created directly inside the namespace
    /// `netns` (so its name can never clash with a host interface), both with `mtu`.
    pub(crate) async fn create_veth(
        &self,
        host: &str,
        peer: &str,
        mtu: u32,
        netns: &File,
    ) -> Result<()> {
        let peer_msg = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(host, peer)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Err(CniError::new(
                code::NETLINK,
                format!("interface {host} (host side) or {peer} (in the pod) already exists: the container was already added; call DEL first"),
            )),
            Err(e) => Err(failed(format!("cannot create veth pair {host}/{peer}"), &e)),
        }
    }

    /// Makes the interface a port of the bridge and brings it up.
    pub(crate) async fn attach_and_up(&self, index: u32, bridge: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .controller(bridge)
            .up()
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| failed("cannot attach the host veth to the bridge".into(), &e))
    }

    /// Brings the interface up.
    pub(crate) async fn up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| failed("cannot bring the pod interface up".into(), &e))
    }

    /// Deletes the interface (a veth takes its peer with it); one already gone is fine.
    pub(crate) async fn delete(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(failed("cannot delete the pod's veth".into(), &e)),
        }
    }

    /// Deletes the interface called `name` if it exists.
    pub(crate) async fn delete_named(&self, name: &str) -> Result<()> {
        match self.link(name).await? {
            Some(link) => self.delete(link.index).await,
            None => Ok(()),
        }
    }

    /// Adds an address; IPv6 without duplicate address detection, so that it is usable at
    /// once (the IPAM store already guarantees it is unique on the bridge).
    pub(crate) async fn add_address(&self, index: u32, address: IpNet) -> Result<()> {
        let mut req = self
            .handle
            .address()
            .add(index, address.addr(), address.prefix_len());
        if address.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .map_err(|e| failed(format!("cannot add address {address} in the pod"), &e))
    }

    /// The addresses (with prefix length) of the interface.
    pub(crate) async fn addresses(&self, index: u32) -> Result<Vec<IpNet>> {
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = found
            .try_next()
            .await
            .map_err(|e| failed("cannot list addresses".into(), &e))?
        {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    if let Ok(net) = IpNet::new(*ip, msg.header.prefix_len) {
                        out.push(net);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds the default route of `gateway`'s family via `gateway` out of the interface.
    pub(crate) async fn add_default_route(&self, index: u32, gateway: IpAddr) -> Result<()> {
        let msg = match gateway {
            IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
                .gateway(gw)
                .output_interface(index)
                .build(),
            IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
                .gateway(gw)
                .output_interface(index)
                .build(),
        };
        self.handle.route().add(msg).execute().await.map_err(|e| {
            failed(
                format!("cannot add the default route via {gateway} in the pod"),
                &e,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("0123456789abcdef0123456789abcdef", "eth0");
        assert_eq!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdef", "eth0")
        );
        assert!(a.len() <= 15 && a.starts_with("wf"), "{a}");
        assert_ne!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdef", "eth1")
        );
        assert_ne!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdee", "eth0")
        );
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
        // Pinned: a changed hash would orphan the veths of running pods on upgrade.
        assert_eq!(host_veth_name("c", "eth0"), "wf83b2b8a9");
    }
}
