//! Path MTU of the tunnel to one peer, found by probing (PLPMTUD, RFC 8899 in spirit;
//! PROTOCOL.md §9).
//!
//! The value searched is the **inner MTU**: the largest inner packet that, encrypted
//! for the peer, crosses the underlay path without fragmentation (the sender's UDP
//! socket sets DF). The search starts at a base every IPv6 path carries
//! ([`Config::base`], 1280) and probes upward with padded probes ([`probe`]), several
//! sizes per round: the configured maximum, the inner sizes of common underlay MTUs
//! (9001, 1500, ...) and evenly spaced sizes in between. An acknowledged probe raises
//! the MTU at once; a size lost in [`Config::max_probes`] rounds is taken as too big.
//! Once settled, the MTU is confirmed every [`Config::confirm_interval`] with one
//! full-size probe; if [`Config::max_probes`] confirmations in a row are lost the path
//! shrank (a black hole): the MTU falls back to the base and the search starts again.
//! Every [`Config::raise_interval`] the search looks upward again.
//!
//! Sans-IO: [`PathMtu::poll`] takes the current time and fills the probes to send;
//! [`PathMtu::on_ack`] takes the acknowledgements; [`PathMtu::poll_timeout`] says when
//! to call again. The caller drives a peer only while its session is up, so probes
//! are never lost for want of a handshake.

pub mod icmp;
pub mod probe;

use std::time::{Duration, Instant};

/// Common underlay (link) MTUs probed in every search round, largest first: AWS jumbo
/// frames, Ethernet, PPPoE, and tunnels/overlays below Ethernet.
pub const COMMON_UNDERLAY_MTUS: [u16; 5] = [9001, 9000, 1500, 1492, 1450];
/// Underlay bytes added to an inner packet over IPv4: IPv4 (20) + UDP (8) + WireGuard
/// transport header and tag (32).
pub const OVERHEAD_V4: u16 = 60;
/// Underlay bytes added to an inner packet over IPv6: IPv6 (40) + UDP (8) + WireGuard (32).
pub const OVERHEAD_V6: u16 = 80;
/// Evenly spaced sizes probed per round between the confirmed MTU and the ceiling.
const SPACED: u32 = 3;

/// Search settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Inner MTU assumed to work on any path (RFC 8899 BASE_PLPMTU): 1280.
    pub base: u16,
    /// Largest inner MTU searched: the TUN interface's MTU.
    pub max: u16,
    /// Underlay overhead per inner packet ([`OVERHEAD_V4`] or [`OVERHEAD_V6`]).
    pub overhead: u16,
    /// How long a round of probes waits for acknowledgements.
    pub round_timeout: Duration,
    /// Rounds a size may go unanswered before it is taken as too big; confirmations
    /// lost in a row before the MTU falls back to the base.
    pub max_probes: u8,
    /// The search stops when the ceiling is within this many bytes of the MTU.
    pub granularity: u16,
    /// How often a settled MTU is confirmed with a full-size probe.
    pub confirm_interval: Duration,
    /// How often a settled search looks upward again (the path may have grown).
    pub raise_interval: Duration,
}

impl Config {
    /// Defaults for an inner MTU of at most `max` over an underlay with `overhead`.
    pub fn new(max: u16, overhead: u16) -> Self {
        Self {
            base: 1280.min(max),
            max,
            overhead,
            round_timeout: Duration::from_secs(1),
            max_probes: 3,
            granularity: 16,
            confirm_interval: Duration::from_secs(15),
            raise_interval: Duration::from_secs(600),
        }
    }
}

/// One probe to send: encrypt `probe::write(Message::Probe { id, size })` for the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Probe id, unique per peer.
    pub id: u32,
    /// Inner packet size under test.
    pub size: u16,
}

/// Where the search stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Rounds of probes are out; the round ends at the deadline.
    Searching {
        /// When the current round's unanswered probes count as lost.
        round_ends: Instant,
    },
    /// The MTU is known; it is confirmed at `next_confirm`, searched upward at `raise_at`.
    Settled {
        /// When the next confirmation probe goes out.
        next_confirm: Instant,
    },
    /// A confirmation probe of the current MTU is out.
    Confirming {
        /// When it counts as lost.
        ends: Instant,
        /// Confirmations lost in a row so far.
        misses: u8,
    },
}

/// The path MTU state of one peer.
#[derive(Debug, Clone)]
pub struct PathMtu {
    cfg: Config,
    /// Confirmed inner MTU.
    mtu: u16,
    /// Largest size not yet known to be too big.
    ceiling: u16,
    phase: Phase,
    raise_at: Instant,
    next_id: u32,
    /// Probes of the current round (or the confirmation) not acknowledged yet.
    outstanding: Vec<Probe>,
    /// Rounds each size went unanswered while the MTU stayed below it.
    misses: Vec<(u16, u8)>,
    /// Black holes detected (confirmations lost `max_probes` times in a row).
    black_holes: u64,
    /// Whether the peer ever acknowledged a probe (it speaks §9.2).
    answered: bool,
    /// Rounds in which the base probe went unanswered before any answer.
    base_misses: u8,
}

impl PathMtu {
    /// A peer whose path is unknown: the MTU is the base and the first round of
    /// probes goes out at the first [`poll`](Self::poll).
    pub fn new(cfg: Config, now: Instant) -> Self {
        let mtu = cfg.base;
        let ceiling = cfg.max.max(cfg.base);
        Self {
            raise_at: now + cfg.raise_interval,
            cfg,
            mtu,
            ceiling,
            phase: Phase::Searching { round_ends: now },
            next_id: 1,
            outstanding: Vec::new(),
            misses: Vec::new(),
            black_holes: 0,
            answered: false,
            base_misses: 0,
        }
    }

    /// The inner MTU packets to this peer may use now.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The MTU once the peer has acknowledged a probe; `None` before (the first round
    /// is out, or the peer does not answer probes: a stock WireGuard peer, an older
    /// weftnet). Until then nothing is known about the path and the caller sends as if
    /// it carried the maximum, as it would without probing.
    pub fn known_mtu(&self) -> Option<u16> {
        self.answered.then_some(self.mtu)
    }

    /// Where the search stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How many times the path shrank under a settled MTU (a black hole).
    pub fn black_holes(&self) -> u64 {
        self.black_holes
    }

    /// When [`poll`](Self::poll) has work next.
    pub fn poll_timeout(&self) -> Instant {
        match self.phase {
            Phase::Searching { round_ends } => round_ends,
            Phase::Settled { next_confirm } => next_confirm.min(self.raise_at),
            Phase::Confirming { ends, .. } => ends,
        }
    }

    /// Advances the timers to `now` and appends the probes to send to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Probe>) {
        match self.phase {
            Phase::Searching { round_ends } if now >= round_ends => {
                self.end_round();
                self.next_round(now, out);
            }
            Phase::Settled { .. } if now >= self.raise_at => {
                self.ceiling = self.cfg.max.max(self.cfg.base);
                self.misses.clear();
                self.base_misses = 0;
                self.raise_at = now + self.cfg.raise_interval;
                self.next_round(now, out);
            }
            Phase::Settled { next_confirm } if now >= next_confirm => {
                self.confirm(now, 0, out);
            }
            Phase::Confirming { ends, misses } if now >= ends => {
                self.outstanding.clear();
                let misses = misses.saturating_add(1);
                if misses >= self.cfg.max_probes {
                    // The path no longer carries the MTU: start over from the base.
                    self.black_holes += 1;
                    self.mtu = self.cfg.base;
                    self.ceiling = self.cfg.max.max(self.cfg.base);
                    self.misses.clear();
                    self.next_round(now, out);
                } else {
                    self.confirm(now, misses, out);
                }
            }
            _ => {}
        }
    }

    /// An acknowledgement from the peer: probe `id` of `size` bytes arrived. Acks of
    /// probes not outstanding (late, duplicated or forged within the session) are
    /// ignored; returns whether it was taken.
    pub fn on_ack(&mut self, now: Instant, id: u32, size: u16) -> bool {
        let Some(i) = self
            .outstanding
            .iter()
            .position(|p| p.id == id && p.size == size)
        else {
            return false;
        };
        self.outstanding.swap_remove(i);
        self.answered = true;
        if size > self.mtu {
            self.mtu = size;
        }
        self.misses.retain(|&(s, _)| s > self.mtu);
        match self.phase {
            Phase::Confirming { .. } => self.settle(now),
            // Nothing left to search: settle without waiting for the round's end.
            Phase::Searching { .. } if self.candidates().is_empty() => self.settle(now),
            _ => {}
        }
        true
    }

    /// Counts the unanswered probes of the round that ended; a size unanswered
    /// `max_probes` times lowers the ceiling below it.
    fn end_round(&mut self) {
        for p in std::mem::take(&mut self.outstanding) {
            if p.size <= self.mtu {
                if !self.answered {
                    self.base_misses = self.base_misses.saturating_add(1);
                }
                continue;
            }
            let count = match self.misses.iter_mut().find(|(s, _)| *s == p.size) {
                Some((_, c)) => {
                    *c += 1;
                    *c
                }
                None => {
                    self.misses.push((p.size, 1));
                    1
                }
            };
            if count >= self.cfg.max_probes {
                self.ceiling = self.ceiling.min(p.size - 1);
            }
        }
        let (mtu, ceiling) = (self.mtu, self.ceiling);
        self.misses.retain(|&(s, _)| s > mtu && s <= ceiling);
    }

    /// Sends the next round, or settles if the ceiling is close enough.
    fn next_round(&mut self, now: Instant, out: &mut Vec<Probe>) {
        let sizes = self.candidates();
        if sizes.is_empty() {
            self.settle(now);
            return;
        }
        for size in sizes {
            let probe = Probe {
                id: self.next_id,
                size,
            };
            self.next_id = self.next_id.wrapping_add(1);
            self.outstanding.push(probe);
            out.push(probe);
        }
        self.phase = Phase::Searching {
            round_ends: now + self.cfg.round_timeout,
        };
    }

    /// Sizes to probe this round, largest first: the ceiling, common underlay MTUs,
    /// and evenly spaced sizes above the MTU; and the base itself until the peer
    /// answered once (so that a path no larger than the base is known too), for at
    /// most `max_probes` rounds (a peer that does not answer is asked again at the
    /// next raise).
    fn candidates(&self) -> Vec<u16> {
        let (lo, hi) = (self.mtu, self.ceiling);
        let base = (!self.answered && self.base_misses < self.cfg.max_probes).then_some(lo);
        if hi <= lo || hi - lo < self.cfg.granularity {
            return base.into_iter().collect();
        }
        let mut sizes = vec![hi];
        sizes.extend(
            COMMON_UNDERLAY_MTUS
                .iter()
                .filter_map(|m| m.checked_sub(self.cfg.overhead)),
        );
        let span = u32::from(hi - lo);
        sizes.extend((1..=SPACED).map(|k| lo + (span * k / (SPACED + 1)) as u16));
        sizes.retain(|&s| s > lo && s <= hi && usize::from(s) >= probe::MIN_LEN);
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        sizes.dedup();
        sizes.extend(base);
        sizes
    }

    fn settle(&mut self, now: Instant) {
        self.outstanding.clear();
        self.phase = Phase::Settled {
            next_confirm: now + self.cfg.confirm_interval,
        };
    }

    /// Sends one confirmation probe at the MTU (nothing to confirm at the base).
    fn confirm(&mut self, now: Instant, misses: u8, out: &mut Vec<Probe>) {
        if self.mtu <= self.cfg.base {
            self.settle(now);
            return;
        }
        let probe = Probe {
            id: self.next_id,
            size: self.mtu,
        };
        self.next_id = self.next_id.wrapping_add(1);
        self.outstanding.clear();
        self.outstanding.push(probe);
        out.push(probe);
        self.phase = Phase::Confirming {
            ends: now + self.cfg.round_timeout,
            misses,
        };
    }
}

#[cfg(test)]
mod tests;
