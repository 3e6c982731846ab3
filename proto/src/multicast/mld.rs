//! MLD (RFC 2710, 3810): parsing of the IPv6 packets the kernel writes to the TUN
//! (MLDv1 report 131 and done 132, MLDv2 report 143; queries 130 for completeness),
//! and the MLDv2 query the daemon injects as the link's querier.
//!
//! MLD messages are ICMPv6 inside a packet whose extension header chain starts with a
//! Hop-by-Hop header carrying Router Alert. Parsing walks that chain (Hop-by-Hop only
//! first, then Destination Options, Routing, Fragment and AH headers, at most
//! [`MAX_EXTENSION_HEADERS`]), verifies the ICMPv6 checksum over the pseudo-header and
//! every length field before reading, and never allocates more than the packet holds.
//! The addressing (link-local source, hop limit 1, Router Alert) is not enforced: on
//! the TUN the only sender is this host's kernel.

use super::{checksum, query, take, GroupRecord, Message, ParseError, RecordType};
use super::{decode_code16, encode_code16};
use std::net::Ipv6Addr;
use std::time::Duration;

/// IPv6 next-header value of ICMPv6.
pub const ICMPV6: u8 = 58;
/// All-nodes group, destination of general queries.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All MLDv2-capable routers, destination of MLDv2 reports.
pub const V2_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);

/// Multicast listener query.
pub const TYPE_QUERY: u8 = 130;
/// MLDv1 report.
pub const TYPE_V1_REPORT: u8 = 131;
/// MLDv1 done.
pub const TYPE_V1_DONE: u8 = 132;
/// MLDv2 report.
pub const TYPE_V2_REPORT: u8 = 143;

/// Longest extension header chain walked before giving up.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A parsed MLD message.
pub type MldMessage = Message<Ipv6Addr>;

/// Where the upper-layer header of an IPv6 packet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpperLayer {
    /// The upper-layer protocol (next header after the extension headers).
    pub(crate) protocol: u8,
    /// Its offset in the packet.
    pub(crate) offset: usize,
    /// The end of the packet (40 + payload length).
    pub(crate) end: usize,
    /// A Fragment header was present.
    pub(crate) fragment: bool,
    /// A Fragment header with a non-zero offset: the bytes at `offset` are the middle
    /// of a payload, not a header.
    pub(crate) later_fragment: bool,
}

/// Checks the fixed IPv6 header and walks the extension headers.
pub(crate) fn upper_layer(packet: &[u8]) -> Result<UpperLayer, ParseError> {
    let h: [u8; 40] = take(packet, 0)?;
    if h[0] >> 4 != 6 {
        return Err(ParseError::BadIpHeader);
    }
    let end = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
    if end > packet.len() {
        return Err(ParseError::BadIpHeader);
    }
    let mut next = h[6];
    let mut at = 40usize;
    let mut fragment = false;
    for i in 0..=MAX_EXTENSION_HEADERS {
        let len = match next {
            // Hop-by-Hop must come first (RFC 8200 §4.1).
            0 if i > 0 => return Err(ParseError::BadIpHeader),
            0 | 43 | 60 => {
                let [_, words] = take::<2>(&packet[..end], at)?;
                (usize::from(words) + 1) * 8
            }
            51 => {
                let [_, words] = take::<2>(&packet[..end], at)?;
                (usize::from(words) + 2) * 4
            }
            44 => {
                let [_, _, o0, o1] = take::<4>(&packet[..end], at)?;
                fragment = true;
                if u16::from_be_bytes([o0, o1]) & 0xfff8 != 0 {
                    return Ok(UpperLayer {
                        protocol: packet[at],
                        offset: at + 8,
                        end,
                        fragment,
                        later_fragment: true,
                    });
                }
                8
            }
            protocol => {
                return Ok(UpperLayer {
                    protocol,
                    offset: at,
                    end,
                    fragment,
                    later_fragment: false,
                })
            }
        };
        next = packet[at];
        at += len;
        if at > end {
            return Err(ParseError::Truncated);
        }
    }
    Err(ParseError::BadIpHeader)
}

/// Parses an IPv6 packet carrying MLD.
pub fn parse(packet: &[u8]) -> Result<MldMessage, ParseError> {
    let upper = upper_layer(packet)?;
    if upper.protocol != ICMPV6 || upper.later_fragment {
        return Err(ParseError::NotControl);
    }
    if upper.fragment {
        return Err(ParseError::Fragment);
    }
    let msg = packet
        .get(upper.offset..upper.end)
        .ok_or(ParseError::Truncated)?;
    let [kind] = take::<1>(msg, 0)?;
    if !matches!(
        kind,
        TYPE_QUERY | TYPE_V1_REPORT | TYPE_V1_DONE | TYPE_V2_REPORT
    ) {
        return Err(ParseError::NotControl);
    }
    let len = u32::try_from(msg.len()).map_err(|_| ParseError::BadIpHeader)?;
    let sum = pseudo_header(packet.get(8..40).ok_or(ParseError::Truncated)?, len);
    if checksum::finish(checksum::add(sum, msg)) != 0 {
        return Err(ParseError::Checksum);
    }
    match kind {
        TYPE_QUERY => parse_query(msg),
        TYPE_V1_REPORT | TYPE_V1_DONE => {
            let group = Ipv6Addr::from(take::<16>(msg, 8)?);
            if !group.is_multicast() {
                return Err(ParseError::BadGroup);
            }
            Ok(if kind == TYPE_V1_DONE {
                Message::Leave { group }
            } else {
                Message::Report {
                    version: 1,
                    records: vec![GroupRecord {
                        group,
                        mode: RecordType::ModeIsExclude,
                        sources: Vec::new(),
                    }],
                }
            })
        }
        _ => parse_v2_report(msg),
    }
}

/// Queries: 24 bytes is MLDv1, 28 or more is MLDv2, anything else is ignored
/// (RFC 3810 §8.1).
fn parse_query(msg: &[u8]) -> Result<MldMessage, ParseError> {
    let [c0, c1] = take::<2>(msg, 4)?;
    let group = query::group_field::<16, Ipv6Addr>(msg)?;
    if msg.len() == 24 {
        let delay = Duration::from_millis(u64::from(u16::from_be_bytes([c0, c1])));
        return Ok(query::legacy(1, delay, group));
    }
    query::parse_current::<16, Ipv6Addr>(msg, 2, group)
}

/// MLDv2 report: `type | code | checksum | reserved[2] | n u16 | n × record`,
/// record = `type | aux_words | nsrc u16 | group[16] | nsrc × source[16] | aux`.
fn parse_v2_report(msg: &[u8]) -> Result<MldMessage, ParseError> {
    super::parse_report_records::<16, Ipv6Addr>(msg, 2)
}

/// The fields of an MLDv2 query to build.
pub type QueryParams = super::QueryParams<Ipv6Addr>;

/// Builds an IPv6 packet with an MLDv2 query: hop limit 1, a Hop-by-Hop header with
/// Router Alert (MLD) and PadN, correct ICMPv6 checksum, no sources (76 bytes).
pub fn build_query(q: &QueryParams) -> Vec<u8> {
    query::build(q)
}

/// The ICMPv6 checksum's running sum over the pseudo-header (RFC 8200 §8.1):
/// `addresses` is source and destination as in the IPv6 header (32 bytes), `len` the
/// ICMPv6 message length.
fn pseudo_header(addresses: &[u8], len: u32) -> u64 {
    let sum = checksum::add(0, addresses);
    let sum = checksum::add(sum, &len.to_be_bytes());
    checksum::add(sum, &[0, 0, 0, ICMPV6])
}

/// MLDv2's side of the shared query layout: 16-byte addresses, the group at offset 8,
/// a 16-bit max response code in milliseconds at offset 4, the ICMPv6 pseudo-header,
/// and an IPv6 header with a Hop-by-Hop header carrying Router Alert.
impl query::Family<16> for Ipv6Addr {
    const TYPE_QUERY: u8 = TYPE_QUERY;
    const ALL_HOSTS: Self = ALL_NODES;
    const UNSPECIFIED: Self = Ipv6Addr::UNSPECIFIED;
    const GROUP_AT: usize = 8;

    fn bytes(self) -> [u8; 16] {
        self.octets()
    }

    fn put_max_response(msg: &mut [u8], max_response: Duration) {
        let ms = u32::try_from(max_response.as_millis()).unwrap_or(u32::MAX);
        msg[4..6].copy_from_slice(&encode_code16(ms).to_be_bytes());
    }

    fn max_response(msg: &[u8]) -> Result<Duration, ParseError> {
        let [c0, c1] = take::<2>(msg, 4)?;
        let ms = decode_code16(u16::from_be_bytes([c0, c1]));
        Ok(Duration::from_millis(u64::from(ms)))
    }

    fn pseudo_header(src: Self, dst: Self, len: usize) -> u64 {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        pseudo_header(&[src.octets(), dst.octets()].concat(), len)
    }

    fn ip_header(src: Self, dst: Self, len: usize) -> Vec<u8> {
        let mut h = vec![0u8; 48];
        h[0] = 0x60;
        let payload = u16::try_from(8 + len).unwrap_or(u16::MAX);
        h[4..6].copy_from_slice(&payload.to_be_bytes());
        h[6] = 0; // Hop-by-Hop
        h[7] = 1; // hop limit
        h[8..24].copy_from_slice(&src.octets());
        h[24..40].copy_from_slice(&dst.octets());
        // Hop-by-Hop: next header ICMPv6, length 0 (8 bytes), Router Alert 0 (MLD), PadN.
        h[40..48].copy_from_slice(&[ICMPV6, 0, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00]);
        h
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::multicast::igmp::tests::hex;
    use proptest::prelude::*;

    /// Packets captured from Linux 6.18 writing to a TUN device (`mc0`, fd47::1/64,
    /// link-local fe80::379b:312c:ead6:10a8 or, for the MLDv1 ones,
    /// fe80::48de:6638:c201:355f).
    pub(crate) mod vectors {
        /// MLDv2 report: CHANGE_TO_EXCLUDE({}) for ff15::1234 (a join).
        pub(crate) const V2_JOIN: &str = "6000000000240001fe80000000000000379b312cead610a8ff0200000000000000000000000000163a000502000001008f00f97d0000000104000000ff150000000000000000000000001234";
        /// MLDv2 report: CHANGE_TO_INCLUDE({}) for ff15::1234 (a leave).
        pub(crate) const V2_LEAVE: &str = "6000000000240001fe80000000000000379b312cead610a8ff0200000000000000000000000000163a000502000001008f00fa7d0000000103000000ff150000000000000000000000001234";
        /// MLDv1 report for ff15::1234 (`force_mld_version=1`).
        pub(crate) const V1_JOIN: &str = "6000000000200001fe8000000000000048de6638c201355fff1500000000000000000000000012343a000502000001008300b52000000000ff150000000000000000000000001234";
        /// MLDv1 done for ff15::1234, sent to ff02::2.
        pub(crate) const V1_DONE: &str = "6000000000200001fe8000000000000048de6638c201355fff0200000000000000000000000000023a000502000001008400c66500000000ff150000000000000000000000001234";
        /// Router solicitation to ff02::2 (neighbor discovery, not MLD).
        pub(crate) const ROUTER_SOLICIT: &str = "6000000000083afffe80000000000000379b312cead610a8ff020000000000000000000000000002850018f100000000";
        /// [`super::super::build_query`]: general query from fe80::1, max response 10 s,
        /// QRV 2, QQI 125 s (checked against Linux: it answers with `V2_CURRENT`).
        pub(crate) const GENERAL_QUERY: &str = "6000000000240001fe800000000000000000000000000001ff0200000000000000000000000000013a00050200000100820056962710000000000000000000000000000000000000027d0000";
        /// MLDv2 report answering `GENERAL_QUERY` written to the TUN (link-local
        /// fe80::da92:f0fa:6374:f75): MODE_IS_EXCLUDE({}) for ff15::1234.
        pub(crate) const V2_CURRENT: &str = "6000000000240001fe80000000000000da92f0fa63740f75ff0200000000000000000000000000163a000502000001008f00214d0000000102000000ff150000000000000000000000001234";
    }

    fn g(s: &str) -> Ipv6Addr {
        s.parse().expect("addr")
    }

    fn rec(group: &str, mode: RecordType, sources: &[&str]) -> GroupRecord<Ipv6Addr> {
        GroupRecord {
            group: g(group),
            mode,
            sources: sources.iter().map(|s| g(s)).collect(),
        }
    }

    fn report(version: u8, records: Vec<GroupRecord<Ipv6Addr>>) -> MldMessage {
        Message::Report { version, records }
    }

    #[test]
    fn kernel_messages() {
        use vectors::*;
        assert_eq!(
            parse(&hex(V2_JOIN)),
            Ok(report(
                2,
                vec![rec("ff15::1234", RecordType::ChangeToExclude, &[])]
            ))
        );
        assert_eq!(
            parse(&hex(V2_LEAVE)),
            Ok(report(
                2,
                vec![rec("ff15::1234", RecordType::ChangeToInclude, &[])]
            ))
        );
        assert_eq!(
            parse(&hex(V2_CURRENT)),
            Ok(report(
                2,
                vec![rec("ff15::1234", RecordType::ModeIsExclude, &[])]
            ))
        );
        assert_eq!(
            parse(&hex(V1_JOIN)),
            Ok(report(
                1,
                vec![rec("ff15::1234", RecordType::ModeIsExclude, &[])]
            ))
        );
        assert_eq!(
            parse(&hex(V1_DONE)),
            Ok(Message::Leave {
                group: g("ff15::1234")
            })
        );
        assert_eq!(parse(&hex(ROUTER_SOLICIT)), Err(ParseError::NotControl));
    }

    /// Builds an IPv6 packet from `src` to ff02::16 with a Hop-by-Hop header (Router
    /// Alert) around the ICMPv6 message `msg`, fixing its checksum.
    pub(crate) fn wrap(msg: &[u8]) -> Vec<u8> {
        let src = g("fe80::1");
        let dst = V2_ROUTERS;
        let mut m = msg.to_vec();
        m[2..4].fill(0);
        let len = u32::try_from(m.len()).expect("small");
        let mut sum = checksum::add(0, &src.octets());
        sum = checksum::add(sum, &dst.octets());
        sum = checksum::add(sum, &len.to_be_bytes());
        sum = checksum::add(sum, &[0, 0, 0, ICMPV6]);
        let c = checksum::finish(checksum::add(sum, &m));
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 1];
        let payload = u16::try_from(8 + m.len()).expect("small");
        p[4..6].copy_from_slice(&payload.to_be_bytes());
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[ICMPV6, 0, 5, 2, 0, 0, 1, 0]);
        p.extend_from_slice(&m);
        p
    }

    #[test]
    fn v2_report_every_record_type_with_aux_data() {
        let mut m = vec![143, 0, 0, 0, 0, 0, 0, 8];
        for t in 1..=6u8 {
            m.extend_from_slice(&[t, 1, 0, 1]);
            m.extend_from_slice(&g(&format!("ff0e::{t}")).octets());
            m.extend_from_slice(&g("fd47::9").octets());
            m.extend_from_slice(&[0xaa; 4]);
        }
        m.extend_from_slice(&[9, 0, 0, 0]); // unknown type: skipped
        m.extend_from_slice(&g("ff0e::9").octets());
        m.extend_from_slice(&[1, 0, 0, 0]); // unicast group: skipped
        m.extend_from_slice(&g("fd47::1").octets());
        let Ok(Message::Report { version, records }) = parse(&wrap(&m)) else {
            panic!("not a report");
        };
        assert_eq!(version, 2);
        assert_eq!(records.len(), 6);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(usize::from(r.mode.code()), i + 1);
            assert_eq!(r.group, g(&format!("ff0e::{}", i + 1)));
            assert_eq!(r.sources, vec![g("fd47::9")]);
        }
    }

    #[test]
    fn queries_of_each_version() {
        let q = |m: &[u8]| match parse(&wrap(m)) {
            Ok(Message::Query(q)) => q,
            other => panic!("{other:?}"),
        };
        let mut v1 = vec![130, 0, 0, 0, 0x27, 0x10, 0, 0];
        v1.extend_from_slice(&[0; 16]);
        let v1 = q(&v1);
        assert_eq!(v1.version, 1);
        assert_eq!(v1.max_response, Duration::from_secs(10));
        assert_eq!(v1.group, None);

        let mut v2 = vec![130, 0, 0, 0, 0x80, 0x00, 0, 0];
        v2.extend_from_slice(&g("ff15::1").octets());
        v2.extend_from_slice(&[0x0b, 60, 0, 1]);
        v2.extend_from_slice(&g("fd47::2").octets());
        let v2 = q(&v2);
        assert_eq!(v2.version, 2);
        assert_eq!(v2.max_response, Duration::from_millis(0x1000 << 3));
        assert_eq!(v2.group, Some(g("ff15::1")));
        assert!(v2.suppress_router_processing);
        assert_eq!(v2.robustness, 3);
        assert_eq!(v2.query_interval, Some(Duration::from_secs(60)));
        assert_eq!(v2.sources, vec![g("fd47::2")]);

        let mut bad = vec![130, 0, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(&[0; 18]);
        assert_eq!(parse(&wrap(&bad)), Err(ParseError::BadLength));
    }

    #[test]
    fn built_query_parses_back() {
        let p = build_query(&QueryParams {
            src: g("fe80::1"),
            group: None,
            max_response: Duration::from_secs(10),
            robustness: 2,
            query_interval: Duration::from_secs(125),
        });
        assert_eq!(hex::encode(&p), vectors::GENERAL_QUERY);
        let Ok(Message::Query(q)) = parse(&p) else {
            panic!("query does not parse");
        };
        assert_eq!(q.version, 2);
        assert_eq!(q.group, None);
        assert_eq!(q.max_response, Duration::from_secs(10));
        assert_eq!(q.robustness, 2);
        assert_eq!(q.query_interval, Some(Duration::from_secs(125)));
        assert_eq!(upper_layer(&p).map(|u| u.offset), Ok(48));

        let p = build_query(&QueryParams {
            src: g("fe80::1"),
            group: Some(g("ff15::1234")),
            max_response: Duration::from_secs(100),
            robustness: 2,
            query_interval: Duration::from_secs(125),
        });
        assert_eq!(&p[24..40], &g("ff15::1234").octets());
        let Ok(Message::Query(q)) = parse(&p) else {
            panic!("query does not parse");
        };
        assert_eq!(q.group, Some(g("ff15::1234")));
        // 100 s needs the exponential form (mantissa 0x86a, exponent 1)
        assert_eq!(&p[52..54], &[0x98, 0x6a]);
        assert_eq!(q.max_response, Duration::from_secs(100));
    }

    #[test]
    fn rejects_malformed() {
        let good = hex(vectors::V2_JOIN);
        assert_eq!(parse(&[]), Err(ParseError::Truncated));
        assert_eq!(parse(&good[..39]), Err(ParseError::Truncated));
        assert_eq!(parse(&good[..70]), Err(ParseError::BadIpHeader));
        let mut p = good.clone();
        p[0] = 0x40;
        assert_eq!(parse(&p), Err(ParseError::BadIpHeader));
        let mut p = good.clone();
        p[75] = 0x35; // group changed: checksum fails
        assert_eq!(parse(&p), Err(ParseError::Checksum));
        let mut p = good.clone();
        p[8] ^= 1; // source changed: the pseudo-header checksum fails
        assert_eq!(parse(&p), Err(ParseError::Checksum));
        let mut p = good.clone();
        p[41] = 200; // Hop-by-Hop longer than the packet
        assert_eq!(parse(&p), Err(ParseError::Truncated));
        let mut p = good.clone();
        p[40] = 0; // a second Hop-by-Hop header
        assert_eq!(parse(&p), Err(ParseError::BadIpHeader));
        let mut p = good.clone();
        p[40] = 17; // UDP, not ICMPv6
        assert_eq!(parse(&p), Err(ParseError::NotControl));

        // too many records, records beyond the message, sources beyond the message
        let m = [143, 0, 0, 0, 0, 0, 0xff, 0xff];
        assert_eq!(parse(&wrap(&m)), Err(ParseError::TooMany));
        let mut m = vec![143, 0, 0, 0, 0, 0, 0, 2, 4, 0, 0, 0];
        m.extend_from_slice(&g("ff15::1").octets());
        assert_eq!(parse(&wrap(&m)), Err(ParseError::Truncated));
        let mut m = vec![143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 2];
        m.extend_from_slice(&g("ff15::1").octets());
        m.extend_from_slice(&g("fd47::1").octets());
        assert_eq!(parse(&wrap(&m)), Err(ParseError::Truncated));
        let mut m = vec![131, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&g("fd47::1").octets());
        assert_eq!(parse(&wrap(&m)), Err(ParseError::BadGroup));
        let m = [131, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse(&wrap(&m)), Err(ParseError::Truncated));
        assert_eq!(
            parse(&wrap(&[128, 0, 0, 0, 0, 0, 0, 0])),
            Err(ParseError::NotControl)
        );
    }

    #[test]
    fn walks_extension_headers() {
        // Hop-by-Hop, Destination Options, then ICMPv6
        let mut p = hex(vectors::V1_JOIN);
        let msg = p.split_off(48);
        p[40] = 60;
        p.extend_from_slice(&[ICMPV6, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&msg);
        p[5] += 8;
        let u = upper_layer(&p).expect("walks");
        assert_eq!((u.protocol, u.offset, u.fragment), (ICMPV6, 56, false));
        assert!(matches!(parse(&p), Ok(Message::Report { version: 1, .. })));

        // a first fragment is seen through but refused as MLD
        let mut f = hex(vectors::V1_JOIN);
        let msg = f.split_off(48);
        f[40] = 44;
        f.extend_from_slice(&[ICMPV6, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&msg);
        f[5] += 8;
        let u = upper_layer(&f).expect("walks");
        assert_eq!((u.offset, u.fragment, u.later_fragment), (56, true, false));
        assert_eq!(parse(&f), Err(ParseError::Fragment));
        // a later fragment is data
        f[50] = 0x01;
        let u = upper_layer(&f).expect("walks");
        assert!(u.later_fragment);
        assert_eq!(parse(&f), Err(ParseError::NotControl));

        // a chain longer than the limit
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 60, 1];
        p.extend_from_slice(&[0; 32]);
        for _ in 0..10 {
            p.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        p[5] = 80;
        assert_eq!(upper_layer(&p), Err(ParseError::BadIpHeader));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
            let _ = upper_layer(&bytes);
        }

        #[test]
        fn never_panics_on_valid_headers(
            kind in prop_oneof![Just(130u8), Just(131), Just(132), Just(143)],
            body in proptest::collection::vec(any::<u8>(), 4..400),
        ) {
            let mut m = vec![kind];
            m.extend_from_slice(&body);
            if let Ok(Message::Report { records, .. }) = parse(&wrap(&m)) {
                prop_assert!(records.len() <= m.len() / 20);
                for r in records {
                    prop_assert!(r.group.is_multicast());
                    prop_assert!(r.sources.len() * 16 <= m.len());
                }
            }
        }
    }
}
