//! The gossip envelope (PROTOCOL.md §6.1-6.2): key derivation from cluster secrets,
//! key ids, and XChaCha20-Poly1305 sealing and opening of datagrams, each bound to its
//! receiver.
//!
//! ```text
//! 0x40 | version=2 | key_id[4] | receiver[4] | nonce[24] | ciphertext (plaintext + 16-byte tag)
//! ```
//! The associated data is the 34-byte header followed by the receiver's whole public
//! key (not sent), or 32 zero bytes for a Join to a seed whose key is unknown
//! (`receiver` = `00000000`). A copy delivered to any other node therefore fails.
//! Several secrets may be accepted at once (rotation): datagrams are sealed with the
//! first and opened with whichever key the key id names.

use super::error::GossipError;
use crate::keys::PublicKey;
use blake2::digest::{Digest as _, Mac as _};
use blake2::{Blake2s256, Blake2sMac256};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use std::fmt;
use zeroize::Zeroizing;

/// First byte of every gossip datagram (PROTOCOL.md §1.1).
pub const GOSSIP_TYPE: u8 = 0x40;
/// Gossip protocol version carried in the second byte.
pub(crate) const VERSION: u8 = 3;
/// Bytes before the ciphertext: type, version, key id, receiver, nonce.
pub(crate) const HEADER_LEN: usize = 34;
/// The Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;
/// Envelope bytes added to a plaintext.
pub(crate) const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest gossip datagram anyone may send or accept.
pub const MAX_DATAGRAM: usize = 1200;
/// Length of a nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Where the nonce starts.
const NONCE_AT: usize = HEADER_LEN - NONCE_LEN;
/// The receiver field of a datagram to a receiver whose key is unknown.
pub(crate) const UNKNOWN_RECEIVER: [u8; 4] = [0; 4];

/// Whom a datagram is sealed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver<'a> {
    /// A node whose public key is known.
    Key(&'a PublicKey),
    /// A seed known only by its address (a Join).
    Unknown,
}

impl Receiver<'_> {
    /// The receiver field of the header.
    fn hint(self) -> [u8; 4] {
        match self {
            Self::Key(k) => {
                let b = k.as_bytes();
                [b[0], b[1], b[2], b[3]]
            }
            Self::Unknown => UNKNOWN_RECEIVER,
        }
    }

    /// The 32 bytes appended to the header in the associated data.
    fn aad(self) -> [u8; 32] {
        match self {
            Self::Key(k) => *k.as_bytes(),
            Self::Unknown => [0; 32],
        }
    }
}

/// Header and receiver key: the associated data.
fn associated_data(header: &[u8], to: Receiver<'_>) -> [u8; HEADER_LEN + 32] {
    let mut aad = [0u8; HEADER_LEN + 32];
    aad[..HEADER_LEN].copy_from_slice(&header[..HEADER_LEN]);
    aad[HEADER_LEN..].copy_from_slice(&to.aad());
    aad
}

const KEY_LABEL: &[u8] = b"weftnet gossip v1";
const KEY_ID_LABEL: &[u8] = b"weftnet gossip v1 key id";

/// key = BLAKE2s-256 keyed with the secret (RFC 7693 keyed mode) over the ASCII
/// label "weftnet gossip v1".
pub(crate) fn derive_key(secret: &[u8; 32]) -> [u8; 32] {
    match <Blake2sMac256 as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(KEY_LABEL);
            mac.finalize().into_bytes().into()
        }
        // Not reached: BLAKE2s accepts keys of up to 32 bytes.
        Err(_) => [0; 32],
    }
}

/// key_id = the first 4 bytes of BLAKE2s-256("weftnet gossip v1 key id" || key).
pub(crate) fn key_id(key: &[u8; 32]) -> [u8; 4] {
    let mut h = Blake2s256::new();
    h.update(KEY_ID_LABEL);
    h.update(key);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The AEAD key derived from one cluster secret. `Debug` never shows key material;
/// the cipher zeroizes its key when dropped (chacha20poly1305 does), and the derived
/// key is zeroized as soon as the cipher holds it.
#[derive(Clone)]
pub(crate) struct ClusterKey {
    id: [u8; 4],
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(id={:02x?}, <redacted>)", self.id)
    }
}

impl ClusterKey {
    /// The key and key id of `secret` (see [`derive_key`], [`key_id`]).
    pub(crate) fn derive(secret: &[u8; 32]) -> Self {
        let key = Zeroizing::new(derive_key(secret));
        // `from_slice` borrows: the only copy is the cipher's own.
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&key[..]));
        Self {
            id: key_id(&key),
            cipher,
        }
    }

    #[cfg(test)]
    pub(crate) fn id(&self) -> [u8; 4] {
        self.id
    }

    /// Seals `plaintext` for `to` into a complete datagram.
    pub(crate) fn seal(
        &self,
        to: Receiver<'_>,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(GOSSIP_TYPE);
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&to.hint());
        out.extend_from_slice(nonce);
        out.extend_from_slice(plaintext);
        let aad = associated_data(&out, to);
        let body = &mut out[HEADER_LEN..];
        // Encryption only fails for plaintexts beyond ChaCha20's 256 GiB limit.
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(nonce), &aad, body)
            .unwrap_or_default();
        out.extend_from_slice(&tag);
        out
    }

    fn open_into(
        &self,
        datagram: &[u8],
        to: Receiver<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), GossipError> {
        let (header, rest) = datagram.split_at(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        out.clear();
        out.extend_from_slice(ciphertext);
        self.cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(&header[NONCE_AT..HEADER_LEN]),
                &associated_data(header, to),
                out,
                Tag::from_slice(tag),
            )
            .map_err(|_| GossipError::Authentication)
    }
}

/// The accepted cluster keys; the first one seals.
#[derive(Clone)]
pub(crate) struct Keyring {
    keys: Vec<ClusterKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.keys).finish()
    }
}

impl Keyring {
    /// `None` without secrets.
    pub(crate) fn new(secrets: &[[u8; 32]]) -> Option<Self> {
        let keys: Vec<_> = secrets.iter().map(ClusterKey::derive).collect();
        (!keys.is_empty()).then_some(Self { keys })
    }

    pub(crate) fn sealing(&self) -> &ClusterKey {
        &self.keys[0]
    }

    /// Checks the envelope and decrypts into `out` a datagram sealed for `me` (or for
    /// an unknown receiver). Returns whether the receiver was unknown: such a datagram
    /// may only be a Join (the caller checks).
    pub(crate) fn open(
        &self,
        datagram: &[u8],
        me: &PublicKey,
        out: &mut Vec<u8>,
    ) -> Result<bool, GossipError> {
        if datagram.first() != Some(&GOSSIP_TYPE) {
            return Err(GossipError::Malformed);
        }
        if datagram.len() > MAX_DATAGRAM {
            return Err(GossipError::Oversized);
        }
        if datagram.len() < 2 {
            return Err(GossipError::Malformed);
        }
        if datagram[1] != VERSION {
            return Err(GossipError::Version(datagram[1]));
        }
        if datagram.len() < OVERHEAD {
            return Err(GossipError::Malformed);
        }
        let hint = &datagram[6..10];
        let mine = Receiver::Key(me);
        let candidates = [
            (hint == mine.hint()).then_some((mine, false)),
            (hint == UNKNOWN_RECEIVER).then_some((Receiver::Unknown, true)),
        ];
        if candidates.iter().all(Option::is_none) {
            return Err(GossipError::Misdirected);
        }
        let id = &datagram[2..6];
        let mut result = Err(GossipError::UnknownKey);
        for key in self.keys.iter().filter(|k| k.id[..] == *id) {
            for (to, unknown) in candidates.iter().flatten() {
                result = key.open_into(datagram, *to, out).map(|()| *unknown);
                if result.is_ok() {
                    return result;
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2s_keyed_mode_matches_reference() {
        // BLAKE2 reference KAT (blake2s-kat.txt): key 00..1f, empty input.
        let key: Vec<u8> = (0u8..32).collect();
        let mac = <Blake2sMac256 as KeyInit>::new_from_slice(&key).expect("key");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49"
        );
    }

    #[test]
    fn seal_open_round_trip_and_rotation() {
        let old = [1u8; 32];
        let new = [2u8; 32];
        let me = PublicKey::from_bytes([0xab; 32]);
        let sender = Keyring::new(&[new]).expect("key");
        let receiver = Keyring::new(&[old, new]).expect("keys");
        let d = sender
            .sealing()
            .seal(Receiver::Key(&me), &[9; 24], b"hello");
        assert_eq!(d.len(), OVERHEAD + 5);
        let mut out = Vec::new();
        assert_eq!(receiver.open(&d, &me, &mut out), Ok(false));
        assert_eq!(out, b"hello");

        let stranger = Keyring::new(&[[3u8; 32]]).expect("key");
        assert_eq!(
            stranger.open(&d, &me, &mut out),
            Err(GossipError::UnknownKey)
        );
        let mut forged = d.clone();
        forged[HEADER_LEN] ^= 1;
        assert_eq!(
            receiver.open(&forged, &me, &mut out),
            Err(GossipError::Authentication)
        );
        let mut header = d.clone();
        header[NONCE_AT + 3] ^= 1; // nonce is authenticated too
        assert_eq!(
            receiver.open(&header, &me, &mut out),
            Err(GossipError::Authentication)
        );
        let mut version = d.clone();
        version[1] = 1;
        assert_eq!(
            receiver.open(&version, &me, &mut out),
            Err(GossipError::Version(1))
        );
        assert_eq!(
            receiver.open(&[], &me, &mut out),
            Err(GossipError::Malformed)
        );
        assert_eq!(
            receiver.open(&[0x40, VERSION, 0], &me, &mut out),
            Err(GossipError::Malformed)
        );
        assert_eq!(
            receiver.open(&vec![0x40; MAX_DATAGRAM + 1], &me, &mut out),
            Err(GossipError::Oversized)
        );
        assert!(Keyring::new(&[]).is_none());
    }

    #[test]
    fn bound_to_the_receiver() {
        let ring = Keyring::new(&[[4u8; 32]]).expect("key");
        let me = PublicKey::from_bytes([0xab; 32]);
        let other = PublicKey::from_bytes([0xcd; 32]);
        let mut twin = [0xab; 32];
        twin[31] = 0; // same 4-byte receiver field, another key
        let twin = PublicKey::from_bytes(twin);
        let mut out = Vec::new();
        let d = ring.sealing().seal(Receiver::Key(&me), &[1; 24], b"x");
        assert_eq!(
            ring.open(&d, &other, &mut out),
            Err(GossipError::Misdirected)
        );
        assert_eq!(
            ring.open(&d, &twin, &mut out),
            Err(GossipError::Authentication),
            "the whole key is authenticated"
        );
        let mut rewritten = d.clone();
        rewritten[6..10].copy_from_slice(&UNKNOWN_RECEIVER);
        assert_eq!(
            ring.open(&rewritten, &other, &mut out),
            Err(GossipError::Authentication),
            "a bound datagram cannot pass as one to an unknown receiver"
        );
        let join = ring.sealing().seal(Receiver::Unknown, &[2; 24], b"join");
        assert_eq!(ring.open(&join, &other, &mut out), Ok(true));
        assert_eq!(ring.open(&join, &me, &mut out), Ok(true));
        assert_eq!(out, b"join");
    }

    #[test]
    fn debug_hides_key_material() {
        let text = format!("{:?}", Keyring::new(&[[0xab; 32]]).expect("key"));
        assert!(text.contains("redacted"));
        let key_hex = hex::encode(derive_key(&[0xab; 32]));
        assert!(!text.contains(&key_hex[..8]));
        assert!(!text.to_lowercase().contains("abab"));
    }
}
