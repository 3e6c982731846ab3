//! The `virtio_net_hdr` (legacy 10-byte form) that precedes every packet read from or
//! written to a TUN opened with `IFF_VNET_HDR`. Fields are in the host's byte order
//! (the TUN's default on little-endian hosts, and on big-endian hosts without
//! `TUNSETVNETLE`).

/// Length of the header before each packet.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum from `csum_start` on is still to be
/// computed (the field holds the pseudo-header sum).
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const F_DATA_VALID: u8 = 2;

/// What segmentation the packet still needs (`gso_type` without the ECN bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoType {
    /// A plain packet.
    None,
    /// An IPv4 TCP super-packet.
    TcpV4,
    /// An IPv6 TCP super-packet.
    TcpV6,
    /// A UDP super-packet (USO), not enabled by weftnet.
    UdpL4,
    /// UFO, or a value this code does not know.
    Other(u8),
}

impl GsoType {
    fn from_raw(v: u8) -> Self {
        match v & !0x80 {
            0 => Self::None,
            1 => Self::TcpV4,
            4 => Self::TcpV6,
            5 => Self::UdpL4,
            o => Self::Other(o),
        }
    }

    fn raw(self) -> u8 {
        match self {
            Self::None => 0,
            Self::TcpV4 => 1,
            Self::TcpV6 => 4,
            Self::UdpL4 => 5,
            Self::Other(o) => o,
        }
    }
}

/// One parsed virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// Segmentation type.
    pub gso_type: GsoType,
    /// Whether the ECN bit of `gso_type` is set (the flow uses ECN; CWR on the first).
    pub ecn: bool,
    /// Length of the headers (IP + L4), as the kernel reports it (a hint only).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksum to compute starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header of a plain packet with nothing left to do.
    pub const PLAIN: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: GsoType::None,
        ecn: false,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Parses the header at the start of `buf`; `None` if `buf` is shorter.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let b: &[u8; VNET_HDR_LEN] = buf.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(Self {
            flags: b[0],
            gso_type: GsoType::from_raw(b[1]),
            ecn: b[1] & 0x80 != 0,
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type.raw() | if self.ecn { 0x80 } else { 0 };
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_short_input() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GsoType::TcpV6,
            ecn: true,
            hdr_len: 72,
            gso_size: 1348,
            csum_start: 40,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.encode()), Some(h));
        assert_eq!(VnetHdr::parse(&[0; 9]), None);
        assert_eq!(
            VnetHdr::parse(&[0, 3, 0, 0, 0, 0, 0, 0, 0, 0]).map(|h| h.gso_type),
            Some(GsoType::Other(3))
        );
    }
}
