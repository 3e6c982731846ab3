//! Which data-plane worker a flow belongs to: a symmetric hash of an IP packet's
//! addresses, protocol and ports, so that both directions of a TCP or UDP flow land on
//! the same worker and a flow never moves between workers. Works on untrusted bytes;
//! never panics. Fragments, and protocols without ports, hash by addresses and
//! protocol only (every fragment of a datagram then shares one worker).

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;
const TCP: u8 = 6;
const UDP: u8 = 17;

fn fnv(mut h: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The flow's hash, the same for both directions; 0 for bytes that are not an IPv4 or
/// IPv6 header.
pub fn hash(packet: &[u8]) -> u32 {
    let Some((src, dst, proto, l4)) = fields(packet) else {
        return 0;
    };
    let ports = l4.and_then(|l4| Some((l4.get(0..2)?, l4.get(2..4)?)));
    // Order the two endpoints so that both directions give the same input.
    let (a, b) = match ports {
        Some((sp, dp)) if (src, sp) > (dst, dp) => ((dst, dp), (src, sp)),
        Some((sp, dp)) => ((src, sp), (dst, dp)),
        None if src > dst => ((dst, &[][..]), (src, &[][..])),
        None => ((src, &[][..]), (dst, &[][..])),
    };
    let mut h = fnv(FNV_OFFSET, &[proto]);
    for part in [a.0, a.1, b.0, b.1] {
        h = fnv(h, part);
    }
    // FNV's low bits are the parity of the input's low bits (Linux picks even ephemeral
    // ports for connect(), which would put every flow on one of two workers): mix every
    // bit into every other (murmur3's finaliser).
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The worker (of `workers`, at least one) that carries `packet`'s flow.
pub fn lane(packet: &[u8], workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    hash(packet) as usize % workers
}

/// Source and destination address bytes, the protocol, and the transport header when
/// the packet has ports to hash (TCP or UDP, not a fragment).
type Fields<'a> = (&'a [u8], &'a [u8], u8, Option<&'a [u8]>);

fn fields(packet: &[u8]) -> Option<Fields<'_>> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            let src = packet.get(12..16)?;
            let dst = packet.get(16..20)?;
            let proto = *packet.get(9)?;
            let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
            // More fragments, or a fragment offset: not the whole datagram.
            let whole = frag & 0x3fff == 0;
            let l4 = (whole && ihl >= 20 && (proto == TCP || proto == UDP))
                .then(|| packet.get(ihl..))
                .flatten();
            Some((src, dst, proto, l4))
        }
        6 => {
            let src = packet.get(8..24)?;
            let dst = packet.get(24..40)?;
            let proto = *packet.get(6)?;
            let l4 = (proto == TCP || proto == UDP)
                .then(|| packet.get(40..))
                .flatten();
            Some((src, dst, proto, l4))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    fn v6(proto: u8, src: u8, sport: u16, dst: u8, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[6] = proto;
        p[23] = src;
        p[39] = dst;
        p[40..42].copy_from_slice(&sport.to_be_bytes());
        p[42..44].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn both_directions_of_a_flow_share_a_lane() {
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        for sport in 40000..40100 {
            let there = v4(TCP, a, sport, b, 5201);
            let back = v4(TCP, b, 5201, a, sport);
            assert_eq!(hash(&there), hash(&back));
            assert_eq!(lane(&there, 4), lane(&back, 4));
            assert_eq!(
                hash(&v6(UDP, 1, sport, 2, 53)),
                hash(&v6(UDP, 2, 53, 1, sport))
            );
        }
        // Same ports, swapped only on one side: a different flow.
        assert_ne!(
            hash(&v4(TCP, a, 1000, b, 2000)),
            hash(&v4(TCP, a, 2000, b, 1000))
        );
    }

    #[test]
    fn flows_of_one_host_pair_spread_over_the_lanes() {
        let mut seen = [0usize; 4];
        for sport in 40000..40400 {
            seen[lane(&v4(TCP, [10, 0, 0, 1], sport, [10, 0, 0, 2], 5201), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(lane(&v4(TCP, [1; 4], 1, [2; 4], 2), 1), 0);
        assert_eq!(lane(&v4(TCP, [1; 4], 1, [2; 4], 2), 0), 0);
    }

    #[test]
    fn even_ports_alone_spread_over_two_lanes() {
        // Linux's connect() takes even ephemeral ports: the lanes must not follow parity.
        let mut seen = [0usize; 2];
        for sport in (40000..40400).step_by(2) {
            seen[lane(&v4(TCP, [10, 0, 0, 1], sport, [10, 0, 0, 2], 5201), 2)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 70), "{seen:?}");
    }

    #[test]
    fn fragments_and_portless_packets_hash_by_addresses() {
        let whole = v4(UDP, [10, 0, 0, 1], 1, [10, 0, 0, 2], 2);
        let mut first = whole.clone();
        first[6] = 0x20; // more fragments
        let mut later = v4(UDP, [10, 0, 0, 1], 7, [10, 0, 0, 2], 9);
        later[7] = 0xb9; // an offset: bytes 20.. are payload, not ports
        assert_eq!(hash(&first), hash(&later));
        let icmp = v4(1, [10, 0, 0, 1], 0, [10, 0, 0, 2], 0);
        let reply = v4(1, [10, 0, 0, 2], 5, [10, 0, 0, 1], 5);
        assert_eq!(hash(&icmp), hash(&reply));
    }

    #[test]
    fn malformed_bytes_hash_to_zero_without_panicking() {
        assert_eq!(hash(&[]), 0);
        assert_eq!(hash(&[0x45; 19]), 0);
        assert_eq!(hash(&[0x60; 39]), 0);
        assert_eq!(hash(&[0x15; 60]), 0);
        // A header length past the end: addresses only.
        let mut p = v4(TCP, [1; 4], 1, [2; 4], 2);
        p[0] = 0x4f;
        p.truncate(24);
        let _ = hash(&p);
        for n in 0..60 {
            let _ = lane(&v6(TCP, 1, 2, 3, 4)[..n], 3);
        }
    }
}
