//! The node's single UDP socket: dual-stack (IPv4 and IPv6 peers on one port) with a
//! fallback to IPv4 only, and address normalisation between the two forms.

use anyhow::{anyhow, Result};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// The bound UDP socket.
pub(crate) struct Udp {
    socket: std::net::UdpSocket,
    dual_stack: bool,
}

const SOCKET_BUFFER: usize = 4 << 20;

fn bind(domain: Domain, port: u16) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    let addr: SocketAddr = if domain == Domain::IPV6 {
        s.set_only_v6(false)?;
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
    } else {
        SocketAddr::from(([0, 0, 0, 0], port))
    };
    // Larger buffers absorb bursts; the kernel caps them at rmem_max/wmem_max.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&addr.into())?;
    Ok(s)
}

impl Udp {
    /// Binds `port` on all addresses, IPv6 and IPv4 if the host has IPv6.
    pub(crate) fn bind(port: u16) -> Result<Self> {
        let (socket, dual_stack) = match bind(Domain::IPV6, port) {
            Ok(s) => (s, true),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(in_use(port)),
            Err(_) => match bind(Domain::IPV4, port) {
                Ok(s) => (s, false),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(in_use(port)),
                Err(e) => return Err(anyhow!("cannot bind UDP port {port}: {e}")),
            },
        };
        Ok(Self {
            socket: socket.into(),
            dual_stack,
        })
    }

    /// Receives one datagram; the source is in canonical form (IPv4 as IPv4).
    pub(crate) fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from) = self.socket.recv_from(buf)?;
        Ok((n, canonical(from)))
    }

    /// Sends one datagram to `to` (either family).
    pub(crate) fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let to = match (self.dual_stack, to) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => to,
        };
        self.socket.send_to(buf, to)
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
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
}
