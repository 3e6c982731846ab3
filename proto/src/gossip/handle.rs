//! Receiving one datagram (PROTOCOL.md §6.2-6.4, §6.9): envelope checks and
//! decryption for this receiver, plaintext decoding, the epoch bound and replay
//! protection per sender, then the messages, entries first. Answers go to a member's
//! recorded endpoint; a stranger's source address gets no more bytes than it sent
//! until a cookie round trip proves it.

use super::codec::{self, decode_plaintext, Entry, Header, Message};
use super::error::GossipError;
use super::node::{Gossip, MAX_EPOCH_AHEAD_MS};
use super::replay::ReplayWindow;
use std::net::SocketAddr;
use std::time::Instant;

/// Most senders without a record whose replay state is kept.
const MAX_STRANGERS: usize = 1024;

impl Gossip {
    /// Processes one gossip datagram: the raw UDP payload, starting with the 0x40
    /// type byte, from the underlay address `from`. On error nothing was applied,
    /// except for [`GossipError::Uncertified`], [`GossipError::RetiredKey`] and a
    /// refused (not forged) [`GossipError::BadHandover`]: then only those entries were
    /// left out. The error names the counter to bump.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<(), GossipError> {
        self.advance(now);
        let mut plaintext = std::mem::take(&mut self.scratch);
        let me = self.me.public_key;
        let result = self
            .keys
            .open(datagram, &me, &mut plaintext)
            .and_then(|unknown| {
                decode_plaintext(&plaintext)
                    .map(|decoded| (unknown, decoded))
                    .map_err(|_| GossipError::Malformed)
            });
        let sender_ok = match &result {
            Ok((false, (header, _))) if header.sender != me => {
                self.sender_ok(&header.sender, &mut plaintext)
            }
            _ => true,
        };
        self.scratch = plaintext;
        let (unknown_receiver, (header, messages)) = result?;
        if header.sender == me {
            return Err(GossipError::OwnKey);
        }
        if unknown_receiver && !is_first_join(&messages) {
            return Err(GossipError::Misdirected);
        }
        let limit = self.current_epoch().saturating_add(MAX_EPOCH_AHEAD_MS);
        if header.epoch > limit {
            return Err(GossipError::FutureEpoch);
        }
        if !sender_ok {
            return Err(GossipError::BadSender);
        }
        // Entries whose certificate is not valid, entries of retired keys and
        // refused hand-overs are left out (the rest applies) and counted once for the
        // datagram.
        let mut skipped = vec![None; messages.len()];
        for (m, skip) in messages.iter().zip(&mut skipped) {
            if let Message::Entry { entry, .. } = m {
                *skip = self.check_entry(entry, limit)?;
            }
        }
        let skipped_any = skipped.iter().flatten().next().copied();
        if unknown_receiver {
            // Stateless: no replay state, nothing applied; a Challenge no larger than
            // the Join goes to the (unproven) source.
            if !self.left {
                self.limit = Some((from, datagram.len()));
                self.on_join(from, &header.sender, None);
                self.limit = None;
            }
            return Ok(());
        }
        self.check_replay(&header)?;
        if self.left {
            return Ok(());
        }
        let mut rest = Vec::with_capacity(messages.len());
        let mut synced = false;
        for (m, skip) in messages.into_iter().zip(skipped) {
            match m {
                Message::Entry { .. } if skip.is_some() => {}
                Message::Entry { entry, rumor } => {
                    synced |= self.apply_entry(entry, rumor) && !rumor
                }
                other => rest.push(other),
            }
        }
        if synced {
            // The views differ: compare again soon instead of a full period later.
            let soon = super::node::later(self.now, self.config.sync_interval / 4);
            self.next_sync = self.next_sync.min(soon);
        }
        self.adopt_stranger(&header);
        // Members are answered at their recorded endpoint (after this datagram's
        // entries, so a member announcing a new endpoint is answered there; forgotten
        // members at their last one, so that they can refute); others at
        // the source address, which gets no more bytes than this datagram unless it is
        // a seed this node contacted.
        let sender = header.sender;
        let recorded = self.reply_endpoint(&sender);
        let to = recorded.unwrap_or(from);
        if recorded != Some(from) && !self.seeds.contains(&from) {
            self.limit = Some((from, datagram.len()));
        }
        for m in rest {
            match m {
                Message::Ping { probe } => self.on_ping(to, &sender, probe),
                Message::Ack { probe } => self.on_ack(&sender, probe),
                Message::PingReq {
                    probe,
                    target,
                    endpoint,
                } => self.on_ping_req((to, &sender), recorded.is_some(), probe, target, endpoint),
                Message::Join { cookie } => self.on_join(from, &sender, cookie),
                Message::Challenge { cookie } => self.on_challenge(from, &sender, cookie),
                Message::Digest(pairs) => self.on_digest(to, &sender, pairs),
                Message::Summary(summary) => self.on_summary(to, &sender, summary),
                Message::Entry { .. } | Message::Padding { .. } => {}
            }
        }
        self.limit = None;
        match skipped_any {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether the sender MAC of `plaintext` is right for `sender` (PROTOCOL.md §6.3).
    fn sender_ok(&mut self, sender: &crate::keys::PublicKey, plaintext: &mut [u8]) -> bool {
        match self.pair_key(sender) {
            Some(k) => codec::check_sender_mac(&k, plaintext),
            None => false,
        }
    }

    /// Checks one received entry before anything of its datagram is applied: its
    /// epoch is not beyond the clock bound, its owner signed it, and a hand-over in
    /// its record is the old key's (else the datagram is dropped). An entry is left
    /// out (`Ok(Some(why))`) when its key was retired by a rotation, when its
    /// hand-over is replayed, rolled back or forked (§6.13), or, with a cluster CA,
    /// when it is live and its record carries no certificate valid now for its key
    /// and name: it admits nobody, and an honest relay may still hold it when a
    /// certificate expires. Signatures are not checked again for the statement the
    /// table already holds.
    fn check_entry(&self, e: &Entry, epoch_limit: u64) -> Result<Option<GossipError>, GossipError> {
        if e.claim.epoch > epoch_limit {
            return Err(GossipError::FutureEpoch);
        }
        let known = self.table.get(&e.key).is_some_and(|s| {
            s.claim.epoch == e.claim.epoch
                && s.claim.incarnation == e.claim.incarnation
                && s.version == e.version
                && s.proof == e.proof
        });
        if !known && !e.verify() {
            return Err(GossipError::BadSignature);
        }
        // Tombstones of retired keys are taken, so that digests converge.
        if self.retired.contains(&e.key) && e.claim.rank != super::member::Rank::Forgotten {
            return Ok(Some(GossipError::RetiredKey));
        }
        let Some(body) = &e.record else {
            return Ok(None);
        };
        let b = codec::parse_record_body(body.bytes()).map_err(|_| GossipError::Malformed)?;
        if let Some(h) = &b.handover {
            if !known {
                h.verify(&e.key, &b.name)
                    .map_err(|_| GossipError::BadHandover)?;
            }
            if self.retired.check(h, &b.name).is_err() {
                return Ok(Some(GossipError::BadHandover));
            }
        }
        if let (Some(ca), true) = (&self.config.ca, e.claim.rank.is_live()) {
            let Some(cert) = b.certificate else {
                return Ok((!self.config.ca_optional).then_some(GossipError::Uncertified));
            };
            let now = self.now_secs();
            let ok = if known {
                // Checked when the statement arrived; only time has moved since.
                (cert.not_before..=cert.not_after).contains(&now)
            } else {
                cert.verify_for(ca, now, &e.key, &b.name).is_ok()
            };
            return Ok((!ok).then_some(GossipError::Uncertified));
        }
        Ok(None)
    }

    /// Rejects replays and records the sequence number.
    fn check_replay(&mut self, h: &Header) -> Result<(), GossipError> {
        if let Some(window) = self.table.replay_mut(&h.sender) {
            return match window {
                Some(w) => {
                    if w.accept(h.epoch, h.seq) {
                        Ok(())
                    } else {
                        Err(GossipError::Replay)
                    }
                }
                None => {
                    let first = match self.strangers.remove(&h.sender) {
                        Some((mut w, _)) => {
                            if !w.accept(h.epoch, h.seq) {
                                return Err(GossipError::Replay);
                            }
                            w
                        }
                        None => ReplayWindow::first(h.epoch, h.seq),
                    };
                    if let Some(slot) = self.table.replay_mut(&h.sender) {
                        *slot = Some(first);
                    }
                    Ok(())
                }
            };
        }
        let now = self.now;
        match self.strangers.get_mut(&h.sender) {
            Some((w, seen)) => {
                if !w.accept(h.epoch, h.seq) {
                    return Err(GossipError::Replay);
                }
                *seen = now;
            }
            None => {
                if self.strangers.len() >= MAX_STRANGERS {
                    let oldest = self
                        .strangers
                        .iter()
                        .min_by_key(|(_, (_, seen))| *seen)
                        .map(|(k, _)| *k);
                    if let Some(k) = oldest {
                        self.strangers.remove(&k);
                    }
                }
                self.strangers
                    .insert(h.sender, (ReplayWindow::first(h.epoch, h.seq), now));
            }
        }
        Ok(())
    }

    /// Moves a stranger's replay state into its new table slot.
    fn adopt_stranger(&mut self, h: &Header) {
        if let Some(slot) = self.table.replay_mut(&h.sender) {
            if slot.is_none() {
                if let Some((w, _)) = self.strangers.remove(&h.sender) {
                    *slot = Some(w);
                }
            }
        }
    }
}

/// Whether `messages` are what a datagram to an unknown receiver may carry: one Join
/// without cookie, optionally followed by padding.
fn is_first_join(messages: &[Message]) -> bool {
    matches!(
        messages,
        [Message::Join { cookie: None }]
            | [Message::Join { cookie: None }, Message::Padding { .. }]
    )
}
