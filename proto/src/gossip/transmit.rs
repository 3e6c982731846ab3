//! Building outgoing datagrams: packing messages up to the size limit, piggybacking
//! rumors into the room left, and sealing with the sender header, a fresh sequence
//! number and a unique nonce (PROTOCOL.md §6.2-6.3).

use super::codec::{self, Header, Message, PLAIN_HEADER_LEN};
use super::node::Gossip;
use super::seal::{Receiver, NONCE_LEN, OVERHEAD};
use crate::keys::PublicKey;
use std::net::SocketAddr;

/// Smallest possible encoded entry message; below this much room, stop trying.
const MIN_ENTRY_MESSAGE: usize = 134;
/// A Join to a seed whose key is unknown is padded to this many bytes, so that the
/// Challenge answering it is never larger (PROTOCOL.md §6.9).
pub(crate) const JOIN_PADDED_LEN: usize = 160;

/// The messages of one datagram being built.
#[derive(Debug)]
pub(super) struct Builder {
    body: Vec<u8>,
    limit: usize,
}

impl Builder {
    pub(super) fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    pub(super) fn room(&self) -> usize {
        self.limit.saturating_sub(self.body.len())
    }

    /// Appends a message if it fits.
    pub(super) fn push(&mut self, m: &Message) -> bool {
        let mark = self.body.len();
        m.encode(&mut self.body);
        self.keep_if_fits(mark)
    }

    fn keep_if_fits(&mut self, mark: usize) -> bool {
        if self.body.len() > self.limit {
            self.body.truncate(mark);
            false
        } else {
            true
        }
    }
}

impl Gossip {
    pub(super) fn builder(&self) -> Builder {
        Builder {
            body: Vec::with_capacity(self.config.max_datagram),
            limit: self.config.max_datagram - OVERHEAD - PLAIN_HEADER_LEN,
        }
    }

    /// A builder for a datagram to `to`: smaller while `to` is an unproven address
    /// with little byte budget left.
    pub(super) fn builder_to(&self, to: SocketAddr) -> Builder {
        let mut b = self.builder();
        self.clamp(to, &mut b);
        b
    }

    /// Lowers the room of `b` to what may still be sent to `to`.
    fn clamp(&self, to: SocketAddr, b: &mut Builder) {
        if let Some((addr, left)) = self.limit {
            if addr == to {
                let room = left.saturating_sub(OVERHEAD + PLAIN_HEADER_LEN);
                b.limit = b.limit.min(room);
            }
        }
    }

    /// Appends the entry of table slot `key` as a rumor (0x05) or state (0x07).
    pub(super) fn push_entry(&self, b: &mut Builder, key: &PublicKey, rumor: bool) -> bool {
        let Some(slot) = self.table.get(key) else {
            return true;
        };
        let mark = b.body.len();
        b.body.push(if rumor {
            codec::MSG_ENTRY
        } else {
            codec::MSG_STATE
        });
        if !codec::encode_entry(
            &mut b.body,
            key,
            &slot.claim,
            slot.version,
            slot.record.as_ref(),
            self.remaining_secs(slot),
            &slot.proof,
        ) {
            b.body.truncate(mark);
            return true;
        }
        b.keep_if_fits(mark)
    }

    /// Fills the room left in `b` with queued rumors and counts their transmissions.
    pub(super) fn fill_news(&mut self, b: &mut Builder) {
        if self.news.is_empty() || b.room() < MIN_ENTRY_MESSAGE {
            return;
        }
        let limit = self.config.retransmit_limit(self.table.live().len());
        for key in self.news.candidates(codec::MAX_ENTRIES_PER_DATAGRAM) {
            if b.room() < MIN_ENTRY_MESSAGE {
                break;
            }
            if self.table.get(&key).is_none() {
                self.news.remove(&key);
                continue;
            }
            if self.push_entry(b, &key, true) {
                self.news.sent(&key, limit);
            }
        }
    }

    /// Seals `b` (rumors added if there is room) for the node `key` and queues it for
    /// `to`.
    pub(super) fn send(&mut self, to: SocketAddr, key: &PublicKey, mut b: Builder) {
        self.clamp(to, &mut b);
        self.fill_news(&mut b);
        self.send_exact(to, key, b);
    }

    /// Seals `b` as is for the node `key`.
    pub(super) fn send_exact(&mut self, to: SocketAddr, key: &PublicKey, b: Builder) {
        self.seal_and_queue(to, Receiver::Key(key), b);
    }

    /// Seals `b` for `receiver` and queues it, unless `to` is an unproven address
    /// whose byte budget it exceeds (then it is dropped).
    fn seal_and_queue(&mut self, to: SocketAddr, receiver: Receiver<'_>, b: Builder) {
        if let Some((addr, left)) = &mut self.limit {
            if *addr == to {
                let len = OVERHEAD + PLAIN_HEADER_LEN + b.body.len();
                if len > *left {
                    return;
                }
                *left -= len;
            }
        }
        let pair = match receiver {
            Receiver::Key(k) => match self.pair_key(k) {
                Some(p) => Some(p),
                // A low-order key: no member can hold it, nothing to send.
                None => return,
            },
            Receiver::Unknown => None,
        };
        self.seq += 1;
        let mut plaintext = Vec::with_capacity(PLAIN_HEADER_LEN + b.body.len());
        Header {
            sender: self.me.public_key,
            epoch: self.boot_epoch,
            seq: self.seq,
            mac: [0; codec::MAC_LEN],
        }
        .encode(&mut plaintext);
        plaintext.extend_from_slice(&b.body);
        if let Some(pair) = pair {
            let mac = codec::sender_mac(&pair, &plaintext);
            plaintext[codec::MAC_AT..codec::MAC_AT + codec::MAC_LEN].copy_from_slice(&mac);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..16].copy_from_slice(&self.nonce_prefix);
        nonce[16..].copy_from_slice(&self.seq.to_le_bytes());
        let datagram = self.keys.sealing().seal(receiver, &nonce, &plaintext);
        self.transmits.push_back((to, datagram));
    }

    /// One datagram of rumors to a member.
    pub(super) fn send_rumors_to(&mut self, key: &PublicKey) {
        let Some(to) = self.endpoint_of(key) else {
            return;
        };
        let mut b = self.builder();
        self.fill_news(&mut b);
        if !b.is_empty() {
            self.send_exact(to, key, b);
        }
    }

    /// A rumor round: one datagram of rumors to each of `gossip_fanout` random
    /// members.
    pub(super) fn gossip_round(&mut self) {
        for key in self.random_live(self.config.gossip_fanout, None) {
            if self.news.is_empty() {
                break;
            }
            self.send_rumors_to(&key);
        }
    }

    /// A join request to every seed, whose keys are unknown: a `Join` without cookie,
    /// padded to [`JOIN_PADDED_LEN`] bytes. Seeds answer with a Challenge.
    pub(super) fn send_join(&mut self) {
        let fixed = OVERHEAD + PLAIN_HEADER_LEN;
        for seed in self.seeds.clone() {
            let mut b = self.builder();
            b.push(&Message::Join { cookie: None });
            let len = JOIN_PADDED_LEN.saturating_sub(fixed + b.body.len());
            if len > 0 {
                b.push(&Message::Padding { len });
            }
            self.seal_and_queue(seed, Receiver::Unknown, b);
        }
    }

    /// The second step of a join: `Join` with the seed's cookie and this node's entry,
    /// sealed for the seed's key learned from its Challenge.
    pub(super) fn send_join_with_cookie(
        &mut self,
        to: SocketAddr,
        seed: &PublicKey,
        cookie: codec::Cookie,
    ) {
        let me = self.me.public_key;
        let mut b = self.builder();
        b.push(&Message::Join {
            cookie: Some(cookie),
        });
        self.push_entry(&mut b, &me, true);
        self.send_exact(to, seed, b);
    }
}
