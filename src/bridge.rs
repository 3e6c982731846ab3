//! Bridge mode (`--bridge NAME`): pods or VMs behind a Linux bridge on this node. This
//! module owns setting it up at start and taking down what is ours at shutdown: the
//! bridge (created if missing, reused if present, MTU, multicast snooping off, up,
//! never deleted: pods keep their veths on it), the block gateways on it, IP
//! forwarding, the `unreachable` guard route for the range, and the daemon's TAP port
//! on the bridge (the L2 attachment multicast crosses; deleted at shutdown).

use crate::cluster::gateway;
use crate::dataplane::L2Port;
use crate::netlink::Netlink;
use crate::tun::Tun;
use anyhow::{Context, Result};
use ipnet::IpNet;

/// Metric of the `unreachable` route for the range: below every route weftnet adds, so
/// it only applies while weftnet is down (its TUN routes are gone then) and pod
/// traffic for the range never leaves the node in clear text.
pub(crate) const UNREACHABLE_METRIC: u32 = 0xffff_0000;

/// The bridge and the L2 port, as set up.
pub(crate) struct Bridge {
    pub(crate) index: u32,
    pub(crate) port_index: u32,
}

/// Sets up bridge `name` for overlay interface `interface`: forwarding on, the bridge,
/// the gateways of `blocks` on it, the guard route for `range`, and the TAP port.
/// Returns the bridge and the port the data plane reads.
pub(crate) async fn setup(
    netlink: &Netlink,
    name: &str,
    interface: &str,
    mtu: u32,
    blocks: &[IpNet],
    range: Option<IpNet>,
) -> Result<(Bridge, L2Port)> {
    let v6 = blocks
        .iter()
        .chain(range.iter())
        .any(|b| b.addr().is_ipv6());
    enable_forwarding(v6)?;
    let index = netlink.ensure_bridge(name, mtu).await?;
    for block in blocks {
        netlink.ensure_address(index, gateway(*block)).await?;
    }
    if let Some(r) = range {
        netlink.add_unreachable(r, UNREACHABLE_METRIC).await?;
    }
    let tap = Tun::create_tap(&port_name(interface))?;
    let port_index = netlink.link_index(tap.name()).await?;
    if let Err(e) = netlink.attach_port(port_index, index, mtu).await {
        let _ = netlink.delete_link(port_index).await;
        return Err(e);
    }
    let mac = weftnet_proto::ethernet::local_mac(rand::random());
    tracing::info!(
        bridge = name,
        port = tap.name(),
        "bridge mode: L2 port attached"
    );
    Ok((Bridge { index, port_index }, L2Port { tap, mac }))
}

/// Removes the L2 port (the bridge stays: pods use it).
pub(crate) async fn teardown(netlink: &Netlink, bridge: &Bridge) {
    if let Err(e) = netlink.delete_link(bridge.port_index).await {
        tracing::debug!(error = %e, "L2 port removal failed; closing the TAP removes it");
    }
}

/// Turns on IPv4 (and IPv6) forwarding in this network namespace: pods' traffic is
/// routed between the bridge and the TUN.
fn enable_forwarding(v6: bool) -> Result<()> {
    let mut knobs = vec!["/proc/sys/net/ipv4/ip_forward"];
    if v6 {
        knobs.push("/proc/sys/net/ipv6/conf/all/forwarding");
    }
    for knob in knobs {
        std::fs::write(knob, "1").with_context(|| {
            format!("cannot turn on forwarding ({knob}) for bridge mode: run as root with /proc/sys writable")
        })?;
    }
    Ok(())
}

/// The L2 port's name for overlay interface `interface`: `<interface>-l2`, cut to the
/// 15 bytes an interface name may have.
pub(crate) fn port_name(interface: &str) -> String {
    // Longest prefix (on a character boundary) that leaves room for "-l2".
    let room = libc::IFNAMSIZ - 1 - 3;
    let cut = (0..=interface.len().min(room))
        .rev()
        .find(|i| interface.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}-l2", &interface[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_fit_an_interface_name() {
        assert_eq!(port_name("weft0"), "weft0-l2");
        assert_eq!(port_name("abcdefghijklmno"), "abcdefghijkl-l2");
        assert_eq!(port_name("abcdefghijkl"), "abcdefghijkl-l2");
        assert!(port_name("abcdefghijklm").len() <= 15);
    }
}
