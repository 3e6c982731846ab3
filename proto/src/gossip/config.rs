//! Tunables of the gossip protocol, their defaults and the derived timeouts
//! (PROTOCOL.md §6.10).
//!
//! The defaults suit both a data-center LAN and a WAN with round trips up to ~300 ms:
//! with 1,000 nodes a cold start from one seed converges in about 3 s, a failed node
//! is known dead everywhere in about 10 s, and a quiet mesh costs about 420 bytes/s
//! per node sent (as much received); see `examples/gossip_sim.rs`.

use super::error::ConfigError;
use super::seal::MAX_DATAGRAM;
use std::time::Duration;

/// Gossip settings. Every node of a mesh should use the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// How often a node probes one member (SWIM protocol period). Default 1 s.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others to probe indirectly;
    /// must be below `probe_interval` (the rest of the period is the indirect phase).
    /// Default 500 ms.
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly. Default 3.
    pub indirect_probes: usize,
    /// Suspicion timeout = `suspicion_mult` × max(1, ⌊log10 n⌋) × `probe_interval`,
    /// n = live members. Default 4 (4 s at 10 nodes, 12 s at 1,000).
    pub suspicion_mult: u32,
    /// How often queued rumors are sent to `gossip_fanout` random members (nothing is
    /// sent when there is no news). Default 200 ms.
    pub gossip_interval: Duration,
    /// Members each rumor round goes to. Default 3.
    pub gossip_fanout: usize,
    /// A rumor is sent `retransmit_mult` × (⌊log10(n+1)⌋ + 1) times. Default 3.
    pub retransmit_mult: u32,
    /// Most rumors queued at once. Default 64.
    pub max_news: usize,
    /// How often a node compares its view with a random member (anti-entropy).
    /// A matching view costs one ~110-byte datagram. Default 500 ms.
    pub sync_interval: Duration,
    /// Most datagrams sent in answer to one digest or summary. Default 32.
    pub sync_burst: usize,
    /// Most anti-entropy answer datagrams per second (token bucket of
    /// 2 × `sync_burst`), the bound on what peers can make a node send. Default 200.
    pub sync_rate: u32,
    /// Retry period for joining seeds while no member is known; doubles up to 16×.
    /// Default 1 s.
    pub join_interval: Duration,
    /// How often a random dead member is contacted, so that healed partitions merge.
    /// Default 10 s.
    pub reconnect_interval: Duration,
    /// A member dead or left for this long is forgotten (tombstoned). Default 24 h.
    pub reap_after: Duration,
    /// How long a tombstone is kept (and gossiped) so the forgotten record does not
    /// come back. Default 24 h.
    pub tombstone_ttl: Duration,
    /// Most entries (members and tombstones) kept; records of new nodes beyond it are
    /// ignored. Default 16,384.
    pub max_members: usize,
    /// Largest datagram sent, 1100-1200 bytes. Default 1200.
    pub max_datagram: usize,
    /// The cluster CA's Ed25519 public key (PROTOCOL.md §8): when set, only members
    /// whose record carries a certificate of this CA, valid now, for their key and
    /// name are admitted. Default none.
    pub ca: Option<[u8; 32]>,
    /// With `ca`: a record without a certificate is admitted too (a certificate that
    /// is there must still be valid, and its expiry still ends the member), and this
    /// node needs none of its own. For Kubernetes nodes, where the API server vouches
    /// for members with a Node and the CA for members outside the cluster, and for a
    /// host outside the cluster that trusts the cluster's nodes by `--pod-range`
    /// (`node::authority`). Default false.
    pub ca_optional: bool,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            suspicion_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            retransmit_mult: 3,
            max_news: 64,
            sync_interval: Duration::from_millis(500),
            sync_burst: 32,
            sync_rate: 200,
            join_interval: Duration::from_secs(1),
            reconnect_interval: Duration::from_secs(10),
            reap_after: Duration::from_secs(24 * 3600),
            tombstone_ttl: Duration::from_secs(24 * 3600),
            max_members: 16_384,
            max_datagram: MAX_DATAGRAM,
            ca: None,
            ca_optional: false,
        }
    }
}

const DAY: Duration = Duration::from_secs(86_400);

fn check(ok: bool, field: &'static str, reason: &'static str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid { field, reason })
    }
}

impl GossipConfig {
    /// Faster failure detection for a single data center (RTT well below 100 ms):
    /// probes every 500 ms with a 200 ms ack timeout.
    pub fn lan() -> Self {
        Self {
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(200),
            ..Self::default()
        }
    }

    /// Checks ranges and relations between the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let timer = |d: Duration| !d.is_zero() && d <= 30 * DAY;
        check(
            timer(self.probe_interval),
            "probe_interval",
            "must be in (0, 30 days]",
        )?;
        check(
            !self.probe_timeout.is_zero() && self.probe_timeout < self.probe_interval,
            "probe_timeout",
            "must be above zero and below probe_interval",
        )?;
        check(
            self.indirect_probes <= 16,
            "indirect_probes",
            "must be 0-16",
        )?;
        check(
            (1..=16).contains(&self.suspicion_mult),
            "suspicion_mult",
            "must be 1-16",
        )?;
        check(
            timer(self.gossip_interval),
            "gossip_interval",
            "must be in (0, 30 days]",
        )?;
        check(
            (1..=16).contains(&self.gossip_fanout),
            "gossip_fanout",
            "must be 1-16",
        )?;
        check(
            (1..=16).contains(&self.retransmit_mult),
            "retransmit_mult",
            "must be 1-16",
        )?;
        check(
            (1..=65_536).contains(&self.max_news),
            "max_news",
            "must be 1-65536",
        )?;
        check(
            timer(self.sync_interval),
            "sync_interval",
            "must be in (0, 30 days]",
        )?;
        check(
            (1..=256).contains(&self.sync_burst),
            "sync_burst",
            "must be 1-256",
        )?;
        check(self.sync_rate >= 1, "sync_rate", "must be at least 1")?;
        check(
            timer(self.join_interval),
            "join_interval",
            "must be in (0, 30 days]",
        )?;
        check(
            timer(self.reconnect_interval),
            "reconnect_interval",
            "must be in (0, 30 days]",
        )?;
        check(
            !self.reap_after.is_zero() && self.reap_after <= 365 * DAY,
            "reap_after",
            "must be in (0, 365 days]",
        )?;
        check(
            self.tombstone_ttl >= Duration::from_secs(1) && self.tombstone_ttl <= 365 * DAY,
            "tombstone_ttl",
            "must be in [1 s, 365 days]",
        )?;
        check(
            (2..=1_000_000).contains(&self.max_members),
            "max_members",
            "must be 2-1000000",
        )?;
        check(
            (1100..=MAX_DATAGRAM).contains(&self.max_datagram),
            "max_datagram",
            "must be 1100-1200 bytes",
        )
    }

    /// The suspicion timeout with `n` live members.
    pub fn suspicion_timeout(&self, n: usize) -> Duration {
        let scale = (n.max(1) as u64).ilog10().max(1);
        self.probe_interval * self.suspicion_mult * scale
    }

    /// How many times a rumor is sent with `n` live members.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        self.retransmit_mult * ((n as u64).saturating_add(1).ilog10() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_derived_values() {
        let c = GossipConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(GossipConfig::lan().validate(), Ok(()));
        assert_eq!(c.suspicion_timeout(0), Duration::from_secs(4));
        assert_eq!(c.suspicion_timeout(9), Duration::from_secs(4));
        assert_eq!(c.suspicion_timeout(1000), Duration::from_secs(12));
        assert_eq!(c.retransmit_limit(0), 3);
        assert_eq!(c.retransmit_limit(50), 6);
        assert_eq!(c.retransmit_limit(1000), 12);
        let bad = GossipConfig {
            probe_timeout: Duration::from_secs(2),
            ..c.clone()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                field: "probe_timeout",
                ..
            })
        ));
        let big = GossipConfig {
            max_datagram: 1500,
            ..c
        };
        assert!(big.validate().is_err());
    }
}
