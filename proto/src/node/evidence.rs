//! Data-plane evidence of life: when each peer's tunnel last carried authenticated
//! traffic. A member declared dead whose tunnel carried traffic within
//! [`LIFE_EVIDENCE`] keeps its tunnel (and session) while the gossip layer asks it to
//! refute; only when the tunnel has been quiet that long does the verdict tear it down.

use crate::keys::PublicKey;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How recent authenticated traffic must be to outweigh a verdict of death.
pub const LIFE_EVIDENCE: Duration = Duration::from_secs(10);

/// Most peers whose last receive time is kept (far above any mesh size; a bound so a
/// shell bug cannot grow it without end).
const MAX_TRACKED: usize = 65_536;

/// Last authenticated receive time per peer.
#[derive(Debug, Default)]
pub(super) struct Evidence {
    last: BTreeMap<PublicKey, Instant>,
}

impl Evidence {
    /// `key`'s tunnel carried authenticated traffic at `at`.
    pub(super) fn seen(&mut self, key: PublicKey, at: Instant) {
        if self.last.len() >= MAX_TRACKED && !self.last.contains_key(&key) {
            return;
        }
        let slot = self.last.entry(key).or_insert(at);
        if at > *slot {
            *slot = at;
        }
    }

    /// Whether `key`'s tunnel carried traffic within [`LIFE_EVIDENCE`] before `now`.
    pub(super) fn fresh(&self, key: &PublicKey, now: Instant) -> bool {
        self.expiry(key).is_some_and(|until| now < until)
    }

    /// When `key`'s evidence stops counting.
    pub(super) fn expiry(&self, key: &PublicKey) -> Option<Instant> {
        self.last.get(key).map(|at| *at + LIFE_EVIDENCE)
    }

    /// Drops what no longer counts.
    pub(super) fn prune(&mut self, now: Instant) {
        self.last.retain(|_, at| *at + LIFE_EVIDENCE > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_counts_for_a_while() {
        let t = Instant::now();
        let k = PublicKey::from_bytes([3; 32]);
        let mut e = Evidence::default();
        assert!(!e.fresh(&k, t));
        e.seen(k, t);
        e.seen(k, t - Duration::from_secs(5)); // older news never moves it back
        assert!(e.fresh(&k, t + LIFE_EVIDENCE - Duration::from_millis(1)));
        assert!(!e.fresh(&k, t + LIFE_EVIDENCE));
        assert_eq!(e.expiry(&k), Some(t + LIFE_EVIDENCE));
        e.prune(t + LIFE_EVIDENCE);
        assert_eq!(e.expiry(&k), None);
    }
}
