//! `weftnet ca init` / `weftnet ca sign`, and loading the CA and node certificate at
//! start (`--ca-file`, `--cert-file`). The formats and checks are in
//! `weftnet_proto::cert` (PROTOCOL.md §8); this module reads and writes files.
//!
//! Files are one line of base64: `ca.key` the CA's 32-byte Ed25519 seed (mode 0600,
//! read through the key-file checks), `ca.crt` and node certificates the encoded
//! certificate.

use crate::cli::{CaInitArgs, CaSignArgs};
use crate::duration::unit_seconds;
use crate::keyfile;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ipnet::IpNet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use weftnet_proto::cert::{Ca, CertError, Certificate};
use weftnet_proto::keys::PublicKey;
use zeroize::Zeroizing;

/// Largest certificate file read.
const MAX_CERT_FILE: u64 = 4096;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `weftnet ca init`.
pub(crate) fn init(args: &CaInitArgs) -> Result<()> {
    let now = now_secs();
    let until = expiry(&args.expires, now)?;
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed[..]);
    let ca = Ca::from_seed(&seed);
    let cert = ca
        .self_signed(&args.name, now, until)
        .map_err(|e| anyhow!("cannot make the CA certificate: {e}: choose a shorter --name"))?;
    let key_path = args.output.join("ca.key");
    let cert_path = args.output.join("ca.crt");
    if cert_path.exists() {
        bail!(
            "{} already exists: remove it first or choose another --output",
            cert_path.display()
        );
    }
    keyfile::emit_secret(&STANDARD.encode(&seed[..]), Some(&key_path))?;
    std::fs::write(&cert_path, format!("{}\n", STANDARD.encode(cert.encode())))
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    eprintln!(
        "wrote {} (keep it secret, off the nodes) and {} (give it to every node with --ca-file)",
        key_path.display(),
        cert_path.display()
    );
    Ok(())
}

/// `weftnet ca sign`.
pub(crate) fn sign(args: &CaSignArgs) -> Result<()> {
    let key_path = args.ca.join("ca.key");
    let text = keyfile::read_secret(&key_path, "CA key")?;
    let seed = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| {
                anyhow!(
                    "CA key file {} is not a CA key: give the directory `weftnet ca init` wrote with --ca",
                    key_path.display()
                )
            })?,
    );
    let ca = Ca::from_seed(&seed);
    let root = read_cert(&args.ca.join("ca.crt"), "CA certificate")?;
    if root.public_key != ca.public_key() {
        bail!(
            "{} does not belong to {}: use the pair `weftnet ca init` wrote",
            args.ca.join("ca.crt").display(),
            key_path.display()
        );
    }
    let key = PublicKey::from_base64(&args.public_key).map_err(|e| {
        anyhow!(
            "--public-key is not a WireGuard public key ({e}): give the output of `weftnet pubkey`"
        )
    })?;
    let blocks = args
        .block
        .iter()
        .map(|b| {
            b.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| anyhow!("--block {b} is not a CIDR prefix, e.g. 10.47.3.0/24"))
        })
        .collect::<Result<Vec<_>>>()?;
    if blocks.is_empty() && !args.allow_claim {
        bail!("the certificate would allow no prefix: give --block CIDR or --allow-claim");
    }
    let now = now_secs();
    let until = expiry(&args.expires, now)?.min(root.not_after);
    let cert = ca
        .issue(
            &args.name,
            *key.as_bytes(),
            blocks,
            args.allow_claim,
            now,
            until,
        )
        .map_err(|e| match e {
            CertError::TooLarge => anyhow!(
                "--name is longer than 64 bytes or more than 16 --block were given: shorten them"
            ),
            e => anyhow!("cannot sign: {e}"),
        })?;
    let text = format!("{}\n", STANDARD.encode(cert.encode()));
    match &args.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Reads a certificate file (one line of base64).
fn read_cert(path: &Path, what: &str) -> Result<Certificate> {
    use std::io::Read as _;
    let p = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow!("cannot read {what} {p}: {e}: give the file `weftnet ca` wrote"))?;
    let mut text = String::new();
    file.take(MAX_CERT_FILE)
        .read_to_string(&mut text)
        .map_err(|e| anyhow!("cannot read {what} {p}: {e}"))?;
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| anyhow!("{what} {p} is not base64: give the file `weftnet ca` wrote"))?;
    Certificate::decode(&bytes).map_err(|_| {
        anyhow!("{what} {p} is not a weftnet certificate: give the file `weftnet ca` wrote")
    })
}

/// At start: the CA's key, from its certificate, checked (one line naming the problem
/// and the fix on any error).
pub(crate) fn load_ca(ca_file: &Path) -> Result<[u8; 32]> {
    let root = read_cert(ca_file, "CA certificate")?;
    let ca = root.public_key;
    match root.verify(&ca, now_secs()) {
        Ok(()) => Ok(ca),
        Err(CertError::Expired(t)) => bail!(
            "CA certificate {} expired at {t} (Unix time): create a new CA and re-sign the nodes",
            ca_file.display()
        ),
        Err(e) => bail!(
            "CA certificate {} is not valid ({e}): give the ca.crt `weftnet ca init` wrote",
            ca_file.display()
        ),
    }
}

/// At start: the CA's key and this node's certificate, checked (one line naming the
/// problem and the fix on any error).
pub(crate) fn load(
    ca_file: &Path,
    cert_file: &Path,
    key: &PublicKey,
    name: &str,
) -> Result<([u8; 32], Certificate)> {
    let now = now_secs();
    let ca = load_ca(ca_file)?;
    let cert = read_cert(cert_file, "node certificate")?;
    let c = cert_file.display();
    match cert.verify_for(&ca, now, key, name) {
        Ok(()) => Ok((ca, cert)),
        Err(CertError::Expired(t)) => {
            bail!("node certificate {c} expired at {t} (Unix time): sign a new one with `weftnet ca sign`")
        }
        Err(CertError::NotYetValid(t)) => {
            bail!("node certificate {c} is not valid before {t} (Unix time): check this host's clock")
        }
        Err(CertError::WrongCa | CertError::BadSignature) => bail!(
            "node certificate {c} was not signed by the CA in {}: sign this node's key with that CA (`weftnet ca sign`)",
            ca_file.display()
        ),
        Err(CertError::WrongKey) => bail!(
            "node certificate {c} was issued for another public key: sign this node's key ({key}) with `weftnet ca sign --public-key`"
        ),
        Err(CertError::WrongName) => bail!(
            "node certificate {c} was issued for the name {:?}, this node is {name:?}: sign it for this name or set --name",
            cert.name
        ),
        Err(e) => bail!("node certificate {c} is not valid: {e}"),
    }
}

/// `--expires`: a duration (`90d`, `12h`, `30m`, `2y`, `3600s`) from `now`, or a date
/// `YYYY-MM-DD` (midnight UTC). Returns Unix seconds.
fn expiry(text: &str, now: u64) -> Result<u64> {
    let t = text.trim();
    let bad =
        || anyhow!("--expires {t} is neither a duration (90d, 12h, 2y) nor a date (2030-12-31)");
    if let Some((y, rest)) = t.split_once('-') {
        let (m, d) = rest.split_once('-').ok_or_else(bad)?;
        let (y, m, d): (i64, u32, u32) = (
            y.parse().map_err(|_| bad())?,
            m.parse().map_err(|_| bad())?,
            d.parse().map_err(|_| bad())?,
        );
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return Err(bad());
        }
        let days = days_from_civil(y, m, d);
        let secs = u64::try_from(days * 86_400).map_err(|_| bad())?;
        if secs <= now {
            bail!("--expires {t} is in the past: give a later date");
        }
        return Ok(secs);
    }
    let units = [
        ("s", 1),
        ("m", 60),
        ("h", 3600),
        ("d", 86_400),
        ("y", 365 * 86_400),
    ];
    let secs = unit_seconds(t, &units).ok_or_else(bad)?;
    if secs == 0 {
        return Err(bad());
    }
    Ok(now.saturating_add(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        assert_eq!(expiry("90d", 1000).ok(), Some(1000 + 90 * 86_400));
        assert_eq!(expiry("12h", 0).ok(), Some(12 * 3600));
        assert_eq!(expiry("2y", 0).ok(), Some(2 * 365 * 86_400));
        assert_eq!(expiry("2030-01-01", 0).ok(), Some(1_893_456_000));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert!(expiry("2020-01-01", 1_700_000_000).is_err());
        for bad in ["", "d", "0d", "5w", "2030-13-01", "soon"] {
            assert!(expiry(bad, 0).is_err(), "{bad}");
        }
    }
}
