//! Parsing of the IP header fields the router needs: version, source, destination,
//! and the total length the header declares. Works on untrusted bytes; never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addressing facts of one IPv4 or IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Total packet length declared by the header (IPv6: 40 + payload length).
    pub total_len: usize,
}

/// Why bytes are not an IP packet the router can handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the fixed header of its version.
    #[error("truncated IP header")]
    Truncated,
    /// The version nibble is neither 4 nor 6.
    #[error("IP version {0} is not 4 or 6")]
    Version(u8),
    /// The header declares more bytes than were received, or an impossible length.
    #[error("IP length field does not match the packet")]
    BadLength,
}

impl IpHeader {
    /// Parses the header at the start of `packet`.
    pub fn parse(packet: &[u8]) -> Result<Self, PacketError> {
        let first = *packet.first().ok_or(PacketError::Truncated)?;
        match first >> 4 {
            4 => {
                let h: &[u8; 20] = packet
                    .get(..20)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(PacketError::Truncated)?;
                let ihl = usize::from(first & 0x0f) * 4;
                let total_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
                if ihl < 20 || total_len < ihl || total_len > packet.len() {
                    return Err(PacketError::BadLength);
                }
                Ok(Self {
                    src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
                    dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
                    total_len,
                })
            }
            6 => {
                let h: &[u8; 40] = packet
                    .get(..40)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(PacketError::Truncated)?;
                let total_len = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
                if total_len > packet.len() {
                    return Err(PacketError::BadLength);
                }
                let mut src = [0u8; 16];
                let mut dst = [0u8; 16];
                src.copy_from_slice(&h[8..24]);
                dst.copy_from_slice(&h[24..40]);
                Ok(Self {
                    src: IpAddr::V6(Ipv6Addr::from(src)),
                    dst: IpAddr::V6(Ipv6Addr::from(dst)),
                    total_len,
                })
            }
            v => Err(PacketError::Version(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(src: [u8; 4], dst: [u8; 4], len: u16) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(len)];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn parses_ipv4_and_ipv6() {
        let p = v4([10, 0, 0, 1], [10, 0, 0, 2], 28);
        let h = IpHeader::parse(&p).expect("valid");
        assert_eq!(h.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(h.dst, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(h.total_len, 28);

        let mut p6 = vec![0u8; 48];
        p6[0] = 0x60;
        p6[5] = 8;
        p6[23] = 1;
        p6[39] = 2;
        let h = IpHeader::parse(&p6).expect("valid");
        assert_eq!(h.src, IpAddr::V6(Ipv6Addr::from(1u128)));
        assert_eq!(h.dst, IpAddr::V6(Ipv6Addr::from(2u128)));
        assert_eq!(h.total_len, 48);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(IpHeader::parse(&[]), Err(PacketError::Truncated));
        assert_eq!(IpHeader::parse(&[0x45; 10]), Err(PacketError::Truncated));
        assert_eq!(IpHeader::parse(&[0x20; 40]), Err(PacketError::Version(2)));
        let mut p = v4([1, 1, 1, 1], [2, 2, 2, 2], 28);
        p[3] = 200; // claims 200 bytes
        assert_eq!(IpHeader::parse(&p), Err(PacketError::BadLength));
        p[3] = 28;
        p[0] = 0x44; // IHL 16 bytes
        assert_eq!(IpHeader::parse(&p), Err(PacketError::BadLength));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(h) = IpHeader::parse(&bytes) {
                prop_assert!(h.total_len <= bytes.len());
            }
        }
    }
}
