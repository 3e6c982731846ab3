//! The Internet checksum (RFC 1071): a ones'-complement sum of 16-bit big-endian words,
//! and the TCP/UDP pseudo-headers of IPv4 and IPv6.

/// Adds `data` to the running (unfolded) sum `acc`. An odd trailing byte is padded
/// with zero, so only the last piece of a checksummed range may have odd length.
pub fn sum(data: &[u8], acc: u64) -> u64 {
    // The ones'-complement sum does not depend on byte order up to a final swap (RFC
    // 1071, section 2(B)): add 32-bit words as the machine loads them (a loop the
    // compiler vectorises), fold, and swap the 16-bit result into network order. A
    // u64 holds 2^32 such words without overflow, far beyond any packet.
    let mut words = data.chunks_exact(4);
    let mut native: u64 = 0;
    for w in &mut words {
        native += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut acc = acc + u64::from(u16::from_be(fold(native)));
    // The rest starts at a multiple of 4, so its 16-bit words keep their alignment.
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for w in &mut pairs {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a running sum into 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The unfolded pseudo-header sum of a TCP/UDP packet of `l4_len` bytes inside the IP
/// packet `ip` (version from its first byte; addresses from its header). `None` if the
/// header is too short.
pub fn pseudo_header(ip: &[u8], proto: u8, l4_len: usize) -> Option<u64> {
    let acc = match ip.first()? >> 4 {
        4 => sum(ip.get(12..20)?, 0),
        6 => sum(ip.get(8..40)?, 0),
        _ => return None,
    };
    Some(acc + u64::from(proto) + l4_len as u64)
}

/// The final checksum value to store: the complement of the folded sum.
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(finish(sum(&data, 0)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56], 0)), 0x1234 + 0x5600);
    }

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        // A real IPv4 header (checksum b861) from RFC examples.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(finish(sum(&h, 0)), 0);
    }

    proptest::proptest! {
        #[test]
        fn wide_sum_matches_word_sum(data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            let mut naive: u64 = 0;
            for w in data.chunks(2) {
                naive += u64::from(w[0]) << 8 | u64::from(*w.get(1).unwrap_or(&0));
            }
            proptest::prop_assert_eq!(fold(sum(&data, 0)), fold(naive));
        }
    }
}
