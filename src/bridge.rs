//! Bridge mode (`--bridge NAME`): pods or VMs behind a Linux bridge on this node. This
//! module owns setting it up at start: the bridge (created if missing, reused if
//! present, MTU, multicast snooping off, up; kept at shutdown because pods keep their
//! veths on it, removed only if start-up fails), IP forwarding, the `unreachable`
//! guard route for the range (kept likewise), and the daemon's TAP port on the bridge
//! (the L2 attachment multicast crosses; removed at shutdown). Each is handed to the
//! [`Teardown`] as it is made. The block gateways on the bridge are the reconciler's.

use crate::daemon::teardown::{Created, Teardown};
use crate::dataplane::L2Port;
use crate::netlink::Netlink;
use crate::tun::Tun;
use anyhow::{Context, Result};
use ipnet::IpNet;

/// Metric of the `unreachable` route for the range: below every route weftnet adds, so
/// it only applies while weftnet is down (its TUN routes are gone then) and pod
/// traffic for the range never leaves the node in clear text.
pub(crate) const UNREACHABLE_METRIC: u32 = 0xffff_0000;

/// Sets up bridge `name` for overlay interface `interface`: forwarding on (IPv6 too
/// with `v6`), the bridge, the guard route for `range`, and the TAP port. Returns the
/// bridge's index and the port the data plane reads.
pub(crate) async fn setup(
    netlink: &Netlink,
    teardown: &mut Teardown,
    name: &str,
    interface: &str,
    mtu: u32,
    v6: bool,
    range: Option<IpNet>,
) -> Result<(u32, L2Port)> {
    enable_forwarding(v6, teardown)?;
    let existed = netlink.find_link(name).await?.is_some();
    let index = netlink.ensure_bridge(name, mtu).await?;
    if !existed {
        teardown.push_until_started(Created::Link {
            index,
            what: "bridge",
        });
    }
    if let Some(prefix) = range {
        if netlink.add_unreachable(prefix, UNREACHABLE_METRIC).await? {
            teardown.push_until_started(Created::GuardRoute {
                prefix,
                metric: UNREACHABLE_METRIC,
            });
        }
    }
    let tap = Tun::create_tap(&port_name(interface))?;
    let port_index = netlink.link_index(tap.name()).await?;
    teardown.push(Created::Link {
        index: port_index,
        what: "L2 port",
    });
    netlink.attach_port(port_index, index, mtu).await?;
    let mac = weftnet_proto::ethernet::local_mac(rand::random());
    tracing::info!(
        bridge = name,
        port = tap.name(),
        "bridge mode: L2 port attached"
    );
    Ok((index, L2Port { tap, mac }))
}

/// Turns on IPv4 (and IPv6) forwarding in this network namespace: pods' traffic is
/// routed between the bridge and the TUN. A knob already on is not written (so a
/// read-only /proc/sys is fine then); one turned on is turned off again if start-up
/// fails.
fn enable_forwarding(v6: bool, teardown: &mut Teardown) -> Result<()> {
    let mut knobs = vec!["/proc/sys/net/ipv4/ip_forward"];
    if v6 {
        knobs.push("/proc/sys/net/ipv6/conf/all/forwarding");
    }
    for knob in knobs {
        let old = std::fs::read_to_string(knob).unwrap_or_default();
        if old.trim() == "1" {
            continue;
        }
        std::fs::write(knob, "1").with_context(|| {
            format!("cannot turn on forwarding ({knob}) for bridge mode: run as root with /proc/sys writable, or turn it on before weftnet starts")
        })?;
        teardown.push_until_started(Created::Sysctl {
            path: knob,
            old: old.trim().to_string(),
        });
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
