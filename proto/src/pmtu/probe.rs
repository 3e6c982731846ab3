//! The path MTU probe and its acknowledgement: the plaintext of a WireGuard transport
//! data message, padded to the size under test (PROTOCOL.md §9.2).
//!
//! Both are IPv4 packets from `0.0.0.0` to `0.0.0.0` with protocol 253 (RFC 3692,
//! experimentation), so a receiver that does not know them drops them by crypto-key
//! routing (the source is nobody's prefix) and never delivers them.

use crate::multicast::checksum;

/// Smallest probe or ack: the IPv4 header and the probe header.
pub const MIN_LEN: usize = 36;
/// IP protocol number of probes (RFC 3692: for experimentation).
pub const PROTOCOL: u8 = 253;
/// Magic bytes after the IPv4 header.
pub const MAGIC: [u8; 4] = *b"WFPM";
/// Kind byte of a probe.
pub const KIND_PROBE: u8 = 1;
/// Kind byte of an acknowledgement.
pub const KIND_ACK: u8 = 2;

/// A parsed probe or acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A probe of `size` bytes (its own length) that the receiver answers.
    Probe {
        /// The sender's probe id, echoed in the ack.
        id: u32,
        /// The probe's length: the inner packet size under test.
        size: u16,
    },
    /// An acknowledgement: probe `id` of `size` bytes arrived.
    Ack {
        /// The probe id being acknowledged.
        id: u32,
        /// The size of the probe that arrived.
        size: u16,
    },
}

/// Why bytes are not a probe message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeError {
    /// Not an IPv4 packet from 0.0.0.0 to 0.0.0.0 with protocol 253 and the magic:
    /// not a probe at all (ordinary traffic).
    NotProbe,
    /// Looks like a probe but a field is invalid (length, kind, reserved or padding).
    Malformed,
}

/// Whether `packet` is addressed like a probe message (IPv4, protocol 253, 0.0.0.0 to
/// 0.0.0.0, magic); such a packet is never delivered, valid or not.
pub fn is_probe(packet: &[u8]) -> bool {
    packet.len() >= 24
        && packet[0] == 0x45
        && packet[9] == PROTOCOL
        && packet[12..20] == [0; 8]
        && packet[20..24] == MAGIC
}

/// Parses a decrypted inner packet as a probe message.
pub fn parse(packet: &[u8]) -> Result<Message, ProbeError> {
    if !is_probe(packet) {
        return Err(ProbeError::NotProbe);
    }
    if packet.len() < MIN_LEN || packet.len() > usize::from(u16::MAX) {
        return Err(ProbeError::Malformed);
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let size = u16::from_be_bytes([packet[32], packet[33]]);
    let id = u32::from_be_bytes([packet[28], packet[29], packet[30], packet[31]]);
    if total != packet.len()
        || packet[1] != 0
        || packet[4..9] != [0, 0, 0, 0, 64]
        || checksum::of(&packet[..20]) != 0
        || packet[25..28] != [0; 3]
        || packet[34..36] != [0; 2]
        || packet[MIN_LEN..].iter().any(|&b| b != 0)
    {
        return Err(ProbeError::Malformed);
    }
    match packet[24] {
        KIND_PROBE if usize::from(size) == packet.len() => Ok(Message::Probe { id, size }),
        KIND_ACK if packet.len() == MIN_LEN && usize::from(size) >= MIN_LEN => {
            Ok(Message::Ack { id, size })
        }
        _ => Err(ProbeError::Malformed),
    }
}

/// Writes `message` into `out` (a probe fills `size` bytes, an ack [`MIN_LEN`]);
/// returns the length, or `None` if `out` is too short or the size is below
/// [`MIN_LEN`].
pub fn write(message: Message, out: &mut [u8]) -> Option<usize> {
    let (kind, id, size, len) = match message {
        Message::Probe { id, size } => (KIND_PROBE, id, size, usize::from(size)),
        Message::Ack { id, size } => (KIND_ACK, id, size, MIN_LEN),
    };
    if usize::from(size) < MIN_LEN || out.len() < len {
        return None;
    }
    let out = &mut out[..len];
    out.fill(0);
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    out[8] = 64;
    out[9] = PROTOCOL;
    let sum = checksum::of(&out[..20]);
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    out[20..24].copy_from_slice(&MAGIC);
    out[24] = kind;
    out[28..32].copy_from_slice(&id.to_be_bytes());
    out[32..34].copy_from_slice(&size.to_be_bytes());
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// PROTOCOL.md §9.4: the ack of probe 0x01020304 of 1440 bytes.
    #[test]
    fn ack_test_vector() {
        let mut out = [0u8; 64];
        let n = write(
            Message::Ack {
                id: 0x0102_0304,
                size: 1440,
            },
            &mut out,
        );
        assert_eq!(n, Some(MIN_LEN));
        assert_eq!(
            hex(&out[..MIN_LEN]),
            "450000240000000040fd79de00000000000000005746504d\
             020000000102030405a00000"
        );
        assert_eq!(
            parse(&out[..MIN_LEN]),
            Ok(Message::Ack {
                id: 0x0102_0304,
                size: 1440
            })
        );
    }

    /// PROTOCOL.md §9.4: a probe of 64 bytes, id 7.
    #[test]
    fn probe_test_vector() {
        let mut out = [0xffu8; 64];
        assert_eq!(
            write(Message::Probe { id: 7, size: 64 }, &mut out),
            Some(64)
        );
        assert_eq!(
            hex(&out[..36]),
            "450000400000000040fd79c200000000000000005746504d01000000000000070040\
             0000"
        );
        assert!(out[36..].iter().all(|&b| b == 0));
        assert_eq!(parse(&out), Ok(Message::Probe { id: 7, size: 64 }));
    }

    #[test]
    fn every_changed_byte_outside_the_id_is_rejected() {
        let mut p = [0u8; 100];
        write(Message::Probe { id: 9, size: 100 }, &mut p);
        for i in 0..p.len() {
            let mut q = p;
            q[i] ^= 0x10;
            let original = Ok(Message::Probe { id: 9, size: 100 });
            assert_ne!(parse(&q), original, "byte {i}");
            if !(28..32).contains(&i) {
                assert!(parse(&q).is_err(), "byte {i}");
            }
        }
        // Truncated or extended: the length no longer matches.
        assert_eq!(parse(&p[..99]), Err(ProbeError::Malformed));
        let mut longer = p.to_vec();
        longer.push(0);
        assert_eq!(parse(&longer), Err(ProbeError::Malformed));
    }

    #[test]
    fn ordinary_traffic_is_not_a_probe() {
        let mut ping = [0u8; 84];
        ping[0] = 0x45;
        ping[2..4].copy_from_slice(&84u16.to_be_bytes());
        ping[9] = 1;
        ping[12..16].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(parse(&ping), Err(ProbeError::NotProbe));
        assert_eq!(parse(&[]), Err(ProbeError::NotProbe));
        assert_eq!(parse(&[0x60; 40]), Err(ProbeError::NotProbe));
    }

    #[test]
    fn sizes_below_the_header_are_refused() {
        let mut out = [0u8; 64];
        assert_eq!(write(Message::Probe { id: 1, size: 35 }, &mut out), None);
        assert_eq!(write(Message::Probe { id: 1, size: 65 }, &mut out), None);
        assert_eq!(write(Message::Ack { id: 1, size: 20 }, &mut out), None);
    }
}
