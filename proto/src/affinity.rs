//! Which worker reads a flow's replies: the worker that received the request, or the
//! worker of the flow's hash.
//!
//! The kernel sends a flow's packets to the TUN queue the flow's last packet was
//! written to, so the queue a worker writes a decrypted packet to decides which worker
//! reads the replies. A request and its reply handled by one thread cost one thread's
//! wake-ups; handed to another worker they cost a second thread's (on a 2-core VM,
//! 5-8 µs more per round trip at the median, measured head to head in README
//! "Benchmark"). But one peer's datagrams
//! all arrive on one worker (`SO_REUSEPORT` hashes the peer's address), so keeping
//! every flow with the receiving worker would put all bulk sending to that peer on one
//! thread too.
//!
//! So a worker keeps its replies for light flows and hands bulk flows to the worker of
//! their hash, where they spread over the workers. A flow counts as bulk once the
//! worker has read a TCP super-packet of it from the TUN (a sender with a window of
//! data, not a request), and stays bulk while its packets keep arriving, until it has
//! been quiet for [`BULK_HOLD`]; it moves back only when idle, so a flow's packets are
//! never in two queues at once, apart from the one move of a flow that turns bulk.
//!
//! A worker's own state, on its own thread; sans-IO (the caller gives the time). Flows
//! share slots by hash: a light flow in the slot of a bulk one is handled as bulk,
//! never the reverse.

use std::time::{Duration, Instant};

/// Slots, by flow hash.
const SLOTS: usize = 1024;

/// How long a bulk flow stays bulk after its last packet.
pub const BULK_HOLD: Duration = Duration::from_secs(1);

/// One worker's bulk flows.
#[derive(Debug, Clone)]
pub struct Affinity {
    /// Per slot: until when the flows of that slot count as bulk.
    bulk_until: Vec<Option<Instant>>,
}

impl Default for Affinity {
    fn default() -> Self {
        Self::new()
    }
}

impl Affinity {
    /// No bulk flows yet.
    pub fn new() -> Self {
        Self {
            bulk_until: vec![None; SLOTS],
        }
    }

    fn slot(hash: u32) -> usize {
        hash as usize % SLOTS
    }

    /// The worker read a super-packet of the flow with `hash` (`crate::flow::hash`).
    pub fn sent_bulk(&mut self, hash: u32, now: Instant) {
        self.bulk_until[Self::slot(hash)] = Some(now + BULK_HOLD);
    }

    /// Whether a decrypted packet of the flow with `hash` goes to the queue of its
    /// hash (a bulk flow, which this keeps bulk) rather than to the worker's own.
    pub fn spread(&mut self, hash: u32, now: Instant) -> bool {
        let slot = &mut self.bulk_until[Self::slot(hash)];
        match *slot {
            Some(until) if until > now => {
                *slot = Some(now + BULK_HOLD);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_is_light_until_it_sends_in_bulk() {
        let t0 = Instant::now();
        let mut a = Affinity::new();
        assert!(
            !a.spread(7, t0),
            "a new flow stays with the receiving worker"
        );
        a.sent_bulk(7, t0);
        assert!(a.spread(7, t0 + Duration::from_millis(10)));
        assert!(!a.spread(8, t0), "another flow is not touched");
    }

    #[test]
    fn a_bulk_flow_stays_bulk_while_its_packets_arrive() {
        let t0 = Instant::now();
        let mut a = Affinity::new();
        a.sent_bulk(7, t0);
        // replies keep coming, each within the hold of the one before: still bulk long
        // after the last super-packet was read (it is read by another worker now)
        let mut t = t0;
        for _ in 0..10 {
            t += BULK_HOLD / 2;
            assert!(a.spread(7, t), "at {:?}", t - t0);
        }
        // quiet for longer than the hold: back to the receiving worker
        assert!(!a.spread(7, t + BULK_HOLD + Duration::from_millis(1)));
    }

    #[test]
    fn a_bulk_flow_expires_exactly_after_the_hold() {
        let t0 = Instant::now();
        let mut a = Affinity::new();
        a.sent_bulk(7, t0);
        assert!(
            !a.spread(7, t0 + BULK_HOLD),
            "the hold is exclusive at its end"
        );
        assert!(!a.spread(7, t0 + BULK_HOLD * 3));
    }

    #[test]
    fn flows_sharing_a_slot_are_handled_as_bulk() {
        let t0 = Instant::now();
        let mut a = Affinity::new();
        a.sent_bulk(5, t0);
        assert!(a.spread(5 + SLOTS as u32, t0), "the same slot");
        assert!(!a.spread(6, t0));
    }
}
