//! Chained mode's multicast path: the pods' host-side veths (made by the other CNI)
//! as ports. One `AF_PACKET` socket in the node's namespace reads what every
//! interface receives with a multicast destination MAC (a classic BPF filter on the
//! packet type keeps everything else in the kernel), each frame after a virtio-net
//! header: a pod's veth hands over UDP with its checksum left to offload, which is
//! completed here (`weftnet_proto::offload::split`) before any copy leaves. Frames
//! from interfaces that are not a pod's veth are ignored; a second packet socket
//! writes. The chained task hands the data plane the pods'
//! veths ([`Dataplane::set_pod_ports`]) from the CNI plugin's records, so veths come
//! and go with pods.
//!
//! Decisions are `weftnet_proto::multicast::PodPorts`'s: a packet from a port must
//! carry its pod's address; IGMP/MLD reports make that port a member (and go to the
//! control plane, which announces the group as on the TUN); group traffic goes the
//! way multicast read from the TUN goes (`multicast.rs`: the filter, the rate limit,
//! one encrypted copy per node with members) plus a copy onto the veth of every
//! other member pod on this node. Group traffic from peers and the querier's queries
//! are written onto member veths (queries: every veth) as Ethernet frames, unrouted,
//! so TTL 1 stays TTL 1 and nothing goes out on the underlay.

use super::counters::bump;
use super::{Dataplane, BUF, POLL_MS};
use crate::tun::wait_readable;
use anyhow::Context;
use parking_lot::Mutex;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use weftnet_proto::ethernet::multicast_ip_packet;
use weftnet_proto::multicast::{parse_control, GroupConfig, PodPorts, Port, PortDrop, Replicator};
use weftnet_proto::offload::split;

/// `SO_ATTACH_FILTER` (not in the libc crate for every target).
const SO_ATTACH_FILTER: libc::c_int = 26;
/// `PACKET_MULTICAST`: a frame to a multicast MAC, received.
const PACKET_MULTICAST: u32 = 2;
/// `PACKET_VNET_HDR`: a virtio-net header before each frame read.
const PACKET_VNET_HDR: libc::c_int = 15;
/// `PACKET_IGNORE_OUTGOING`: the socket is not shown what the node sends.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// The packet sockets on the node's interfaces: `rx` reads (with a virtio-net header
/// before each frame, so that a checksum a pod's veth left to offload is completed
/// here), `tx` writes.
pub(crate) struct PodLink {
    rx: OwnedFd,
    tx: OwnedFd,
}

/// A packet socket of `kind` for no protocol yet (it takes no frame).
fn packet_socket(kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// setsockopt(2) with a value of type `T`.
fn set_option<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is valid for reads of its size for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl PodLink {
    /// Opens the sockets (needs `CAP_NET_RAW`). The reading one takes no frame until
    /// its filter is attached: it is created for no protocol and bound to all of them
    /// afterwards.
    pub(crate) fn open() -> io::Result<Self> {
        let rx = packet_socket(libc::SOCK_RAW)?;
        let ld_pkttype = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
        let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let mut filter = [
            op(
                ld_pkttype,
                0,
                0,
                (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32,
            ),
            op(jeq, 0, 1, PACKET_MULTICAST),
            op(ret, 0, 0, u32::MAX),
            op(ret, 0, 0, 0),
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        set_option(&rx, libc::SOL_SOCKET, SO_ATTACH_FILTER, &prog)?;
        set_option(&rx, libc::SOL_PACKET, PACKET_VNET_HDR, &1 as &libc::c_int)?;
        // Without this every frame the node sends would be cloned for the socket
        // before the filter drops it (kernels before 4.20 lack it: the filter still
        // drops them, at that cost).
        if let Err(e) = set_option(
            &rx,
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
        ) {
            tracing::debug!(error = %e, "PACKET_IGNORE_OUTGOING not available");
        }
        // SAFETY: sockaddr_ll is plain data; all zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: `sll` is a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                rx.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let tx = packet_socket(libc::SOCK_DGRAM)?;
        Ok(Self { rx, tx })
    }

    /// One read: a virtio-net header and the Ethernet frame, its length (more than
    /// `buf` holds if it was cut), and the interface index it came in on.
    fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        // SAFETY: as above.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `sll` are valid for writes of the sizes given.
        let n = unsafe {
            libc::recvfrom(
                self.rx.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, u32::try_from(sll.sll_ifindex).unwrap_or(0)))
    }

    /// Writes `packet` (IPv4 or IPv6, multicast destination) onto interface `port` as
    /// an Ethernet frame to the group's MAC; the kernel adds the header.
    fn send(&self, port: Port, packet: &[u8]) -> io::Result<()> {
        let header = weftnet_proto::packet::IpHeader::parse(packet)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let mac = weftnet_proto::ethernet::multicast_mac(header.dst)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
        let protocol = if header.dst.is_ipv4() {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        };
        // SAFETY: as above.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = i32::try_from(port).unwrap_or(0);
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&mac);
        // SAFETY: `packet` and `sll` are valid for reads of the sizes given.
        let n = unsafe {
            libc::sendto(
                self.tx.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Counters of the pod ports (`weftnet status`: `pod_ports`).
#[derive(Default)]
pub(crate) struct PodCounters {
    read: AtomicU64,
    ignored: AtomicU64,
    unknown_port: AtomicU64,
    foreign_source: AtomicU64,
    malformed: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
}

/// A snapshot of the pod ports' state and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PodStats {
    /// Pod veths known (from the CNI plugin's records).
    pub(crate) ports: u64,
    /// Frames to a multicast MAC read (from any interface of the node).
    pub(crate) rx_frames: u64,
    /// Frames read that are not IP multicast (or too big for the buffer).
    pub(crate) ignored_frames: u64,
    /// IP multicast from interfaces that are not a pod's veth (ignored).
    pub(crate) other_interfaces: u64,
    /// Packets whose source is not the pod of their veth (dropped).
    pub(crate) foreign_source: u64,
    pub(crate) malformed_frames: u64,
    /// Frames written onto pod veths (group traffic, queries).
    pub(crate) tx_frames: u64,
    pub(crate) write_errors: u64,
}

/// The pod ports: the socket, the ports' memberships, the counters.
pub(crate) struct Pods {
    link: PodLink,
    table: Mutex<PodPorts>,
    counters: PodCounters,
}

impl Pods {
    pub(super) fn new(link: PodLink, filter: weftnet_proto::multicast::GroupFilter) -> Self {
        Self {
            link,
            table: Mutex::new(PodPorts::new(GroupConfig::default(), filter)),
            counters: PodCounters::default(),
        }
    }

    /// Whether a port other than `except` is a member of `group`.
    pub(super) fn has_members(&self, group: IpAddr, except: Option<Port>) -> bool {
        self.table.lock().has_members(group, except)
    }

    /// Writes `packet` onto every member port of `group` but `except`.
    pub(super) fn deliver(&self, packet: &[u8], group: IpAddr, except: Option<Port>) {
        let table = self.table.lock();
        for &port in table.members(group).iter().filter(|p| Some(**p) != except) {
            self.write(port, packet);
        }
    }

    /// Writes `packet` (a query) onto every port.
    pub(super) fn write_all(&self, packet: &[u8]) {
        let ports: Vec<Port> = self.table.lock().ports().collect();
        for port in ports {
            self.write(port, packet);
        }
    }

    fn write(&self, port: Port, packet: &[u8]) {
        match self.link.send(port, packet) {
            Ok(()) => bump(&self.counters.written),
            Err(e) => {
                bump(&self.counters.write_errors);
                tracing::debug!(port, error = %e, "writing onto a pod veth failed");
            }
        }
    }

    /// A report read from `port`: the port's memberships follow it.
    pub(super) fn report(&self, port: Port, packet: &[u8]) -> bool {
        match parse_control(packet) {
            Ok(control) => {
                self.table
                    .lock()
                    .handle_report(Instant::now(), port, &control);
                true
            }
            Err(_) => false,
        }
    }

    fn snapshot(&self) -> PodStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        PodStats {
            ports: self.table.lock().len() as u64,
            rx_frames: load(&c.read),
            ignored_frames: load(&c.ignored),
            other_interfaces: load(&c.unknown_port),
            foreign_source: load(&c.foreign_source),
            malformed_frames: load(&c.malformed),
            tx_frames: load(&c.written),
            write_errors: load(&c.write_errors),
        }
    }
}

impl Dataplane {
    /// Chained mode: the pods' veths now, by interface index, with each pod's
    /// addresses. A veth gone (or its index reused) loses its memberships; a new one
    /// gets general queries at once, so its pod reports what it has joined.
    pub(crate) fn set_pod_ports(&self, ports: Vec<(Port, Vec<IpAddr>)>) {
        if let Some(pods) = &self.pods {
            let (new, queries) = {
                let mut table = pods.table.lock();
                let new = table.set_ports(ports);
                let queries = (!new.is_empty()).then(|| table.general_queries());
                (new, queries.unwrap_or_default())
            };
            for port in new {
                for query in &queries {
                    pods.write(port, query);
                }
            }
        }
    }

    /// The pod ports' counters, in chained mode.
    pub(crate) fn pod_stats(&self) -> Option<PodStats> {
        self.pods.as_ref().map(Pods::snapshot)
    }

    /// One frame from interface `port`: IP multicast from a pod's veth, with the pod's
    /// own source, goes the way of multicast read from the TUN.
    fn pod_frame(
        &self,
        mesh: &super::mesh::Mesh,
        replicator: &mut Replicator,
        port: Port,
        frame: &[u8],
        scratch: &mut [u8],
        batch: &mut super::outbound::TxBatch,
    ) {
        let Some(pods) = &self.pods else {
            return;
        };
        let packet = match multicast_ip_packet(frame) {
            Ok(Some(packet)) => packet,
            Ok(None) => return bump(&pods.counters.ignored),
            Err(_) => return bump(&pods.counters.malformed),
        };
        let admitted = pods.table.lock().admit(port, packet);
        if let Err(e) = admitted {
            return bump(match e {
                PortDrop::UnknownPort => &pods.counters.unknown_port,
                PortDrop::ForeignSource => &pods.counters.foreign_source,
                PortDrop::Malformed => &pods.counters.malformed,
            });
        }
        self.multicast_out(mesh, replicator, packet, scratch, batch, Some(port));
    }

    /// Reads multicast frames from the pods' veths until stopped, with this thread's
    /// own `Replicator` and rate budget (as bridge mode's L2 port); fails if the
    /// socket cannot be read or polled, or if there are no pod ports.
    pub(super) fn pods_loop(&self) -> anyhow::Result<()> {
        let Some(pods) = &self.pods else {
            anyhow::bail!("no pod ports to read");
        };
        let mut replicator = Replicator::new(self.multicast.filter.clone(), self.rate_limit());
        let mut buf = vec![0u8; BUF];
        let mut scratch = vec![0u8; BUF];
        let mut segment = vec![0u8; BUF];
        let mut batch = super::outbound::TxBatch::new(self.udp[0].max_segments(), 0);
        // The socket was empty before this read: its frame leaves at once.
        let mut woke = false;
        while !self.stopping() {
            let (n, port) = match pods.link.recv(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    batch.flush(self);
                    let now = Instant::now();
                    let mut table = pods.table.lock();
                    if table.poll_timeout().is_some_and(|at| at <= now) {
                        table.handle_timeout(now);
                    }
                    drop(table);
                    woke = wait_readable(pods.link.rx.as_raw_fd(), POLL_MS)
                        .context("polling the pod ports' socket")?;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading the pod ports' socket"),
            };
            bump(&pods.counters.read);
            if n > buf.len() {
                bump(&pods.counters.ignored);
                continue;
            }
            let mesh = self.mesh.load_full();
            // A frame whose checksum the pod's veth left to offload gets it here.
            let split = split(&mut buf[..n], &mut segment, |frame| {
                self.pod_frame(
                    &mesh,
                    &mut replicator,
                    port,
                    frame,
                    &mut scratch,
                    &mut batch,
                )
            });
            if split.is_err() {
                bump(&pods.counters.malformed);
            }
            if woke {
                batch.flush(self);
                woke = false;
            }
        }
        Ok(())
    }
}
