//! IGMP (RFC 1112, 2236, 3376): parsing of the IPv4 packets the kernel writes to the
//! TUN (membership reports, leaves; queries for completeness), and the general or
//! group-specific IGMPv3 query the daemon injects as the link's querier.
//!
//! Parsing checks the IPv4 header (version, lengths, header checksum, no fragment),
//! skips its options (reports carry Router Alert), verifies the IGMP checksum and
//! every length field before reading, and never allocates more than the packet holds.
//! The IP addressing (source, TTL, presence of Router Alert) is not enforced: on the
//! TUN the only sender is this host's kernel.

use super::{checksum, query, take, GroupRecord, Message, ParseError, RecordType};
use super::{decode_code8, encode_code8};
use std::net::Ipv4Addr;
use std::time::Duration;

/// IPv4 protocol number of IGMP.
pub const PROTOCOL: u8 = 2;
/// All-systems group, destination of general queries.
pub const ALL_SYSTEMS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// All-routers group, destination of IGMPv2 leaves.
pub const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);
/// All IGMPv3-capable routers, destination of IGMPv3 reports.
pub const V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);

/// Membership query.
pub const TYPE_QUERY: u8 = 0x11;
/// IGMPv1 membership report.
pub const TYPE_V1_REPORT: u8 = 0x12;
/// IGMPv2 membership report.
pub const TYPE_V2_REPORT: u8 = 0x16;
/// IGMPv2 leave group.
pub const TYPE_V2_LEAVE: u8 = 0x17;
/// IGMPv3 membership report.
pub const TYPE_V3_REPORT: u8 = 0x22;

/// A parsed IGMP message.
pub type IgmpMessage = Message<Ipv4Addr>;

/// Parses an IPv4 packet carrying IGMP.
pub fn parse(packet: &[u8]) -> Result<IgmpMessage, ParseError> {
    let first = *packet.first().ok_or(ParseError::Truncated)?;
    let h: [u8; 20] = take(packet, 0)?;
    if first >> 4 != 4 {
        return Err(ParseError::BadIpHeader);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if ihl < 20 || total < ihl || total > packet.len() {
        return Err(ParseError::BadIpHeader);
    }
    if h[9] != PROTOCOL {
        return Err(ParseError::NotControl);
    }
    let header = packet.get(..ihl).ok_or(ParseError::Truncated)?;
    if checksum::of(header) != 0 {
        return Err(ParseError::IpChecksum);
    }
    // More-fragments flag or a fragment offset.
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return Err(ParseError::Fragment);
    }
    let msg = packet.get(ihl..total).ok_or(ParseError::Truncated)?;
    parse_message(msg)
}

/// Parses an IGMP message (the IPv4 payload).
fn parse_message(msg: &[u8]) -> Result<IgmpMessage, ParseError> {
    let [kind, code, _, _, g0, g1, g2, g3] = take::<8>(msg, 0)?;
    if checksum::of(msg) != 0 {
        return Err(ParseError::Checksum);
    }
    let group = Ipv4Addr::new(g0, g1, g2, g3);
    match kind {
        TYPE_QUERY => parse_query(msg, code),
        TYPE_V1_REPORT | TYPE_V2_REPORT => {
            if !group.is_multicast() {
                return Err(ParseError::BadGroup);
            }
            Ok(Message::Report {
                version: if kind == TYPE_V1_REPORT { 1 } else { 2 },
                records: vec![GroupRecord {
                    group,
                    mode: RecordType::ModeIsExclude,
                    sources: Vec::new(),
                }],
            })
        }
        TYPE_V2_LEAVE => {
            if !group.is_multicast() {
                return Err(ParseError::BadGroup);
            }
            Ok(Message::Leave { group })
        }
        TYPE_V3_REPORT => parse_v3_report(msg),
        other => Err(ParseError::UnknownType(other)),
    }
}

/// Queries: 8 bytes is IGMPv1 (code 0) or v2, 12 or more is v3, anything else is
/// ignored (RFC 3376 §7.1).
fn parse_query(msg: &[u8], code: u8) -> Result<IgmpMessage, ParseError> {
    let group = query::group_field::<4, Ipv4Addr>(msg)?;
    if msg.len() == 8 {
        return Ok(if code == 0 {
            query::legacy(1, Duration::from_secs(10), group)
        } else {
            query::legacy(2, tenths(u32::from(code)), group)
        });
    }
    query::parse_current::<4, Ipv4Addr>(msg, 3, group)
}

/// A duration of `t` tenths of a second.
fn tenths(t: u32) -> Duration {
    Duration::from_millis(u64::from(t) * 100)
}

/// IGMPv3 report: `type | reserved | checksum | reserved[2] | n u16 | n × record`,
/// record = `type | aux_words | nsrc u16 | group[4] | nsrc × source[4] | aux`.
fn parse_v3_report(msg: &[u8]) -> Result<IgmpMessage, ParseError> {
    super::parse_report_records::<4, Ipv4Addr>(msg, 3)
}

/// The fields of an IGMPv3 query to build.
pub type QueryParams = super::QueryParams<Ipv4Addr>;

/// Builds an IPv4 packet with an IGMPv3 query: IHL 6 with Router Alert, TOS 0xc0,
/// DF, TTL 1, correct header and IGMP checksums, no sources (36 bytes).
pub fn build_query(q: &QueryParams) -> Vec<u8> {
    query::build(q)
}

/// IGMPv3's side of the shared query layout: 4-byte addresses, the group at offset 4,
/// an 8-bit max response code in tenths of a second at offset 1, no pseudo-header,
/// and a 24-byte IPv4 header with Router Alert.
impl query::Family<4> for Ipv4Addr {
    const TYPE_QUERY: u8 = TYPE_QUERY;
    const ALL_HOSTS: Self = ALL_SYSTEMS;
    const UNSPECIFIED: Self = Ipv4Addr::UNSPECIFIED;
    const GROUP_AT: usize = 4;

    fn bytes(self) -> [u8; 4] {
        self.octets()
    }

    fn put_max_response(msg: &mut [u8], max_response: Duration) {
        let t = u32::try_from(max_response.as_millis() / 100).unwrap_or(u32::MAX);
        msg[1] = encode_code8(t);
    }

    fn max_response(msg: &[u8]) -> Result<Duration, ParseError> {
        let [_, code] = take::<2>(msg, 0)?;
        Ok(tenths(decode_code8(code)))
    }

    fn pseudo_header(_src: Self, _dst: Self, _len: usize) -> u64 {
        0
    }

    fn ip_header(src: Self, dst: Self, len: usize) -> Vec<u8> {
        let mut h = vec![0u8; 24];
        h[0] = 0x46;
        h[1] = 0xc0;
        let total = u16::try_from(24 + len).unwrap_or(u16::MAX);
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[6] = 0x40; // DF
        h[8] = 1; // TTL
        h[9] = PROTOCOL;
        h[12..16].copy_from_slice(&src.octets());
        h[16..20].copy_from_slice(&dst.octets());
        h[20..24].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]); // Router Alert
        let c = checksum::of(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Packets captured from Linux 6.18 writing to a TUN device (`mc0`, 10.47.0.1/16).
    pub(crate) mod vectors {
        /// IGMPv3 report: CHANGE_TO_EXCLUDE({}) for 239.1.2.3 (a join).
        pub(crate) const V3_JOIN: &str =
            "46c00028000040000102f9c90a2f0001e0000016940400002200e8f90000000104000000ef010203";
        /// IGMPv3 report: ALLOW(10.47.9.9) for 232.1.1.1 and TO_EX({}) for 239.1.2.3.
        pub(crate) const V3_ALLOW_TWO: &str = "46c00034000040000102f9bd0a2f0001e0000016940400002200e7bc0000000205000001e80101010a2f090904000000ef010203";
        /// IGMPv3 report: ALLOW(10.47.9.9) for 232.1.1.1 (a source-specific join).
        pub(crate) const V3_ALLOW: &str = "46c0002c000040000102f9c50a2f0001e0000016940400002200dcc20000000105000001e80101010a2f0909";
        /// IGMPv3 report: CHANGE_TO_INCLUDE({}) for 239.1.2.3 (a leave).
        pub(crate) const V3_LEAVE: &str =
            "46c00028000040000102f9c90a2f0001e0000016940400002200e9f90000000103000000ef010203";
        /// IGMPv2 report for 239.1.2.3 (`force_igmp_version=2`).
        pub(crate) const V2_JOIN: &str =
            "46c00020000040000102e8e30a2f0001ef010203940400001600f8faef010203";
        /// IGMPv2 leave for 239.1.2.3, sent to 224.0.0.2.
        pub(crate) const V2_LEAVE: &str =
            "46c00020000040000102f9e50a2f0001e0000002940400001700f7faef010203";
        /// IGMPv1 report for 239.1.2.3 (`force_igmp_version=1`).
        pub(crate) const V1_JOIN: &str =
            "46c00020000040000102e8e30a2f0001ef010203940400001200fcfaef010203";
        /// IGMPv3 report answering `GENERAL_QUERY` written to the TUN: MODE_IS_EXCLUDE({})
        /// for 239.1.2.3 and MODE_IS_INCLUDE(10.47.9.9) for 232.1.1.1.
        pub(crate) const V3_CURRENT: &str = "46c00034000040000102f9bd0a2f0001e0000016940400002200edbc0000000202000000ef01020301000001e80101010a2f0909";
        /// [`super::super::build_query`]: general query from 0.0.0.0, max response 10 s,
        /// QRV 2, QQI 125 s (checked against Linux: it answers with `V3_CURRENT`).
        pub(crate) const GENERAL_QUERY: &str =
            "46c00024000040000102041300000000e0000001940400001164ec1e00000000027d0000";
        /// UDP datagram "hello" to 239.1.2.3:5000, TTL 1.
        pub(crate) const DATA: &str =
            "45000021667d40000111181b0a2f0001ef010203cd861388000ddfbe68656c6c6f";
    }

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }

    fn g(s: &str) -> Ipv4Addr {
        s.parse().expect("addr")
    }

    fn report(version: u8, records: Vec<GroupRecord<Ipv4Addr>>) -> IgmpMessage {
        Message::Report { version, records }
    }

    fn rec(group: &str, mode: RecordType, sources: &[&str]) -> GroupRecord<Ipv4Addr> {
        GroupRecord {
            group: g(group),
            mode,
            sources: sources.iter().map(|s| g(s)).collect(),
        }
    }

    #[test]
    fn kernel_v3_reports() {
        use vectors::*;
        assert_eq!(
            parse(&hex(V3_JOIN)),
            Ok(report(
                3,
                vec![rec("239.1.2.3", RecordType::ChangeToExclude, &[])]
            ))
        );
        assert_eq!(
            parse(&hex(V3_ALLOW_TWO)),
            Ok(report(
                3,
                vec![
                    rec("232.1.1.1", RecordType::AllowNewSources, &["10.47.9.9"]),
                    rec("239.1.2.3", RecordType::ChangeToExclude, &[]),
                ]
            ))
        );
        assert_eq!(
            parse(&hex(V3_ALLOW)),
            Ok(report(
                3,
                vec![rec(
                    "232.1.1.1",
                    RecordType::AllowNewSources,
                    &["10.47.9.9"]
                )]
            ))
        );
        assert_eq!(
            parse(&hex(V3_LEAVE)),
            Ok(report(
                3,
                vec![rec("239.1.2.3", RecordType::ChangeToInclude, &[])]
            ))
        );
        assert_eq!(
            parse(&hex(V3_CURRENT)),
            Ok(report(
                3,
                vec![
                    rec("239.1.2.3", RecordType::ModeIsExclude, &[]),
                    rec("232.1.1.1", RecordType::ModeIsInclude, &["10.47.9.9"]),
                ]
            ))
        );
    }

    #[test]
    fn kernel_v1_v2_messages() {
        use vectors::*;
        let join = vec![rec("239.1.2.3", RecordType::ModeIsExclude, &[])];
        assert_eq!(parse(&hex(V2_JOIN)), Ok(report(2, join.clone())));
        assert_eq!(parse(&hex(V1_JOIN)), Ok(report(1, join)));
        assert_eq!(
            parse(&hex(V2_LEAVE)),
            Ok(Message::Leave {
                group: g("239.1.2.3")
            })
        );
        assert_eq!(parse(&hex(DATA)), Err(ParseError::NotControl));
    }

    /// Builds an IGMP packet with a 24-byte header (Router Alert) around `msg`,
    /// fixing both checksums.
    pub(crate) fn wrap(msg: &[u8]) -> Vec<u8> {
        let mut m = msg.to_vec();
        m[2..4].fill(0);
        let c = checksum::of(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut p = vec![
            0x46, 0xc0, 0, 0, 0, 0, 0x40, 0, 1, 2, 0, 0, 10, 47, 0, 1, 224, 0, 0, 22, 0x94, 4, 0, 0,
        ];
        let total = u16::try_from(24 + m.len()).expect("small");
        p[2..4].copy_from_slice(&total.to_be_bytes());
        let c = checksum::of(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&m);
        p
    }

    #[test]
    fn v3_report_every_record_type_with_aux_data() {
        let mut m = vec![0x22, 0, 0, 0, 0, 0, 0, 8];
        for t in 1..=6u8 {
            // two sources, one word of aux data
            m.extend_from_slice(&[t, 1, 0, 2, 239, 0, 0, t]);
            m.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            m.extend_from_slice(&[0xaa; 4]);
        }
        m.extend_from_slice(&[7, 0, 0, 0, 239, 0, 0, 7]); // unknown type: skipped
        m.extend_from_slice(&[1, 0, 0, 0, 10, 0, 0, 1]); // unicast group: skipped
        let msg = parse(&wrap(&m)).expect("valid");
        let Message::Report { version, records } = msg else {
            panic!("not a report: {msg:?}");
        };
        assert_eq!(version, 3);
        assert_eq!(records.len(), 6);
        for (i, r) in records.iter().enumerate() {
            let code = u8::try_from(i + 1).expect("small");
            assert_eq!(r.mode.code(), code);
            assert_eq!(RecordType::from_code(code), Some(r.mode));
            assert_eq!(r.group, Ipv4Addr::new(239, 0, 0, code));
            assert_eq!(r.sources, vec![g("10.0.0.1"), g("10.0.0.2")]);
        }
    }

    #[test]
    fn queries_of_each_version() {
        let q = |m: &[u8]| match parse(&wrap(m)) {
            Ok(Message::Query(q)) => q,
            other => panic!("{other:?}"),
        };
        let v1 = q(&[0x11, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!((v1.version, v1.max_response), (1, Duration::from_secs(10)));
        let v2 = q(&[0x11, 100, 0, 0, 239, 1, 1, 1]);
        assert_eq!(v2.version, 2);
        assert_eq!(v2.max_response, Duration::from_secs(10));
        assert_eq!(v2.group, Some(g("239.1.1.1")));
        let v3 = q(&[
            0x11, 0x8f, 0, 0, 239, 1, 1, 1, 0x0a, 125, 0, 2, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        assert_eq!(v3.version, 3);
        assert_eq!(v3.max_response, Duration::from_millis(31 * 8 * 100));
        assert!(v3.suppress_router_processing);
        assert_eq!(v3.robustness, 2);
        assert_eq!(v3.query_interval, Some(Duration::from_secs(125)));
        assert_eq!(v3.sources, vec![g("10.0.0.1"), g("10.0.0.2")]);
        // 10 bytes is no query form; a unicast group is invalid
        assert_eq!(
            parse(&wrap(&[0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(ParseError::BadLength)
        );
        assert_eq!(
            parse(&wrap(&[0x11, 10, 0, 0, 10, 0, 0, 1])),
            Err(ParseError::BadGroup)
        );
    }

    #[test]
    fn built_query_parses_back() {
        let p = build_query(&QueryParams {
            src: Ipv4Addr::UNSPECIFIED,
            group: None,
            max_response: Duration::from_secs(10),
            robustness: 2,
            query_interval: Duration::from_secs(125),
        });
        assert_eq!(hex::encode(&p), vectors::GENERAL_QUERY);
        let Ok(Message::Query(q)) = parse(&p) else {
            panic!("query does not parse");
        };
        assert_eq!(q.version, 3);
        assert_eq!(q.group, None);
        assert_eq!(q.max_response, Duration::from_secs(10));
        assert_eq!(q.robustness, 2);
        assert_eq!(q.query_interval, Some(Duration::from_secs(125)));

        let p = build_query(&QueryParams {
            src: g("10.47.0.9"),
            group: Some(g("239.1.2.3")),
            max_response: Duration::from_secs(1),
            robustness: 9,
            query_interval: Duration::from_secs(1000),
        });
        assert_eq!(&p[16..20], &[239, 1, 2, 3]);
        let Ok(Message::Query(q)) = parse(&p) else {
            panic!("query does not parse");
        };
        assert_eq!(q.group, Some(g("239.1.2.3")));
        assert_eq!(q.robustness, 0);
        assert_eq!(q.query_interval, Some(Duration::from_secs(992)));
    }

    #[test]
    fn rejects_malformed() {
        let good = hex(vectors::V3_JOIN);
        assert_eq!(parse(&[]), Err(ParseError::Truncated));
        assert_eq!(parse(&good[..19]), Err(ParseError::Truncated));
        let mut p = good.clone();
        p[0] = 0x66;
        assert_eq!(parse(&p), Err(ParseError::BadIpHeader));
        let mut p = good.clone();
        p[0] = 0x44;
        assert_eq!(parse(&p), Err(ParseError::BadIpHeader));
        assert_eq!(parse(&good[..39]), Err(ParseError::BadIpHeader));
        let mut p = good.clone();
        p[8] = 2; // TTL changed, header checksum now wrong
        assert_eq!(parse(&p), Err(ParseError::IpChecksum));
        let mut p = good.clone();
        p[39] = 4; // group changed, IGMP checksum now wrong
        assert_eq!(parse(&p), Err(ParseError::Checksum));
        // a record claiming 3 sources that are not there
        let m = [
            0x22, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 3, 239, 0, 0, 1, 10, 0, 0, 1,
        ];
        assert_eq!(parse(&wrap(&m)), Err(ParseError::Truncated));
        // more records than the cap, or than present
        let m = [0x22, 0, 0, 0, 0, 0, 0xff, 0xff];
        assert_eq!(parse(&wrap(&m)), Err(ParseError::TooMany));
        let m = [0x22, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 239, 0, 0, 1];
        assert_eq!(parse(&wrap(&m)), Err(ParseError::Truncated));
        // aux data longer than the message
        let m = [0x22, 0, 0, 0, 0, 0, 0, 1, 1, 9, 0, 0, 239, 0, 0, 1];
        assert_eq!(parse(&wrap(&m)), Err(ParseError::Truncated));
        assert_eq!(
            parse(&wrap(&[0x13, 0, 0, 0, 0, 0, 0, 0])),
            Err(ParseError::UnknownType(0x13))
        );
        assert_eq!(
            parse(&wrap(&[0x16, 0, 0, 0, 10, 0, 0, 1])),
            Err(ParseError::BadGroup)
        );
        assert_eq!(
            parse(&wrap(&[0x17, 0, 0, 0, 0, 0, 0, 0])),
            Err(ParseError::BadGroup)
        );
        assert_eq!(parse(&wrap(&[0x16, 0, 0, 0])), Err(ParseError::Truncated));
        let mut p = hex(vectors::V2_JOIN);
        p[6] = 0x20; // more fragments
        p[10..12].fill(0);
        let c = checksum::of(&p[..24]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&p), Err(ParseError::Fragment));
    }

    #[test]
    fn trailing_bytes_beyond_total_length_are_ignored() {
        let mut p = hex(vectors::V2_JOIN);
        p.extend_from_slice(&[0xde, 0xad]);
        assert!(matches!(parse(&p), Ok(Message::Report { version: 2, .. })));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_valid_headers(msg in proptest::collection::vec(any::<u8>(), 8..300)) {
            // Valid IP header and checksum, arbitrary IGMP content: exercises the
            // message parser beyond the checksum gate.
            if let Ok(Message::Report { records, .. }) = parse(&wrap(&msg)) {
                prop_assert!(records.len() <= msg.len() / 8);
                for r in records {
                    prop_assert!(r.group.is_multicast());
                    prop_assert!(r.sources.len() * 4 <= msg.len());
                }
            }
        }
    }
}
