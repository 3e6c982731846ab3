//! Ethernet II framing for the L2 port on a bridge (bridge mode): parsing the header of
//! a frame read from the bridge, deciding whether it carries multicast IP that the mesh
//! replicates, and building the header of a frame written back (destination MAC mapped
//! from the group, RFC 1112 §6.4 and RFC 2464 §7).

use std::net::IpAddr;

/// Length of an Ethernet II header (no VLAN tag, no FCS).
pub const HEADER_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A MAC address.
pub type Mac = [u8; 6];

/// Why a frame is not usable. Every variant means "drop it and count it".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FrameError {
    /// Shorter than an Ethernet header.
    #[error("frame shorter than an Ethernet header")]
    Truncated,
    /// An IPv4/IPv6 EtherType whose payload is not a whole IP packet of that version.
    #[error("malformed IP packet in an Ethernet frame")]
    BadIpPacket,
}

/// The header fields of an Ethernet II frame and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// EtherType (a VLAN tag shows as 0x8100 here; its payload is not looked into).
    pub ethertype: u16,
    /// Everything after the header (including any padding).
    pub payload: &'a [u8],
}

/// Parses the Ethernet II header of `frame`.
pub fn parse(frame: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (header, payload) = frame
        .split_at_checked(HEADER_LEN)
        .ok_or(FrameError::Truncated)?;
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&header[0..6]);
    src.copy_from_slice(&header[6..12]);
    Ok(Frame {
        dst,
        src,
        ethertype: u16::from_be_bytes([header[12], header[13]]),
        payload,
    })
}

/// Whether `mac` is a group (multicast) address other than broadcast.
pub fn is_multicast_mac(mac: &Mac) -> bool {
    mac[0] & 1 == 1 && *mac != [0xff; 6]
}

/// The IP packet a frame from the bridge carries when the mesh should treat it as
/// multicast: an IPv4/IPv6 EtherType, a multicast destination MAC, and a whole IP packet
/// of the matching version with a multicast destination, trimmed to its IP length
/// (Ethernet padding removed). `Ok(None)` for frames that are not for the mesh (ARP,
/// unicast, broadcast, VLAN-tagged, other protocols); `Err` for malformed ones.
pub fn multicast_ip_packet(frame: &[u8]) -> Result<Option<&[u8]>, FrameError> {
    let f = parse(frame)?;
    if !is_multicast_mac(&f.dst) {
        return Ok(None);
    }
    let packet = match f.ethertype {
        ETHERTYPE_IPV4 => ipv4_packet(f.payload)?,
        ETHERTYPE_IPV6 => ipv6_packet(f.payload)?,
        _ => return Ok(None),
    };
    let dst_multicast = match f.ethertype {
        ETHERTYPE_IPV4 => packet[16] & 0xf0 == 0xe0,
        _ => packet[24] == 0xff,
    };
    Ok(dst_multicast.then_some(packet))
}

/// An IPv4 packet at the start of `payload`, trimmed to its total length.
fn ipv4_packet(payload: &[u8]) -> Result<&[u8], FrameError> {
    let first = *payload.first().ok_or(FrameError::BadIpPacket)?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || payload.len() < 20 {
        return Err(FrameError::BadIpPacket);
    }
    let total = usize::from(u16::from_be_bytes([payload[2], payload[3]]));
    if total < ihl || total > payload.len() {
        return Err(FrameError::BadIpPacket);
    }
    Ok(&payload[..total])
}

/// An IPv6 packet at the start of `payload`, trimmed to its length.
fn ipv6_packet(payload: &[u8]) -> Result<&[u8], FrameError> {
    if payload.len() < 40 || payload[0] >> 4 != 6 {
        return Err(FrameError::BadIpPacket);
    }
    let total = 40 + usize::from(u16::from_be_bytes([payload[4], payload[5]]));
    if total > payload.len() {
        return Err(FrameError::BadIpPacket);
    }
    Ok(&payload[..total])
}

/// The destination MAC of a multicast group: 01:00:5e plus the low 23 bits of an IPv4
/// group, 33:33 plus the low 32 bits of an IPv6 group; `None` for unicast addresses.
pub fn multicast_mac(group: IpAddr) -> Option<Mac> {
    match group {
        IpAddr::V4(g) if g.is_multicast() => {
            let o = g.octets();
            Some([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
        }
        IpAddr::V6(g) if g.is_multicast() => {
            let o = g.octets();
            Some([0x33, 0x33, o[12], o[13], o[14], o[15]])
        }
        _ => None,
    }
}

/// A locally administered unicast MAC made from six random bytes.
pub fn local_mac(random: [u8; 6]) -> Mac {
    let mut mac = random;
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// Writes the Ethernet header for the multicast IP `packet` into `out[..HEADER_LEN]`
/// and the packet after it; returns the frame length. `None` if `packet` is not an
/// IPv4/IPv6 packet with a multicast destination, or `out` is too small.
pub fn multicast_frame(packet: &[u8], src: Mac, out: &mut [u8]) -> Option<usize> {
    let (group, ethertype) = match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (IpAddr::from(b), ETHERTYPE_IPV4)
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (IpAddr::from(b), ETHERTYPE_IPV6)
        }
        _ => return None,
    };
    let dst = multicast_mac(group)?;
    let len = HEADER_LEN + packet.len();
    let frame = out.get_mut(..len)?;
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
    frame[HEADER_LEN..].copy_from_slice(packet);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ipv4_udp(dst: [u8; 4], total: u16) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(total)];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[8] = 1;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 244, 1, 10]);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn ipv6_udp(dst: [u8; 16], payload: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40 + usize::from(payload)];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&payload.to_be_bytes());
        p[6] = 17;
        p[7] = 1;
        p[24..40].copy_from_slice(&dst);
        p
    }

    #[test]
    fn group_macs() {
        let g: IpAddr = "239.129.2.3".parse().expect("ip");
        assert_eq!(multicast_mac(g), Some([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]));
        let g: IpAddr = "224.0.0.1".parse().expect("ip");
        assert_eq!(multicast_mac(g), Some([0x01, 0x00, 0x5e, 0, 0, 1]));
        let g: IpAddr = "ff05::1:3".parse().expect("ip");
        assert_eq!(multicast_mac(g), Some([0x33, 0x33, 0, 1, 0, 3]));
        assert_eq!(multicast_mac("10.0.0.1".parse().expect("ip")), None);
        assert_eq!(multicast_mac("fd00::1".parse().expect("ip")), None);
    }

    #[test]
    fn frame_round_trip_removes_padding() {
        let src = local_mac([0xff; 6]);
        assert_eq!(src, [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(!is_multicast_mac(&src));
        let packet = ipv4_udp([239, 1, 1, 1], 32);
        let mut out = vec![0u8; 100];
        let n = multicast_frame(&packet, src, &mut out).expect("frame");
        assert_eq!(n, HEADER_LEN + 32);
        // Padded to the 60-byte Ethernet minimum, as on the wire.
        let f = parse(&out[..60]).expect("parse");
        assert_eq!(f.dst, [0x01, 0x00, 0x5e, 1, 1, 1]);
        assert_eq!(f.src, src);
        assert_eq!(f.ethertype, ETHERTYPE_IPV4);
        assert_eq!(multicast_ip_packet(&out[..60]), Ok(Some(&packet[..])));

        let packet6 = ipv6_udp([0xff, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3], 8);
        let n = multicast_frame(&packet6, src, &mut out).expect("frame");
        assert_eq!(&out[..2], &[0x33, 0x33]);
        assert_eq!(multicast_ip_packet(&out[..n]), Ok(Some(&packet6[..])));
        assert_eq!(multicast_frame(&packet6, src, &mut [0u8; 20]), None);
    }

    #[test]
    fn frames_not_for_the_mesh_are_ignored_or_rejected() {
        let mut frame = vec![0u8; 14];
        frame[0..6].copy_from_slice(&[0x01, 0x00, 0x5e, 1, 1, 1]);
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        frame.extend(ipv4_udp([10, 244, 2, 10], 28));
        // IP destination unicast behind a multicast MAC.
        assert_eq!(multicast_ip_packet(&frame), Ok(None));
        // ARP.
        frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(multicast_ip_packet(&frame), Ok(None));
        // Unicast and broadcast MACs.
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        frame[0] = 0x02;
        assert_eq!(multicast_ip_packet(&frame), Ok(None));
        frame[0..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(multicast_ip_packet(&frame), Ok(None));
        // Malformed: short, wrong version, total length beyond the frame.
        assert_eq!(
            multicast_ip_packet(&frame[..13]),
            Err(FrameError::Truncated)
        );
        frame[0] = 0x01;
        frame[14] = 0x65;
        assert_eq!(multicast_ip_packet(&frame), Err(FrameError::BadIpPacket));
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(multicast_ip_packet(&frame), Err(FrameError::BadIpPacket));
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(Some(p)) = multicast_ip_packet(&data) {
                prop_assert!(p.len() + HEADER_LEN <= data.len());
                let mut out = vec![0u8; data.len()];
                let n = multicast_frame(p, [2, 0, 0, 0, 0, 1], &mut out);
                prop_assert_eq!(n, Some(p.len() + HEADER_LEN));
                prop_assert_eq!(multicast_ip_packet(&out[..p.len() + HEADER_LEN]), Ok(Some(p)));
            }
        }

        #[test]
        fn built_frames_parse_back(last in any::<[u8; 3]>(), len in 28u16..200) {
            let packet = ipv4_udp([239, last[0], last[1], last[2]], len);
            let mut out = vec![0u8; 300];
            let n = multicast_frame(&packet, local_mac(last.repeat(2).try_into().expect("6")), &mut out);
            prop_assert_eq!(n, Some(packet.len() + HEADER_LEN));
            prop_assert_eq!(multicast_ip_packet(&out[..packet.len() + HEADER_LEN]), Ok(Some(&packet[..])));
        }
    }
}
