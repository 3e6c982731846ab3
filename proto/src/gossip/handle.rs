//! Receiving one datagram (PROTOCOL.md §6.2-6.4): envelope checks and decryption,
//! plaintext decoding, replay protection per sender, then the messages, entries first.

use super::codec::{decode_plaintext, Header, Message};
use super::error::GossipError;
use super::node::Gossip;
use super::replay::ReplayWindow;
use std::net::SocketAddr;
use std::time::Instant;

/// Most senders without a record whose replay state is kept.
const MAX_STRANGERS: usize = 1024;

impl Gossip {
    /// Processes one gossip datagram: the raw UDP payload, starting with the 0x40
    /// type byte, from the underlay address `from`. On error nothing was applied; the
    /// error names the counter to bump.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<(), GossipError> {
        self.advance(now);
        let mut plaintext = std::mem::take(&mut self.scratch);
        let result = self
            .keys
            .open(datagram, &mut plaintext)
            .and_then(|()| decode_plaintext(&plaintext).map_err(|_| GossipError::Malformed));
        self.scratch = plaintext;
        let (header, messages) = result?;
        if header.sender == self.me.public_key {
            return Err(GossipError::OwnKey);
        }
        self.check_replay(&header)?;
        if self.left {
            return Ok(());
        }
        let mut rest = Vec::with_capacity(messages.len());
        let mut synced = false;
        for m in messages {
            match m {
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
        for m in rest {
            match m {
                Message::Ping { probe } => self.on_ping(from, probe),
                Message::Ack { probe } => self.on_ack(&header.sender, probe),
                Message::PingReq {
                    probe,
                    target,
                    endpoint,
                } => self.on_ping_req(from, probe, target, endpoint),
                Message::Join => self.on_join(from),
                Message::Digest(pairs) => self.on_digest(from, pairs),
                Message::Summary(summary) => self.on_summary(from, summary),
                Message::Entry { .. } => {}
            }
        }
        Ok(())
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
