//! Interfaces themselves: the overlay interface's MTU and state, the bridge of bridge
//! mode and its ports (the daemon's L2 port, the pods' veths), the CNI plugin's veth
//! pairs, a bridge's ports, and deleting interfaces (one already gone is fine).

use super::{failed, removed, Netlink};
use anyhow::{anyhow, Result};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth};
use std::fmt::Display;
use std::fs::File;
use std::os::fd::AsRawFd;

impl Netlink {
    /// Sets the MTU, adds the addresses and brings the link up.
    pub(crate) async fn configure(&self, index: u32, mtu: u32, addresses: &[IpNet]) -> Result<()> {
        let mtu_only = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.change(mtu_only, format!("cannot set MTU {mtu}"))
            .await?;
        for a in addresses {
            self.add_address(index, *a).await?;
        }
        self.set_up(index).await
    }

    /// Brings the interface up.
    pub(crate) async fn set_up(&self, index: u32) -> Result<()> {
        let up = LinkUnspec::new_with_index(index).up().build();
        self.change(up, "cannot bring the interface up").await
    }

    /// Makes `name` a Linux bridge with this MTU, multicast snooping off (so that it
    /// floods group traffic to every port), and up: creates it if missing, reuses it
    /// if it is a bridge. Returns its index.
    pub(crate) async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<u32> {
        let index = match self.find_link(name).await? {
            Some((_, false)) => {
                return Err(anyhow!(
                    "interface {name} exists and is not a bridge: choose another --bridge, or remove it with `ip link del {name}`"
                ))
            }
            Some((index, true)) => {
                // Change the existing bridge (RTM_NEWLINK without create flags).
                let msg = LinkBridge::new(name)
                    .index(index)
                    .mcast_snooping(false)
                    .build();
                self.handle
                    .link()
                    .add(msg)
                    .set_flags(NLM_F_REQUEST | NLM_F_ACK)
                    .execute()
                    .await
                    .map_err(failed(format!(
                        "cannot turn multicast snooping off on bridge {name}"
                    )))?;
                index
            }
            None => {
                let msg = LinkBridge::new(name).mcast_snooping(false).mtu(mtu).build();
                self.handle
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(failed(format!("cannot create bridge {name}")))?;
                self.link_index(name).await?
            }
        };
        // A fixed MAC: otherwise the bridge takes its lowest port's, and when that
        // pod's veth goes away the gateway's MAC changes under the other pods' ARP
        // caches, cutting them off until their entries expire.
        let current = self.link_by_index(index).await?.map(|l| l.mac);
        let mac = match current {
            Some(mac) if mac.iter().any(|b| *b != 0) => mac,
            _ => {
                let mut mac: [u8; 6] = rand::random();
                mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
                mac.to_vec()
            }
        };
        let msg = LinkUnspec::new_with_index(index)
            .mtu(mtu)
            .address(mac)
            .up()
            .build();
        self.change(
            msg,
            format!("cannot set MTU {mtu} and the address on bridge {name} and bring it up"),
        )
        .await?;
        Ok(index)
    }

    /// Attaches interface `port` (the daemon's L2 port, a pod's host veth) to
    /// `bridge`, sets its MTU and brings it up.
    pub(crate) async fn attach_port(&self, port: u32, bridge: u32, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(port)
            .controller(bridge)
            .mtu(mtu)
            .up()
            .build();
        self.change(msg, "cannot attach the L2 port to the bridge")
            .await
    }

    /// Creates a veth pair: `host` here, `peer` created directly inside the namespace
    /// `netns` (so its name can never clash with one here), both with `mtu`.
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
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(failed(format!("cannot create veth pair {host}/{peer}")))
    }

    /// The names of the interfaces attached to bridge `bridge` (its ports).
    pub(crate) async fn ports_of(&self, bridge: u32) -> Result<Vec<String>> {
        let mut links = self.handle.link().get().execute();
        let mut ports = Vec::new();
        while let Some(msg) = links
            .try_next()
            .await
            .map_err(failed("cannot list interfaces"))?
        {
            let mut name = None;
            let mut controller = None;
            for attr in &msg.attributes {
                match attr {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Controller(c) => controller = Some(*c),
                    _ => {}
                }
            }
            if controller == Some(bridge) {
                ports.push(name.unwrap_or_else(|| format!("#{}", msg.header.index)));
            }
        }
        Ok(ports)
    }

    /// Deletes the interface (and with it its addresses and routes, and a veth's
    /// peer); one already gone is fine.
    pub(crate) async fn delete_link(&self, index: u32) -> Result<()> {
        self.delete(index, index).await
    }

    /// Deletes the interface called `name` if there is one.
    pub(crate) async fn delete_named(&self, name: &str) -> Result<()> {
        match self.link(name).await? {
            Some(link) => self.delete(link.index, name).await,
            None => Ok(()),
        }
    }

    async fn delete(&self, index: u32, label: impl Display) -> Result<()> {
        removed(self.handle.link().del(index).execute().await)
            .map_err(failed(format!("cannot delete interface {label}")))?;
        Ok(())
    }

    /// Applies `change` (RTM_SETLINK) to an existing link.
    async fn change(&self, change: LinkMessage, what: impl Into<String>) -> Result<()> {
        self.handle
            .link()
            .set(change)
            .execute()
            .await
            .map_err(failed(what))
    }
}
