//! A node's identity: its WireGuard (X25519) key pair, used to sign what the node says
//! about itself and to authenticate the sender of each gossip datagram
//! (PROTOCOL.md §6.3, §6.5).
//!
//! - **Signatures** are XEdDSA (Signal's specification, "The XEdDSA and VXEdDSA
//!   Signature Schemes", 2016): an Ed25519 signature made with the X25519 private key,
//!   verified with the X25519 public key converted to its Edwards form with sign bit 0.
//!   The member's identity therefore is its WireGuard public key, with no second key
//!   to pin or distribute; the cost is that WireGuard key rotation changes the
//!   identity (a new member). The primitives are `ed25519-dalek` (`hazmat::raw_sign`,
//!   `verify_strict`) and `curve25519-dalek`; this module only converts keys. Nonces
//!   are deterministic, as in RFC 8032 (derived from a hash of the private key and
//!   the message), so no RNG is needed to sign.
//! - **Pair keys**: `BLAKE2s(label || X25519(a, B) || lower key || higher key)`, the
//!   same for both ends of a pair; a datagram MAC under it proves who sent it.

use crate::keys::{PrivateKey, PublicKey};
use blake2::digest::Digest as _;
use blake2::Blake2s256;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::Sha512;
use zeroize::Zeroizing;

/// Length of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// A signature as it travels.
pub type SignatureBytes = [u8; SIGNATURE_LEN];

/// Signs with a node's X25519 private key (XEdDSA). `Debug` never shows the key.
pub struct Signer {
    esk: ExpandedSecretKey,
    verifying: VerifyingKey,
    public: PublicKey,
    secret: PrivateKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.public)
    }
}

impl Signer {
    /// The signer of the node whose WireGuard private key is `key`.
    pub fn new(key: &PrivateKey) -> Self {
        let k = Zeroizing::new(key.to_secret().to_bytes());
        // X25519 clamping, as the Montgomery ladder uses it: the same scalar.
        let mut clamped = Zeroizing::new(*k);
        clamped[0] &= 248;
        clamped[31] &= 127;
        clamped[31] |= 64;
        let a = Scalar::from_bytes_mod_order(*clamped);
        let point = EdwardsPoint::mul_base(&a);
        // XEdDSA: the public Edwards key has sign bit 0; negate the scalar if needed.
        let negative = point.compress().as_bytes()[31] >> 7 == 1;
        let (scalar, point) = if negative { (-a, -point) } else { (a, point) };
        let mut h = Sha512::new();
        h.update(b"weftnet xeddsa nonce key");
        h.update(&k[..]);
        let digest: Zeroizing<[u8; 64]> = Zeroizing::new(h.finalize().into());
        let mut hash_prefix = [0u8; 32];
        hash_prefix.copy_from_slice(&digest[..32]);
        Self {
            esk: ExpandedSecretKey {
                scalar,
                hash_prefix,
            },
            verifying: VerifyingKey::from(point),
            public: key.public_key(),
            secret: key.clone(),
        }
    }

    /// The public key (the node's identity).
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// An XEdDSA signature of `message`.
    pub fn sign(&self, message: &[u8]) -> SignatureBytes {
        raw_sign::<Sha512>(&self.esk, message, &self.verifying).to_bytes()
    }

    /// The key this node shares with `peer` (see the module docs); `None` if `peer`
    /// is a low-order point (no shared secret).
    pub fn pair_key(&self, peer: &PublicKey) -> Option<[u8; 32]> {
        let shared = self.secret.to_secret().diffie_hellman(&peer.to_x25519());
        if !shared.was_contributory() {
            return None;
        }
        let (lo, hi) = if self.public <= *peer {
            (self.public, *peer)
        } else {
            (*peer, self.public)
        };
        let mut h = Blake2s256::new();
        h.update(b"weftnet gossip v3 pair key");
        h.update(shared.as_bytes());
        h.update(lo.as_bytes());
        h.update(hi.as_bytes());
        Some(h.finalize().into())
    }
}

/// Whether `signature` is `public`'s XEdDSA signature of `message`. Low-order keys,
/// non-canonical signatures and keys that are not on the curve never verify.
pub fn verify(public: &PublicKey, message: &[u8], signature: &SignatureBytes) -> bool {
    let Some(point) = MontgomeryPoint(*public.as_bytes()).to_edwards(0) else {
        return false;
    };
    if point.is_small_order() {
        return false;
    }
    let key = VerifyingKey::from(point);
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> PrivateKey {
        PrivateKey::from_bytes([i; 32])
    }

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        for i in 1..=16u8 {
            let s = Signer::new(&key(i));
            let sig = s.sign(b"hello");
            assert!(verify(&key(i).public_key(), b"hello", &sig), "key {i}");
            assert!(!verify(&key(i).public_key(), b"hellO", &sig));
            assert!(!verify(&key(i + 1).public_key(), b"hello", &sig));
            let mut bad = sig;
            bad[3] ^= 1;
            assert!(!verify(&key(i).public_key(), b"hello", &bad));
            // deterministic
            assert_eq!(sig, s.sign(b"hello"));
        }
        // low-order and off-curve keys
        assert!(!verify(&PublicKey::from_bytes([0; 32]), b"x", &[0; 64]));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(!verify(&PublicKey::from_bytes(one), b"x", &[0; 64]));
    }

    #[test]
    fn pair_keys_agree() {
        let a = Signer::new(&key(1));
        let b = Signer::new(&key(2));
        let c = Signer::new(&key(3));
        let ab = a.pair_key(&b.public_key()).expect("contributory");
        assert_eq!(Some(ab), b.pair_key(&a.public_key()));
        assert_ne!(Some(ab), c.pair_key(&a.public_key()));
        assert_eq!(a.pair_key(&PublicKey::from_bytes([0; 32])), None);
    }
}
