//! Applying membership entries (PROTOCOL.md §6.5): the merge rule, the events it
//! causes, refutation of claims about this node, and the deadlines that move a member
//! from suspect to dead to forgotten to removed.

use super::codec::{rank_fits, Entry};
use super::member::{Claim, Event, Rank};
use super::node::{later, Gossip};
use crate::keys::PublicKey;
use std::time::Instant;

/// The current slot as the merge rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Current {
    pub(crate) claim: Claim,
    pub(crate) version: u64,
    /// The state the owner signed for the slot's statement.
    pub(crate) signed: Rank,
    pub(crate) has_record: bool,
}

/// What an entry does to the current slot (PROTOCOL.md §6.5): `(claim, version, take
/// the entry's statement)`. `None`: nothing changes.
///
/// An entry is the owner's signed statement `(epoch, incarnation, version, signed
/// state)` plus a state that others may raise (suspect, dead, forgotten) at that
/// epoch and incarnation. Statements are ordered by those four fields; the slot keeps
/// the greatest, and the state becomes the maximum of the states that refer to the
/// statement's epoch and incarnation.
pub(crate) fn merge(current: Option<Current>, e: &Entry) -> Option<(Claim, u64, bool)> {
    let Some(c) = current else {
        // Unknown key: everything but an expired tombstone is news.
        let expired = e.claim.rank == Rank::Forgotten && e.remaining_secs == 0;
        return (!expired).then_some((e.claim, e.version, true));
    };
    let theirs = (
        e.claim.epoch,
        e.claim.incarnation,
        e.version,
        e.proof.signed,
    );
    let mine = (c.claim.epoch, c.claim.incarnation, c.version, c.signed);
    let same_life = (e.claim.epoch, e.claim.incarnation) == (c.claim.epoch, c.claim.incarnation);
    let (claim, version, take) = if theirs > mine {
        let rank = if same_life {
            c.claim.rank.max(e.claim.rank)
        } else {
            e.claim.rank
        };
        (Claim { rank, ..e.claim }, e.version, true)
    } else if same_life {
        // An older or equal statement of the same incarnation: only its state counts,
        // and only a state that fits the statement kept.
        let rank = if rank_fits(c.signed, e.claim.rank) {
            c.claim.rank.max(e.claim.rank)
        } else {
            c.claim.rank
        };
        let fill = theirs == mine && !c.has_record && e.record.is_some();
        (Claim { rank, ..c.claim }, c.version, fill)
    } else {
        return None;
    };
    let take = take && (e.record.is_some() || claim.rank == Rank::Forgotten || !c.has_record);
    (claim != c.claim || version != c.version || take).then_some((claim, version, take))
}

/// Whether a received verdict of death is doubted: it would end a member that this
/// node still counts as live (alive, or suspected by itself with its own timeout still
/// running) in the same boot epoch. Such a verdict is held as a suspicion until the
/// local suspicion deadline: SWIM's refutation path decides, not the rumor. Leaves
/// (the member's own word) and tombstones (an operator's `forget`) are believed.
pub(crate) fn doubt(current: Option<(Claim, Option<Instant>)>, new: Claim, now: Instant) -> bool {
    let Some((claim, deadline)) = current else {
        return false;
    };
    if new.rank != Rank::Dead || claim.epoch != new.epoch {
        return false;
    }
    match claim.rank {
        Rank::Alive => true,
        Rank::Suspect => deadline.is_some_and(|d| now < d),
        _ => false,
    }
}

impl Gossip {
    /// Applies one received entry; rumors that changed the view are passed on.
    /// Returns whether the view changed.
    pub(super) fn apply_entry(&mut self, e: Entry, rumor: bool) -> bool {
        if e.key == self.me.public_key {
            self.consider_self(&e);
            return false;
        }
        let rotated = self.retire_predecessor(&e);
        let old = self.table.get(&e.key).map(|s| {
            (
                Current {
                    claim: s.claim,
                    version: s.version,
                    signed: s.proof.signed,
                    has_record: s.record.is_some(),
                },
                s.deadline,
            )
        });
        let Some((mut claim, version, take)) = merge(old.map(|(c, _)| c), &e) else {
            return rotated;
        };
        if old.is_none() && self.table.len() >= self.config.max_members {
            return false;
        }
        let doubted = doubt(old.map(|(c, d)| (c.claim, d)), claim, self.now);
        if doubted {
            // Another node's verdict about a member this node still counts as live:
            // hold it as a suspicion of our own and ask the member (it refutes if it
            // lives); our suspicion timeout decides otherwise.
            claim.rank = Rank::Suspect;
            if old.is_some_and(|(c, _)| c.claim == claim && c.version == version && !take) {
                return false;
            }
        }
        let deadline = self.deadline_for(old.map(|(c, d)| (c.claim, d)), claim, e.remaining_secs);
        let statement = take.then_some((e.proof, e.record));
        self.table.set(e.key, claim, version, statement, deadline);
        self.after_change(&e.key, old.map(|(c, _)| (c.claim, c.version)));
        if doubted {
            self.ask(&e.key);
        } else if rumor {
            self.news.push(e.key);
        }
        true
    }

    /// Takes the hand-over in `e`'s record, if it is news (checked by
    /// `check_entry`): the old key is retired and its entry becomes a tombstone,
    /// with no death or leave, so the member's tunnel and routes move to the new key
    /// instead of being torn down. Returns whether the view changed.
    fn retire_predecessor(&mut self, e: &Entry) -> bool {
        let Some(body) = &e.record else {
            return false;
        };
        let Ok(b) = super::codec::parse_record_body(body.bytes()) else {
            return false;
        };
        let Some(h) = b.handover else {
            return false;
        };
        if self.retired.check(&h, &b.name) != Ok(true) {
            return false;
        }
        self.retired.insert(&h, &b.name);
        if let Some(slot) = self.table.get(&h.old) {
            if slot.claim.rank != Rank::Forgotten {
                let claim = Claim {
                    rank: Rank::Forgotten,
                    ..slot.claim
                };
                let version = slot.version;
                let deadline = later(self.now, self.config.tombstone_ttl);
                self.table.set(h.old, claim, version, None, Some(deadline));
            }
        }
        self.events.push_back(Event::Rotated {
            old: h.old,
            new: h.new,
            name: b.name,
        });
        true
    }

    /// Asks a member directly, with the entry this node holds about it (suspect or
    /// dead), to refute: a live member answers with its refutation as a rumor. For the
    /// daemon when the data plane shows a member declared dead is alive.
    pub fn ask_member(&mut self, key: &PublicKey, now: Instant) {
        self.advance(now);
        if !self.left {
            self.ask(key);
        }
    }

    /// Probes a member directly with its suspicion attached, so that a live member
    /// refutes at once (its answer carries the refutation as a rumor).
    pub(super) fn ask(&mut self, key: &PublicKey) {
        let Some(to) = self.endpoint_of(key) else {
            return;
        };
        let probe = self.rng.next_u64() as u32;
        let mut b = self.builder();
        b.push(&super::codec::Message::Ping { probe });
        self.push_entry(&mut b, key, true);
        self.send(to, key, b);
    }

    /// The deadline of a slot whose claim becomes `new`.
    pub(super) fn deadline_for(
        &self,
        old: Option<(Claim, Option<Instant>)>,
        new: Claim,
        remaining_secs: u32,
    ) -> Option<Instant> {
        let now = self.now;
        if let Some((c, d)) = old {
            if c == new || (c.rank == new.rank && new.rank != Rank::Suspect) {
                return d;
            }
        }
        match new.rank {
            Rank::Alive => None,
            Rank::Suspect => Some(later(
                now,
                self.config.suspicion_timeout(self.table.live().len()),
            )),
            Rank::Dead | Rank::Left => Some(later(now, self.config.reap_after)),
            Rank::Forgotten => {
                let remaining = std::time::Duration::from_secs(u64::from(remaining_secs));
                Some(later(now, remaining.min(self.config.tombstone_ttl)))
            }
        }
    }

    /// Emits the event for a slot change and keeps the probe order up to date.
    pub(super) fn after_change(&mut self, key: &PublicKey, old: Option<(Claim, u64)>) {
        let Some(slot) = self.table.get(key) else {
            return;
        };
        let was_live = old.is_some_and(|(c, _)| c.rank.is_live());
        let is_live = slot.claim.rank.is_live();
        let record = || {
            slot.record
                .as_ref()
                .map(|r| r.to_record(*key, slot.version))
        };
        let event = match (was_live, is_live) {
            (false, true) => record().map(Event::Up),
            (true, true) => {
                let moved =
                    old.is_some_and(|(c, v)| (c.epoch, v) != (slot.claim.epoch, slot.version));
                if moved {
                    record().map(Event::Updated)
                } else {
                    None
                }
            }
            (true, false) => Some(match slot.claim.rank.state() {
                Some(state) => Event::Down {
                    public_key: *key,
                    state,
                },
                None => Event::Forgotten(*key),
            }),
            (false, false) => {
                let was_known = old.is_some_and(|(c, _)| c.rank != Rank::Forgotten);
                (was_known && slot.claim.rank == Rank::Forgotten).then_some(Event::Forgotten(*key))
            }
        };
        if let Some(e) = event {
            self.events.push_back(e);
        }
        if !was_live && is_live {
            // Probe newcomers within this round, at a random place.
            self.probe_order.push(*key);
            let start = self.probe_pos.min(self.probe_order.len() - 1);
            let at = start + self.rng.below(self.probe_order.len() - start);
            let last = self.probe_order.len() - 1;
            self.probe_order.swap(at, last);
        }
    }

    /// Refutes claims about this node that would override its own: suspicion, death,
    /// a tombstone, or a record version it never issued.
    fn consider_self(&mut self, e: &Entry) {
        if self.left {
            return;
        }
        let mine = self.my_claim;
        let mut changed = false;
        if e.claim.epoch > mine.epoch {
            self.my_claim = Claim {
                epoch: e.claim.epoch.saturating_add(1),
                incarnation: 0,
                rank: Rank::Alive,
            };
            changed = true;
        } else if e.claim.epoch == mine.epoch {
            let beats = e.claim.incarnation > mine.incarnation
                || (e.claim.incarnation == mine.incarnation && e.claim.rank > Rank::Alive);
            if beats {
                match e.claim.incarnation.checked_add(1) {
                    Some(inc) => self.my_claim.incarnation = inc,
                    None => {
                        self.my_claim.epoch = self.my_claim.epoch.saturating_add(1);
                        self.my_claim.incarnation = 0;
                    }
                }
                changed = true;
            }
            if e.version > self.me.version {
                self.me.version = e.version.saturating_add(1);
                changed = true;
            }
        }
        if changed {
            self.announce_self();
        }
    }

    /// With a cluster CA: live members whose certificate has expired (or that have
    /// none, unless certificates are optional) are declared dead (and the news
    /// spreads; their refutations fail the certificate check).
    pub(super) fn expire_certificates(&mut self) {
        if self.config.ca.is_none() {
            return;
        }
        let now = self.now_secs();
        let expired: Vec<PublicKey> = self
            .table
            .live()
            .iter()
            .filter(|k| {
                self.table
                    .get(k)
                    .and_then(|s| s.record.as_ref())
                    .and_then(|r| super::codec::parse_record_body(r.bytes()).ok())
                    .and_then(|b| b.certificate)
                    .map_or(!self.config.ca_optional, |c| now > c.not_after)
            })
            .copied()
            .collect();
        for key in expired {
            let Some(slot) = self.table.get(&key) else {
                continue;
            };
            let old = (slot.claim, slot.version);
            let claim = Claim {
                rank: Rank::Dead,
                ..slot.claim
            };
            let deadline = self.deadline_for(Some((old.0, None)), claim, 0);
            self.table.set(key, claim, old.1, None, deadline);
            self.after_change(&key, Some(old));
            self.news.push(key);
        }
    }

    /// A member's deadline passed: suspect → dead → forgotten → removed.
    pub(super) fn expire(&mut self, key: &PublicKey) {
        let Some(slot) = self.table.get(key) else {
            return;
        };
        let old = (slot.claim, slot.version);
        let next = match slot.claim.rank {
            Rank::Alive => return,
            Rank::Suspect => Rank::Dead,
            Rank::Dead | Rank::Left => Rank::Forgotten,
            Rank::Forgotten => {
                self.table.remove(key);
                self.news.remove(key);
                return;
            }
        };
        let claim = Claim {
            rank: next,
            ..slot.claim
        };
        let remaining = u32::try_from(self.config.tombstone_ttl.as_secs()).unwrap_or(u32::MAX);
        let deadline = self.deadline_for(Some((old.0, None)), claim, remaining);
        self.table.set(*key, claim, old.1, None, deadline);
        self.after_change(key, Some(old));
        self.news.push(*key);
    }
}

#[cfg(test)]
mod tests {
    // The merge rule itself: `tests::records::statements_order_the_merge`.
    use super::super::member::tests::c;
    use super::*;

    #[test]
    fn rumors_of_death_are_doubted_while_the_member_counts_as_live() {
        let now = Instant::now();
        let soon = Some(now + std::time::Duration::from_secs(1));
        let past = Some(now - std::time::Duration::from_secs(1));
        let dead = c(1, 0, Rank::Dead);
        assert!(doubt(Some((c(1, 0, Rank::Alive), None)), dead, now));
        assert!(doubt(Some((c(1, 0, Rank::Suspect), soon)), dead, now));
        // our own suspicion ran out: believed
        assert!(!doubt(Some((c(1, 0, Rank::Suspect), past)), dead, now));
        // leaves, tombstones, unknown members and other epochs: believed
        assert!(!doubt(
            Some((c(1, 0, Rank::Alive), None)),
            c(1, 0, Rank::Left),
            now
        ));
        assert!(!doubt(
            Some((c(1, 0, Rank::Alive), None)),
            c(1, 0, Rank::Forgotten),
            now
        ));
        assert!(!doubt(None, dead, now));
        assert!(!doubt(Some((c(0, 5, Rank::Alive), None)), dead, now));
    }
}
