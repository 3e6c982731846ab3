//! WireGuard (X25519) keys: generation, derivation and the base64 text form that `wg`
//! and every WireGuard implementation use.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use boringtun::x25519;
use rand_core::{OsRng, RngCore};
use std::fmt;
use zeroize::Zeroizing;

/// Length in bytes of a key and of a cluster secret.
pub const KEY_LEN: usize = 32;

/// Why a key could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not valid base64.
    #[error("not valid base64")]
    Base64,
    /// The decoded key does not have 32 bytes.
    #[error("decodes to {0} bytes, a key has 32")]
    Length(usize),
}

/// The 32 bytes of a base64 key; the decoded buffer is zeroized when dropped (it may
/// hold a private key).
fn decode32(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| KeyError::Base64)?);
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// A node's static private key. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct PrivateKey(x25519::StaticSecret);

impl PrivateKey {
    /// A new random key from the operating system's RNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(&mut bytes[..]);
        Self::from_bytes(*bytes)
    }

    /// A key from its 32 raw bytes (clamped as X25519 requires).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(x25519::StaticSecret::from(bytes))
    }

    /// Parses the base64 form written by `wg genkey` or `weftnet genkey`.
    /// The key (`StaticSecret`) and the decoded bytes are zeroized when dropped.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(decode32(text)?);
        Ok(Self::from_bytes(*bytes))
    }

    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(Zeroizing::new(self.0.to_bytes()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.0).to_bytes())
    }

    /// The boringtun form of this key.
    pub fn to_secret(&self) -> x25519::StaticSecret {
        self.0.clone()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A node's static public key; also its identity in the mesh.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses the base64 form printed by `wg pubkey` or `weftnet pubkey`.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(Self::from_bytes)
    }

    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The boringtun form of this key.
    pub fn to_x25519(&self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// A new random cluster secret in base64 (32 bytes of OS randomness).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// A [`PublicKey`] as its base64 text (as `wg pubkey` prints it), for
/// `#[serde(with = "...")]`.
#[cfg(feature = "serde")]
pub mod base64_serde {
    use super::PublicKey;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// Writes the key as base64 text.
    pub fn serialize<S: Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key.to_base64())
    }

    /// Reads a key from base64 text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let text = String::deserialize(d)?;
        PublicKey::from_base64(&text).map_err(|e| D::Error::custom(format!("public key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 section 6.1 test vector (Alice), in base64 as `wg pubkey` prints it.
    #[test]
    fn rfc7748_alice() {
        let private =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .expect("hex");
        let public =
            hex::decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
                .expect("hex");
        let key = PrivateKey::from_bytes(private.try_into().expect("32 bytes"));
        assert_eq!(key.public_key().as_bytes().as_slice(), public.as_slice());
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let key = PrivateKey::generate();
        let again = PrivateKey::from_base64(&key.to_base64()).expect("parses");
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(PublicKey::from_base64("not base64!"), Err(KeyError::Base64));
        assert_eq!(PublicKey::from_base64("AAAA"), Err(KeyError::Length(3)));
        assert!(format!("{key:?}").contains("redacted"));
    }
}
