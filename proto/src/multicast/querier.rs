//! The querier of the TUN link ([`Querier`]): the daemon, as the multicast router at the
//! link's far end, injects IGMPv3 and MLDv2 general queries so the kernel keeps
//! re-reporting its memberships to the [`super::GroupTable`], and builds the
//! group-specific queries a link with several listeners would need.

use super::groups::GroupConfig;
use super::{igmp, mld, QueryParams};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// When the daemon, as the TUN link's querier, injects general queries so the kernel
/// re-reports its memberships: at start, then `robustness - 1` more times every
/// startup query interval (31.25 s), then every query interval (125 s) (RFC 3376
/// §8.6-8.7). Without queries the kernel reports a join only a couple of times and
/// the membership would expire after the membership interval.
#[derive(Debug, Clone)]
pub struct Querier {
    config: GroupConfig,
    next: Instant,
    startup_left: u8,
}

impl Querier {
    /// A querier whose first query is due at `now`.
    pub fn new(config: GroupConfig, now: Instant) -> Self {
        let mut q = Self {
            config,
            next: now,
            startup_left: 0,
        };
        q.restart(now);
        q
    }

    /// Starts the startup sequence again, first query due at `now` (for example when
    /// the TUN device was recreated).
    pub fn restart(&mut self, now: Instant) {
        self.next = now;
        self.startup_left = self.config.robustness.max(1);
    }

    /// When the next query is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }

    /// True if a general query is due at `now`: the caller then writes
    /// [`Self::igmp_general_query`] and [`Self::mld_general_query`] to the TUN.
    /// The next one is scheduled from `now` (a late call does not cause a burst).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.startup_left = self.startup_left.saturating_sub(1);
        self.next = now
            + if self.startup_left > 0 {
                self.config.startup_query_interval()
            } else {
                self.config.query_interval
            };
        true
    }

    /// IGMPv3 general query to 224.0.0.1 from `src` (use `0.0.0.0`: Linux accepts it
    /// for IGMP and it passes reverse-path filtering, which a local address does not).
    pub fn igmp_general_query(&self, src: Ipv4Addr) -> Vec<u8> {
        igmp::build_query(&self.params(src, None))
    }

    /// MLDv2 general query to ff02::1 from `src`, which must be link-local (Linux
    /// ignores MLD queries from other sources) and not the TUN's own address.
    pub fn mld_general_query(&self, src: Ipv6Addr) -> Vec<u8> {
        mld::build_query(&self.params(src, None))
    }

    /// IGMPv3 group-specific query (max response: last member query interval).
    pub fn igmp_group_query(&self, src: Ipv4Addr, group: Ipv4Addr) -> Vec<u8> {
        igmp::build_query(&self.params(src, Some(group)))
    }

    /// MLDv2 group-specific query (max response: last member query interval).
    pub fn mld_group_query(&self, src: Ipv6Addr, group: Ipv6Addr) -> Vec<u8> {
        mld::build_query(&self.params(src, Some(group)))
    }

    /// The parameters of a general query (`group` `None`; max response: query response
    /// interval) or of a group-specific one (max response: last member query
    /// interval), with this querier's robustness and query interval.
    fn params<A>(&self, src: A, group: Option<A>) -> QueryParams<A> {
        let max_response = match group {
            None => self.config.query_response_interval,
            Some(_) => self.config.last_member_query_interval(),
        };
        QueryParams {
            src,
            group,
            max_response,
            robustness: self.config.robustness,
            query_interval: self.config.query_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicast::{parse_control, Control, Message};
    use std::time::Duration;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn querier_schedule() {
        let t0 = Instant::now();
        let mut q = Querier::new(GroupConfig::default(), t0);
        assert_eq!(q.poll_timeout(), Some(t0));
        assert!(q.handle_timeout(t0));
        assert!(!q.handle_timeout(t0));
        let t1 = t0 + Duration::from_millis(31_250);
        assert_eq!(q.poll_timeout(), Some(t1));
        assert!(q.handle_timeout(t1));
        assert_eq!(q.poll_timeout(), Some(t1 + 125 * S));
        // late: scheduled from the call, no catch-up burst
        let late = t1 + 1000 * S;
        assert!(q.handle_timeout(late));
        assert!(!q.handle_timeout(late + S));
        assert_eq!(q.poll_timeout(), Some(late + 125 * S));
        q.restart(late);
        assert!(q.handle_timeout(late));
        assert_eq!(q.poll_timeout(), Some(late + Duration::from_millis(31_250)));

        let g = q.igmp_general_query(Ipv4Addr::UNSPECIFIED);
        assert_eq!(hex::encode(g), igmp::tests::vectors::GENERAL_QUERY);
        let Ok(Control::Igmp(Message::Query(gq))) = parse_control(
            &q.igmp_group_query(Ipv4Addr::UNSPECIFIED, "239.1.2.3".parse().expect("v4")),
        ) else {
            panic!("igmp group query");
        };
        assert_eq!(gq.max_response, S);
        let Ok(Control::Mld(Message::Query(mq))) =
            parse_control(&q.mld_general_query("fe80::1".parse().expect("v6")))
        else {
            panic!("mld query");
        };
        assert_eq!((mq.version, mq.max_response, mq.robustness), (2, 10 * S, 2));
        let Ok(Control::Mld(Message::Query(mq))) = parse_control(&q.mld_group_query(
            "fe80::1".parse().expect("v6"),
            "ff15::1".parse().expect("v6"),
        )) else {
            panic!("mld group query");
        };
        assert_eq!(mq.max_response, S);
    }
}
