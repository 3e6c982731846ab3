//! SWIM failure detection (PROTOCOL.md §6.6): one probe per period in a shuffled
//! round-robin order, indirect probes through other members after `probe_timeout`,
//! suspicion when the period ends without an ack, and relaying for others' indirect
//! probes.

use super::codec::Message;
use super::member::{Claim, Rank};
use super::node::{later, Gossip};
use crate::keys::PublicKey;
use std::net::SocketAddr;
use std::time::Instant;

/// Most indirect probes relayed for others at once.
const MAX_RELAYS: usize = 64;

/// The probe of the current period.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) target: PublicKey,
    pub(crate) id: u32,
    pub(crate) acked: bool,
    pub(crate) indirect_at: Instant,
    pub(crate) indirect_sent: bool,
}

/// An indirect probe this node performs for another member.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    pub(crate) id: u32,
    pub(crate) target: PublicKey,
    pub(crate) requester: SocketAddr,
    pub(crate) requester_key: PublicKey,
    pub(crate) requester_probe: u32,
    pub(crate) expires: Instant,
}

impl Gossip {
    /// Indirect phase and end of period.
    pub(super) fn probe_timers(&mut self, now: Instant) {
        let due = self
            .probe
            .as_ref()
            .is_some_and(|p| !p.acked && !p.indirect_sent && now >= p.indirect_at);
        if due {
            self.probe_indirect();
            if now >= self.next_probe {
                // Woken late (a stalled caller): give the indirect probes their time
                // instead of suspecting at once.
                let rest = self.config.probe_interval - self.config.probe_timeout;
                self.next_probe = later(now, rest);
                return;
            }
        }
        if now >= self.next_probe {
            self.finish_probe();
            self.start_probe(now);
            self.next_probe = later(now, self.config.probe_interval);
        }
    }

    fn next_target(&mut self) -> Option<PublicKey> {
        for _ in 0..2 {
            while self.probe_pos < self.probe_order.len() {
                let key = self.probe_order[self.probe_pos];
                self.probe_pos += 1;
                if self.table.is_live(&key) {
                    return Some(key);
                }
            }
            self.probe_order = self.table.live().to_vec();
            self.rng.shuffle(&mut self.probe_order);
            self.probe_pos = 0;
        }
        None
    }

    fn start_probe(&mut self, now: Instant) {
        let Some(target) = self.next_target() else {
            return;
        };
        let Some(to) = self.endpoint_of(&target) else {
            return;
        };
        let id = self.rng.next_u64() as u32;
        let mut b = self.builder();
        b.push(&Message::Ping { probe: id });
        // A suspect learns of its suspicion from the probe itself and can refute.
        if self
            .table
            .get(&target)
            .is_some_and(|s| s.claim.rank == Rank::Suspect)
        {
            self.push_entry(&mut b, &target, true);
        }
        self.send(to, &target, b);
        self.probe = Some(Probe {
            target,
            id,
            acked: false,
            indirect_at: later(now, self.config.probe_timeout),
            indirect_sent: false,
        });
    }

    fn probe_indirect(&mut self) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        p.indirect_sent = true;
        let (target, id) = (p.target, p.id);
        let Some(endpoint) = self.endpoint_of(&target) else {
            return;
        };
        for helper in self.random_live(self.config.indirect_probes, Some(&target)) {
            if let Some(to) = self.endpoint_of(&helper) {
                let mut b = self.builder();
                b.push(&Message::PingReq {
                    probe: id,
                    target,
                    endpoint,
                });
                self.send(to, &helper, b);
            }
        }
    }

    /// The period ended: no ack means suspicion.
    fn finish_probe(&mut self) {
        let Some(p) = self.probe.take() else {
            return;
        };
        if p.acked {
            return;
        }
        let Some(slot) = self.table.get(&p.target) else {
            return;
        };
        if slot.claim.rank != Rank::Alive {
            return;
        }
        let old = (slot.claim, slot.version);
        let claim = Claim {
            rank: Rank::Suspect,
            ..slot.claim
        };
        let deadline = self.deadline_for(Some((old.0, slot.deadline)), claim, 0);
        self.table.set(p.target, claim, old.1, None, deadline);
        self.after_change(&p.target, Some(old));
        self.news.push(p.target);
        // Tell the suspect directly so it can refute at once.
        self.send_rumors_to(&p.target);
    }

    /// Answers a Ping of `sender` at `to` (its recorded endpoint, or the source of an
    /// unknown sender).
    pub(super) fn on_ping(&mut self, to: SocketAddr, sender: &PublicKey, probe: u32) {
        let mut b = self.builder();
        b.push(&Message::Ack { probe });
        self.send(to, sender, b);
    }

    pub(super) fn on_ack(&mut self, sender: &PublicKey, probe: u32) {
        if let Some(p) = self.probe.as_mut() {
            if p.id == probe {
                p.acked = true;
                return;
            }
        }
        let Some(at) = self
            .relays
            .iter()
            .position(|r| r.id == probe && r.target == *sender)
        else {
            return;
        };
        if let Some(r) = self.relays.remove(at) {
            let mut b = self.builder();
            b.push(&Message::Ack {
                probe: r.requester_probe,
            });
            self.send(r.requester, &r.requester_key, b);
        }
    }

    /// A PingReq of `requester`, answered at `to`. Only members (whose record gives the
    /// address to answer) get indirect probes: a stranger's would make this node send
    /// to an address nobody proved.
    pub(super) fn on_ping_req(
        &mut self,
        (to, requester): (SocketAddr, &PublicKey),
        member: bool,
        probe: u32,
        target: PublicKey,
        endpoint: SocketAddr,
    ) {
        if target == self.me.public_key {
            self.on_ping(to, requester, probe);
            return;
        }
        if !member {
            return;
        }
        if self.relays.len() >= MAX_RELAYS {
            self.relays.pop_front();
        }
        let id = self.rng.next_u64() as u32;
        self.relays.push_back(Relay {
            id,
            target,
            requester: to,
            requester_key: *requester,
            requester_probe: probe,
            expires: later(self.now, self.config.probe_interval),
        });
        let mut b = self.builder();
        b.push(&Message::Ping { probe: id });
        self.send(endpoint, &target, b);
    }
}
