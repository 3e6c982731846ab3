//! Applying membership entries (PROTOCOL.md §6.5): the merge rule, the events it
//! causes, refutation of claims about this node, and the deadlines that move a member
//! from suspect to dead to forgotten to removed.

use super::codec::Entry;
use super::member::{Claim, Event, Rank};
use super::node::{later, Gossip};
use crate::keys::PublicKey;
use std::time::Instant;

/// What an entry does to the current slot: `(claim, version, take its record)`.
/// `current` is `(claim, version, has a record)`. `None`: nothing changes.
pub(crate) fn merge(current: Option<(Claim, u64, bool)>, e: &Entry) -> Option<(Claim, u64, bool)> {
    let Some((claim, version, has_record)) = current else {
        // Unknown key: everything but an expired tombstone is news.
        let expired = e.claim.rank == Rank::Forgotten && e.remaining_secs == 0;
        return (!expired).then_some((e.claim, e.version, e.record.is_some()));
    };
    if e.claim.epoch != claim.epoch {
        return (e.claim.epoch > claim.epoch).then_some((e.claim, e.version, e.record.is_some()));
    }
    let new_claim = claim.max(e.claim);
    let new_version = version.max(e.version);
    let take = e.record.is_some()
        && new_claim.rank != Rank::Forgotten
        && (e.version > version || !has_record);
    (new_claim != claim || new_version != version || take).then_some((new_claim, new_version, take))
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
        let old = self
            .table
            .get(&e.key)
            .map(|s| (s.claim, s.version, s.record.is_some(), s.deadline));
        let Some((mut claim, version, take)) = merge(old.map(|(c, v, r, _)| (c, v, r)), &e) else {
            return false;
        };
        if old.is_none() && self.table.len() >= self.config.max_members {
            return false;
        }
        let doubted = doubt(old.map(|(c, _, _, d)| (c, d)), claim, self.now);
        if doubted {
            // Another node's verdict about a member this node still counts as live:
            // hold it as a suspicion of our own and ask the member (it refutes if it
            // lives); our suspicion timeout decides otherwise.
            claim.rank = Rank::Suspect;
            if old.is_some_and(|(c, v, _, _)| c == claim && v == version && !take) {
                return false;
            }
        }
        let deadline = self.deadline_for(old.map(|(c, _, _, d)| (c, d)), claim, e.remaining_secs);
        let record = if take { e.record } else { None };
        self.table.set(e.key, claim, version, record, deadline);
        self.after_change(&e.key, old.map(|(c, v, _, _)| (c, v)));
        if doubted {
            self.ask(&e.key);
        } else if rumor {
            self.news.push(e.key);
        }
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
    use super::*;
    use crate::gossip::record::RecordBody;

    fn entry(epoch: u64, inc: u64, rank: Rank, version: u64) -> Entry {
        Entry {
            key: PublicKey::from_bytes([1; 32]),
            claim: Claim {
                epoch,
                incarnation: inc,
                rank,
            },
            version,
            record: (rank != Rank::Forgotten).then(|| {
                RecordBody::from_record(&crate::gossip::NodeRecord {
                    public_key: PublicKey::from_bytes([1; 32]),
                    name: "n".into(),
                    endpoint: "192.0.2.1:1".parse().expect("addr"),
                    prefixes: Vec::new(),
                    version,
                })
            }),
            remaining_secs: if rank == Rank::Forgotten { 10 } else { 0 },
        }
    }

    fn c(epoch: u64, incarnation: u64, rank: Rank) -> Claim {
        Claim {
            epoch,
            incarnation,
            rank,
        }
    }

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

    #[test]
    fn merge_rules() {
        // unknown keys: accepted, except expired tombstones
        assert!(merge(None, &entry(1, 0, Rank::Dead, 0)).is_some());
        let mut expired = entry(1, 0, Rank::Forgotten, 0);
        expired.remaining_secs = 0;
        assert!(merge(None, &expired).is_none());
        // same data: nothing to do
        let cur = Some((c(1, 0, Rank::Alive), 3, true));
        assert_eq!(merge(cur, &entry(1, 0, Rank::Alive, 3)), None);
        // newer record at the same claim
        assert_eq!(
            merge(cur, &entry(1, 0, Rank::Alive, 4)),
            Some((c(1, 0, Rank::Alive), 4, true))
        );
        // suspicion with an older record: claim moves, record stays
        assert_eq!(
            merge(cur, &entry(1, 0, Rank::Suspect, 2)),
            Some((c(1, 0, Rank::Suspect), 3, false))
        );
        // stale epoch ignored, newer epoch replaces everything (even older version)
        assert_eq!(merge(cur, &entry(0, 9, Rank::Dead, 9)), None);
        assert_eq!(
            merge(cur, &entry(2, 0, Rank::Alive, 0)),
            Some((c(2, 0, Rank::Alive), 0, true))
        );
        // a tombstone drops the record; a refutation after it brings one back
        let dead = Some((c(1, 1, Rank::Dead), 3, true));
        assert_eq!(
            merge(dead, &entry(1, 1, Rank::Forgotten, 3)),
            Some((c(1, 1, Rank::Forgotten), 3, false))
        );
        let gone = Some((c(1, 1, Rank::Forgotten), 3, false));
        assert_eq!(
            merge(gone, &entry(1, 2, Rank::Alive, 3)),
            Some((c(1, 2, Rank::Alive), 3, true))
        );
    }
}
