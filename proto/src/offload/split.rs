//! One read from a TUN with `IFF_VNET_HDR` into plain IP packets: a TSO super-packet
//! (TCP over IPv4 or IPv6) is cut into segments of `gso_size` payload bytes, each with
//! its own IP length, IPv4 identification and header checksum, TCP sequence number,
//! flags and checksum; a plain packet whose checksum the kernel left to us
//! (`NEEDS_CSUM`) gets it computed. What cannot be handled is an error, never a panic.

use super::checksum::{finish, pseudo_header, sum};
use super::vnet::{GsoType, VnetHdr, F_NEEDS_CSUM, VNET_HDR_LEN};
use super::PROTO_TCP;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a read from the TUN could not be turned into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// Shorter than the virtio-net header, or the headers it announces.
    #[error("truncated offload packet")]
    Truncated,
    /// A checksum position outside the packet.
    #[error("checksum offset outside the packet")]
    BadChecksumOffset,
    /// A segmentation type this code does not handle (UFO, USO, unknown).
    #[error("unsupported segmentation type")]
    Unsupported,
    /// The IP version, protocol or extension headers do not match the GSO type.
    #[error("super-packet is not plain TCP of the announced IP version")]
    NotTcp,
    /// A zero segment size, or a segment that does not fit the output buffer.
    #[error("bad segment size")]
    BadSegmentSize,
}

/// Splits `read` (a virtio-net header followed by one packet, as read from the TUN)
/// and calls `each` with every resulting IP packet, in order. `read` is modified in
/// place (checksums); `scratch` holds one segment at a time and must be at least
/// headers + `gso_size` long. Returns the number of packets passed to `each`.
pub fn split(
    read: &mut [u8],
    scratch: &mut [u8],
    mut each: impl FnMut(&[u8]),
) -> Result<usize, SplitError> {
    let hdr = VnetHdr::parse(read).ok_or(SplitError::Truncated)?;
    let packet = &mut read[VNET_HDR_LEN..];
    match hdr.gso_type {
        GsoType::None => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(packet, hdr.csum_start, hdr.csum_offset)?;
            }
            each(packet);
            Ok(1)
        }
        GsoType::TcpV4 | GsoType::TcpV6 => {
            split_tcp(packet, hdr.gso_type, hdr.gso_size, scratch, &mut each)
        }
        GsoType::UdpL4 | GsoType::Other(_) => Err(SplitError::Unsupported),
    }
}

/// Computes the checksum left partial by the kernel: the ones'-complement sum from
/// `start` to the end (the field already holds the pseudo-header sum), stored at
/// `start + offset`. A zero result is stored as 0xffff (as the kernel does; the same
/// value for TCP, and required for UDP).
fn complete_checksum(packet: &mut [u8], start: u16, offset: u16) -> Result<(), SplitError> {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    if at + 2 > packet.len() || start > packet.len() {
        return Err(SplitError::BadChecksumOffset);
    }
    let c = finish(sum(&packet[start..], 0));
    let c = if c == 0 { 0xffff } else { c };
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// The IP header length of a TCP packet of the expected version.
fn tcp_ip_header_len(packet: &[u8], v6: bool) -> Result<usize, SplitError> {
    let first = *packet.first().ok_or(SplitError::Truncated)?;
    match (first >> 4, v6) {
        (4, false) => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 || packet.len() < ihl {
                return Err(SplitError::Truncated);
            }
            if packet[9] != PROTO_TCP {
                return Err(SplitError::NotTcp);
            }
            // A fragment cannot be a TSO super-packet.
            if u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0 {
                return Err(SplitError::NotTcp);
            }
            Ok(ihl)
        }
        (6, true) => {
            if packet.len() < 40 {
                return Err(SplitError::Truncated);
            }
            // Extension headers are not expected from the kernel's TSO path.
            if packet[6] != PROTO_TCP {
                return Err(SplitError::NotTcp);
            }
            Ok(40)
        }
        _ => Err(SplitError::NotTcp),
    }
}

fn split_tcp(
    packet: &mut [u8],
    gso: GsoType,
    gso_size: u16,
    scratch: &mut [u8],
    each: &mut impl FnMut(&[u8]),
) -> Result<usize, SplitError> {
    let v6 = gso == GsoType::TcpV6;
    let iphl = tcp_ip_header_len(packet, v6)?;
    let doff = usize::from(*packet.get(iphl + 12).ok_or(SplitError::Truncated)? >> 4) * 4;
    let hdr_len = iphl + doff;
    if doff < 20 || packet.len() < hdr_len {
        return Err(SplitError::Truncated);
    }
    let mss = usize::from(gso_size);
    if mss == 0 || scratch.len() < hdr_len + mss {
        return Err(SplitError::BadSegmentSize);
    }
    let (headers, payload) = packet.split_at(hdr_len);
    let seq0 = u32::from_be_bytes([
        headers[iphl + 4],
        headers[iphl + 5],
        headers[iphl + 6],
        headers[iphl + 7],
    ]);
    let id0 = u16::from_be_bytes([headers[4], headers[5]]);
    let flags0 = headers[iphl + 13];
    // A super-packet without payload (should not happen) still goes out once.
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let start = i * mss;
        let chunk = &payload[start.min(payload.len())..(start + mss).min(payload.len())];
        let len = hdr_len + chunk.len();
        let seg = &mut scratch[..len];
        seg[..hdr_len].copy_from_slice(headers);
        seg[hdr_len..].copy_from_slice(chunk);
        if v6 {
            let plen = (len - 40) as u16;
            seg[4..6].copy_from_slice(&plen.to_be_bytes());
        } else {
            seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            let id = if i == 0 {
                id0
            } else {
                id0.wrapping_add(i as u16)
            };
            seg[4..6].copy_from_slice(&id.to_be_bytes());
            seg[10..12].copy_from_slice(&[0, 0]);
            let c = finish(sum(&seg[..iphl], 0));
            seg[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let tcp = iphl;
        let seq = seq0.wrapping_add(start as u32);
        seg[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        seg[tcp + 13] = flags;
        seg[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
        let l4_len = len - iphl;
        let pseudo = pseudo_header(seg, PROTO_TCP, l4_len).ok_or(SplitError::Truncated)?;
        let c = finish(sum(&seg[tcp..], pseudo));
        seg[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        each(seg);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::testpkt::{tcp_packet, tcp_valid, with_vnet, Flow};
    use super::super::vnet::F_DATA_VALID;
    use super::*;

    fn split_all(read: &mut [u8]) -> Result<Vec<Vec<u8>>, SplitError> {
        let mut scratch = vec![0u8; 65536];
        let mut out = Vec::new();
        let n = split(read, &mut scratch, |p| out.push(p.to_vec()))?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    fn tso(flow: &Flow, payload: usize, mss: u16, flags: u8) -> Vec<u8> {
        let body: Vec<u8> = (0..payload).map(|i| (i % 251) as u8).collect();
        let p = tcp_packet(flow, 1000, flags, &body);
        let iphl = if flow.v6 { 40 } else { 20 } as u16;
        with_vnet(
            &VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if flow.v6 {
                    GsoType::TcpV6
                } else {
                    GsoType::TcpV4
                },
                ecn: false,
                hdr_len: iphl + 20 + flow.options.len() as u16,
                gso_size: mss,
                csum_start: iphl,
                csum_offset: 16,
            },
            &p,
        )
    }

    fn check_segments(flow: &Flow, segs: &[Vec<u8>], payload: usize, mss: usize, flags: u8) {
        assert_eq!(segs.len(), payload.div_ceil(mss));
        let mut seq = 1000u32;
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let t = tcp_valid(s).expect("valid checksums and lengths");
            assert_eq!(t.seq, seq);
            assert_eq!(t.options, flow.options);
            let last = i + 1 == segs.len();
            assert_eq!(t.payload.len(), if last { payload - i * mss } else { mss });
            let expect = if last {
                flags
            } else {
                flags & !(TCP_FIN | TCP_PSH)
            };
            let expect = if i > 0 { expect & !TCP_CWR } else { expect };
            assert_eq!(t.flags, expect, "segment {i}");
            seq += t.payload.len() as u32;
            joined.extend_from_slice(&t.payload);
        }
        assert!(joined
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn splits_ipv4_with_last_short_segment_and_flags() {
        let flow = Flow::v4();
        let flags = 0x10 | TCP_PSH | TCP_FIN | TCP_CWR;
        let mut r = tso(&flow, 3 * 1380 + 17, 1380, flags);
        let segs = split_all(&mut r).expect("split");
        check_segments(&flow, &segs, 3 * 1380 + 17, 1380, flags);
        let ids: Vec<u16> = segs
            .iter()
            .map(|s| u16::from_be_bytes([s[4], s[5]]))
            .collect();
        assert_eq!(ids, vec![7, 8, 9, 10]);
    }

    #[test]
    fn splits_ipv6_with_tcp_options() {
        let mut flow = Flow::v6();
        flow.options = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let mut r = tso(&flow, 64000, 1348, 0x18);
        let segs = split_all(&mut r).expect("split");
        check_segments(&flow, &segs, 64000, 1348, 0x18);
    }

    #[test]
    fn exact_multiple_has_no_empty_tail() {
        let flow = Flow::v4();
        let mut r = tso(&flow, 2 * 1000, 1000, 0x10);
        let segs = split_all(&mut r).expect("split");
        check_segments(&flow, &segs, 2000, 1000, 0x10);
    }

    #[test]
    fn plain_packet_gets_its_partial_checksum_completed() {
        let flow = Flow::v4();
        let mut p = tcp_packet(&flow, 5, 0x18, b"hello");
        // What the kernel hands over with NEEDS_CSUM: the pseudo-header sum in place.
        let pseudo = pseudo_header(&p, PROTO_TCP, p.len() - 20).expect("pseudo");
        let partial = super::super::checksum::fold(pseudo);
        p[36..38].copy_from_slice(&partial.to_be_bytes());
        let mut h = VnetHdr::PLAIN;
        h.flags = F_NEEDS_CSUM;
        h.csum_start = 20;
        h.csum_offset = 16;
        let mut r = with_vnet(&h, &p);
        let segs = split_all(&mut r).expect("split");
        assert_eq!(segs.len(), 1);
        assert!(tcp_valid(&segs[0]).is_some());
    }

    #[test]
    fn non_tcp_passes_through_untouched() {
        let udp = [
            0x45u8, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2, 0,
            8, 0, 0,
        ];
        let mut h = VnetHdr::PLAIN;
        h.flags = F_DATA_VALID;
        let mut r = with_vnet(&h, &udp);
        assert_eq!(split_all(&mut r).expect("split"), vec![udp.to_vec()]);
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let flow = Flow::v4();
        let good = tso(&flow, 5000, 1380, 0x10);
        // Truncated everywhere.
        for cut in 0..good.len().min(80) {
            let _ = split_all(&mut good[..cut].to_vec());
        }
        // GSO type for the wrong version.
        let mut r = good.clone();
        r[1] = 4;
        assert_eq!(split_all(&mut r), Err(SplitError::NotTcp));
        // Zero MSS.
        let mut r = good.clone();
        r[4] = 0;
        r[5] = 0;
        assert_eq!(split_all(&mut r), Err(SplitError::BadSegmentSize));
        // Checksum offset beyond the end.
        let mut h = VnetHdr::PLAIN;
        h.flags = F_NEEDS_CSUM;
        h.csum_start = 60000;
        let mut r = with_vnet(&h, &[0x45; 30]);
        assert_eq!(split_all(&mut r), Err(SplitError::BadChecksumOffset));
        // UDP segmentation is not enabled, so not handled.
        let mut r = good.clone();
        r[1] = 5;
        assert_eq!(split_all(&mut r), Err(SplitError::Unsupported));
        // A data offset past the end.
        let mut r = good[..VNET_HDR_LEN + 40].to_vec();
        r[VNET_HDR_LEN + 32] = 0xf0;
        assert_eq!(split_all(&mut r), Err(SplitError::Truncated));
    }

    proptest::proptest! {
        #[test]
        fn any_tso_splits_into_valid_segments(payload in 1usize..20000, mss in 1u16..3000, v6: bool, flags in 0u8..0x40) {
            let flow = if v6 { Flow::v6() } else { Flow::v4() };
            let flags = flags | 0x10;
            let mut r = tso(&flow, payload, mss, flags);
            let segs = split_all(&mut r).expect("split");
            check_segments(&flow, &segs, payload, usize::from(mss), flags);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut d = data;
            let _ = split_all(&mut d);
        }
    }
}
