//! Multicast across the mesh: the sans-IO core (no I/O; time is injected as
//! [`std::time::Instant`]).
//!
//! The mesh behaves as **one link**. On each node the kernel sends IGMP/MLD reports and
//! leaves, and multicast data, into the TUN device (`weft0`) as if a multicast router
//! sat at the other end of a point-to-point link. The daemon:
//!
//! 1. snoops the reports read from the TUN ([`parse_control`], [`igmp`], [`mld`]) into
//!    a [`GroupTable`] of local memberships with RFC 3376/3810 timers;
//! 2. acts as the link's querier ([`Querier`]): it injects general queries into the
//!    TUN at start and every query interval, so the kernel keeps re-reporting;
//! 3. gossips the table's [`GroupTable::groups`] (at most
//!    [`GroupConfig::max_groups`] addresses per node);
//! 4. rebuilds a mesh-wide [`Membership`] map from gossip and, for every multicast
//!    packet read from the TUN, asks the [`Replicator`] which peers get a copy;
//! 5. checks every decrypted multicast packet with [`Replicator::inbound`] before
//!    writing it to the TUN. TTL / hop limit is never decremented: it is one link.
//!
//! Replication is per group (any source). Source filters (IGMPv3/MLDv2 INCLUDE and
//! EXCLUDE lists) are recorded in the table but not used for replication: the
//! receiving kernel applies its sockets' source filters on delivery, so forwarding
//! every source of a joined group is correct, merely not minimal.
//!
//! Modules:
//! - [`igmp`]: IGMPv1/v2/v3 parsing (RFC 1112, 2236, 3376) and IGMP's side of the
//!   query builder (IPv4 header, max response code in tenths of a second).
//! - [`mld`]: MLDv1/v2 parsing (RFC 2710, 3810) and MLD's side of the query builder
//!   (IPv6 and Hop-by-Hop headers, max response code in milliseconds, pseudo-header).
//! - `query`: the IGMPv3/MLDv2 query layout they share, built and read once
//!   ([`QueryParams`]), as `parse_report_records` reads both reports.
//! - [`groups`]: [`GroupTable`] (one listener's memberships and their timers) and the
//!   [`GroupConfig`] it shares with the querier.
//! - [`querier`]: [`Querier`] (when to query the link, and the queries).
//! - [`listeners`]: [`Listeners`] (a table per listener, the policy verdict in the
//!   report path: what the node announces) and [`ReceivePolicy`].
//! - [`policy`]: [`GroupFilter`] (which groups may cross the mesh), [`RateLimit`].
//! - [`replicate`]: [`Membership`] and the [`Replicator`]'s per-packet decisions.
//! - [`ports`]: [`PodPorts`], chained mode's pod veths and their members (delivery
//!   onto the member pods' links only).
//!
//! The behaviour is specified in `proto/PROTOCOL.md` §7.

pub(crate) mod checksum;
pub mod groups;
pub mod igmp;
pub mod listeners;
pub mod mld;
pub mod policy;
pub mod ports;
pub mod querier;
mod query;
pub mod replicate;

pub use groups::{FilterMode, GroupConfig, GroupEvent, GroupTable, SourceFilter};
pub use listeners::{packet_source, Listeners, ReceivePolicy};
pub use policy::{is_multicast, Action, FilterReason, GroupFilter, RateLimit};
pub use ports::{PodPorts, Port, PortDrop};
pub use querier::Querier;
pub use query::QueryParams;
pub use replicate::{McastDrop, Membership, Replication, Replicator};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Most group records one report may carry; a report with more is rejected
/// ([`ParseError::TooMany`]). A 1500-byte IGMPv3 report holds at most 184 records.
pub const MAX_RECORDS: usize = 1024;

/// Most sources one group record or query may list; more is rejected
/// ([`ParseError::TooMany`]). Linux allows 10 (IPv4) and 64 (IPv6) per socket.
pub const MAX_SOURCES: usize = 1024;

/// Why bytes are not a usable IGMP or MLD message. Every variant means "ignore it".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    /// Shorter than a header or field it must contain.
    #[error("truncated IGMP/MLD packet")]
    Truncated,
    /// Wrong IP version, header length or total length.
    #[error("malformed IP header")]
    BadIpHeader,
    /// The IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    IpChecksum,
    /// A fragment: IGMP and MLD messages are never fragmented.
    #[error("fragmented IGMP/MLD packet")]
    Fragment,
    /// Not IGMP (IPv4 protocol 2) or MLD (ICMPv6 types 130, 131, 132, 143).
    #[error("not an IGMP or MLD packet")]
    NotControl,
    /// The IGMP or ICMPv6 checksum does not verify.
    #[error("bad IGMP/ICMPv6 checksum")]
    Checksum,
    /// An IGMP type this parser does not know (for example DVMRP or mtrace).
    #[error("unknown IGMP type {0:#04x}")]
    UnknownType(u8),
    /// A message whose length fits no version of its type (RFC 3376 §7.1, RFC 3810
    /// §8.1 say such queries are ignored).
    #[error("IGMP/MLD message of invalid length")]
    BadLength,
    /// A report or leave naming a group that is not a multicast address, or a query
    /// naming one that is neither zero nor multicast.
    #[error("group address is not multicast")]
    BadGroup,
    /// More than [`MAX_RECORDS`] records or [`MAX_SOURCES`] sources.
    #[error("too many group records or sources")]
    TooMany,
}

/// IGMPv3 / MLDv2 group record types (RFC 3376 §4.2.12, RFC 3810 §5.2.12; same values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// 1, current state: receive only from the listed sources.
    ModeIsInclude,
    /// 2, current state: receive from all but the listed sources.
    ModeIsExclude,
    /// 3, filter mode changed to INCLUDE; with no sources it is a leave.
    ChangeToInclude,
    /// 4, filter mode changed to EXCLUDE; with no sources it is an any-source join.
    ChangeToExclude,
    /// 5, the listed sources are now wanted.
    AllowNewSources,
    /// 6, the listed sources are no longer wanted.
    BlockOldSources,
}

impl RecordType {
    /// The type for its wire value, `None` for unknown values (records of unknown
    /// types are skipped, as RFC 3376 §4.2.12 requires).
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::ModeIsInclude,
            2 => Self::ModeIsExclude,
            3 => Self::ChangeToInclude,
            4 => Self::ChangeToExclude,
            5 => Self::AllowNewSources,
            6 => Self::BlockOldSources,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            Self::ModeIsInclude => 1,
            Self::ModeIsExclude => 2,
            Self::ChangeToInclude => 3,
            Self::ChangeToExclude => 4,
            Self::AllowNewSources => 5,
            Self::BlockOldSources => 6,
        }
    }
}

/// One group record of a report. IGMPv1/v2 and MLDv1 reports are presented as one
/// record `ModeIsExclude` with no sources (an any-source join, RFC 3376 §7.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupRecord<A> {
    /// The multicast group.
    pub group: A,
    /// What the record says.
    pub mode: RecordType,
    /// The record's source list (auxiliary data is skipped).
    pub sources: Vec<A>,
}

/// A membership query (a host never sends one to the TUN; parsed for completeness
/// and for tests of [`Querier`]'s packets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query<A> {
    /// Protocol version the query's form belongs to: IGMP 1, 2 or 3; MLD 1 or 2.
    pub version: u8,
    /// Maximum response time (IGMPv1 queries: 10 s by definition).
    pub max_response: Duration,
    /// `None` for a general query, else the group of a group(-and-source)-specific one.
    pub group: Option<A>,
    /// The S flag (suppress router-side processing); v3/v2 forms only.
    pub suppress_router_processing: bool,
    /// The querier's robustness variable (QRV); 0 when absent or unset.
    pub robustness: u8,
    /// The querier's query interval (QQIC); `None` in older forms or when 0.
    pub query_interval: Option<Duration>,
    /// Sources of a group-and-source-specific query.
    pub sources: Vec<A>,
}

/// An IGMP or MLD message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message<A> {
    /// A membership report: IGMP version 1, 2 or 3, MLD version 1 or 2.
    Report {
        /// Protocol version of the report's form.
        version: u8,
        /// Its group records (one, `ModeIsExclude` without sources, for v1/v2/MLDv1).
        records: Vec<GroupRecord<A>>,
    },
    /// An IGMPv2 leave or MLDv1 done. (v3 leaves are `ChangeToInclude` records with
    /// no sources.)
    Leave {
        /// The group left.
        group: A,
    },
    /// A membership query.
    Query(Query<A>),
}

/// A parsed IGMP (IPv4) or MLD (IPv6) message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Control {
    /// IGMP.
    Igmp(Message<Ipv4Addr>),
    /// MLD.
    Mld(Message<Ipv6Addr>),
}

/// Parses an IPv4/IGMP or IPv6/MLD packet read from the TUN; other packets give
/// [`ParseError::NotControl`] (or a more specific error if malformed).
pub fn parse_control(packet: &[u8]) -> Result<Control, ParseError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => igmp::parse(packet).map(Control::Igmp),
        Some(6) => mld::parse(packet).map(Control::Mld),
        Some(_) => Err(ParseError::BadIpHeader),
        None => Err(ParseError::Truncated),
    }
}

/// Whether `packet` is link control traffic that must never cross the mesh: any IGMP
/// packet (valid or not), and ICMPv6 MLD (130-132, 143) and neighbor discovery
/// (133-137) messages. Works on the first fragment; later fragments are not control.
/// Errors if an IPv6 extension header chain cannot be walked.
pub fn is_link_control(packet: &[u8]) -> Result<bool, ParseError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Ok(packet.get(9) == Some(&igmp::PROTOCOL)),
        Some(6) => {
            let upper = mld::upper_layer(packet)?;
            if upper.protocol != mld::ICMPV6 || upper.later_fragment {
                return Ok(false);
            }
            Ok(matches!(
                packet.get(upper.offset),
                Some(130..=137) | Some(143)
            ))
        }
        Some(_) => Err(ParseError::BadIpHeader),
        None => Err(ParseError::Truncated),
    }
}

/// Decodes an 8-bit IGMPv3 Max Resp Code / QQIC (RFC 3376 §4.1.1, §4.1.7) into units
/// (tenths of a second, or seconds).
pub(crate) fn decode_code8(code: u8) -> u32 {
    if code < 0x80 {
        u32::from(code)
    } else {
        let exp = u32::from((code >> 4) & 0x07);
        let mant = u32::from(code & 0x0f);
        (mant | 0x10) << (exp + 3)
    }
}

/// Encodes units into an 8-bit code (rounding down; saturating at 31744).
pub(crate) fn encode_code8(value: u32) -> u8 {
    if value < 0x80 {
        return value as u8;
    }
    for exp in 0..8u32 {
        let mant = value >> (exp + 3);
        if mant <= 0x1f {
            return 0x80 | ((exp as u8) << 4) | ((mant & 0x0f) as u8);
        }
    }
    0xff
}

/// Decodes the 16-bit MLDv2 Maximum Response Code (RFC 3810 §5.1.3) into milliseconds.
pub(crate) fn decode_code16(code: u16) -> u32 {
    if code < 0x8000 {
        u32::from(code)
    } else {
        let exp = u32::from((code >> 12) & 0x07);
        let mant = u32::from(code & 0x0fff);
        (mant | 0x1000) << (exp + 3)
    }
}

/// Encodes milliseconds into the 16-bit code (rounding down; saturating).
pub(crate) fn encode_code16(value: u32) -> u16 {
    if value < 0x8000 {
        return value as u16;
    }
    for exp in 0..8u32 {
        let mant = value >> (exp + 3);
        if mant <= 0x1fff {
            return 0x8000 | ((exp as u16) << 12) | ((mant & 0x0fff) as u16);
        }
    }
    0xffff
}

/// Bytes from `data` at `at`, or [`ParseError::Truncated`].
pub(crate) fn take<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], ParseError> {
    at.checked_add(N)
        .and_then(|end| data.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(ParseError::Truncated)
}

/// Reads `count` addresses of `N` bytes each starting at `at`, after checking that
/// they fit in `data` (so nothing is allocated beyond what the packet holds).
pub(crate) fn addresses<const N: usize, A: From<[u8; N]>>(
    data: &[u8],
    at: usize,
    count: usize,
) -> Result<Vec<A>, ParseError> {
    if count > MAX_SOURCES {
        return Err(ParseError::TooMany);
    }
    let bytes = count
        .checked_mul(N)
        .and_then(|len| at.checked_add(len))
        .and_then(|end| data.get(at..end))
        .ok_or(ParseError::Truncated)?;
    Ok(bytes
        .chunks_exact(N)
        .filter_map(|c| <[u8; N]>::try_from(c).ok())
        .map(A::from)
        .collect())
}

/// The group records of an IGMPv3 or MLDv2 report, which share one layout with `N`-byte
/// addresses: `type | reserved | checksum | reserved[2] | n u16 | n × record`, record =
/// `type | aux_words | nsrc u16 | group[N] | nsrc × source[N] | aux_words × 4 bytes`.
/// Unknown record types and non-multicast groups are skipped (RFC 3376 §4.2.12,
/// RFC 3810 §5.2.12).
pub(crate) fn parse_report_records<const N: usize, A>(
    msg: &[u8],
    version: u8,
) -> Result<Message<A>, ParseError>
where
    A: From<[u8; N]> + Copy + Into<IpAddr>,
{
    let [n0, n1] = take::<2>(msg, 6)?;
    let count = usize::from(u16::from_be_bytes([n0, n1]));
    if count > MAX_RECORDS {
        return Err(ParseError::TooMany);
    }
    // Each record is at least 4 + N bytes: never reserve more than the packet can hold.
    let mut records = Vec::with_capacity(count.min(msg.len().saturating_sub(8) / (4 + N)));
    let mut at = 8usize;
    for _ in 0..count {
        let [kind, aux_words, s0, s1] = take::<4>(msg, at)?;
        let group = A::from(take::<N>(msg, at + 4)?);
        let nsrc = usize::from(u16::from_be_bytes([s0, s1]));
        let sources = addresses::<N, A>(msg, at + 4 + N, nsrc)?;
        let end = at + 4 + N + nsrc * N + usize::from(aux_words) * 4;
        if end > msg.len() {
            return Err(ParseError::Truncated);
        }
        at = end;
        if let (Some(mode), true) = (RecordType::from_code(kind), group.into().is_multicast()) {
            records.push(GroupRecord {
                group,
                mode,
                sources,
            });
        }
    }
    Ok(Message::Report { version, records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn time_codes() {
        assert_eq!(decode_code8(100), 100);
        assert_eq!(decode_code8(0x80), 0x10 << 3);
        assert_eq!(decode_code8(0xff), 31744);
        assert_eq!(encode_code8(125), 125);
        assert_eq!(encode_code8(128), 0x80);
        assert_eq!(encode_code8(1_000_000), 0xff);
        assert_eq!(decode_code16(10_000), 10_000);
        assert_eq!(decode_code16(0x8000), 0x1000 << 3);
        assert_eq!(decode_code16(0xffff), 0x1fff << 10);
        assert_eq!(encode_code16(40_000), 0x8000 | (0x1388 & 0x0fff));
        assert_eq!(encode_code16(u32::MAX), 0xffff);
    }

    proptest! {
        #[test]
        fn time_codes_round_down(v in 0u32..40_000) {
            let d = decode_code8(encode_code8(v));
            prop_assert!(d <= v.min(31744));
            // at most one mantissa step (1/16 of the value) lost
            prop_assert!(v.min(31744) - d <= v / 16 + 1);
        }

        #[test]
        fn time_codes16_round_down(v in 0u32..9_000_000) {
            let d = decode_code16(encode_code16(v));
            let max = 0x1fffu32 << 10;
            prop_assert!(d <= v.min(max));
            prop_assert!(v.min(max) - d <= v / 4096 + 1);
        }
    }
}
