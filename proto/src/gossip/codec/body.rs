//! The record part of a membership entry (PROTOCOL.md §6.5, §6.13): name (with the
//! hand-over flag in its length byte), endpoint, prefixes, certificate and, after a
//! key rotation, the hand-over. It is what the owner's signature covers by hash.

use super::bytes::{put_addr, put_endpoint, Reader};
use super::Malformed;
use crate::cert::{Certificate, MAX_CERT_LEN};
use crate::gossip::handover::{Handover, HANDOVER_LEN};
use crate::gossip::record::{MAX_NAME_LEN, MAX_PREFIXES};
use ipnet::IpNet;
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Body {
    pub(crate) name: String,
    pub(crate) endpoint: SocketAddr,
    pub(crate) prefixes: Vec<IpNet>,
    pub(crate) certificate: Option<Certificate>,
    pub(crate) handover: Option<Handover>,
}

/// Bit 7 of the name length byte: a hand-over follows the certificate (§6.13).
pub(crate) const HANDOVER_FLAG: u8 = 0x80;

/// Appends the record part of an entry: name, endpoint, prefixes, certificate and,
/// after a rotation, the hand-over.
/// Lengths must have been validated ([`NodeRecord::validate`]); longer values are cut.
pub(crate) fn encode_record_body(
    out: &mut Vec<u8>,
    name: &str,
    endpoint: SocketAddr,
    prefixes: &[IpNet],
    certificate: Option<&Certificate>,
    handover: Option<&Handover>,
) {
    let name = &name.as_bytes()[..name.len().min(MAX_NAME_LEN)];
    let flag = if handover.is_some() { HANDOVER_FLAG } else { 0 };
    out.push(name.len() as u8 | flag);
    out.extend_from_slice(name);
    put_endpoint(out, endpoint);
    let n = prefixes.len().min(MAX_PREFIXES);
    out.push(n as u8);
    for p in &prefixes[..n] {
        put_addr(out, p.addr());
        out.push(p.prefix_len());
    }
    let cert = certificate.map(Certificate::encode).unwrap_or_default();
    let cert = &cert[..cert.len().min(MAX_CERT_LEN)];
    out.extend_from_slice(&(cert.len() as u16).to_le_bytes());
    out.extend_from_slice(cert);
    if let Some(h) = handover {
        h.encode(out);
    }
}

/// Reads one record body from the front of `r`.
pub(super) fn read_record_body(r: &mut Reader<'_>) -> Result<Body, Malformed> {
    let first = r.u8()?;
    let name_len = usize::from(first & !HANDOVER_FLAG);
    if name_len > MAX_NAME_LEN {
        return Err(Malformed);
    }
    let name = std::str::from_utf8(r.take(name_len)?).map_err(|_| Malformed)?;
    let endpoint = r.endpoint()?;
    let n = usize::from(r.u8()?);
    if n > MAX_PREFIXES {
        return Err(Malformed);
    }
    let mut prefixes = Vec::with_capacity(n);
    for _ in 0..n {
        prefixes.push(r.prefix()?);
    }
    let cert_len = usize::from(r.u16()?);
    if cert_len > MAX_CERT_LEN {
        return Err(Malformed);
    }
    let certificate = match cert_len {
        0 => None,
        n => Some(Certificate::decode(r.take(n)?).map_err(|_| Malformed)?),
    };
    let handover = if first & HANDOVER_FLAG != 0 {
        Some(Handover::decode(r.take(HANDOVER_LEN)?).ok_or(Malformed)?)
    } else {
        None
    };
    Ok(Body {
        name: name.to_string(),
        endpoint,
        prefixes,
        certificate,
        handover,
    })
}

/// Decodes a stored record body completely.
pub(crate) fn parse_record_body(bytes: &[u8]) -> Result<Body, Malformed> {
    let mut r = Reader { buf: bytes };
    let body = read_record_body(&mut r)?;
    if !r.buf.is_empty() {
        return Err(Malformed);
    }
    Ok(body)
}
