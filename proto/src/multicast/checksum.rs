//! The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words,
//! used by the IPv4 header, IGMP and ICMPv6 (with its pseudo-header).

/// Adds `data` to the running sum `acc` (an odd trailing byte is padded with zero).
pub(crate) fn add(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds the running sum to 16 bits and complements it: the value to store in a
/// checksum field, and 0 when the summed data already contains a correct checksum.
pub(crate) fn finish(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves at most 16 bits.
    !(acc as u16)
}

/// Checksum of `data` alone (IPv4 header, IGMP message).
pub(crate) fn of(data: &[u8]) -> u16 {
    finish(add(0, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is 0xddf2 (before complement).
        assert_eq!(
            of(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn odd_length_and_verification() {
        let mut data = vec![0x12, 0x34, 0x00, 0x00, 0x56, 0x78, 0x9a];
        let c = of(&data);
        data[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(of(&data), 0);
        assert_eq!(of(&[]), 0xffff);
    }
}
