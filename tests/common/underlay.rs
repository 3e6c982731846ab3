//! Underlay topologies: host namespaces joined by bridges (in a dedicated switch namespace) and
//! optionally a router namespace.

use super::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

static SUBNET_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A /24 from 10.224.0.0/12 plus a /64 from fd77:7400::/48 (ULA), distinct for every
/// allocation in this process (4096 of them) and pid-scattered across processes.
#[derive(Clone, Copy, Debug)]
struct Subnet(u32);

impl Subnet {
    fn alloc() -> Subnet {
        let base = std::process::id().wrapping_mul(2_654_435_761) >> 20;
        Subnet((base + SUBNET_COUNTER.fetch_add(1, Ordering::Relaxed)) % 4096)
    }
    /// Address `.host` of the /24.
    fn v4(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 224 + (self.0 / 256) as u8, (self.0 % 256) as u8, host)
    }
    /// Address `::host` of the /64.
    fn v6(self, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd77, 0x7400, 0, self.0 as u16, 0, 0, 0, host)
    }
}

/// Router address inside each routed subnet.
const ROUTER_HOST: u8 = 254;

/// One host of an [`Underlay`]: a namespace whose `eth0` is attached to the topology.
/// Derefs to its [`Netns`], so `host.exec(..)`, `Daemon::start(&host, ..)` etc. work directly.
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    index: usize,
    side: usize,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    gw: Option<(Ipv4Addr, Ipv6Addr)>,
}

impl std::ops::Deref for Host {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

impl Host {
    pub fn netns(&self) -> &Netns {
        &self.ns
    }
    /// Index in [`Underlay::hosts`].
    pub fn index(&self) -> usize {
        self.index
    }
    /// 0 for a bridge topology / side A of a routed one, 1 for side B.
    pub fn side(&self) -> usize {
        self.side
    }
    /// The host's underlay IPv4 address (on `eth0`, prefix /24).
    pub fn underlay_v4(&self) -> Ipv4Addr {
        self.v4
    }
    /// The host's underlay IPv6 address (on `eth0`, prefix /64, DAD disabled).
    pub fn underlay_v6(&self) -> Ipv6Addr {
        self.v6
    }
    pub fn underlay(&self, v6: bool) -> IpAddr {
        if v6 {
            self.v6.into()
        } else {
            self.v4.into()
        }
    }
    /// Underlay interface name inside the host namespace.
    pub fn underlay_if(&self) -> &'static str {
        "eth0"
    }
    /// Default gateway (routed topology only).
    pub fn gateway_v4(&self) -> Option<Ipv4Addr> {
        self.gw.map(|g| g.0)
    }
    pub fn gateway_v6(&self) -> Option<Ipv6Addr> {
        self.gw.map(|g| g.1)
    }
    /// Take the underlay link down/up (simulates cable cut / repair). Bringing it back up
    /// restores the addresses and default routes.
    pub fn set_underlay_up(&self, up: bool) {
        self.ns
            .ip(&["link", "set", "eth0", if up { "up" } else { "down" }]);
        if up {
            if let Some((g4, g6)) = self.gw {
                self.ns
                    .ip(&["route", "replace", "default", "via", &g4.to_string()]);
                self.ns
                    .ip(&["-6", "route", "replace", "default", "via", &g6.to_string()]);
            }
        }
    }
}

/// A set of host namespaces on one bridged L2 segment, or on two segments joined by a router.
/// Everything lives in namespaces (the bridges in a "switch" namespace), so dropping the guard
/// removes all of it.
#[derive(Debug)]
pub struct Underlay {
    hosts: Vec<Host>,
    switch: Netns,
    router: Option<Netns>,
}

impl Underlay {
    /// `n` hosts on one bridge. Host `i` gets `eth0` with `10.x.y.(i+1)/24` and
    /// `fd77:7400:0:k::(i+1)/64`.
    pub fn bridge(n: usize) -> Underlay {
        assert!((1..=250).contains(&n), "1..=250 hosts per segment");
        let id = unique_id();
        let switch = Netns::create(format!("{id}-sw"));
        let subnet = Subnet::alloc();
        add_bridge(&switch, "br0");
        let hosts = (0..n)
            .map(|i| add_host(&id, &switch, "br0", subnet, i, i, 0, None))
            .collect();
        Underlay {
            hosts,
            switch,
            router: None,
        }
    }

    /// `hosts_a` hosts on subnet A and `hosts_b` hosts on subnet B, joined by a router namespace
    /// (`x.x.x.254` / `::fe` on each side, forwarding on) that is every host's default gateway.
    /// Hosts `0..hosts_a` are side A, `hosts_a..` side B.
    pub fn routed(hosts_a: usize, hosts_b: usize) -> Underlay {
        assert!(hosts_a <= 250 && hosts_b <= 250 && hosts_a + hosts_b > 0);
        let id = unique_id();
        let switch = Netns::create(format!("{id}-sw"));
        let router = Netns::create(format!("{id}-rt"));
        router.sysctl(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ]);
        let subnets = [Subnet::alloc(), Subnet::alloc()];
        let mut hosts = Vec::new();
        for (side, (count, subnet)) in [hosts_a, hosts_b].into_iter().zip(subnets).enumerate() {
            let br = format!("br{side}");
            add_bridge(&switch, &br);
            // Router leg: switch port "r<side>" <-> router "eth<side>".
            let port = format!("r{side}");
            let rif = format!("eth{side}");
            let g4 = subnet.v4(ROUTER_HOST);
            let g6 = subnet.v6(ROUTER_HOST as u16);
            plug(&switch, &br, &port, &router, &rif, (g4, g6));
            for j in 0..count {
                let index = hosts.len();
                hosts.push(add_host(
                    &id,
                    &switch,
                    &br,
                    subnet,
                    index,
                    j,
                    side,
                    Some((g4, g6)),
                ));
            }
        }
        Underlay {
            hosts,
            switch,
            router: Some(router),
        }
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }
    pub fn switch(&self) -> &Netns {
        &self.switch
    }
    pub fn router(&self) -> Option<&Netns> {
        self.router.as_ref()
    }
    /// Names of every namespace this topology created.
    pub fn netns_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.hosts.iter().map(|h| h.name().to_owned()).collect();
        v.push(self.switch.name().to_owned());
        v.extend(self.router.iter().map(|r| r.name().to_owned()));
        v
    }
}

fn add_bridge(switch: &Netns, br: &str) {
    switch.ip(&[
        "link",
        "add",
        br,
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
    ]);
    switch.ip(&["link", "set", br, "up"]);
}

/// A veth from port `port` on the switch's bridge `br` to `ifname` in `ns`, which gets
/// `v4`/24 and `v6`/64 (no DAD); both ends up.
fn plug(
    switch: &Netns,
    br: &str,
    port: &str,
    ns: &Netns,
    ifname: &str,
    (v4, v6): (Ipv4Addr, Ipv6Addr),
) {
    switch.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "netns",
        ns.name(),
    ]);
    switch.ip(&["link", "set", port, "master", br, "up"]);
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname]);
    ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"]);
    ns.ip(&["link", "set", ifname, "up"]);
}

#[allow(clippy::too_many_arguments)]
fn add_host(
    id: &str,
    switch: &Netns,
    br: &str,
    subnet: Subnet,
    index: usize,
    in_subnet: usize,
    side: usize,
    gw: Option<(Ipv4Addr, Ipv6Addr)>,
) -> Host {
    let ns = Netns::create(format!("{id}-h{index}"));
    // Devices moved in later inherit "default"; no DAD keeps IPv6 usable immediately.
    ns.sysctl(&[
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv6.conf.all.accept_dad", "0"),
    ]);
    let port = format!("p{index}");
    let v4 = subnet.v4(in_subnet as u8 + 1);
    let v6 = subnet.v6(in_subnet as u16 + 1);
    plug(switch, br, &port, &ns, "eth0", (v4, v6));
    if let Some((g4, g6)) = gw {
        ns.ip(&["route", "add", "default", "via", &g4.to_string()]);
        ns.ip(&["-6", "route", "add", "default", "via", &g6.to_string()]);
    }
    Host {
        ns,
        index,
        side,
        v4,
        v6,
        gw,
    }
}
