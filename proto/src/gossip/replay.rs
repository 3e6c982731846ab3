//! Per-sender replay protection (PROTOCOL.md §6.3): the highest boot epoch seen and a
//! 128-entry sliding bitmap of sequence numbers within it.

/// Width of the sliding window.
pub(crate) const WINDOW: u64 = 128;

/// Replay state of one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplayWindow {
    epoch: u64,
    top: u64,
    /// Bit `i` set: sequence number `top - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// The window after accepting the first datagram of a sender.
    pub(crate) fn first(epoch: u64, seq: u64) -> Self {
        Self {
            epoch,
            top: seq,
            seen: 1,
        }
    }

    /// Whether `(epoch, seq)` would be accepted, without recording it.
    pub(crate) fn check(&self, epoch: u64, seq: u64) -> bool {
        if epoch != self.epoch {
            return epoch > self.epoch;
        }
        if seq > self.top {
            return true;
        }
        let age = self.top - seq;
        age < WINDOW && self.seen & (1u128 << age) == 0
    }

    /// Records `(epoch, seq)`; returns false (and changes nothing) for a replay.
    pub(crate) fn accept(&mut self, epoch: u64, seq: u64) -> bool {
        if !self.check(epoch, seq) {
            return false;
        }
        if epoch > self.epoch {
            *self = Self::first(epoch, seq);
        } else if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = seq;
        } else {
            self.seen |= 1u128 << (self.top - seq);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_rules() {
        let mut w = ReplayWindow::first(5, 10);
        assert!(!w.accept(5, 10), "duplicate");
        assert!(w.accept(5, 12));
        assert!(w.accept(5, 11), "reordered within the window");
        assert!(!w.accept(5, 11));
        assert!(w.accept(5, 200));
        assert!(!w.accept(5, 200 - WINDOW), "fell out of the window");
        assert!(w.accept(5, 200 - WINDOW + 1));
        assert!(!w.accept(4, 1000), "older epoch");
        assert!(w.accept(6, 0), "restart with a new epoch");
        assert!(!w.accept(6, 0));
        assert!(!w.accept(5, 201));
    }

    proptest! {
        #[test]
        fn never_accepts_twice(seqs in proptest::collection::vec(0u64..300, 1..200)) {
            let mut w = ReplayWindow::first(1, 0);
            let mut accepted = std::collections::BTreeSet::from([0u64]);
            for s in seqs {
                if w.accept(1, s) {
                    prop_assert!(accepted.insert(s), "seq {} accepted twice", s);
                }
            }
        }
    }
}
