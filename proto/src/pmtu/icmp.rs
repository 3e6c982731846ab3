//! The answer to an inner packet too big for its peer's path: ICMPv4 "fragmentation
//! needed" (type 3 code 4, RFC 1191) or ICMPv6 "packet too big" (type 2, RFC 8201),
//! written back into the TUN so the sender's kernel lowers its path MTU for that
//! destination (and TCP its MSS). PROTOCOL.md §9.5.
//!
//! The error comes from the packet's destination address (so it arrives on the
//! interface the route to that destination uses) and quotes the start of the packet.

use crate::multicast::checksum;
use crate::packet::IpHeader;

/// Largest ICMPv4 error (RFC 1812 §4.3.2.3: at most 576 bytes).
const V4_MAX: usize = 576;
/// Largest ICMPv6 error (RFC 4443 §2.4: the minimum IPv6 MTU).
const V6_MAX: usize = 1280;

/// Writes into `out` the ICMP error telling the sender of `packet` that `mtu` is the
/// largest packet its destination takes; returns its length. `None` when no error may
/// be sent: not a parsable IP packet, a multicast or unspecified source or a multicast
/// destination, a non-first IPv4 fragment, an ICMP error itself (RFC 1122 §3.2.2,
/// RFC 4443 §2.4), or `out` shorter than the error.
pub fn too_big(packet: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    let header = IpHeader::parse(packet).ok()?;
    if header.src.is_unspecified() || header.src.is_multicast() || header.dst.is_multicast() {
        return None;
    }
    let packet = &packet[..header.total_len];
    match packet[0] >> 4 {
        4 => v4(packet, mtu, out),
        _ => v6(packet, mtu, out),
    }
}

fn v4(packet: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let frag_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
    if frag_offset != 0 || packet.len() < ihl {
        return None;
    }
    // An ICMP error (destination unreachable, source quench, redirect, time exceeded,
    // parameter problem) is never answered with another.
    if packet[9] == 1
        && packet
            .get(ihl)
            .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12))
    {
        return None;
    }
    let quoted = packet.len().min(V4_MAX - 28);
    let len = 28 + quoted;
    let out = out.get_mut(..len)?;
    out.fill(0);
    out[0] = 0x45;
    out[1] = 0xc0; // Internetwork control precedence, as Linux sends its own errors.
    out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    out[8] = 64;
    out[9] = 1;
    out[12..16].copy_from_slice(&packet[16..20]);
    out[16..20].copy_from_slice(&packet[12..16]);
    let sum = checksum::of(&out[..20]);
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    out[20] = 3;
    out[21] = 4;
    out[26..28].copy_from_slice(&mtu.to_be_bytes());
    out[28..].copy_from_slice(&packet[..quoted]);
    let sum = checksum::of(&out[20..]);
    out[22..24].copy_from_slice(&sum.to_be_bytes());
    Some(len)
}

fn v6(packet: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    // An ICMPv6 error (types below 128) directly after the fixed header is never
    // answered; extension headers before an ICMPv6 error are not looked through.
    if packet[6] == 58 && packet.get(40).is_some_and(|t| *t < 128) {
        return None;
    }
    let quoted = packet.len().min(V6_MAX - 48);
    let len = 48 + quoted;
    let out = out.get_mut(..len)?;
    out.fill(0);
    out[0] = 0x60;
    out[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    out[6] = 58;
    out[7] = 64;
    out[8..24].copy_from_slice(&packet[24..40]);
    out[24..40].copy_from_slice(&packet[8..24]);
    out[40] = 2;
    out[44..48].copy_from_slice(&u32::from(mtu).to_be_bytes());
    out[48..].copy_from_slice(&packet[..quoted]);
    let mut acc = checksum::add(0, &out[8..40]);
    acc = checksum::add(acc, &((len - 40) as u32).to_be_bytes());
    acc = checksum::add(acc, &[0, 0, 0, 58]);
    acc = checksum::add(acc, &out[40..]);
    let sum = checksum::finish(acc);
    out[42..44].copy_from_slice(&sum.to_be_bytes());
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A TCP segment of `len` bytes from 10.47.1.1 to 10.47.3.1, DF set.
    fn tcp4(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 47, 1, 1]);
        p[16..20].copy_from_slice(&[10, 47, 3, 1]);
        let sum = checksum::of(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p[20..24].copy_from_slice(&[0x9c, 0x40, 0x13, 0x89]); // ports 40000 -> 5001
        p
    }

    fn tcp6(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 3;
        p
    }

    /// PROTOCOL.md §9.5: the error for a 2000-byte TCP segment and MTU 1440.
    #[test]
    fn v4_test_vector() {
        let p = tcp4(2000);
        let mut out = [0u8; 2048];
        let n = too_big(&p, 1440, &mut out).expect("error");
        assert_eq!(n, 576);
        assert_eq!(
            hex(&out[..48]),
            "45c002400000000040015f9e0a2f03010a2f0101\
             03044792000005a0\
             450007d00000400040061ac90a2f01010a2f0301"
        );
        // Checksums verify (a correct checksum sums to zero).
        assert_eq!(checksum::of(&out[..20]), 0);
        assert_eq!(checksum::of(&out[20..n]), 0);
        assert_eq!(&out[28..n], &p[..548]);
    }

    #[test]
    fn v6_packet_too_big_quotes_what_fits_in_1280() {
        let p = tcp6(2000);
        let mut out = [0u8; 2048];
        let n = too_big(&p, 1420, &mut out).expect("error");
        assert_eq!(n, 1280);
        assert_eq!(out[6], 58);
        assert_eq!(&out[8..24], &p[24..40], "from the destination");
        assert_eq!(&out[24..40], &p[8..24], "to the source");
        assert_eq!(out[40], 2);
        assert_eq!(
            u32::from_be_bytes([out[44], out[45], out[46], out[47]]),
            1420
        );
        let mut acc = checksum::add(0, &out[8..40]);
        acc = checksum::add(acc, &1240u32.to_be_bytes());
        acc = checksum::add(acc, &[0, 0, 0, 58]);
        acc = checksum::add(acc, &out[40..n]);
        assert_eq!(checksum::finish(acc), 0);
        assert_eq!(&out[48..n], &p[..1232]);
    }

    #[test]
    fn small_packets_are_quoted_whole() {
        let p = tcp4(100);
        let mut out = [0u8; 2048];
        assert_eq!(too_big(&p, 1440, &mut out), Some(128));
        let p = tcp6(100);
        assert_eq!(too_big(&p, 1440, &mut out), Some(148));
    }

    #[test]
    fn never_about_errors_fragments_or_multicast() {
        let mut out = [0u8; 2048];
        let mut icmp_err = tcp4(1000);
        icmp_err[9] = 1;
        icmp_err[20] = 3;
        assert_eq!(too_big(&icmp_err, 576, &mut out), None);
        icmp_err[20] = 8; // an echo request is answered
        assert!(too_big(&icmp_err, 576, &mut out).is_some());
        let mut frag = tcp4(1000);
        frag[7] = 1;
        assert_eq!(too_big(&frag, 576, &mut out), None);
        let mut mcast = tcp4(1000);
        mcast[16] = 239;
        assert_eq!(too_big(&mcast, 576, &mut out), None);
        let mut v6err = tcp6(1400);
        v6err[6] = 58;
        v6err[40] = 1;
        assert_eq!(too_big(&v6err, 1280, &mut out), None);
        assert_eq!(too_big(&[0x45, 0, 0], 1280, &mut out), None);
        assert_eq!(too_big(&tcp4(1000), 1280, &mut [0u8; 100]), None);
    }
}
