//! Handshake initiations from keys that are not peers yet, parked briefly.
//!
//! A new member's first handshake often arrives a moment before gossip tells the
//! receiver about the member; dropping it costs the initiator WireGuard's 5 s retry.
//! Parked initiations (at most [`MAX_PARKED`], each at most [`MAX_PARK_AGE`] old, one
//! per key, only datagrams of the handshake-initiation size) are handed back as soon
//! as their key becomes a peer, and answered then.

use crate::keys::PublicKey;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most initiations parked at once; the oldest makes room.
pub const MAX_PARKED: usize = 64;
/// How long an initiation stays parked (well below the initiator's 5 s retry).
pub const MAX_PARK_AGE: Duration = Duration::from_secs(3);
/// Size of a WireGuard handshake initiation; nothing else is parked.
pub const INITIATION_LEN: usize = 148;

#[derive(Debug)]
struct Parked {
    key: PublicKey,
    from: SocketAddr,
    datagram: [u8; INITIATION_LEN],
    at: Instant,
}

/// The parked initiations.
#[derive(Debug, Default)]
pub struct Parking {
    parked: VecDeque<Parked>,
}

/// What [`Parking::park`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkOutcome {
    /// Parked (replacing an older one of the same key, if any).
    Parked,
    /// Parked, and the oldest initiation was dropped to make room.
    Evicted,
    /// Not an initiation: not parked.
    Refused,
}

impl Parking {
    /// Parks the initiation `datagram` of `key` (identified, not yet a peer) from
    /// `from`.
    pub fn park(
        &mut self,
        key: PublicKey,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> ParkOutcome {
        let Ok(bytes) = <[u8; INITIATION_LEN]>::try_from(datagram) else {
            return ParkOutcome::Refused;
        };
        self.expire(now);
        self.parked.retain(|p| p.key != key);
        let mut outcome = ParkOutcome::Parked;
        if self.parked.len() >= MAX_PARKED {
            self.parked.pop_front();
            outcome = ParkOutcome::Evicted;
        }
        self.parked.push_back(Parked {
            key,
            from,
            datagram: bytes,
            at: now,
        });
        outcome
    }

    /// Removes and returns the fresh initiations whose key `is_peer` now, oldest
    /// first, as `(from, datagram)`.
    pub fn take_peers(
        &mut self,
        is_peer: impl Fn(&PublicKey) -> bool,
        now: Instant,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        self.expire(now);
        let mut out = Vec::new();
        self.parked.retain(|p| {
            if is_peer(&p.key) {
                out.push((p.from, p.datagram.to_vec()));
                false
            } else {
                true
            }
        });
        out
    }

    /// Number of parked initiations.
    pub fn len(&self) -> usize {
        self.parked.len()
    }

    /// True when nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while self
            .parked
            .front()
            .is_some_and(|p| now.saturating_duration_since(p.at) >= MAX_PARK_AGE)
        {
            self.parked.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    fn from(b: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, b], 51820))
    }

    #[test]
    fn an_initiation_is_handed_back_when_its_key_becomes_a_peer() {
        let t = Instant::now();
        let mut p = Parking::default();
        assert_eq!(
            p.park(k(1), from(1), &[1; INITIATION_LEN], t),
            ParkOutcome::Parked
        );
        assert_eq!(p.park(k(2), from(2), &[2; 100], t), ParkOutcome::Refused);
        assert!(p.take_peers(|_| false, t).is_empty());
        let got = p.take_peers(|key| *key == k(1), t + Duration::from_millis(300));
        assert_eq!(got, vec![(from(1), vec![1; INITIATION_LEN])]);
        assert!(p.is_empty(), "handed back once");
    }

    #[test]
    fn parking_is_bounded_in_age_count_and_per_key() {
        let t = Instant::now();
        let mut p = Parking::default();
        p.park(k(1), from(1), &[1; INITIATION_LEN], t);
        p.park(k(1), from(9), &[9; INITIATION_LEN], t);
        assert_eq!(p.len(), 1, "one per key, the newest");
        assert_eq!(
            p.take_peers(|_| true, t),
            vec![(from(9), vec![9; INITIATION_LEN])]
        );
        p.park(k(1), from(1), &[1; INITIATION_LEN], t);
        assert!(
            p.take_peers(|_| true, t + MAX_PARK_AGE).is_empty(),
            "too old"
        );
        for i in 0..MAX_PARKED as u8 {
            assert_eq!(
                p.park(k(i), from(1), &[i; INITIATION_LEN], t),
                ParkOutcome::Parked
            );
        }
        assert_eq!(
            p.park(k(200), from(1), &[0; INITIATION_LEN], t),
            ParkOutcome::Evicted
        );
        assert_eq!(p.len(), MAX_PARKED);
        let all = p.take_peers(|_| true, t);
        assert_eq!(all.len(), MAX_PARKED);
        assert_eq!(all[0].1[0], 1, "the oldest made room");
    }
}
