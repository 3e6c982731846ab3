//! The IGMPv3 and MLDv2 membership query, built and read in one place.
//!
//! Both queries share one layout after a header that differs per family:
//! `header | group[N] | resv:4 S:1 QRV:3 | QQIC | nsrc u16 | nsrc × source[N]`, one set
//! of parameters ([`QueryParams`]) and one encoding of the robustness and the query
//! interval. [`Family`] supplies what differs: the address size `N`, the header (where
//! the max response code sits and how it is coded), the checksum's pseudo-header, and
//! the IP header around the message. [`build`] writes a general or group-specific query
//! with no sources; [`group_field`] and [`parse_current`] read the group and the
//! current-version form back ([`legacy`] builds the older forms' result).

use super::{addresses, checksum, decode_code8, encode_code8, take, Message, ParseError, Query};
use std::net::IpAddr;
use std::time::Duration;

/// The fields of a query to build: `QueryParams<Ipv4Addr>` for IGMPv3
/// (`igmp::QueryParams`), `QueryParams<Ipv6Addr>` for MLDv2 (`mld::QueryParams`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParams<A> {
    /// Source address. IGMP: `0.0.0.0` is accepted by Linux and passes its reverse-path
    /// filter; a local address of the receiving host does not (martian). MLD: Linux
    /// ignores queries whose source is not link-local (`fe80::/10`); use one that is not
    /// the receiving interface's own.
    pub src: A,
    /// `None`: general query to all systems (224.0.0.1) or all nodes (ff02::1);
    /// `Some(g)`: group-specific query sent to `g`.
    pub group: Option<A>,
    /// Maximum response time: IGMP encodes it in tenths of a second (at most
    /// 3174.4 s), MLD in milliseconds (at most about 8387 s).
    pub max_response: Duration,
    /// QRV, 0-7 (larger values are sent as 0, "unset").
    pub robustness: u8,
    /// QQI (encoded in seconds, at most 31744 s).
    pub query_interval: Duration,
}

/// What IGMP (IPv4, `N` = 4) and MLD (IPv6, `N` = 16) queries differ in. Implemented
/// for [`std::net::Ipv4Addr`] in `igmp` and for [`std::net::Ipv6Addr`] in `mld`.
pub(crate) trait Family<const N: usize>: Copy + From<[u8; N]> + Into<IpAddr> {
    /// Message type of a query (IGMP 0x11, MLD 130).
    const TYPE_QUERY: u8;
    /// Destination of a general query (224.0.0.1, ff02::1).
    const ALL_HOSTS: Self;
    /// The group field of a general query (0.0.0.0, ::).
    const UNSPECIFIED: Self;
    /// Offset of the group field: after `type | max resp code | checksum` (IGMP, 4)
    /// or `type | code | checksum | max resp code u16 | reserved u16` (MLD, 8).
    const GROUP_AT: usize;

    /// The address bytes.
    fn bytes(self) -> [u8; N];

    /// Writes the current-version max response code into the message header.
    fn put_max_response(msg: &mut [u8], max_response: Duration);

    /// Reads the current-version max response code from the message header.
    fn max_response(msg: &[u8]) -> Result<Duration, ParseError>;

    /// The running checksum sum over the pseudo-header of a `len`-byte message from
    /// `src` to `dst` (IGMP has none: 0).
    fn pseudo_header(src: Self, dst: Self, len: usize) -> u64;

    /// The IP header (with Router Alert) of a packet carrying a `len`-byte message
    /// from `src` to `dst`.
    fn ip_header(src: Self, dst: Self, len: usize) -> Vec<u8>;
}

/// Builds the IP packet of a current-version query (IGMPv3, MLDv2) with no sources:
/// to the group (group-specific) or to all hosts (general, group field unspecified),
/// with the message checksum (over the pseudo-header for MLD) filled in.
pub(crate) fn build<const N: usize, A: Family<N>>(q: &QueryParams<A>) -> Vec<u8> {
    let dst = q.group.unwrap_or(A::ALL_HOSTS);
    let tail = A::GROUP_AT + N;
    let mut msg = vec![0u8; tail + 4];
    msg[0] = A::TYPE_QUERY;
    A::put_max_response(&mut msg, q.max_response);
    msg[A::GROUP_AT..tail].copy_from_slice(&q.group.unwrap_or(A::UNSPECIFIED).bytes());
    msg[tail] = if q.robustness <= 7 { q.robustness } else { 0 };
    let secs = u32::try_from(q.query_interval.as_secs()).unwrap_or(u32::MAX);
    msg[tail + 1] = encode_code8(secs);
    // msg[tail + 2..tail + 4]: no sources.
    let sum = checksum::add(A::pseudo_header(q.src, dst, msg.len()), &msg);
    msg[2..4].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    let mut packet = A::ip_header(q.src, dst, msg.len());
    packet.extend_from_slice(&msg);
    packet
}

/// The group field of a query: `None` when unspecified (a general query), the group
/// when multicast (a group-specific query), else [`ParseError::BadGroup`].
pub(crate) fn group_field<const N: usize, A: Family<N>>(
    msg: &[u8],
) -> Result<Option<A>, ParseError> {
    let group = A::from(take::<N>(msg, A::GROUP_AT)?);
    let ip: IpAddr = group.into();
    if ip.is_unspecified() {
        Ok(None)
    } else if ip.is_multicast() {
        Ok(Some(group))
    } else {
        Err(ParseError::BadGroup)
    }
}

/// Reads a current-version query (IGMPv3, MLDv2) whose group field is `group`;
/// shorter than its fixed part is [`ParseError::BadLength`] (RFC 3376 §7.1, RFC 3810
/// §8.1: such queries are ignored).
pub(crate) fn parse_current<const N: usize, A: Family<N>>(
    msg: &[u8],
    version: u8,
    group: Option<A>,
) -> Result<Message<A>, ParseError> {
    let tail = A::GROUP_AT + N;
    if msg.len() < tail + 4 {
        return Err(ParseError::BadLength);
    }
    let [flags, qqic, n0, n1] = take::<4>(msg, tail)?;
    let qqi = decode_code8(qqic);
    Ok(Message::Query(Query {
        version,
        max_response: A::max_response(msg)?,
        group,
        suppress_router_processing: flags & 0x08 != 0,
        robustness: flags & 0x07,
        query_interval: (qqi != 0).then(|| Duration::from_secs(u64::from(qqi))),
        sources: addresses::<N, A>(msg, tail + 4, usize::from(u16::from_be_bytes([n0, n1])))?,
    }))
}

/// An older-version query (IGMPv1/v2, MLDv1): no flags, robustness, interval or
/// sources.
pub(crate) fn legacy<A>(version: u8, max_response: Duration, group: Option<A>) -> Message<A> {
    Message::Query(Query {
        version,
        max_response,
        group,
        suppress_router_processing: false,
        robustness: 0,
        query_interval: None,
        sources: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicast::{parse_control, Control};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// What reading back a query built from `q` must give, for either family.
    fn expect_query<A: PartialEq + std::fmt::Debug>(
        q: &QueryParams<A>,
        version: u8,
        got: &Query<A>,
    ) {
        assert_eq!(got.version, version);
        assert_eq!(got.group, q.group);
        assert_eq!(
            got.robustness,
            if q.robustness <= 7 { q.robustness } else { 0 }
        );
        assert!(!got.suppress_router_processing);
        assert!(got.sources.is_empty());
        // Codes round down, by at most one mantissa step.
        assert!(got.max_response <= q.max_response);
        match got.query_interval {
            Some(i) => assert!(i <= q.query_interval && i > q.query_interval / 2),
            None => assert!(q.query_interval < Duration::from_secs(1)),
        }
    }

    proptest! {
        #[test]
        fn both_families_read_back(
            robustness in 0u8..12,
            interval_s in 0u64..40_000,
            response_ms in 0u64..9_000_000,
            specific in any::<bool>(),
        ) {
            let v4 = QueryParams {
                src: Ipv4Addr::UNSPECIFIED,
                group: specific.then(|| Ipv4Addr::new(239, 1, 2, 3)),
                max_response: Duration::from_millis(response_ms.min(3_174_400)),
                robustness,
                query_interval: Duration::from_secs(interval_s.min(31_744)),
            };
            let p = build(&v4);
            prop_assert_eq!(p.len(), 36);
            let Ok(Control::Igmp(Message::Query(got))) = parse_control(&p) else {
                panic!("IGMP query does not parse");
            };
            expect_query(&v4, 3, &got);

            let v6 = QueryParams {
                src: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
                group: specific.then(|| Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0, 0x1234)),
                max_response: Duration::from_millis(response_ms),
                robustness,
                query_interval: Duration::from_secs(interval_s.min(31_744)),
            };
            let p = build(&v6);
            prop_assert_eq!(p.len(), 76);
            let Ok(Control::Mld(Message::Query(got))) = parse_control(&p) else {
                panic!("MLD query does not parse");
            };
            expect_query(&v6, 2, &got);
        }
    }
}
