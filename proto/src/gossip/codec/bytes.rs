//! The primitives every gossip layout is built from: a bounded reader that fails with
//! [`Malformed`] instead of panicking, and the writers of addresses, endpoints and
//! prefixes (a family byte, 4 or 16 address bytes, then a port or a prefix length).

use super::Malformed;
use crate::keys::PublicKey;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Reads from the front of `buf`; every read checks the length first.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(super) fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(super) fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(super) fn key(&mut self) -> Result<PublicKey, Malformed> {
        Ok(PublicKey::from_bytes(self.array()?))
    }
    pub(super) fn addr(&mut self) -> Result<IpAddr, Malformed> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            _ => Err(Malformed),
        }
    }
    pub(super) fn endpoint(&mut self) -> Result<SocketAddr, Malformed> {
        let ip = self.addr()?;
        Ok(SocketAddr::new(ip, self.u16()?))
    }
    pub(super) fn prefix(&mut self) -> Result<IpNet, Malformed> {
        let ip = self.addr()?;
        let net = IpNet::new(ip, self.u8()?).map_err(|_| Malformed)?;
        if net.trunc() != net {
            return Err(Malformed);
        }
        Ok(net)
    }
}

/// Appends an address: family byte (4 or 6), then its octets.
pub(super) fn put_addr(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

/// Encoded length of an address ([`put_addr`]).
pub(super) fn addr_len(ip: IpAddr) -> usize {
    if ip.is_ipv4() {
        5
    } else {
        17
    }
}

/// Appends an endpoint: the address, then the port.
pub(crate) fn put_endpoint(out: &mut Vec<u8>, ep: SocketAddr) {
    put_addr(out, ep.ip());
    out.extend_from_slice(&ep.port().to_le_bytes());
}
