//! The standalone cluster CA (PROTOCOL.md §8), in the manner of Nebula's certificates:
//! an Ed25519 CA key signs node certificates that bind a node name to its WireGuard
//! public key, the overlay blocks it may announce, whether it may claim a block
//! inside `--range`, and a validity period. The CA certificate is the same format,
//! self-signed. Nodes configured with a CA admit only members whose record carries a
//! certificate of that CA, valid now, for the member's key and name; the node
//! reconciler's authority then confines the member's prefixes to the certificate's
//! blocks. The decoder never panics and bounds every count.

use crate::keys::PublicKey;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// First bytes of an encoded certificate.
pub const MAGIC: [u8; 4] = *b"WNC1";
/// Most blocks one certificate may list.
pub const MAX_BLOCKS: usize = 16;
/// Longest name, as in a gossip record.
pub const MAX_NAME_LEN: usize = 64;
/// Largest encoded certificate (with 16 IPv6 blocks and a 64-byte name).
pub const MAX_CERT_LEN: usize =
    4 + 1 + MAX_NAME_LEN + 32 + 8 + 8 + 1 + 1 + 18 * MAX_BLOCKS + 32 + 64;
const LABEL: &[u8] = b"weftnet cert v1";
/// Flag: the holder may claim a block inside `--range`.
const FLAG_CLAIM: u8 = 1;

/// A decoded certificate. [`Certificate::verify`] checks it; decoding alone checks
/// only the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The node's name (its gossip record's name must be the same).
    pub name: String,
    /// The certified key: a node's WireGuard public key, or for a CA certificate the
    /// CA's Ed25519 public key.
    pub public_key: [u8; 32],
    /// Valid from (Unix seconds, inclusive).
    pub not_before: u64,
    /// Valid until (Unix seconds, inclusive).
    pub not_after: u64,
    /// The holder may claim a block inside `--range` besides `blocks`.
    pub may_claim: bool,
    /// Overlay blocks the holder may announce.
    pub blocks: Vec<IpNet>,
    /// The issuing CA's Ed25519 public key.
    pub issuer: [u8; 32],
    /// The issuer's signature of everything above.
    pub signature: [u8; 64],
}

/// Why a certificate is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The bytes are not a certificate.
    #[error("not a weftnet certificate (bad layout)")]
    Malformed,
    /// Not issued by the configured CA.
    #[error("issued by another CA")]
    WrongCa,
    /// The signature does not verify.
    #[error("the CA signature does not verify")]
    BadSignature,
    /// Not yet valid.
    #[error("not valid before {0} (Unix seconds)")]
    NotYetValid(u64),
    /// Expired.
    #[error("expired at {0} (Unix seconds)")]
    Expired(u64),
    /// For another key.
    #[error("issued for another public key")]
    WrongKey,
    /// For another name.
    #[error("issued for another node name")]
    WrongName,
    /// Name or block list too long.
    #[error("too many blocks or name too long")]
    TooLarge,
}

impl Certificate {
    /// The bytes the issuer signs (everything before the signature, after a label).
    fn signed_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&self.not_before.to_le_bytes());
        out.extend_from_slice(&self.not_after.to_le_bytes());
        out.push(if self.may_claim { FLAG_CLAIM } else { 0 });
        out.push(self.blocks.len() as u8);
        for b in &self.blocks {
            match b.addr() {
                IpAddr::V4(a) => {
                    out.push(4);
                    out.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out.push(6);
                    out.extend_from_slice(&a.octets());
                }
            }
            out.push(b.prefix_len());
        }
        out.extend_from_slice(&self.issuer);
    }

    /// The wire form (PROTOCOL.md §8.1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_CERT_LEN);
        self.signed_part(&mut out);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses the wire form; the whole input must be one certificate.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8], CertError> {
            if r.len() < n {
                return Err(CertError::Malformed);
            }
            let (h, t) = r.split_at(n);
            r = t;
            Ok(h)
        };
        if take(4)? != MAGIC {
            return Err(CertError::Malformed);
        }
        let name_len = usize::from(take(1)?[0]);
        if name_len > MAX_NAME_LEN {
            return Err(CertError::Malformed);
        }
        let name = std::str::from_utf8(take(name_len)?)
            .map_err(|_| CertError::Malformed)?
            .to_string();
        let public_key = arr32(take(32)?);
        let not_before = u64le(take(8)?);
        let not_after = u64le(take(8)?);
        let flags = take(1)?[0];
        if flags & !FLAG_CLAIM != 0 {
            return Err(CertError::Malformed);
        }
        let n = usize::from(take(1)?[0]);
        if n > MAX_BLOCKS {
            return Err(CertError::Malformed);
        }
        let mut blocks = Vec::with_capacity(n);
        for _ in 0..n {
            let ip = match take(1)?[0] {
                4 => {
                    let mut a = [0u8; 4];
                    a.copy_from_slice(take(4)?);
                    IpAddr::V4(Ipv4Addr::from(a))
                }
                6 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(take(16)?);
                    IpAddr::V6(Ipv6Addr::from(a))
                }
                _ => return Err(CertError::Malformed),
            };
            let net = IpNet::new(ip, take(1)?[0]).map_err(|_| CertError::Malformed)?;
            if net.trunc() != net {
                return Err(CertError::Malformed);
            }
            blocks.push(net);
        }
        let issuer = arr32(take(32)?);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(take(64)?);
        if !r.is_empty() {
            return Err(CertError::Malformed);
        }
        Ok(Self {
            name,
            public_key,
            not_before,
            not_after,
            may_claim: flags & FLAG_CLAIM != 0,
            blocks,
            issuer,
            signature,
        })
    }

    /// Whether `ca` issued this certificate, and it is valid at `now_secs` (Unix
    /// seconds).
    pub fn verify(&self, ca: &[u8; 32], now_secs: u64) -> Result<(), CertError> {
        if self.issuer != *ca {
            return Err(CertError::WrongCa);
        }
        if self.name.len() > MAX_NAME_LEN || self.blocks.len() > MAX_BLOCKS {
            return Err(CertError::TooLarge);
        }
        let key = VerifyingKey::from_bytes(ca).map_err(|_| CertError::BadSignature)?;
        let mut msg = LABEL.to_vec();
        self.signed_part(&mut msg);
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&msg, &sig)
            .map_err(|_| CertError::BadSignature)?;
        if now_secs < self.not_before {
            return Err(CertError::NotYetValid(self.not_before));
        }
        if now_secs > self.not_after {
            return Err(CertError::Expired(self.not_after));
        }
        Ok(())
    }

    /// [`Certificate::verify`], and that it was issued for this node key and name.
    pub fn verify_for(
        &self,
        ca: &[u8; 32],
        now_secs: u64,
        key: &PublicKey,
        name: &str,
    ) -> Result<(), CertError> {
        self.verify(ca, now_secs)?;
        if self.public_key != *key.as_bytes() {
            return Err(CertError::WrongKey);
        }
        if self.name != name {
            return Err(CertError::WrongName);
        }
        Ok(())
    }
}

/// A CA: its Ed25519 signing key. `Debug` never shows it.
pub struct Ca {
    key: SigningKey,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(<redacted>)")
    }
}

impl Ca {
    /// The CA with this 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The CA's public key (what nodes trust).
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs a certificate for `public_key` (the issuer is this CA).
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        &self,
        name: &str,
        public_key: [u8; 32],
        blocks: Vec<IpNet>,
        may_claim: bool,
        not_before: u64,
        not_after: u64,
    ) -> Result<Certificate, CertError> {
        if name.len() > MAX_NAME_LEN || blocks.len() > MAX_BLOCKS {
            return Err(CertError::TooLarge);
        }
        let mut cert = Certificate {
            name: name.to_string(),
            public_key,
            not_before,
            not_after,
            may_claim,
            blocks: blocks.iter().map(IpNet::trunc).collect(),
            issuer: self.public_key(),
            signature: [0; 64],
        };
        let mut msg = LABEL.to_vec();
        cert.signed_part(&mut msg);
        cert.signature = self.key.sign(&msg).to_bytes();
        Ok(cert)
    }

    /// The self-signed CA certificate.
    pub fn self_signed(
        &self,
        name: &str,
        not_before: u64,
        not_after: u64,
    ) -> Result<Certificate, CertError> {
        self.issue(
            name,
            self.public_key(),
            Vec::new(),
            false,
            not_before,
            not_after,
        )
    }
}

fn arr32(b: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(b);
    a
}

fn u64le(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn issue_verify_and_refuse() {
        let ca = Ca::from_seed(&[1; 32]);
        let other = Ca::from_seed(&[2; 32]);
        let key = PublicKey::from_bytes([9; 32]);
        let cert = ca
            .issue(
                "node-1",
                *key.as_bytes(),
                vec![net("10.47.1.0/24"), net("fd47:1::/64")],
                true,
                100,
                200,
            )
            .expect("fits");
        let bytes = cert.encode();
        assert!(bytes.len() <= MAX_CERT_LEN);
        let back = Certificate::decode(&bytes).expect("decodes");
        assert_eq!(back, cert);
        let pk = ca.public_key();
        assert_eq!(back.verify_for(&pk, 150, &key, "node-1"), Ok(()));
        assert_eq!(back.verify(&pk, 99), Err(CertError::NotYetValid(100)));
        assert_eq!(back.verify(&pk, 201), Err(CertError::Expired(200)));
        assert_eq!(
            back.verify(&other.public_key(), 150),
            Err(CertError::WrongCa)
        );
        assert_eq!(
            back.verify_for(&pk, 150, &PublicKey::from_bytes([8; 32]), "node-1"),
            Err(CertError::WrongKey)
        );
        assert_eq!(
            back.verify_for(&pk, 150, &key, "node-2"),
            Err(CertError::WrongName)
        );
        // any change to a signed byte breaks the signature
        for at in [4, 6, 40, 60, 75, 80] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            if let Ok(c) = Certificate::decode(&bad) {
                assert!(c.verify(&pk, 150).is_err(), "byte {at}");
            }
        }
        // a forger re-signing with its own key and claiming the CA's issuer field
        let mut forged = other
            .issue(
                "node-1",
                *key.as_bytes(),
                vec![net("0.0.0.0/0")],
                true,
                0,
                u64::MAX,
            )
            .expect("fits");
        forged.issuer = pk;
        assert_eq!(forged.verify(&pk, 150), Err(CertError::BadSignature));
        // layout errors
        assert_eq!(
            Certificate::decode(&bytes[..bytes.len() - 1]),
            Err(CertError::Malformed)
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(Certificate::decode(&trailing), Err(CertError::Malformed));
        assert_eq!(Certificate::decode(b"WNC0"), Err(CertError::Malformed));
        // the self-signed CA certificate verifies under its own key
        let root = ca.self_signed("ca", 0, 1000).expect("fits");
        assert_eq!(root.verify(&pk, 10), Ok(()));
        assert_eq!(root.public_key, pk);
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..500)) {
            let _ = Certificate::decode(&bytes);
        }
    }
}
