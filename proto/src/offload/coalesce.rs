//! Receive offload in userspace: decrypted packets of one receive batch are gathered so
//! that consecutive TCP segments of one flow (same addresses, ports, ack, window and
//! options; next sequence number; equal sizes, the last one possibly shorter) leave as
//! one super-packet with a virtio-net header (`gso_type` TCPv4/TCPv6, `NEEDS_CSUM`)
//! in one TUN write, which the kernel's TCP stack takes whole. Everything else (other
//! protocols, SYN/FIN/RST/URG, IP options, a bad IPv4 header checksum) is written
//! unchanged with a plain header. Order within a flow is kept: items are written in
//! creation order and a segment that cannot join its flow's open item starts a new one.
//!
//! TCP checksums are not verified: every packet here was decrypted, so Poly1305 has
//! already proven it is what the peer sent, and a checksum cannot catch more. Kernel
//! WireGuard marks its decrypted packets `CHECKSUM_UNNECESSARY` for the same reason.

use super::checksum::{finish, fold, pseudo_header, sum};
use super::vnet::{GsoType, VnetHdr, F_NEEDS_CSUM, VNET_HDR_LEN};
use super::PROTO_TCP;

/// Items (super-packets or single packets) held before the caller must flush.
pub const MAX_ITEMS: usize = 64;
/// Largest IP packet a super-packet may become (the IPv4 total-length field).
const MAX_IP_LEN: usize = 65535;
/// Segments per super-packet at most (as the kernel's GRO).
const MAX_SEGMENTS: u16 = 64;

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// Addresses and ports of a TCP flow (IPv4 addresses in the first 4 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    ports: [u8; 4],
}

/// The facts of a TCP segment that may join a super-packet.
struct Segment {
    key: FlowKey,
    iphl: usize,
    hdr_len: usize,
    seq: u32,
    psh: bool,
}

struct Item {
    /// Virtio-net header room, then the (growing) packet.
    buf: Vec<u8>,
    /// The flow and its geometry; `None` for a packet written as is.
    tcp: Option<Open>,
}

struct Open {
    key: FlowKey,
    iphl: usize,
    hdr_len: usize,
    mss: usize,
    next_seq: u32,
    segments: u16,
    /// No further segment may join (a short or PSH segment ended it).
    closed: bool,
}

/// Gathers the packets of one receive batch; see the module documentation.
#[derive(Default)]
pub struct Coalescer {
    items: Vec<Item>,
    pool: Vec<Vec<u8>>,
}

impl Coalescer {
    /// An empty coalescer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`Self::flush`] must run before the next [`Self::push`].
    pub fn is_full(&self) -> bool {
        self.items.len() >= MAX_ITEMS
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds one decrypted IP packet (copied). If the coalescer [`is_full`], the packet
    /// is still taken (as its own item); flush soon.
    ///
    /// [`is_full`]: Self::is_full
    pub fn push(&mut self, packet: &[u8]) {
        let seg = tcp_segment(packet);
        if let Some(seg) = &seg {
            if let Some(item) = self
                .items
                .iter_mut()
                .rev()
                .find(|i| i.tcp.as_ref().is_some_and(|o| o.key == seg.key))
            {
                if append(item, packet, seg) {
                    return;
                }
                if let Some(o) = item.tcp.as_mut() {
                    o.closed = true;
                }
            }
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&[0; VNET_HDR_LEN]);
        buf.extend_from_slice(packet);
        let tcp = seg.map(|s| Open {
            key: s.key,
            iphl: s.iphl,
            hdr_len: s.hdr_len,
            mss: packet.len() - s.hdr_len,
            next_seq: s.seq.wrapping_add((packet.len() - s.hdr_len) as u32),
            segments: 1,
            closed: s.psh,
        });
        self.items.push(Item { buf, tcp });
    }

    /// Hands every waiting item to `write` (virtio-net header first), in order, and
    /// empties the coalescer.
    pub fn flush(&mut self, mut write: impl FnMut(&[u8])) {
        for mut item in self.items.drain(..) {
            let hdr = match &item.tcp {
                Some(o) if o.segments > 1 => finish_super_packet(&mut item.buf, o),
                _ => VnetHdr::PLAIN,
            };
            item.buf[..VNET_HDR_LEN].copy_from_slice(&hdr.encode());
            write(&item.buf);
            self.pool.push(item.buf);
        }
    }
}

/// Appends `packet` to `item` if it continues the item's flow; false if it cannot.
fn append(item: &mut Item, packet: &[u8], seg: &Segment) -> bool {
    let Some(o) = item.tcp.as_mut() else {
        return false;
    };
    let payload = packet.len() - seg.hdr_len;
    let head = &item.buf[VNET_HDR_LEN..VNET_HDR_LEN + o.hdr_len];
    if o.closed
        || seg.seq != o.next_seq
        || seg.hdr_len != o.hdr_len
        || payload > o.mss
        || o.segments >= MAX_SEGMENTS
        || item.buf.len() - VNET_HDR_LEN + payload > MAX_IP_LEN
        || !same_headers(head, packet, o.iphl)
    {
        return false;
    }
    item.buf.extend_from_slice(&packet[seg.hdr_len..]);
    o.next_seq = o.next_seq.wrapping_add(payload as u32);
    o.segments += 1;
    if payload < o.mss || seg.psh {
        o.closed = true;
        // The super-packet carries the PSH of its last segment.
        let flags = VNET_HDR_LEN + o.iphl + 13;
        item.buf[flags] |= packet[o.iphl + 13] & TCP_PSH;
    }
    true
}

/// Whether two segments of one flow agree in every header field a super-packet keeps
/// once: IPv4 TOS, flags and TTL (IPv6 traffic class, flow label, hop limit), and the
/// TCP ack, window, flags apart from PSH, and options.
fn same_headers(a: &[u8], b: &[u8], iphl: usize) -> bool {
    let ip_same = if iphl == 40 {
        a[..4] == b[..4] && a[7] == b[7]
    } else {
        a[1] == b[1] && a[6] & 0xe0 == b[6] & 0xe0 && a[8] == b[8]
    };
    let t = iphl;
    ip_same
        && a[t + 8..t + 12] == b[t + 8..t + 12]
        && a[t + 13] & !TCP_PSH == b[t + 13] & !TCP_PSH
        && a[t + 14..t + 16] == b[t + 14..t + 16]
        && a[t + 20..] == b[t + 20..a.len()]
}

/// The segment facts if `packet` is a TCP segment that may be coalesced: plain IPv4
/// (no options, not a fragment, a valid header checksum) or IPv6 without extension
/// headers, exact lengths, flags ACK (and PSH) only, and a payload.
fn tcp_segment(packet: &[u8]) -> Option<Segment> {
    let first = *packet.first()?;
    let (iphl, key) = match first >> 4 {
        4 => {
            let h = packet.get(..20)?;
            let frag = u16::from_be_bytes([h[6], h[7]]) & 0x3fff;
            if first != 0x45
                || h[9] != PROTO_TCP
                || frag != 0
                || usize::from(u16::from_be_bytes([h[2], h[3]])) != packet.len()
                || finish(sum(h, 0)) != 0
            {
                return None;
            }
            let mut key = FlowKey {
                v6: false,
                src: [0; 16],
                dst: [0; 16],
                ports: [0; 4],
            };
            key.src[..4].copy_from_slice(&h[12..16]);
            key.dst[..4].copy_from_slice(&h[16..20]);
            (20, key)
        }
        6 => {
            let h = packet.get(..40)?;
            if h[6] != PROTO_TCP
                || usize::from(u16::from_be_bytes([h[4], h[5]])) + 40 != packet.len()
            {
                return None;
            }
            let mut key = FlowKey {
                v6: true,
                src: [0; 16],
                dst: [0; 16],
                ports: [0; 4],
            };
            key.src.copy_from_slice(&h[8..24]);
            key.dst.copy_from_slice(&h[24..40]);
            (40, key)
        }
        _ => return None,
    };
    let t = packet.get(iphl..iphl + 20)?;
    let thl = usize::from(t[12] >> 4) * 4;
    let hdr_len = iphl + thl;
    let flags = t[13];
    if thl < 20 || packet.len() <= hdr_len || flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    let mut key = key;
    key.ports.copy_from_slice(&t[..4]);
    Some(Segment {
        key,
        iphl,
        hdr_len,
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        psh: flags & TCP_PSH != 0,
    })
}

/// Sets the super-packet's IP length (and IPv4 header checksum) and leaves the TCP
/// checksum partial (the pseudo-header sum) for the kernel; returns its header.
fn finish_super_packet(buf: &mut [u8], o: &Open) -> VnetHdr {
    let p = &mut buf[VNET_HDR_LEN..];
    let len = p.len();
    if o.iphl == 40 {
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    } else {
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = finish(sum(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let pseudo = pseudo_header(p, PROTO_TCP, len - o.iphl).map_or(0, fold);
    p[o.iphl + 16..o.iphl + 18].copy_from_slice(&pseudo.to_be_bytes());
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if o.iphl == 40 {
            GsoType::TcpV6
        } else {
            GsoType::TcpV4
        },
        ecn: false,
        hdr_len: o.hdr_len as u16,
        gso_size: o.mss as u16,
        csum_start: o.iphl as u16,
        csum_offset: 16,
    }
}

#[cfg(test)]
mod tests {
    use super::super::split::split;
    use super::super::testpkt::{tcp_packet, tcp_valid, Flow};
    use super::*;

    fn body(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_add(seed)).collect()
    }

    fn flushed(c: &mut Coalescer) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        c.flush(|w| v.push(w.to_vec()));
        assert!(c.is_empty());
        v
    }

    /// Splits a coalesced write back into packets, as the kernel would segment it.
    fn resplit(write: &[u8]) -> Vec<Vec<u8>> {
        let mut w = write.to_vec();
        // The kernel computes the partial checksum itself; our splitter recomputes it.
        let mut scratch = vec![0u8; 65536];
        let mut out = Vec::new();
        split(&mut w, &mut scratch, |p| out.push(p.to_vec())).expect("split");
        out
    }

    #[test]
    fn consecutive_segments_become_one_write_that_splits_back() {
        for flow in [Flow::v4(), Flow::v6()] {
            let mut c = Coalescer::new();
            let mut seq = 1;
            let mut originals = Vec::new();
            for i in 0..5u8 {
                let n = if i == 4 { 300 } else { 1000 };
                let flags = if i == 4 { TCP_ACK | TCP_PSH } else { TCP_ACK };
                let p = tcp_packet(&flow, seq, flags, &body(n, i));
                seq += n as u32;
                c.push(&p);
                originals.push(p);
            }
            let w = flushed(&mut c);
            assert_eq!(w.len(), 1);
            let h = VnetHdr::parse(&w[0]).expect("hdr");
            assert_eq!(h.gso_size, 1000);
            assert_eq!(h.flags, F_NEEDS_CSUM);
            assert_eq!(
                h.gso_type,
                if flow.v6 {
                    GsoType::TcpV6
                } else {
                    GsoType::TcpV4
                }
            );
            let back = resplit(&w[0]);
            assert_eq!(back.len(), 5);
            for (b, o) in back.iter().zip(&originals) {
                let (tb, to) = (tcp_valid(b).expect("valid"), tcp_valid(o).expect("valid"));
                assert_eq!(
                    (tb.seq, tb.flags, &tb.payload),
                    (to.seq, to.flags, &to.payload)
                );
            }
        }
    }

    #[test]
    fn single_segments_and_other_protocols_pass_unchanged() {
        let flow = Flow::v4();
        let mut c = Coalescer::new();
        let tcp = tcp_packet(&flow, 1, TCP_ACK, &body(100, 0));
        let udp = [
            0x45u8, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2, 0,
            8, 0, 0,
        ];
        c.push(&tcp);
        c.push(&udp);
        let w = flushed(&mut c);
        assert_eq!(w.len(), 2);
        for (write, packet) in w.iter().zip([&tcp[..], &udp[..]]) {
            assert_eq!(VnetHdr::parse(write), Some(VnetHdr::PLAIN));
            assert_eq!(&write[VNET_HDR_LEN..], packet);
        }
    }

    #[test]
    fn gaps_flags_and_bad_header_checksums_start_new_items() {
        let flow = Flow::v4();
        let mut c = Coalescer::new();
        c.push(&tcp_packet(&flow, 1, TCP_ACK, &body(500, 0)));
        // A gap in sequence numbers.
        c.push(&tcp_packet(&flow, 1000, TCP_ACK, &body(500, 0)));
        // FIN is never coalesced.
        c.push(&tcp_packet(&flow, 1500, TCP_ACK | 0x01, &body(500, 0)));
        // A corrupt IPv4 header checksum passes unchanged (the kernel drops it).
        let mut bad = tcp_packet(&flow, 2000, TCP_ACK, &body(500, 0));
        bad[10] ^= 0xff;
        c.push(&bad);
        // A larger segment after a smaller one cannot join.
        c.push(&tcp_packet(&flow, 2500, TCP_ACK, &body(100, 0)));
        c.push(&tcp_packet(&flow, 2600, TCP_ACK, &body(500, 0)));
        let w = flushed(&mut c);
        assert_eq!(w.len(), 6);
        assert!(w.iter().all(|x| VnetHdr::parse(x) == Some(VnetHdr::PLAIN)));
        assert_eq!(&w[3][VNET_HDR_LEN..], &bad[..]);
    }

    #[test]
    fn tcp_checksums_are_not_verified_again() {
        // Decrypted, so authenticated: a segment whose TCP checksum does not match
        // still joins, as kernel WireGuard passes it up unverified.
        let flow = Flow::v4();
        let mut c = Coalescer::new();
        c.push(&tcp_packet(&flow, 1, TCP_ACK, &body(500, 0)));
        let mut odd = tcp_packet(&flow, 501, TCP_ACK, &body(500, 1));
        odd[40] ^= 0xff;
        c.push(&odd);
        let w = flushed(&mut c);
        assert_eq!(w.len(), 1);
        assert_eq!(resplit(&w[0]).len(), 2);
    }

    #[test]
    fn interleaved_flows_coalesce_separately_in_order() {
        let a = Flow::v4();
        let mut b = Flow::v4();
        b.sport = 40001;
        let mut c = Coalescer::new();
        for i in 0..4u32 {
            c.push(&tcp_packet(&a, 1 + i * 100, TCP_ACK, &body(100, 1)));
            c.push(&tcp_packet(&b, 1 + i * 100, TCP_ACK, &body(100, 2)));
        }
        let w = flushed(&mut c);
        assert_eq!(w.len(), 2);
        for x in &w {
            assert_eq!(resplit(x).len(), 4);
        }
    }

    #[test]
    fn psh_closes_and_differing_options_do_not_join() {
        let mut flow = Flow::v4();
        flow.options = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let mut c = Coalescer::new();
        c.push(&tcp_packet(&flow, 1, TCP_ACK | TCP_PSH, &body(100, 0)));
        c.push(&tcp_packet(&flow, 101, TCP_ACK, &body(100, 0)));
        flow.options[7] = 9;
        c.push(&tcp_packet(&flow, 201, TCP_ACK, &body(100, 0)));
        assert_eq!(flushed(&mut c).len(), 3);
    }

    #[test]
    fn size_limit_is_kept() {
        let flow = Flow::v4();
        let mut c = Coalescer::new();
        for i in 0..60u32 {
            c.push(&tcp_packet(&flow, 1 + i * 1400, TCP_ACK, &body(1400, 0)));
        }
        let w = flushed(&mut c);
        assert!(w.len() >= 2);
        assert!(w.iter().all(|x| x.len() - VNET_HDR_LEN <= MAX_IP_LEN));
        let total: usize = w.iter().map(|x| resplit(x).len()).sum();
        assert_eq!(total, 60);
    }

    proptest::proptest! {
        #[test]
        fn any_packets_flush_back_to_the_same_segments(
            sizes in proptest::collection::vec(1usize..1500, 1..40),
            v6: bool,
        ) {
            let flow = if v6 { Flow::v6() } else { Flow::v4() };
            let mut c = Coalescer::new();
            let mut seq = 7u32;
            let mut want = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let p = tcp_packet(&flow, seq, TCP_ACK, &body(*n, i as u8));
                seq = seq.wrapping_add(*n as u32);
                want.push(p.clone());
                c.push(&p);
            }
            let mut got = Vec::new();
            for w in flushed(&mut c) {
                got.extend(resplit(&w));
            }
            proptest::prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                let (g, w) = (tcp_valid(g).expect("valid"), tcp_valid(w).expect("valid"));
                proptest::prop_assert_eq!((g.seq, g.flags, g.payload), (w.seq, w.flags, w.payload));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(packets in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..120), 0..10)) {
            let mut c = Coalescer::new();
            for p in &packets {
                c.push(p);
            }
            c.flush(|w| assert!(w.len() >= VNET_HDR_LEN));
        }
    }
}
