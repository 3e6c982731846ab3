//! The host side of start-up, in an order that fails early: the control socket claim,
//! the HTTP ports for probes and metrics, the UDP port, the overlay interface (a new
//! one, or the persistent one an earlier run left, adopted with its addresses and
//! routes), the advertised endpoint, the bridge (with its gateway, guard route and
//! forwarding), the masquerade chain and, in chained mode, the policy routing table's
//! CNI config. Each thing created is handed to the [`Teardown`] the moment it exists.

use super::teardown::{failpoint, Created, Lifetime, Teardown};
use crate::cluster;
use crate::config::{Config, WIREGUARD_OVERHEAD};
use crate::control;
use crate::dataplane::L2Port;
use crate::netlink::Netlink;
use crate::system;
use crate::tun::Tun;
use crate::udp::Udp;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use weftnet_proto::node::HostState;

/// What the host side of start-up made.
pub(super) struct HostSide {
    pub(super) socket: PathBuf,
    /// The HTTP listeners (probes, metrics; one when both have the same address).
    pub(super) listeners: Vec<crate::http::Listener>,
    /// A UDP socket per worker.
    pub(super) udp: Vec<Udp>,
    /// A TUN queue per worker (fewer when the interface is an old single-queue one).
    pub(super) tun: Vec<Tun>,
    pub(super) overlay: u32,
    pub(super) mtu: u32,
    pub(super) endpoint: Option<SocketAddr>,
    pub(super) bridge: Option<u32>,
    pub(super) l2: Option<L2Port>,
    /// Chained mode: the packet socket on the pods' veths (their multicast).
    pub(super) pods: Option<crate::dataplane::PodLink>,
    /// What an earlier run left on the overlay interface (empty on a new one).
    pub(super) adopted: HostState,
    /// The overlay interface is an earlier run's: this is a restart.
    pub(super) restarted: bool,
}

/// The host side: ports, the overlay interface, the advertised endpoint, the bridge
/// and the masquerade chain.
pub(super) async fn host_side(
    config: &Config,
    netlink: &Arc<Netlink>,
    teardown: &mut Teardown,
) -> Result<HostSide> {
    let socket = control::socket_path(&config.state_dir);
    control::claim_socket(&socket)?;
    let wanted: Vec<(&'static str, SocketAddr)> = [
        (crate::health::FLAG, config.health_listen),
        (crate::metrics::FLAG, config.metrics),
    ]
    .into_iter()
    .filter_map(|(flag, addr)| Some((flag, addr?)))
    .collect();
    let listeners = crate::http::bind(&wanted)?;
    let udp = Udp::bind_group(config.listen_port, config.workers)?;
    let mtu = config
        .mtu
        .unwrap_or_else(|| {
            system::underlay_mtu(&config.interface).saturating_sub(WIREGUARD_OVERHEAD)
        })
        .max(crate::config::MIN_MTU);
    // Chained mode's routes into the overlay are in its own table.
    let table = config
        .kube
        .as_ref()
        .and_then(|k| k.chained)
        .map(|_| crate::chained::TABLE);
    let (tun, overlay, adopted) = overlay_interface(
        &config.interface,
        config.workers * crate::dataplane::QUEUES_PER_WORKER,
        table,
        netlink,
        teardown,
    )
    .await?;
    let restarted = adopted.is_some();
    let adopted = adopted.unwrap_or_default();
    failpoint("interface")?;
    netlink
        .configure(overlay, mtu, &[])
        .await
        .with_context(|| format!("cannot configure interface {}", config.interface))?;
    let endpoint = advertise(config, netlink, overlay).await?;
    failpoint("advertise")?;

    let range = config.cluster.as_ref().and_then(|c| c.range);
    let (bridge, l2) = match &config.bridge {
        Some(name) => {
            let v6 = config
                .blocks
                .iter()
                .chain(range.iter().map(|(r, _)| r))
                .any(|b| b.addr().is_ipv6());
            let r = range.map(|(r, _)| r);
            let (index, port) =
                crate::bridge::setup(netlink, teardown, name, &config.interface, mtu, v6, r)
                    .await?;
            (Some(index), Some(port))
        }
        None => (None, None),
    };
    failpoint("bridge")?;
    if let (true, Some((r, _))) = (config.masquerade, range) {
        let (installed, existed) =
            tokio::task::spawn_blocking(move || crate::masquerade::Masquerade::install(&[r]))
                .await
                .context("the masquerade set-up did not finish")??;
        teardown.push_for(
            Created::Masquerade(installed),
            Lifetime::Node { created: !existed },
        );
    }
    failpoint("masquerade")?;
    let mut pods = None;
    if let Some(k) = config.kube.as_ref().filter(|k| k.chained.is_some()) {
        pods = Some(crate::dataplane::PodLink::open().context(
            "cannot open the packet socket chained mode reads the pods' multicast from: run weftnet as root (it needs CAP_NET_RAW)",
        )?);
        teardown.push_for(
            Created::Chained {
                conf_dir: k.cni_conf_dir.clone(),
            },
            Lifetime::Node { created: true },
        );
    }
    Ok(HostSide {
        socket,
        listeners,
        udp,
        tun,
        overlay,
        mtu,
        endpoint,
        bridge,
        l2,
        pods,
        adopted,
        restarted,
    })
}

/// The overlay interface: the persistent TUN an earlier run left, adopted with its
/// addresses and routes (returned, for the reconciler to start from), or a new one.
/// Kept across restarts; a failed start removes it only if this start created it.
async fn overlay_interface(
    name: &str,
    queues: usize,
    table: Option<u32>,
    netlink: &Netlink,
    teardown: &mut Teardown,
) -> Result<(Vec<Tun>, u32, Option<HostState>)> {
    let existed = system::interface_exists(name);
    let tun = Tun::attach_or_create(name, existed, queues)?;
    let overlay = netlink.link_index(name).await?;
    teardown.push_for(
        Created::Link {
            index: overlay,
            what: "overlay interface",
        },
        Lifetime::Node { created: !existed },
    );
    if !existed {
        return Ok((tun, overlay, None));
    }
    let adopted = HostState {
        addresses: netlink
            .addresses(overlay)
            .await?
            .into_iter()
            .filter(|a| !is_link_local(a.addr()))
            .collect(),
        routes: match table {
            Some(t) => netlink.routes_into_table(overlay, t).await?,
            None => netlink.routes_into(overlay).await?,
        },
    };
    tracing::info!(
        interface = name,
        addresses = adopted.addresses.len(),
        routes = adopted.routes.len(),
        "attached to the overlay interface of the previous run (its addresses and routes stay)"
    );
    Ok((tun, overlay, Some(adopted)))
}

/// The kernel's own addresses (IPv6 link-local), never weftnet's.
fn is_link_local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Where other nodes reach this one: given, or the source address toward the seeds,
/// or the host's first global address.
async fn advertise(config: &Config, netlink: &Netlink, overlay: u32) -> Result<Option<SocketAddr>> {
    let Some(c) = &config.cluster else {
        return Ok(None);
    };
    let mut ip = c.advertise.map(|a| a.ip);
    let mut seeds = Vec::new();
    if ip.is_none() {
        seeds = cluster::resolve(&c.join).await;
        ip = cluster::detect_underlay_ip(&seeds);
    }
    if ip.is_none() {
        ip = netlink
            .global_addresses(overlay)
            .await
            .ok()
            .and_then(|v| v.first().copied());
    }
    let Some(ip) = ip else {
        bail!("{}", cluster::no_underlay_address(&c.join, &seeds));
    };
    let port = c
        .advertise
        .and_then(|a| a.port)
        .unwrap_or(config.listen_port);
    Ok(Some(SocketAddr::new(ip, port)))
}
