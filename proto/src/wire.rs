//! Classification of datagrams that arrive on weftnet's single UDP port.
//!
//! The first byte of every datagram says what it is (see `PROTOCOL.md`, "Port
//! demultiplexing"). WireGuard messages keep their standard layout (type byte, three
//! zero bytes, fixed sizes), so a stock WireGuard peer interoperates. This module only
//! checks the envelope and extracts the receiver index that selects a peer; all
//! cryptographic checks happen in [`crate::session`].

/// WireGuard message type 1: handshake initiation.
pub const TYPE_HANDSHAKE_INIT: u8 = 1;
/// WireGuard message type 2: handshake response.
pub const TYPE_HANDSHAKE_RESPONSE: u8 = 2;
/// WireGuard message type 3: cookie reply.
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// WireGuard message type 4: transport data.
pub const TYPE_DATA: u8 = 4;

/// Size of a handshake initiation.
pub const HANDSHAKE_INIT_LEN: usize = 148;
/// Size of a handshake response.
pub const HANDSHAKE_RESPONSE_LEN: usize = 92;
/// Size of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Header (16) plus authentication tag (16) of a transport data message.
pub const DATA_OVERHEAD: usize = 32;
/// First message type of the control range (gossip), see PROTOCOL.md §1.1.
pub const TYPE_CONTROL_FIRST: u8 = 0x40;
/// Last message type of the control range.
pub const TYPE_CONTROL_LAST: u8 = 0x7f;
/// Largest datagram weftnet accepts; anything larger is dropped as oversized.
pub const MAX_DATAGRAM: usize = 65535;

/// What a datagram on the UDP port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// A WireGuard handshake initiation; the peer is found from its encrypted static key.
    HandshakeInit,
    /// A WireGuard handshake response for our local index `receiver`.
    HandshakeResponse {
        /// Our session index the sender addresses.
        receiver: u32,
    },
    /// A WireGuard cookie reply for our local index `receiver`.
    CookieReply {
        /// Our session index the sender addresses.
        receiver: u32,
    },
    /// WireGuard transport data for our local index `receiver`.
    Data {
        /// Our session index the sender addresses.
        receiver: u32,
    },
    /// A weftnet control message (gossip); its own layer authenticates it.
    Control,
}

impl Datagram {
    /// The peer slot that owns a local session index: boringtun builds local indices
    /// as `slot << 8 | counter`.
    pub fn peer_slot(receiver: u32) -> u32 {
        receiver >> 8
    }

    /// The receiver index, for messages that carry one.
    pub fn receiver(&self) -> Option<u32> {
        match *self {
            Self::HandshakeInit | Self::Control => None,
            Self::HandshakeResponse { receiver }
            | Self::CookieReply { receiver }
            | Self::Data { receiver } => Some(receiver),
        }
    }
}

/// Why a datagram was dropped before any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Empty datagram.
    #[error("empty datagram")]
    Empty,
    /// The first byte names no message type weftnet speaks.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The reserved bytes of a WireGuard header are not zero.
    #[error("reserved header bytes are not zero")]
    Reserved,
    /// The size does not match the message type.
    #[error("wrong size {len} for message type {kind}")]
    Length {
        /// Message type.
        kind: u8,
        /// Received size.
        len: usize,
    },
    /// Larger than [`MAX_DATAGRAM`].
    #[error("oversized datagram")]
    Oversized,
}

fn read_u32_le(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

/// Classifies one datagram received on the UDP port.
pub fn classify(buf: &[u8]) -> Result<Datagram, WireError> {
    let kind = *buf.first().ok_or(WireError::Empty)?;
    if buf.len() > MAX_DATAGRAM {
        return Err(WireError::Oversized);
    }
    let expect = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(WireError::Length {
                kind,
                len: buf.len(),
            })
        }
    };
    if (TYPE_HANDSHAKE_INIT..=TYPE_DATA).contains(&kind) {
        expect(buf.len() >= 4)?;
        if buf[1..4] != [0, 0, 0] {
            return Err(WireError::Reserved);
        }
    }
    match kind {
        TYPE_HANDSHAKE_INIT => {
            expect(buf.len() == HANDSHAKE_INIT_LEN)?;
            Ok(Datagram::HandshakeInit)
        }
        TYPE_HANDSHAKE_RESPONSE => {
            expect(buf.len() == HANDSHAKE_RESPONSE_LEN)?;
            Ok(Datagram::HandshakeResponse {
                receiver: read_u32_le(buf, 8),
            })
        }
        TYPE_COOKIE_REPLY => {
            expect(buf.len() == COOKIE_REPLY_LEN)?;
            Ok(Datagram::CookieReply {
                receiver: read_u32_le(buf, 4),
            })
        }
        TYPE_DATA => {
            expect(buf.len() >= DATA_OVERHEAD)?;
            Ok(Datagram::Data {
                receiver: read_u32_le(buf, 4),
            })
        }
        TYPE_CONTROL_FIRST..=TYPE_CONTROL_LAST => Ok(Datagram::Control),
        other => Err(WireError::UnknownType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classifies_wireguard_messages() {
        let mut init = vec![0u8; HANDSHAKE_INIT_LEN];
        init[0] = 1;
        assert_eq!(classify(&init), Ok(Datagram::HandshakeInit));

        let mut resp = vec![0u8; HANDSHAKE_RESPONSE_LEN];
        resp[0] = 2;
        resp[8..12].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        assert_eq!(
            classify(&resp),
            Ok(Datagram::HandshakeResponse {
                receiver: 0x0102_0304
            })
        );
        assert_eq!(Datagram::peer_slot(0x0102_0304), 0x0001_0203);

        let mut data = vec![0u8; 32 + 1424];
        data[0] = 4;
        data[4] = 7;
        assert_eq!(classify(&data), Ok(Datagram::Data { receiver: 7 }));
        // keepalive: header and tag only
        assert_eq!(classify(&data[..32]), Ok(Datagram::Data { receiver: 7 }));
    }

    #[test]
    fn rejects_bad_envelopes() {
        assert_eq!(classify(&[]), Err(WireError::Empty));
        assert_eq!(classify(&[9, 0, 0, 0]), Err(WireError::UnknownType(9)));
        assert_eq!(classify(&[0x80]), Err(WireError::UnknownType(0x80)));
        assert_eq!(classify(&[0x40, 1]), Ok(Datagram::Control));
        let mut init = vec![0u8; HANDSHAKE_INIT_LEN];
        init[0] = 1;
        init[2] = 1;
        assert_eq!(classify(&init), Err(WireError::Reserved));
        assert_eq!(
            classify(&[4, 0, 0, 0, 1, 2]),
            Err(WireError::Length { kind: 4, len: 6 })
        );
        assert_eq!(
            classify(&[1, 0]),
            Err(WireError::Length { kind: 1, len: 2 })
        );
        // Senders should pad to 16 bytes, but receivers must not require it.
        let mut unpadded = vec![0u8; 33];
        unpadded[0] = 4;
        assert_eq!(classify(&unpadded), Ok(Datagram::Data { receiver: 0 }));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = classify(&bytes);
        }
    }
}
