//! The node's single UDP socket: dual-stack (IPv4 and IPv6 peers on one port) with a
//! fallback to IPv4 only, batched receive (recvmmsg and UDP GRO) and segmented send
//! (UDP GSO) through `quinn-udp`, which probes the kernel once and degrades to one
//! datagram per call where offloads are missing.
//!
//! With several data-plane workers the port is served by a group of sockets
//! (`SO_REUSEPORT`, [`Udp::bind_group`]), one per worker. The kernel picks the socket
//! of a datagram by a hash of its addresses and ports, so all datagrams of one peer
//! (one address and port pair) reach one socket, in order.

use anyhow::{anyhow, Result};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// The bound UDP socket.
pub(crate) struct Udp {
    socket: std::net::UdpSocket,
    state: UdpSocketState,
    dual_stack: bool,
}

const SOCKET_BUFFER: usize = 8 << 20;

fn bind(domain: Domain, port: u16, reuse_port: bool) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    let addr: SocketAddr = if domain == Domain::IPV6 {
        s.set_only_v6(false)?;
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
    } else {
        SocketAddr::from(([0, 0, 0, 0], port))
    };
    s.bind(&addr.into())?;
    // Non-blocking: a batch receive returns what is queued instead of waiting for a
    // full batch; callers poll the descriptor when it is empty.
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Turns off the per-datagram ancillary data `quinn-udp` asks for and the data plane
/// never reads: receive timestamps (`SO_TIMESTAMPNS`, which also makes the kernel
/// timestamp every packet it receives, on every interface), the destination address
/// and the ECN bits. Each costs work per datagram on the receive path. Best effort: a
/// socket that keeps them works the same, a little slower.
fn drop_unused_ancillary_data(socket: &std::net::UdpSocket, dual_stack: bool) {
    let mut options = vec![
        (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS),
        (libc::IPPROTO_IP, libc::IP_RECVTOS),
        (libc::IPPROTO_IP, libc::IP_PKTINFO),
    ];
    if dual_stack {
        options.push((libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO));
        options.push((libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS));
    }
    let off: libc::c_int = 0;
    for (level, name) in options {
        // SAFETY: a valid socket and a c_int option value of the size given.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&off as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(level, name, error = %io::Error::last_os_error(), "cannot turn off a UDP receive option");
        }
    }
}

impl Udp {
    /// Binds `port` on all addresses, IPv6 and IPv4 if the host has IPv6.
    pub(crate) fn bind(port: u16) -> Result<Self> {
        Self::bind_with(port, false)
    }

    /// Binds `count` sockets to `port` (one if `count` is 1, else a `SO_REUSEPORT`
    /// group). A port held by anyone else is refused as by [`Udp::bind`]: a plain
    /// socket is bound first to check, then closed, and the group binds after it.
    pub(crate) fn bind_group(port: u16, count: usize) -> Result<Vec<Self>> {
        if count <= 1 {
            return Ok(vec![Self::bind(port)?]);
        }
        drop(Self::bind(port)?);
        (0..count).map(|_| Self::bind_with(port, true)).collect()
    }

    fn bind_with(port: u16, reuse_port: bool) -> Result<Self> {
        let (socket, dual_stack) = match bind(Domain::IPV6, port, reuse_port) {
            Ok(s) => (s, true),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(in_use(port)),
            Err(_) => match bind(Domain::IPV4, port, reuse_port) {
                Ok(s) => (s, false),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(in_use(port)),
                Err(e) => return Err(anyhow!("cannot bind UDP port {port}: {e}")),
            },
        };
        let socket: std::net::UdpSocket = socket.into();
        let state = UdpSocketState::new((&socket).into())
            .map_err(|e| anyhow!("cannot set up UDP port {port}: {e}"))?;
        drop_unused_ancillary_data(&socket, dual_stack);
        // Larger buffers absorb bursts; the kernel caps them at rmem_max/wmem_max.
        let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
        // IP_RECVERR: without it the kernel swallows ENOBUFS from a send (a full
        // neighbour table or qdisc: the datagram is dropped and the send "succeeds")
        // and drops the ICMP errors of unconnected sends; with it both surface, as
        // send errors and on the error queue (see `drain_errors`), and get counted.
        if let Err(e) = state.enable_transport_errors((&socket).into()) {
            tracing::debug!(error = %e, "cannot enable the UDP error queue; asynchronous send errors go uncounted");
        }
        Ok(Self {
            socket,
            state,
            dual_stack,
        })
    }

    /// How many equal-size datagrams one [`Udp::send`] may carry.
    pub(crate) fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    /// How many datagrams one receive buffer may hold (GRO).
    pub(crate) fn gro_segments(&self) -> usize {
        self.state.gro_segments().max(1)
    }

    /// Receives a batch into `bufs`; returns how many `meta` entries are filled. Each
    /// buffer may hold several datagrams of `meta.stride` bytes (the last one shorter).
    /// Returns `WouldBlock` when nothing is queued.
    pub(crate) fn recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        self.state.recv((&self.socket).into(), bufs, meta)
    }

    /// Empties the socket's error queue (errors the kernel reported after a send
    /// returned: unreachable hosts or ports, failed neighbour resolution); returns how
    /// many there were. Must be called when a receive finds nothing, or a non-empty
    /// queue keeps the socket readable.
    pub(crate) fn drain_errors(&self) -> u64 {
        let mut n = 0;
        // Bounded: the queue is charged against the receive buffer, so it is finite,
        // but the next call picks up the rest.
        for _ in 0..256 {
            match self.state.recv_transport_error((&self.socket).into()) {
                Ok(Some(e)) => {
                    n += 1;
                    tracing::trace!(to = ?e.addr, errno = e.raw_errno, "UDP send failed later");
                }
                Ok(None) | Err(_) => break,
            }
        }
        n
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Sends `contents` to `to`: one datagram, or with `segment` set, consecutive
    /// datagrams of that size (the last may be shorter).
    pub(crate) fn send(
        &self,
        contents: &[u8],
        segment: Option<usize>,
        to: SocketAddr,
    ) -> io::Result<()> {
        let destination = match (self.dual_stack, to) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => to,
        };
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        loop {
            match self.state.try_send((&self.socket).into(), &transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The send buffer is full: wait for room rather than drop.
                    crate::tun::wait_fd(self.fd(), libc::POLLOUT, 100)?;
                }
                other => return other,
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn local_port(&self) -> Option<u16> {
        self.socket.local_addr().ok().map(|a| a.port())
    }
}

fn in_use(port: u16) -> anyhow::Error {
    anyhow!(
        "UDP port {port} is already in use: stop the other process or choose another --listen-port"
    )
}

/// IPv4-mapped IPv6 socket addresses become plain IPv4 ones.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_mapped_addresses() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:51820".parse().expect("addr");
        assert_eq!(canonical(mapped), "192.0.2.1:51820".parse().expect("addr"));
        let v6: SocketAddr = "[2001:db8::1]:51820".parse().expect("addr");
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn port_in_use_is_reported() {
        let a = Udp::bind(0).expect("ephemeral");
        let port = a.local_port().expect("port");
        let e = format!("{:#}", Udp::bind(port).err().expect("in use"));
        assert!(e.contains("already in use"), "{e}");
    }

    #[test]
    fn a_group_shares_its_port_and_refuses_one_in_use() {
        let group = Udp::bind_group(0, 1).expect("one");
        assert_eq!(group.len(), 1);
        // An ephemeral port for the group: bind one, free it, take it with the group.
        let port = Udp::bind(0).expect("probe").local_port().expect("port");
        let group = Udp::bind_group(port, 3).expect("group");
        assert_eq!(group.len(), 3);
        assert!(group.iter().all(|u| u.local_port() == Some(port)));
        let e = format!("{:#}", Udp::bind_group(port, 2).err().expect("in use"));
        assert!(e.contains("already in use"), "{e}");
        let e = format!("{:#}", Udp::bind(port).err().expect("in use"));
        assert!(e.contains("already in use"), "{e}");
    }

    #[test]
    fn segmented_send_arrives_as_separate_datagrams() {
        let a = Udp::bind(0).expect("bind a");
        let b = Udp::bind(0).expect("bind b");
        let to: SocketAddr = ([127, 0, 0, 1], b.local_port().expect("port")).into();
        let payload: Vec<u8> = (0..250u32).map(|i| (i / 100) as u8).collect();
        a.send(&payload, Some(100), to).expect("send");
        let mut got = Vec::new();
        let mut storage = vec![0u8; 65536 * 2];
        while got.len() < 3 {
            crate::tun::wait_fd(b.fd(), libc::POLLIN, 1000).expect("poll");
            let (first, second) = storage.split_at_mut(65536);
            let mut bufs = [IoSliceMut::new(first), IoSliceMut::new(second)];
            let mut meta = [RecvMeta::default(), RecvMeta::default()];
            let n = b.recv(&mut bufs, &mut meta).expect("recv");
            for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
                for seg in buf[..m.len].chunks(m.stride.max(1)) {
                    got.push(seg.to_vec());
                }
            }
        }
        assert_eq!(
            got.iter().map(|g| g.len()).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        assert!(got[2].iter().all(|b| *b == 2));
    }
}
