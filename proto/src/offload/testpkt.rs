//! Test helpers: TCP packets built field by field, and a checker that verifies their
//! lengths and checksums the way a receiving stack would.

use super::checksum::{finish, pseudo_header, sum};
use super::vnet::{VnetHdr, VNET_HDR_LEN};
use super::PROTO_TCP;

/// A TCP flow's addressing and the TCP options every packet carries.
pub(crate) struct Flow {
    pub(crate) v6: bool,
    pub(crate) src: [u8; 16],
    pub(crate) dst: [u8; 16],
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) options: Vec<u8>,
}

impl Flow {
    pub(crate) fn v4() -> Self {
        let mut src = [0; 16];
        let mut dst = [0; 16];
        src[..4].copy_from_slice(&[10, 47, 1, 1]);
        dst[..4].copy_from_slice(&[10, 47, 2, 1]);
        Self {
            v6: false,
            src,
            dst,
            sport: 40000,
            dport: 5201,
            options: Vec::new(),
        }
    }

    pub(crate) fn v6() -> Self {
        let mut f = Self::v4();
        f.v6 = true;
        f.src = [0xfd, 0x47, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        f.dst = [0xfd, 0x47, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        f
    }
}

/// A TCP packet (IPv4 identification 7, ack 99, window 512) with valid checksums.
pub(crate) fn tcp_packet(flow: &Flow, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let iphl = if flow.v6 { 40 } else { 20 };
    let thl = 20 + flow.options.len();
    assert_eq!(thl % 4, 0);
    let len = iphl + thl + payload.len();
    let mut p = vec![0u8; len];
    if flow.v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = PROTO_TCP;
        p[7] = 64;
        p[8..24].copy_from_slice(&flow.src);
        p[24..40].copy_from_slice(&flow.dst);
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[4..6].copy_from_slice(&7u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&flow.src[..4]);
        p[16..20].copy_from_slice(&flow.dst[..4]);
        let c = finish(sum(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let t = iphl;
    p[t..t + 2].copy_from_slice(&flow.sport.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&flow.dport.to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&99u32.to_be_bytes());
    p[t + 12] = ((thl / 4) as u8) << 4;
    p[t + 13] = flags;
    p[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
    p[t + 20..t + thl].copy_from_slice(&flow.options);
    p[t + thl..].copy_from_slice(payload);
    let pseudo = pseudo_header(&p, PROTO_TCP, len - iphl).expect("pseudo");
    let c = finish(sum(&p[t..], pseudo));
    p[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
    p
}

/// `hdr` followed by `packet`.
pub(crate) fn with_vnet(hdr: &VnetHdr, packet: &[u8]) -> Vec<u8> {
    let mut v = hdr.encode().to_vec();
    v.extend_from_slice(packet);
    assert_eq!(v.len(), VNET_HDR_LEN + packet.len());
    v
}

/// What a checked TCP packet carries.
pub(crate) struct Tcp {
    pub(crate) seq: u32,
    pub(crate) flags: u8,
    pub(crate) options: Vec<u8>,
    pub(crate) payload: Vec<u8>,
}

/// The TCP packet's fields if its IP length and both checksums are right.
pub(crate) fn tcp_valid(p: &[u8]) -> Option<Tcp> {
    let iphl = match p.first()? >> 4 {
        4 => {
            if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len()
                || finish(sum(&p[..20], 0)) != 0
            {
                return None;
            }
            20
        }
        6 => {
            if usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len() {
                return None;
            }
            40
        }
        _ => return None,
    };
    let pseudo = pseudo_header(p, PROTO_TCP, p.len() - iphl)?;
    if finish(sum(&p[iphl..], pseudo)) != 0 {
        return None;
    }
    let thl = usize::from(p[iphl + 12] >> 4) * 4;
    Some(Tcp {
        seq: u32::from_be_bytes(p[iphl + 4..iphl + 8].try_into().ok()?),
        flags: p[iphl + 13],
        options: p[iphl + 20..iphl + thl].to_vec(),
        payload: p[iphl + thl..].to_vec(),
    })
}
