//! Anti-entropy (PROTOCOL.md §6.8-6.9): periodic digest exchange with a random
//! member, descending the bucket tree only where views differ and exchanging the
//! entries of small differing buckets; reconnection to dead members so healed
//! partitions merge; joins (a Challenge with an address cookie first, the state once
//! the cookie comes back from the same address, PROTOCOL.md §6.9). Everything a peer
//! can make this node send here is bounded by a token bucket, and by the bytes it sent
//! while its address is unproven.

use super::codec::{
    key8, put_endpoint, Cookie, Message, Pair, Summary, COOKIE_LEN, MAX_PAIRS_PER_DIGEST,
    MAX_SUMMARY_ITEMS,
};
use super::digest::{children, LEAF_LEVEL, SMALL_BUCKET, STEP};
use super::member::Rank;
use super::node::{Gossip, COOKIE_PERIOD};
use super::transmit::Builder;
use crate::keys::PublicKey;
use blake2::digest::{KeyInit, Mac as _};
use blake2::Blake2sMac256;
use std::net::SocketAddr;
use std::time::Instant;

/// A token bucket counting datagrams.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    cap: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, cap: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            cap: f64::from(cap.max(1)),
            tokens: f64::from(cap.max(1)),
            last: now,
        }
    }

    /// Whole tokens available now.
    pub(crate) fn available(&mut self, now: Instant) -> usize {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.cap);
        self.tokens as usize
    }

    pub(crate) fn take(&mut self, n: usize) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }
}

/// Buckets split further per digest answered (the rest waits for later rounds).
const MAX_DESCENTS: usize = 8;
/// A bucket where one side holds at most 1/LOPSIDED of the other's entries is
/// exchanged whole.
const LOPSIDED: u32 = 2;

fn to_u16(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

impl Gossip {
    fn root_pair(&self) -> Pair {
        let (count, hash) = self.table.tree().get(0, 0);
        Pair {
            level: 0,
            pull: false,
            index: 0,
            count: to_u16(count),
            hash,
        }
    }

    fn send_root_digest(&mut self, to: SocketAddr, key: &PublicKey) {
        let mut b = self.builder();
        b.push(&Message::Digest(vec![self.root_pair()]));
        self.send(to, key, b);
    }

    /// Compares views with one random live member.
    pub(super) fn start_sync(&mut self) {
        let Some(peer) = self.random_live(1, None).pop() else {
            return;
        };
        if let Some(to) = self.endpoint_of(&peer) {
            self.send_root_digest(to, &peer);
        }
    }

    /// Contacts one random dead member: if it is alive on the other side of a healed
    /// partition, the digest exchange merges both views and each side refutes.
    pub(super) fn reconnect(&mut self) {
        let dead: Vec<PublicKey> = self
            .table
            .iter()
            .filter(|(_, s)| s.claim.rank == Rank::Dead)
            .map(|(k, _)| *k)
            .collect();
        if dead.is_empty() {
            return;
        }
        let key = dead[self.rng.below(dead.len())];
        if let Some(to) = self.endpoint_of(&key) {
            self.send_root_digest(to, &key);
        }
    }

    /// Answers a join from `joiner` at `from`: without a valid cookie a Challenge
    /// (within the byte budget of an unproven address); with one, `from` is proven and
    /// gets this node's entry and a random sample of live members, in one datagram (no
    /// amplification in datagram count, so no rate limit).
    pub(super) fn on_join(&mut self, from: SocketAddr, joiner: &PublicKey, cookie: Option<Cookie>) {
        let valid = cookie.is_some_and(|c| self.cookie_valid(&c, from, joiner));
        if !valid {
            let cookie = self.cookie(self.cookie_period(), from, joiner);
            let mut b = self.builder();
            b.push(&Message::Challenge { cookie });
            self.send_exact(from, joiner, b);
            return;
        }
        if self.limit.is_some_and(|(addr, _)| addr == from) {
            self.limit = None;
        }
        let mut b = self.builder();
        let me = self.me.public_key;
        self.push_entry(&mut b, &me, false);
        for key in self.random_live(32, None) {
            if !self.push_entry(&mut b, &key, false) {
                break;
            }
        }
        self.send_exact(from, joiner, b);
    }

    /// The index of the current cookie period.
    fn cookie_period(&self) -> u64 {
        let elapsed = self.now.saturating_duration_since(self.created);
        elapsed.as_secs() / COOKIE_PERIOD.as_secs()
    }

    /// The cookie of (`from`, `joiner`) in cookie period `period`: the first 16 bytes
    /// of BLAKE2s-MAC(local secret, period || joiner key || endpoint(from)).
    fn cookie(&self, period: u64, from: SocketAddr, joiner: &PublicKey) -> Cookie {
        let mut msg = Vec::with_capacity(8 + 32 + 19);
        msg.extend_from_slice(&period.to_le_bytes());
        msg.extend_from_slice(joiner.as_bytes());
        put_endpoint(&mut msg, from);
        let mac = match <Blake2sMac256 as KeyInit>::new_from_slice(&self.cookie_secret.0) {
            Ok(mut mac) => {
                mac.update(&msg);
                mac.finalize().into_bytes()
            }
            // Not reached: BLAKE2s accepts keys of up to 32 bytes.
            Err(_) => Default::default(),
        };
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&mac[..COOKIE_LEN]);
        c
    }

    /// Whether `cookie` was issued to (`from`, `joiner`) in this cookie period or the
    /// one before (compared in constant time).
    fn cookie_valid(&self, cookie: &Cookie, from: SocketAddr, joiner: &PublicKey) -> bool {
        let now = self.cookie_period();
        [Some(now), now.checked_sub(1)]
            .into_iter()
            .flatten()
            .any(|p| {
                let want = self.cookie(p, from, joiner);
                want.iter()
                    .zip(cookie)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            })
    }

    /// A seed answered a Join with a Challenge: repeat the Join with the cookie and
    /// this node's entry, sealed for the seed's key. Challenges from addresses that
    /// are not seeds are ignored.
    pub(super) fn on_challenge(&mut self, from: SocketAddr, seed: &PublicKey, cookie: Cookie) {
        if self.seeds.contains(&from) {
            self.send_join_with_cookie(from, seed, cookie);
        }
    }

    /// Answers a digest: descend into differing buckets, summarize small ones,
    /// push or pull buckets that one side does not have at all.
    pub(super) fn on_digest(&mut self, to: SocketAddr, peer: &PublicKey, mut pairs: Vec<Pair>) {
        let budget = self.sync_budget();
        if budget == 0 {
            return;
        }
        self.rng.shuffle(&mut pairs);
        let mut out = SyncAnswer::default();
        let mut descents = 0;
        for p in pairs {
            let index = usize::from(p.index);
            if p.pull {
                out.push_bucket(&self.table, p.level, index);
                continue;
            }
            let (mine, hash) = self.table.tree().get(p.level, index);
            let theirs = u32::from(p.count);
            if to_u16(mine) == p.count && hash == p.hash {
                continue;
            }
            let pull = Pair {
                level: p.level,
                pull: true,
                index: p.index,
                count: to_u16(mine),
                hash,
            };
            let lopsided = mine.min(theirs) * LOPSIDED <= mine.max(theirs);
            if lopsided {
                // One side has (almost) nothing of this bucket: swap it whole.
                if mine > 0 {
                    out.push_bucket(&self.table, p.level, index);
                }
                if theirs > 0 {
                    out.pairs.push(pull);
                }
            } else if p.level == LEAF_LEVEL || mine + theirs <= SMALL_BUCKET {
                if mine as usize <= MAX_SUMMARY_ITEMS {
                    out.summaries.push(self.summary(p.level, p.index, true));
                } else {
                    out.push_bucket(&self.table, p.level, index);
                    out.pairs.push(pull);
                }
            } else if descents < MAX_DESCENTS {
                descents += 1;
                let level = p.level + STEP;
                for child in children(index) {
                    let (count, hash) = self.table.tree().get(level, child);
                    out.pairs.push(Pair {
                        level,
                        pull: false,
                        index: child as u16,
                        count: to_u16(count),
                        hash,
                    });
                }
            }
        }
        self.send_answer(to, peer, out, budget);
    }

    /// Answers a summary: push the entries the sender lacks or holds differently,
    /// and (if asked) summarize ours so the sender can do the same.
    pub(super) fn on_summary(&mut self, to: SocketAddr, peer: &PublicKey, s: Summary) {
        let budget = self.sync_budget();
        if budget == 0 {
            return;
        }
        let own: Vec<(PublicKey, u64)> = self
            .table
            .bucket(s.level, usize::from(s.index))
            .map(|(k, slot)| (*k, slot.hash()))
            .collect();
        let mut out = SyncAnswer::default();
        for (key, hash) in &own {
            if !s.items.contains(&(key8(key), *hash)) {
                out.push.push(*key);
            }
        }
        let they_have_more = s
            .items
            .iter()
            .any(|item| !own.iter().any(|(k, h)| (key8(k), *h) == *item));
        if s.reply && they_have_more && own.len() <= MAX_SUMMARY_ITEMS {
            out.summaries.push(self.summary(s.level, s.index, false));
        }
        self.send_answer(to, peer, out, budget);
    }

    fn sync_budget(&mut self) -> usize {
        self.sync_tokens
            .available(self.now)
            .min(self.config.sync_burst)
    }

    fn summary(&self, level: u8, index: u16, reply: bool) -> Message {
        Message::Summary(Summary {
            level,
            index,
            reply,
            items: self
                .table
                .bucket(level, usize::from(index))
                .take(MAX_SUMMARY_ITEMS)
                .map(|(k, slot)| (key8(k), slot.hash()))
                .collect(),
        })
    }

    /// Sends an answer in at most `budget` datagrams: digests and summaries first,
    /// then entries.
    fn send_answer(
        &mut self,
        to: SocketAddr,
        peer: &PublicKey,
        mut out: SyncAnswer,
        mut budget: usize,
    ) {
        // Larger than the budget: a random part each time, not always the first.
        self.rng.shuffle(&mut out.push);
        let mut messages: Vec<Message> = out
            .pairs
            .chunks(MAX_PAIRS_PER_DIGEST)
            .map(|c| Message::Digest(c.to_vec()))
            .collect();
        messages.extend(out.summaries);
        let mut sent = 0;
        let mut b = self.builder_to(to);
        let dest = (to, *peer);
        for m in &messages {
            if !self.push_or_flush(dest, &mut b, &mut budget, &mut sent, |_, b| b.push(m)) {
                break;
            }
        }
        for key in &out.push {
            let push = |me: &Self, b: &mut Builder| me.push_entry(b, key, false);
            if !self.push_or_flush(dest, &mut b, &mut budget, &mut sent, push) {
                break;
            }
        }
        if !b.is_empty() && budget > 0 {
            self.send_exact(to, peer, b);
            sent += 1;
        }
        self.sync_tokens.take(sent);
    }
}

impl Gossip {
    /// Adds one item to the answer datagram `b` with `push`. When `b` is full it is
    /// sent and a new one started, if the budget allows another datagram; returns
    /// false when the budget is spent (the item is then not sent).
    fn push_or_flush(
        &mut self,
        (to, peer): (SocketAddr, PublicKey),
        b: &mut Builder,
        budget: &mut usize,
        sent: &mut usize,
        push: impl Fn(&Self, &mut Builder) -> bool,
    ) -> bool {
        if push(self, b) {
            return true;
        }
        if *budget <= 1 {
            return false;
        }
        let full = std::mem::replace(b, self.builder());
        self.send_exact(to, &peer, full);
        *b = self.builder_to(to);
        *sent += 1;
        *budget -= 1;
        push(self, b);
        true
    }
}

/// What one digest or summary asks this node to send back.
#[derive(Debug, Default)]
struct SyncAnswer {
    pairs: Vec<Pair>,
    summaries: Vec<Message>,
    push: Vec<PublicKey>,
}

impl SyncAnswer {
    fn push_bucket(&mut self, table: &super::table::Table, level: u8, index: usize) {
        self.push
            .extend(table.bucket(level, index).map(|(k, _)| *k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 4, t0);
        assert_eq!(b.available(t0), 4);
        b.take(4);
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.available(t0 + Duration::from_millis(250)), 2);
        assert_eq!(b.available(t0 + Duration::from_secs(10)), 4);
        b.take(100);
        assert_eq!(b.available(t0 + Duration::from_secs(10)), 0);
    }
}
